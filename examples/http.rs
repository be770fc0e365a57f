//! An HTTP service (axum) whose in-flight requests complete across a
//! restart, with a request counter carried to the next generation.
//!
//! ```text
//! cargo run --example http -- --listen 127.0.0.1:8080 --control /tmp/shellflip-http.sock
//! curl 'http://127.0.0.1:8080/slow?ms=5000' &   # still answered by the old generation
//! shellflip restart /tmp/shellflip-http.sock
//! curl http://127.0.0.1:8080/                   # answered by the new one; the count goes on
//! ```
//!
//! `GET /` answers `pid=<pid> generation=<g> requests=<n>`; `GET /slow?ms=N`
//! waits N milliseconds (at most 60 s) first.
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use serde::Deserialize;
use shellflip::{restartable, Context, HandoverState, StateCell};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Control socket path.
    #[arg(long, default_value = "/tmp/shellflip-http.sock")]
    control: PathBuf,
}

/// Carried across restarts.
#[derive(HandoverState, Default)]
struct Counters {
    requests: u64,
}

#[derive(Clone)]
struct App {
    counters: StateCell<Counters>,
    generation: u64,
}

#[derive(Deserialize)]
struct Slow {
    ms: u64,
}

#[restartable(drain_timeout = "70s")]
async fn main(ctx: Context<Counters>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = ctx.tcp_listener("http", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let app = App {
        counters: ctx.state(),
        generation: ctx.generation(),
    };
    let router = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow))
        .with_state(app);
    ctx.ready()?;
    let addr = listener.local_addr()?;
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!("ready pid={pid} generation={generation} listen={addr}");
    // Stops accepting when the next generation is ready, then waits for the
    // requests in flight; the runtime bounds that by the drain timeout.
    axum::serve(listener, router)
        .with_graceful_shutdown(ctx.shutdown())
        .await?;
    Ok(())
}

async fn hello(State(app): State<App>) -> String {
    let n = app.counters.update(|c| {
        c.requests += 1;
        c.requests
    });
    format!(
        "pid={} generation={} requests={n}\n",
        std::process::id(),
        app.generation
    )
}

async fn slow(state: State<App>, Query(slow): Query<Slow>) -> String {
    tokio::time::sleep(Duration::from_millis(slow.ms.min(60_000))).await;
    hello(state).await
}
