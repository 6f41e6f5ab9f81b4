use celery::prelude::*;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Rejected;

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("rejected")
    }
}

impl std::error::Error for Rejected {}

pub type Outcome<T> = Result<T, Rejected>;

#[task]
async fn approve(id: u32) -> Outcome<u32> {
    Ok(id)
}

fn main() {}
