//! The options inside `#[task(...)]`, each parsed and checked on its own.
//!
//! Rules that involve several options (`soft_time_limit` below `time_limit`) or the function
//! (`bind` needs a parameter) live in `check.rs`.

use proc_macro2::{Span, TokenStream};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, Lit, LitStr, Meta, Token, UnOp};

use crate::ctxt::Ctxt;

/// Every option `#[task]` accepts, in the order the error for an unknown one lists them.
const OPTIONS: &[&str] = &[
    "name",
    "bind",
    "errback",
    "fallible",
    "serializer",
    "compression",
    "ignore_result",
    "queue",
    "routing_key",
    "priority",
    "expires",
    "max_retries",
    "default_retry_delay",
    "acks_late",
    "time_limit",
    "soft_time_limit",
    "track_started",
    "crate",
];

/// Serializer names and content types, each with the short name Celery's registry uses.
const SERIALIZERS: &[(&str, &str)] = &[
    ("json", "json"),
    ("msgpack", "msgpack"),
    ("yaml", "yaml"),
    ("pickle", "pickle"),
    ("application/json", "json"),
    ("application/x-msgpack", "msgpack"),
    ("application/x-yaml", "yaml"),
    ("application/x-python-serialize", "pickle"),
];

/// Compression names (kept as written, since kombu knows each of them) and MIME types: every name,
/// alias and MIME type of the runtime's `CompressionRegistry`, which a test compares this with
/// (the macro cannot depend on the runtime to share its list).
const COMPRESSIONS: &[(&str, &str)] = &[
    ("gzip", "gzip"),
    ("zlib", "zlib"),
    ("bzip2", "bzip2"),
    ("bzip", "bzip"),
    ("bz2", "bz2"),
    ("lzma", "lzma"),
    ("xz", "xz"),
    ("brotli", "brotli"),
    ("zstd", "zstd"),
    ("zstandard", "zstandard"),
    ("application/x-gzip", "gzip"),
    ("application/x-bz2", "bzip2"),
    ("application/x-lzma", "lzma"),
    ("application/x-brotli", "brotli"),
    ("application/zstd", "zstd"),
];

/// A value together with where the user wrote it.
#[derive(Clone, Copy)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

/// What `#[task(...)]` said.
#[derive(Default)]
pub struct TaskAttrs {
    /// The task's name in messages; the function's name when absent.
    pub name: Option<String>,
    /// Where `bind` was written, when the first parameter receives the task context.
    pub bind: Option<Span>,
    /// Where `errback` was written, when the first parameters receive a failed task's request.
    pub errback: Option<Span>,
    /// `fallible = true` (the return type is a `Result` under another name) or `fallible = false`
    /// (a `Result` is the task's value, stored as `{"Ok": ...}`), and where it was written.
    pub fallible: Option<Spanned<bool>>,
    /// The path of the `celery` crate, when renamed with `crate = "..."`.
    pub krate: Option<syn::Path>,
    pub options: TaskOptions,
}

/// A serializer or compression: one Celery knows by name, or a user's type registered with the
/// app (`serializer = my_codecs::Cbor`), whose name the type gives.
pub enum Codec {
    Builtin(&'static str),
    Custom(syn::Path),
}

/// The options that become the task's `TaskOptions`; `None` keeps the app's default.
#[derive(Default)]
pub struct TaskOptions {
    pub serializer: Option<Codec>,
    pub compression: Option<Codec>,
    pub ignore_result: Option<bool>,
    pub queue: Option<String>,
    pub routing_key: Option<String>,
    pub priority: Option<u8>,
    pub expires: Option<f64>,
    pub max_retries: Option<u32>,
    pub default_retry_delay: Option<f64>,
    pub acks_late: Option<bool>,
    pub time_limit: Option<Spanned<f64>>,
    pub soft_time_limit: Option<Spanned<f64>>,
    pub track_started: Option<bool>,
}

impl TaskAttrs {
    /// Parses the tokens inside `#[task(...)]`, reporting every mistake to `cx`.
    pub fn from_args(cx: &Ctxt, args: TokenStream) -> Self {
        let mut attrs = TaskAttrs::default();
        let metas = match Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args) {
            Ok(metas) => metas,
            Err(error) => {
                cx.push(error);
                return attrs;
            }
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for meta in &metas {
            let key = meta.path();
            let Some(option) = key
                .get_ident()
                .and_then(|ident| OPTIONS.iter().copied().find(|option| ident == option))
            else {
                cx.error_spanned_by(key, unknown_option(key));
                continue;
            };
            if seen.contains(&option) {
                cx.error_spanned_by(
                    key,
                    format!("`{option}` is given twice; give each #[task] option once"),
                );
                continue;
            }
            seen.push(option);
            attrs.set(cx, option, meta);
        }
        attrs
    }

