use celery::prelude::*;

#[task]
async fn greet(name: &str, bytes: &[u8]) -> &'static str {
    let _ = (name, bytes);
    "hello"
}

fn main() {}
