//! Lint attributes on the function apply to its task module too, whose name and parameters are
//! the function's: a camelCase task compiles without warnings under `#[allow(non_snake_case)]`.
#![deny(warnings)]

use celery::prelude::*;

#[task]
#[allow(non_snake_case)]
pub async fn processOrder(userId: i64, orderId: i64) -> i64 {
    userId + orderId
}

#[task(name = "tasks.shipOrder")]
#[expect(non_snake_case, reason = "the name Python callers use")]
pub fn shipOrder(orderId: i64) -> i64 {
    orderId
}

#[task]
#[deny(unused_variables)]
#[allow(clippy::too_many_arguments)]
pub async fn many(a: u8, b: u8, c: u8, d: u8, e: u8, f: u8, g: u8, h: u8) -> u8 {
    a + b + c + d + e + f + g + h
}

fn main() {
    let _ = processOrder::s(1, 2);
    let _ = processOrder::partial(2);
    let _ = shipOrder::si(3);
    let _ = many::s(1, 2, 3, 4, 5, 6, 7, 8);
}
