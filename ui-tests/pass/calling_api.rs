//! The Calling API: signatures, chains and links that type-check.
#![deny(warnings)]

use celery::__private::{Errback, Immutable, Partial};
use celery::prelude::*;

#[task]
pub async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[task]
pub fn mul(x: i32, y: i32) -> i32 {
    x * y
}

#[task]
pub async fn concat(text: String, suffix: String) -> String {
    text + &suffix
}

#[task(errback)]
pub async fn on_error(request: Request, exc: ExceptionInfo, traceback: Option<String>) {
    let _ = (request, exc, traceback);
}

#[allow(dead_code)]
async fn send() -> Result<(), celery::Error> {
    let _: AsyncResult<i32> = add::delay(2, 2).await?;
    let _: AsyncResult<i32> = add::apply_async((2, 2), CallOptions::new().countdown(10)).await?;
    let _: AsyncResult<i32> = add::s(2, 2).delay().await?;
    Ok(())
}

fn main() {
    assert_eq!(add::NAME, "add");
    let _: add::Task = add::Task;
    let _: Signature<i32> = add::s(2, 2);
    let _: Signature<i32, Immutable> = add::si(2, 2);
    let _: Signature<i32, Partial<i32>> = add::partial(16);

    // ((2 + 2) + 16) * 3
    let _ = chain![add::s(2, 2), add::partial(16), mul::partial(3)];

    // A callback whose first argument takes the parent's `i32`.
    let _ = CallOptions::new().link(add::partial(16));
    // An immutable callback ignores the parent's result, whatever its type.
    let _ = CallOptions::<i32>::new().link(concat::si("a".to_string(), "b".to_string()));
    // An errback signature can be linked to run on failure.
    let _ = CallOptions::<i32>::new().link_error(on_error::s());
    let _: Signature<(), Errback> = on_error::s();

    // Sending needs an app; building the futures only checks their types.
    drop(add::apply_async((2, 2), CallOptions::new().link(mul::partial(3)).link_error(on_error::s())));
    drop(send());
}
