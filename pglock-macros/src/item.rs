//! The function an attribute is on: an `async fn` (free, inherent method, trait impl method or
//! default trait method), or a method that `#[async_trait]` already turned into a plain `fn`
//! returning a boxed future. A method declared without a body is refused with a hint.

use proc_macro2::TokenStream;
use quote::{ToTokens, quote};
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, Block, Expr, ExprAsync, ExprCall, GenericArgument, PathArguments, ReturnType,
    Signature, Stmt, Token, Type, TypeParamBound, Visibility,
};

/// A function as written: everything but the body is emitted again unchanged.
pub struct Func {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub sig: Signature,
    pub body: Body,
}

/// Where the code to wrap is.
pub enum Body {
    /// An `async fn`'s block.
    Async(Block),
    /// `#[async_trait]`'s shape: `fn f(..) -> Pin<Box<dyn Future<Output = R> + Send + 'a>>
    /// { Box::pin(async move { .. }) }`. `output` is `R`; `call` is the `Box::pin(..)` call,
    /// whose `async move` block (`inner`) is the code to wrap.
    AsyncTrait {
        output: Box<Type>,
        call: ExprCall,
        inner: Block,
    },
    /// A declaration without a body (in a trait).
    Missing(Token![;]),
}

impl Parse for Func {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        if input.peek(Token![;]) {
            return Ok(Func {
                attrs,
                vis,
                sig,
                body: Body::Missing(input.parse()?),
            });
        }
        let block: Block = input.parse()?;
        let body = match async_trait_shape(&sig, &block) {
            Some((output, call, inner)) => Body::AsyncTrait {
                output,
                call,
                inner,
            },
            None => Body::Async(block),
        };
        Ok(Func {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

impl Func {
    /// The type the function's body evaluates to: the declared return type of an `async fn`, the
    /// future's `Output` of an `#[async_trait]` method. `None` for `-> ()` left implicit.
    pub fn output(&self) -> Option<&Type> {
        match &self.body {
            Body::AsyncTrait { output, .. } => Some(output),
            _ => match &self.sig.output {
                ReturnType::Type(_, ty) => Some(ty),
                ReturnType::Default => None,
            },
        }
    }

    /// The block to wrap.
    pub fn block(&self) -> &Block {
        match &self.body {
            Body::Async(block) => block,
            Body::AsyncTrait { inner, .. } => inner,
            Body::Missing(_) => unreachable!("refused before expanding"),
        }
    }

    /// Whether it is a method with a `self` receiver.
    pub fn has_receiver(&self) -> bool {
        self.sig.receiver().is_some()
    }

    /// The function with its wrapped code replaced by `body` (statements).
    pub fn with_body(self, body: TokenStream) -> TokenStream {
        let Func {
            attrs,
            vis,
            sig,
            body: old,
        } = self;
        let block = match old {
            Body::Async(_) => quote!({ #body }),
            Body::AsyncTrait { mut call, .. } => {
                let asyncness: ExprAsync = syn::parse_quote!(async move { #body });
                call.args = std::iter::once(Expr::Async(asyncness)).collect();
                quote!({ #call })
            }
            Body::Missing(semi) => semi.into_token_stream(),
        };
        quote!(#(#attrs)* #vis #sig #block)
    }

    /// The function exactly as written.
    pub fn unchanged(self) -> TokenStream {
        match self.body {
            Body::Async(ref block) => {
                let block = block.clone();
                let Func {
                    attrs, vis, sig, ..
                } = self;
                quote!(#(#attrs)* #vis #sig #block)
            }
            Body::AsyncTrait { ref call, .. } => {
                let call = call.clone();
                let Func {
                    attrs, vis, sig, ..
                } = self;
                quote!(#(#attrs)* #vis #sig { #call })
            }
            Body::Missing(semi) => {
                let Func {
                    attrs, vis, sig, ..
                } = self;
                quote!(#(#attrs)* #vis #sig #semi)
            }
        }
    }
}

/// Recognise `#[async_trait]`'s desugaring: a non-`async` fn returning
/// `Pin<Box<dyn Future<Output = R> + ..>>` whose body is one `Box::pin(async move { .. })`.
fn async_trait_shape(sig: &Signature, block: &Block) -> Option<(Box<Type>, ExprCall, Block)> {
    if sig.asyncness.is_some() {
        return None;
    }
    let ReturnType::Type(_, ty) = &sig.output else {
        return None;
    };
    let output = future_output(ty)?;
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(func) = &*call.func else {
        return None;
    };
    let names: Vec<String> = func
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    if !names.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    let Some(Expr::Async(inner)) = call.args.first() else {
        return None;
    };
    inner.capture?;
    Some((output, call.clone(), inner.block.clone()))
}

/// `R` in `Pin<Box<dyn Future<Output = R> + ..>>`.
fn future_output(ty: &Type) -> Option<Box<Type>> {
    let inner = single_generic(ty, "Pin")?;
    let boxed = single_generic(inner, "Box")?;
    let Type::TraitObject(object) = boxed else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        let last = bound.path.segments.last()?;
        if last.ident != "Future" {
            return None;
        }
        let PathArguments::AngleBracketed(args) = &last.arguments else {
            return None;
        };
        args.args.iter().find_map(|arg| match arg {
            GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                Some(Box::new(assoc.ty.clone()))
            }
            _ => None,
        })
    })
}

/// The one type argument of a path type named `name` (`Pin<T>` → `T`).
fn single_generic<'a>(ty: &'a Type, name: &str) -> Option<&'a Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(ty) => Some(ty),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_async_trait_methods() {
        let func: Func = syn::parse_quote! {
            fn run<'life0, 'async_trait>(&'life0 self)
                -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = Result<(), E>>
                    + ::core::marker::Send + 'async_trait>>
            where 'life0: 'async_trait, Self: 'async_trait
            {
                Box::pin(async move { let __self = self; Ok(()) })
            }
        };
        assert!(matches!(func.body, Body::AsyncTrait { .. }));
        assert_eq!(
            func.output().unwrap().to_token_stream().to_string(),
            "Result < () , E >"
        );
        assert!(func.has_receiver());
    }

    #[test]
    fn plain_functions_are_not_async_trait_methods() {
        let func: Func = syn::parse_quote! {
            fn f() -> Pin<Box<dyn Future<Output = u8>>> { let x = 1; Box::pin(async move { x }) }
        };
        assert!(matches!(func.body, Body::Async(_)));
        let func: Func = syn::parse_quote!(
            async fn f(&self) -> u8;
        );
        assert!(matches!(func.body, Body::Missing(_)));
    }
}
