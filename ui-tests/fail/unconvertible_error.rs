use celery::prelude::*;

/// Not an error: no `std::error::Error`, no conversion into `TaskError` or a boxed error.
#[derive(Debug)]
pub enum Rejection {
    TooLate,
}

#[task]
async fn approve(id: u32) -> Result<u32, Rejection> {
    if id == 0 {
        return Err(Rejection::TooLate);
    }
    Ok(id)
}

fn main() {}
