use celery::prelude::*;

#[task]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

#[task]
async fn concat(text: String, suffix: String) -> String {
    text + &suffix
}

fn main() {
    let _ = add::apply_async((2, 2), CallOptions::new().link(concat::partial("x".to_string())));
}

fn on_signature() {
    let _ = add::s(2, 2).link(concat::partial("x".to_string()));
}
