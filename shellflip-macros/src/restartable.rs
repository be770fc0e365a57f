//! `#[restartable(...)]`: parse the options and the function, check both
//! (collecting every error), then expand to a plain `fn main` that calls
//! `::shellflip::run`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, FnArg, Ident, Lit, LitInt, LitStr, Signature, Visibility};

use crate::errors::{closest, first_and_last_span, one_of, Errors};
use crate::values;

/// The option names, in the order they are documented.
const OPTIONS: &[&str] = &[
    "control",
    "restart_signal",
    "ready_timeout",
    "ready_grace",
    "drain_timeout",
    "pid_file",
    "flavor",
    "worker_threads",
    "on_state_mismatch",
    "spawner",
];

/// Expands `#[restartable(args)] item`. On any error, the errors (all of
/// them) are returned together.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    match (parse_options(args), parse_main(item)) {
        (Ok(options), Ok(main)) => Ok(expand_main(&options, &main)),
        (Err(mut first), Err(second)) => {
            first.combine(second);
            Err(first)
        }
        (Err(error), Ok(_)) | (Ok(_), Err(error)) => Err(error),
    }
}

/// The output of the attribute when `expand` failed: the errors, and
/// something that keeps the rest of the crate from piling up follow-up
/// errors (the item itself, or an empty `fn main` in its place).
pub(crate) fn expand_or_errors(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args, item.clone()) {
        Ok(tokens) => tokens,
        Err(error) => {
            let errors = error.to_compile_error();
            match syn::parse2::<MainFn>(item.clone()) {
                // An `async fn main` that cannot be expanded would add
                // "`main` is not allowed to be async" or "`main` function
                // not found" to the real errors: stand in for it.
                Ok(main) if main.sig.ident == "main" => {
                    let vis = &main.vis;
                    quote!(#errors #vis fn main() {})
                }
                _ => quote!(#errors #item),
            }
        }
    }
}

/// The checked options, each with the literal it came from.
#[derive(Default)]
struct Options {
    control: Option<LitStr>,
    restart_signal: Option<(&'static str, Span)>,
    ready_timeout: Option<(std::time::Duration, Span)>,
    ready_grace: Option<(std::time::Duration, Span)>,
    drain_timeout: Option<(std::time::Duration, Span)>,
    pid_file: Option<LitStr>,
    flavor: Option<(Flavor, Span)>,
    worker_threads: Option<LitInt>,
    on_state_mismatch: Option<(StateMismatch, Span)>,
    spawner: Option<(Spawner, Span)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    MultiThread,
    CurrentThread,
}

#[derive(Clone, Copy)]
enum StateMismatch {
    Fail,
    Fresh,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Spawner {
    Process,
    Inline,
}

/// Parses `name = value, ...`, checking every entry and reporting every
/// problem at once.
fn parse_options(args: TokenStream) -> syn::Result<Options> {
    let mut options = Options::default();
    let mut errors = Errors::default();
    let mut seen: Vec<String> = Vec::new();
    let mut worker_threads_key: Option<Ident> = None;

    for entry in split_at_commas(args) {
        let Some((key, value)) = errors.check(parse_entry(entry)) else {
            continue;
        };
        let name = key.to_string();
        if seen.contains(&name) {
            errors.at(
                key.span(),
                format!("`{name}` is given more than once; keep only one"),
            );
            continue;
        }
        seen.push(name.clone());

        let parsed = match name.as_str() {
            "control" => path_value(&name, &value).map(|lit| options.control = Some(lit)),
            "pid_file" => path_value(&name, &value).map(|lit| options.pid_file = Some(lit)),
            "restart_signal" => string_value(&name, &value).and_then(|lit| {
                let signal =
                    values::parse_signal(&lit.value()).map_err(|e| syn::Error::new(lit.span(), e))?;
                options.restart_signal = Some((signal, lit.span()));
                Ok(())
            }),
            "ready_timeout" => duration_value(&name, &value)
                .map(|d| options.ready_timeout = Some(d)),
            "ready_grace" => duration_value(&name, &value)
                .map(|d| options.ready_grace = Some(d)),
            "drain_timeout" => duration_value(&name, &value)
                .map(|d| options.drain_timeout = Some(d)),
            "flavor" => string_value(&name, &value).and_then(|lit| {
                let flavor = match lit.value().as_str() {
                    "multi_thread" => Flavor::MultiThread,
                    "current_thread" => Flavor::CurrentThread,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "unknown flavor \"{other}\"; expected \"multi_thread\" or \"current_thread\""
                            ),
                        ))
                    }
                };
                options.flavor = Some((flavor, lit.span()));
                Ok(())
            }),
            "worker_threads" => worker_threads_value(&value).map(|lit| {
                worker_threads_key = Some(key.clone());
                options.worker_threads = Some(lit);
            }),
            "on_state_mismatch" => string_value(&name, &value).and_then(|lit| {
                let policy = match lit.value().as_str() {
                    "fail" => StateMismatch::Fail,
                    "fresh" => StateMismatch::Fresh,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!("unknown policy \"{other}\"; expected \"fail\" (the default: refuse to start) or \"fresh\" (start with fresh state)"),
                        ))
                    }
                };
                options.on_state_mismatch = Some((policy, lit.span()));
                Ok(())
            }),
            "spawner" => string_value(&name, &value).and_then(|lit| {
                let mode = match lit.value().as_str() {
                    "process" => Spawner::Process,
                    "inline" => Spawner::Inline,
                    other => {
                        return Err(syn::Error::new(
                            lit.span(),
                            format!("unknown spawner \"{other}\"; expected \"process\" (the default: a spawner forked at start-up starts the next generation) or \"inline\" (the service process spawns it itself)"),
                        ))
                    }
                };
                options.spawner = Some((mode, lit.span()));
                Ok(())
            }),
            _ => Ok(()),
        };
        errors.check(parsed);
    }

    if let (Some((Flavor::CurrentThread, _)), Some(key)) = (options.flavor, &worker_threads_key) {
        errors.at(
            key.span(),
            "`worker_threads` only applies to the multi-threaded runtime; remove it or use flavor = \"multi_thread\"",
        );
    }

    errors.finish()?;
    Ok(options)
}

