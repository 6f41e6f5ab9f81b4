#![doc = include_str!("../README.md")]

pub use celery_core::*;
/// Turns a function into a Celery task; see the crate documentation.
pub use celery_macros::task;

/// The names most programs need: `use celery::prelude::*;`.
pub mod prelude {
    pub use celery_core::prelude::*;
    pub use celery_macros::task;
}
