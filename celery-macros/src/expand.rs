//! Code generation: the user's function, unchanged, and beside it a module of the same name
//! holding the task type and its Calling API.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{
    Attribute, GenericArgument, Ident, Item, Meta, Path, PathArguments, PathSegment, Type,
    TypePath, Visibility,
};

use crate::attr::{Codec, TaskAttrs, TaskOptions};
use crate::check;
use crate::ctxt::Ctxt;
use crate::model::{Return, Task};

/// `#[task(args)] item`: the item followed by its task module, or by the errors found in it.
pub fn task(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let attrs = TaskAttrs::from_args(&cx, args);
    let task = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => Some(Task::from_syn(&cx, attrs, func)),
        Ok(other) => {
            not_a_function(&cx, &other);
            None
        }
        Err(error) => {
            cx.push(error);
            None
        }
    };
    if let Some(task) = &task {
        check::check(&cx, task);
    }
    match (cx.check(), task) {
        (Ok(()), Some(task)) => {
            let module = module(&task);
            quote!(#item #module)
        }
        // The function stays, so one mistake in `#[task]` does not turn every use of it into
        // another error.
        (Err(errors), _) => {
            let errors = errors.to_compile_error();
            quote!(#item #errors)
        }
        (Ok(()), None) => unreachable!("an item that is not a function was reported"),
    }
}

fn not_a_function(cx: &Ctxt, item: &Item) {
    fn at(keyword: impl ToTokens, name: impl ToTokens) -> TokenStream {
        quote!(#keyword #name)
    }
    let (what, tokens) = match item {
        Item::Struct(item) => ("a struct", at(item.struct_token, &item.ident)),
        Item::Enum(item) => ("an enum", at(item.enum_token, &item.ident)),
        Item::Union(item) => ("a union", at(item.union_token, &item.ident)),
        Item::Trait(item) => ("a trait", at(item.trait_token, &item.ident)),
        Item::Impl(item) => ("an impl block", at(item.impl_token, &item.self_ty)),
        Item::Mod(item) => ("a module", at(item.mod_token, &item.ident)),
        Item::Const(item) => ("a constant", at(item.const_token, &item.ident)),
        Item::Static(item) => ("a static", at(item.static_token, &item.ident)),
        Item::Type(item) => ("a type alias", at(item.type_token, &item.ident)),
        Item::Use(item) => ("an import", item.use_token.to_token_stream()),
        other => ("this item", other.to_token_stream()),
    };
    cx.error_spanned_by(
        tokens,
        format!(
            "#[task] goes on a function (an `async fn`, or a plain `fn` to run on the blocking \
             pool), not on {what}"
        ),
    );
}

/// The path of the runtime's support module, as the task module names it: `::celery::__private`
/// unless the crate is renamed. A renamed path was written beside the function, so a relative one
/// (`super::rt::celery`) is rewritten like the parameter types, to mean the same one module deeper.
fn runtime(attrs: &TaskAttrs) -> TokenStream {
    match &attrs.krate {
        Some(krate) => {
            let mut krate = krate.clone();
            FromParent.visit_path_mut(&mut krate);
            quote!(#krate::__private)
        }
        None => quote!(::celery::__private),
    }
}

/// A parameter as written inside the task module.
struct Arg {
    ident: Ident,
    ty: Type,
}

fn module(task: &Task) -> TokenStream {
    let p = runtime(&task.attrs);
    let fn_ident = task.ident();
    let fn_name = fn_ident.unraw().to_string();
    let vis = &task.func.vis;
    let item_vis = item_visibility(vis);
    let task_name = task.attrs.name.clone().unwrap_or_else(|| fn_name.clone());
    let cfgs = cfgs(task);
    let lints = task.func.attrs.iter().filter_map(lint_level);
    // A deprecated task's Calling API is deprecated too, so that `add::delay(...)` warns as
    // `add(...)` does; the module itself allows the uses it makes of its own items.
    let deprecated: Vec<&Attribute> = task
        .func
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("deprecated"))
        .collect();
    let (beside, call) = scope_marker(task);

    let roles = task.roles();
    let to_arg = |param: &crate::model::Param| Arg {
        ident: param.ident.clone(),
        ty: from_parent(&param.ty),
    };
    let context = roles.context.map(to_arg);
    let errback: Option<Vec<Arg>> = roles
        .errback
        .map(|inputs| inputs.iter().map(to_arg).collect());
    let message: Vec<Arg> = roles.message.iter().map(to_arg).collect();

    let output = match &task.ret {
        Return::Unit => quote!(()),
        Return::Plain(ty) | Return::Value(ty) => from_parent(ty).into_token_stream(),
        Return::Fallible(ty) => {
            let ty = from_parent(ty);
            quote!(<#ty as #p::Fallible>::Ok)
        }
    };

    let param_names = message.iter().map(|arg| arg.ident.unraw().to_string());
    let options = options(&p, &task.attrs.options);
    let is_errback = errback.is_some();
    let invocation = Ident::new("invocation", Span::mixed_site());
    let gates = gates(&p, task, &message);
    let run = run_body(
        &p,
        task,
        &call,
        context.as_ref(),
        errback.as_deref(),
        &message,
    );
    let calling_api = calling_api(&p, &item_vis, &deprecated, &fn_name, is_errback, &message);

    let api = if is_errback {
        "`s`"
    } else {
        "`s`, `si`, `partial`, `delay`, `apply_async`"
    };
    let module_doc = format!(
        "The `{fn_name}` task, sent to workers as `{task_name}`: its `Task` type, to register \
         on a worker, and its Calling API ({api})."
    );
    let task_doc = format!("The `{fn_name}` task, to register on a worker.");
    let name_doc = format!("The name `{fn_name}` is sent and registered under: `{task_name}`.");
    let output_doc = format!("What `{fn_name}` returns to whoever waits for its result.");

    quote! {
        #beside

        #(#cfgs)*
        #[doc = #module_doc]
        #(#lints)*
        #[allow(dead_code, unused_imports, deprecated, clippy::too_many_arguments, clippy::needless_update, clippy::result_large_err)]
        #vis mod #fn_ident {
            use super::*;

            #[doc = #task_doc]
            #(#deprecated)*
            #item_vis struct Task;

            #[doc = #name_doc]
            #(#deprecated)*
            #item_vis const NAME: &str = #task_name;

            #[doc = #output_doc]
            #(#deprecated)*
            #item_vis type Output = #output;

            impl #p::Task for Task {
                const NAME: &'static str = NAME;
                type Output = Output;
                const OPTIONS: #p::TaskOptions = #options;
                const PARAMS: &'static [&'static str] = &[#(#param_names),*];
                const IS_ERRBACK: bool = #is_errback;

                fn run(
                    mut #invocation: #p::Invocation,
                ) -> ::core::result::Result<#p::TaskFuture, #p::TaskError> {
                    #run
                }
            }

            #gates

            #calling_api
        }
    }
}

