//! Finding the database handle of a scope: the expression named with `db = ...`, else the
//! argument whose written type is recognisably a handle, else (for advisory locks) the default
//! pool. Arguments the macro cannot read (aliases, patterns, paths) are probed by the type
//! system, so that a handle is never passed over in silence.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Expr, FnArg, Ident, Pat, PatIdent, Signature, Type, TypeReference};

/// What kind of handle a written type recognisably is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `&PgPool` (or `&Pool<Postgres>`, `&Arc<PgPool>`).
    PoolRef,
    /// `PgPool` or `Arc<PgPool>` by value.
    PoolValue,
    /// `&mut PgConnection`, `&mut PoolConnection<Postgres>`, `&mut Transaction<'_, Postgres>`.
    Connection,
}

/// A name the function's arguments bind: an argument (`conn: &mut PgConnection`) or a binding
/// inside an argument's pattern (`pool` in `State(pool): State<PgPool>`).
#[derive(Clone)]
pub struct Binding {
    pub name: Ident,
    /// Whether it is bound `mut`.
    pub mutable: bool,
    /// The kind its written type recognisably is; `None` inside patterns and for types the
    /// macro cannot read.
    pub kind: Option<Kind>,
    /// Whether its written type is a `&mut` reference (a connection, if it is a handle at all).
    pub mut_ref: bool,
}

/// The handle a scope is entered on.
pub enum Handle {
    /// A binding, moved into the scope and lent back to the body under its own name.
    Binding(Binding),
    /// An expression named with `db = ...`, handed to the scope as these tokens.
    Expr(TokenStream),
    /// The process-wide default pool.
    Default,
}

