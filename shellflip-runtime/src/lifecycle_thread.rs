//! The lifecycle thread: a current-thread Tokio runtime on a thread of its
//! own, where the supervisor, the control socket, the channels to the other
//! generations, the spawner's client and the signal handlers run.
//!
//! Why: a restart is a chain of small steps (read the request, ask the
//! spawner, read READY, pause, answer). On the service's own runtime each
//! step waits its turn behind the service's tasks — on a busy
//! single-threaded runtime, milliseconds per step. Here they wait for
//! nothing but a CPU, and `status` is answered however busy the service is.
//! The service's runtime and this one share only thread-safe state (watch
//! channels, tokens, the registry).

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;

/// The running lifecycle thread. Dropping it stops its runtime (tasks still
/// there are dropped) and joins the thread.
pub(crate) struct LifecycleThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl LifecycleThread {
    /// Starts the thread. Call it after any `fork` (the spawner's): from
    /// here on the process has threads.
    pub(crate) fn start() -> io::Result<LifecycleThread> {
        let runtime: Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("shellflip")
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shellflip".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        Ok(LifecycleThread {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The runtime's handle: spawn on it, or `enter` it to create the
    /// sockets and signal streams the lifecycle uses.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for LifecycleThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
