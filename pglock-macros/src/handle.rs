//! Finding the database handle among a function's arguments.

use quote::ToTokens;
use syn::{FnArg, Ident, Pat, PatIdent, PatType, Signature, Type, TypeReference};

/// What kind of handle an argument is, from its declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `&PgPool` (or `&Pool<Postgres>`).
    PoolRef,
    /// `PgPool` by value.
    PoolValue,
    /// `&mut PgConnection`, `&mut PoolConnection<Postgres>`, `&mut Transaction<'_, Postgres>`
    /// (or any `&mut` named with `db = ...`): lent back to the body.
    Connection,
}

/// An argument that is the database handle.
pub struct HandleArg {
    pub name: Ident,
    /// The argument's pattern, as written (`conn`, `mut conn`).
    pub pat: Pat,
    pub kind: Kind,
}

fn last_segment(ty: &Type) -> Option<String> {
    match ty {
        Type::Path(path) => path.path.segments.last().map(|s| s.ident.to_string()),
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

/// The kind of handle a type is, if it is recognisably one.
pub fn classify(ty: &Type) -> Option<Kind> {
    match ty {
        Type::Reference(TypeReference {
            mutability, elem, ..
        }) => {
            let name = last_segment(elem)?;
            match (mutability.is_some(), name.as_str()) {
                (false, "PgPool" | "Pool") => Some(Kind::PoolRef),
                (true, "PgConnection" | "PoolConnection" | "Transaction") => Some(Kind::Connection),
                _ => None,
            }
        }
        Type::Group(group) => classify(&group.elem),
        _ => match last_segment(ty)?.as_str() {
            "PgPool" | "Pool" => Some(Kind::PoolValue),
            _ => None,
        },
    }
}

/// The kind an argument named with `db = ...` has: its declared type's, or, when the type is not
/// recognisably a handle (an alias, say), what its shape says (`&mut` lends, `&` and values are
/// pools); the type system then checks it.
fn kind_of_named(ty: &Type) -> Kind {
    classify(ty).unwrap_or(match ty {
        Type::Reference(TypeReference {
            mutability: Some(_),
            ..
        }) => Kind::Connection,
        Type::Reference(_) => Kind::PoolRef,
        _ => Kind::PoolValue,
    })
}

/// The function's arguments that have a plain name (`conn: ...`, `mut conn: ...`).
fn named_args(sig: &Signature) -> impl Iterator<Item = (&PatType, &Ident)> {
    sig.inputs.iter().filter_map(|arg| match arg {
        FnArg::Typed(typed) => match &*typed.pat {
            Pat::Ident(PatIdent { ident, .. }) => Some((typed, ident)),
            _ => None,
        },
        FnArg::Receiver(_) => None,
    })
}

fn handle_arg(typed: &PatType, name: &Ident, kind: Kind) -> HandleArg {
    HandleArg {
        name: name.clone(),
        pat: (*typed.pat).clone(),
        kind,
    }
}

/// The argument named `name`, with its kind.
pub fn named(sig: &Signature, name: &Ident) -> syn::Result<HandleArg> {
    named_args(sig)
        .find(|(_, ident)| *ident == name)
        .map(|(typed, ident)| handle_arg(typed, ident, kind_of_named(&typed.ty)))
        .ok_or_else(|| {
            let names: Vec<String> = named_args(sig)
                .map(|(_, ident)| format!("`{ident}`"))
                .collect();
            let have = if names.is_empty() {
                "it has no named arguments".to_owned()
            } else {
                format!("its arguments are {}", names.join(", "))
            };
            syn::Error::new_spanned(
                name,
                format!("`{name}` is not an argument of `{}`: {have}", sig.ident),
            )
        })
}

/// The arguments whose declared type is recognisably a handle accepted by `accept`.
pub fn detect(sig: &Signature, accept: impl Fn(Kind) -> bool) -> syn::Result<Option<HandleArg>> {
    let mut found = named_args(sig)
        .filter_map(|(typed, ident)| classify(&typed.ty).map(|kind| (typed, ident, kind)))
        .filter(|(_, _, kind)| accept(*kind));
    let Some((typed, ident, kind)) = found.next() else {
        return Ok(None);
    };
    if let Some((second, second_ident, _)) = found.next() {
        return Err(syn::Error::new_spanned(
            second.to_token_stream(),
            format!(
                "both `{ident}` and `{second_ident}` could be the database handle: say which \
                 with `db = {ident}` (or `db = {second_ident}`)"
            ),
        ));
    }
    Ok(Some(handle_arg(typed, ident, kind)))
}
