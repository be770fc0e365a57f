//! What a run needs, built before it starts: the root workspace's echo,
//! HTTP and sessions examples and its CLI (`shellflip`), and this
//! workspace's services and restart commands (`src/bin/`),
//! in release, by cargo itself, so that one command runs the benchmark
//! from a fresh clone and never measures a stale build. For what is
//! fresh, cargo only checks.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The benchmark's services and restart commands in this workspace, by
/// binary name.
const SERVICES: [&str; 8] = [
    "peer_cf_shellflip",
    "peer_ecdysis",
    "bare_echo",
    "state_service",
    "http_plain_axum",
    "ours_pid",
    "trigger_cf_shellflip",
    "trigger_ecdysis",
];

/// The executables a run starts.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The echo example: "ours".
    pub echo: PathBuf,
    /// The same service on crates.io shellflip 2.1.
    pub peer_cf_shellflip: PathBuf,
    /// The same service on ecdysis 1.1.
    pub peer_ecdysis: PathBuf,
    /// The same accept loop on a bare tokio listener.
    pub bare_echo: PathBuf,
    /// Ours, handing over a state of `--state-mb` MB.
    pub state_service: PathBuf,
    /// The HTTP example: `shellflip::http::serve`.
    pub http_example: PathBuf,
    /// The same axum service on `axum::serve(..).with_graceful_shutdown(..)`.
    pub http_plain_axum: PathBuf,
    /// The sessions example: live connections handed over.
    pub sessions: PathBuf,
    /// The root workspace's CLI (package `shellflip-control`): `shellflip restart SOCKET`.
    pub cli: PathBuf,
    /// Ours serving the pid protocol (`shellflip::run`, `--flavor`).
    pub ours_pid: PathBuf,
    /// crates.io shellflip's restart command: `request_restart`.
    pub trigger_cf_shellflip: PathBuf,
    /// ecdysis' restart command: connect to the upgrade socket, wait for
    /// its close.
    pub trigger_ecdysis: PathBuf,
}

/// The cargo that runs this binary (`cargo run` sets `CARGO`), or the one
/// on `PATH`.
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `cargo build --release` of `targets` in the workspace of
/// `manifest`, its messages on stderr, and returns the executables cargo
/// reports, by target name.
fn cargo_build(manifest: &Path, targets: &[&str]) -> Result<HashMap<String, PathBuf>, String> {
    let mut cmd = Command::new(cargo());
    cmd.args([
        "build",
        "--release",
        "--message-format=json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(manifest)
    .args(targets)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    let shown = format!(
        "cargo build --release --manifest-path {} {}",
        manifest.display(),
        targets.join(" ")
    );
    eprintln!("building: {shown}");
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("could not run cargo ({shown}): {e}"))?;
    let mut built = HashMap::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading the output of {shown}: {e}"))?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] != "compiler-artifact" {
                continue;
            }
            if let (Some(name), Some(exe)) = (
                message["target"]["name"].as_str(),
                message["executable"].as_str(),
            ) {
                built.insert(name.to_string(), PathBuf::from(exe));
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {shown}: {e}"))?;
    if !status.success() {
        return Err(format!("{shown} failed ({status})"));
    }
    Ok(built)
}

fn take(built: &mut HashMap<String, PathBuf>, name: &str) -> Result<PathBuf, String> {
    built
        .remove(name)
        .ok_or_else(|| format!("cargo did not report building `{name}`"))
}

/// The binaries of a run: `echo` and the services in `bin_dir` as they are
/// if given, the others built (or found fresh) by cargo.
pub fn binaries(echo: Option<PathBuf>, bin_dir: Option<PathBuf>) -> Result<Binaries, String> {
    // bench/, and the repository's root above it.
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = bench.parent().unwrap_or(bench);
    // The examples are the `shellflip` package's, the CLI is the
    // `shellflip-control` package's.
    let targets: &[&str] = match echo {
        Some(_) => &[
            "-p",
            "shellflip-tokio",
            "-p",
            "shellflip-control",
            "--example",
            "http",
            "--example",
            "sessions",
            "--bin",
            "shellflip",
        ],
        None => &[
            "-p",
            "shellflip-tokio",
            "-p",
            "shellflip-control",
            "--example",
            "echo",
            "--example",
            "http",
            "--example",
            "sessions",
            "--bin",
            "shellflip",
        ],
    };
    let mut examples = cargo_build(&root.join("Cargo.toml"), targets)?;
    let echo = match echo {
        Some(path) => path,
        None => take(&mut examples, "echo")?,
    };
    let http_example = take(&mut examples, "http")?;
    let sessions = take(&mut examples, "sessions")?;
    let cli = take(&mut examples, "shellflip")?;
    let mut services = match bin_dir {
        Some(dir) => SERVICES
            .iter()
            .map(|name| (name.to_string(), dir.join(name)))
            .collect(),
        None => {
            let args: Vec<&str> = SERVICES.iter().flat_map(|name| ["--bin", name]).collect();
            cargo_build(&bench.join("Cargo.toml"), &args)?
        }
    };
    let binaries = Binaries {
        echo,
        peer_cf_shellflip: take(&mut services, "peer_cf_shellflip")?,
        peer_ecdysis: take(&mut services, "peer_ecdysis")?,
        bare_echo: take(&mut services, "bare_echo")?,
        state_service: take(&mut services, "state_service")?,
        http_example,
        http_plain_axum: take(&mut services, "http_plain_axum")?,
        sessions,
        cli,
        ours_pid: take(&mut services, "ours_pid")?,
        trigger_cf_shellflip: take(&mut services, "trigger_cf_shellflip")?,
        trigger_ecdysis: take(&mut services, "trigger_ecdysis")?,
    };
    for path in [
        &binaries.echo,
        &binaries.peer_cf_shellflip,
        &binaries.peer_ecdysis,
        &binaries.bare_echo,
        &binaries.state_service,
        &binaries.http_example,
        &binaries.http_plain_axum,
        &binaries.sessions,
        &binaries.cli,
        &binaries.ours_pid,
        &binaries.trigger_cf_shellflip,
        &binaries.trigger_ecdysis,
    ] {
        if !path.is_file() {
            return Err(format!("{} does not exist", path.display()));
        }
    }
    Ok(binaries)
}
