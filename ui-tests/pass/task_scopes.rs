//! Tasks are module-level items, wherever the module: the crate root, a nested module, a
//! `macro_rules!` expansion; and code in a child module with `use super::*` (as `mod tests`) uses
//! them.
#![deny(warnings)]

use celery::prelude::*;

#[task]
pub async fn add(x: i32, y: i32) -> i32 {
    x + y
}

mod nested {
    use super::*;

    #[task]
    pub fn double(x: i32) -> i32 {
        2 * x
    }
}

macro_rules! identity_task {
    ($name:ident) => {
        #[task]
        pub async fn $name(x: i32) -> i32 {
            x
        }
    };
}

identity_task!(first);
identity_task!(second);

mod tests {
    use super::*;

    pub fn signatures() -> Vec<Signature<i32>> {
        vec![add::s(1, 2), nested::double::s(3), first::s(4), second::s(5)]
    }
}

#[tokio::main]
async fn main() {
    assert_eq!(add(1, 2).await, 3);
    assert_eq!(nested::double(3), 6);
    assert_eq!(first(4).await + second(5).await, 9);
    assert_eq!(tests::signatures().len(), 4);
}
