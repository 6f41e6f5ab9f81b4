use celery::prelude::*;

struct NotACodec;

#[task(serializer = NotACodec)]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {}
