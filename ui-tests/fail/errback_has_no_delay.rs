use celery::prelude::*;

#[task(errback)]
async fn on_error(request: Request, exc: ExceptionInfo, traceback: Option<String>) {
    let _ = (request, exc, traceback);
}

fn main() {
    let _ = on_error::delay();
}
