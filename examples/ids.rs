//! A service that hands out unique IDs across restarts: each connection is
//! answered `id=<n> pid=<pid>`, `n` one more than the last, whichever
//! generation answers. The counter is handed over; from the moment the
//! new generation took its snapshot the old one answers
//! `handed-over pid=<pid>` instead of an ID, so no ID is ever given twice
//! (`StateCell::update_if_owned`).
//!
//! ```text
//! cargo run --example ids -- --listen 127.0.0.1:7005 --control /tmp/ids.sock [--slow-init-ms 1000]
//! ```
use std::time::Duration;

use clap::Parser;
use shellflip::{restartable, Context, HandoverState};
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7005")]
    listen: String,
    #[arg(long, default_value = "/tmp/shellflip-ids.sock")]
    control: std::path::PathBuf,
    /// How long this build takes to initialise, after it received the state.
    #[arg(long, default_value_t = 0)]
    slow_init_ms: u64,
}

#[derive(HandoverState, Default)]
struct Ids {
    last: u64,
}

#[restartable]
async fn main(ctx: Context<Ids>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = ctx.tcp_listener("ids", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let ids = ctx.state();
    tokio::time::sleep(Duration::from_millis(args.slow_init_ms)).await;
    ctx.ready()?;
    let pid = std::process::id();
    println!(
        "ready pid={pid} generation={} listen={}",
        ctx.generation(),
        listener.local_addr()?
    );
    while let Some((mut stream, _)) = ctx.accept(&listener).await {
        // None once the successor owns the counter: no ID is given twice.
        let id = ids.update_if_owned(|ids| {
            ids.last += 1;
            ids.last
        });
        ctx.spawn(async move {
            let line = match id {
                Some(id) => format!("id={id} pid={pid}\n"),
                None => format!("handed-over pid={pid}\n"),
            };
            let _ = stream.write_all(line.as_bytes()).await;
        });
    }
    Ok(())
}
