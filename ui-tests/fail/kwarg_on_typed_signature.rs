use celery::prelude::*;

#[task]
async fn greet(name: String, greeting: Option<String>) -> String {
    format!("{}, {name}", greeting.unwrap_or_else(|| "Hello".into()))
}

fn main() {
    // Every parameter of `greet::s` is given by position: a keyword argument could only clash.
    let _ = greet::s("Ada".into(), None).kwarg("greeting", "Hi");
}
