use celery::prelude::*;

#[task(serializer = "xml")]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
