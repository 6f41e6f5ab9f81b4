use celery::prelude::*;

#[task(bind)]
async fn tick() {}

fn main() {}
