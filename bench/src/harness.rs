//! Starting, following and reaping the benchmarked services.
//!
//! The driver is a child subreaper: every generation of every service ends
//! up as its child once the generation before it has exited, and one
//! reaper thread waits for them all (`waitpid(-1)`), recording when each
//! pid exited. Only processes this driver started are ever signalled, by
//! pid. The ready lines and the `/proc` readers are the test kit's.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use shellflip_testkit::process::{is_alive, spawner_of};
use shellflip_testkit::proto::{parse_ready, Ready};

/// Microseconds since the driver started: the one time base of a run.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }
    pub fn now(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
    /// `now()` and the Unix time in µs, read together: what relates this
    /// clock to times other processes write (the runtime's profile).
    pub fn now_with_unix(&self) -> (u64, u64) {
        let now = self.now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (now, unix)
    }
}

/// One exit recorded by the reaper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its place among all exits recorded ([`Reaper::seq`]).
    pub seq: u64,
    /// When it was reaped ([`Clock`] µs).
    pub at: u64,
    /// Its exit code, or `None` if a signal ended it.
    pub code: Option<i32>,
}

#[derive(Default)]
struct Exits {
    by_pid: HashMap<u32, Vec<Exit>>,
    next_seq: u64,
}

/// Exits recorded by the reaper thread. A pid may be used again by a later
/// process (pid_max may be as low as 32768): each exit is numbered, and a
/// waiter that noted [`Reaper::seq`] before the process it waits for
/// existed sees only that process's exit.
pub struct Reaper {
    exited: Mutex<Exits>,
    changed: Condvar,
}

