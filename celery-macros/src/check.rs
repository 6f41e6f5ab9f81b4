//! Rules about the function as a whole and about options taken together.

use syn::visit::Visit;
use syn::{ReturnType, Type, TypeImplTrait};

use crate::ctxt::Ctxt;
use crate::model::Task;

pub fn check(cx: &Ctxt, task: &Task) {
    signature(cx, task);
    impl_trait(cx, task);
    leading_params(cx, task);
    time_limits(cx, task);
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
    if !sig.generics.params.is_empty() {
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
        for found in impl_traits(&param.ty) {
            cx.error_spanned_by(
                found,
                "`impl Trait` cannot be the type of a task's parameter: a worker needs the \
                 concrete type to decode the argument into",
            );
        }
    }
    if let ReturnType::Type(_, ty) = &task.func.sig.output {
        for found in impl_traits(ty) {
            cx.error_spanned_by(
                found,
                "`impl Trait` cannot be a task's return type: a worker needs the concrete type \
                 to encode the result; for an `impl Future`, write an `async fn` instead",
            );
        }
    }
}

fn impl_traits(ty: &Type) -> Vec<&TypeImplTrait> {
    #[derive(Default)]
    struct Finder<'ast>(Vec<&'ast TypeImplTrait>);
    impl<'ast> Visit<'ast> for Finder<'ast> {
        fn visit_type_impl_trait(&mut self, found: &'ast TypeImplTrait) {
            self.0.push(found);
        }
    }
    let mut finder = Finder::default();
    finder.visit_type(ty);
    finder.0
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