    fn set(&mut self, cx: &Ctxt, option: &'static str, meta: &Meta) {
        let arg = Arg { cx, option, meta };
        let options = &mut self.options;
        match option {
            "name" => self.name = arg.name(),
            "bind" => self.bind = arg.flag().filter(|set| *set).map(|_| meta.span()),
            "errback" => self.errback = arg.flag().filter(|set| *set).map(|_| meta.span()),
            // Unlike `bind`, `fallible = false` says something: it overrides the `Result` name.
            "fallible" => {
                self.fallible = arg.flag().map(|value| Spanned {
                    value,
                    span: meta.span(),
                })
            }
            "crate" => self.krate = arg.crate_path(),
            "serializer" => options.serializer = arg.codec(SERIALIZERS, "a serializer", "json"),
            "compression" => options.compression = arg.codec(COMPRESSIONS, "a compression", "gzip"),
            "ignore_result" => options.ignore_result = arg.flag(),
            "acks_late" => options.acks_late = arg.flag(),
            "track_started" => options.track_started = arg.flag(),
            "queue" => options.queue = arg.non_empty_string("celery"),
            "routing_key" => options.routing_key = arg.string("tasks.add").map(|s| s.value()),
            "priority" => options.priority = arg.integer("an integer from 0 to 255", 5),
            "max_retries" => options.max_retries = arg.integer("a whole number of retries", 3),
            "expires" => options.expires = arg.seconds(Bound::Positive).map(|s| s.value),
            "default_retry_delay" => {
                options.default_retry_delay = arg.seconds(Bound::NotNegative).map(|s| s.value)
            }
            "time_limit" => options.time_limit = arg.seconds(Bound::Positive),
            "soft_time_limit" => options.soft_time_limit = arg.seconds(Bound::Positive),
            _ => unreachable!("every name in OPTIONS has a parser"),
        }
    }
}

fn unknown_option(key: &syn::Path) -> String {
    let written = quote::quote!(#key).to_string().replace(' ', "");
    let suggestion = OPTIONS
        .iter()
        .filter(|option| edit_distance(&written, option) <= 2)
        .min_by_key(|option| edit_distance(&written, option))
        .map(|option| format!(" (did you mean `{option}`?)"))
        .unwrap_or_default();
    format!(
        "`{written}` is not a #[task] option{suggestion}; the options are: {}",
        OPTIONS.join(", ")
    )
}

/// Levenshtein distance, to suggest the option a typo meant.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Which numbers of seconds an option accepts.
#[derive(Clone, Copy)]
enum Bound {
    Positive,
    NotNegative,
}

/// One `option = value` being read.
struct Arg<'a> {
    cx: &'a Ctxt,
    option: &'static str,
    meta: &'a Meta,
}

impl Arg<'_> {
    /// The value after `=`, or an error saying what was expected.
    fn value(&self, expected: &str, example: &str) -> Option<&Expr> {
        match self.meta {
            Meta::NameValue(pair) => Some(&pair.value),
            _ => {
                self.wrong_kind(self.meta, expected, example);
                None
            }
        }
    }

    fn wrong_kind<T: quote::ToTokens>(&self, at: T, expected: &str, example: &str) {
        let option = self.option;
        self.cx.error_spanned_by(
            at,
            format!("`{option}` expects {expected}, as in `{option} = {example}`"),
        );
    }

