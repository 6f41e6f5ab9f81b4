//! The generated items are exactly as visible as the function.
#![deny(warnings)]

pub mod outer {
    pub mod inner {
        use celery::prelude::*;

        #[task]
        pub async fn public(x: i32) -> i32 {
            x
        }

        #[task]
        pub(crate) async fn crate_wide(x: i32) -> i32 {
            x
        }

        #[task]
        pub(super) async fn in_outer(x: i32) -> i32 {
            x
        }

        #[task]
        pub(in crate::outer) async fn in_path(x: i32) -> i32 {
            x
        }

        #[task]
        #[allow(clippy::needless_pub_self)]
        pub(self) async fn private(x: i32) -> i32 {
            x
        }

        pub fn use_private() -> Signature<i32> {
            private::s(1)
        }
    }

    pub fn use_restricted() {
        let _ = inner::in_outer::s(1);
        let _ = inner::in_path::s(1);
    }
}

fn main() {
    let _ = outer::inner::public::s(1);
    let _ = outer::inner::crate_wide::s(1);
    let _ = outer::inner::use_private();
    outer::use_restricted();
}
