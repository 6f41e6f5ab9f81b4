//! Tasks without parameters or without a return type.
#![deny(warnings)]

use celery::__private::Task;
use celery::prelude::*;

#[task]
async fn ping() {}

#[task]
fn now() -> u64 {
    42
}

#[task]
async fn log(line: String) {
    let _ = line;
}

fn main() {
    let _: ping::Output = ();
    assert!(<ping::Task as Task>::PARAMS.is_empty());
    let _: Signature<()> = ping::s();
    let _ = ping::si();
    drop(ping::delay());
    drop(ping::apply_async((), CallOptions::new()));
    let _: Signature<u64> = now::s();
    // With one parameter, `partial` takes none: the parent's result is its only argument.
    let _ = log::partial();
    drop(log::apply_async(("hello".to_string(),), CallOptions::new()));
}
