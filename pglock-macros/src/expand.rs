//! Rewriting a function: its signature stays as written, and its body moves into an `async move`
//! closure handed to one function of `::pglock::__private`, which takes the lock (or sets the
//! timeout, or starts the watcher), runs the body, and cleans up however the body ends.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType};

use crate::args::{AdvisoryArgs, Limit, PrioritizeArgs, SideEffect, Signal, TimeoutArgs};
use crate::duration::Dur;
use crate::handle::{self, HandleArg, Kind};

/// `#[pglock::advisory]`.
pub fn advisory(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(item, |func| {
        let args = AdvisoryArgs::parse(args)?;
        require_async(&func, "advisory")?;
        let handle = match &args.db {
            Some(name) => Some(handle::named(&func.sig, name)?),
            None => handle::detect(&func.sig, |_| true)?,
        };
        Ok(rewrite_advisory(func, &args, handle))
    })
}

/// `#[pglock::timeout]`.
pub fn timeout(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(item, |func| {
        let args = TimeoutArgs::parse(args)?;
        require_async(&func, "timeout")?;
        let conn = one_session(&func, args.db.as_ref(), "timeout", "sets lock_timeout on")?;
        let limit = limit_option(args.limit);
        let name = &conn.name;
        let enter = quote_spanned!(return_span(&func)=>
            ::pglock::__private::timeout_on(::pglock::__private::timeout(#limit), #name)
        );
        Ok(lending(func, &conn, enter))
    })
}

/// `#[pglock::prioritize]`.
pub fn prioritize(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(item, |func| {
        let args = PrioritizeArgs::parse(args)?;
        require_async(&func, "prioritize")?;
        let conn = one_session(&func, args.db.as_ref(), "prioritize", "protects")?;
        let watcher = match &args.watcher {
            Some(name) => Some(handle::named(&func.sig, name)?),
            None => handle::detect(&func.sig, |kind| kind != Kind::Connection)?,
        };
        let watcher = match watcher {
            Some(arg) if arg.kind == Kind::Connection => {
                return Err(syn::Error::new_spanned(
                    &arg.name,
                    "the watcher is a pool (`&PgPool`) that prioritize's background task \
                     connects with, not a connection",
                ));
            }
            Some(arg) => pool_expr(Some(&arg)),
            None => pool_expr(None),
        };

        let mut settings = quote!(::pglock::__private::prioritize());
        if let Some(interval) = args.interval {
            let interval = duration(interval);
            settings.extend(quote!(.interval(#interval)));
        }
        if let Some(periodic) = args.periodic {
            settings.extend(quote!(.periodic(#periodic)));
        }
        if args.signal == Some(Signal::Cancel) {
            settings.extend(quote!(.signal(::pglock::__private::Signal::Cancel)));
        }
        if let Some(age) = args.older_than {
            let age = duration(age);
            settings.extend(quote!(.older_than(#age)));
        }
        if let Some(limit) = args.timeout {
            let limit = limit_option(limit);
            settings.extend(quote!(.timeout(#limit)));
        }
        let name = &conn.name;
        let enter = quote_spanned!(return_span(&func)=>
            ::pglock::__private::prioritize_on(#settings, #name, #watcher)
        );
        Ok(lending(func, &conn, enter))
    })
}

/// Parse the item, rewrite it, and on any error emit the error next to the function as written,
/// so that one mistake does not also make every call of the function an error.
fn expand(
    item: TokenStream,
    rewrite: impl FnOnce(ItemFn) -> syn::Result<TokenStream>,
) -> TokenStream {
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(func) => func,
        Err(error) => return with_error(item, error),
    };
    let original = func.to_token_stream();
    rewrite(func).unwrap_or_else(|error| with_error(original, error))
}

fn with_error(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.into_compile_error());
    item
}

fn require_async(func: &ItemFn, attr: &str) -> syn::Result<()> {
    if func.sig.asyncness.is_some() {
        return Ok(());
    }
    Err(syn::Error::new_spanned(
        func.sig.fn_token,
        format!(
            "#[pglock::{attr}] only works on `async fn`: pglock talks to Postgres asynchronously \
             (make the function `async fn`, or use pglock's runtime API inside it)"
        ),
    ))
}

/// The connection argument `timeout` and `prioritize` act on: they need one session.
fn one_session(
    func: &ItemFn,
    db: Option<&syn::Ident>,
    attr: &str,
    does: &str,
) -> syn::Result<HandleArg> {
    let need = format!(
        "#[pglock::{attr}] {does} one database session, so it needs a connection argument: \
         `&mut PgConnection`, `&mut PoolConnection<Postgres>` or `&mut Transaction<'_, Postgres>`"
    );
    let found = match db {
        Some(name) => Some(handle::named(&func.sig, name)?),
        None => handle::detect(&func.sig, |kind| kind == Kind::Connection)?,
    };
    let pool = |arg: HandleArg| {
        syn::Error::new_spanned(
            &arg.name,
            format!("{need}; `{}` is a pool, which has many sessions", arg.name),
        )
    };
    match found {
        Some(arg) if arg.kind == Kind::Connection => Ok(arg),
        Some(arg) => Err(pool(arg)),
        None => match handle::detect(&func.sig, |kind| kind != Kind::Connection) {
            Ok(Some(arg)) => Err(pool(arg)),
            _ => Err(syn::Error::new_spanned(&func.sig.ident, need)),
        },
    }
}

/// Where the return type is written (the function name when there is none), for errors about it.
/// The runtime call is spanned there, parentheses included, so that an unsatisfied bound on the
/// return type is reported at the return type (a call whose tokens come from two places is
/// reported at the attribute instead).
fn return_span(func: &ItemFn) -> Span {
    match &func.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => func.sig.ident.span(),
    }
}

/// `-> T` for the body's closure, anchoring the body's type to the declared one (so type errors
/// land in the user's code); nothing when the type has `impl Trait` in it, which a closure's
/// return type cannot.
fn closure_return(func: &ItemFn) -> TokenStream {
    match &func.sig.output {
        ReturnType::Type(_, ty) if !mentions_impl(ty.to_token_stream()) => quote!(-> #ty),
        ReturnType::Type(..) => quote!(),
        ReturnType::Default => quote!(-> ()),
    }
}

fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "impl",
        proc_macro2::TokenTree::Group(group) => mentions_impl(group.stream()),
        _ => false,
    })
}

/// The body for a function whose connection argument is lent back to it: `enter` (a call of
/// `::pglock::__private`) takes the lock, sets the timeout or starts the watcher, or gives the
/// function's early return value; the connection is then lent to the body, in an `async move`
/// block, under the argument's own name and type; `exit` ends the scope and gives the result.
///
/// A block rather than a closure: a closure taking `&mut Transaction<'_, _>` would be generic
/// over the transaction's lifetime, and its future would fail `Send` checks.
fn lending(func: ItemFn, arg: &HandleArg, enter: TokenStream) -> TokenStream {
    let func = without_outer_mut(func, arg);
    let hygienic = |name: &str| syn::Ident::new(name, Span::mixed_site());
    let (scope, early, out) = (
        hygienic("__pglock_scope"),
        hygienic("__pglock_early"),
        hygienic("__pglock_out"),
    );
    let (pat, block) = (&arg.pat, &func.block);
    let anchor = outcome_type(&func);
    let body = quote! {
        let mut #scope = match #enter.await {
            ::core::result::Result::Ok(#scope) => #scope,
            ::core::result::Result::Err(#early) => return #early,
        };
        let #pat = #scope.lend();
        let #out #anchor = ::pglock::__private::catch_panic(async move #block).await;
        #scope.exit(#out).await
    };
    with_body(func, body)
}

/// `: std::thread::Result<T>` for the body's outcome, anchoring the body's type to the declared
/// one (so type errors land in the user's code); nothing when the type has `impl Trait` in it.
fn outcome_type(func: &ItemFn) -> TokenStream {
    match &func.sig.output {
        ReturnType::Type(_, ty) if !mentions_impl(ty.to_token_stream()) => {
            quote!(: ::std::thread::Result<#ty>)
        }
        ReturnType::Type(..) => quote!(),
        ReturnType::Default => quote!(: ::std::thread::Result<()>),
    }
}

/// The body as a closure that needs nothing lent (the lock's connection is pglock's own).
fn plain_closure(func: &ItemFn) -> TokenStream {
    let (ret, block) = (closure_return(func), &func.block);
    quote!(async move || #ret #block)
}

fn with_body(mut func: ItemFn, body: TokenStream) -> TokenStream {
    func.block = Box::new(syn::parse_quote!({ #body }));
    func.into_token_stream()
}

/// The function with `mut` taken off the lent argument's binding: the body's closure binds it
/// again, as written, and the outer binding is only handed on. (Patterns are not part of a
/// function's type, so its signature is unchanged.)
fn without_outer_mut(mut func: ItemFn, arg: &HandleArg) -> ItemFn {
    for input in &mut func.sig.inputs {
        if let syn::FnArg::Typed(typed) = input
            && let syn::Pat::Ident(pat) = &mut *typed.pat
            && pat.ident == arg.name
        {
            pat.mutability = None;
        }
    }
    func
}

fn duration(dur: Dur) -> TokenStream {
    let Dur { secs, nanos } = dur;
    quote!(::pglock::__private::duration(#secs, #nanos))
}

fn limit_option(limit: Limit) -> TokenStream {
    match limit {
        Limit::NoLimit => quote!(::core::option::Option::None::<::core::time::Duration>),
        Limit::At(dur) => {
            let dur = duration(dur);
            quote!(::core::option::Option::Some(#dur))
        }
    }
}

/// A pool to hand to the runtime: the argument (cloned if owned) or the default pool.
fn pool_expr(arg: Option<&HandleArg>) -> TokenStream {
    match arg {
        Some(HandleArg {
            name,
            kind: Kind::PoolValue,
            ..
        }) => quote!(::core::clone::Clone::clone(&#name)),
        Some(arg) => arg.name.to_token_stream(),
        None => quote!(::pglock::__private::default_pool()),
    }
}

fn rewrite_advisory(func: ItemFn, args: &AdvisoryArgs, handle: Option<HandleArg>) -> TokenStream {
    let name = func.sig.ident.to_string();
    let path = quote!(::core::concat!(::core::module_path!(), "::", #name));
    let id = match &args.id {
        Some(id) => id.to_token_stream(),
        None => path.clone(),
    };
    // The function's path goes into the context comment of the statements that wait.
    let mut lock = quote!(::pglock::__private::advisory(#id).function(#path));
    if args.shared {
        lock.extend(quote!(.shared()));
    }
    if args.xact {
        lock.extend(quote!(.xact()));
    }
    match args.timeout {
        Some(Limit::NoLimit) => lock.extend(quote!(.wait(::pglock::__private::Wait::Forever))),
        Some(Limit::At(dur)) => {
            let dur = duration(dur);
            lock.extend(quote!(.wait(::pglock::__private::Wait::at_most(#dur))));
        }
        None => {}
    }
    let side = match args.side_effect {
        SideEffect::Raise => "raise",
        SideEffect::Skip => "skip",
    };
    let span = return_span(&func);
    match &handle {
        Some(arg) if arg.kind == Kind::Connection => {
            let call = syn::Ident::new(&format!("advisory_on_{side}"), span);
            let name = &arg.name;
            let enter = quote_spanned!(span=> ::pglock::__private::#call(#lock, #name));
            lending(func, arg, enter)
        }
        pool => {
            let call = syn::Ident::new(&format!("advisory_pool_{side}"), span);
            let (pool, body) = (pool_expr(pool.as_ref()), plain_closure(&func));
            let call = quote_spanned!(span=> ::pglock::__private::#call(#lock, #pool, #body));
            let body = quote!(#call.await);
            with_body(func, body)
        }
    }
}
