//! The pid protocol (read a line, answer `pid=<pid>`, close) on shellflip
//! (ours), written the way a user writes a service without the attribute:
//! `shellflip::run` with a `shellflip::Config` built by hand, whose
//! `flavor` comes from `--flavor` (`multi_thread` unless given), the
//! listener accepted with `ctx.accept` and each connection served by the
//! bench's shared handler (`service::serve`) in a task the drain waits
//! for. Like the peers' services: no clap, no tracing subscriber. The
//! probation and the profile come from the environment
//! (`SHELLFLIP_PROBATION`, `SHELLFLIP_PROFILE`), as for any service.
use std::process::ExitCode;

use shellflip::{Config, Context};
use shellflip_bench::service::{serve, Args, Protocol, DRAIN_TIMEOUT};
use shellflip_testkit::proto::ready_line;

fn main() -> ExitCode {
    let args = Args::from_env();
    if args.protocol != Protocol::Pid {
        eprintln!("error: this service speaks the pid protocol only (--protocol pid)");
        return ExitCode::from(2);
    }
    let config = Config::default()
        .flavor(args.flavor.shellflip())
        .drain_timeout(DRAIN_TIMEOUT);
    shellflip::run(config, |ctx: Context| async move {
        let listener = ctx.tcp_listener("pid", args.listen)?;
        ctx.control_socket(&args.control)?;
        ctx.ready()?;
        let (pid, generation) = (std::process::id(), ctx.generation());
        println!("{}", ready_line(pid, generation, listener.local_addr()?));
        let mut served = 0;
        // Until a successor takes over (or a stop); paused during a
        // successor's probation.
        while let Some((stream, _)) = ctx.accept(&listener).await {
            served += 1;
            ctx.spawn(serve(args.protocol, stream, pid, generation, served));
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
