//! Any serde type can be an argument or a result.
#![deny(warnings)]

use std::collections::HashMap;

use celery::__private::Task;
use celery::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub items: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Status {
    Accepted,
    Rejected { reason: String },
}

#[task(name = "shop.place_order")]
pub async fn place_order(order: Order, notes: Option<HashMap<String, String>>) -> Status {
    let _ = notes;
    if order.items.is_empty() {
        Status::Rejected {
            reason: format!("order {} is empty", order.id),
        }
    } else {
        Status::Accepted
    }
}

fn main() {
    assert_eq!(<place_order::Task as Task>::NAME, "shop.place_order");
    assert_eq!(place_order::NAME, "shop.place_order");
    assert_eq!(<place_order::Task as Task>::PARAMS, ["order", "notes"]);
    let order = Order {
        id: 1,
        items: vec!["tea".into()],
    };
    let _: Signature<Status> = place_order::s(order, None);
    let _ = place_order::partial(Some(HashMap::new()));
}
