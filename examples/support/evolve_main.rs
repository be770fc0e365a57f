// The service shared by the builds in examples/evolve/, which differ only
// in their `State` (each file declares it, then includes this one): what a
// deploy that changes the state struct does to the state, for real.
//
// Each build's `State` has `fn initial() -> State` (the first generation's
// values), `fn served(&mut self) -> &mut u64` (a counter of connections) and
// `fn describe(&self) -> String` (its other values as `key=value` pairs).
//
// Each connection gets the greeting
// `pid=.. generation=.. served=.. <describe>`, then its lines echoed back
// (the echo example's protocol, so the tests' load driver works with it).
//
// Run: `cargo run --example evolve_base -- --listen 127.0.0.1:7004 --control /tmp/evolve.sock`,
// then build another variant to the same path and `shellflip restart /tmp/evolve.sock`.

use std::path::PathBuf;

use shellflip::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing_subscriber::EnvFilter;

/// `--listen ADDR --control PATH`.
fn args() -> Result<(String, PathBuf), String> {
    let mut listen = "127.0.0.1:7004".to_owned();
    let mut control = PathBuf::from("/tmp/shellflip-evolve.sock");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--listen" => listen = value,
            "--control" => control = value.into(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((listen, control))
}

fn main() -> std::process::ExitCode {
    // Installed before `run` rather than in the service's code: the state
    // is decoded before that code runs, and the decoder logs what it drops
    // and what it migrates.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    shellflip::run(shellflip::Config::default(), serve)
}

async fn serve(ctx: Context<State>) -> Result<(), Box<dyn std::error::Error>> {
    let (listen, control) = args()?;
    let listener = ctx.tcp_listener("evolve", listen.as_str())?;
    ctx.control_socket(&control)?;
    let state = ctx.state_or_else(State::initial);
    ctx.ready()?;
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!(
        "ready pid={pid} generation={generation} listen={}",
        listener.local_addr()?
    );
    while let Some((stream, _)) = ctx.accept(&listener).await {
        let greeting = state.update(|s| {
            let served = s.served();
            *served += 1;
            let served = *served;
            format!("pid={pid} generation={generation} served={served} {}\n", s.describe())
        });
        ctx.spawn(echo(stream, greeting));
    }
    Ok(())
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
