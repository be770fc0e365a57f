//! The runtime's module graph has no cycle, and it is the one drawn in
//! ARCHITECTURE.md: every module of `src/` is listed there with its floor,
//! and a module only uses modules on lower floors. No module is longer than
//! 600 lines of code, and no function longer than 80, in the runtime, the
//! facade (`../src`: library, HTTP, client, CLI) and the macros.
//!
//! A use is any `crate::<module>` path outside comments (items re-exported
//! at the crate root, such as `crate::Error`, are to be named by their
//! module instead, so that the graph stays visible in the code).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn runtime_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `module -> floor`, from the table in ARCHITECTURE.md whose rows read
/// `| <floor> | `<module>` | ... |`.
fn floors_from_architecture() -> BTreeMap<String, u32> {
    let path = runtime_dir().join("../ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut floors = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 {
            continue;
        }
        let (Ok(floor), Some(module)) = (
            cells[1].parse::<u32>(),
            cells[2].strip_prefix('`').and_then(|m| m.strip_suffix('`')),
        ) else {
            continue;
        };
        assert!(
            floors.insert(module.to_owned(), floor).is_none(),
            "{module} is listed twice in ARCHITECTURE.md"
        );
    }
    floors
}

/// Every module file under `src/` (but `lib.rs` and `tests.rs` files), by
/// module path
/// (`control::server` for `src/control/server.rs`, `control` for
/// `src/control/mod.rs`).
fn module_files() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{stem}::"), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = match stem.as_str() {
                    "lib" if prefix.is_empty() => continue,
                    // A module's unit tests, in a file of their own.
                    "tests" => continue,
                    "mod" => prefix.trim_end_matches("::").to_owned(),
                    _ => format!("{prefix}{stem}"),
                };
                out.insert(name, path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(&runtime_dir().join("src"), "", &mut out);
    out
}

/// The modules `source` uses: the longest known module path after each
/// `crate::` outside comments.
fn uses(source: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let longest = (1..=segments.len())
                .rev()
                .map(|n| segments[..n].join("::"))
                .find(|candidate| known.contains(candidate));
            match longest {
                Some(module) => {
                    found.insert(module);
                }
                None => panic!(
                    "`crate::{path}` does not start with a module of the runtime; name items by their module (e.g. crate::error::Error), not by a re-export:\n{line}"
                ),
            }
        }
    }
    found
}