impl Reaper {
    /// Makes this process a child subreaper and starts the reaper thread
    /// (once).
    pub fn get(clock: Clock) -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        static STARTED: std::sync::Once = std::sync::Once::new();
        let reaper = REAPER.get_or_init(|| Reaper {
            exited: Mutex::new(Exits::default()),
            changed: Condvar::new(),
        });
        STARTED.call_once(|| {
            nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
            std::thread::Builder::new()
                .name("reaper".into())
                .spawn(move || reaper.run(clock))
                .expect("spawn the reaper thread");
        });
        reaper
    }

    fn run(&self, clock: Clock) {
        // Lives as long as the driver; blocks in waitpid while there are
        // children, naps while there are none.
        loop {
            match waitpid(None::<Pid>, None) {
                Ok(status) => {
                    let (pid, code) = match status {
                        WaitStatus::Exited(pid, code) => (pid, Some(code)),
                        WaitStatus::Signaled(pid, _, _) => (pid, None),
                        _ => continue,
                    };
                    let at = clock.now();
                    let mut exited = self.exited.lock().unwrap();
                    let seq = exited.next_seq;
                    exited.next_seq += 1;
                    exited
                        .by_pid
                        .entry(pid.as_raw() as u32)
                        .or_default()
                        .push(Exit { seq, at, code });
                    drop(exited);
                    self.changed.notify_all();
                }
                Err(Errno::ECHILD) => std::thread::sleep(Duration::from_millis(2)),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    eprintln!("reaper: waitpid: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// The number the next exit recorded will get: note it before starting
    /// (or triggering the end of) a process, then wait with
    /// [`wait_exit`](Self::wait_exit).
    pub fn seq(&self) -> u64 {
        self.exited.lock().unwrap().next_seq
    }

    /// The first exit of `pid` numbered `since` or later, waiting at most
    /// `timeout`.
    pub fn wait_exit(&self, pid: u32, since: u64, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        let mut exited = self.exited.lock().unwrap();
        loop {
            let found = exited
                .by_pid
                .get(&pid)
                .and_then(|v| v.iter().find(|e| e.seq >= since));
            if let Some(exit) = found {
                return Some(*exit);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            exited = self.changed.wait_timeout(exited, left).unwrap().0;
        }
    }

    /// When `pid` exited (reaped here; its latest exit), waiting at most
    /// `timeout`.
    pub fn wait_gone(&self, pid: u32, timeout: Duration) -> Option<u64> {
        let deadline = Instant::now() + timeout;
        let mut exited = self.exited.lock().unwrap();
        loop {
            if let Some(exit) = exited.by_pid.get(&pid).and_then(|v| v.last()) {
                return Some(exit.at);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            exited = self.changed.wait_timeout(exited, left).unwrap().0;
        }
    }

    pub fn has_exited(&self, pid: u32) -> bool {
        self.exited.lock().unwrap().by_pid.contains_key(&pid)
    }
}

/// A port on 127.0.0.1 that was free a moment ago. Every system gets
/// `--listen 127.0.0.1:<port>`: ecdysis finds its inherited listener by the
/// address it is asked for, so it must be the real port, not `:0`.
pub fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// One running service and all its generations.
pub struct Service {
    /// Holds the control socket (and the log); removed on drop.
    _dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub control: PathBuf,
    pub log: PathBuf,
    ready_rx: mpsc::Receiver<(u64, Ready, Option<Sched>)>,
    /// The other lines its generations print on stdout.
    lines_rx: mpsc::Receiver<(u64, String)>,
    pub current: Ready,
    pids: Vec<u32>,
}

impl Service {
    /// Starts `exe --listen 127.0.0.1:<free port> --control <dir>/control.sock
    /// extra...` and waits for its first ready line.
    pub fn start(
        exe: &Path,
        extra: &[String],
        env: &[(&str, &str)],
        log: Option<&Path>,
        clock: Clock,
        reaper: &Reaper,
    ) -> Result<Service, String> {
        let dir = tempfile::Builder::new()
            .prefix("shellflip-bench")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let control = dir.path().join("control.sock");
        let addr = free_port().map_err(|e| format!("free port: {e}"))?;
        let log = log.map_or_else(|| dir.path().join("stderr.log"), Path::to_path_buf);
        let stderr = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = Command::new(exe);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--control")
            .arg(&control)
            .args(extra)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", exe.display()))?;
        let first_pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        // The first generation is reaped by the reaper thread, not by `child`.
        drop(child);
        let (tx, ready_rx) = mpsc::channel();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("ready-lines".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let t = clock.now();
                    if let Some(ready) = parse_ready(&line) {
                        let sched = sched_of(ready.pid);
                        if tx.send((t, ready, sched)).is_err() {
                            break;
                        }
                    } else if lines_tx.send((t, line)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| format!("spawn a thread: {e}"))?;
        let mut service = Service {
            _dir: dir,
            addr,
            control,
            log,
            ready_rx,
            lines_rx,
            current: Ready {
                pid: first_pid,
                generation: 0,
                listen: None,
                udp: None,
                metrics: None,
            },
            pids: vec![first_pid],
        };
        match service.next_ready(Duration::from_secs(60)) {
            Some(_) => Ok(service),
            None => {
                let reason = format!(
                    "{} was not ready within 60s; its stderr:\n{}",
                    exe.display(),
                    tail(&service.log)
                );
                service.stop(reaper);
                Err(reason)
            }
        }
    }

    /// The next generation's ready line, when it arrived, and the
    /// generation's scheduler statistics at that moment.
    pub fn next_ready(&mut self, timeout: Duration) -> Option<(u64, Ready, Option<Sched>)> {
        let (t, ready, sched) = self.ready_rx.recv_timeout(timeout).ok()?;
        self.current = ready;
        if !self.pids.contains(&ready.pid) {
            self.pids.push(ready.pid);
        }
        Some((t, ready, sched))
    }

    /// The next line a generation printed on stdout that is not a ready
    /// line (in the order printed), and when it arrived.
    pub fn next_line(&self, timeout: Duration) -> Option<(u64, String)> {
        self.lines_rx.recv_timeout(timeout).ok()
    }

    /// Stops every generation still running: SIGTERM, then SIGKILL after
    /// 10 s, each by pid, and waits until each is reaped.
    pub fn stop(self, reaper: &Reaper) {
        for &pid in &self.pids {
            if !reaper.has_exited(pid) && is_alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for &pid in &self.pids {
            if reaper.wait_gone(pid, Duration::from_secs(10)).is_none() && is_alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                reaper.wait_gone(pid, Duration::from_secs(5));
            }
        }
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Raises this process's soft limit of open files to its hard limit (the
/// services it starts inherit it) and returns the soft limit then.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// A field of `/proc/<pid>/smaps_rollup` (`Pss`, `Rss`...), in KiB.
fn rollup_kib(pid: u32, field: &str) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Proportional set size of a process, in KiB: its private pages plus its
/// share of the pages it shares (with its spawner, its predecessor...).
pub fn pss_kib(pid: u32) -> Option<u64> {
    rollup_kib(pid, "Pss")
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
pub fn mem_available_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Proportional set size (PSS) of the helper process named
/// `shellflip-spawn` among the children of `pid`, in KiB: the memory the
/// spawner really adds (it shares its pages with the service it was forked
/// from, which RSS would count twice).
pub fn spawner_pss_kib(pid: u32) -> Option<u64> {
    pss_kib(spawner_of(pid)?)
}

/// CPU time and run-queue wait of a process so far, summed over its
/// threads (`/proc/<pid>/task/*/schedstat`), in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sched {
    pub cpu_ms: f64,
    pub wait_ms: f64,
}

pub fn sched_of(pid: u32) -> Option<Sched> {
    let mut total = Sched::default();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut fields = stat
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        total.cpu_ms += fields.next().unwrap_or(0) as f64 / 1e6;
        total.wait_ms += fields.next().unwrap_or(0) as f64 / 1e6;
    }
    Some(total)
}
