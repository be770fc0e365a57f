//! What NOT to do: the echo service (same protocol, options and `ready` line as
//! `examples/echo.rs`) accepting with a plain Tokio loop instead of `ctx.accept`.
//!
//! ```text
//! cargo run --example plain_loop -- --listen 127.0.0.1:7004 --control /tmp/plain.sock
//! SHELLFLIP_PROBATION=10s ...  # then `shellflip restart /tmp/plain.sock` and connect
//! ```
//!
//! `select!` on `ctx.shutdown()` and `listener.accept()` stops at the right time, but also
//! accepts while a successor is on probation, when this generation must take nothing: after
//! `restarted` some new connections still reach the old generation, and what they change in
//! the state is lost. The runtime notices and says so once on stderr, naming the listener and
//! the fix (`tests/plain_accept.rs` checks it). Use `while let Some(..) = ctx.accept(&listener)`
//! as `examples/echo.rs` does.
use clap::Parser;
use shellflip::{restartable, Context, HandoverState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7004")]
    listen: String,
    #[arg(long, default_value = "/tmp/shellflip-plain-loop.sock")]
    control: std::path::PathBuf,
}

#[derive(HandoverState, Default)]
struct EchoState {
    served: u64,
}

#[restartable]
async fn main(ctx: Context<EchoState>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let listener = ctx.tcp_listener("plain", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let state = ctx.state();
    ctx.ready()?;
    let (pid, generation, addr) = (std::process::id(), ctx.generation(), listener.local_addr()?);
    println!("ready pid={pid} generation={generation} listen={addr}");
    // The mistake: nothing here pauses during a successor's probation.
    loop {
        tokio::select! {
            _ = ctx.shutdown() => return Ok(()),
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                let served = state.update(|s| {
                    s.served += 1;
                    s.served
                });
                ctx.spawn(echo(
                    stream,
                    format!("pid={pid} generation={generation} served={served}\n"),
                ));
            }
        }
    }
}

async fn echo(stream: TcpStream, greeting: String) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    writer.write_all(greeting.as_bytes()).await?;
    let mut lines = BufReader::new(reader).lines();
    while let Some(line) = lines.next_line().await? {
        writer.write_all(format!("{line}\n").as_bytes()).await?;
    }
    Ok(())
}
