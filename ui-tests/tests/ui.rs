//! `#[task]` on valid functions compiles (and the `pass/` programs run); every misuse in `fail/`
//! is rejected with the error recorded in its `.stderr`, at the user's own tokens.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("pass/*.rs");
    t.compile_fail("fail/*.rs");
}
