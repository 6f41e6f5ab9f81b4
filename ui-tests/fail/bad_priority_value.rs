use celery::prelude::*;

#[task(priority = "high")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[task(priority = 300)]
async fn mul(x: i32, y: i32) -> i32 {
    x * y
}

fn main() {}
