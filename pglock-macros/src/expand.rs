//! Rewriting a function: its signature stays as written, and its body is wrapped in one layer per
//! pglock attribute, in reading order (the top attribute outermost, as Python decorators nest).
//!
//! Each layer enters its scope (takes the lock, sets the timeout, starts the watcher) through the
//! one runtime type, `::pglock::__private::Layer` (or under `crate = path`, `path::__private::Layer`),
//! lends the handle back to the code inside under its own name, runs that code in an `async move`
//! block, and ends the scope however the block ended.

use proc_macro2::{Spacing, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, Ident, Meta, Pat, Path};

use crate::args::{
    AdvisoryArgs, Finally, Limit, PrioritizeArgs, RetryArgs, SideEffect, Signal, TimeoutArgs,
};
use crate::duration::Dur;
use crate::handle::{self, Binding, Handle, Kind};
use crate::item::{Body, Func};

/// Which attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Advisory,
    Timeout,
    Prioritize,
    RetryLocks,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Advisory => "advisory",
            Which::Timeout => "timeout",
            Which::Prioritize => "prioritize",
            Which::RetryLocks => "retry_locks",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "advisory" => Some(Which::Advisory),
            "timeout" => Some(Which::Timeout),
            "prioritize" => Some(Which::Prioritize),
            "retry_locks" => Some(Which::RetryLocks),
            _ => None,
        }
    }
}

/// One attribute of the stack, parsed.
// A handful of these exist per expansion, at compile time: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Layer {
    Advisory(AdvisoryArgs),
    Timeout(TimeoutArgs),
    Prioritize(PrioritizeArgs),
    RetryLocks(RetryArgs),
}

impl Layer {
    /// The layers of one attribute: one, or for `#[pglock::timeout]`, one per setting given.
    fn parse(which: Which, args: TokenStream) -> syn::Result<Vec<Self>> {
        Ok(match which {
            Which::Advisory => vec![Layer::Advisory(AdvisoryArgs::parse(args)?)],
            Which::Timeout => TimeoutArgs::parse(args)?
                .into_iter()
                .map(Layer::Timeout)
                .collect(),
            Which::Prioritize => vec![Layer::Prioritize(PrioritizeArgs::parse(args)?)],
            Which::RetryLocks => vec![Layer::RetryLocks(RetryArgs::parse(args)?)],
        })
    }
}

/// Expand `#[pglock::<which>(args)]` on `item`, together with the pglock attributes below it.
pub fn attribute(which: Which, args: TokenStream, item: TokenStream) -> TokenStream {
    let mut func = match syn::parse2::<Func>(item.clone()) {
        Ok(func) => func,
        Err(error) => return with_error(item, error),
    };
    // The pglock attributes below this one: this one expands them all, so that they nest in
    // reading order (Rust would expand each in turn, the bottom one outermost).
    // `crate = path`: where pglock is when the dependency is renamed. The stacked attributes
    // below are recognised under that path too (and under one their own `crate = ...` names).
    let mut errors = Errors::default();
    let (top_crate, args) = match take_crate(args) {
        Ok(taken) => taken,
        Err(error) => return with_error(item, error),
    };
    let mut crates = vec![top_crate.clone()];
    let mut stack = vec![(which, args)];
    func.attrs
        .retain(|attr| match pglock_attribute(attr, top_crate.as_ref()) {
            Some((which, tokens)) => {
                match errors.keep(take_crate(tokens)) {
                    Some((krate, tokens)) => {
                        crates.push(krate);
                        stack.push((which, tokens));
                    }
                    None => stack.push((which, TokenStream::new())),
                }
                false
            }
            None => true,
        });
    let krate = match crates.into_iter().flatten().next() {
        Some(path) => path.to_token_stream(),
        None => quote!(::pglock),
    };
    let layers: Vec<Layer> = stack
        .into_iter()
        .filter_map(|(which, args)| errors.keep(Layer::parse(which, args)))
        .flatten()
        .collect();
    errors.keep(check_function(&func, which));
    if let Some(error) = errors.0 {
        return with_error(func.unchanged(), error);
    }
    match rewrite(&func, &layers, krate) {
        Ok((body, moved)) => {
            without_mut(&mut func, &moved);
            func.with_body(body)
        }
        Err(error) => with_error(func.unchanged(), error),
    }
}

