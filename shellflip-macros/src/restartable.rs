//! `#[restartable(...)]`: parse the options and the function, check both
//! (collecting every error), then expand to a plain `fn main` that calls
//! `::shellflip::run`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{Attribute, Expr, FnArg, Ident, Lit, LitInt, LitStr, Signature, Visibility};

use shellflip_settings::{
    CountRule, DurationRule, Kind, Problem, RuntimeFlavor, Setting, SettingError, Signal,
    SpawnerMode, StateMismatch, SETTINGS,
};

use crate::errors::{closest, first_and_last_span, one_of, Errors};
use crate::values;

/// The option names, in the order they are documented: the settings
/// table's.
fn options() -> Vec<&'static str> {
    SETTINGS.iter().filter_map(|s| s.option).collect()
}

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
    restart_signal: Option<(Signal, Span)>,
    ready_timeout: Option<(std::time::Duration, Span)>,
    probation: Option<(std::time::Duration, Span)>,
    max_draining: Option<LitInt>,
    fd_store: Option<syn::LitBool>,
    drain_timeout: Option<(std::time::Duration, Span)>,
    pid_file: Option<LitStr>,
    flavor: Option<(RuntimeFlavor, Span)>,
    worker_threads: Option<LitInt>,
    on_state_mismatch: Option<(StateMismatch, Span)>,
    spawner: Option<(SpawnerMode, Span)>,
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
            "restart_signal" => word_value(&name, &value, Signal::parse)
                .map(|signal| options.restart_signal = Some(signal)),
            "ready_timeout" => duration_value(&name, &value, DurationRule::TIMEOUT)
                .map(|d| options.ready_timeout = Some(d)),
            "probation" => duration_value(&name, &value, DurationRule::TIMEOUT_OR_OFF)
                .map(|d| options.probation = Some(d)),
            "max_draining" => count_value(&name, &value, CountRule::DRAINING)
                .map(|lit| options.max_draining = Some(lit)),
            "fd_store" => bool_value(&name, &value).map(|lit| options.fd_store = Some(lit)),
            "drain_timeout" => duration_value(&name, &value, DurationRule::TIMEOUT)
                .map(|d| options.drain_timeout = Some(d)),
            "flavor" => word_value(&name, &value, RuntimeFlavor::parse)
                .map(|flavor| options.flavor = Some(flavor)),
            "worker_threads" => worker_threads_value(&name, &value).map(|lit| {
                worker_threads_key = Some(key.clone());
                options.worker_threads = Some(lit);
            }),
            "on_state_mismatch" => word_value(&name, &value, StateMismatch::parse)
                .map(|policy| options.on_state_mismatch = Some(policy)),
            "spawner" => word_value(&name, &value, SpawnerMode::parse)
                .map(|mode| options.spawner = Some(mode)),
            _ => Ok(()),
        };
        errors.check(parsed);
    }

    if let (Some((RuntimeFlavor::CurrentThread, _)), Some(key)) =
        (options.flavor, &worker_threads_key)
    {
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
                    one_of(&options())
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
    if let Some(now) = shellflip_settings::renamed(&name) {
        return Err(syn::Error::new(
            key.span(),
            format!("`{name}` is now called `{now}`; rename it"),
        ));
    }
    if Setting::by_option(&name).is_none() {
        return Err(syn::Error::new(key.span(), unknown_option(&name)));
    }
    match syn::parse2::<Expr>(value.clone()) {
        Ok(expr) => Ok((key, expr)),
        Err(_) => Err(wrong_type(&name, &value)),
    }
}

/// How an option is written, for messages: `` `ready_timeout = "30s"` ``.
fn usage(name: &str) -> Option<String> {
    let usage = Setting::by_option(name)?.usage()?;
    Some(format!("`{usage}`"))
}

fn unknown_option(name: &str) -> String {
    let options = options();
    let hint = closest(name, &options)
        .map(|o| format!("did you mean `{o}`? "))
        .unwrap_or_default();
    format!(
        "unknown option `{name}`; {hint}the options are {}",
        one_of(&options)
    )
}

