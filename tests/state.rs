//! End-to-end: a `#[derive(HandoverState)]` struct with data, skipped and
//! fd fields crosses restarts; an incompatible build is refused by the
//! fingerprint check, or starts fresh when the service chose `fresh`.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::net::TcpStream;

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
    let stderr = restart_fails_with(&service, &["incompatible", "`State`"]);
    assert_eq!(
        stderr.matches("fingerprint 0x").count(),
        2,
        "both fingerprints: {stderr}"
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
    cli_restart_ok(&service);
    let ready = service.next_ready();
    // Only the new generation accepts once the old one has exited.
    assert!(wait_exit(old.pid, EVENT_TIMEOUT));
    let line = visit(&service);
    assert_eq!(line["pid"], ready.pid.to_string());
    assert_eq!(line["visits"], "1", "fresh state");
    assert_eq!(line["names"], "g2", "nothing of the old state was kept");
}
