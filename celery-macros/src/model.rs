//! The function under `#[task]`, read into what the expansion needs: its parameters as plain
//! names and types, and whether its return type is a `Result`.
//!
//! A macro sees tokens, not types, so a return type is a `Result` when its name is `Result` or
//! when the task says `fallible`. The expansion refuses, at compile time, any other return type
//! that turns out to be a `Result` (an alias), and any `Result`-named type that is not one.

use proc_macro2::Span;
use syn::{FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::attr::TaskAttrs;
use crate::ctxt::Ctxt;

/// A `#[task]` function and its options.
pub struct Task {
    pub attrs: TaskAttrs,
    /// The function as the user wrote it; emitted unchanged.
    pub func: ItemFn,
    /// Every parameter that is a plain name; the others were reported as errors.
    pub params: Vec<Param>,
    pub ret: Return,
}

/// A parameter `ident: ty`, with any `mut` dropped.
pub struct Param {
    pub ident: Ident,
    pub ty: Box<Type>,
}

/// What the function returns.
pub enum Return {
    /// No return type: the task's result is `None` on the Python side.
    Unit,
    /// Any type other than a `Result`: the task cannot fail except by panicking.
    Plain(Box<Type>),
    /// A return type under `#[task(fallible = false)]`: the value itself, even a `Result`, which
    /// is then stored as `{"Ok": ...}` or `{"Err": ...}` and never fails the task.
    Value(Box<Type>),
    /// A type whose last path segment is `Result`, or any type under `#[task(fallible)]`: an
    /// `Err` becomes the task's exception.
    Fallible(Box<Type>),
}

/// The parameters grouped by who fills them in.
pub struct Roles<'a> {
    /// The first parameter of a `bind` task: the worker's `TaskContext`.
    pub context: Option<&'a Param>,
    /// The `(request, exc, traceback)` parameters of an `errback` task.
    pub errback: Option<&'a [Param]>,
    /// The parameters carried by messages, in order.
    pub message: &'a [Param],
}

/// How many leading parameters an errback receives from the worker.
const ERRBACK_INPUTS: usize = 3;

impl Task {
    pub fn from_syn(cx: &Ctxt, attrs: TaskAttrs, func: ItemFn) -> Task {
        let params = func
            .sig
            .inputs
            .iter()
            .filter_map(|arg| param(cx, arg))
            .collect();
        let fallible = attrs.fallible.map(|fallible| fallible.value);
        let ret = match &func.sig.output {
            ReturnType::Default => Return::Unit,
            ReturnType::Type(_, ty) => match fallible {
                Some(true) => Return::Fallible(ty.clone()),
                Some(false) => Return::Value(ty.clone()),
                None if is_result(ty) => Return::Fallible(ty.clone()),
                None => Return::Plain(ty.clone()),
            },
        };
        Task {
            attrs,
            func,
            params,
            ret,
        }
    }

    pub fn ident(&self) -> &Ident {
        &self.func.sig.ident
    }

    pub fn is_async(&self) -> bool {
        self.func.sig.asyncness.is_some()
    }

    /// How many parameters the worker fills in before the message's arguments.
    pub fn leading_params(&self) -> usize {
        let context = usize::from(self.attrs.bind.is_some());
        let errback = if self.attrs.errback.is_some() {
            ERRBACK_INPUTS
        } else {
            0
        };
        context + errback
    }

    /// The parameters by role; `check` has made sure there are enough of them.
    pub fn roles(&self) -> Roles<'_> {
        let mut rest = self.params.as_slice();
        let context = match self.attrs.bind {
            Some(_) => rest.split_first().map(|(first, tail)| {
                rest = tail;
                first
            }),
            None => None,
        };
        let errback = match self.attrs.errback {
            Some(_) => {
                let (inputs, tail) = rest.split_at(ERRBACK_INPUTS.min(rest.len()));
                rest = tail;
                Some(inputs)
            }
            None => None,
        };
        Roles {
            context,
            errback,
            message: rest,
        }
    }

    /// Where to report something about the return type: the type, or the name of a function
    /// that has none.
    pub fn ret_span(&self) -> Span {
        match &self.func.sig.output {
            ReturnType::Default => self.ident().span(),
            ReturnType::Type(_, ty) => syn::spanned::Spanned::span(ty),
        }
    }
}