#[test]
fn every_module_uses_only_lower_floors() {
    let floors = floors_from_architecture();
    let files = module_files();
    let known: BTreeSet<String> = files.keys().cloned().collect();
    let listed: BTreeSet<String> = floors.keys().cloned().collect();
    assert_eq!(
        known, listed,
        "ARCHITECTURE.md's module table must list exactly the modules of shellflip-runtime/src"
    );
    let mut violations = Vec::new();
    for (module, path) in &files {
        let source = std::fs::read_to_string(path).unwrap();
        for used in uses(&source, &known) {
            // A module's own children and its parent facade are part of it.
            if used == *module || used.starts_with(&format!("{module}::")) {
                continue;
            }
            if module.starts_with(&format!("{used}::")) {
                continue;
            }
            if floors[&used] >= floors[module] {
                violations.push(format!(
                    "{module} (floor {}) uses {used} (floor {})",
                    floors[module], floors[&used]
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "modules may only use modules on lower floors (see ARCHITECTURE.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn uses_are_read_from_code_not_comments() {
    let known: BTreeSet<String> = ["a", "b", "c::d"].iter().map(|s| s.to_string()).collect();
    let found = uses(
        "use crate::a::Thing;\n// crate::b in a comment\nfn f() { crate::c::d::g(); }",
        &known,
    );
    let expected: BTreeSet<String> = ["a", "c::d"].iter().map(|s| s.to_string()).collect();
    assert_eq!(found, expected);
}

/// The most lines of code (without its unit tests) one module file may
/// have: a module a reader can hold in their head.
const MAX_MODULE_LINES: usize = 600;

/// True for a line that holds code: not blank, not only a comment.
fn is_code(line: &str) -> bool {
    let line = line.trim();
    !line.is_empty() && !line.starts_with("//")
}

/// The lines of code of `source` (blank lines and comments do not count)
/// before its unit tests (`#[cfg(test)]` followed by `mod tests`).
fn code_lines(source: &str) -> usize {
    let lines: Vec<&str> = source.lines().collect();
    let end = lines
        .windows(2)
        .position(|pair| pair[0].trim() == "#[cfg(test)]" && pair[1].starts_with("mod tests {"))
        .unwrap_or(lines.len());
    lines[..end].iter().filter(|line| is_code(line)).count()
}

#[test]
fn no_module_is_longer_than_600_lines_of_code() {
    let too_long: Vec<String> = module_files()
        .iter()
        .filter_map(|(module, path)| {
            let lines = code_lines(&std::fs::read_to_string(path).unwrap());
            (lines > MAX_MODULE_LINES).then(|| format!("{module}: {lines} lines"))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "split these modules (at most {MAX_MODULE_LINES} lines of code each, unit tests aside):\n{}",
        too_long.join("\n")
    );
}

/// The most lines of code one function may have: a function a reader can
/// take in at once.
const MAX_FUNCTION_LINES: usize = 80;

/// The functions of `source` (outside `#[cfg(test)]` modules) with their
/// lines of code, counted as [`code_lines`] does.
fn function_lengths(source: &str) -> Vec<(String, usize)> {
    use syn::visit::Visit;

    struct Functions<'a> {
        lines: Vec<&'a str>,
        found: Vec<(String, usize)>,
    }

    impl Functions<'_> {
        fn record(&mut self, name: String, span: proc_macro2::Span) {
            let (start, end) = (span.start().line, span.end().line);
            let code = self.lines[start - 1..end]
                .iter()
                .filter(|line| is_code(line))
                .count();
            self.found.push((name, code));
        }
    }

    impl<'ast> Visit<'ast> for Functions<'_> {
        fn visit_item_mod(&mut self, module: &'ast syn::ItemMod) {
            let is_test = module.attrs.iter().any(|attr| {
                attr.path().is_ident("cfg")
                    && attr
                        .parse_args::<syn::Ident>()
                        .is_ok_and(|ident| ident == "test")
            });
            if !is_test {
                syn::visit::visit_item_mod(self, module);
            }
        }

        fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
            self.record(
                item.sig.ident.to_string(),
                syn::spanned::Spanned::span(item),
            );
            syn::visit::visit_item_fn(self, item);
        }

        fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
            self.record(
                item.sig.ident.to_string(),
                syn::spanned::Spanned::span(item),
            );
            syn::visit::visit_impl_item_fn(self, item);
        }
    }

    let file = syn::parse_file(source).expect("a module that parses");
    let mut functions = Functions {
        lines: source.lines().collect(),
        found: Vec::new(),
    };
    functions.visit_file(&file);
    functions.found
}

/// The other crates held to the same function size, by their `src/`
/// relative to this crate's directory: the facade (library, HTTP), the
/// control crate (protocol, frames, client, the `shellflip` CLI), the
/// macros and the settings.
const OTHER_SOURCES: &[&str] = &[
    "../src",
    "../shellflip-control/src",
    "../shellflip-macros/src",
    "../shellflip-settings/src",
];

/// Every `.rs` file under `dir` but `tests.rs` files (a module's unit
/// tests), named by its path from the workspace's root.
fn source_files(dir: &Path) -> Vec<(String, PathBuf)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs")
                && path.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(path);
            }
        }
    }
    let root = runtime_dir().join("..").canonicalize().unwrap();
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let path = path.canonicalize().unwrap();
            let name = path.strip_prefix(&root).unwrap().display().to_string();
            (name, path)
        })
        .collect()
}

#[test]
fn no_function_is_longer_than_80_lines_of_code() {
    let others = OTHER_SOURCES
        .iter()
        .flat_map(|dir| source_files(&runtime_dir().join(dir)));
    let too_long: Vec<String> = module_files()
        .into_iter()
        .chain(others)
        .flat_map(|(module, path)| {
            function_lengths(&std::fs::read_to_string(&path).unwrap())
                .into_iter()
                .filter(|(_, lines)| *lines > MAX_FUNCTION_LINES)
                .map(move |(name, lines)| format!("{module}::{name}: {lines} lines"))
        })
        .collect();
    assert!(
        too_long.is_empty(),
        "split these functions (at most {MAX_FUNCTION_LINES} lines of code each):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_facade_and_the_macros_are_measured_too() {
    let files: Vec<String> = OTHER_SOURCES
        .iter()
        .flat_map(|dir| source_files(&runtime_dir().join(dir)))
        .map(|(name, _)| name)
        .collect();
    for expected in [
        "src/lib.rs",
        "src/http.rs",
        "shellflip-control/src/bin/shellflip.rs",
        "shellflip-control/src/client.rs",
        "shellflip-macros/src/restartable.rs",
        "shellflip-macros/src/handover_state/expand.rs",
    ] {
        assert!(
            files.iter().any(|f| f == expected),
            "{expected} is not measured: {files:?}"
        );
    }
    assert!(!files.iter().any(|f| f.ends_with("/tests.rs")), "{files:?}");
}

#[test]
fn functions_are_measured_in_lines_of_code() {
    let source = "fn a() {\n    // a comment\n\n    let x = 1;\n}\n\n#[cfg(test)]\nmod tests {\n    fn t() {}\n}\n";
    assert_eq!(function_lengths(source), vec![("a".to_owned(), 3)]);
}

#[test]
fn unit_tests_do_not_count_as_code() {
    let source = "fn a() {}\n\n// b\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {}\n}\n";
    assert_eq!(code_lines(source), 1);
    assert_eq!(code_lines("fn a() {}\nfn b() {}\n"), 2);
    // A test module in a file of its own ends nothing: the code goes on.
    let source = "#[cfg(test)]\nmod tests;\nfn a() {}\n";
    assert_eq!(code_lines(source), 3);
}
