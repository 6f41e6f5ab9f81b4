//! Rules about the function as a whole and about options taken together.

use quote::ToTokens;
use syn::visit::Visit;
use syn::{ReturnType, Type, TypeImplTrait, TypeReference};

use crate::ctxt::Ctxt;
use crate::model::Task;

pub fn check(cx: &Ctxt, task: &Task) {
    signature(cx, task);
    impl_trait(cx, task);
    references(cx, task);
    lifetimes(cx, task);
    associated_fn(cx, task);
    leading_params(cx, task);
    time_limits(cx, task);
    fallible(cx, task);
}

/// Qualifiers a task cannot have: workers call it through a plain Rust call.
fn signature(cx: &Ctxt, task: &Task) {
    let sig = &task.func.sig;
    if let Some(constness) = &sig.constness {
        cx.error_spanned_by(
            constness,
            "a task cannot be a `const fn`: workers call it at run time",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        cx.error_spanned_by(
            unsafety,
            "a task cannot be an `unsafe fn`: workers call it with whatever a message holds, \
             so it must be safe to call with any arguments",
        );
    }
    if let Some(abi) = &sig.abi {
        cx.error_spanned_by(
            abi,
            "a task cannot have an `extern` ABI: workers call it as a Rust function",
        );
    }
    if let Some(variadic) = &sig.variadic {
        cx.error_spanned_by(
            variadic,
            "a task cannot be variadic: its messages carry a fixed list of arguments",
        );
    }
    // `fn f<'a>(name: Cow<'a, str>)`: `lifetimes` reports each use of `'a`, which says more.
    let only_lifetimes_in_types = sig
        .generics
        .params
        .iter()
        .all(|param| matches!(param, syn::GenericParam::Lifetime(_)))
        && signature_types(task).any(|ty| !borrowed_lifetimes(ty).is_empty());
    if !sig.generics.params.is_empty() && !only_lifetimes_in_types {
        cx.error_spanned_by(
            &sig.generics,
            "tasks cannot be generic: a worker decodes each argument of a message into one \
             concrete type, so every parameter type must be known",
        );
    } else if let Some(where_clause) = &sig.generics.where_clause {
        cx.error_spanned_by(
            where_clause,
            "tasks cannot be generic: a worker decodes each argument of a message into one \
             concrete type, so a task has no `where` clause",
        );
    }
}

/// `impl Trait` hides the type a worker must decode arguments into or encode the result from.
fn impl_trait(cx: &Ctxt, task: &Task) {
    for param in &task.params {
        for found in collect::<TypeImplTrait>(&param.ty) {
            cx.error_spanned_by(
                found,
                "`impl Trait` cannot be the type of a task's parameter: a worker needs the \
                 concrete type to decode the argument into",
            );
        }
    }
    if let ReturnType::Type(_, ty) = &task.func.sig.output {
        for found in collect::<TypeImplTrait>(ty) {
            cx.error_spanned_by(
                found,
                "`impl Trait` cannot be a task's return type: a worker needs the concrete type \
                 to encode the result; for an `impl Future`, write an `async fn` instead",
            );
        }
    }
}

/// Every type of kind `T` inside `ty`, outermost first.
fn collect<T: Found>(ty: &Type) -> Vec<&T> {
    struct Finder<'ast, T>(Vec<&'ast T>);
    impl<'ast, T: Found> Visit<'ast> for Finder<'ast, T> {
        fn visit_type(&mut self, ty: &'ast Type) {
            match T::from_type(ty) {
                Some(found) => self.0.push(found),
                None => syn::visit::visit_type(self, ty),
            }
        }
    }
    let mut finder = Finder(Vec::new());
    finder.visit_type(ty);
    finder.0
}

/// A kind of type that `collect` looks for.
trait Found: ToTokens {
    fn from_type(ty: &Type) -> Option<&Self>;
}

impl Found for TypeImplTrait {
    fn from_type(ty: &Type) -> Option<&Self> {
        match ty {
            Type::ImplTrait(found) => Some(found),
            _ => None,
        }
    }
}

impl Found for TypeReference {
    fn from_type(ty: &Type) -> Option<&Self> {
        match ty {
            Type::Reference(found) => Some(found),
            _ => None,
        }
    }
}

/// Arguments and results are decoded from messages into values the task owns.
fn references(cx: &Ctxt, task: &Task) {
    for param in &task.params {
        for found in collect::<TypeReference>(&param.ty) {
            cx.error_spanned_by(
                found,
                format!(
                    "a task's parameter cannot borrow: a worker decodes each argument from a \
                     message into a value of its own; take `{}` instead",
                    owned(found)
                ),
            );
        }
    }
    if let ReturnType::Type(_, ty) = &task.func.sig.output {
        for found in collect::<TypeReference>(ty) {
            cx.error_spanned_by(
                found,
                format!(
                    "a task's result cannot borrow: it is encoded into the result backend and \
                     decoded by whoever waits for it; return `{}` instead",
                    owned(found)
                ),
            );
        }
    }
}

