use celery::prelude::*;

#[task]
async fn first<T: Clone>(items: Vec<T>) -> T {
    items[0].clone()
}

#[task]
async fn count(items: Vec<String>) -> usize
where
    String: Clone,
{
    items.len()
}

fn main() {}
