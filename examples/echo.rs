//! A restartable echo service.
//!
//! ```text
//! cargo run --example echo -- --listen 127.0.0.1:7000 --control /tmp/shellflip-echo.sock
//! shellflip restart /tmp/shellflip-echo.sock
//! ```
//!
//! Each connection gets `pid=<pid> generation=<g> served=<n>`, then its
//! lines echoed back until EOF. `served` counts connections across
//! generations: it lives in the handed-over state.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde::{Deserialize, Serialize};
use shellflip::handover::{decode_data, encode_data};
use shellflip::{Config, Context, HandoverState, StateError, StateFds};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    /// Control socket path.
    #[arg(long, default_value = "/tmp/shellflip-echo.sock")]
    control: PathBuf,
}

#[derive(Default, Serialize, Deserialize)]
struct EchoState {
    served: u64,
}

impl HandoverState for EchoState {
    const TYPE_NAME: &'static str = "EchoState";
    const FINGERPRINT: u64 = 1;
    fn encode_state(&self, _fds: &mut StateFds) -> Result<Vec<u8>, StateError> {
        encode_data(Self::TYPE_NAME, self)
    }
    fn decode_state(payload: &[u8], _fds: &mut StateFds) -> Result<Self, StateError> {
        decode_data(Self::TYPE_NAME, payload)
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = Config::default();
    shellflip::run(config, move |ctx: Context<EchoState>| async move {
        let listener = ctx.tcp_listener("echo", args.listen.as_str())?;
        ctx.control_socket(&args.control)?;
        let state = ctx.state();
        ctx.ready()?;
        let addr = listener.local_addr()?;
        println!(
            "ready pid={} generation={} listen={addr}",
            std::process::id(),
            ctx.generation()
        );
        loop {
            tokio::select! {
                _ = ctx.shutdown() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let served = state.update(|s| { s.served += 1; s.served });
                    ctx.spawn(echo(stream, ctx.generation(), served));
                }
            }
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

async fn echo(stream: TcpStream, generation: u64, served: u64) -> std::io::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let greeting = format!(
        "pid={} generation={generation} served={served}\n",
        std::process::id()
    );
    writer.write_all(greeting.as_bytes()).await?;
    let mut lines = BufReader::new(reader).lines();
    while let Some(line) = lines.next_line().await? {
        writer.write_all(line.as_bytes()).await?;
        writer.write_all(b"\n").await?;
    }
    Ok(())
}