fn wrong_type(name: &str, value: &dyn ToTokens) -> syn::Error {
    let expected = match usage(name) {
        Some(u) => format!("expected {u}"),
        None => "unexpected value".to_owned(),
    };
    let what = match Setting::by_option(name).map(|s| s.kind) {
        Some(Kind::Count(_)) => "an integer",
        Some(Kind::Flag) => "`true` or `false`",
        _ => "a string literal",
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
    let problem = if path.is_empty() {
        Problem::EmptyPath
    } else if path.contains('\0') {
        Problem::NulInPath
    } else {
        return Ok(lit);
    };
    Err(values::error(
        lit.span(),
        &SettingError::new(name, path, problem),
    ))
}

/// A string option parsed by the settings crate (a signal, a flavor, ...),
/// with the span of its literal.
fn word_value<T>(
    name: &str,
    value: &Expr,
    parse: impl FnOnce(&str, &str) -> Result<T, SettingError>,
) -> syn::Result<(T, Span)> {
    let lit = string_value(name, value)?;
    let parsed = parse(name, &lit.value()).map_err(|e| values::error(lit.span(), &e))?;
    Ok((parsed, lit.span()))
}

fn duration_value(
    name: &str,
    value: &Expr,
    rule: DurationRule,
) -> syn::Result<(std::time::Duration, Span)> {
    word_value(name, value, |name, text| rule.parse(name, text))
}

fn worker_threads_value(name: &str, value: &Expr) -> syn::Result<LitInt> {
    count_value(name, value, CountRule::WORKER_THREADS)
}

/// A count option (`worker_threads = 4`), checked against its rule.
fn count_value(name: &str, value: &Expr, rule: CountRule) -> syn::Result<LitInt> {
    let lit = match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit,
        other => return Err(wrong_type(name, other)),
    };
    if !matches!(lit.suffix(), "" | "usize") {
        return Err(syn::Error::new(
            lit.span(),
            format!("`{name}` is a `usize`; write it without a suffix, e.g. `{name} = 4`"),
        ));
    }
    let count = rule
        .parse(name, lit.base10_digits())
        .map_err(|e| values::error(lit.span(), &e))?;
    Ok(LitInt::new(&count.to_string(), lit.span()))
}

/// A yes/no option: `fd_store = true`.
fn bool_value(name: &str, value: &Expr) -> syn::Result<syn::LitBool> {
    match value {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Bool(lit),
            ..
        }) => Ok(lit.clone()),
        other => Err(wrong_type(name, other)),
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
    // (`Signature`'s parser takes no `safe`: that is for items of an
    // `unsafe extern` block.)
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
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
        let variant = Ident::new(signal.name(), span);
        config.extend(quote!(.restart_signal(::shellflip::Signal::#variant)));
    }
    if let Some((duration, span)) = options.ready_timeout {
        let value = duration_tokens(duration, span);
        config.extend(quote!(.ready_timeout(#value)));
    }
    if let Some((duration, span)) = options.probation {
        let value = duration_tokens(duration, span);
        config.extend(quote!(.probation(#value)));
    }
    if let Some(count) = &options.max_draining {
        config.extend(quote!(.max_draining(#count)));
    }
    if let Some(on) = &options.fd_store {
        config.extend(quote!(.fd_store(#on)));
    }
    if let Some((duration, span)) = options.drain_timeout {
        let value = duration_tokens(duration, span);
        config.extend(quote!(.drain_timeout(#value)));
    }
    if let Some(path) = &options.pid_file {
        config.extend(quote!(.pid_file(#path)));
    }
    if let Some((flavor, span)) = options.flavor {
        let variant = Ident::new(flavor.variant_name(), span);
        config.extend(quote!(.flavor(::shellflip::RuntimeFlavor::#variant)));
    }
    if let Some(threads) = &options.worker_threads {
        config.extend(quote!(.worker_threads(#threads)));
    }
    if let Some((policy, span)) = options.on_state_mismatch {
        let variant = Ident::new(policy.variant_name(), span);
        config.extend(quote!(.on_state_mismatch(::shellflip::StateMismatch::#variant)));
    }
    if let Some((mode, span)) = options.spawner {
        let variant = Ident::new(mode.variant_name(), span);
        config.extend(quote!(.spawner(::shellflip::SpawnerMode::#variant)));
    }
    config
}

/// `::std::time::Duration::from_secs(30)` and the like.
fn duration_tokens(duration: std::time::Duration, span: Span) -> TokenStream {
    // Every duration the settings crate accepts (at most 7 days) has one.
    let (constructor, value) =
        values::duration_constructor(duration).unwrap_or(("from_nanos", u64::MAX));
    let constructor = Ident::new(constructor, span);
    let value = LitInt::new(&value.to_string(), span);
    quote!(::std::time::Duration::#constructor(#value))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option names and usage examples come from the settings table:
    /// each of its options must also be parsed here and reach the config.
    #[test]
    fn every_option_of_the_settings_table_is_handled() {
        let mut handled = 0;
        for setting in SETTINGS {
            let Some(option) = setting.option else {
                continue;
            };
            let name = Ident::new(option, Span::call_site());
            let value = match setting.kind {
                Kind::Count(_) => {
                    let lit = LitInt::new(setting.example, Span::call_site());
                    quote!(#lit)
                }
                Kind::Flag => {
                    let lit = syn::LitBool::new(setting.example == "true", Span::call_site());
                    quote!(#lit)
                }
                _ => {
                    let lit = LitStr::new(setting.example, Span::call_site());
                    quote!(#lit)
                }
            };
            let options = parse_options(quote!(#name = #value))
                .unwrap_or_else(|e| panic!("`{option}` = {value}: {e}"));
            assert_ne!(
                config_expr(&options).to_string(),
                quote!(::shellflip::Config::default()).to_string(),
                "`{option}` is accepted but does not reach the config"
            );
            handled += 1;
        }
        assert_eq!(handled, 12);
    }
}
