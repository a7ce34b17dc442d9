//! Attribute macros for [`pglock`](https://docs.rs/pglock): `#[pglock::advisory]`,
//! `#[pglock::timeout]`, `#[pglock::prioritize]` and `#[pglock::retry_locks]`.
//!
//! Do not depend on this crate directly: use the attributes through the `pglock` crate, which
//! re-exports them and documents them, and whose version this crate's always matches. With
//! `pglock` renamed in your `Cargo.toml`, give each attribute `crate = <the new name>`.
//!
//! (How it works: each entry point hands its tokens to the `expand` module, which parses the
//! function (`item`) and the arguments of every pglock attribute on it (`args`), finds each
//! scope's database handle (`handle`), and wraps the body in one layer per attribute, top
//! attribute outermost.)

mod args;
mod duration;
mod expand;
mod handle;
mod item;

use proc_macro::TokenStream;

use expand::Which;

#[proc_macro_attribute]
pub fn advisory(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Which::Advisory, args.into(), item.into()).into()
}

#[proc_macro_attribute]
pub fn timeout(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Which::Timeout, args.into(), item.into()).into()
}

#[proc_macro_attribute]
pub fn retry_locks(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Which::RetryLocks, args.into(), item.into()).into()
}

#[proc_macro_attribute]
pub fn prioritize(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::attribute(Which::Prioritize, args.into(), item.into()).into()
}
