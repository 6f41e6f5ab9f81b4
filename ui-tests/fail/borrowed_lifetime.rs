use std::borrow::Cow;

use celery::prelude::*;

#[task]
async fn greet(name: Cow<'_, str>) -> String {
    name.into_owned()
}

#[task]
async fn shout<'a>(name: Cow<'a, str>) -> Cow<'a, str> {
    name
}

#[task]
async fn fixed(name: Cow<'static, str>) -> Cow<'static, str> {
    name
}

fn main() {}
