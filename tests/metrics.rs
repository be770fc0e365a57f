//! What operators see of restarts. The HTTP example with `--metrics`
//! (examples/http.rs, built with the `metrics` feature, which the test kit
//! turns on for tests and examples) is scraped at `/metrics` over real HTTP
//! after successful, failed and rolled-back restarts: each restart is
//! counted once by its final outcome, the counters go on across
//! generations, and no scrape ever shows a total lower than an earlier one,
//! whichever generation answers it. Then the restart id that every log line
//! of one restart carries, in both generations (the echo example, which
//! logs).
//!
//! Synchronised on events: the ready line of each generation (which names
//! the metrics address), answers of the control socket and of `/metrics`,
//! a FIFO that holds a broken build until the test lets it exit.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

use common::*;
use nix::sys::signal::Signal;
use shellflip::client::ControlClient;
use shellflip::control::{FailureKind, Phase, Response};

/// One scrape of `/metrics`: each series (`name{labels}`) with its value.
#[derive(Debug, Clone)]
struct Scrape {
    series: BTreeMap<String, f64>,
    body: String,
}

impl Scrape {
    fn parse(body: String) -> Scrape {
        let series = body
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Scrape { series, body }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .series
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in:\n{}", self.body))
    }

    fn restarts(&self, outcome: &str) -> f64 {
        self.get(&format!(
            "shellflip_restarts_total{{outcome=\"{outcome}\"}}"
        ))
    }

    fn generation(&self) -> f64 {
        self.get("shellflip_generation")
    }

    /// Every counter's total.
    fn totals(&self) -> impl Iterator<Item = (&String, &f64)> {
        self.series
            .iter()
            .filter(|(name, _)| name.starts_with("shellflip_") && name.contains("_total"))
    }

    /// Panics if a total of `earlier` is higher than here (or missing).
    #[track_caller]
    fn assert_not_lower_than(&self, earlier: &Scrape, what: &str) {
        for (name, value) in earlier.totals() {
            let now = self.get(name);
            assert!(
                now >= *value,
                "{what}: {name} went down from {value} to {now}:\n{}",
                self.body
            );
        }
    }
}

/// Scrapes `/metrics` on a new connection: the generation that accepts it
/// answers.
fn scrape(addr: SocketAddr) -> Scrape {
    let mut connection =
        RawHttp::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    scrape_on(&mut connection)
}

/// Scrapes `/metrics` on an open connection (kept alive: the generation
/// that accepted it answers).
fn scrape_on(connection: &mut RawHttp) -> Scrape {
    let response = connection
        .get("/metrics")
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(response.status, 200, "{response:?}");
    Scrape::parse(response.body)
}

/// The HTTP example with `--metrics` on a port of its own, and that
/// address (from the ready line).
fn start_http_with_metrics(probation: &str) -> (Echo, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let control = dir.path().join("control.sock");
    let args: Vec<OsString> = [
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--control",
    ]
    .iter()
    .map(OsString::from)
    .chain([control.into_os_string()])
    .collect();
    let env = [("SHELLFLIP_PROBATION", probation)];
    let service = Echo::start_in(dir, &example_binary("http"), &args, &env);
    let metrics = service
        .current
        .metrics
        .expect("the ready line names the metrics address");
    (service, metrics)
}

/// Scrapes until `done` holds, checking that no total goes down from one
/// scrape to the next; the last scrape.
fn scrape_until(
    addr: SocketAddr,
    from: &Scrape,
    what: &str,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let mut last = from.clone();
    wait_until(what, EVENT_TIMEOUT, || {
        let now = scrape(addr);
        now.assert_not_lower_than(&last, what);
        last = now;
        done(&last)
    });
    last
}