/// The function with `mut` taken off the bindings handed to a scope: the body binds them again,
/// as written, and the outer binding is only moved. (Patterns are not part of a function's type,
/// so its signature is unchanged.)
fn without_mut(func: &mut Func, moved: &[Ident]) {
    fn strip(pat: &mut Pat, moved: &[Ident]) {
        match pat {
            Pat::Ident(ident) => {
                if moved.contains(&ident.ident) {
                    ident.mutability = None;
                }
                if let Some((_, sub)) = &mut ident.subpat {
                    strip(sub, moved);
                }
            }
            Pat::Tuple(tuple) => tuple.elems.iter_mut().for_each(|p| strip(p, moved)),
            Pat::TupleStruct(tuple) => tuple.elems.iter_mut().for_each(|p| strip(p, moved)),
            Pat::Struct(object) => object
                .fields
                .iter_mut()
                .for_each(|field| strip(&mut field.pat, moved)),
            Pat::Slice(slice) => slice.elems.iter_mut().for_each(|p| strip(p, moved)),
            Pat::Reference(reference) => strip(&mut reference.pat, moved),
            Pat::Paren(paren) => strip(&mut paren.pat, moved),
            Pat::Type(typed) => strip(&mut typed.pat, moved),
            _ => {}
        }
    }
    for input in &mut func.sig.inputs {
        if let FnArg::Typed(typed) = input {
            strip(&mut typed.pat, moved);
        }
    }
}

/// A pglock attribute (`#[pglock::advisory(..)]`, `#[::pglock::timeout(..)]`, or under a renamed
/// dependency `#[pglock2::timeout(..)]` when `krate` or the attribute's own `crate = ...` says
/// `pglock2`), with its tokens.
fn pglock_attribute(attr: &Attribute, krate: Option<&Path>) -> Option<(Which, TokenStream)> {
    let path = attr.path();
    let which = Which::from_name(&path.segments.last()?.ident.to_string())?;
    let tokens = match &attr.meta {
        Meta::List(list) => list.tokens.clone(),
        Meta::Path(_) => TokenStream::new(),
        Meta::NameValue(value) => value.value.to_token_stream(),
    };
    // The path without its last segment, as written (`pglock`, `::pglock`, `::my::pglock2`).
    let mut prefix = path.clone();
    prefix.segments.pop();
    prefix.segments.pop_punct();
    if prefix.segments.is_empty() {
        return None;
    }
    let is_pglock = prefix.segments.len() == 1 && prefix.segments[0].ident == "pglock";
    let own = take_crate(tokens.clone()).ok().and_then(|(own, _)| own);
    let named = |krate: &Path| same_path(krate, &prefix);
    if is_pglock || krate.is_some_and(named) || own.as_ref().is_some_and(named) {
        Some((which, tokens))
    } else {
        None
    }
}

/// Two paths name the same thing as written (`pglock2` and `::pglock2` are taken as the same).
fn same_path(a: &Path, b: &Path) -> bool {
    let idents =
        |p: &Path| -> Vec<String> { p.segments.iter().map(|s| s.ident.to_string()).collect() };
    idents(a) == idents(b)
}

