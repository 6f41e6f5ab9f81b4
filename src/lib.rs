pub use celery_core::*;
pub use celery_macros::task;

pub mod prelude {
    pub use celery_core::prelude::*;
    pub use celery_macros::task;
}
