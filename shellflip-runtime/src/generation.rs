//! [`Generation`]: what one generation's parts share — the service's
//! `Context`, the supervisor and the code that runs `main` — from start-up
//! to exit: its number, the fd registry, readiness, the shutdown token and
//! the drain, the tracked tasks, the state encoder, the control socket
//! until the supervisor serves it, and the link to the previous generation.

use std::os::fd::AsFd;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::{HandoverHeader, StateReport};
use crate::child::PredecessorLink;
use crate::config::Config;
use crate::connections::SuccessorLink;
use crate::control::server::{self as control, ControlSocketFile};
use crate::error::{Error, RestartError};
pub(crate) use crate::machine::Ending;
use crate::pidfile::PidFile;
use crate::registry::{Registry, CONTROL_FD_NAME, STATE_FD_PREFIX};
use crate::state::{EncodedState, StateError, StateFds};
use crate::sync::lock;
use crate::telemetry::{self, Gauges, RestartId, Totals};

/// Encodes the service's state, putting its descriptors into the `StateFds`.
pub(crate) type StateEncoder =
    Box<dyn Fn(&mut StateFds) -> Result<EncodedState, StateError> + Send + Sync>;

/// When shutdown began, when the drain must end, and why.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Drain {
    pub began: Instant,
    pub deadline: Instant,
    pub ending: Ending,
    /// The restart that began it (its lines carry the restart's id).
    pub restart: Option<RestartId>,
}

/// Whether a generation takes new connections now (see
/// [`Context::accept`](crate::Context::accept)). Stopping for good is the
/// shutdown token's business, not this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Take new connections.
    Open,
    /// Take none for now: a successor is on probation, and this generation
    /// takes over again if the successor fails.
    Paused,
}

/// A control socket opened but not served yet.
pub(crate) struct OpenControl {
    pub path: PathBuf,
    pub file: ControlSocketFile,
    pub listener: StdUnixListener,
}

/// One generation's shared state. See the module docs.
pub(crate) struct Generation {
    /// 1 for the first generation, one more at each restart.
    pub number: u64,
    /// True when the previous generation handed over a state value.
    pub state_was_handed_over: bool,
    /// Cancelled when this generation must stop accepting.
    pub shutdown: CancellationToken,
    /// The tasks the drain waits for.
    pub tracker: TaskTracker,
    /// The link to the previous generation (`None` in a first generation).
    pub predecessor: Option<Arc<PredecessorLink>>,
    /// The pid file, written by the ready generation.
    pub pid_file: Option<PidFile>,
    /// What became of the state handed over to this generation (`None`:
    /// the service keeps no state).
    pub state_report: Option<StateReport>,
    /// True from the moment the state's snapshot is taken for a successor
    /// until that restart fails or is rolled back: changes made meanwhile
    /// are not carried.
    pub state_handed_over: Arc<watch::Sender<bool>>,
    /// Cancelled when the drain is over (for the supervisor).
    pub drained: CancellationToken,
    /// Control connections, which the drain waits for.
    pub control_connections: TaskTracker,
    /// The successor once it took over: connections are handed to it.
    pub successor: Mutex<Option<Arc<SuccessorLink>>>,
    registry: Mutex<Registry>,
    /// True once `ready()` was called (the supervisor watches it).
    pub ready: watch::Sender<bool>,
    /// Whether new connections are taken now.
    pub admission: watch::Sender<Admission>,
    /// How the state is encoded, once the service installed one
    /// (`Context::state`; once: the state is installed once).
    pub state_encoder: OnceLock<StateEncoder>,
    /// The control socket file as the previous generation recorded it.
    inherited_control_file: Option<ControlSocketFile>,
    /// The control socket, once opened, until the supervisor serves it
    /// (takes it).
    pub control: Mutex<Option<OpenControl>>,
    /// Set once, when shutdown begins.
    drain: OnceLock<Drain>,
    /// The restart metrics as the supervisor last published them.
    metrics: Mutex<(Totals, Gauges)>,
}

impl Generation {
    /// The generation `header` starts (a first one's made up by
    /// `lifecycle`), with the state it got and the control socket opened
    /// for it, if any.
    pub(crate) fn new(
        config: &Config,
        header: &HandoverHeader,
        registry: Registry,
        state_was_handed_over: bool,
        state_report: Option<StateReport>,
        predecessor: Option<Arc<PredecessorLink>>,
        control: Option<OpenControl>,
    ) -> Arc<Self> {
        Arc::new(Generation {
            number: header.generation,
            state_was_handed_over,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            predecessor,
            pid_file: config.pid_file.as_ref().map(PidFile::new),
            state_report,
            state_handed_over: Arc::new(watch::Sender::new(false)),
            drained: CancellationToken::new(),
            control_connections: TaskTracker::new(),
            successor: Mutex::new(None),
            registry: Mutex::new(registry),
            ready: watch::Sender::new(false),
            admission: watch::Sender::new(Admission::Open),
            state_encoder: OnceLock::new(),
            inherited_control_file: header.lineage.control_socket_file.clone(),
            control: Mutex::new(control),
            drain: OnceLock::new(),
            metrics: Mutex::new((Totals::default(), Gauges::default())),
        })
    }