    fn flag(&self) -> Option<bool> {
        if let Meta::Path(_) = self.meta {
            return Some(true);
        }
        if let Meta::NameValue(pair) = self.meta {
            if let Expr::Lit(expr) = &pair.value {
                if let Lit::Bool(value) = &expr.lit {
                    return Some(value.value);
                }
            }
        }
        let option = self.option;
        let at: &dyn quote::ToTokens = match self.meta {
            Meta::NameValue(pair) => &pair.value,
            other => other,
        };
        self.cx.error_spanned_by(
            at,
            format!(
                "`{option}` is a flag: write `{option}`, `{option} = true` or `{option} = false`"
            ),
        );
        None
    }

    fn string(&self, example: &str) -> Option<LitStr> {
        let expected = "a string";
        let example = format!("\"{example}\"");
        match self.value(expected, &example)? {
            Expr::Lit(expr) => match &expr.lit {
                Lit::Str(value) => Some(value.clone()),
                other => {
                    self.wrong_kind(other, expected, &example);
                    None
                }
            },
            other => {
                self.wrong_kind(other, expected, &example);
                None
            }
        }
    }

    fn non_empty_string(&self, example: &str) -> Option<String> {
        let value = self.string(example)?;
        if value.value().is_empty() {
            self.cx.error_spanned_by(
                &value,
                format!(
                    "`{0}` cannot be empty; leave `{0}` out to use the app's default",
                    self.option
                ),
            );
            return None;
        }
        Some(value.value())
    }

    fn name(&self) -> Option<String> {
        let value = self.string("tasks.add")?;
        if value.value().is_empty() {
            self.cx.error_spanned_by(
                &value,
                "`name` cannot be empty: it is what messages use to call the task",
            );
            return None;
        }
        Some(value.value())
    }

    fn crate_path(&self) -> Option<syn::Path> {
        let value = self.string("::celery")?;
        match value.parse::<syn::Path>() {
            Ok(path) => Some(path),
            Err(_) => {
                self.cx.error_spanned_by(
                    &value,
                    "`crate` expects the path of the celery crate, as in `crate = \"::celery\"`",
                );
                None
            }
        }
    }

    /// A string that must be one of `table`'s names (case-insensitive); returns its short name.
    /// A built-in codec by name, or the path of a user's codec type.
    fn codec(
        &self,
        table: &[(&'static str, &'static str)],
        what: &str,
        example: &str,
    ) -> Option<Codec> {
        if let Meta::NameValue(pair) = self.meta {
            if let Expr::Path(path) = &pair.value {
                return Some(Codec::Custom(path.path.clone()));
            }
        }
        self.one_of(table, what, example).map(Codec::Builtin)
    }

    fn one_of(
        &self,
        table: &[(&'static str, &'static str)],
        what: &str,
        example: &str,
    ) -> Option<&'static str> {
        let value = self.string(example)?;
        let written = value.value().to_ascii_lowercase();
        if let Some((_, short)) = table.iter().find(|(name, _)| *name == written) {
            return Some(short);
        }
        let (content_types, names): (Vec<&str>, Vec<&str>) = table
            .iter()
            .map(|(name, _)| *name)
            .partition(|name| name.contains('/'));
        self.cx.error_spanned_by(
            &value,
            format!(
                "`{}` is not {what} Celery knows; use one of {}, a content type: {}, or the path of a type you registered",
                value.value(),
                names.join(", "),
                content_types.join(", "),
            ),
        );
        None
    }

    /// A whole number that fits `T`, such as a priority (`u8`) or a retry count (`u32`).
    fn integer<T>(&self, expected: &str, example: u32) -> Option<T>
    where
        T: TryFrom<i128> + Into<u64> + Bounded,
    {
        let example = example.to_string();
        let value = self.value(expected, &example)?;
        let Some(Number::Integer(number)) = number(value) else {
            self.wrong_kind(value, expected, &example);
            return None;
        };
        match T::try_from(number) {
            Ok(number) => Some(number),
            Err(_) => {
                self.cx.error_spanned_by(
                    value,
                    format!(
                        "`{}` must be from 0 to {}, but this is {number}",
                        self.option,
                        T::MAX.into()
                    ),
                );
                None
            }
        }
    }

    fn seconds(&self, bound: Bound) -> Option<Spanned<f64>> {
        let expected = "a number of seconds";
        let example = "60";
        let value = self.value(expected, example)?;
        let seconds = match number(value) {
            Some(Number::Integer(number)) => number as f64,
            Some(Number::Float(number)) if number.is_finite() => number,
            _ => {
                self.wrong_kind(value, expected, "60` or `2.5");
                return None;
            }
        };
        let option = self.option;
        match bound {
            Bound::Positive if seconds <= 0.0 => {
                self.cx
                    .error_spanned_by(value, format!("`{option}` must be more than 0 seconds"));
                None
            }
            Bound::NotNegative if seconds < 0.0 => {
                self.cx
                    .error_spanned_by(value, format!("`{option}` cannot be negative"));
                None
            }
            _ => Some(Spanned {
                value: seconds,
                span: value.span(),
            }),
        }
    }
}

