//! A `#[task]` inside a function body: its module's `super` is the module around the body, so
//! it would call a module-level function of the same name (or nothing). Refused, at the name.
use celery::prelude::*;

#[allow(dead_code)]
async fn add(x: i32, y: i32) -> i32 {
    x - y
}

#[task]
async fn mul(x: i32, y: i32) -> i32 {
    x * y
}

fn main() {
    // Beside a plain function of the same name.
    #[task]
    async fn add(x: i32, y: i32) -> i32 {
        x + y
    }
    let _ = add::s(1, 2);

    // Beside a module-level task of the same name.
    #[task]
    async fn mul(x: i32, y: i32) -> i32 {
        x * y + 1
    }
    let _ = mul::s(1, 2);

    // With nothing of the same name outside.
    #[task]
    fn local(x: i32) -> i32 {
        x
    }
    let _ = local::s(1);
}
