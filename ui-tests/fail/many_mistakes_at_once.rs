use celery::prelude::*;

// Every mistake is reported, and the function itself still compiles, so its callers do not add
// errors of their own.
#[task(queue = 1, serializer = "xml", bind)]
async fn add<T>((x, y): (i32, i32)) -> i32 {
    x + y
}

fn main() {}