/// The entries of the attribute's arguments: the tokens between top-level
/// commas (a trailing comma is allowed).
fn split_at_commas(args: TokenStream) -> Vec<TokenStream> {
    let mut entries = Vec::new();
    let mut current = TokenStream::new();
    for token in args {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ',' => {
                entries.push(std::mem::take(&mut current));
            }
            _ => current.extend([token]),
        }
    }
    if !current.is_empty() {
        entries.push(current);
    }
    entries
}

/// One `name = value` entry. The value is any expression here; whether it
/// is the right kind of literal is checked per option. Tokens that are not
/// an expression at all (`control = /run/x`) are reported on the value
/// without stopping the other entries from being checked.
fn parse_entry(entry: TokenStream) -> syn::Result<(Ident, Expr)> {
    let mut tokens = entry.clone().into_iter();
    let key = match tokens.next() {
        Some(TokenTree::Ident(key)) => key,
        Some(other) => {
            return Err(syn::Error::new(
                other.span(),
                format!(
                    "expected an option name, e.g. `control`; the options are {}",
                    one_of(OPTIONS)
                ),
            ))
        }
        None => {
            return Err(syn::Error::new(
                Span::call_site(),
                "unexpected `,` with no option before it",
            ))
        }
    };
    let name = key.to_string();
    let shape_error = |message: String| syn::Error::new_spanned(&entry, message);
    match tokens.next() {
        Some(TokenTree::Punct(p)) if p.as_char() == '=' => {}
        None => {
            return Err(shape_error(match usage(&name) {
                Some(u) => format!("`{name}` needs a value: {u}"),
                None => unknown_option(&name),
            }))
        }
        Some(_) => {
            return Err(shape_error(match usage(&name) {
                Some(u) => format!("expected `name = value`: {u}"),
                None => unknown_option(&name),
            }))
        }
    }
    let value: TokenStream = tokens.collect();
    if value.is_empty() {
        return Err(shape_error(format!("`{name}` needs a value after `=`")));
    }
    if !OPTIONS.contains(&name.as_str()) {
        return Err(syn::Error::new(key.span(), unknown_option(&name)));
    }
    match syn::parse2::<Expr>(value.clone()) {
        Ok(expr) => Ok((key, expr)),
        Err(_) => Err(wrong_type(&name, &value)),
    }
}

