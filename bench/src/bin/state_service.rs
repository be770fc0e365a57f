//! The echo service with a large `HandoverState` (`--state-mb N`: a byte
//! blob and a map of small structs, see `shellflip_bench::state`), to time
//! the state handover from trigger to READY. Every connection reads the
//! state (`StateCell::read()`, [`BenchState::read_probe`]) before it
//! greets, and puts what it read in its greeting (`read=..`, after the
//! fields the prober parses): the prober's answers during a handover come
//! from connections that read the state while the snapshot is encoded.
//! When a generation stops serving it prints its peak RSS
//! ([`peak_line`]).
use shellflip::{restartable, Context};
use shellflip_bench::service::{echo, Args};
use shellflip_bench::state::{peak_line, vm_hwm_kib, BenchState};
use shellflip_testkit::proto::{greeting, ready_line};

#[restartable]
async fn main(ctx: Context<BenchState>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let listener = ctx.tcp_listener("echo", args.listen)?;
    ctx.control_socket(&args.control)?;
    let state = ctx.state_or_else(|| BenchState::of_size(args.state_mb << 20));
    let entries = state.read().entries.len();
    ctx.ready()?;
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!(
        "{} entries={entries}",
        ready_line(pid, generation, listener.local_addr()?)
    );
    let mut served = 0;
    loop {
        let (stream, _) = tokio::select! {
            _ = ctx.shutdown() => {
                // Stopping: after a restart, once the successor is READY
                // (the handover is over).
                match std::fs::read_to_string("/proc/self/status")
                    .ok()
                    .as_deref()
                    .and_then(vm_hwm_kib)
                {
                    Some(kib) => println!("{}", peak_line(pid, kib)),
                    None => eprintln!("state_service: no VmHWM in /proc/self/status"),
                }
                return Ok(());
            }
            accepted = listener.accept() => accepted?,
        };
        served += 1;
        let state = state.clone();
        ctx.spawn(async move {
            // The read lock is released at the end of this statement,
            // before the first await.
            let read = state.read().read_probe(served);
            let greeting = greeting(pid, generation, served);
            echo(stream, format!("{} read={read}\n", greeting.trim_end())).await
        });
    }
}
