//! The echo example's accept loop on a bare tokio listener, no restart
//! framework: the baseline of the serving-overhead measurement. Same
//! runtime (multi-thread, one worker per core), same handler, same
//! protocol; stopped with SIGTERM.
use std::sync::atomic::{AtomicU64, Ordering};

use shellflip_bench::service::{echo, Args};
use shellflip_testkit::proto::{greeting, ready_line};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let listener = TcpListener::bind(args.listen).await?;
    let mut terminate = signal(SignalKind::terminate())?;
    let pid = std::process::id();
    println!("{}", ready_line(pid, 1, listener.local_addr()?));
    let served = AtomicU64::new(0);
    loop {
        let (stream, _) = tokio::select! {
            _ = terminate.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => { eprintln!("accept failed: {e}"); continue; }
            },
        };
        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
        tokio::spawn(echo(stream, greeting(pid, 1, n)));
    }
}
