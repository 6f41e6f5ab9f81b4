use celery::prelude::*;

#[task(errback)]
async fn on_error(request: Request) {
    let _ = request;
}

#[task(bind, errback)]
async fn report(ctx: TaskContext, request: Request, exc: ExceptionInfo) {
    let _ = (ctx, request, exc);
}

fn main() {}
