use celery::prelude::*;

#[task(queue = "math", priority = 3, queue = "other")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
