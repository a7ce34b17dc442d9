#![warn(missing_docs)]

//! The parts of the `pglock` command that other programs drive directly: the tests render
//! `pglock top` to a test backend against real sessions, and the benchmark times one of its
//! refreshes. The command itself is the `pglock` binary of this package.

pub mod top;