/// The largest value of an unsigned integer type, for the out-of-range message.
trait Bounded: Sized {
    const MAX: Self;
}

impl Bounded for u8 {
    const MAX: Self = u8::MAX;
}

impl Bounded for u32 {
    const MAX: Self = u32::MAX;
}

enum Number {
    Integer(i128),
    Float(f64),
}

/// A numeric literal, possibly negated.
fn number(expr: &Expr) -> Option<Number> {
    match expr {
        Expr::Lit(expr) => match &expr.lit {
            Lit::Int(int) => int.base10_parse().ok().map(Number::Integer),
            Lit::Float(float) => float.base10_parse().ok().map(Number::Float),
            _ => None,
        },
        Expr::Unary(unary) if matches!(unary.op, UnOp::Neg(_)) => match number(&unary.expr)? {
            Number::Integer(number) => Some(Number::Integer(-number)),
            Number::Float(number) => Some(Number::Float(-number)),
        },
        Expr::Group(group) => number(&group.expr),
        Expr::Paren(paren) => number(&paren.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    fn parse(args: TokenStream) -> (TaskAttrs, Vec<String>) {
        let cx = Ctxt::new();
        let attrs = TaskAttrs::from_args(&cx, args);
        let errors = match cx.check() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        };
        (attrs, errors)
    }

    #[test]
    fn empty_arguments_set_nothing() {
        let (attrs, errors) = parse(quote!());
        assert!(errors.is_empty());
        assert!(attrs.name.is_none() && attrs.bind.is_none() && attrs.krate.is_none());
        assert!(attrs.options.queue.is_none());
    }

    #[test]
    fn every_option_at_once() {
        let (attrs, errors) = parse(quote!(
            name = "tasks.add",
            bind,
            errback = false,
            serializer = "application/x-msgpack",
            compression = "GZIP",
            ignore_result = true,
            queue = "math",
            routing_key = "math.add",
            priority = 255,
            expires = 2.5,
            max_retries = 3,
            default_retry_delay = 0,
            acks_late,
            time_limit = 60,
            soft_time_limit = 30.5,
            track_started = false,
            crate = "::celery_core",
        ));
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(attrs.name.as_deref(), Some("tasks.add"));
        assert!(attrs.bind.is_some());
        assert!(attrs.errback.is_none());
        let krate = attrs.krate.unwrap();
        assert_eq!(quote!(#krate).to_string(), ":: celery_core");
        let options = attrs.options;
        assert!(matches!(
            options.serializer,
            Some(Codec::Builtin("msgpack"))
        ));
        assert!(matches!(options.compression, Some(Codec::Builtin("gzip"))));
        assert_eq!(options.ignore_result, Some(true));
        assert_eq!(options.queue.as_deref(), Some("math"));
        assert_eq!(options.routing_key.as_deref(), Some("math.add"));
        assert_eq!(options.priority, Some(255));
        assert_eq!(options.expires, Some(2.5));
        assert_eq!(options.max_retries, Some(3));
        assert_eq!(options.default_retry_delay, Some(0.0));
        assert_eq!(options.acks_late, Some(true));
        assert_eq!(options.time_limit.map(|s| s.value), Some(60.0));
        assert_eq!(options.soft_time_limit.map(|s| s.value), Some(30.5));
        assert_eq!(options.track_started, Some(false));
    }

    #[test]
    fn serializer_and_compression_store_short_names() {
        for (written, short) in [
            ("json", "json"),
            ("application/x-python-serialize", "pickle"),
        ] {
            let (attrs, errors) = parse(quote!(serializer = #written));
            assert!(errors.is_empty());
            assert!(
                matches!(attrs.options.serializer, Some(Codec::Builtin(name)) if name == short)
            );
        }
        for (written, short) in [("bz2", "bz2"), ("application/x-bz2", "bzip2"), ("XZ", "xz")] {
            let (attrs, errors) = parse(quote!(compression = #written));
            assert!(errors.is_empty());
            assert!(
                matches!(attrs.options.compression, Some(Codec::Builtin(name)) if name == short)
            );
        }
    }

    /// The macro accepts exactly the names the runtime resolves, each as the same scheme.
    #[test]
    fn compressions_are_the_runtimes() {
        use celery_core::compression::{
            Brotli, Bzip2, Compression, CompressionRegistry, Lzma, Zlib, Zstd,
        };
        let registry = CompressionRegistry::default();
        for (written, short) in COMPRESSIONS {
            let scheme = registry.get(written).unwrap().name().to_owned();
            assert_eq!(registry.get(short).unwrap().name(), scheme, "{written}");
        }
        let builtin: [&dyn Compression; 5] = [&Zlib, &Bzip2, &Lzma, &Brotli, &Zstd];
        let mut runtime: Vec<&str> = builtin
            .iter()
            .flat_map(|scheme| {
                std::iter::once(scheme.name())
                    .chain(scheme.aliases().iter().copied())
                    .chain([scheme.content_type()])
            })
            .collect();
        let mut macro_names: Vec<&str> = COMPRESSIONS.iter().map(|(name, _)| *name).collect();
        runtime.sort_unstable();
        macro_names.sort_unstable();
        assert_eq!(macro_names, runtime);
        // Every scheme the runtime registers by default is listed above.
        let unknown = registry.get("unknown").err().unwrap().to_string();
        assert!(
            unknown.ends_with("(known: brotli, bzip2, lzma, zlib, zstd)"),
            "{unknown}"
        );
    }

    #[test]
    fn all_mistakes_are_reported_together() {
        let (_, errors) = parse(quote!(
            queu = "x",
            priority = "high",
            priority = 1,
            serializer = "xml",
            compression = "lz4",
            bind = 1,
            expires = 0,
            max_retries = -1,
            name = "",
            crate = "not a path",
        ));
        assert_eq!(errors.len(), 10, "{errors:#?}");
        assert!(errors[0]
            .starts_with("`queu` is not a #[task] option (did you mean `queue`?); the options"));
        assert_eq!(
            errors[1],
            "`priority` expects an integer from 0 to 255, as in `priority = 5`"
        );
        assert_eq!(
            errors[2],
            "`priority` is given twice; give each #[task] option once"
        );
        assert!(errors[3].starts_with("`xml` is not a serializer Celery knows"));
        assert!(errors[4].starts_with("`lz4` is not a compression Celery knows; use one of gzip"));
        assert!(errors[4].ends_with(
            "a content type: application/x-gzip, application/x-bz2, application/x-lzma, \
             application/x-brotli, application/zstd, or the path of a type you registered"
        ));
        assert!(errors[5].starts_with("`bind` is a flag"));
        assert_eq!(errors[6], "`expires` must be more than 0 seconds");
        assert_eq!(
            errors[7],
            "`max_retries` must be from 0 to 4294967295, but this is -1"
        );
        assert!(errors[8].starts_with("`name` cannot be empty"));
        assert!(errors[9].starts_with("`crate` expects the path of the celery crate"));
    }

    #[test]
    fn priority_above_255_is_rejected() {
        let (_, errors) = parse(quote!(priority = 256));
        assert_eq!(
            errors,
            ["`priority` must be from 0 to 255, but this is 256"]
        );
    }

    #[test]
    fn unrelated_typos_get_no_suggestion() {
        let (_, errors) = parse(quote!(frobnicate));
        assert!(
            errors[0].starts_with("`frobnicate` is not a #[task] option; the options are: name")
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        let (_, errors) = parse(quote!(queue = ));
        assert_eq!(errors.len(), 1);
    }
}
