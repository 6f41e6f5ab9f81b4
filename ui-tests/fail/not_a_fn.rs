use celery::prelude::*;

#[task]
struct Add {
    x: i32,
}

#[task]
const LIMIT: u32 = 3;

fn main() {}
