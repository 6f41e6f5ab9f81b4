use celery::prelude::*;

#[task(queu = "math")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
