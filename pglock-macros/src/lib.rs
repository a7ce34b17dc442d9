//! Attribute macros for [`pglock`](https://docs.rs/pglock): `#[pglock::advisory]`,
//! `#[pglock::timeout]` and `#[pglock::prioritize]`.
//!
//! Use them through the `pglock` crate, which re-exports them and documents them. Each entry point
//! here hands its tokens to [`expand`], which parses the arguments ([`args`]), finds the
//! function's database handle ([`handle`]) and rewrites the body.

mod args;
mod duration;
mod expand;
mod handle;

use proc_macro::TokenStream;

#[proc_macro_attribute]
pub fn advisory(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::advisory(args.into(), item.into()).into()
}

#[proc_macro_attribute]
pub fn timeout(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::timeout(args.into(), item.into()).into()
}

#[proc_macro_attribute]
pub fn prioritize(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::prioritize(args.into(), item.into()).into()
}
