//! The echo service with a large `HandoverState` (`--state-mb N`: a byte
//! blob and a map of small structs, see `shellflip_bench::state`), to time
//! the state handover from trigger to READY.
use shellflip::{restartable, Context};
use shellflip_bench::service::{echo, Args};
use shellflip_bench::state::BenchState;
use shellflip_testkit::proto::{greeting, ready_line};

#[restartable]
async fn main(ctx: Context<BenchState>) -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let listener = ctx.tcp_listener("echo", args.listen)?;
    ctx.control_socket(&args.control)?;
    let state = ctx.state_or_else(|| BenchState::of_size(args.state_mb << 20));
    let entries = state.lock().entries.len();
    ctx.ready()?;
    let (pid, generation) = (std::process::id(), ctx.generation());
    println!(
        "{} entries={entries}",
        ready_line(pid, generation, listener.local_addr()?)
    );
    let mut served = 0;
    loop {
        let (stream, _) = tokio::select! {
            _ = ctx.shutdown() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        served += 1;
        ctx.spawn(echo(stream, greeting(pid, generation, served)));
    }
}