/// Takes `crate = path` out of an attribute's arguments: the path, and the other arguments as
/// written. Arguments are split at the commas outside any brackets; only one that starts with
/// `crate =` is taken (no other argument can start so).
fn take_crate(args: TokenStream) -> syn::Result<(Option<Path>, TokenStream)> {
    let tokens: Vec<TokenTree> = args.into_iter().collect();
    let mut found: Option<Path> = None;
    let mut rest = TokenStream::new();
    let mut start = true;
    let mut i = 0;
    while i < tokens.len() {
        let is_crate = start
            && matches!(&tokens[i], TokenTree::Ident(ident) if ident == "crate")
            && matches!(tokens.get(i + 1), Some(TokenTree::Punct(eq)) if eq.as_char() == '='
                && eq.spacing() == Spacing::Alone);
        if is_crate {
            let key = tokens[i].clone();
            let mut end = i + 2;
            while end < tokens.len()
                && !matches!(&tokens[end], TokenTree::Punct(comma) if comma.as_char() == ',')
            {
                end += 1;
            }
            let value: TokenStream = tokens[i + 2..end].iter().cloned().collect();
            let path = syn::parse2::<Path>(value.clone()).map_err(|_| {
                syn::Error::new_spanned(
                    if value.is_empty() {
                        key.to_token_stream()
                    } else {
                        value
                    },
                    "`crate = ...` takes the path pglock is reachable at, e.g. `crate = pglock2`",
                )
            })?;
            if found.is_some() {
                return Err(syn::Error::new_spanned(key, "duplicate `crate` argument"));
            }
            found = Some(path);
            // Skip the comma after it, if any.
            i = end + 1;
            start = true;
            continue;
        }
        start = matches!(&tokens[i], TokenTree::Punct(comma) if comma.as_char() == ',');
        rest.extend(std::iter::once(tokens[i].clone()));
        i += 1;
    }
    Ok((found, rest))
}

fn check_function(func: &Func, which: Which) -> syn::Result<()> {
    let name = which.name();
    if let Body::Missing(_) = func.body {
        return Err(syn::Error::new_spanned(
            &func.sig.ident,
            format!(
                "#[pglock::{name}] wraps a body, and this declaration has none: put the \
                 attribute on the method where it is implemented (in the `impl ... for ...` \
                 block), or give the method a default body here"
            ),
        ));
    }
    if func.sig.asyncness.is_none() && !matches!(func.body, Body::AsyncTrait { .. }) {
        return Err(syn::Error::new_spanned(
            func.sig.fn_token,
            format!(
                "#[pglock::{name}] only works on `async fn`: pglock talks to Postgres \
                 asynchronously (make the function `async fn`, or use pglock's runtime API \
                 inside it)"
            ),
        ));
    }
    Ok(())
}

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn keep<T>(&mut self, result: syn::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                match &mut self.0 {
                    Some(errors) => errors.combine(error),
                    None => self.0 = Some(error),
                }
                None
            }
        }
    }
}

fn with_error(mut item: TokenStream, error: syn::Error) -> TokenStream {
    item.extend(error.into_compile_error());
    item
}

fn hygienic(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// What every layer of one function shares.
struct Context<'a> {
    func: &'a Func,
    bindings: Vec<Binding>,
    /// The return type, to anchor the body's type to (none for types with `impl Trait`).
    anchor: Option<TokenStream>,
    /// The path to pglock: `::pglock`, or what `crate = ...` says.
    krate: TokenStream,
}

impl Context<'_> {
    /// `<pglock>::__private`, the module the generated code calls into.
    fn private(&self) -> TokenStream {
        let krate = &self.krate;
        quote!(#krate::__private)
    }
}

