//! End-to-end, with real processes: a `#[derive(HandoverState)]` struct
//! with data, skipped and fd fields crosses restarts; builds that differ
//! only in their state struct (`examples/evolve/`) carry the state by field
//! name: reordered, added then rolled back, renamed, migrated 1 -> 2 -> 3;
//! a changed type is refused naming the field while the old generation
//! keeps serving, or starts fresh when the service chose `fresh`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Reads the one line the stateful example writes per connection.
fn visit(echo: &Echo) -> BTreeMap<String, String> {
    let mut stream = TcpStream::connect(echo.addr).expect("connect");
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut line = String::new();
    stream.read_to_string(&mut line).expect("read the line");
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn start_stateful(env: &[(&str, &str)]) -> Echo {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.log");
    let args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
        "--audit".into(),
        audit.into(),
    ];
    Echo::start_in(dir, &example_binary("stateful"), &args, env)
}

#[test]
fn data_skipped_and_fd_fields_survive_three_restarts() {
    let mut service = start_stateful(&[]);
    let first = visit(&service);
    assert_eq!(first["visits"], "1");
    assert_eq!(first["names"], "g1");
    assert_eq!(first["seen"], "1");
    let beacon = first["beacon"].clone();
    assert_eq!(visit(&service)["visits"], "2");

    // Move the audit file away: only a generation holding the very same
    // open file can still write to it.
    let audit = service.dir.path().join("audit.log");
    let moved = service.dir.path().join("audit.moved");
    std::fs::rename(&audit, &moved).unwrap();

    let mut visits = 2;
    for generation in 2..=4u64 {
        let old = service.current;
        cli_restart_ok(&service);
        let ready = service.next_ready();
        assert_eq!(ready.generation, generation);
        assert!(wait_exit(old.pid, EVENT_TIMEOUT));
        let line = visit(&service);
        visits += 1;
        assert_eq!(line["pid"], ready.pid.to_string());
        assert_eq!(line["visits"], visits.to_string(), "data field carried");
        let names: Vec<String> = (1..=generation).map(|g| format!("g{g}")).collect();
        assert_eq!(line["names"], names.join(","), "data field carried");
        assert_eq!(line["seen"], "1", "skipped field rebuilt with Default");
        assert_eq!(line["beacon"], beacon, "the same UDP socket");
    }
    let log = std::fs::read_to_string(&moved).unwrap();
    for generation in 1..=4 {
        assert!(
            log.contains(&format!("by generation {generation}")),
            "generation {generation} did not write to the handed-over file:\n{log}"
        );
    }
    assert!(!audit.exists(), "no generation reopened the audit path");
}

#[test]
fn an_incompatible_build_is_refused_and_the_old_generation_keeps_serving() {
    let service = start_stateful(&[]);
    assert_eq!(visit(&service)["visits"], "1");
    service.replace_with_binary(&example_binary("stateful_v2"));
    restart_fails_with(
        &service,
        &[
            "`State.visits` is u32 in this build but the previous generation sent u64",
            "restart once with fresh state",
        ],
    );
    let line = visit(&service);
    assert_eq!(line["pid"], service.current.pid.to_string());
    assert_eq!(line["visits"], "2");
}

#[test]
fn with_fresh_an_incompatible_build_starts_anew() {
    let mut service = start_stateful(&[("SHELLFLIP_ON_STATE_MISMATCH", "fresh")]);
    assert_eq!(visit(&service)["visits"], "1");
    assert_eq!(visit(&service)["visits"], "2");
    let old = service.current;
    service.replace_with_binary(&example_binary("stateful_v2"));
    // Loud: the answer says the state was not carried, and why.
    let out = cli_restart_ok(&service);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NOT carried, fresh state:")
            && stderr.contains("`State.visits`")
            && stderr.contains("on_state_mismatch = \"fresh\""),
        "{stderr}"
    );
    let ready = service.next_ready();
    // Only the new generation accepts once the old one has exited.
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    let line = visit(&service);
    assert_eq!(line["pid"], ready.pid.to_string());
    assert_eq!(line["visits"], "1", "fresh state");
    assert_eq!(line["names"], "g2", "nothing of the old state was kept");
}

// ---------------------------------------------------------------------------
// Builds that differ only in their state struct (examples/evolve/)
// ---------------------------------------------------------------------------

/// Starts `evolve_<build>` in a temp dir.
fn start_evolving(build: &str) -> Echo {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    Echo::start_in(dir, &example_binary(&format!("evolve_{build}")), &args, &[])
}

