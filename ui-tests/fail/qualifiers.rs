use celery::prelude::*;

#[task]
const fn one() -> i32 {
    1
}

#[task]
unsafe fn two() -> i32 {
    2
}

#[task]
extern "C" fn three() -> i32 {
    3
}

fn main() {}
