//! One service under test and all its generations.
//!
//! [`Echo`] starts a service from a private copy of its binary in a temp
//! dir (so that a test can put another build at that path, as a deploy
//! would), follows its generations through the `ready ...` line each one
//! prints, collects its stderr, and kills and reaps every generation it saw
//! when dropped — and whatever else of the service still runs, found by
//! the marker it was started with ([`Census`]). The calling process becomes a child subreaper, so every
//! generation becomes its child once the generation before it and that
//! one's spawner (the new generation's parent) have exited, and is reaped
//! here; so are the spawners.
//!
//! It serves the echo example and every service speaking the same lines
//! ([`crate::proto`]): the faulty, stateful, HTTP, Unix + UDP and
//! locked-down examples.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::binaries::example_binary;
use crate::census::Census;
use crate::client::{exchange, ExchangeError};
use crate::process::{
    become_subreaper, is_alive, reap_exited_spawners, spawn_retrying_busy, spawner_of, wait_exit,
};
use crate::proto::{parse_ready, Greeting, Ready};
use crate::wait::EVENT_TIMEOUT;

/// One running service and all its generations.
#[derive(Debug)]
pub struct Echo {
    /// The temp dir holding the binary's copy and the control socket;
    /// removed on drop.
    pub dir: tempfile::TempDir,
    /// The copy of the binary the service runs from: its executable path.
    pub exe: PathBuf,
    /// The control socket, `dir/control.sock`.
    pub control: PathBuf,
    /// The TCP address of the first generation's `listen=` (all generations
    /// share the listener), or `127.0.0.1:0` for a service without one.
    pub addr: SocketAddr,
    ready_rx: mpsc::Receiver<Ready>,
    init_rx: mpsc::Receiver<u32>,
    /// Everything the generations wrote on stderr so far.
    pub stderr: Arc<Mutex<String>>,
    pids: Arc<Mutex<Vec<u32>>>,
    ready_at: Arc<Mutex<HashMap<u32, Instant>>>,
    first: Option<Child>,
    /// The generation whose ready line came last.
    pub current: Ready,
    /// Every process of the service (generations, spawners, a wrapper
    /// script), found by the marker the service was started with.
    pub census: Census,
}

