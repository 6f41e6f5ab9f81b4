use celery::prelude::*;

#[task(errback)]
async fn on_error(request: Request, exc: String, traceback: Option<String>) {
    let _ = (request, exc, traceback);
}

fn main() {}
