//! `crate = "..."` names the celery crate under another path: a re-export, or the runtime crate
//! itself.
#![deny(warnings)]

mod reexport {
    pub use celery as tasks_runtime;
}

#[celery::task(crate = "reexport::tasks_runtime")]
async fn through_reexport(x: i32) -> i32 {
    x
}

#[celery::task(crate = "celery")]
async fn without_leading_colons(x: i32) -> i32 {
    x
}

fn main() {
    let _: celery::Signature<i32> = through_reexport::s(1);
    let _: celery::Signature<i32> = without_leading_colons::s(1);
}
