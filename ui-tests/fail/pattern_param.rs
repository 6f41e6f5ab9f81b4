use celery::prelude::*;

#[task]
async fn add((x, y): (i32, i32), _: i32) -> i32 {
    x + y
}

fn main() {}
