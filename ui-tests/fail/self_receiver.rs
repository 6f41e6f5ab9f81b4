use celery::prelude::*;

struct Calculator;

impl Calculator {
    #[task]
    async fn add(&self, x: i32, y: i32) -> i32 {
        x + y
    }
}

fn main() {}
