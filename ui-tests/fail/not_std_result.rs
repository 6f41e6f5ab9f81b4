use celery::prelude::*;

/// A type of the user's own that happens to be named `Result`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Result {
    pub score: u32,
}

#[task]
async fn grade(answer: String) -> Result {
    Result { score: answer.len() as u32 }
}

fn main() {}