/// A borrowing type (`Cow<'a, str>`, `Cow<'_, str>`) cannot hold an argument decoded from a
/// message either; without this check rustc gives several errors about the generated code.
/// References are left to `references`, which already reported them with their owned type.
fn lifetimes(cx: &Ctxt, task: &Task) {
    let what = |lifetime: &syn::Lifetime| {
        if lifetime.ident == "_" {
            "an elided lifetime `'_`".to_owned()
        } else {
            format!("the lifetime `{lifetime}`")
        }
    };
    for param in &task.params {
        for lifetime in borrowed_lifetimes(&param.ty) {
            cx.error_spanned_by(
                lifetime,
                format!(
                    "a task's parameter cannot borrow, so its type cannot have {}: a worker \
                     decodes each argument from a message into a value of its own; take an owned \
                     type (`String` for `Cow<'_, str>`) or use `'static`",
                    what(lifetime)
                ),
            );
        }
    }
    if let ReturnType::Type(_, ty) = &task.func.sig.output {
        for lifetime in borrowed_lifetimes(ty) {
            cx.error_spanned_by(
                lifetime,
                format!(
                    "a task's result cannot borrow, so its type cannot have {}: it is encoded \
                     into the result backend and decoded by whoever waits for it; return an \
                     owned type (`String` for `Cow<'_, str>`) or use `'static`",
                    what(lifetime)
                ),
            );
        }
    }
}

/// The lifetimes other than `'static` in `ty`, outside references.
fn borrowed_lifetimes(ty: &Type) -> Vec<&syn::Lifetime> {
    struct Finder<'ast>(Vec<&'ast syn::Lifetime>);
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_type_reference(&mut self, _: &'ast TypeReference) {}
        fn visit_lifetime(&mut self, lifetime: &'ast syn::Lifetime) {
            if lifetime.ident != "static" {
                self.0.push(lifetime);
            }
        }
    }
    let mut finder = Finder(Vec::new());
    finder.visit_type(ty);
    finder.0
}

/// Every parameter type and the return type.
fn signature_types(task: &Task) -> impl Iterator<Item = &Type> {
    let output = match &task.func.sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => None,
    };
    task.params.iter().map(|param| &*param.ty).chain(output)
}

/// `Self` in the signature means the function is inside an `impl`, where the task's module cannot
/// go. Without `Self` the macro cannot tell, and rustc says "module is not supported in `impl`s".
fn associated_fn(cx: &Ctxt, task: &Task) {
    let sig = &task.func.sig;
    let inputs = sig.inputs.iter().filter_map(|arg| match arg {
        syn::FnArg::Typed(typed) => Some(&*typed.ty),
        syn::FnArg::Receiver(_) => None,
    });
    let output = match &sig.output {
        ReturnType::Type(_, ty) => Some(&**ty),
        ReturnType::Default => None,
    };
    struct FindSelf<'ast>(Option<&'ast syn::Path>);
    impl<'ast> Visit<'ast> for FindSelf<'ast> {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            if path
                .segments
                .first()
                .is_some_and(|first| first.ident == "Self")
            {
                self.0.get_or_insert(path);
            }
            syn::visit::visit_path(self, path);
        }
    }
    let mut finder = FindSelf(None);
    for ty in inputs.chain(output) {
        finder.visit_type(ty);
    }
    let Some(found) = finder.0 else {
        return;
    };
    cx.error_spanned_by(
        found,
        "#[task] goes on a free function, not on an associated function: the task's module, \
         generated beside the function, cannot be inside an `impl`; move the function out and \
         name the type instead of `Self`",
    );
}

/// The owned counterpart of a reference type: `String` for `&str`, `Vec<T>` for `&[T]`.
fn owned(reference: &TypeReference) -> String {
    let tokens = match &*reference.elem {
        Type::Path(path) if path.path.is_ident("str") => "String".to_owned(),
        Type::Path(path) if path.path.is_ident("Path") => "PathBuf".to_owned(),
        Type::Slice(slice) => format!("Vec<{}>", slice.elem.to_token_stream()),
        other => other.to_token_stream().to_string(),
    };
    tokens
        .replace(" < ", "<")
        .replace(" >", ">")
        .replace(" :: ", "::")
}

/// `bind` and `errback` need parameters to fill in.
fn leading_params(cx: &Ctxt, task: &Task) {
    let sig = &task.func.sig;
    let name = task.ident();
    let count = sig.inputs.len();
    if let Some(bind) = task.attrs.bind {
        if count == 0 {
            cx.error_at(
                bind,
                format!(
                    "`bind` passes the task's context as the first parameter, but `{name}` has \
                     no parameters; add one, as in `fn {name}(ctx: TaskContext, ...)`"
                ),
            );
            return;
        }
    }
    if task.attrs.errback.is_some() && count < task.leading_params() {
        let after_context = if task.attrs.bind.is_some() {
            " after the context"
        } else {
            ""
        };
        let found = match count - usize::from(task.attrs.bind.is_some()) {
            0 => "none".to_owned(),
            n => format!("only {n}"),
        };
        cx.error_at(
            sig.paren_token.span.join(),
            format!(
                "an errback receives the failed task's `request: Request`, `exc: ExceptionInfo` \
                 and `traceback: Option<String>` as its first three parameters{after_context}, \
                 but `{name}` has {found}"
            ),
        );
    }
}