/// The function's `#[cfg]` attributes, which the items generated beside it share.
fn cfgs(task: &Task) -> Vec<&Attribute> {
    task.func
        .attrs
        .iter()
        .filter(|attr| attr.path().is_ident("cfg"))
        .collect()
}

/// The items that the task module calls the function through, and the path of that call.
///
/// A `#[task]` inside a function body would otherwise compile wrongly: its module's `super` is
/// the module around the function body, where `super::add` is another function of the same name
/// (silently called instead) or nothing. The macro cannot see where it is, so the function is
/// called through a hidden type declared beside it, which the module names through `super::`:
/// beside a module-level function this resolves; inside a body it does not, and rustc's one error
/// names the rule: "cannot find `add_is_a_task_so_it_must_be_a_module_level_item_…` in `super`"
/// (a compile_error! cannot, since only rustc knows the scope). The type's name holds a hash of
/// the function, so that a task in a body cannot resolve to the marker of a module-level task of
/// the same name either. The call itself is written beside the function, where its name and
/// parameter types mean what the user wrote, and no `super::add` is left to resolve to another
/// function.
fn scope_marker(task: &Task) -> (TokenStream, TokenStream) {
    let fn_ident = task.ident();
    let span = fn_ident.span();
    let cfgs = cfgs(task);
    let rule = Ident::new(
        &format!(
            "{}_is_a_task_so_it_must_be_a_module_level_item_not_inside_a_function_body",
            fn_ident.unraw()
        ),
        span,
    );
    let here = Ident::new(
        &format!("Declared{:016x}", fingerprint(task.func.to_token_stream())),
        span,
    );
    let call = Ident::new("call", span);
    let params = task.params.iter().map(|param| {
        let (ident, ty) = (&param.ident, &param.ty);
        quote!(#ident: #ty)
    });
    let args = task.params.iter().map(|param| &param.ident);
    let returned = match &task.func.sig.output {
        syn::ReturnType::Default => quote!(()),
        syn::ReturnType::Type(_, ty) => ty.to_token_stream(),
    };
    let returned = if task.is_async() {
        quote!(impl ::core::future::Future<Output = #returned>)
    } else {
        returned
    };
    let beside = quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_snake_case, non_camel_case_types)]
        mod #rule {
            pub(super) struct #here;
        }

        #(#cfgs)*
        impl #rule::#here {
            // The parameters are the function's, whose names its own lint attributes judge; a
            // deprecated task's own module may call it without a warning.
            #[allow(non_snake_case, deprecated, clippy::too_many_arguments)]
            #[inline]
            fn #call(#(#params),*) -> #returned {
                #fn_ident(#(#args),*)
            }
        }
    };
    let path = quote_spanned!(span=> super::#rule::#here::#call);
    (beside, path)
}

