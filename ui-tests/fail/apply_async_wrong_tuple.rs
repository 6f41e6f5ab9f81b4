use celery::prelude::*;

#[task]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {
    let _ = add::apply_async((1, 2, 3), CallOptions::new());
}
