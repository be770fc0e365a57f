//! The real systemd, booted as PID 1 of new namespaces, to run services
//! under it: [`Machine`].
//!
//! How: first a cgroup of its own (`shellflip-machine-<pid>-<n>` at the
//! root of the cgroup2 hierarchy, from a private mount namespace), so that
//! its cgroup namespace — and systemd's view of the cgroup tree — is only
//! its own: two machines, or a machine and the host, never share a unit's
//! cgroup. Then `unshare --pid --fork --kill-child --mount --uts --cgroup
//! --net --mount-proc`, and inside: `/` made rprivate; a tmpfs on `/run`, on
//! `/tmp` and on `/var/tmp` (whatever runs inside never touches the host's
//! temp files); the machine's directory bound at [`INSIDE`] and its
//! `units/` over `/etc/systemd/system`; read-only binds of `/proc/sys` and
//! `/sys`; cgroup2 at `/sys/fs/cgroup`; a pty as `/dev/console` (its other
//! end collects systemd's log); `lo` up; then `systemd --system
//! --unit=shellflip-test.target` with `SYSTEMD_UNIT_PATH` set to those
//! units only (no default unit is loaded: nothing starts but what a test
//! starts) and empty generator paths.
//!
//! The machine has its own network namespace with only a loopback: a test
//! thread reaches its services after [`Machine::enter_network`] (threads it
//! starts afterwards are in that namespace too). Commands run inside with
//! `nsenter -t <systemd> -a` ([`Machine::run`], [`Machine::systemctl`]).
//! Dropping the machine kills the `unshare` this process started; with
//! `--kill-child` systemd dies with it, and the namespaces and everything
//! in them with systemd; then its cgroups are removed.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::container::find_program;
use crate::process::{become_subreaper, children_of, wait_exit};
use crate::wait::EVENT_TIMEOUT;

/// Where the machine's directory is seen inside the machine.
pub const INSIDE: &str = "/run/shellflip-test";

/// The target systemd boots into: it pulls in nothing.
const TARGET: &str = "shellflip-test.target";

/// The systemd binary booted.
const SYSTEMD: &str = "/lib/systemd/systemd";

/// Why a machine cannot boot here, if it cannot: not root, a tool missing
/// (`unshare`, `nsenter`, `ip`, systemd), no cgroup2 in the kernel.
pub fn cannot_boot() -> Option<String> {
    if let Some(reason) = crate::container::cannot_unshare() {
        return Some(reason);
    }
    for (program, package) in [("nsenter", "util-linux"), ("ip", "iproute2")] {
        if find_program(program).is_none() {
            return Some(format!("no `{program}` on PATH ({package})"));
        }
    }
    if !Path::new(SYSTEMD).is_file() {
        return Some(format!("no {SYSTEMD} (install the `systemd` package)"));
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("cgroup2"))
    {
        return Some("the kernel has no cgroup2 file system".to_owned());
    }
    None
}

/// systemd booted in namespaces of its own. See the module docs.
#[derive(Debug)]
pub struct Machine {
    /// The machine's directory on the host ([`INSIDE`] inside): `units/`,
    /// `bin/`, the services' logs.
    pub dir: tempfile::TempDir,
    /// systemd's pid, as the host sees it.
    pub pid: u32,
    /// The machine's cgroup, at the root of the cgroup2 hierarchy.
    cgroup: String,
    unshare: Option<Child>,
    console: Arc<Mutex<Vec<u8>>>,
    /// Held open so that reading the console's other end never fails
    /// before systemd opened it; dropped last.
    console_slave: Option<OwnedFd>,
}

impl Machine {
    /// Boots systemd with `units` (file name, contents) in its unit
    /// directory, and waits until it runs.
    ///
    /// # Panics
    ///
    /// If it does not boot within [`EVENT_TIMEOUT`] (with its console log).
    /// Call [`cannot_boot`] first to skip where it cannot.
    pub fn boot(units: &[(&str, &str)]) -> Machine {
        become_subreaper();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("create a temp dir: {e}"));
        for sub in ["units", "bin", "empty"] {
            std::fs::create_dir(dir.path().join(sub))
                .unwrap_or_else(|e| panic!("create {sub}/: {e}"));
        }
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join("units").join(name), text)
                .unwrap_or_else(|e| panic!("write unit {name}: {e}"))
        };
        write(TARGET, "[Unit]\nDescription=shellflip test machine\n");
        for (name, text) in units {
            write(name, text);
        }
        let pty = nix::pty::openpty(None, None).unwrap_or_else(|e| panic!("openpty: {e}"));
        let console_path = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&pty.slave)
        ))
        .unwrap_or_else(|e| panic!("the pty's name: {e}"));
        let console = Arc::new(Mutex::new(Vec::new()));
        drain_console(pty.master, Arc::clone(&console));
        let script = format!(
            r#"set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mkdir -p {INSIDE}
mount --bind "$MACHINE_DIR" {INSIDE}
mount --bind "$MACHINE_DIR/units" /etc/systemd/system
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
mount --rbind /sys /sys
mount -o remount,bind,ro /sys
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount --bind "$MACHINE_CONSOLE" /dev/console
ip link set lo up
exec env -i container=shellflip-test SYSTEMD_UNIT_PATH=/etc/systemd/system \
  SYSTEMD_GENERATOR_PATH={INSIDE}/empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH={INSIDE}/empty \
  {SYSTEMD} --system --unit={TARGET} --log-target=console
"#
        );
        // In a private mount namespace: cgroup2 mounted for a moment, the
        // machine's own cgroup made and joined; then the machine's
        // namespaces (exec: the same pid, so --kill-child still applies).
        let stage1 = r#"set -e
