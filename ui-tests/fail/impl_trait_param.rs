use celery::prelude::*;

#[task]
async fn total(values: Vec<impl Into<i64>>) -> i64 {
    values.into_iter().map(Into::into).sum()
}

#[task]
fn later(x: i32) -> impl std::future::Future<Output = i32> {
    async move { x }
}

fn main() {}