/// Three restarts: the newest generation serves `succeeded 3` and
/// `generation 4`; each restart shows once its probation passed (not at its
/// READY), and the old generation, scraped over a connection it had
/// accepted before, observed the restart's durations.
#[test]
fn three_restarts_show_as_three_successes_at_the_newest_generation() {
    let (mut service, metrics) = start_http_with_metrics("300ms");
    let mut last = scrape(metrics);
    assert_eq!(last.generation(), 1.0);
    for outcome in ["succeeded", "failed", "rolled_back", "aborted", "refused"] {
        assert_eq!(last.restarts(outcome), 0.0, "{outcome}");
    }
    let mut kept_alive = RawHttp::connect(metrics).unwrap();
    assert_eq!(scrape_on(&mut kept_alive).generation(), 1.0);
    for n in 1..=3u32 {
        let (pid, generation) = restart_ok(&service);
        assert_eq!(service.next_ready().pid, pid);
        assert_eq!(generation, u64::from(n) + 1);
        if n == 1 {
            let old = scrape_on(&mut kept_alive);
            assert_eq!(old.generation(), 1.0);
            assert_eq!(old.get("shellflip_restart_duration_seconds_count"), 1.0);
            for phase in ["spawn", "handover", "state"] {
                let series =
                    format!("shellflip_restart_phase_duration_seconds_count{{phase=\"{phase}\"}}");
                assert_eq!(old.get(&series), 1.0, "{phase}");
            }
            assert!(old.get("shellflip_state_bytes") > 0.0);
            // Buckets (set by the example), for `histogram_quantile`.
            assert_eq!(
                old.get("shellflip_restart_duration_seconds_bucket{le=\"+Inf\"}"),
                1.0
            );
        }
        last = scrape_until(metrics, &last, "the commit", |s| {
            s.generation() == f64::from(n + 1) && s.restarts("succeeded") == f64::from(n)
        });
    }
    for outcome in ["failed", "rolled_back", "aborted", "refused"] {
        assert_eq!(last.restarts(outcome), 0.0, "{outcome}");
    }
    assert!(
        last.body
            .contains("shellflip_restarts_total{outcome=\"succeeded\"} 3\n"),
        "{}",
        last.body
    );
    assert!(
        last.body.contains("shellflip_generation 4\n"),
        "{}",
        last.body
    );
    assert!(last
        .body
        .contains("# TYPE shellflip_restarts_total counter"));
    assert!(last.get("shellflip_state_bytes") > 0.0);
}

/// A failed restart, then one rolled back, then one that succeeds: each
/// counted once, by its outcome, and carried on by the generation that
/// serves next. A restart refused while one runs shows with that one's
/// outcome; a new generation on probation already serves its
/// predecessor's totals.
#[test]
fn failed_and_rolled_back_restarts_are_counted_and_carried_on() {
    let (mut service, metrics) = start_http_with_metrics("10s");
    let first = scrape(metrics);
    let after_failure = failed_restart_with_a_refusal(&service, metrics, &first);
    assert_eq!(after_failure.restarts("failed"), 1.0);
    assert_eq!(after_failure.restarts("refused"), 1.0);
    assert_eq!(after_failure.generation(), 1.0);
    service.replace_with_binary(&example_binary("http"));

    // Rolled back: the new generation dies during its probation.
    let (pid, _) = restart_ok(&service);
    assert_eq!(service.next_ready().pid, pid);
    let on_probation = scrape(metrics);
    assert_eq!(on_probation.generation(), 2.0, "answered by the new one");
    assert_eq!(
        on_probation.restarts("failed"),
        1.0,
        "carried from the start"
    );
    assert_eq!(on_probation.restarts("succeeded"), 0.0);
    on_probation.assert_not_lower_than(&after_failure, "on probation");
    kill_pid(pid, Signal::SIGKILL);
    let back = scrape_until(metrics, &on_probation, "the rollback", |s| {
        s.restarts("rolled_back") == 1.0
    });
    assert_eq!(back.generation(), 1.0);
    assert_eq!(
        back.restarts("succeeded"),
        0.0,
        "rolled back, not succeeded"
    );
    assert_eq!(back.get("shellflip_probation_rollbacks_total"), 1.0);
    assert_eq!(
        back.get("shellflip_restart_duration_seconds_count"),
        1.0,
        "the rolled-back restart reached READY; the failed one did not"
    );

    // Succeeds: the new generation takes the old one's totals at the commit.
    let (pid, _) = restart_ok(&service);
    assert_eq!(service.next_ready().pid, pid);
    let last = scrape_until(metrics, &back, "the commit", |s| {
        s.restarts("succeeded") == 1.0
    });
    assert_eq!(last.generation(), 2.0);
    for (outcome, count) in [("failed", 1.0), ("rolled_back", 1.0), ("refused", 1.0)] {
        assert_eq!(last.restarts(outcome), count, "{outcome}");
    }
    assert_eq!(last.get("shellflip_probation_rollbacks_total"), 1.0);
}

