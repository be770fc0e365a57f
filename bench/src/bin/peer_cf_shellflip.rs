//! The benchmarked service on crates.io `shellflip` 2.1 (Cloudflare's),
//! written as its docs and `examples/restarter.rs` intend, plus what that
//! crate leaves to its user: passing the listening socket to the new
//! process. It speaks the echo protocol, or the pid protocol with
//! `--protocol pid`, with the bench's shared handler (`service::serve`), on
//! the Tokio runtime chosen by `--flavor` (`multi_thread` unless given).
//!
//! shellflip 2.1 spawns the new process itself and gives the old one a
//! one-way handover pipe (`LifecycleHandler::send_to_new_process`); a pipe
//! cannot carry a descriptor, so the careful user makes an inheritable
//! duplicate of the listener just before the spawn (`pre_new_process`),
//! writes its number into the pipe, and closes it again once the child has
//! it. The child adopts that number and sets `FD_CLOEXEC` on it again.
//!
//! Trigger: shellflip's restart coordination socket (`--control`), the
//! crate's `RestartConfig::request_restart` (from the driver, or from the
//! `trigger_cf_shellflip` process); the answer is the new pid once the new
//! process reported startup complete.
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cf_shellflip::lifecycle::{receive_from_old_process, LifecycleHandler, PipeWriter};
use cf_shellflip::{RestartConfig, ShutdownCoordinator};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use shellflip_bench::service::{serve, Args, DRAIN_TIMEOUT};
use shellflip_testkit::proto::ready_line;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the old process hands to the new one through shellflip's pipe.
struct Handover {
    /// A (close-on-exec) copy of the listener.
    listener: OwnedFd,
    /// The inheritable duplicate made for one spawn.
    inheritable: Option<OwnedFd>,
    generation: u64,
    served: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl LifecycleHandler for Handover {
    async fn pre_new_process(&mut self) {
        // F_DUPFD (not F_DUPFD_CLOEXEC): the copy survives the exec that
        // follows; the original keeps FD_CLOEXEC.
        self.inheritable = fcntl(&self.listener, FcntlArg::F_DUPFD(3))
            .ok()
            // SAFETY: F_DUPFD returned a new descriptor that nothing else owns.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    }

    async fn send_to_new_process(&mut self, mut pipe: PipeWriter) -> std::io::Result<()> {
        let fd = self.inheritable.take().ok_or_else(|| {
            std::io::Error::other("could not duplicate the listener for the new process")
        })?;
        let result = async {
            pipe.write_u64(fd.as_raw_fd() as u64).await?;
            pipe.write_u64(self.generation + 1).await?;
            pipe.write_u64(self.served.load(Ordering::Relaxed)).await?;
            pipe.flush().await
        }
        .await;
        // The child has its copy now (it was spawned before this call).
        drop(fd);
        result
    }
}

/// Sets `FD_CLOEXEC` on an adopted descriptor so that it is not leaked
/// into the next generation a second time.
fn set_cloexec(fd: &impl AsFd) -> std::io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    args.flavor.builder().build()?.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let (listener, generation, served) = match receive_from_old_process() {
        Some(mut pipe) => {
            let fd = pipe.read_u64().await? as RawFd;
            let generation = pipe.read_u64().await?;
            let served = pipe.read_u64().await?;
            // SAFETY: the previous generation duplicated its listener to
            // this number for us, inherited across exec; nothing else here
            // owns it.
            let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
            set_cloexec(&std)?;
            std.set_nonblocking(true)?;
            (TcpListener::from_std(std)?, generation, served)
        }
        None => (TcpListener::bind(args.listen).await?, 1, 0),
    };
    let served = Arc::new(AtomicU64::new(served));
    let restart_conf = RestartConfig {
        enabled: true,
        coordination_socket_path: args.control.clone(),
        // Keep serving if the new process fails to start.
        exit_on_error: false,
        lifecycle_handler: Box::new(Handover {
            listener: listener.as_fd().try_clone_to_owned()?,
            inheritable: None,
            generation,
            served: Arc::clone(&served),
        }),
        ..Default::default()
    };
    let restart_task = restart_conf.try_into_restart_task()?;
    tokio::pin!(restart_task);
    // The restart task would report readiness when first polled; report it
    // now, before printing the ready line.
    cf_shellflip::startup_complete()?;
    let pid = std::process::id();
    println!("{}", ready_line(pid, generation, listener.local_addr()?));
    // The crate's way to wait for in-flight connections: each task holds
    // a handle; `shutdown` waits until all are dropped.
    let shutdown = ShutdownCoordinator::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                    let handle = shutdown.handle();
                    let protocol = args.protocol;
                    tokio::spawn(async move {
                        let result = serve(protocol, stream, pid, generation, n).await;
                        drop(handle);
                        result
                    });
                }
                Err(e) => eprintln!("accept failed: {e}"),
            },
            res = &mut restart_task => {
                if let Err(e) = res {
                    eprintln!("restart task failed: {e}");
                }
                break;
            }
        }
    }
    // Stop accepting (the new process has its own descriptor), drain, exit.
    drop(listener);
    shutdown
        .shutdown_with_timeout(DRAIN_TIMEOUT.as_secs())
        .await;
    Ok(())
}
