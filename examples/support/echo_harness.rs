//! A harness around the echo example, shared by the demo and the
//! end-to-end tests: start it from a private copy of its binary, follow its
//! generations through the `ready ...` line each prints, reap them, and
//! drive clients speaking its protocol.
//!
//! Synchronisation is on events: a `ready` line on the pipe, a socket
//! answering, a process being reaped. The calling process becomes a child
//! subreaper, so every generation becomes its child once the generation
//! before it and that one's spawner (the new generation's parent) have
//! exited, and is reaped here; so do the spawners.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Generous bound for anything that should take milliseconds.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of an example binary built by `cargo test` (examples are built with
/// the tests), building it if needed.
pub fn example_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test> or target/<profile>/examples/<demo>
    let exe = std::env::current_exe().expect("own binary path");
    let parent = exe.parent().expect("binary directory");
    let profile_dir = if parent.ends_with("examples") || parent.ends_with("deps") {
        parent.parent().expect("target/<profile>")
    } else {
        parent
    };
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", name]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building example {name} failed");
    }
    path
}

/// Makes this process the reaper of orphaned generations.
pub fn become_subreaper() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// Waits until `pid` has exited and reaps it. True if it exited in time.
pub fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let pid = Pid::from_raw(pid as i32);
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return true,
            Err(nix::errno::Errno::ECHILD) => {
                // Not (yet) our child: its parent (the previous generation's
                // spawner) is still alive, or it was reaped already.
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    return true;
                }
            }
            Err(e) => panic!("waitpid {pid}: {e}"),
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Spawns `cmd`, retrying while the kernel says the executable is busy: a
/// freshly copied binary is briefly held open for writing by any process
/// another thread forks meanwhile (ETXTBSY).
pub fn spawn_retrying_busy(cmd: &mut Command) -> Child {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// Name, state and parent of a process, from `/proc/<pid>/stat`.
fn stat_of(pid: u32) -> Option<(String, String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.to_owned();
    let ppid = fields.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

fn all_pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// The parent of `pid`, if it exists.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_of(pid).map(|(_, _, ppid)| ppid)
}

/// Children of `pid`: (pid, name, state).
pub fn children_of(pid: u32) -> Vec<(u32, String, String)> {
    all_pids()
        .into_iter()
        .filter_map(|child| {
            let (comm, state, ppid) = stat_of(child)?;
            (ppid == pid).then_some((child, comm, state))
        })
        .collect()
}

/// The process name shellflip gives the spawner it forks at start-up.
pub const SPAWNER_NAME: &str = "shellflip-spawn";

/// The spawner of the generation `pid` (its child named `shellflip-spawn`).
pub fn spawner_of(pid: u32) -> Option<u32> {
    children_of(pid)
        .into_iter()
        .find(|(_, comm, state)| comm == SPAWNER_NAME && state != "Z")
        .map(|(child, _, _)| child)
}

/// Zombies among the descendants of `pid` (children not reaped by their
/// parent): the generation's own children, and those of its spawner.
pub fn zombies_of(pid: u32) -> Vec<u32> {
    let mut zombies = Vec::new();
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        for (child, _, state) in children_of(parent) {
            if state == "Z" {
                zombies.push(child);
            } else {
                parents.push(child);
            }
        }
    }
    zombies
}

