//! A restartable echo service (`cargo run --example echo`, `shellflip restart /tmp/shellflip-echo.sock`):
//! each connection gets `pid=<pid> generation=<g> served=<n>`, then its lines echoed until EOF;
//! `served` counts connections across generations (it is handed over).
use clap::Parser;
use shellflip::{restartable, Context, HandoverState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    #[arg(long, default_value = "/tmp/shellflip-echo.sock")]
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
    let listener = ctx.tcp_listener("echo", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let state = ctx.state();
    ctx.ready()?;
    let (pid, generation, addr) = (std::process::id(), ctx.generation(), listener.local_addr()?);
    println!("ready pid={pid} generation={generation} listen={addr}");
    // Until a successor takes over or a stop: then in-flight echoes drain.
    while let Some((stream, _)) = ctx.accept(&listener).await {
        let served = state.update(|s| {
            s.served += 1;
            s.served
        });
        ctx.spawn(echo(
            stream,
            format!("pid={pid} generation={generation} served={served}\n"),
        ));
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
