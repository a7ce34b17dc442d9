//! Compile-pass and compile-fail cases for pglock's attributes, run with trybuild.
//!
//! The attributes land with the attribute issue; until then there is nothing to compile.