/// Reaps the spawners that ended up as this process's children (it is a
/// subreaper: a spawner outlives its generation by a moment) and exited.
pub fn reap_exited_spawners() {
    let me = std::process::id();
    for (child, comm, state) in children_of(me) {
        if comm == SPAWNER_NAME && state == "Z" {
            let _ = waitpid(Pid::from_raw(child as i32), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// True if `pid` is alive (not a zombie).
pub fn is_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// One running echo service and all its generations.
pub struct Echo {
    pub dir: tempfile::TempDir,
    pub exe: PathBuf,
    pub control: PathBuf,
    pub addr: SocketAddr,
    ready_rx: mpsc::Receiver<Ready>,
    init_rx: mpsc::Receiver<u32>,
    pub stderr: Arc<Mutex<String>>,
    pids: Arc<Mutex<Vec<u32>>>,
    first: Option<Child>,
    pub current: Ready,
}

impl Echo {
    /// Starts the echo example on 127.0.0.1:0 with a control socket in a
    /// temp dir, and waits for its first generation to be ready.
    pub fn start(env: &[(&str, &str)]) -> Echo {
        Self::start_with_binary(&example_binary("echo"), env)
    }

    pub fn start_with_binary(binary: &Path, env: &[(&str, &str)]) -> Echo {
        let dir = tempfile::tempdir().expect("temp dir");
        let control = dir.path().join("control.sock");
        let mut args: Vec<std::ffi::OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
        args.extend(["--control".into(), control.into_os_string()]);
        Self::start_in(dir, binary, &args, env)
    }

    /// Starts a copy of `binary` placed in `dir` with `args`; the service
    /// must use `dir/control.sock` as its control socket and print a
    /// `ready pid=.. generation=..` line at each generation's readiness.
    pub fn start_in(
        dir: tempfile::TempDir,
        binary: &Path,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
    ) -> Echo {
        Self::start_prepared(dir, binary, args, env, |_, _| {})
    }

    /// [`Echo::start_in`], with `prepare` adjusting the command (which runs
    /// the copy of `binary` with `args` and `env`) before it is spawned: it
    /// gets the command and the path of the copy, and may replace the
    /// command with a wrapper that execs the copy, as long as the wrapper
    /// keeps stdout and stderr piped.
    pub fn start_prepared(
        dir: tempfile::TempDir,
        binary: &Path,
        args: &[std::ffi::OsString],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command, &Path),
    ) -> Echo {
        become_subreaper();
        let exe = dir.path().join(binary.file_name().expect("binary name"));
        std::fs::copy(binary, &exe).expect("copy the service binary");
        let control = dir.path().join("control.sock");
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("RUST_LOG", "shellflip_runtime=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        prepare(&mut cmd, &exe);
        let mut child = spawn_retrying_busy(&mut cmd);
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let (tx, ready_rx) = mpsc::channel();
        let (init_tx, init_rx) = mpsc::channel();
        let pids = Arc::new(Mutex::new(vec![child.id()]));
        let pids_reader = Arc::clone(&pids);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(pid) = line.strip_prefix("init pid=").and_then(|p| p.parse().ok()) {
                    let _ = init_tx.send(pid);
                }
                if let Some(ready) = parse_ready(&line) {
                    pids_reader.lock().unwrap().push(ready.pid);
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
                stderr_writer.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let first = ready_rx.recv_timeout(EVENT_TIMEOUT).unwrap_or_else(|_| {
            panic!(
                "echo did not become ready; stderr:\n{}",
                stderr.lock().unwrap()
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
            first: Some(child),
            current: first,
        }
    }

    /// Waits for the next generation's ready line.
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

    /// Waits for an `init pid=<pid>` line (printed by services that
    /// announce the start of their main, like the faulty example) from a
    /// process other than `except`.
    pub fn next_init(&self, except: u32) -> u32 {
        loop {
            let pid = self
                .init_rx
                .recv_timeout(EVENT_TIMEOUT)
                .expect("an init line from a new generation");
            if pid != except {
                return pid;
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One echo exchange: greeting, a line, its echo.
    pub fn exchange(&self) -> std::io::Result<Greeting> {
        exchange(self.addr, "ping")
    }

    /// Runs the CLI at `cli` with `command`, the control socket path and
    /// `extra`.
    pub fn cli(&self, cli: &Path, command: &str, extra: &[&str]) -> Output {
        Command::new(cli)
            .arg(command)
            .arg(&self.control)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run the shellflip CLI")
    }

    /// Replaces the executable at the service's path (atomically, as a
    /// deploy would) with a shell script.
    pub fn replace_with_script(&self, script: &str) {
        let tmp = self.dir.path().join("echo.new");
        std::fs::write(&tmp, script).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &self.exe).unwrap();
    }

    /// Puts a copy of `binary` at the service's path.
    pub fn replace_with_binary(&self, binary: &Path) {
        let tmp = self.dir.path().join("echo.new");
        std::fs::copy(binary, &tmp).unwrap();
        std::fs::rename(&tmp, &self.exe).unwrap();
    }

    /// Waits for the first generation (a direct child) to exit; its exit
    /// code (`None` if killed by a signal or not exited in time).
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

    /// Waits for the first generation (a direct child) to exit.
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
        let pids = self.pids.lock().map(|p| p.clone()).unwrap_or_default();
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
        reap_exited_spawners();
    }
}

/// Waits until `condition` holds, checking every few milliseconds.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// A `ready pid=.. generation=.. listen=..` line of the echo example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub pid: u32,
    pub generation: u64,
    /// `listen=` (TCP services).
    pub listen: Option<SocketAddr>,
    /// `udp=` (the Unix + UDP example).
    pub udp: Option<SocketAddr>,
}

/// The greeting of one echo connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    pub pid: u32,
    pub generation: u64,
    pub served: u64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

pub fn parse_greeting(line: &str) -> Option<Greeting> {
    Some(Greeting {
        pid: field(line, "pid")?.parse().ok()?,
        generation: field(line, "generation")?.parse().ok()?,
        served: field(line, "served")?.parse().ok()?,
    })
}

pub fn parse_ready(line: &str) -> Option<Ready> {
    if !line.starts_with("ready ") {
        return None;
    }
    Some(Ready {
        pid: field(line, "pid")?.parse().ok()?,
        generation: field(line, "generation")?.parse().ok()?,
        listen: field(line, "listen").and_then(|v| v.parse().ok()),
        udp: field(line, "udp").and_then(|v| v.parse().ok()),
    })
}

/// Connects, reads the greeting, echoes one line, closes.
pub fn exchange(addr: SocketAddr, line: &str) -> std::io::Result<Greeting> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    stream.set_write_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    let parsed = parse_greeting(&greeting).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad greeting {greeting:?}"),
        )
    })?;
    let mut writer = stream;
    writer.write_all(format!("{line}\n").as_bytes())?;
    let mut echoed = String::new();
    reader.read_line(&mut echoed)?;
    if echoed.trim_end() != line {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("echoed {echoed:?} instead of {line:?}"),
        ));
    }
    writer.shutdown(std::net::Shutdown::Write)?;
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest)?;
    Ok(parsed)
}