/// A 64-bit FNV-1a hash of a function's tokens, to name its marker uniquely. It hashes each token's
/// text rather than the stream's `to_string()`, whose spacing is rustc's to change, so that the
/// name stays the same from one compiler to the next.
fn fingerprint(tokens: TokenStream) -> u64 {
    fn feed(hash: u64, text: &str) -> u64 {
        // A separator, so that `ab` `c` and `a` `bc` differ.
        text.bytes().chain([0]).fold(hash, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }
    fn walk(hash: u64, tokens: TokenStream) -> u64 {
        tokens.into_iter().fold(hash, |hash, tree| match tree {
            proc_macro2::TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                feed(walk(feed(hash, open), group.stream()), close)
            }
            proc_macro2::TokenTree::Ident(ident) => feed(hash, &ident.to_string()),
            proc_macro2::TokenTree::Punct(punct) => feed(hash, &punct.as_char().to_string()),
            proc_macro2::TokenTree::Literal(literal) => feed(hash, &literal.to_string()),
        })
    }
    walk(0xcbf2_9ce4_8422_2325, tokens)
}

/// A lint attribute of the function, for the module, whose names (its own and the parameters')
/// are the function's: `#[allow(non_snake_case)]` stays as it is. `expect` becomes `allow`, since
/// the expectation is the function's and the module need not meet it too; `forbid` becomes
/// `deny`, which the module's own `allow`s for generated code may override.
fn lint_level(attr: &Attribute) -> Option<TokenStream> {
    let path = attr.path();
    let level = ["allow", "warn", "deny", "forbid", "expect"]
        .into_iter()
        .find(|level| path.is_ident(level))?;
    let Meta::List(list) = &attr.meta else {
        return None;
    };
    let level = match level {
        "expect" => "allow",
        "forbid" => "deny",
        other => other,
    };
    let level = Ident::new(level, path.span());
    let lints = &list.tokens;
    Some(quote!(#[#level(#lints)]))
}

/// The visibility of the module's items: the function's, seen from one module deeper.
fn item_visibility(vis: &Visibility) -> TokenStream {
    match vis {
        Visibility::Public(token) => quote!(#token),
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Restricted(restricted) => {
            let path = &restricted.path;
            if path.is_ident("crate") {
                quote!(pub(crate))
            } else if path.is_ident("self") {
                quote!(pub(super))
            } else {
                let mut path = (**path).clone();
                FromParent.visit_path_mut(&mut path);
                quote!(pub(in #path))
            }
        }
    }
}

/// `ty` written so that it means, inside the task module, what it meant beside the function.
fn from_parent(ty: &Type) -> Type {
    let mut ty = ty.clone();
    FromParent.visit_type_mut(&mut ty);
    ty
}

/// The names the task module defines, which would otherwise shadow the parent's items that
/// `use super::*` brings in.
const MODULE_ITEMS: &[&str] = &[
    "Task",
    "Output",
    "NAME",
    "s",
    "si",
    "partial",
    "delay",
    "apply_async",
];

/// Rewrites relative paths for one module deeper: `self::x` becomes `super::x`, `super::x`
/// becomes `super::super::x`, and a name the task module shadows, such as a user's own `Output`
/// type, becomes `super::Output`.
struct FromParent;

impl FromParent {
    /// Returns how many segments were added in front.
    fn rewrite_start(path: &mut Path) -> usize {
        let Some(first) = path.segments.first_mut() else {
            return 0;
        };
        if path.leading_colon.is_some() {
            return 0;
        }
        let span = first.ident.span();
        if first.ident == "self" {
            first.ident = Ident::new("super", span);
            0
        } else if first.ident == "super" || MODULE_ITEMS.iter().any(|item| first.ident == item) {
            path.segments
                .insert(0, PathSegment::from(Ident::new("super", span)));
            1
        } else {
            0
        }
    }
}

impl VisitMut for FromParent {
    fn visit_path_mut(&mut self, path: &mut Path) {
        visit_mut::visit_path_mut(self, path);
        Self::rewrite_start(path);
    }

    fn visit_type_path_mut(&mut self, ty: &mut TypePath) {
        let Some(qself) = &mut ty.qself else {
            return self.visit_path_mut(&mut ty.path);
        };
        // `<T as Trait>::Item`: only `Trait` starts a path; in `<T>::Item` nothing does.
        self.visit_type_mut(&mut qself.ty);
        for segment in &mut ty.path.segments {
            self.visit_path_arguments_mut(&mut segment.arguments);
        }
        if qself.position > 0 {
            qself.position += Self::rewrite_start(&mut ty.path);
        }
    }
}

/// A codec's name: the built-in one written, or the one a user's codec type declares (which
/// fails to compile, at the path, when the type is not a codec).
fn codec(p: &TokenStream, codec: &Option<Codec>, trait_name: TokenStream) -> Option<TokenStream> {
    let name = match codec.as_ref()? {
        Codec::Builtin(name) => quote!(#name),
        Codec::Custom(path) => {
            let span = path.span();
            // Written beside the function, so `super::codecs::Cbor` means what it meant there.
            let mut path = path.clone();
            FromParent.visit_path_mut(&mut path);
            quote_spanned!(span=> <#path as #p::#trait_name>::NAME)
        }
    };
    Some(quote!(::core::option::Option::Some(#name)))
}

/// `TaskOptions { queue: Some("q"), ..TaskOptions::DEFAULT }`, listing only the options given.
fn options(p: &TokenStream, options: &TaskOptions) -> TokenStream {
    let some = |value: TokenStream| quote!(::core::option::Option::Some(#value));
    let string = |value: &Option<String>| value.as_deref().map(|value| some(quote!(#value)));
    let flag = |value: Option<bool>| value.map(|value| some(quote!(#value)));
    let seconds = |value: Option<f64>| {
        value.map(|value| some(Literal::f64_suffixed(value).into_token_stream()))
    };
    let fields = [
        (
            "serializer",
            codec(p, &options.serializer, quote!(NamedSerializer)),
        ),
        (
            "compression",
            codec(p, &options.compression, quote!(NamedCompression)),
        ),
        ("ignore_result", flag(options.ignore_result)),
        ("queue", string(&options.queue)),
        ("routing_key", string(&options.routing_key)),
        (
            "priority",
            options
                .priority
                .map(|value| some(Literal::u8_suffixed(value).into_token_stream())),
        ),
        ("expires", seconds(options.expires)),
        (
            "max_retries",
            options
                .max_retries
                .map(|value| some(Literal::u32_suffixed(value).into_token_stream())),
        ),
        ("default_retry_delay", seconds(options.default_retry_delay)),
        ("acks_late", flag(options.acks_late)),
        (
            "time_limit",
            seconds(options.time_limit.map(|limit| limit.value)),
        ),
        (
            "soft_time_limit",
            seconds(options.soft_time_limit.map(|limit| limit.value)),
        ),
        ("track_started", flag(options.track_started)),
    ];
    let fields = fields.into_iter().filter_map(|(field, value)| {
        let field = format_ident!("{field}");
        value.map(|value| quote!(#field: #value,))
    });
    let mut fields = fields.peekable();
    if fields.peek().is_none() {
        return quote!(#p::TaskOptions::DEFAULT);
    }
    quote!(#p::TaskOptions { #(#fields)* ..#p::TaskOptions::DEFAULT })
}

/// The two functions through which every use of a parameter type and of the return type goes.
///
/// Their bounds are the runtime's `TaskArgument` and `TaskOutput`, whose messages say what is
/// wrong in a sentence. Each use is spanned at the user's type, so that a type that cannot travel
/// in a message is reported there, once: rustc drops a diagnostic identical to one already given.
fn gates(p: &TokenStream, task: &Task, message: &[Arg]) -> TokenStream {
    let argument = (!message.is_empty()).then(|| {
        quote! {
            fn __argument<T: #p::TaskArgument>() -> (
                fn(&mut #p::BoundArgs, usize) -> ::core::result::Result<T, #p::TaskError>,
                fn(#p::ArgList, &T) -> #p::ArgList,
            ) {
                (#p::BoundArgs::take::<T>, #p::ArgList::push::<T>)
            }
        }
    });
    let output = match task.ret {
        Return::Fallible(_) => quote! {
            fn __output<R>() -> fn(
                R,
                fn(<R as #p::Fallible>::Err) -> #p::TaskError,
            ) -> ::core::result::Result<#p::Value, #p::TaskError>
            where
                R: #p::Fallible,
                <R as #p::Fallible>::Ok: #p::TaskOutput,
            {
                #p::output_fallible::<R>
            }
        },
        _ => quote! {
            fn __output<T: #p::TaskOutput>() -> fn(T) -> ::core::result::Result<#p::Value, #p::TaskError> {
                #p::output::<T>
            }
        },
    };
    let finish = finish(p, task);
    quote!(#argument #output #finish)
}

/// `__finish`, which turns what the function returned into the task's outcome.
///
/// Its types are concrete, so that method lookup can pick how an error converts and whether a
/// plain return type is a `Result` under another name; both are reported at the return type.
fn finish(p: &TokenStream, task: &Task) -> TokenStream {
    let span = task.ret_span();
    // The user's own return type tokens, since rustc reports a bound at the type argument.
    let ty = match &task.ret {
        Return::Fallible(ty) | Return::Plain(ty) | Return::Value(ty) => {
            from_parent(ty).into_token_stream()
        }
        Return::Unit => quote_spanned!(span=> ()),
    };
    let value = Ident::new("value", Span::mixed_site());
    let body = match &task.ret {
        Return::Fallible(returned) => {
            let err_span = error_type_span(returned);
            let err = quote_spanned!(span=> <#ty as #p::Fallible>::Err);
            let convert_error = quote_spanned! {err_span=>
                (&&&&#p::ErrorKind::<#err>::NEW).converter()
            };
            quote_spanned! {span=>
                use #p::{
                    Unconvertible as _, ViaBoxed as _, ViaBoxedSend as _, ViaBoxedSendSync as _,
                    ViaTaskError as _,
                };
                (__output::<#ty>())(#value, #convert_error)
            }
        }
        // The user said that a `Result` here is a value: no alias to refuse.
        Return::Value(_) => quote_spanned!(span=> (__output::<#ty>())(#value)),
        Return::Plain(returned) => {
            let refuse = quote_spanned! {last_segment_span(returned)=>
                (&#p::ReturnKind::<#ty>::NEW).refuse_aliased_result()
            };
            quote_spanned! {span=>
                use #p::{ReturnsPlainValue as _, ReturnsResult as _};
                #refuse;
                (__output::<#ty>())(#value)
            }
        }
        Return::Unit => quote_spanned!(span=> (__output::<#ty>())(#value)),
    };
    quote! {
        fn __finish(#value: #ty) -> ::core::result::Result<#p::Value, #p::TaskError> {
            #body
        }
    }
}

/// Where to report a return type's error type: `E` in `Result<T, E>`, else the type's name (an
/// alias such as `io::Result<T>` hides it).
fn error_type_span(ty: &Type) -> Span {
    if let Type::Path(path) = ty {
        if let Some(PathArguments::AngleBracketed(args)) =
            path.path.segments.last().map(|last| &last.arguments)
        {
            let mut types = args.args.iter().filter_map(|arg| match arg {
                GenericArgument::Type(ty) => Some(ty),
                _ => None,
            });
            if let (Some(_), Some(err)) = (types.next(), types.next()) {
                return err.span();
            }
        }
    }
    last_segment_span(ty)
}

/// The span of a type's name: `Outcome` in `crate::jobs::Outcome<i32>`.
fn last_segment_span(ty: &Type) -> Span {
    match ty {
        Type::Path(path) => match path.path.segments.last() {
            Some(last) => last.ident.span(),
            None => ty.span(),
        },
        Type::Group(group) => last_segment_span(&group.elem),
        Type::Paren(paren) => last_segment_span(&paren.elem),
        _ => ty.span(),
    }
}

/// `__argument::<T>()`, at the span of the parameter's type.
fn argument_gate(ty: &Type) -> TokenStream {
    quote_spanned!(ty.span()=> __argument::<#ty>())
}

/// The body of `Task::run`: fill in the parameters, then a future that calls the function and
/// encodes its result.
fn run_body(
    p: &TokenStream,
    task: &Task,
    call: &TokenStream,
    context: Option<&Arg>,
    errback: Option<&[Arg]>,
    message: &[Arg],
) -> TokenStream {
    // Mixed-site names cannot clash with the user's parameter names.
    let invocation = Ident::new("invocation", Span::mixed_site());
    let bound = Ident::new("args", Span::mixed_site());
    let errback_input = Ident::new("errback_input", Span::mixed_site());

    // Each value is written at the parameter's type, so that a mismatch is reported there.
    let context = context.map(|Arg { ident, ty }| {
        let invocation = mixed_site_at("invocation", ty.span());
        let value = quote_spanned!(ty.span()=> #invocation.context());
        quote!(let #ident: #ty = #value;)
    });
    let errback = errback.map(|inputs| {
        let inputs = inputs.iter().enumerate().map(|(index, Arg { ident, ty })| {
            let index = syn::Index::from(index);
            let input = mixed_site_at("errback_input", ty.span());
            let value = quote_spanned!(ty.span()=> #input.#index);
            quote!(let #ident: #ty = #value;)
        });
        quote! {
            let #errback_input = #invocation.errback_input()?;
            #(#inputs)*
        }
    });
    let message_args = message
        .iter()
        .enumerate()
        .map(|(index, Arg { ident, ty })| {
            let index = Literal::usize_unsuffixed(index);
            let gate = argument_gate(ty);
            quote!(let #ident: #ty = (#gate.0)(&mut #bound, #index)?;)
        });
    // Binding also rejects unexpected arguments, so it happens even when there are none to take.
    let bind = quote!(#invocation.bind(<Task as #p::Task>::PARAMS)?);
    let bind = if message.is_empty() {
        quote!(#bind;)
    } else {
        quote!(let mut #bound = #bind;)
    };
    let params = task.roles();
    let idents = params
        .context
        .into_iter()
        .chain(params.errback.unwrap_or_default())
        .chain(params.message)
        .map(|param| &param.ident);
    let call = quote!(#call(#(#idents),*));
    // A plain function's outcome is encoded on the blocking pool too, so that its error need not
    // be `Send` (`Box<dyn Error>`).
    let outcome = if task.is_async() {
        quote!(self::__finish(#call.await))
    } else {
        quote!(#p::run_blocking(move || self::__finish(#call)).await?)
    };
    // Arguments are read before the returned future runs, so that a message whose arguments do
    // not fit is refused before the worker acknowledges it.
    quote! {
        #context
        #errback
        #bind
        #(#message_args)*
        ::core::result::Result::Ok(::std::boxed::Box::pin(async move { #outcome }))
    }
}

/// A name of the generated code, which the user's names cannot clash with, located at `span` so
/// that an expression starting with it is reported there.
fn mixed_site_at(name: &str, span: Span) -> Ident {
    Ident::new(name, span.resolved_at(Span::mixed_site()))
}

/// `s`, `si`, `partial`, `delay` and `apply_async`; an errback only has `s`.
fn calling_api(
    p: &TokenStream,
    vis: &TokenStream,
    deprecated: &[&Attribute],
    fn_name: &str,
    is_errback: bool,
    message: &[Arg],
) -> TokenStream {
    let params: Vec<_> = message
        .iter()
        .map(|Arg { ident, ty }| quote!(#ident: #ty))
        .collect();
    let idents: Vec<_> = message.iter().map(|arg| &arg.ident).collect();
    let list = Ident::new("list", Span::mixed_site());
    let arg_list = |args: &[Arg]| {
        let pushes = args.iter().map(|Arg { ident, ty }| {
            let gate = argument_gate(ty);
            quote!(let #list = (#gate.1)(#list, &#ident);)
        });
        quote! {
            let #list = #p::ArgList::new();
            #(#pushes)*
            #p::Signature::__task::<Task>(#list)
        }
    };
    let all_args = arg_list(message);

    if is_errback {
        let doc = format!(
            "A signature of the `{fn_name}` errback, to pass to `CallOptions::link_error`: when \
             the task it is linked to fails, a worker calls `{fn_name}` with the failed \
             request, its exception and traceback, then these arguments."
        );
        return quote! {
            #[doc = #doc]
            #(#deprecated)*
            #vis fn s(#(#params),*) -> #p::Signature<Output, #p::Errback> {
                #all_args
            }
        };
    }

    let s_doc = format!(
        "A signature of `{fn_name}` with all its arguments: send it later, or make it the first \
         step of a `chain!` or a member of a `group(...)`. As a callback, use `partial`, which \
         receives the parent's result, or `si`, which ignores it."
    );
    let si_doc = format!(
        "An immutable signature of `{fn_name}`: as a callback it ignores the parent's result."
    );
    let delay_doc = format!("Sends `{fn_name}` to a worker with these arguments.");
    let apply_async_doc = format!(
        "Sends `{fn_name}` to a worker with its arguments as a tuple and `CallOptions` \
         (countdown, ETA, queue, links, ...)."
    );
    let partial = message.split_first().map(|(first, rest)| {
        let first_name = first.ident.unraw();
        let doc = format!(
            "A callback signature of `{fn_name}` missing its first argument, `{first_name}`, \
             which the result of the task before it fills in."
        );
        let first_ty = &first.ty;
        let rest_params = &params[1..];
        let rest_args = arg_list(rest);
        quote! {
            #[doc = #doc]
            #(#deprecated)*
            #vis fn partial(#(#rest_params),*) -> #p::Signature<Output, #p::Partial<#first_ty>> {
                #rest_args
            }
        }
    });
    let tuple_types = message.iter().map(|arg| &arg.ty);
    let args = Ident::new("args", Span::mixed_site());
    let options = Ident::new("options", Span::mixed_site());
    quote! {
        #[doc = #s_doc]
        #(#deprecated)*
        #vis fn s(#(#params),*) -> #p::Signature<Output> {
            #all_args
        }

        #[doc = #si_doc]
        #(#deprecated)*
        #vis fn si(#(#params),*) -> #p::Signature<Output, #p::Immutable> {
            #all_args
        }

        #partial

        #[doc = #delay_doc]
        #(#deprecated)*
        #vis async fn delay(
            #(#params),*
        ) -> ::core::result::Result<#p::AsyncResult<Output>, #p::Error> {
            self::s(#(#idents),*).delay().await
        }

        #[doc = #apply_async_doc]
        #(#deprecated)*
        #vis async fn apply_async(
            #args: (#(#tuple_types,)*),
            #options: #p::CallOptions<Output>,
        ) -> ::core::result::Result<#p::AsyncResult<Output>, #p::Error> {
            let (#(#idents,)*) = #args;
            self::s(#(#idents),*).with_options(#options).apply_async().await
        }
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn text(tokens: impl ToTokens) -> String {
        tokens.to_token_stream().to_string()
    }

    #[test]
    fn items_are_as_visible_as_the_function() {
        let cases = [
            (quote!(pub), "pub"),
            (quote!(), "pub (super)"),
            (quote!(pub(self)), "pub (super)"),
            (quote!(pub(crate)), "pub (crate)"),
            (quote!(pub(super)), "pub (in super :: super)"),
            (quote!(pub(in crate::a)), "pub (in crate :: a)"),
            (quote!(pub(in super::a)), "pub (in super :: super :: a)"),
        ];
        for (vis, inner) in cases {
            let vis: Visibility = syn::parse2(vis).unwrap();
            assert_eq!(item_visibility(&vis).to_string(), inner);
        }
    }

    #[test]
    fn types_keep_their_meaning_one_module_deeper() {
        let cases = [
            (quote!(i32), "i32"),
            (quote!(Vec<Output>), "Vec < super :: Output >"),
            (quote!(self::a::B), "super :: a :: B"),
            (quote!(super::B), "super :: super :: B"),
            (quote!(crate::B), "crate :: B"),
            (quote!(::std::string::String), ":: std :: string :: String"),
            (quote!(Box<dyn Task>), "Box < dyn super :: Task >"),
            (
                quote!(<Task as self::Tr>::Output),
                "< super :: Task as super :: Tr > :: Output",
            ),
            (quote!(<X>::Output), "< X > :: Output"),
            (quote!([u8; NAME]), "[u8 ; super :: NAME]"),
        ];
        for (ty, inner) in cases {
            let ty: Type = syn::parse2(ty).unwrap();
            assert_eq!(text(from_parent(&ty)), inner);
        }
    }

    #[test]
    fn options_list_only_what_was_given() {
        let p = quote!(rt);
        assert_eq!(
            options(&p, &TaskOptions::default()).to_string(),
            "rt :: TaskOptions :: DEFAULT"
        );
        let given = TaskOptions {
            priority: Some(3),
            expires: Some(2.5),
            ..TaskOptions::default()
        };
        assert_eq!(
            options(&p, &given).to_string(),
            "rt :: TaskOptions { priority : :: core :: option :: Option :: Some (3u8) , \
             expires : :: core :: option :: Option :: Some (2.5f64) , .. rt :: TaskOptions :: DEFAULT }"
        );
    }

    #[test]
    fn fingerprints_tell_functions_apart_but_not_spacing() {
        let a = fingerprint(quote!(
            async fn add(x: i32) -> i32 {
                x + 1
            }
        ));
        let spaced: TokenStream = "async fn add ( x : i32 ) -> i32 { x+1 }".parse().unwrap();
        assert_eq!(a, fingerprint(spaced));
        assert_ne!(
            a,
            fingerprint(quote!(
                async fn add(x: i32) -> i32 {
                    x - 1
                }
            ))
        );
        assert_ne!(
            a,
            fingerprint(quote!(
                async fn add(x: i32) -> i32 {
                    (x + 1)
                }
            ))
        );
    }

    #[test]
    fn a_mistake_still_emits_the_function_and_nothing_else() {
        let out = task(
            quote!(queu = "x"),
            quote!(
                async fn add(x: i32) -> i32 {
                    x
                }
            ),
        )
        .to_string();
        assert!(
            out.starts_with("async fn add (x : i32) -> i32 { x }"),
            "{out}"
        );
        assert!(out.contains("compile_error"));
        assert!(!out.contains("mod add"));
    }

    #[test]
    fn a_task_gets_a_module_of_the_same_name() {
        let out = task(
            quote!(),
            quote!(
                pub async fn add(x: i32) -> i32 {
                    x
                }
            ),
        )
        .to_string();
        assert!(
            out.starts_with("pub async fn add (x : i32) -> i32 { x }"),
            "{out}"
        );
        assert!(out.contains("pub mod add"));
        assert!(!out.contains("compile_error"));
    }
}
