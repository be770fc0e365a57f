//! A service run the way a container runs it: PID 1 of a new PID namespace
//! (`unshare --pid --fork --kill-child --mount-proc`), bare or under an init
//! such as `tini --` or `dumb-init --`, sharing the host's network (as
//! Docker's host network does), so clients connect on the loopback.
//!
//! The pids the service prints are those of its namespace. Nothing here
//! ever signals such a pid from the host: [`Container`] signals only the
//! `unshare` it started and the namespace's PID 1 (its child), whose death
//! ends the namespace; other processes are found in `/proc` by their pid
//! namespace ([`NamespaceProcess`]).

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use shellflip::client::ControlClient;
use shellflip::control::Response;

use crate::process::{become_subreaper, kill_pid, spawn_retrying_busy};
use crate::proto::{parse_ready, Ready};
use crate::wait::EVENT_TIMEOUT;

/// Why the namespace tests cannot run here, if they cannot: not root, or
/// `unshare` missing.
pub fn cannot_unshare() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: unshare --pid needs CAP_SYS_ADMIN".to_owned());
    }
    if find_program("unshare").is_none() {
        return Some("no `unshare` on PATH (util-linux)".to_owned());
    }
    None
}

/// The path of `program` on `PATH`, if it is there.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A process of a PID namespace, seen from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceProcess {
    /// Its pid on the host.
    pub host_pid: u32,
    /// Its pid in the namespace.
    pub ns_pid: u32,
    /// Its name (`comm`).
    pub name: String,
    /// Its state letter (`Z` for a zombie).
    pub state: String,
}

/// The processes in the PID namespace of `host_pid` (a process of the
/// host's view, e.g. the namespace's PID 1).
pub fn namespace_processes(host_pid: u32) -> Vec<NamespaceProcess> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{host_pid}/ns/pid")) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            if std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()? != ns {
                return None;
            }
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| v.trim().to_owned())
            };
            let ns_pid = field("NSpid:")?.split_whitespace().last()?.parse().ok()?;
            let state = field("State:")?.chars().next()?.to_string();
            Some(NamespaceProcess {
                host_pid: pid,
                ns_pid,
                name: field("Name:")?,
                state,
            })
        })
        .collect()
}

/// The host pid of the namespace pid `ns_pid`, in the namespace of
/// `host_pid`.
pub fn host_pid_of(host_pid: u32, ns_pid: u32) -> Option<u32> {
    namespace_processes(host_pid)
        .into_iter()
        .find(|p| p.ns_pid == ns_pid)
        .map(|p| p.host_pid)
}

/// A service running as PID 1 of a PID namespace (or as the child of an
/// init that is), started from a copy of its binary in a temp dir.
#[derive(Debug)]
pub struct Container {
    /// The temp dir with the binary's copy and the control socket.
    pub dir: tempfile::TempDir,
    /// The control socket, `dir/control.sock`.
    pub control: PathBuf,
    /// The TCP address the service listens on.
    pub addr: SocketAddr,
    /// The generation whose ready line came last (namespace pids).
    pub current: Ready,
    ready_rx: mpsc::Receiver<Ready>,
    stderr: Arc<Mutex<String>>,
    unshare: Option<Child>,
    /// The namespace's PID 1, as the host sees it.
    pub init_host_pid: u32,
}