mkdir -p "$MACHINE_DIR/cgroup"
mount -t cgroup2 cgroup2 "$MACHINE_DIR/cgroup"
mkdir "$MACHINE_DIR/cgroup/$MACHINE_CGROUP"
echo $$ > "$MACHINE_DIR/cgroup/$MACHINE_CGROUP/cgroup.procs"
umount "$MACHINE_DIR/cgroup"
exec unshare --pid --fork --kill-child --mount --uts --cgroup --net --mount-proc sh -c "$MACHINE_SCRIPT"
"#;
        let cgroup = format!("shellflip-machine-{}-{}", std::process::id(), next_number());
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c", stage1])
            .env("MACHINE_DIR", dir.path())
            .env("MACHINE_CGROUP", &cgroup)
            .env("MACHINE_SCRIPT", &script)
            .env("MACHINE_CONSOLE", &console_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut unshare = cmd.spawn().unwrap_or_else(|e| panic!("spawn unshare: {e}"));
        let unshare_pid = unshare.id();
        let mut machine = Machine {
            dir,
            pid: 0,
            cgroup,
            unshare: None,
            console,
            console_slave: Some(pty.slave),
        };
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = unshare.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = unshare.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                panic!(
                    "the machine did not boot ({status}): {err}\nconsole:\n{}",
                    machine.console()
                );
            }
            if machine.pid == 0 {
                // The child of the inner unshare: PID 1 of a new namespace
                // (not a `mount` of the first stage). A child whose
                // namespace cannot be read has exited (a short-lived
                // command of the first stage): not it.
                let ours = std::fs::read_link("/proc/self/ns/pid").ok();
                machine.pid = children_of(unshare_pid)
                    .into_iter()
                    .map(|(pid, _, _)| pid)
                    .find(|pid| {
                        std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                            .is_ok_and(|ns| Some(ns) != ours)
                    })
                    .unwrap_or(0);
            }
            if machine.pid != 0 && !crate::process::is_alive(machine.pid) {
                // Gone (it was not PID 1 of the machine after all): look again.
                machine.pid = 0;
            }
            if machine.pid != 0 {
                let state = machine.systemctl(&["is-system-running"]);
                let state = String::from_utf8_lossy(&state.stdout);
                if matches!(state.trim(), "running" | "degraded") {
                    break;
                }
            }
            if Instant::now() > deadline {
                let _ = unshare.kill();
                let _ = unshare.wait();
                panic!(
                    "systemd did not boot within {EVENT_TIMEOUT:?}\nconsole:\n{}",
                    machine.console()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        machine.unshare = Some(unshare);
        machine
    }

    /// What systemd wrote on its console so far.
    pub fn console(&self) -> String {
        let bytes = self.console.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Copies `binary` into the machine as `bin/<name>`; its path inside.
    ///
    /// # Panics
    ///
    /// If the copy fails.
    pub fn install(&self, binary: &Path, name: &str) -> String {
        let to = self.dir.path().join("bin").join(name);
        crate::process::copy_executable(binary, &to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", binary.display(), to.display()));
        format!("{INSIDE}/bin/{name}")
    }

    /// Puts `binary` at `bin/<name>` the way a deploy does: written next to
    /// it, then renamed over it (the running file is never written to).
    ///
    /// # Panics
    ///
    /// If the copy or the rename fails.
    pub fn deploy(&self, binary: &Path, name: &str) {
        let bin = self.dir.path().join("bin");
        let temp = bin.join(format!(".{name}.new"));
        crate::process::copy_executable(binary, &temp)
            .unwrap_or_else(|e| panic!("copy {}: {e}", binary.display()));
        std::fs::rename(&temp, bin.join(name)).unwrap_or_else(|e| panic!("rename: {e}"));
    }

    /// Writes an executable script at `bin/<name>`, deployed like
    /// [`Machine::deploy`].
    ///
    /// # Panics
    ///
    /// If it cannot be written.
    pub fn deploy_script(&self, script: &str, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let bin = self.dir.path().join("bin");
        let temp = bin.join(format!(".{name}.new"));
        std::fs::write(&temp, script).unwrap_or_else(|e| panic!("write a script: {e}"));
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod: {e}"));
        std::fs::rename(&temp, bin.join(name)).unwrap_or_else(|e| panic!("rename: {e}"));
    }

    /// The host path of `name` in the machine's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The text of `name` in the machine's directory (a service's log),
    /// empty if there is none.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Runs `command` inside the machine (all its namespaces).
    ///
    /// # Panics
    ///
    /// If `nsenter` cannot be run.
    pub fn run(&self, command: &[&str]) -> Output {
        let pid = self.pid.to_string();
        Command::new("nsenter")
            .args(["-t", &pid, "-a", "--"])
            .args(command)
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {command:?}: {e}"))
    }

    /// `systemctl <args>` inside the machine.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut command = vec!["systemctl", "--no-pager"];
        command.extend_from_slice(args);
        self.run(&command)
    }

    /// `systemctl <args>`, which must succeed.
    ///
    /// # Panics
    ///
    /// If it fails, with its output and the console log.
    pub fn systemctl_ok(&self, args: &[&str]) -> String {
        let out = self.systemctl(args);
        assert!(
            out.status.success(),
            "systemctl {args:?}: {}\n{}\nconsole:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.console()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The value of `property` of `unit` (`systemctl show -P`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-P", property, unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The unit's main pid (0: none), as systemd sees it.
    pub fn main_pid(&self, unit: &str) -> u32 {
        self.show(unit, "MainPID").parse().unwrap_or(0)
    }

    /// Waits until `property` of `unit` satisfies `condition`; returns its
    /// value then.
    ///
    /// # Panics
    ///
    /// After `timeout`, with the value and the console log.
    pub fn wait_show(
        &self,
        unit: &str,
        property: &str,
        timeout: Duration,
        condition: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.show(unit, property);
            if condition(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{unit}: {property}={value} did not become what was awaited\nconsole:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Moves the calling thread into the machine's network namespace (and
    /// the threads it starts from now on): its loopback is the services'.
    ///
    /// # Panics
    ///
    /// If `setns` fails.
    pub fn enter_network(&self) {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.pid))
            .unwrap_or_else(|e| panic!("open the machine's network namespace: {e}"));
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into the machine's network namespace: {e}"));
    }

    /// The parent, inside the machine, of the machine's process `pid`.
    pub fn parent_of(&self, pid: u32) -> Option<u32> {
        let out = self.run(&["cat", &format!("/proc/{pid}/stat")]);
        let stat = String::from_utf8_lossy(&out.stdout).into_owned();
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut unshare) = self.unshare.take() {
            let _ = unshare.kill();
            let _ = unshare.wait();
        }
        // systemd dies of --kill-child, after every process of its
        // namespace; it is this (subreaper) process's child by then.
        if self.pid != 0 {
            wait_exit(self.pid, EVENT_TIMEOUT);
        }
        // The console reader now sees the end and stops.
        self.console_slave.take();
        remove_cgroup(self.dir.path(), &self.cgroup);
    }
}

/// A number for each machine of this process.
fn next_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Removes the machine's cgroup and those systemd made in it (deepest
/// first), from a private mount namespace; a few tries while the last
/// processes are being released.
fn remove_cgroup(dir: &Path, cgroup: &str) {
    let script = r#"mkdir -p "$MACHINE_DIR/cgroup" || exit 1
mount -t cgroup2 cgroup2 "$MACHINE_DIR/cgroup" || exit 1
for try in 1 2 3 4 5 6 7 8 9 10; do
  find "$MACHINE_DIR/cgroup/$MACHINE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
  [ -d "$MACHINE_DIR/cgroup/$MACHINE_CGROUP" ] || break
  sleep 0.1
done
umount "$MACHINE_DIR/cgroup"
"#;
    let removed = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("MACHINE_DIR", dir)
        .env("MACHINE_CGROUP", cgroup)
        .stdin(Stdio::null())
        .status();
    if !removed.is_ok_and(|s| s.success()) {
        eprintln!("could not remove the machine's cgroup /{cgroup}");
    }
}

/// Reads the console's other end until it closes, into `into`.
fn drain_console(master: OwnedFd, into: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        while let Ok(n) = file.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(&buf[..n]);
        }
    });
}
