//! The HTTP section: the same axum service served by `shellflip::http`
//! (the root workspace's examples/http.rs) and by the README's old
//! pattern, `axum::serve(..).with_graceful_shutdown(ctx.shutdown())`
//! (src/bin/http_plain_axum.rs), each restarted K times under the same
//! HTTP load: fresh-connection clients, keep-alive clients, and keep-alive
//! clients that pause between requests (idle connections, as a pool's
//! are). Failed requests by kind of client, idle connections the server
//! closed, p99 latency steady and during restarts.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use shellflip_bench::report::{HttpRestart, HttpResult, HttpSystemResult};
use shellflip_bench::stats::percentile;
use shellflip_testkit::http::{ClientKind, HttpLoad, HttpReport};

use crate::harness::{tail, Service};
use crate::{progress, Bench, Trigger};

/// The longest pause of a pausing client: longer than the drain, so that
/// some connections are idle until their server closes them.
const PAUSE: Duration = Duration::from_secs(3);
/// The services' drain timeout in this section (`SHELLFLIP_DRAIN_TIMEOUT`):
/// ours closes the connections still idle a tenth of it before its end.
const DRAIN_TIMEOUT: &str = "2s";

fn kind_key(kind: ClientKind) -> &'static str {
    match kind {
        ClientKind::Fresh => "fresh",
        ClientKind::KeepAlive => "keep-alive",
        ClientKind::Pausing(_) => "pausing",
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Bench {
    /// Runs the section for `ours` (examples/http.rs) and `plain`
    /// (http_plain_axum), one after the other.
    pub(crate) fn run_http(&self, ours: &Path, plain: &Path) -> HttpResult {
        let n = self.opts.http_clients;
        let clients = [
            (ClientKind::Fresh, n),
            (ClientKind::KeepAlive, n),
            (ClientKind::Pausing(PAUSE), n),
        ];
        let mut result = HttpResult {
            clients: clients
                .iter()
                .map(|&(kind, count)| (kind_key(kind).to_string(), count))
                .collect(),
            pause_ms: PAUSE.as_millis() as u64,
            drain_timeout: DRAIN_TIMEOUT.to_string(),
            systems: Vec::new(),
        };
        for (key, name, exe) in [
            (
                "ours-http",
                "shellflip::http::serve (examples/http.rs)",
                ours,
            ),
            ("axum-serve", "axum::serve + with_graceful_shutdown", plain),
        ] {
            eprintln!("{name} ({})", exe.display());
            let system = self.run_http_system(key, name, exe, &clients);
            if let Some(e) = &system.error {
                eprintln!("  {name}: {e}");
            }
            result.systems.push(system);
        }
        result
    }

    fn run_http_system(
        &self,
        key: &str,
        name: &str,
        exe: &Path,
        clients: &[(ClientKind, usize)],
    ) -> HttpSystemResult {
        let mut result = HttpSystemResult {
            key: key.to_string(),
            name: name.to_string(),
            ..Default::default()
        };
        let mut env = vec![("SHELLFLIP_DRAIN_TIMEOUT", DRAIN_TIMEOUT)];
        if self.opts.log_dir.is_some() {
            env.push(("RUST_LOG", "shellflip_runtime=debug,info"));
        }
        let mut service = match Service::start(
            exe,
            &[],
            &env,
            self.log_for(key).as_deref(),
            self.clock,
            self.reaper,
        ) {
            Ok(service) => service,
            Err(e) => {
                result.error = Some(e);
                return result;
            }
        };
        let t = &self.timing;
        let k = self.opts.http_restarts;
        let max_time = t.warmup + t.steady + (t.gap + Duration::from_secs(10)) * k as u32;
        let load = HttpLoad::start_mix(service.addr, clients, "/", max_time);
        std::thread::sleep(t.warmup);
        let steady_from = Instant::now();
        std::thread::sleep(t.steady);
        let steady_to = Instant::now();
        let mut triggers = Vec::new();
        for i in 1..=k {
            progress(&format!("{name}: restart {i}/{k} under HTTP load"));
            let t0 = Instant::now();
            match self.restart_once(&mut service, Trigger::Ours, i) {
                Ok((_, record)) => {
                    triggers.push(t0);
                    result.restarts.push(HttpRestart {
                        old_gone_ms: record.old_gone_ms,
                        failures: BTreeMap::new(),
                    });
                }
                Err(e) => {
                    result.error = Some(format!("{e}; stderr:\n{}", tail(&service.log)));
                    break;
                }
            }
            std::thread::sleep(t.gap);
        }
        let end = Instant::now();
        let report = load.stop();
        progress("done\n");
        service.stop(self.reaper);
        summarize_http(
            &mut result,
            &report,
            (steady_from, steady_to),
            &triggers,
            end,
        );
        result
    }
}

/// Fills `result` from what the clients saw.
fn summarize_http(
    result: &mut HttpSystemResult,
    report: &HttpReport,
    steady: (Instant, Instant),
    triggers: &[Instant],
    end: Instant,
) {
    result.closed_idle = report.closed_idle;
    let mut steady_ms = Vec::new();
    let mut restart_ms = Vec::new();
    for sample in &report.samples {
        let kind = kind_key(sample.kind).to_string();
        *result.requests.entry(kind.clone()).or_insert(0) += 1;
        // The restart this request began after, if any.
        let restart = triggers.iter().rposition(|&t0| sample.started >= t0);
        match &sample.outcome {
            Err(e) => {
                *result.failures.entry(kind.clone()).or_insert(0) += 1;
                if result.failure_examples.len() < 5 {
                    result.failure_examples.push(format!("{kind}: {e}"));
                }
                if let Some(r) = restart.and_then(|i| result.restarts.get_mut(i)) {
                    *r.failures.entry(kind).or_insert(0) += 1;
                }
            }
            Ok(_) => {
                if sample.started >= steady.0 && sample.started < steady.1 {
                    steady_ms.push(ms(sample.latency));
                }
                if let Some(i) = restart {
                    let t0 = triggers[i];
                    let gone = result.restarts[i]
                        .old_gone_ms
                        .map_or(Duration::ZERO, |g| Duration::from_secs_f64(g / 1000.0));
                    let window_end = (t0 + gone.max(Duration::from_millis(100))).min(end);
                    if sample.started < window_end {
                        restart_ms.push(ms(sample.latency));
                    }
                }
            }
        }
    }
    result.steady_p50_ms = percentile(&steady_ms, 50.0);
    result.steady_p99_ms = percentile(&steady_ms, 99.0);
    result.restart_p50_ms = percentile(&restart_ms, 50.0);
    result.restart_p99_ms = percentile(&restart_ms, 99.0);
}