impl Container {
    /// Starts `binary` (taking the echo example's `--listen` and
    /// `--control`) in a new PID namespace, behind `init` (`&[]` for none:
    /// the service is PID 1; `&["tini", "--"]`...), with `env`, and waits
    /// for its first generation.
    ///
    /// # Panics
    ///
    /// If it cannot be started or is not ready within [`EVENT_TIMEOUT`].
    pub fn start(binary: &Path, init: &[&str], env: &[(&str, &str)]) -> Container {
        become_subreaper();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("create a temp dir: {e}"));
        let name = binary.file_name().unwrap_or_else(|| panic!("no file name"));
        let exe = dir.path().join(name);
        crate::process::copy_executable(binary, &exe)
            .unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
        let control = dir.path().join("control.sock");
        let mut args: Vec<OsString> = ["--pid", "--fork", "--kill-child", "--mount-proc"]
            .iter()
            .map(OsString::from)
            .collect();
        args.extend(init.iter().map(OsString::from));
        args.push(exe.clone().into_os_string());
        args.extend(["--listen".into(), "127.0.0.1:0".into(), "--control".into()]);
        args.push(control.clone().into_os_string());
        let mut cmd = Command::new("unshare");
        cmd.args(&args)
            .env("RUST_LOG", "shellflip_runtime=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = spawn_retrying_busy(&mut cmd);
        let (Some(stdout), Some(stderr_pipe)) = (child.stdout.take(), child.stderr.take()) else {
            panic!("unshare's stdout and stderr are piped");
        };
        let (tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(ready) = parse_ready(&line) {
                    if tx.send(ready).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let writer = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr_pipe);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                writer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&line);
                line.clear();
            }
        });
        let unshare_pid = child.id();
        let mut container = Container {
            dir,
            control,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            current: Ready {
                pid: 0,
                generation: 0,
                listen: None,
                udp: None,
                metrics: None,
            },
            ready_rx,
            stderr,
            unshare: Some(child),
            init_host_pid: 0,
        };
        let first = container.next_ready();
        container.addr = first
            .listen
            .unwrap_or_else(|| panic!("the first ready line has no listen="));
        container.init_host_pid = crate::process::children_of(unshare_pid)
            .first()
            .map(|(pid, _, _)| *pid)
            .unwrap_or_else(|| panic!("unshare (pid {unshare_pid}) has no child"));
        container
    }

    /// Waits for the next ready line.
    ///
    /// # Panics
    ///
    /// If none comes within [`EVENT_TIMEOUT`].
    pub fn next_ready(&mut self) -> Ready {
        let ready = self
            .ready_rx
            .recv_timeout(EVENT_TIMEOUT)
            .unwrap_or_else(|_| panic!("no ready line; stderr:\n{}", self.stderr()));
        self.current = ready;
        ready
    }

    /// What the service wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Restarts through the control socket; returns the new generation's
    /// namespace pid once it printed its ready line.
    ///
    /// # Panics
    ///
    /// If the restart fails.
    pub fn restart(&mut self) -> u32 {
        match ControlClient::restart(&self.control) {
            Ok(Response::Restarted(success)) => {
                let ready = self.next_ready();
                assert_eq!(ready.pid, success.pid, "{}", self.stderr());
                success.pid
            }
            other => panic!("restart: {other:?}\n{}", self.stderr()),
        }
    }

    /// The processes of the namespace (PID 1 first, if alive).
    pub fn processes(&self) -> Vec<NamespaceProcess> {
        let mut processes = namespace_processes(self.init_host_pid);
        processes.sort_by_key(|p| p.ns_pid);
        processes
    }

    /// The host pid of the namespace pid `ns_pid`.
    pub fn host_pid(&self, ns_pid: u32) -> Option<u32> {
        host_pid_of(self.init_host_pid, ns_pid)
    }

    /// Waits until the namespace's processes are exactly `names` (by name,
    /// in namespace-pid order), none of them a zombie.
    ///
    /// # Panics
    ///
    /// If that does not happen within `timeout`.
    pub fn wait_processes(&self, what: &str, timeout: Duration, names: &[&str]) {
        let deadline = Instant::now() + timeout;
        loop {
            let processes = self.processes();
            let seen: Vec<&str> = processes.iter().map(|p| p.name.as_str()).collect();
            let zombies = processes.iter().any(|p| p.state == "Z");
            if seen == names && !zombies {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: the namespace holds {processes:?}, expected {names:?} and no zombie\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the namespace's PID 1 (what `docker stop` and
    /// `docker kill` do).
    pub fn signal_init(&self, signal: Signal) {
        kill_pid(self.init_host_pid, signal);
    }

    /// Waits for the container to end; its exit status (that of its
    /// PID 1, which `unshare` passes on).
    ///
    /// # Panics
    ///
    /// If it does not end within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self
            .unshare
            .take()
            .unwrap_or_else(|| panic!("already waited for"));
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the container did not end within {timeout:?}\n{}",
                        self.stderr()
                    );
                }
                Err(e) => panic!("wait for unshare: {e}"),
            }
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.unshare.take() {
            // `--kill-child`: the namespace's PID 1 dies with unshare, and
            // the whole namespace with it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
