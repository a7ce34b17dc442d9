//! Attribute macros for [`pglock`](https://docs.rs/pglock).
//!
//! Use them through the `pglock` crate, which re-exports them. The attributes
//! (`#[pglock::advisory]`, `#[pglock::timeout]`, `#[pglock::prioritize]`) are not
//! written yet: this crate is a placeholder that keeps the workspace layout fixed.