/// The greeting of one connection to an evolving service, as key/values
/// (the echo exchange is completed and the connection closed).
fn greet(service: &Echo) -> BTreeMap<String, String> {
    let mut stream = TcpStream::connect(service.addr).expect("connect");
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read the greeting");
    let line = text.lines().next().unwrap_or_default();
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Asserts `greeting` has each `key=value` of `expected`.
#[track_caller]
fn assert_values(greeting: &BTreeMap<String, String>, expected: &str) {
    for kv in expected.split_whitespace() {
        let (k, v) = kv.split_once('=').unwrap();
        assert_eq!(
            greeting.get(k).map(String::as_str),
            Some(v),
            "{k} in {greeting:?}"
        );
    }
}

/// Deploys `evolve_<build>` and restarts into it; returns the new
/// generation's first greeting.
fn deploy(service: &mut Echo, build: &str) -> BTreeMap<String, String> {
    let old = service.current;
    service.replace_with_binary(&example_binary(&format!("evolve_{build}")));
    cli_restart_ok(service);
    let ready = service.next_ready();
    assert!(
        wait_exit(old.pid, EVENT_TIMEOUT),
        "the old generation exits"
    );
    let greeting = greet(service);
    assert_eq!(greeting["pid"], ready.pid.to_string());
    greeting
}

#[test]
fn reordered_fields_keep_every_value_at_both_levels() {
    let mut service = start_evolving("base");
    assert_values(&greet(&service), "served=1 a=1 b=2 x=3 y=4");
    let greeting = deploy(&mut service, "reordered");
    assert_values(&greeting, "generation=2 served=2 a=1 b=2 x=3 y=4");
    let greeting = deploy(&mut service, "base");
    assert_values(&greeting, "generation=3 served=3 a=1 b=2 x=3 y=4");
}

#[test]
fn an_added_field_survives_a_rollback_and_comes_back_with_its_default() {
    let mut service = start_evolving("base");
    assert_values(&greet(&service), "served=1 a=1 b=2");
    // Added: the new fields take their defaults (extra counts from 100).
    let greeting = deploy(&mut service, "added");
    assert_values(&greeting, "served=2 a=1 b=2 x=3 y=4 extra=101 z=0");
    // Carried between two generations of the same build.
    let greeting = deploy(&mut service, "added");
    assert_values(&greeting, "served=3 extra=102");
    // Rolled back: the new fields are dropped (and logged), the rest kept.
    let greeting = deploy(&mut service, "base");
    assert_values(&greeting, "generation=4 served=4 a=1 b=2 x=3 y=4");
    assert!(!greeting.contains_key("extra"));
    let stderr = service.stderr();
    for dropped in ["`State.extra` was received", "`State.inner.z` was received"] {
        assert!(stderr.contains(dropped), "{dropped} in:\n{stderr}");
    }
    // Added again: everything kept, the added field from its default.
    let greeting = deploy(&mut service, "added");
    assert_values(&greeting, "generation=5 served=5 a=1 b=2 x=3 y=4 extra=101");
}

#[test]
fn a_renamed_field_is_found_by_its_alias_and_after_a_rollback() {
    let mut service = start_evolving("base");
    assert_values(&greet(&service), "served=1 a=1");
    let greeting = deploy(&mut service, "renamed");
    assert_values(&greeting, "served=2 alpha=1 b=2 x=3 y=4");
    let greeting = deploy(&mut service, "base");
    assert_values(&greeting, "served=3 a=1 b=2 x=3 y=4");
}

#[test]
fn a_changed_type_is_refused_naming_the_field_while_the_old_generation_serves_on() {
    let service = start_evolving("base");
    let load = Load::start(service.addr, 4, 100_000, Duration::from_secs(60));
    wait_until("the clients to be served", EVENT_TIMEOUT, || {
        load.count_from(service.current.pid) >= 20
    });
    service.replace_with_binary(&example_binary("evolve_retyped"));
    restart_fails_with(
        &service,
        &[
            "`State.inner.x` is i32 in this build but the previous generation sent u64",
            "the handover state `State` cannot be carried",
        ],
    );
    // The old generation never stopped: more exchanges, all by it.
    let before = load.count_from(service.current.pid);
    wait_until("more clients to be served", EVENT_TIMEOUT, || {
        load.count_from(service.current.pid) >= before + 20
    });
    let report = load.stop();
    report.assert_no_failures(&service.stderr());
    let greeting = greet(&service);
    assert_eq!(greeting["pid"], service.current.pid.to_string());
    assert_values(&greeting, "generation=1 a=1 b=2 x=3 y=4");
}

#[test]
fn migrations_chain_from_version_1_to_2_to_3() {
    let mut service = start_evolving("base");
    assert_values(&greet(&service), "served=1 a=1 b=2 x=3 y=4");
    let greeting = deploy(&mut service, "v2");
    assert_values(&greeting, "served=2 total=3 x=3 y=4");
    let greeting = deploy(&mut service, "v3");
    assert_values(&greeting, "served=3 total=3 point=3,4");

    // Straight from version 1 to version 3: through both migrations.
    let mut service = start_evolving("base");
    assert_values(&greet(&service), "served=1");
    let greeting = deploy(&mut service, "v3");
    assert_values(&greeting, "generation=2 served=2 total=3 point=3,4");
    assert!(
        service.stderr().contains("migrated version 2"),
        "{}",
        service.stderr()
    );
}

#[test]
fn going_back_to_an_older_version_is_refused_naming_both() {
    let service = start_evolving("v2");
    assert_values(&greet(&service), "served=1 total=3");
    service.replace_with_binary(&example_binary("evolve_base"));
    restart_fails_with(
        &service,
        &[
            "sent version 2 of `State`",
            "reads version 1 only",
            "cannot be migrated back",
        ],
    );
    let greeting = greet(&service);
    assert_values(&greeting, "generation=1 served=2 total=3");
}

/// `shellflip restart --fresh-state`: this one restart starts the new
/// generation with fresh state (here into a build whose state cannot be
/// carried), says so, and the next restart carries the state again.
#[test]
fn a_one_off_fresh_state_restart_is_loud_and_the_next_carries_again() {
    let mut service = start_evolving("base");
    assert_values(&greet(&service), "served=1 a=1");
    service.replace_with_binary(&example_binary("evolve_retyped"));
    restart_fails_with(&service, &["`State.inner.x` is i32"]);
    let out = cli(&service, "restart", &["--fresh-state"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "state State v1 NOT carried, fresh state: the restart was asked with --fresh-state"
        ),
        "{stderr}"
    );
    let old = service.current;
    let ready = service.next_ready();
    // (This service's accept loop ignores the probation's pause: wait for
    // the old generation to be gone.)
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    let greeting = greet(&service);
    assert_eq!(greeting["pid"], ready.pid.to_string());
    assert_values(&greeting, "generation=2 served=1");
    let status = shellflip::client::ControlClient::status(&service.control).unwrap();
    let state = status.state.expect("the state's report");
    assert!(state.not_carried.is_some(), "{state:?}");
    // The next restart carries the state again.
    let out = cli_restart_ok(&service);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("state State v1 carried ("), "{stdout}");
    let old = service.current;
    service.next_ready();
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    assert_values(&greet(&service), "generation=3 served=2");
}