/// The soft limit raises inside the task so it can clean up before the hard limit kills it.
fn time_limits(cx: &Ctxt, task: &Task) {
    let options = &task.attrs.options;
    if let (Some(soft), Some(hard)) = (options.soft_time_limit, options.time_limit) {
        if soft.value >= hard.value {
            cx.error_at(
                soft.span,
                format!(
                    "`soft_time_limit` must be below `time_limit` ({} s), so that the task is \
                     warned before it is killed",
                    hard.value
                ),
            );
        }
    }
}

/// `fallible` says what the return type is, so there must be one.
fn fallible(cx: &Ctxt, task: &Task) {
    let Some(fallible) = task.attrs.fallible.filter(|fallible| fallible.value) else {
        return;
    };
    if let ReturnType::Default = &task.func.sig.output {
        cx.error_at(
            fallible.span,
            format!(
                "`fallible` says that the return type is a `Result` under another name, but \
                 `{}` returns nothing; remove `fallible`, or return the `Result`",
                task.ident()
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;
    use crate::attr::TaskAttrs;

    fn errors(attrs: proc_macro2::TokenStream, func: proc_macro2::TokenStream) -> Vec<String> {
        let cx = Ctxt::new();
        let attrs = TaskAttrs::from_args(&cx, attrs);
        let task = Task::from_syn(&cx, attrs, syn::parse2(func).unwrap());
        check(&cx, &task);
        match cx.check() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_plain_task_passes() {
        assert!(errors(
            quote!(),
            quote!(
                async fn add(x: i32, y: i32) -> i32 {
                    x + y
                }
            )
        )
        .is_empty());
    }

    #[test]
    fn borrowed_types_suggest_their_owned_counterpart() {
        let found = errors(
            quote!(),
            quote!(
                fn f(a: &str, b: &[u8], c: Vec<&std::path::Path>, d: &'static Foo) -> &str {}
            ),
        );
        let suggestions: Vec<_> = found
            .iter()
            .map(|error| error.rsplit("`").nth(1).unwrap().to_owned())
            .collect();
        assert_eq!(
            suggestions,
            ["String", "Vec<u8>", "std::path::Path", "Foo", "String"]
        );
    }

    #[test]
    fn lifetimes_other_than_static_are_refused_once() {
        let found = errors(
            quote!(),
            quote!(
                fn f(
                    a: Cow<'a, str>,
                    b: Cow<'_, str>,
                    c: Cow<'static, str>,
                    d: &'a str,
                ) -> Cow<'b, str> {
                }
            ),
        );
        // `&'a str` is reported once, as a reference (first, by `references`).
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].starts_with("a task's parameter cannot borrow: "));
        assert!(
            found[1].contains("cannot have the lifetime `'a`"),
            "{}",
            found[1]
        );
        assert!(found[2].contains("cannot have an elided lifetime `'_`"));
        assert!(found[3].starts_with(
            "a task's result cannot borrow, so its type cannot have the lifetime `'b`"
        ));
    }

    #[test]
    fn a_lifetime_parameter_is_reported_where_it_is_used() {
        let found = errors(
            quote!(),
            quote!(
                fn f<'a>(name: Cow<'a, str>) -> Cow<'a, str> {}
            ),
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            errors(
                quote!(),
                quote!(
                    fn f<'a, T>(name: Cow<'a, str>) {}
                )
            )
            .len(),
            2
        );
    }

    #[test]
    fn leading_params_must_exist() {
        assert_eq!(
            errors(
                quote!(bind),
                quote!(
                    fn f() {}
                )
            )
            .len(),
            1
        );
        assert_eq!(
            errors(
                quote!(bind, errback),
                quote!(
                    fn f(a: A, b: B, c: C) {}
                )
            )
            .len(),
            1
        );
        assert!(errors(
            quote!(bind, errback),
            quote!(
                fn f(a: A, b: B, c: C, d: D) {}
            )
        )
        .is_empty());
    }

    #[test]
    fn soft_time_limit_must_be_below_time_limit() {
        let func = quote!(
            fn f() {}
        );
        assert!(errors(quote!(time_limit = 10, soft_time_limit = 9.5), func.clone()).is_empty());
        assert_eq!(
            errors(quote!(time_limit = 10, soft_time_limit = 10), func).len(),
            1
        );
    }

    #[test]
    fn fallible_needs_a_return_type() {
        assert_eq!(
            errors(
                quote!(fallible),
                quote!(
                    fn f() {}
                )
            )
            .len(),
            1
        );
        assert!(errors(
            quote!(fallible),
            quote!(
                fn f() -> Outcome<i32> {}
            )
        )
        .is_empty());
    }

    #[test]
    fn self_in_the_signature_is_an_associated_fn() {
        for func in [
            quote!(
                fn f(x: Self) {}
            ),
            quote!(
                fn f() -> Vec<Self> {}
            ),
            quote!(
                fn f(x: <Self as Tr>::Item) {}
            ),
        ] {
            assert_eq!(errors(quote!(), func.clone()).len(), 1, "{func}");
        }
    }
}
