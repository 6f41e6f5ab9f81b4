//! Compile-time tests of `#[task]`: see `tests/ui.rs`, `pass/` and `fail/`.