/// Deploys a build that waits on a FIFO and then exits 3, asks for a
/// restart, and while it runs asks for another (refused: in progress);
/// the refusal shows only with the failure, once the test lets the build
/// exit. Returns the scrape after the failure.
fn failed_restart_with_a_refusal(service: &Echo, metrics: SocketAddr, first: &Scrape) -> Scrape {
    let gate = service.dir.path().join("gate");
    nix::unistd::mkfifo(&gate, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    service.replace_with_script(&format!(
        "#!/bin/sh\nread line < '{}'\nexit 3\n",
        gate.display()
    ));
    let control = service.control.clone();
    let restart = std::thread::spawn(move || ControlClient::restart(&control));
    wait_until("the restart to run", EVENT_TIMEOUT, || {
        ControlClient::status(&service.control).is_ok_and(|s| s.phase == Phase::Restarting)
    });
    match ControlClient::restart(&service.control) {
        Ok(Response::RestartFailed {
            kind: FailureKind::InProgress,
            ..
        }) => {}
        other => panic!("expected `in progress`, got {other:?}"),
    }
    let during = scrape(metrics);
    during.assert_not_lower_than(first, "during the restart");
    assert_eq!(during.restarts("refused"), 0.0, "held until the outcome");
    open_gate(&gate);
    match restart.join().unwrap() {
        Ok(Response::RestartFailed { reason, .. }) => {
            assert!(reason.contains("exited with status 3"), "{reason}")
        }
        other => panic!("expected a failed restart, got {other:?}"),
    }
    let after = scrape(metrics);
    after.assert_not_lower_than(&during, "after the failure");
    after
}

/// Lets the build waiting on `gate` go on (opening a FIFO for writing
/// waits for its reader).
fn open_gate(gate: &Path) {
    std::fs::write(gate, "go\n").unwrap_or_else(|e| panic!("write {}: {e}", gate.display()));
}

/// Every line about one restart, from its start to its outcome and its
/// drain, in the old generation and in the new one, carries the same
/// `restart_id` (the old generation's number and the ordinal of its
/// restart).
#[test]
fn every_line_of_a_restart_carries_its_id_in_both_generations() {
    let mut service = Echo::start(&[("SHELLFLIP_PROBATION", "100ms")]);
    for (n, id) in [(2, "1.1"), (3, "2.1")] {
        let old = service.current.pid;
        let (pid, _) = restart_ok(&service);
        assert_eq!(service.next_ready().pid, pid);
        assert!(wait_exit(old, EVENT_TIMEOUT), "the old generation exits");
        let restart = format!("restart{{restart_id={id}}}");
        // Old generation, then new, then old again.
        let expected = [
            "lifecycle event=RestartAsked".to_owned(),
            "restart started".to_owned(),
            "spawned the next generation".to_owned(),
            "the new generation is ready; it goes on probation".to_owned(),
            format!("ready generation={n}"),
            "the previous generation handed over".to_owned(),
            "handed over; draining".to_owned(),
            "generation drained".to_owned(),
        ];
        // The generations write concurrently: the new one may log the
        // commit after the old one drained. Wait for every line.
        let has_all = |log: &str| {
            expected.iter().all(|line| {
                log.lines()
                    .any(|l| l.contains(&restart) && l.contains(line.as_str()))
            })
        };
        let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
        while !has_all(&plain(&service.stderr())) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let log = plain(&service.stderr());
        for line in &expected {
            assert!(
                log.lines()
                    .any(|l| l.contains(&restart) && l.contains(line.as_str())),
                "no line {line:?} in {restart}:\n{log}"
            );
        }
    }
    let log = plain(&service.stderr());
    for line in log.lines().filter(|l| l.contains("restart started")) {
        assert!(line.contains("restart{restart_id="), "{line}");
    }
}

/// `text` without ANSI colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