/// Locks `m`, even if a reader thread panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Echo {
    /// Starts the echo example on 127.0.0.1:0 with a control socket in a
    /// temp dir, with `env` added to its environment, and waits for its
    /// first generation to be ready.
    ///
    /// # Panics
    ///
    /// Like [`Echo::start_prepared`], and if the example is not built.
    pub fn start(env: &[(&str, &str)]) -> Echo {
        Self::start_with_binary(&example_binary("echo"), env)
    }

    /// [`Echo::start`] with another binary taking the echo example's
    /// arguments (`--listen ADDR --control PATH`).
    pub fn start_with_binary(binary: &Path, env: &[(&str, &str)]) -> Echo {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("create a temp dir: {e}"));
        let control = dir.path().join("control.sock");
        let mut args: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
        args.extend(["--control".into(), control.into_os_string()]);
        Self::start_in(dir, binary, &args, env)
    }

    /// Starts a copy of `binary` placed in `dir` with `args`; the service
    /// must use `dir/control.sock` as its control socket and print a
    /// `ready pid=.. generation=..` line at each generation's readiness.
    pub fn start_in(
        dir: tempfile::TempDir,
        binary: &Path,
        args: &[OsString],
        env: &[(&str, &str)],
    ) -> Echo {
        Self::start_prepared(dir, binary, args, env, |_, _| {})
    }

    /// [`Echo::start_in`], with `prepare` adjusting the command (which runs
    /// the copy of `binary` with `args` and `env`) before it is spawned: it
    /// gets the command and the path of the copy, and may replace the
    /// command with a wrapper that execs the copy, as long as the wrapper
    /// keeps stdout and stderr piped.
    ///
    /// The service runs with `RUST_LOG=shellflip_runtime=debug,info`
    /// (unless `env` says otherwise), so that its stderr explains a failure.
    ///
    /// # Panics
    ///
    /// If the binary cannot be copied or started, or no generation is ready
    /// within [`EVENT_TIMEOUT`] (with the service's stderr).
    pub fn start_prepared(
        dir: tempfile::TempDir,
        binary: &Path,
        args: &[OsString],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command, &Path),
    ) -> Echo {
        become_subreaper();
        let name = binary
            .file_name()
            .unwrap_or_else(|| panic!("{} has no file name", binary.display()));
        let exe = dir.path().join(name);
        crate::process::copy_executable(binary, &exe)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", binary.display(), exe.display()));
        let control = dir.path().join("control.sock");
        let census = Census::new();
        let (marker_var, marker) = census.env();
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("RUST_LOG", "shellflip_runtime=debug,info")
            .env(marker_var, marker)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        prepare(&mut cmd, &exe);
        let mut child = spawn_retrying_busy(&mut cmd);
        let (Some(stdout), Some(stderr_pipe)) = (child.stdout.take(), child.stderr.take()) else {
            panic!(
                "the command of {} must keep stdout and stderr piped",
                exe.display()
            );
        };
        let (tx, ready_rx) = mpsc::channel();
        let (init_tx, init_rx) = mpsc::channel();
        let pids = Arc::new(Mutex::new(vec![child.id()]));
        let pids_reader = Arc::clone(&pids);
        let ready_at = Arc::new(Mutex::new(HashMap::new()));
        let ready_at_reader = Arc::clone(&ready_at);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(pid) = line.strip_prefix("init pid=").and_then(|p| p.parse().ok()) {
                    let _ = init_tx.send(pid);
                }
                if let Some(ready) = parse_ready(&line) {
                    lock(&ready_at_reader).insert(ready.pid, Instant::now());
                    lock(&pids_reader).push(ready.pid);
                    if tx.send(ready).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_writer = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                lock(&stderr_writer).push_str(&line);
                line.clear();
            }
        });
        let first = ready_rx.recv_timeout(EVENT_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "{} did not become ready; stderr:\n{}",
                exe.display(),
                lock(&stderr)
            )
        });
        Echo {
            dir,
            exe,
            control,
            addr: first
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            ready_rx,
            init_rx,
            stderr,
            pids,
            ready_at,
            first: Some(child),
            current: first,
            census,
        }
    }

    /// Waits for the next generation's ready line, which becomes
    /// [`Echo::current`].
    ///
    /// # Panics
    ///
    /// If none comes within [`EVENT_TIMEOUT`] (with the stderr).
    pub fn next_ready(&mut self) -> Ready {
        let ready = self
            .ready_rx
            .recv_timeout(EVENT_TIMEOUT)
            .unwrap_or_else(|_| {
                panic!("no new generation became ready; stderr:\n{}", self.stderr())
            });
        self.current = ready;
        ready
    }

    /// The next generation's ready line if one came already, which then
    /// becomes [`Echo::current`]; never waits.
    pub fn try_next_ready(&mut self) -> Option<Ready> {
        let ready = self.ready_rx.try_recv().ok()?;
        self.current = ready;
        Some(ready)
    }

    /// When the ready line of the generation `pid` was read (an upper
    /// bound of when it reported READY: it prints the line once `ready()`
    /// returned).
    pub fn ready_seen_at(&self, pid: u32) -> Option<Instant> {
        lock(&self.ready_at).get(&pid).copied()
    }

    /// The service's own sockets: its TCP port (none for a service
    /// without `listen=`) and its control socket.
    fn own_sockets(&self) -> (Option<SocketAddr>, PathBuf) {
        let tcp = (self.addr.port() != 0).then_some(self.addr);
        (tcp, self.control.clone())
    }

    /// Asserts that the service is over *now*: no process of it is alive
    /// (generations, spawners), its port refuses connections, and its
    /// control socket and each of `unix` are gone or refuse.
    ///
    /// # Panics
    ///
    /// If not, naming `what` and what is left, with the stderr.
    #[track_caller]
    pub fn assert_ended(&self, what: &str, unix: &[&Path]) {
        let (tcp, control) = self.own_sockets();
        let mut sockets = vec![control.as_path()];
        sockets.extend_from_slice(unix);
        if let Err(problem) = crate::ended::check_ended(&self.census, tcp, &sockets) {
            panic!("{what}: {problem}; stderr:\n{}", self.stderr());
        }
    }

    /// Waits up to `bound` for every process of the service to exit, then
    /// [`Echo::assert_ended`].
    ///
    /// # Panics
    ///
    /// If a process of the service is still alive at `bound`, or a socket
    /// still answers.
    #[track_caller]
    pub fn assert_ended_within(&self, what: &str, bound: Duration, unix: &[&Path]) {
        let (tcp, control) = self.own_sockets();
        let mut sockets = vec![control.as_path()];
        sockets.extend_from_slice(unix);
        if let Err(problem) = crate::ended::wait_ended(&self.census, bound, tcp, &sockets) {
            panic!("{what}: {problem}; stderr:\n{}", self.stderr());
        }
    }

    /// Waits for an `init pid=<pid>` line (printed by services that
    /// announce the start of their main, like the faulty example) from a
    /// process other than `except`.
    ///
    /// # Panics
    ///
    /// If none comes within [`EVENT_TIMEOUT`].
    pub fn next_init(&self, except: u32) -> u32 {
        loop {
            let pid = self
                .init_rx
                .recv_timeout(EVENT_TIMEOUT)
                .unwrap_or_else(|_| panic!("no init line from a new generation"));
            if pid != except {
                return pid;
            }
        }
    }

    /// Everything the generations wrote on stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// One echo exchange with [`Echo::addr`]: greeting, a line, its echo.
    pub fn exchange(&self) -> Result<Greeting, ExchangeError> {
        exchange(self.addr, "ping")
    }

    /// Runs the CLI at `cli` with `command`, the control socket path and
    /// `extra`.
    ///
    /// # Panics
    ///
    /// If the CLI cannot be run.
    pub fn cli(&self, cli: &Path, command: &str, extra: &[&str]) -> Output {
        Command::new(cli)
            .arg(command)
            .arg(&self.control)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", cli.display()))
    }

    /// Replaces the executable at the service's path (atomically, as a
    /// deploy would) with a shell script.
    ///
    /// # Panics
    ///
    /// If the temp dir cannot be written.
    pub fn replace_with_script(&self, script: &str) {
        let tmp = self.dir.path().join("echo.new");
        let deploy = || -> std::io::Result<()> {
            std::fs::write(&tmp, script)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&tmp, &self.exe)
        };
        deploy().unwrap_or_else(|e| panic!("put a script at {}: {e}", self.exe.display()));
    }

    /// Puts a copy of `binary` at the service's path (atomically).
    ///
    /// # Panics
    ///
    /// If the copy fails.
    pub fn replace_with_binary(&self, binary: &Path) {
        let tmp = self.dir.path().join("echo.new");
        let deploy = || -> std::io::Result<()> {
            crate::process::copy_executable(binary, &tmp)?;
            std::fs::rename(&tmp, &self.exe)
        };
        deploy().unwrap_or_else(|e| {
            panic!(
                "put a copy of {} at {}: {e}",
                binary.display(),
                self.exe.display()
            )
        });
    }

    /// Waits for the first generation (a direct child) to exit; its exit
    /// code (`None` if killed by a signal, not exited in time, or already
    /// waited for).
    pub fn wait_first_exit_status(&mut self) -> Option<i32> {
        let first = self.first.take()?;
        let pid = Pid::from_raw(first.id() as i32);
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return Some(code),
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return None,
            }
        }
    }

    /// Waits for the first generation (a direct child) to exit. True if it
    /// did within [`EVENT_TIMEOUT`] (or was already waited for).
    pub fn wait_first_exit(&mut self) -> bool {
        let Some(first) = self.first.take() else {
            return true;
        };
        wait_exit(first.id(), EVENT_TIMEOUT)
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Only processes this harness started (the first generation and
        // the generations it spawned), by pid.
        // Their spawners exit by themselves when their generation is gone.
        let pids = lock(&self.pids).clone();
        let spawners: Vec<u32> = pids.iter().filter_map(|&pid| spawner_of(pid)).collect();
        for pid in pids {
            if is_alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            wait_exit(pid, Duration::from_secs(5));
        }
        for spawner in spawners {
            wait_exit(spawner, Duration::from_secs(5));
        }
        // Whatever else of the service still runs (a generation that
        // never printed its ready line, one re-parented away from here),
        // found by its marker.
        self.census.kill_all();
        reap_exited_spawners();
    }
}

/// Starts the faulty example (the echo protocol, with faults to inject) in
/// a temp dir, with `extra` arguments and `env`.
///
/// # Panics
///
/// Like [`Echo::start_in`].
pub fn start_faulty(extra: &[&str], env: &[(&str, &str)]) -> Echo {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("create a temp dir: {e}"));
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Echo::start_in(dir, &example_binary("faulty"), &args, env)
}

/// Puts a "bad build" at the service's executable path: the faulty binary
/// started with `--fault <fault>`.
///
/// # Panics
///
/// If the faulty example is not built or cannot be copied.
pub fn deploy_fault(service: &Echo, fault: &str) {
    let real = service.dir.path().join("faulty.real");
    if !real.exists() {
        let faulty = example_binary("faulty");
        crate::process::copy_executable(&faulty, &real)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", faulty.display(), real.display()));
    }
    service.replace_with_script(&format!(
        "#!/bin/sh\nexec \"{}\" \"$@\" --fault {fault}\n",
        real.display()
    ));
}