/// How an option is written, for messages.
fn usage(name: &str) -> Option<&'static str> {
    Some(match name {
        "control" => "`control = \"/run/my-service.sock\"`",
        "restart_signal" => "`restart_signal = \"SIGUSR2\"`",
        "ready_timeout" => "`ready_timeout = \"30s\"`",
        "ready_grace" => "`ready_grace = \"200ms\"`",
        "drain_timeout" => "`drain_timeout = \"500ms\"`",
        "pid_file" => "`pid_file = \"/run/my-service.pid\"`",
        "flavor" => "`flavor = \"current_thread\"`",
        "worker_threads" => "`worker_threads = 4`",
        "on_state_mismatch" => "`on_state_mismatch = \"fresh\"`",
        "spawner" => "`spawner = \"inline\"`",
        _ => return None,
    })
}

fn unknown_option(name: &str) -> String {
    let hint = closest(name, OPTIONS)
        .map(|o| format!("did you mean `{o}`? "))
        .unwrap_or_default();
    format!(
        "unknown option `{name}`; {hint}the options are {}",
        one_of(OPTIONS)
    )
}

fn wrong_type(name: &str, value: &dyn ToTokens) -> syn::Error {
    let expected = match usage(name) {
        Some(u) => format!("expected {u}"),
        None => "unexpected value".to_owned(),
    };
    let what = if name == "worker_threads" {
        "an integer"
    } else {
        "a string literal"
    };
    syn::Error::new_spanned(value, format!("`{name}` takes {what}: {expected}"))
}

fn string_value(name: &str, value: &Expr) -> syn::Result<LitStr> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(lit), ..
        }) => Ok(lit.clone()),
        other => Err(wrong_type(name, other)),
    }
}

