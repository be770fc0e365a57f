//! The HTTP example's service (`GET /`, `GET /slow?ms=N`) on shellflip,
//! served the way the README said before `shellflip::http` existed:
//! `axum::serve(listener, router).with_graceful_shutdown(ctx.shutdown())`.
//! The benchmark runs it beside examples/http.rs, which serves the same
//! router with `shellflip::http::serve`.
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use shellflip::{restartable, Context, HandoverState, StateCell};
use shellflip_bench::service::Args;
use shellflip_testkit::proto::ready_line;

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
    let args = Args::from_env();
    let listener = ctx.tcp_listener("http", args.listen)?;
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
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!("{}", ready_line(pid, generation, listener.local_addr()?));
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
    tokio::time::sleep(Duration::from_millis(slow.ms).min(Duration::from_secs(60))).await;
    hello(state).await
}
