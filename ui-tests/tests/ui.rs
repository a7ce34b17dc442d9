//! Compile-pass and compile-fail cases for pglock's attributes, run with trybuild.
//!
//! `tests/ui/pass/*.rs` must compile (and run); `tests/ui/fail/*.rs` must fail with exactly the
//! errors in their `.stderr` files. Compiler messages change between Rust releases, so the
//! `.stderr` files belong to the toolchain named in `ui-tests/toolchain`. On another toolchain,
//! regenerate them with `TRYBUILD=overwrite cargo test -p pglock-ui-tests`, read the diff, and
//! update that file.

use std::process::Command;

#[test]
fn ui() {
    let pinned = include_str!("../toolchain").trim();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc)
        .arg("--version")
        .output()
        .expect("running rustc --version");
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(
        version.split_whitespace().nth(1) == Some(pinned),
        "the .stderr files were written with Rust {pinned}, but this is {version}: regenerate \
         them with TRYBUILD=overwrite cargo test -p pglock-ui-tests, check the diff, and write the \
         new version into ui-tests/toolchain"
    );
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
