//! The benchmarked service on crates.io `ecdysis` 1.1 (Cloudflare's),
//! written as its docs and `examples/tokio_echo.rs` intend: the listener comes from
//! `TokioEcdysisBuilder::listen_tcp` (bound by the first process, inherited
//! by address after), the upgrade is triggered by a connection to the
//! `upgrade_on_socket` path (`--control`), which ecdysis closes once the
//! upgrade is over, and the generation is counted in an environment
//! variable the way the example counts its reloads. It speaks the echo
//! protocol, or the pid protocol with `--protocol pid`, with the bench's
//! shared handler (`service::serve`), on the Tokio runtime chosen by
//! `--flavor` (`multi_thread` unless given).
use std::sync::atomic::{AtomicU64, Ordering};

use ecdysis::tokio_ecdysis::{SignalKind, StopOnShutdown, TokioEcdysisBuilder};
use shellflip_bench::service::{serve, Args, DRAIN_TIMEOUT};
use shellflip_testkit::proto::ready_line;
use tokio_stream::StreamExt;
use tokio_util::task::TaskTracker;

const GENERATION_VAR: &str = "ECDYSIS_BENCH_GENERATION";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    // Still single-threaded here, so the environment may be changed; the
    // next process inherits it.
    let generation = std::env::var(GENERATION_VAR)
        .ok()
        .and_then(|g| g.parse::<u64>().ok())
        .map_or(1, |g| g + 1);
    std::env::set_var(GENERATION_VAR, generation.to_string());
    args.flavor
        .builder()
        .build()?
        .block_on(run(args, generation))
}

async fn run(args: Args, generation: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = TokioEcdysisBuilder::new(SignalKind::hangup())?;
    builder.upgrade_on_socket(&args.control)?;
    let mut stream = builder.listen_tcp(StopOnShutdown::Yes, args.listen)?;
    let (_ecdysis, upgraded) = builder.ready()?;
    let pid = std::process::id();
    println!("{}", ready_line(pid, generation, args.listen));
    let served = AtomicU64::new(0);
    let server = async {
        // Ends when ecdysis stops the listener after a successful upgrade.
        let tasks = TaskTracker::new();
        while let Some(accepted) = stream.next().await {
            match accepted {
                Ok(client) => {
                    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                    tasks.spawn(serve(args.protocol, client, pid, generation, n));
                }
                Err(e) => eprintln!("accept failed: {e}"),
            }
        }
        tasks.close();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, tasks.wait()).await;
    };
    let (exit, ()) = tokio::join!(upgraded, server);
    if let Err(e) = exit {
        eprintln!("ecdysis: {e}");
    }
    Ok(())
}