fn path_value(name: &str, value: &Expr) -> syn::Result<LitStr> {
    let lit = string_value(name, value)?;
    let path = lit.value();
    if path.is_empty() {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{name}` cannot be empty; leave the option out to go without"),
        ));
    }
    if path.contains('\0') {
        return Err(syn::Error::new(
            lit.span(),
            "a path cannot contain a NUL character",
        ));
    }
    Ok(lit)
}

fn duration_value(name: &str, value: &Expr) -> syn::Result<(std::time::Duration, Span)> {
    let lit = string_value(name, value)?;
    let duration = values::parse_duration(&lit.value())
        .and_then(|d| match values::duration_constructor(d) {
            Some(_) => Ok(d),
            None => Err("this duration is too large".to_owned()),
        })
        .map_err(|e| syn::Error::new(lit.span(), format!("invalid `{name}`: {e}")))?;
    Ok((duration, lit.span()))
}

fn worker_threads_value(value: &Expr) -> syn::Result<LitInt> {
    let lit = match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit,
        other => return Err(wrong_type("worker_threads", other)),
    };
    if !matches!(lit.suffix(), "" | "usize") {
        return Err(syn::Error::new(
            lit.span(),
            "`worker_threads` is a `usize`; write it without a suffix, e.g. `worker_threads = 4`",
        ));
    }
    match lit.base10_parse::<usize>() {
        Ok(0) => Err(syn::Error::new(
            lit.span(),
            "`worker_threads` must be at least 1",
        )),
        Ok(n) => Ok(LitInt::new(&n.to_string(), lit.span())),
        Err(e) => Err(syn::Error::new(lit.span(), e)),
    }
}

/// The function the attribute is on. The body is kept as tokens, not
/// parsed: it is handed to the compiler as written, so its own errors are
/// reported by the compiler and not as a parse error of the attribute.
struct MainFn {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: Group,
}

impl Parse for MainFn {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig: Signature = input.parse()?;
        let body: Group = input.parse()?;
        if body.delimiter() != proc_macro2::Delimiter::Brace {
            return Err(syn::Error::new(body.span(), "expected the function body"));
        }
        Ok(MainFn {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

/// Parses the item and checks it is an `async fn main` the runtime can run.
fn parse_main(item: TokenStream) -> syn::Result<MainFn> {
    let main = match syn::parse2::<MainFn>(item.clone()) {
        Ok(main) => main,
        Err(error) => return Err(not_a_function(item).unwrap_or(error)),
    };
    let sig = &main.sig;
    let mut errors = Errors::default();

    if sig.ident != "main" {
        errors.at(
            sig.ident.span(),
            format!(
                "#[restartable] goes on the program's `async fn main`, not on `{}`",
                sig.ident
            ),
        );
    }
    if let Some(constness) = &sig.constness {
        errors.spanned(constness, "`main` cannot be `const`");
    }
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token.span,
            "#[restartable] needs an `async fn`: write `async fn main`",
        );
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.spanned(unsafety, "`main` cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.spanned(abi, "`main` cannot have an `extern` ABI");
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            "`main` cannot have generic parameters; name the state type in the parameter instead: `ctx: shellflip::Context<State>`",
        );
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.spanned(where_clause, "`main` cannot have a `where` clause");
    }
    if let Some(variadic) = &sig.variadic {
        errors.spanned(variadic, "`main` cannot be variadic");
    }
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(receiver) => errors.spanned(
                receiver,
                "`main` cannot take `self`; #[restartable] goes on a free function",
            ),
            FnArg::Typed(_) if index == 1 => errors.spanned(
                input,
                "`main` takes at most one parameter, the context: `async fn main(ctx: shellflip::Context<State>)`",
            ),
            FnArg::Typed(_) => {}
        }
    }
    errors.finish()?;
    Ok(main)
}

/// A clear error for an item that is not a function at all.
fn not_a_function(item: TokenStream) -> Option<syn::Error> {
    let item: syn::Item = syn::parse2(item).ok()?;
    let (span, what) = match &item {
        syn::Item::Fn(_) => return None,
        syn::Item::Struct(s) => (s.struct_token.span, "a struct"),
        syn::Item::Enum(e) => (e.enum_token.span, "an enum"),
        syn::Item::Union(u) => (u.union_token.span, "a union"),
        syn::Item::Impl(i) => (i.impl_token.span, "an impl block"),
        syn::Item::Mod(m) => (m.mod_token.span, "a module"),
        syn::Item::Trait(t) => (t.trait_token.span, "a trait"),
        syn::Item::Const(c) => (c.const_token.span, "a constant"),
        syn::Item::Static(s) => (s.static_token.span, "a static"),
        other => (other.span(), "this item"),
    };
    Some(syn::Error::new(
        span,
        format!("#[restartable] goes on `async fn main`, not on {what}"),
    ))
}

/// Writes the plain `fn main`:
///
/// ```ignore
/// fn main() -> ::std::process::ExitCode {
///     async fn main(ctx: Context<State>) -> Result<(), Error> { /* the body */ }
///     ::shellflip::run(::shellflip::Config::default().control_socket("..."), main)
/// }
/// ```
///
/// The user's function is kept whole as an inner `async fn` with its own
/// signature, so `?`, `return` and the declared return type behave exactly
/// as written, and no name of ours is visible to the body.
fn expand_main(options: &Options, main: &MainFn) -> TokenStream {
    let MainFn {
        attrs,
        vis,
        sig,
        body,
    } = main;
    let fn_token = &sig.fn_token;
    let ident = &sig.ident;
    let inputs = &sig.inputs;
    let output = &sig.output;
    let asyncness = &sig.asyncness;
    let config = config_expr(options);

    // `run` wants a function of the context: the user's `main` is one when
    // it takes the context; otherwise a closure ignores the (stateless)
    // context. Giving the `main` passed to `run` the span of the
    // parameter's type blames a parameter that is not a `Context` on that
    // type.
    let entry = match inputs.first() {
        Some(FnArg::Typed(param)) => {
            let mut entry = ident.clone();
            entry.set_span(param.ty.span());
            quote!(#entry)
        }
        _ => quote!(|_: ::shellflip::Context| #ident()),
    };
    // Likewise the call of `run` gets the span of the return type, so that
    // a return type `run` does not accept is blamed on that type.
    let (first, last) = match output {
        syn::ReturnType::Type(_, ty) => first_and_last_span(&ty.to_token_stream()),
        syn::ReturnType::Default => (Span::call_site(), Span::call_site()),
    };
    let arguments = quote_spanned!(last=> (#config, #entry));
    let call = quote_spanned!(first=> ::shellflip::run #arguments);

    quote! {
        #(#attrs)*
        #vis #fn_token #ident() -> ::std::process::ExitCode {
            #asyncness #fn_token #ident(#inputs) #output #body
            #call
        }
    }
}

/// `::shellflip::Config::default()` followed by one setter per option given.
fn config_expr(options: &Options) -> TokenStream {
    let mut config = quote!(::shellflip::Config::default());
    if let Some(path) = &options.control {
        config.extend(quote!(.control_socket(#path)));
    }
    if let Some((signal, span)) = options.restart_signal {
        let variant = Ident::new(signal, span);
        config.extend(quote!(.restart_signal(::shellflip::Signal::#variant)));
    }
    if let Some((duration, span)) = options.ready_timeout {
        let value = duration_tokens(duration, span);
        config.extend(quote!(.ready_timeout(#value)));
    }
    if let Some((duration, span)) = options.ready_grace {
        let value = duration_tokens(duration, span);
        config.extend(quote!(.ready_grace(#value)));
    }
    if let Some((duration, span)) = options.drain_timeout {
        let value = duration_tokens(duration, span);
        config.extend(quote!(.drain_timeout(#value)));
    }
    if let Some(path) = &options.pid_file {
        config.extend(quote!(.pid_file(#path)));
    }
    if let Some((flavor, span)) = options.flavor {
        let variant = match flavor {
            Flavor::MultiThread => Ident::new("MultiThread", span),
            Flavor::CurrentThread => Ident::new("CurrentThread", span),
        };
        config.extend(quote!(.flavor(::shellflip::RuntimeFlavor::#variant)));
    }
    if let Some(threads) = &options.worker_threads {
        config.extend(quote!(.worker_threads(#threads)));
    }
    if let Some((policy, span)) = options.on_state_mismatch {
        let variant = match policy {
            StateMismatch::Fail => Ident::new("Fail", span),
            StateMismatch::Fresh => Ident::new("Fresh", span),
        };
        config.extend(quote!(.on_state_mismatch(::shellflip::StateMismatch::#variant)));
    }
    if let Some((mode, span)) = options.spawner {
        let variant = match mode {
            Spawner::Process => Ident::new("Process", span),
            Spawner::Inline => Ident::new("Inline", span),
        };
        config.extend(quote!(.spawner(::shellflip::SpawnerMode::#variant)));
    }
    config
}

/// `::std::time::Duration::from_secs(30)` and the like.
fn duration_tokens(duration: std::time::Duration, span: Span) -> TokenStream {
    // `duration_value` only accepts durations that have a constructor.
    let (constructor, value) =
        values::duration_constructor(duration).unwrap_or(("from_nanos", u64::MAX));
    let constructor = Ident::new(constructor, span);
    let value = LitInt::new(&value.to_string(), span);
    quote!(::std::time::Duration::#constructor(#value))
}