/// The snapshot is taken when the new generation asks for it, and from
/// then on the old generation knows: a service handing out IDs with
/// `update_if_owned` never gives one twice, however long its successor
/// takes to become ready after the snapshot.
#[test]
fn ids_are_never_given_twice_across_a_slow_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<OsString> = vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--control".into(),
        dir.path().join("control.sock").into(),
    ];
    let mut service = Echo::start_in(dir, &example_binary("ids"), &args, &[]);
    let real = service.dir.path().join("ids.real");
    copy_executable(&example_binary("ids"), &real).unwrap();
    service.replace_with_script(&format!(
        "#!/bin/sh\nexec \"{}\" \"$@\" --slow-init-ms 800\n",
        real.display()
    ));
    let addr = service.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = {
        let (stop, lines) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&lines));
        std::thread::spawn(move || {
            // Bounded: at most 100 000 connections or 60 s.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            for _ in 0..100_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed)
                    || std::time::Instant::now() > deadline
                {
                    break;
                }
                let mut stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
                let mut line = String::new();
                stream.read_to_string(&mut line).expect("read");
                lines.lock().unwrap().push(line.trim().to_owned());
            }
        })
    };
    // IDs given by `pid` so far, as the client saw them.
    let ids_from = |pid: u32| {
        let suffix = format!(" pid={pid}");
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with("id=") && l.ends_with(&suffix))
            .count()
    };
    // The client takes IDs from the old generation before the restart, and
    // from the new one after it, however slowly a loaded machine runs it.
    let old = service.current;
    wait_until("IDs from the old generation", EVENT_TIMEOUT, || {
        ids_from(old.pid) >= 5
    });
    cli_restart_ok(&service);
    let new = service.next_ready();
    wait_until("IDs from the new generation", EVENT_TIMEOUT, || {
        ids_from(new.pid) >= 5
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    client.join().unwrap();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    let mut ids = std::collections::BTreeSet::new();
    let mut handed_over = 0;
    for line in &lines {
        if line.starts_with("handed-over") {
            assert!(line.ends_with(&format!("pid={}", old.pid)), "{line}");
            handed_over += 1;
        } else {
            let id: u64 = line
                .strip_prefix("id=")
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected answer {line:?}"));
            assert!(ids.insert(id), "id {id} was given twice");
        }
    }
    eprintln!(
        "{} ids, {handed_over} refused after the snapshot",
        ids.len()
    );
}

/// The greeting of the faulty example, as its fields: with `--ballast-mb`,
/// `ballast=<bytes>:<checksum>` of the blob its state carries.
fn faulty_greeting(service: &Echo) -> BTreeMap<String, String> {
    let stream = TcpStream::connect(service.addr).expect("connect");
    stream.set_read_timeout(Some(EVENT_TIMEOUT)).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line)
        .expect("read the greeting");
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_large_blob_crosses_restarts_with_its_checksum() {
    let mut service = start_faulty(&["--ballast-mb", "24"], &[]);
    let first = faulty_greeting(&service);
    assert!(first["ballast"].starts_with("25165824:"), "{first:?}");
    for _ in 0..2 {
        let (pid, _) = restart_ok(&service);
        service.next_ready();
        let greeting = faulty_greeting(&service);
        assert_eq!(greeting["pid"], pid.to_string());
        assert_eq!(greeting["ballast"], first["ballast"]);
    }
}

/// `GLIBC_TUNABLES` and the runtime's marker in the environment of `pid`.
///
/// glibc (2.36) parses `GLIBC_TUNABLES` in place at start-up, writing a NUL
/// over each `:`, so `/proc/PID/environ` shows the entries after the first
/// as entries of their own; they are joined back here.
fn heap_variables(pid: u32) -> (Option<String>, Option<String>) {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read the environment");
    let entries: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect();
    let value = |name: &str| {
        let at = entries
            .iter()
            .position(|e| e.starts_with(&format!("{name}=")))?;
        let mut value = entries[at][name.len() + 1..].to_owned();
        if name == "GLIBC_TUNABLES" {
            for more in entries[at + 1..]
                .iter()
                .take_while(|e| e.starts_with("glibc."))
            {
                value = format!("{value}:{more}");
            }
        }
        Some(value)
    };
    (value("GLIBC_TUNABLES"), value("SHELLFLIP_HUGE_HEAP_ADDED"))
}

/// Huge pages behind `pid`'s anonymous memory (`AnonHugePages`), in KiB.
fn anon_huge_kib(pid: u32) -> u64 {
    let rollup =
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .expect("AnonHugePages in smaps_rollup")
}

#[test]
fn a_large_state_puts_the_next_generations_heap_on_huge_pages_and_a_small_one_does_not() {
    // 72 MiB of state: more than the 64 MiB of anonymous memory from which
    // the next generation gets `glibc.malloc.hugetlb=1`.
    let mut service = start_faulty(
        &["--ballast-mb", "72"],
        &[("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")],
    );
    let first = faulty_greeting(&service);
    for _ in 0..2 {
        let (pid, _) = restart_ok(&service);
        service.next_ready();
        assert_eq!(faulty_greeting(&service)["ballast"], first["ballast"]);
        // The service's own tunables kept, the runtime's added once.
        assert_eq!(
            heap_variables(pid),
            (
                Some("glibc.malloc.arena_max=4:glibc.malloc.hugetlb=1".to_owned()),
                Some("1".to_owned())
            )
        );
        // And glibc took it: the decoded blob sits on huge pages, wherever
        // the kernel gives them on request.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if thp.contains("[madvise]") || thp.contains("[always]") {
            assert!(
                anon_huge_kib(pid) >= 2048,
                "no huge pages behind {pid}'s heap"
            );
        }
    }
    drop(service);

    // A small service's next generation gets nothing added, and a
    // service that chose for itself keeps its choice.
    let service = start_faulty(&["--ballast-mb", "1"], &[]);
    let (pid, _) = restart_ok(&service);
    assert_eq!(heap_variables(pid), (None, None));
    drop(service);
    let service = start_faulty(
        &["--ballast-mb", "72"],
        &[("GLIBC_TUNABLES", "glibc.malloc.hugetlb=0")],
    );
    let (pid, _) = restart_ok(&service);
    assert_eq!(
        heap_variables(pid),
        (Some("glibc.malloc.hugetlb=0".to_owned()), None)
    );
    drop(service);
    // The same from a generation that spawns its successor itself.
    let service = start_faulty(&["--ballast-mb", "72"], &[("SHELLFLIP_SPAWNER", "inline")]);
    let (pid, _) = restart_ok(&service);
    assert_eq!(
        heap_variables(pid),
        (
            Some("glibc.malloc.hugetlb=1".to_owned()),
            Some("1".to_owned())
        )
    );
}

