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
    let _ = chain![add::s(2, 2), concat::partial("x".to_string())];
}
