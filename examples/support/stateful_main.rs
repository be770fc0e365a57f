// The service shared by examples/stateful.rs and examples/stateful_v2.rs,
// which differ only in their `State` (included into each with `include!`):
// each defines the struct, with the same fields, and its `record_visit`.
//
// Each connection gets one line and is closed:
// `pid=.. generation=.. visits=<carried> names=<carried> seen=<skipped> beacon=<fd>`,
// and a line is appended to the audit file through the handed-over fd.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Parser;
use shellflip::{restartable, Context};
use tokio::io::AsyncWriteExt;

impl State {
    /// The first generation's state: nothing carried yet, the audit file
    /// opened for appending, the beacon bound to a free port.
    fn open(audit: &std::path::Path) -> std::io::Result<State> {
        Ok(State {
            visits: 0,
            names: Vec::new(),
            seen: 0,
            audit: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(audit)?,
            beacon: std::net::UdpSocket::bind("127.0.0.1:0")?,
        })
    }
}

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7002")]
    listen: String,
    /// Control socket path.
    #[arg(long, default_value = "/tmp/shellflip-stateful.sock")]
    control: PathBuf,
    /// Audit log, opened once by the first generation and handed over as an
    /// open file.
    #[arg(long, default_value = "/tmp/shellflip-stateful-audit.log")]
    audit: PathBuf,
}

#[restartable]
async fn main(ctx: Context<State>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let listener = ctx.tcp_listener("stateful", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let state = ctx.try_state_or_else(|| State::open(&args.audit))?;
    state.update(|s| s.names.push(format!("g{}", ctx.generation())));
    ctx.ready()?;
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!(
        "ready pid={pid} generation={generation} listen={}",
        listener.local_addr()?
    );
    while let Some((mut stream, _)) = ctx.accept(&listener).await {
        let line = state.update(|s| -> std::io::Result<String> {
            let visits = s.record_visit();
            s.seen += 1;
            writeln!(s.audit, "visit {visits} by generation {generation}")?;
            Ok(format!(
                "pid={pid} generation={generation} visits={visits} names={} seen={} beacon={}\n",
                s.names.join(","),
                s.seen,
                s.beacon.local_addr()?
            ))
        })?;
        ctx.spawn(async move { stream.write_all(line.as_bytes()).await });
    }
    Ok(())
}
