use celery::prelude::*;

#[task]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {
    let _ = add::apply_async((2, 2), CallOptions::new().link_error(add::s(1, 1)));
}
