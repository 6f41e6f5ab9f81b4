use celery::prelude::*;

pub struct Point {
    pub x: i32,
    pub y: i32,
}

#[task]
async fn origin() -> Point {
    Point { x: 0, y: 0 }
}

fn main() {}
