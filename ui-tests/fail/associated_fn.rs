use celery::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Invoice {
    pub total: u32,
}

impl Invoice {
    #[task]
    pub async fn create(total: u32) -> Self {
        Invoice { total }
    }
}

fn main() {}
