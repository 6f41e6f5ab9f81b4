//! A deprecated task builds under `deny(warnings)`: its generated code calls it without a
//! warning. Its callers are warned (see `fail/deprecated_task_callers.rs`).
#![deny(warnings)]

use celery::prelude::*;

#[deprecated(note = "use `add` instead")]
#[task]
pub async fn sum(x: i32, y: i32) -> i32 {
    x + y
}

#[deprecated]
#[task]
pub fn old_double(x: i32) -> i32 {
    2 * x
}

#[task]
pub async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[allow(deprecated)]
fn main() {
    let _: Signature<i32> = sum::s(1, 2);
    let _: Signature<i32> = old_double::s(1);
    let _ = add::s(1, 2);
}
