//! An errback receives the failed task's request, exception and traceback before its own
//! parameters; its signature is only good for `link_error`.
#![deny(warnings)]

use celery::__private::{Errback, Task};
use celery::prelude::*;

#[task(errback)]
pub async fn on_error(request: Request, exc: ExceptionInfo, traceback: Option<String>, label: String) {
    let _ = (request, exc, traceback, label);
}

#[task(bind, errback)]
pub fn report(ctx: TaskContext, request: Request, exc: ExceptionInfo, traceback: Option<String>) -> bool {
    let _ = (ctx, request, exc, traceback);
    true
}

const _: () = assert!(<on_error::Task as Task>::IS_ERRBACK);

fn main() {
    assert_eq!(<on_error::Task as Task>::PARAMS, ["label"]);
    assert!(<report::Task as Task>::PARAMS.is_empty());
    let _: Signature<(), Errback> = on_error::s("payments".to_string());
    let _: Signature<bool, Errback> = report::s();
}
