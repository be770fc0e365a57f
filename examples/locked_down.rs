//! The echo service (same protocol, options and `ready` line as `examples/echo.rs`) that locks
//! itself down once ready: `cargo run --example locked_down -- --control /tmp/locked.sock`,
//! then `shellflip restart /tmp/locked.sock`.
//!
//! Right after `ctx.ready()` it installs a seccomp filter on all its threads (TSYNC) under which
//! these fail with EPERM: starting a program or a process (`execve`, `execveat`, `fork`, `vfork`,
//! and `clone` without `CLONE_THREAD`: threads can still be created) and taking over another
//! process (`ptrace`, `process_vm_writev`). `clone3` gets ENOSYS, as its flags are out of a
//! filter's reach; libc then falls back to `clone`, whose flags are checked. It then proves the
//! lockdown by running `/bin/true`, which must fail with EPERM.
//!
//! Restarts still work: the next generation is exec'd by the spawner, a helper process that
//! `shellflip::run` (called by the code `#[restartable]` generates) forks at start-up, before the
//! body of `main` runs and so before the lockdown. With `SHELLFLIP_SPAWNER=inline` the service
//! spawns the next generation itself: a restart then fails with "Operation not permitted", and
//! this generation keeps serving.
//!
//! On stderr it prints `locked pid=<pid>` once the filter is in place, then
//! `exec-denied pid=<pid>` once the proof passed (the test harness follows stdout only for the
//! `ready` lines). The filter is a short deny list for the demonstration; see
//! `docs/systemd.md` ("Locking the service down") for what a real one must keep allowing.
use std::io::{ErrorKind, Write};

use clap::Parser;
use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use shellflip::{restartable, Context, HandoverState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn std::error::Error>;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: String,
    #[arg(long, default_value = "/tmp/shellflip-locked-down.sock")]
    control: std::path::PathBuf,
}

#[derive(HandoverState, Default)]
struct EchoState {
    served: u64,
}

#[restartable]
async fn main(ctx: Context<EchoState>) -> Result<(), BoxError> {
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

    lock_down()?;
    say(&format!("locked pid={pid}"));
    match std::process::Command::new("/bin/true").status() {
        Err(e) if e.kind() == ErrorKind::PermissionDenied => say(&format!("exec-denied pid={pid}")),
        Err(e) => return Err(format!("running /bin/true failed, but not with EPERM: {e}").into()),
        Ok(status) => return Err(format!("not locked down: /bin/true ran ({status})").into()),
    }

    // Until a successor takes over or a stop (paused while a successor is on probation; failed
    // accepts are retried and logged by `ctx.accept`).
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

/// Installs the filters on every thread of the process (threads started later inherit them).
/// seccompiler also sets `no_new_privs`, which the kernel requires of an unprivileged process.
fn lock_down() -> Result<(), BoxError> {
    let arch = std::env::consts::ARCH.try_into()?;
    // `clone` creates a process, not a thread, when CLONE_THREAD is clear in its flags (the
    // first argument on x86_64, aarch64 and riscv64, the architectures seccompiler supports).
    let new_process = SeccompRule::new(vec![SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        0,
    )?])?;
    let mut denied = vec![
        (libc::SYS_execve, vec![]),
        (libc::SYS_execveat, vec![]),
        (libc::SYS_clone, vec![new_process]),
        // Nor may it take over another process, such as its spawner (a child of the same user).
        (libc::SYS_ptrace, vec![]),
        (libc::SYS_process_vm_writev, vec![]),
    ];
    // aarch64 and riscv64 have no fork or vfork system call: libc uses clone there.
    #[cfg(target_arch = "x86_64")]
    denied.extend([(libc::SYS_fork, vec![]), (libc::SYS_vfork, vec![])]);
    let allow = SeccompAction::Allow;
    let filters = [
        SeccompFilter::new(
            denied.into_iter().collect(),
            allow.clone(),
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )?,
        // A filter has one action on a match, hence a second one for ENOSYS.
        SeccompFilter::new(
            [(libc::SYS_clone3, vec![])].into_iter().collect(),
            allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )?,
    ];
    for filter in filters {
        let program: BpfProgram = filter.try_into()?;
        seccompiler::apply_filter_all_threads(&program)?;
    }
    Ok(())
}

/// One line on stderr in a single write, so that it is not interleaved with the lines of
/// another generation sharing the pipe.
fn say(line: &str) {
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
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
