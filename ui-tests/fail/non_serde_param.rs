use celery::prelude::*;

pub struct Point {
    pub x: i32,
    pub y: i32,
}

#[task]
async fn norm(point: Point) -> i32 {
    point.x.abs() + point.y.abs()
}

fn main() {}
