//! Where the binaries cargo built are: the examples and the `shellflip`
//! CLI.
//!
//! `cargo test` builds every example of the package together with its tests
//! (into `target/<profile>/examples/`) and the package's binaries for its
//! integration tests (into `target/<profile>/`). The CLI is the binary of
//! another package, `shellflip-control`: `cargo test --workspace` builds it
//! (for that package's tests), `cargo test --test <file>` does not. The
//! tests, and the demo, find them there, next to their own executable.
//! Nothing here runs cargo: a binary that is not built is an error (or, for
//! the tests, a panic) naming the command that builds it.

use std::path::{Path, PathBuf};

/// A binary that cargo has not built (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is not built ({} does not exist); build it with `{command}` \
     (`cargo test --workspace` builds it, `cargo test --test <file>` does not)",
    path.display()
)]
pub struct NotBuilt {
    /// What is missing, e.g. "the `echo` example".
    pub what: String,
    /// Where it was looked for.
    pub path: PathBuf,
    /// The command that builds it, e.g. `cargo build --examples`.
    pub command: String,
}

/// `target/<profile>`: the directory of the running executable, or its
/// parent when that is `deps/` (a test) or `examples/` (an example).
///
/// # Panics
///
/// If the path of the running executable cannot be read.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe()
        .unwrap_or_else(|e| panic!("cannot read the path of this executable: {e}"));
    let dir = exe.parent().unwrap_or(Path::new("/"));
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The cargo arguments that select the profile whose output is in `dir`
/// (`target/debug`, `target/release`, `target/<custom>`): none for the
/// default profile.
fn profile_args_for(dir: &Path) -> Vec<String> {
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => Vec::new(),
        Some("release") => vec!["--release".to_string()],
        Some(custom) => vec!["--profile".to_string(), custom.to_string()],
    }
}

/// The cargo arguments that build in the profile of the running executable
/// (`--release` for a release build): for a tool that runs `cargo build`
/// itself, like the demo.
pub fn profile_args() -> Vec<String> {
    profile_args_for(&profile_dir())
}

/// `cargo build [profile args] <what>`.
fn build_command(dir: &Path, what: &str) -> String {
    let mut words = vec!["cargo".to_string(), "build".to_string()];
    words.extend(profile_args_for(dir));
    words.push(what.to_string());
    words.join(" ")
}

/// The path of the example `name` in the profile this executable was built
/// with, if cargo has built it.
pub fn find_example(name: &str) -> Result<PathBuf, NotBuilt> {
    let dir = profile_dir();
    let path = dir.join("examples").join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(NotBuilt {
            what: format!("the `{name}` example"),
            command: build_command(&dir, "--examples"),
            path,
        })
    }
}

/// The path of the example `name` built by `cargo test`.
///
/// # Panics
///
/// If it is not built, with the command that builds it.
pub fn example_binary(name: &str) -> PathBuf {
    find_example(name).unwrap_or_else(|e| panic!("{e}"))
}

/// Where the `shellflip` CLI (the binary of the `shellflip-control`
/// package) is, if cargo has built it in the profile this executable was
/// built with.
pub fn find_cli() -> Result<PathBuf, NotBuilt> {
    let dir = profile_dir();
    let path = dir.join("shellflip");
    if path.is_file() {
        Ok(path)
    } else {
        Err(NotBuilt {
            what: "the `shellflip` CLI".to_string(),
            command: build_command(&dir, "-p shellflip-control --bin shellflip"),
            path,
        })
    }
}

/// The path of the `shellflip` CLI, built by `cargo test --workspace`.
///
/// # Panics
///
/// If it is not built, with the command that builds it.
pub fn cli_binary() -> PathBuf {
    find_cli().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_the_profile() {
        let command = |dir: &str| build_command(Path::new(dir), "--examples");
        assert_eq!(command("/x/target/debug"), "cargo build --examples");
        assert_eq!(
            command("/x/target/release"),
            "cargo build --release --examples"
        );
        assert_eq!(
            command("/x/target/x86_64-unknown-linux-gnu/soak"),
            "cargo build --profile soak --examples"
        );
    }

    #[test]
    fn a_missing_example_says_how_to_build_it() {
        let e = find_example("no-such-example").unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("the `no-such-example` example"),
            "{message}"
        );
        assert!(
            message.contains("`cargo build") && message.contains(" --examples`"),
            "{message}"
        );
        assert!(message.contains("examples/no-such-example"), "{message}");
    }

    #[test]
    fn a_missing_cli_names_its_package() {
        // Next to this test's executable (target/<profile>/), where cargo
        // puts the CLI: whether it is there depends on what was built.
        if let Err(e) = find_cli() {
            let message = e.to_string();
            assert!(
                message.contains(" -p shellflip-control --bin shellflip`"),
                "{message}"
            );
        }
    }
}