/// A memory cgroup of its own below this test's (cgroup v1's memory
/// hierarchy, or v2 where the memory controller can be delegated to a
/// child), removed when dropped.
struct MemoryCgroup {
    dir: std::path::PathBuf,
    limit_file: &'static str,
}

impl MemoryCgroup {
    fn new() -> MemoryCgroup {
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mut tried = Vec::new();
        for mount in mounts.lines() {
            let Some((left, right)) = mount.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (root, point, fstype) = (left[3], left[4], right[0]);
            let v1 = fstype == "cgroup" && right[2].split(',').any(|o| o == "memory");
            if !v1 && fstype != "cgroup2" {
                continue;
            }
            let ours = cgroups.lines().find_map(|line| {
                let mut parts = line.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                let memory = if v1 {
                    controllers.split(',').any(|c| c == "memory")
                } else {
                    controllers.is_empty()
                };
                memory.then(|| path.to_owned())
            });
            let Some(path) = ours else { continue };
            let below = path
                .strip_prefix(root.trim_end_matches('/'))
                .unwrap_or(&path);
            let parent = std::path::Path::new(point).join(below.trim_start_matches('/'));
            let dir = parent.join(format!("shellflip-test-{}", std::process::id()));
            let limit_file = if v1 {
                "memory.limit_in_bytes"
            } else {
                "memory.max"
            };
            if !v1 {
                let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory");
            }
            match std::fs::create_dir(&dir) {
                Ok(()) if dir.join(limit_file).exists() => return MemoryCgroup { dir, limit_file },
                Ok(()) => {
                    let _ = std::fs::remove_dir(&dir);
                    tried.push(format!("{}: no {limit_file}", dir.display()));
                }
                Err(e) => tried.push(format!("{}: {e}", dir.display())),
            }
        }
        panic!("this test needs a memory cgroup it can create (as root): {tried:?}");
    }