    /// The fd registry.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Opens the control socket at `path` unless one is open already (the
    /// attribute's or SHELLFLIP_CONTROL's path takes precedence).
    pub(crate) fn open_control(&self, path: &Path) -> Result<(), Error> {
        let mut control = lock(&self.control);
        if let Some(open) = control.as_ref() {
            if open.path != path {
                tracing::info!(
                    configured = %open.path.display(),
                    asked = %path.display(),
                    "a control socket is already configured; keeping it"
                );
            }
            return Ok(());
        }
        if self.is_ready() {
            return Err(Error::ControlSocket {
                path: path.to_path_buf(),
                reason: "open the control socket before calling ready()".to_owned(),
            });
        }
        let inherited = self.inherited_control_file.as_ref();
        *control = Some(open_control_socket(&mut self.registry(), inherited, path)?);
        Ok(())
    }

    /// `ready()`: marks this generation ready. In a new generation the
    /// previous one is told at once, on the caller's thread, after the pid
    /// file names this process.
    pub(crate) fn mark_ready(&self) -> Result<(), Error> {
        if self.is_ready() {
            return Ok(());
        }
        if self.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        // Ready for the supervisor first, READY to the predecessor after:
        // whatever reaches this generation once the predecessor has read
        // READY (a stop, a request its initiator sent once answered) finds
        // it ready. Whichever of the two writes READY first, it is written
        // once, after the pid file.
        // The service installed its recorder by now: whoever hears of the
        // READY (and scrapes this generation) finds the metrics there.
        let (totals, gauges) = *lock(&self.metrics);
        telemetry::publish(&totals, &gauges);
        self.ready.send_replace(true);
        if let Some(link) = &self.predecessor {
            link.report_ready_now(|| self.write_pid_file());
        }
        Ok(())
    }

    /// Records the restart metrics through the `metrics` facade (with that
    /// feature), and keeps them for `ready()` to record again.
    pub(crate) fn publish_metrics(&self, totals: Totals, gauges: Gauges) {
        *lock(&self.metrics) = (totals, gauges);
        telemetry::publish(&totals, &gauges);
    }

    /// True once `ready()` was called.
    pub(crate) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Points the pid file (if any) at this process.
    pub(crate) fn write_pid_file(&self) {
        let Some(pid_file) = &self.pid_file else {
            return;
        };
        match pid_file.write(std::process::id()) {
            Ok(()) => tracing::debug!(path = %pid_file.path.display(), "pid file written"),
            Err(e) => tracing::warn!(error = %e, "could not write the pid file"),
        }
    }

    /// Begins shutdown (once): records the drain (begun by `restart`, if
    /// one did), closes the registry's descriptors and cancels the shutdown
    /// token.
    pub(crate) fn begin_shutdown(
        &self,
        ending: Ending,
        drain_timeout: Duration,
        restart: Option<RestartId>,
    ) {
        let began = Instant::now();
        let _ = self.drain.set(Drain {
            began,
            deadline: deadline_after(began, drain_timeout),
            ending,
            restart,
        });
        self.registry().close_all();
        self.shutdown.cancel();
    }

    /// The drain, once shutdown began (an immediate one before).
    pub(crate) fn drain(&self) -> Drain {
        self.drain.get().copied().unwrap_or_else(|| {
            let now = Instant::now();
            Drain {
                began: now,
                deadline: now,
                ending: Ending::Stopped,
                restart: None,
            }
        })
    }
}

/// `start + timeout`, or a far deadline if that cannot be represented.
pub(crate) fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    start
        .checked_add(timeout)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// Adopts the inherited control socket or binds it at `path`, and registers
/// it for the next generation.
pub(crate) fn open_control_socket(
    registry: &mut Registry,
    inherited_file: Option<&ControlSocketFile>,
    path: &Path,
) -> Result<OpenControl, Error> {
    let (listener, file) = match (registry.claim(CONTROL_FD_NAME), inherited_file) {
        (Some(fd), Some(file)) => (StdUnixListener::from(fd), file.clone()),
        // Kept in systemd's fd store by an earlier first generation: adopted
        // if its file is still there, else (a `RuntimeDirectory=` removed
        // at the restart) replaced by a new socket, which the store then
        // keeps instead.
        (Some(fd), None) => match ControlSocketFile::identify(path) {
            Ok(file) => (StdUnixListener::from(fd), file),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "the control socket kept in systemd's fd store has no file any more; binding a new one"
                );
                drop(fd);
                control::bind_control_socket(path)?
            }
        },
        (None, _) => control::bind_control_socket(path)?,
    };
    registry.register(CONTROL_FD_NAME, listener.as_fd())?;
    Ok(OpenControl {
        path: path.to_path_buf(),
        file,
        listener,
    })
}

/// The service's state (if it has one), encoded on the blocking pool, with
/// its descriptors named for the handover.
pub(crate) async fn encode_state_for_handover(
    generation: Arc<Generation>,
) -> Result<Option<(EncodedState, Vec<(String, std::os::fd::OwnedFd)>)>, RestartError> {
    let encode = move || {
        let Some(encode) = generation.state_encoder.get() else {
            return Ok(None);
        };
        let mut state_fds = StateFds::default();
        let bytes = encode(&mut state_fds)?;
        let fds = state_fds
            .fds
            .into_iter()
            .map(|(name, fd)| (format!("{STATE_FD_PREFIX}{name}"), fd))
            .collect();
        Ok::<_, StateError>(Some((bytes, fds)))
    };
    Ok(tokio::task::spawn_blocking(encode)
        .await
        .map_err(|e| RestartError::EncodePanicked(e.to_string()))??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_never_overflow() {
        let now = Instant::now();
        assert_eq!(
            deadline_after(now, Duration::from_secs(3)),
            now + Duration::from_secs(3)
        );
        let far = deadline_after(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(3600));
    }
}