impl Handle {
    /// The tokens that evaluate to the handle.
    pub fn tokens(&self, private: &TokenStream) -> TokenStream {
        match self {
            Handle::Binding(binding) => binding.name.to_token_stream(),
            Handle::Expr(tokens) => tokens.clone(),
            Handle::Default => quote!(#private::default_pool()),
        }
    }

    /// Where errors about the handle point.
    pub fn span(&self) -> Span {
        match self {
            Handle::Binding(binding) => binding.name.span(),
            Handle::Expr(tokens) => tokens.span(),
            Handle::Default => Span::call_site(),
        }
    }
}

fn last_segment(ty: &Type) -> Option<(String, Option<String>)> {
    match ty {
        Type::Path(path) => {
            let last = path.path.segments.last()?;
            // `Arc<PgPool>`: the one type argument's own last segment.
            let inner = match &last.arguments {
                syn::PathArguments::AngleBracketed(args) => {
                    args.args.iter().find_map(|arg| match arg {
                        syn::GenericArgument::Type(ty) => last_segment(ty).map(|(name, _)| name),
                        _ => None,
                    })
                }
                _ => None,
            };
            Some((last.ident.to_string(), inner))
        }
        Type::Group(group) => last_segment(&group.elem),
        Type::Paren(paren) => last_segment(&paren.elem),
        _ => None,
    }
}

fn is_pool(ty: &Type) -> bool {
    match last_segment(ty) {
        Some((name, _)) if name == "PgPool" || name == "Pool" => true,
        Some((name, Some(inner))) if name == "Arc" => inner == "PgPool",
        _ => false,
    }
}

/// The kind of handle a written type is, if it is recognisably one.
pub fn classify(ty: &Type) -> Option<Kind> {
    match ty {
        Type::Reference(TypeReference {
            mutability, elem, ..
        }) => {
            if mutability.is_none() && is_pool(elem) {
                return Some(Kind::PoolRef);
            }
            let (name, _) = last_segment(elem)?;
            match name.as_str() {
                // A shared reference to a connection too, so that the type system can say to
                // take it as `&mut` rather than the lock going to the default pool.
                "PgConnection" | "PoolConnection" | "Transaction" => Some(Kind::Connection),
                _ => None,
            }
        }
        Type::Group(group) => classify(&group.elem),
        Type::Paren(paren) => classify(&paren.elem),
        _ if is_pool(ty) => Some(Kind::PoolValue),
        _ => None,
    }
}

fn is_mut_ref(ty: &Type) -> bool {
    match ty {
        Type::Reference(reference) => reference.mutability.is_some(),
        Type::Group(group) => is_mut_ref(&group.elem),
        Type::Paren(paren) => is_mut_ref(&paren.elem),
        _ => false,
    }
}

/// Every name the function's typed arguments bind, in order.
pub fn bindings(sig: &Signature) -> Vec<Binding> {
    let mut out = Vec::new();
    for arg in &sig.inputs {
        let FnArg::Typed(typed) = arg else { continue };
        match &*typed.pat {
            Pat::Ident(PatIdent {
                ident,
                mutability,
                subpat: None,
                by_ref: None,
                ..
            }) => out.push(Binding {
                name: ident.clone(),
                mutable: mutability.is_some(),
                kind: classify(&typed.ty),
                mut_ref: is_mut_ref(&typed.ty),
            }),
            pat => pattern_bindings(pat, &mut out),
        }
    }
    out
}

fn pattern_bindings(pat: &Pat, out: &mut Vec<Binding>) {
    match pat {
        Pat::Ident(ident) => {
            out.push(Binding {
                name: ident.ident.clone(),
                mutable: ident.mutability.is_some(),
                kind: None,
                mut_ref: false,
            });
            if let Some((_, sub)) = &ident.subpat {
                pattern_bindings(sub, out);
            }
        }
        Pat::Tuple(tuple) => tuple.elems.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::TupleStruct(tuple) => tuple.elems.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::Struct(object) => object
            .fields
            .iter()
            .for_each(|field| pattern_bindings(&field.pat, out)),
        Pat::Slice(slice) => slice.elems.iter().for_each(|p| pattern_bindings(p, out)),
        Pat::Reference(reference) => pattern_bindings(&reference.pat, out),
        Pat::Paren(paren) => pattern_bindings(&paren.pat, out),
        Pat::Type(typed) => pattern_bindings(&typed.pat, out),
        _ => {}
    }
}

fn names(bindings: &[Binding]) -> String {
    if bindings.is_empty() {
        return "it binds no names".to_owned();
    }
    let names: Vec<String> = bindings.iter().map(|b| format!("`{}`", b.name)).collect();
    format!("its arguments bind {}", names.join(", "))
}

/// The handle `db = expr` names: a binding (lent back), or an expression. Places (`self.pool`,
/// `state.pools[0]`) are borrowed, so that a pool kept in `self` is not moved out of it;
/// references (`&self.state.db`, `&mut self.conn`) and values (`state.pool()`) are taken as
/// written.
pub fn named(sig: &Signature, all: &[Binding], expr: &Expr) -> syn::Result<Handle> {
    match expr {
        Expr::Path(path) if path.qself.is_none() && path.path.get_ident().is_some() => {
            let name = path.path.get_ident().expect("checked");
            match all.iter().find(|b| b.name == *name) {
                Some(binding) => Ok(Handle::Binding(binding.clone())),
                None => Err(syn::Error::new_spanned(
                    name,
                    format!(
                        "`{name}` is not an argument of `{}`: {} (or write any expression, \
                         such as `db = self.pool`)",
                        sig.ident,
                        names(all)
                    ),
                )),
            }
        }
        Expr::Paren(paren) => named(sig, all, &paren.expr),
        Expr::Group(group) => named(sig, all, &group.expr),
        Expr::Field(_) | Expr::Index(_) => {
            let span = expr.span();
            Ok(Handle::Expr(quote_spanned!(span=> &(#expr))))
        }
        _ => Ok(Handle::Expr(expr.to_token_stream())),
    }
}

/// The one binding whose written type is a handle accepted by `accept`; two are an error.
pub fn detect(all: &[Binding], accept: impl Fn(Kind) -> bool) -> syn::Result<Option<Binding>> {
    let mut found = all.iter().filter(|b| b.kind.is_some_and(&accept));
    let Some(first) = found.next() else {
        return Ok(None);
    };
    if let Some(second) = found.next() {
        return Err(syn::Error::new_spanned(
            &second.name,
            format!(
                "both `{}` and `{}` could be the database handle: say which with `db = {}` \
                 (or `db = {}`)",
                first.name, second.name, first.name, second.name
            ),
        ));
    }
    Ok(Some(first.clone()))
}

/// The bindings the macro could not read, to probe with the type system.
pub fn unread<'a>(all: &'a [Binding], chosen: Option<&Ident>) -> Vec<&'a Binding> {
    all.iter()
        .filter(|b| b.kind.is_none() && Some(&b.name) != chosen)
        .collect()
}

/// A compile-time probe of `binding`: an error at it if its type is a database handle.
pub fn probe(binding: &Binding, private: &TokenStream) -> TokenStream {
    let name = &binding.name;
    let private = crate::expand::respan(private, name.span());
    quote_spanned! {name.span()=>
        {
            #[allow(unused_imports)]
            use #private::NotAHandle as _;
            #private::probe(&#name).check();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(tokens: TokenStream) -> Signature {
        syn::parse2(tokens).unwrap()
    }

    #[test]
    fn written_types_are_classified() {
        let all = bindings(&sig(quote! {
            fn f(a: &PgPool, b: sqlx::PgPool, c: &mut PgConnection, d: &mut Transaction<'_, Postgres>,
                 e: &Arc<PgPool>, f: Arc<PgPool>, g: &mut DbConn, h: u32, State(i): State<PgPool>)
        }));
        let kinds: Vec<_> = all.iter().map(|b| (b.name.to_string(), b.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("a".into(), Some(Kind::PoolRef)),
                ("b".into(), Some(Kind::PoolValue)),
                ("c".into(), Some(Kind::Connection)),
                ("d".into(), Some(Kind::Connection)),
                ("e".into(), Some(Kind::PoolRef)),
                ("f".into(), Some(Kind::PoolValue)),
                ("g".into(), None),
                ("h".into(), None),
                ("i".into(), None),
            ]
        );
        assert!(all[6].mut_ref && !all[7].mut_ref);
    }

    #[test]
    fn named_handles_are_bindings_places_or_values() {
        let s = sig(quote!(fn f(&self, State(pool): State<PgPool>)));
        let all = bindings(&s);
        let handle = |expr: TokenStream| named(&s, &all, &syn::parse2(expr).unwrap());
        assert!(matches!(handle(quote!(pool)), Ok(Handle::Binding(b)) if b.name == "pool"));
        let place = handle(quote!(self.pool))
            .ok()
            .unwrap()
            .tokens(&quote!(::pglock::__private))
            .to_string();
        assert_eq!(place, "& (self . pool)");
        let reference = handle(quote!(&self.state.db))
            .ok()
            .unwrap()
            .tokens(&quote!(::pglock::__private))
            .to_string();
        assert_eq!(reference, "& self . state . db");
        let call = handle(quote!(state.pool()))
            .ok()
            .unwrap()
            .tokens(&quote!(::pglock::__private))
            .to_string();
        assert_eq!(call, "state . pool ()");
        let missing = handle(quote!(nope)).err().unwrap().to_string();
        assert!(missing.contains("its arguments bind `pool`"), "{missing}");
    }

    #[test]
    fn two_recognised_handles_are_ambiguous() {
        let all = bindings(&sig(quote!(fn f(a: &PgPool, b: &PgPool))));
        let error = detect(&all, |_| true).err().unwrap().to_string();
        assert!(error.contains("`db = a`"), "{error}");
    }
}