/// Concurrent clients looping on [`exchange`] until stopped (bounded by
/// `max_per_client` exchanges and `max_time`).
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<ClientReport>>,
    pub seen: Arc<Mutex<Vec<Greeting>>>,
}

#[derive(Debug, Default)]
pub struct ClientReport {
    pub ok: u64,
    pub failures: Vec<String>,
}

impl ClientReport {
    /// Panics, listing the first failures and `context` (a service's
    /// stderr, say), if any exchange failed.
    pub fn assert_no_failures(&self, context: &str) {
        assert!(
            self.failures.is_empty(),
            "{} failed exchanges of {}: {:?}\n{context}",
            self.failures.len(),
            self.ok + self.failures.len() as u64,
            &self.failures[..self.failures.len().min(10)],
        );
    }
}

impl Load {
    pub fn start(
        addr: SocketAddr,
        clients: usize,
        max_per_client: u64,
        max_time: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|i| {
                let stop = Arc::clone(&stop);
                let seen = Arc::clone(&seen);
                std::thread::spawn(move || {
                    let deadline = Instant::now() + max_time;
                    let mut report = ClientReport::default();
                    for n in 0..max_per_client {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            break;
                        }
                        match exchange(addr, &format!("client {i} exchange {n}")) {
                            Ok(greeting) => {
                                report.ok += 1;
                                seen.lock().unwrap().push(greeting);
                            }
                            Err(e) => report
                                .failures
                                .push(format!("client {i} exchange {n}: {e}")),
                        }
                    }
                    report
                })
            })
            .collect();
        Load {
            stop,
            threads,
            seen,
        }
    }

    /// The largest `served` any client has seen so far.
    pub fn max_served(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|g| g.served)
            .max()
            .unwrap_or(0)
    }

    /// The largest `served` seen from `pid`.
    pub fn max_served_by(&self, pid: u32) -> u64 {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|g| g.pid == pid)
            .map(|g| g.served)
            .max()
            .unwrap_or(0)
    }

    /// Greetings seen from `pid`.
    pub fn count_from(&self, pid: u32) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.pid == pid)
            .count()
    }

    pub fn stop(self) -> ClientReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = ClientReport::default();
        for t in self.threads {
            let r = t.join().expect("client thread");
            total.ok += r.ok;
            total.failures.extend(r.failures);
        }
        total
    }
}
