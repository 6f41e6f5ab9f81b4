use celery::prelude::*;

#[task(time_limit = 30, soft_time_limit = 60)]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
