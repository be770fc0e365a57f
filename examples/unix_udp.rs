//! A Unix-socket listener and a UDP socket handed over together.
//!
//! ```text
//! cargo run --example unix_udp -- --unix /tmp/shellflip-uu.sock --udp 127.0.0.1:7001 \
//!     --control /tmp/shellflip-uu-control.sock
//! ```
//!
//! On the Unix socket each connection gets `pid=<pid> generation=<g>` and is
//! closed; each UDP datagram is answered with `pid=<pid> generation=<g> <datagram>`.
//! Both sockets are the same kernel sockets in every generation: datagrams
//! queued during a restart are answered by whichever generation reads them.
//!
//! With `--journal PATH`, the first generation opens `PATH` for appending and
//! keeps the descriptor with `ctx.fd`; every generation appends its line
//! `pid=<pid> generation=<g>` through that same open file, even after the
//! file was moved or renamed (a descriptor is handed over, not a path).
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use shellflip::{restartable, Context};
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Args {
    /// Path of the Unix stream listener.
    #[arg(long, default_value = "/tmp/shellflip-uu.sock")]
    unix: PathBuf,
    /// Address of the UDP socket.
    #[arg(long, default_value = "127.0.0.1:7001")]
    udp: String,
    /// Control socket path.
    #[arg(long, default_value = "/tmp/shellflip-uu-control.sock")]
    control: PathBuf,
    /// A file to append one line per generation to, through a descriptor
    /// kept across restarts.
    #[arg(long)]
    journal: Option<PathBuf>,
}

#[restartable]
async fn main(ctx: Context) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let unix = ctx.unix_listener("unix", &args.unix)?;
    let udp = ctx.udp_socket("udp", args.udp.as_str())?;
    ctx.control_socket(&args.control)?;
    let tag = format!("pid={} generation={}", std::process::id(), ctx.generation());
    if let Some(path) = &args.journal {
        // Opened by the first generation; the later ones get the same open
        // file (and write nothing under a path it no longer has).
        let journal = ctx.fd("journal", || {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Ok(file.into())
        })?;
        writeln!(File::from(journal), "{tag}")?;
    }
    ctx.ready()?;
    println!(
        "ready {tag} udp={} unix={}",
        udp.local_addr()?,
        args.unix.display()
    );
    let mut datagram = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            // Connections: none while a successor is on probation; `None`
            // once this generation stops accepting for good, which ends the
            // datagrams too.
            accepted = ctx.accept(&unix) => {
                let Some((mut stream, _)) = accepted else {
                    return Ok(());
                };
                let line = format!("{tag}\n");
                ctx.spawn(async move { stream.write_all(line.as_bytes()).await });
            }
            // Datagrams have no accept to pause: during a successor's
            // probation this generation keeps reading the shared socket, so
            // each datagram is answered by one generation or the other.
            received = udp.recv_from(&mut datagram) => {
                let (len, peer) = received?;
                let mut answer = format!("{tag} ").into_bytes();
                answer.extend_from_slice(&datagram[..len]);
                udp.send_to(&answer, peer).await?;
            }
        }
    }
}
