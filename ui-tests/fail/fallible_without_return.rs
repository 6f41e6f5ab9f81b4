use celery::prelude::*;

#[task(fallible)]
async fn cleanup() {}

fn main() {}
