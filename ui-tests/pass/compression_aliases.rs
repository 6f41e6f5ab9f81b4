//! Every compression name the runtime accepts is accepted by `#[task]`, aliases included.
#![deny(warnings)]

use celery::__private::Task;
use celery::prelude::*;

#[task(compression = "zstandard")]
async fn zstandard() {}

#[task(compression = "bzip")]
async fn bzip() {}

fn main() {
    assert_eq!(<zstandard::Task as Task>::OPTIONS.compression, Some("zstandard"));
    assert_eq!(<bzip::Task as Task>::OPTIONS.compression, Some("bzip"));
}
