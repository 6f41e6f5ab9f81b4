use celery::prelude::*;

#[task(bind = "yes", expires = -5, max_retries = 1.5, queue = "", name = tasks_add)]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
