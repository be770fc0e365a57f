//! The echo service with faults to inject on purpose: the fixture of the
//! fault-matrix tests (`tests/faults.rs`), and a way to see for yourself
//! what a failed restart looks like.
//!
//! ```text
//! cargo run --example faulty -- --listen 127.0.0.1:7003 --control /tmp/faulty.sock
//! # deploy a "bad build": the same binary with a fault, then ask for a restart
//! shellflip restart /tmp/faulty.sock    # -> exit 1 and the reason; the old generation serves on
//! ```
//!
//! `--fault` applies to the generation started with it:
//!
//! | fault | what the generation does |
//! |---|---|
//! | `panic-init` | panics before it is ready |
//! | `abort-init` | aborts (SIGABRT) before it is ready |
//! | `exit-after-ready` | reports ready, starts a `sleep 300` of its own (its pid in the file `<control>.left-behind`), then exits with status 7 50 ms later |
//! | `unhealthy-after-ready` | reports ready, then reports itself unhealthy (`ctx.unhealthy`) |
//! | `hang` | never becomes ready (prints `hanging pid=<pid>` once its control socket is open) |
//! | `slow-init=<ms>` | takes that long before it is ready (for killing the previous generation meanwhile) |
//! | `garbage-state` | hands over a state payload that is not MessagePack |
//! | `truncated-state` | hands over a state payload cut in the middle |
//!
//! `--ballast-mb N` carries a blob of N MiB in the state (made by the first
//! generation), for handing over a large state: the greeting then ends with
//! `ballast=<bytes>:<checksum>`, the same in every generation it reached.
//!
//! It speaks the echo example's protocol. Each generation prints
//! `init pid=<pid>` when its main starts and
//! `ready pid=<pid> generation=<g> listen=<addr>` when it is ready.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shellflip::{restartable, Context, HandoverState, StateDecoder, StateEncoder, StateError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7003")]
    listen: String,
    #[arg(long, default_value = "/tmp/shellflip-faulty.sock")]
    control: PathBuf,
    #[arg(long)]
    fault: Option<String>,
    /// MiB of incompressible data to carry in the state.
    #[arg(long, default_value_t = 0)]
    ballast_mb: usize,
}

/// A state with a hand-written `HandoverState`, so that its encoding can be
/// broken on purpose.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Served {
    count: u64,
    note: String,
    /// `--ballast-mb`: carried as one byte string.
    #[serde(with = "shellflip::state::bytes", default)]
    ballast: Vec<u8>,
    #[serde(skip)]
    break_encoding: Option<String>,
}

impl HandoverState for Served {
    const TYPE_NAME: &'static str = "Served";

    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        state.put_data(self)?;
        // A hook for fault injection only: it rewrites the encoded payload.
        match self.break_encoding.as_deref() {
            // 0xc1 is never valid MessagePack.
            Some("garbage-state") => state.__damage_payload(|payload| {
                payload.clear();
                payload.extend_from_slice(&[0xc1; 64]);
            }),
            Some("truncated-state") => {
                state.__damage_payload(|payload| payload.truncate(payload.len() / 2))
            }
            _ => {}
        }
        Ok(())
    }

    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        state.take_data()
    }
}

#[restartable(ready_timeout = "10s")]
async fn main(ctx: Context<Served>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let fault = args.fault.unwrap_or_default();
    println!("init pid={}", std::process::id());
    let listener = ctx.tcp_listener("faulty", args.listen.as_str())?;
    ctx.control_socket(&args.control)?;
    let state = ctx.state();
    let ballast = state.update(|s| {
        s.note = "a".repeat(100);
        s.break_encoding = Some(fault.clone());
        // Made by the first generation only: a later one shows what it was
        // handed (nothing, if the handover lost it).
        if ctx.generation() == 1 && args.ballast_mb > 0 {
            s.ballast = ballast(args.ballast_mb << 20);
        }
        match s.ballast.len() {
            0 => String::new(),
            len => format!(" ballast={len}:{:016x}", fnv1a(&s.ballast)),
        }
    });
    match fault.as_str() {
        "panic-init" => panic!("injected panic during initialisation"),
        "abort-init" => std::process::abort(),
        "hang" => {
            // The control socket is open (and never answered: a generation
            // answers it from ready() on).
            println!("hanging pid={}", std::process::id());
            std::future::pending::<()>().await
        }
        slow if slow.starts_with("slow-init=") => {
            let ms: u64 = slow["slow-init=".len()..].parse()?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    ctx.ready()?;
    if fault == "unhealthy-after-ready" {
        ctx.unhealthy("injected: the warm-up check failed").await?;
    }
    if fault == "exit-after-ready" {
        // A process of its own that would outlive it (say a helper it
        // started): the rollback ends it too.
        let helper = std::process::Command::new("sleep").arg("300").spawn()?;
        std::fs::write(
            args.control.with_extension("left-behind"),
            helper.id().to_string(),
        )?;
        // Long enough for READY to reach the previous generation.
        tokio::time::sleep(Duration::from_millis(50)).await;
        std::process::exit(7);
    }
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!(
        "ready pid={pid} generation={generation} listen={}",
        listener.local_addr()?
    );
    while let Some((mut stream, _)) = ctx.accept(&listener).await {
        let served = state.update(|s| {
            s.count += 1;
            s.count
        });
        let ballast = ballast.clone();
        ctx.spawn(async move {
            let (reader, mut writer) = stream.split();
            let line = format!("pid={pid} generation={generation} served={served}{ballast}\n");
            writer.write_all(line.as_bytes()).await?;
            let mut lines = BufReader::new(reader).lines();
            while let Some(line) = lines.next_line().await? {
                writer.write_all(format!("{line}\n").as_bytes()).await?;
            }
            Ok::<(), std::io::Error>(())
        });
    }
    Ok(())
}

/// `len` bytes of a xorshift sequence: incompressible, the same every time.
fn ballast(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The 64-bit FNV-1a hash: a checksum of the ballast to compare across
/// generations.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}