fn param(cx: &Ctxt, arg: &FnArg) -> Option<Param> {
    let typed = match arg {
        FnArg::Typed(typed) => typed,
        FnArg::Receiver(receiver) => {
            cx.error_spanned_by(
                receiver,
                "a task cannot take `self`: workers call tasks by name, with no value to call \
                 them on; make it a free function",
            );
            return None;
        }
    };
    match &*typed.pat {
        Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => Some(Param {
            ident: pat.ident.clone(),
            ty: typed.ty.clone(),
        }),
        other => {
            cx.error_spanned_by(
                other,
                "a task's parameters must be plain names, since they name the arguments of its \
                 messages; take `name: Type` and destructure it in the body",
            );
            None
        }
    }
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(path) => {
            path.qself.is_none()
                && path
                    .path
                    .segments
                    .last()
                    .is_some_and(|last| last.ident == "Result")
        }
        Type::Group(group) => is_result(&group.elem),
        Type::Paren(paren) => is_result(&paren.elem),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn task(attrs: proc_macro2::TokenStream, func: proc_macro2::TokenStream) -> Task {
        let cx = Ctxt::new();
        let attrs = TaskAttrs::from_args(&cx, attrs);
        let task = Task::from_syn(&cx, attrs, syn::parse2(func).unwrap());
        cx.check().unwrap();
        task
    }

    #[test]
    fn result_types_are_fallible() {
        for ret in [
            quote!(Result<i32, E>),
            quote!(std::result::Result<i32, E>),
            quote!(anyhow::Result<i32>),
            quote!(io::Result<()>),
        ] {
            let task = task(quote!(), quote!(fn f() -> #ret {}));
            assert!(matches!(task.ret, Return::Fallible(_)), "{ret}");
        }
        assert!(matches!(
            task(
                quote!(),
                quote!(
                    fn f() -> Option<i32> {}
                )
            )
            .ret,
            Return::Plain(_)
        ));
        assert!(matches!(
            task(
                quote!(),
                quote!(
                    fn f() {}
                )
            )
            .ret,
            Return::Unit
        ));
    }

    #[test]
    fn fallible_declares_a_result_under_another_name() {
        let task = task(
            quote!(fallible),
            quote!(
                fn f() -> TaskResult<i32> {}
            ),
        );
        assert!(matches!(task.ret, Return::Fallible(_)));
    }

    #[test]
    fn fallible_false_makes_a_result_the_value() {
        let task = task(
            quote!(fallible = false),
            quote!(
                fn f() -> Result<i32, String> {}
            ),
        );
        assert!(matches!(task.ret, Return::Value(_)));
    }

    #[test]
    fn roles_split_context_errback_and_message_params() {
        let task = task(
            quote!(bind, errback),
            quote!(
                fn f(ctx: C, request: R, exc: E, tb: T, mut x: i32) {}
            ),
        );
        let roles = task.roles();
        assert_eq!(roles.context.unwrap().ident, "ctx");
        let errback: Vec<_> = roles
            .errback
            .unwrap()
            .iter()
            .map(|p| p.ident.to_string())
            .collect();
        assert_eq!(errback, ["request", "exc", "tb"]);
        assert_eq!(roles.message.len(), 1);
        assert_eq!(roles.message[0].ident, "x");
        assert_eq!(task.leading_params(), 4);
    }

    #[test]
    fn receivers_and_patterns_are_errors() {
        let cx = Ctxt::new();
        let func = syn::parse2(quote!(
            fn f(&self, (a, b): (i32, i32), ref c: i32, d: i32) {}
        ));
        let task = Task::from_syn(&cx, TaskAttrs::default(), func.unwrap());
        assert_eq!(task.params.len(), 1);
        assert_eq!(cx.check().unwrap_err().into_iter().count(), 3);
    }
}
