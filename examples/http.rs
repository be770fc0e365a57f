//! An HTTP service (axum) that loses no request across a restart, with a
//! request counter carried to the next generation. Served by
//! `shellflip::http::serve` (feature `axum`): HTTP/1.1 and HTTP/2 on one
//! port, keep-alive connections moved to the new generation without a
//! failed request, WebSockets told when the drain begins.
//!
//! ```text
//! cargo run --example http --features axum -- --listen 127.0.0.1:8080 --control /tmp/shellflip-http.sock
//! curl 'http://127.0.0.1:8080/slow?ms=5000' &   # still answered by the old generation
//! shellflip restart /tmp/shellflip-http.sock
//! curl http://127.0.0.1:8080/                   # answered by the new one; the count goes on
//! ```
//!
//! `GET /` answers `pid=<pid> generation=<g> requests=<n>`; `GET /slow?ms=N`
//! waits N milliseconds (at most 60 s) first. `GET /ws` is a WebSocket that
//! echoes text messages (`sleep <ms>` is echoed after that long) and, when
//! the drain begins, finishes the message at hand and sends a close frame
//! (1001, "restarting"). Each generation prints `ready pid=.. generation=..
//! listen=..` on stdout when ready and `draining pid=.. generation=..` on
//! stderr when its drain begins.
//!
//! With the `metrics` feature, `--metrics ADDR` serves shellflip's restart
//! metrics (and any others the service records) in the Prometheus text
//! format at `http://ADDR/metrics`, through `metrics-exporter-prometheus`.
//! That listener is inherited like any other, so every generation serves it
//! and the counters go on across restarts:
//!
//! ```text
//! cargo run --example http --features axum,metrics -- --metrics 127.0.0.1:9100
//! shellflip restart /tmp/shellflip-http.sock
//! curl -s http://127.0.0.1:9100/metrics | grep shellflip_restarts_total
//! ```
//!
//! The ready line then ends with `metrics=<addr>`.
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use clap::Parser;
use serde::Deserialize;
use shellflip::http::DrainSignal;
use shellflip::{restartable, Context, HandoverState, StateCell};

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Control socket path.
    #[arg(long, default_value = "/tmp/shellflip-http.sock")]
    control: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[cfg(feature = "metrics")]
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
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

/// The longest wait `/slow` and `sleep` accept.
const LONGEST: Duration = Duration::from_secs(60);

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
        .route("/ws", get(ws))
        .with_state(app);
    // Before ready(): the runtime records its metrics from then on.
    #[cfg(feature = "metrics")]
    let metrics = match &args.metrics {
        Some(addr) => Some(prometheus::listen(&ctx, addr)?),
        None => None,
    };
    #[cfg(not(feature = "metrics"))]
    let metrics: Option<(tokio::net::TcpListener, Router)> = None;
    ctx.ready()?;
    let addr = listener.local_addr()?;
    let (pid, generation) = (std::process::id(), ctx.generation());
    let metrics_addr = match &metrics {
        Some((listener, _)) => format!(" metrics={}", listener.local_addr()?),
        None => String::new(),
    };
    println!("ready pid={pid} generation={generation} listen={addr}{metrics_addr}");
    let drain = DrainSignal::from(&ctx);
    tokio::spawn(async move {
        drain.draining().await;
        eprintln!("draining pid={pid} generation={generation}");
    });
    // Accepts until the next generation takes over, then drains: requests
    // in flight complete, keep-alive clients are told `Connection: close`,
    // HTTP/2 clients get a GOAWAY; the runtime bounds it all by the drain
    // timeout.
    let serve_metrics = async {
        if let Some((listener, router)) = metrics {
            shellflip::http::serve(&ctx, listener, router).await;
        }
    };
    tokio::join!(
        shellflip::http::serve(&ctx, listener, router),
        serve_metrics
    );
    Ok(())
}

/// `--metrics`: a Prometheus recorder, and its page on a listener of its own.
#[cfg(feature = "metrics")]
mod prometheus {
    use axum::routing::get;
    use axum::Router;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    use shellflip::Context;

    /// Buckets for the restart durations (seconds): a restart takes a few
    /// milliseconds to the ready timeout.
    const RESTART_BUCKETS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ];

    /// Installs the recorder (histograms with buckets, so that PromQL's
    /// `histogram_quantile` works) and returns the listener named `metrics`
    /// (inherited by every generation) with the router serving `/metrics`.
    pub fn listen(
        ctx: &Context<super::Counters>,
        addr: &str,
    ) -> Result<(tokio::net::TcpListener, Router), Box<dyn std::error::Error>> {
        let listener = ctx.tcp_listener("metrics", addr)?;
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Prefix("shellflip_restart".to_owned()),
                RESTART_BUCKETS,
            )?
            .install_recorder()?;
        let render = move || std::future::ready(handle.render());
        let router = Router::new().route("/metrics", get(render));
        Ok((listener, router))
    }
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
    tokio::time::sleep(Duration::from_millis(slow.ms).min(LONGEST)).await;
    hello(state).await
}

async fn ws(upgrade: WebSocketUpgrade, drain: DrainSignal) -> Response {
    upgrade.on_upgrade(move |socket| echo(socket, drain))
}

/// Echoes text messages until the client closes or the drain begins; then
/// sends a close frame and waits (bounded by the drain) for the client's.
async fn echo(mut socket: WebSocket, drain: DrainSignal) {
    loop {
        let message = tokio::select! {
            message = socket.recv() => message,
            () = drain.draining() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            Some(Ok(_)) => continue,
        };
        if let Some(ms) = text.strip_prefix("sleep ").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms).min(LONGEST)).await;
        }
        if socket.send(Message::Text(text)).await.is_err() {
            return;
        }
    }
    let close = CloseFrame {
        code: 1001, // going away
        reason: "restarting".into(),
    };
    if socket.send(Message::Close(Some(close))).await.is_err() {
        return;
    }
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Close(_) = message {
            break;
        }
    }
}
