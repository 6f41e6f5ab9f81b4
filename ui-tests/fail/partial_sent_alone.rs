//! A partial signature waits for a previous task's result: it cannot start a chain or be a member
//! of a group.
use celery::prelude::*;

#[task]
async fn add(x: i32, y: i32) -> i32 {
    x + y
}

fn main() {
    let _ = chain![add::partial(1), add::partial(2)];
    let _ = group([add::partial(1)]);
}
