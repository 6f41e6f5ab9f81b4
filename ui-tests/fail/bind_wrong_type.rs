use celery::prelude::*;

#[task(bind)]
async fn whoami(ctx: String) -> String {
    ctx
}

fn main() {}