/// The new body: the probes and return-type checks, then the layers around the old body; and the
/// bindings moved into a scope.
fn rewrite(
    func: &Func,
    layers: &[Layer],
    krate: TokenStream,
) -> syn::Result<(TokenStream, Vec<Ident>)> {
    let cx = Context {
        func,
        krate,
        bindings: handle::bindings(&func.sig),
        anchor: match func.output() {
            Some(ty) if mentions_impl(ty.to_token_stream()) => None,
            Some(ty) => Some(ty.to_token_stream()),
            None => Some(quote!(())),
        },
    };
    let private = cx.private();
    let mut errors = Errors::default();
    let mut handles = Vec::new();
    let mut probed = Vec::new();
    for layer in layers {
        if let Some((handle, probes)) = errors.keep(resolve(&cx, layer)) {
            handles.push(handle);
            for binding in probes {
                if !probed.iter().any(|b: &Binding| b.name == binding.name) {
                    probed.push(binding.clone());
                }
            }
        }
    }
    if let Some(error) = errors.0 {
        return Err(error);
    }

    let mut prelude: TokenStream = probed.iter().map(|b| handle::probe(b, &private)).collect();
    let (raise, skip) = (hygienic("__pglock_raise"), hygienic("__pglock_skip"));
    let retry = hygienic("__pglock_retry");
    let skips = |layer: &Layer| matches!(layer, Layer::Advisory(args) if args.side_effect == SideEffect::Skip);
    let retries = |layer: &Layer| matches!(layer, Layer::RetryLocks(_));
    // Each return-type rule is checked once, at the return type, whichever layers need it.
    if layers.iter().any(|layer| !skips(layer) && !retries(layer)) {
        prelude.extend(policy(&cx, &raise, "raise"));
    }
    if layers.iter().any(skips) {
        prelude.extend(policy(&cx, &skip, "skip"));
    }
    if layers.iter().any(retries) {
        prelude.extend(policy(&cx, &retry, "retry_policy"));
    }

    let block = func.block();
    let mut body = quote!(#block);
    let mut moved: Vec<Ident> = Vec::new();
    for (layer, handle) in layers.iter().zip(&handles).rev() {
        body = match layer {
            Layer::RetryLocks(args) => {
                let (wrapped, reborrowed) = retry_loop(&cx, args, handle, &retry, body);
                moved.extend(reborrowed);
                wrapped
            }
            _ => {
                let policy = if skips(layer) { &skip } else { &raise };
                wrap(&cx, layer, handle, policy, body)
            }
        };
    }
    moved.extend(handles.iter().filter_map(|handle| match handle {
        Handle::Binding(binding) => Some(binding.name.clone()),
        _ => None,
    }));
    Ok((quote!(#prelude #body), moved))
}

/// `let __pglock_raise = ::pglock::__private::raise::<R>();`, spanned at the return type so
/// that a return type that does not fit is reported there, once.
fn policy(cx: &Context<'_>, name: &Ident, rule: &str) -> TokenStream {
    let private = cx.private();
    let span = match cx.func.output() {
        Some(ty) => ty.span(),
        None => cx.func.sig.ident.span(),
    };
    let rule = Ident::new(rule, span);
    let turbofish = match &cx.anchor {
        Some(ty) => quote_spanned!(span=> ::<#ty>),
        None => quote!(),
    };
    let private = respan(&private, span);
    quote_spanned! {span=>
        let #name = #private::#rule #turbofish ();
    }
}

/// The handle a layer acts on, and the bindings to probe because the macro could not read them.
fn resolve<'a>(cx: &'a Context<'_>, layer: &Layer) -> syn::Result<(Handle, Vec<&'a Binding>)> {
    let sig = &cx.func.sig;
    let all = &cx.bindings;
    match layer {
        Layer::Advisory(args) => {
            if let Some(db) = &args.db {
                return Ok((handle::named(sig, all, db)?, Vec::new()));
            }
            let found = handle::detect(all, |_| true)?;
            let probes = handle::unread(all, found.as_ref().map(|b| &b.name));
            let handle = found.map_or(Handle::Default, Handle::Binding);
            Ok((handle, probes))
        }
        Layer::Timeout(TimeoutArgs { db, .. })
        | Layer::Prioritize(PrioritizeArgs { db, .. })
        | Layer::RetryLocks(RetryArgs { db, .. }) => {
            let name = match layer {
                Layer::Timeout(args) => {
                    format!("#[pglock::timeout] sets {} on", args.setting.guc())
                }
                Layer::RetryLocks(_) => {
                    "#[pglock::retry_locks] runs each attempt in a transaction on".to_owned()
                }
                _ => "#[pglock::prioritize] protects".to_owned(),
            };
            if let Some(db) = db {
                return Ok((handle::named(sig, all, db)?, Vec::new()));
            }
            one_session(cx, &name).map(|handle| (handle, Vec::new()))
        }
    }
}

/// The session a lock timeout or prioritize acts on, when `db = ...` does not say.
fn one_session(cx: &Context<'_>, does: &str) -> syn::Result<Handle> {
    let all = &cx.bindings;
    let need = format!(
        "{does} one database session, so it needs a connection argument: \
         `&mut PgConnection`, `&mut PoolConnection<Postgres>` or `&mut Transaction<'_, Postgres>`"
    );
    if let Some(found) = handle::detect(all, |kind| kind == Kind::Connection)? {
        return Ok(Handle::Binding(found));
    }
    if let Some(pool) = handle::detect(all, |kind| kind != Kind::Connection)? {
        return Err(syn::Error::new_spanned(
            &pool.name,
            format!("{need}; `{}` is a pool, which has many sessions", pool.name),
        ));
    }
    // No written type says it: the one `&mut` argument the macro cannot read, else the one such
    // argument at all, is the candidate, and the type system checks that it is a session.
    let unread = handle::unread(all, None);
    let mut_refs: Vec<&Binding> = unread.iter().copied().filter(|b| b.mut_ref).collect();
    match (mut_refs.as_slice(), unread.as_slice()) {
        ([one], _) | ([], [one]) => Ok(Handle::Binding((*one).clone())),
        _ => Err(syn::Error::new_spanned(
            &cx.func.sig.ident,
            format!("{need} (behind an alias, name it with `db = ...`)"),
        )),
    }
}

/// One layer around `inner`: enter, lend, run, exit.
fn wrap(
    cx: &Context<'_>,
    layer: &Layer,
    handle: &Handle,
    policy: &Ident,
    inner: TokenStream,
) -> TokenStream {
    let private = cx.private();
    let kind = kind(cx, layer);
    let (scope, the_kind, lent, out) = (
        hygienic("__pglock_scope"),
        hygienic("__pglock_kind"),
        hygienic("__pglock_lent"),
        hygienic("__pglock_out"),
    );
    let (site, span, held, failed, ended, early, body) = (
        hygienic("site"),
        hygienic("span"),
        hygienic("held"),
        hygienic("failed"),
        hygienic("ended"),
        hygienic("early"),
        hygienic("body"),
    );
    let target = handle.tokens(&private);
    let check = match layer {
        Layer::Advisory(_) => quote_spanned!(handle.span()=> handle),
        _ => quote_spanned!(handle.span()=> session),
    };
    // The handle is checked where it is written, once; the calls after it cannot fail on it.
    let private_here = respan(&private, handle.span());
    let checked = quote_spanned! {handle.span()=>
        {
            #[allow(unused_imports)]
            use #private_here::Unchecked as _;
            #private_here::Check(#target).#check()
        }
    };
    let (lend, rebind) = match handle {
        Handle::Binding(binding) => {
            let (name, mutability) = (&binding.name, binding.mutable.then(|| quote!(mut)));
            (quote!(#lent), quote!(let #mutability #name = #lent;))
        }
        _ => (quote!(_), quote!()),
    };
    let anchor = cx
        .anchor
        .as_ref()
        .map(|ty| quote!(: #private::Outcome<#ty>));
    // Each step's future (the kind's entering, the body's run, the end) is awaited here, in
    // this function's own state, as a caller of the runtime API awaits them: no layer of
    // pglock's wraps them, and none is moved once made.
    quote! {
        let #the_kind = #kind;
        let mut #scope = #private::Layer::new(#policy, &#the_kind, #checked);
        {
            let (#site, #span) = #scope.entering();
            let #held = #private::await_in!(#span, #private::Kind::enter(#the_kind, #site));
            if let ::core::result::Result::Err(#early) = #scope.entered(#held) {
                return #early;
            }
        }
        // The code inside is pinned here and run through a reference, and dropped at the end of
        // this block, before the scope ends.
        let #out #anchor = {
            let (#lend, #held, #span) = #scope.split();
            let #body = ::core::pin::pin!(async move {
                #rebind
                #inner
            });
            #private::await_in!(#span, #private::Held::run(#held, #body))
        };
        let #ended = {
            let (#held, #site, #span, #failed) = #scope.ending(&#out);
            #private::await_in!(#span, #private::Held::end(#held, #site, #failed))
        };
        #scope.exit(#out, #ended)
    }
}

/// The scope a layer enters: the runtime builder it configures.
fn kind(cx: &Context<'_>, layer: &Layer) -> TokenStream {
    let private = cx.private();
    match layer {
        Layer::Advisory(args) => advisory(cx, args),
        Layer::Timeout(args) => {
            let limit = limit_option(args.limit);
            let constructor = Ident::new(args.setting.constructor(), Span::call_site());
            quote!(#private::#constructor(#limit))
        }
        Layer::Prioritize(args) => prioritize(cx, args),
        Layer::RetryLocks(_) => unreachable!("retries are a loop, not a scope"),
    }
}

/// `#[pglock::retry_locks]`: the code inside runs once per attempt, in the attempt's
/// transaction, lent under the handle's name; every other argument is given again to each
/// attempt (reborrowed, or copied), and one that can be neither is a compile error at it.
/// Returns the loop and the bindings it rebinds (their `mut` moves inside).
fn retry_loop(
    cx: &Context<'_>,
    args: &RetryArgs,
    handle: &Handle,
    policy: &Ident,
    inner: TokenStream,
) -> (TokenStream, Vec<Ident>) {
    let private = cx.private();
    let (retrying, attempt, lent, out) = (
        hygienic("__pglock_retrying"),
        hygienic("__pglock_attempt"),
        hygienic("__pglock_lent"),
        hygienic("__pglock_out"),
    );
    let (ok, early, done) = (hygienic("attempt"), hygienic("early"), hygienic("done"));
    let target = handle.tokens(&private);
    let private_here = respan(&private, handle.span());
    let checked = quote_spanned! {handle.span()=>
        {
            #[allow(unused_imports)]
            use #private_here::Unchecked as _;
            #private_here::Check(#target).attempts()
        }
    };
    let settings = retry_settings(cx, args);
    let handle_name = match handle {
        Handle::Binding(binding) => Some(binding),
        _ => None,
    };
    let rebind = handle_name.map(|binding| {
        let (name, mutability) = (&binding.name, binding.mutable.then(|| quote!(mut)));
        quote!(let #mutability #name = #lent;)
    });
    let others: Vec<&Binding> = cx
        .bindings
        .iter()
        .filter(|b| handle_name.is_none_or(|h| h.name != b.name))
        .collect();
    let outer: TokenStream = others
        .iter()
        .map(|binding| {
            let name = &binding.name;
            quote!(#[allow(unused_mut)] let mut #name = #name;)
        })
        .collect();
    let again: TokenStream = others
        .iter()
        .map(|binding| {
            let name = &binding.name;
            let mutability = binding.mutable.then(|| quote!(mut));
            let private = respan(&private, name.span());
            quote_spanned! {name.span()=>
                #[allow(unused_variables, unused_mut)]
                let #mutability #name = {
                    #[allow(unused_imports)]
                    use #private::AgainCopy as _;
                    #private::Again(&mut #name).again()
                };
            }
        })
        .collect();
    let anchor = cx.anchor.as_ref().map(|ty| quote!(: #private::Caught<#ty>));
    let tokens = quote! {
        let mut #retrying = #private::retry(#policy, #settings, #checked);
        #outer
        loop {
            let mut #attempt = match #retrying.next().await {
                ::core::result::Result::Ok(#ok) => #ok,
                ::core::result::Result::Err(#early) => return #early,
            };
            let #lent = #attempt.lend();
            let #out #anchor = #private::catch_panic(async {
                #rebind
                #again
                #inner
            }).await;
            match #attempt.exit(#out).await {
                ::core::ops::ControlFlow::Break(#done) => break #done,
                ::core::ops::ControlFlow::Continue(()) => {}
            }
        }
    };
    let reborrowed = others.iter().map(|b| b.name.clone()).collect();
    (tokens, reborrowed)
}

/// `Ok(retry_locks()...)`, or with a final prioritize, its watcher pool checked at run time.
fn retry_settings(cx: &Context<'_>, args: &RetryArgs) -> TokenStream {
    let private = cx.private();
    let mut settings = quote!(#private::retry_locks());
    if let Some(steps) = &args.schedule {
        let steps = steps.iter().map(|(timeout, pause)| {
            let (timeout, pause) = (duration(*timeout), duration(*pause));
            quote!(#private::Step::new(#timeout, #pause))
        });
        settings.extend(quote!(.schedule([#(#steps),*])));
    }
    if let Some(deadline) = args.deadline {
        let deadline = duration(deadline);
        settings.extend(quote!(.deadline(#deadline)));
    }
    if let Some(jitter) = args.jitter {
        settings.extend(quote!(.jitter(#jitter)));
    }
    match args.finally {
        Finally::Fail => quote!(::core::result::Result::Ok(#settings)),
        Finally::Wait => quote! {
            ::core::result::Result::Ok(#settings.finally(#private::Finally::Wait))
        },
        Finally::Prioritize => {
            let watcher = watcher_pool(cx, args.watcher.as_ref());
            quote!(#private::finally_prioritize(#settings, #watcher))
        }
    }
}

/// The pool a watcher connects with: `watcher = ...`, else the one pool argument, else the
/// default pool.
fn watcher_pool(cx: &Context<'_>, named: Option<&syn::Expr>) -> TokenStream {
    let private = cx.private();
    match named {
        Some(expr) => {
            let span = expr.span();
            quote_spanned!(span=> &(#expr))
        }
        None => match handle::detect(&cx.bindings, |kind| kind != Kind::Connection) {
            Ok(Some(pool)) => {
                let name = &pool.name;
                quote!(&#name)
            }
            _ => quote!(&#private::default_pool()),
        },
    }
}

/// `advisory(id).function(path)...`: the id as written (taken by reference, so that arguments it
/// names stay usable), else the function's path; methods name their type too.
fn advisory(cx: &Context<'_>, args: &AdvisoryArgs) -> TokenStream {
    let private = cx.private();
    let name = cx.func.sig.ident.to_string();
    let path = if cx.func.has_receiver() {
        quote! {
            #private::method_id(
                ::core::module_path!(),
                ::core::any::type_name::<Self>(),
                #name,
            )
        }
    } else {
        quote!(::core::concat!(::core::module_path!(), "::", #name))
    };
    let id = match &args.id {
        Some(id) => {
            let span = id.span();
            let private = respan(&private, span);
            quote_spanned!(span=> #private::lock_id(&(#id)))
        }
        None => path.clone(),
    };
    // The function's path goes into the context comment of the statements that wait.
    let mut lock = quote!(#private::advisory(#id).function(#path));
    if args.shared {
        lock.extend(quote!(.shared()));
    }
    if args.xact {
        lock.extend(quote!(.xact()));
    }
    if args.allow_standby {
        lock.extend(quote!(.allow_standby()));
    }
    if let Some(hold) = args.min_hold {
        let hold = duration(hold);
        lock.extend(quote!(.min_hold(#hold)));
    }
    if let Some(heartbeat) = args.heartbeat {
        let heartbeat = limit_option(heartbeat);
        lock.extend(quote!(.heartbeat(#heartbeat)));
    }
    match args.timeout {
        Some(Limit::NoLimit) => lock.extend(quote!(.wait(#private::Wait::Forever))),
        Some(Limit::At(dur)) => {
            let dur = duration(dur);
            lock.extend(quote!(.wait(#private::Wait::at_most(#dur))));
        }
        None => {}
    }
    lock
}

/// `prioritize()...` with its watcher pool: `watcher = ...`, else the one pool argument, else
/// the default pool.
fn prioritize(cx: &Context<'_>, args: &PrioritizeArgs) -> TokenStream {
    let private = cx.private();
    let mut settings = quote!(#private::prioritize());
    if let Some(interval) = args.interval {
        let interval = duration(interval);
        settings.extend(quote!(.interval(#interval)));
    }
    if let Some(periodic) = args.periodic {
        settings.extend(quote!(.periodic(#periodic)));
    }
    if args.signal == Some(Signal::Cancel) {
        settings.extend(quote!(.signal(#private::Signal::Cancel)));
    }
    if let Some(age) = args.older_than {
        let age = duration(age);
        settings.extend(quote!(.older_than(#age)));
    }
    if let Some(limit) = args.timeout {
        let limit = limit_option(limit);
        settings.extend(quote!(.timeout(#limit)));
    }
    if args.dry_run {
        settings.extend(quote!(.dry_run(true)));
    }
    if let Some(grace) = args.cancel_first {
        let grace = duration(grace);
        settings.extend(quote!(.cancel_first(#grace)));
    }
    if args.roots_only {
        settings.extend(quote!(.roots_only(true)));
    }
    if let Some(report) = &args.report {
        let span = report.span();
        settings.extend(quote_spanned!(span=> .report(&(#report))));
    }
    let watcher = watcher_pool(cx, args.watcher.as_ref());
    quote!(#private::watcher(#settings, #watcher))
}

/// `tokens` (a path) with every token at `span`, as if written inside `quote_spanned!(span=> ..)`.
pub fn respan(tokens: &TokenStream, span: Span) -> TokenStream {
    tokens
        .clone()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

fn mentions_impl(tokens: TokenStream) -> bool {
    tokens.into_iter().any(|token| match token {
        proc_macro2::TokenTree::Ident(ident) => ident == "impl",
        proc_macro2::TokenTree::Group(group) => mentions_impl(group.stream()),
        _ => false,
    })
}

fn duration(dur: Dur) -> TokenStream {
    let Dur { secs, nanos } = dur;
    quote!(::core::time::Duration::new(#secs, #nanos))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(args: TokenStream) -> (Option<String>, String) {
        let (krate, rest) = take_crate(args).expect("parses");
        (
            krate.map(|path| path.to_token_stream().to_string()),
            rest.to_string(),
        )
    }

    #[test]
    fn crate_is_taken_out_wherever_it_stands() {
        let (krate, rest) = taken(quote!("k", crate = pglock2, timeout = "1s"));
        assert_eq!(krate.as_deref(), Some("pglock2"));
        assert_eq!(rest, quote!("k", timeout = "1s").to_string());

        // First: the lock id is the first argument again.
        let (krate, rest) = taken(quote!(crate = ::my::pglock, "k"));
        assert_eq!(krate.as_deref(), Some(":: my :: pglock"));
        assert_eq!(rest, quote!("k").to_string());

        // Last, and alone.
        assert_eq!(taken(quote!(crate = p)).1, "");
        assert_eq!(taken(quote!(xact, crate = p,)).1, quote!(xact,).to_string());
        // Not a `crate =` argument: left alone.
        assert_eq!(taken(quote!(id = f(a, b))).0, None);
    }

    #[test]
    fn a_bad_or_repeated_crate_is_an_error() {
        assert!(take_crate(quote!(crate = "pglock2")).is_err());
        assert!(take_crate(quote!(crate = )).is_err());
        assert!(take_crate(quote!(crate = a, crate = b)).is_err());
    }

    #[test]
    fn stacked_attributes_are_recognised_under_the_renamed_path() {
        let attr = |tokens: TokenStream| -> Attribute { syn::parse_quote!(#tokens) };
        let renamed: Path = syn::parse_quote!(pglock2);
        let timeout = attr(quote!(#[pglock2::timeout(lock = "1s")]));
        assert!(pglock_attribute(&timeout, Some(&renamed)).is_some());
        assert!(pglock_attribute(&timeout, None).is_none());
        let own = attr(quote!(#[pglock2::timeout(lock = "1s", crate = pglock2)]));
        assert!(pglock_attribute(&own, None).is_some());
        assert!(pglock_attribute(&attr(quote!(#[pglock::advisory])), None).is_some());
        assert!(pglock_attribute(&attr(quote!(#[tokio::timeout])), Some(&renamed)).is_none());
        assert!(pglock_attribute(&attr(quote!(#[timeout])), None).is_none());
    }
}