    fn limit(&self, limit: &str) {
        std::fs::write(self.dir.join(self.limit_file), limit)
            .unwrap_or_else(|e| panic!("write {limit} to {}: {e}", self.limit_file));
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Empty once the service's processes are gone (the `Echo` is
        // dropped first): a few tries while they are reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove {}", self.dir.display());
    }
}

#[test]
fn a_state_over_half_the_memory_left_is_refused_before_it_is_sent() {
    let cgroup = MemoryCgroup::new();
    let service = start_faulty(&["--ballast-mb", "32"], &[]);
    let before = faulty_greeting(&service);
    // Memory already used stays charged where it was: the cgroup leaves
    // the generation about 40 MiB, so the envelope may take 20.
    cgroup.limit(&(40u64 << 20).to_string());
    cgroup.enter(service.current.pid);
    let stderr = restart_fails_with(
        &service,
        &[
            "the handover state `Served` was not sent: its envelope grew past",
            "MiB available (",
            cgroup.limit_file,
            "this generation keeps serving",
        ],
    );
    assert!(
        stderr.contains(&cgroup.dir.display().to_string()),
        "{stderr}"
    );
    let after = faulty_greeting(&service);
    assert_eq!(after["pid"], service.current.pid.to_string());
    assert_eq!(after["ballast"], before["ballast"]);
    // The same restart with the memory given back carries the state.
    cgroup.limit(if cgroup.limit_file == "memory.max" {
        "max"
    } else {
        "-1"
    });
    let (pid, _) = restart_ok(&service);
    let mut service = service;
    service.next_ready();
    let greeting = faulty_greeting(&service);
    assert_eq!(greeting["pid"], pid.to_string());
    assert_eq!(greeting["ballast"], before["ballast"]);
    drop(service);
}
