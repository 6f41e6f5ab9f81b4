use celery::prelude::*;

#[task(compression = "lz4")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
