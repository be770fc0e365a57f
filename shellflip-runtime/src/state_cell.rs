//! [`StateCell`]: the state a service carries across restarts, shared
//! between its tasks, and the snapshot a restart takes of it.

use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::sync::{lock, read, wait, write};

/// The state a service carries across restarts, shared between its tasks.
///
/// # Reading and writing
///
/// The state is behind a read-write lock. Read it with [`read`](Self::read)
/// (or [`get`](Self::get) for a copy): readers never wait for one another,
/// nor for a restart encoding the state. Change it with
/// [`lock`](Self::lock), [`update`](Self::update) or
/// [`update_if_owned`](Self::update_if_owned): a writer waits for the
/// readers, and while a restart encodes the snapshot (0.1 s to 1 s for
/// 100 MB to 1 GB of state) it waits for the encoding to end without
/// holding up the readers that come after it.
///
/// # Who owns the state, when
///
/// A restart takes the state's *snapshot* as late as it can: when the new
/// generation asks for it, right after it started (not when the restart was
/// asked for). From that moment the new generation owns the state: changes
/// the old generation makes afterwards are not carried (the old generation
/// still serves until the new one is ready, and drains after). A service
/// whose state must not diverge — one that hands out IDs, say — learns of
/// the snapshot with [`is_handed_over`](Self::is_handed_over) or
/// [`handed_over`](Self::handed_over), and makes its changes with
/// [`update_if_owned`](Self::update_if_owned), which refuses them once the
/// snapshot is taken (atomically: the snapshot is taken under the read
/// lock, which excludes writers). If the restart fails, or the new
/// generation fails its probation, the old generation owns its state again.
#[derive(Debug)]
pub struct StateCell<S>(Arc<Shared<S>>);

/// What the clones of a [`StateCell`] share.
#[derive(Debug)]
struct Shared<S> {
    value: RwLock<S>,
    /// Whether a snapshot is being encoded: writers wait on `ended` for it
    /// rather than queue on the lock, where they would hold up new readers.
    gate: Mutex<GateState>,
    ended: Condvar,
    handed_over: Arc<watch::Sender<bool>>,
}

#[derive(Debug, Default)]
struct GateState {
    encoding: bool,
    /// Writers waiting for the encoding to end (for the tests).
    waiting: usize,
}

impl<S> Clone for StateCell<S> {
    fn clone(&self) -> Self {
        StateCell(Arc::clone(&self.0))
    }
}

impl<S> StateCell<S> {
    pub(crate) fn new(value: S, handed_over: Arc<watch::Sender<bool>>) -> Self {
        StateCell(Arc::new(Shared {
            value: RwLock::new(value),
            gate: Mutex::default(),
            ended: Condvar::new(),
            handed_over,
        }))
    }

    /// True from the moment a restart took the state's snapshot (see the
    /// type's docs) until that restart fails or is rolled back.
    pub fn is_handed_over(&self) -> bool {
        *self.0.handed_over.borrow()
    }

    /// Resolves once a restart has taken the state's snapshot (at once if
    /// it already has).
    pub async fn handed_over(&self) {
        let mut handed_over = self.0.handed_over.subscribe();
        let _ = handed_over.wait_for(|handed_over| *handed_over).await;
    }

    /// Runs `f` with the state write-locked, unless the state has been
    /// handed over to a successor (`None` then: a change would not be
    /// carried). During a snapshot it waits for the encoding to end, and
    /// then refuses.
    pub fn update_if_owned<R>(&self, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        let mut state = self.lock();
        // Read under the write lock, which the snapshot's read lock
        // excludes: no change slips in after a snapshot that does not
        // contain it.
        if self.is_handed_over() {
            return None;
        }
        Some(f(&mut state))
    }

    /// Write-locks the state, to change it. Keep the guard for short,
    /// non-async sections: it holds up every reader. While a restart
    /// encodes the state's snapshot it waits for the encoding to end
    /// (readers meanwhile go on). To only read, use [`read`](Self::read).
    pub fn lock(&self) -> RwLockWriteGuard<'_, S> {
        let mut gate = lock(&self.0.gate);
        if gate.encoding {
            gate.waiting += 1;
            while gate.encoding {
                gate = wait(&self.0.ended, gate);
            }
            gate.waiting -= 1;
        }
        // Taken with the gate held, so that a snapshot beginning now waits
        // for this writer rather than the other way round.
        write(&self.0.value)
    }

    /// Read-locks the state. Readers never wait for one another nor for a
    /// restart encoding the state, only for a writer holding
    /// [`lock`](Self::lock). Keep the guard for short, non-async sections.
    pub fn read(&self) -> RwLockReadGuard<'_, S> {
        read(&self.0.value)
    }

    /// Runs `f` with the state write-locked and returns its result (see
    /// [`lock`](Self::lock)).
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.lock())
    }

    /// A copy of the current value, taken under the read lock.
    pub fn get(&self) -> S
    where
        S: Clone,
    {
        self.read().clone()
    }

    /// Runs `encode` on the state read-locked, with the snapshot flag set:
    /// from now on the successor owns the state. Writers wait for the
    /// encoding to end (and [`update_if_owned`](Self::update_if_owned)
    /// then refuses); readers go on.
    pub(crate) fn snapshot<R>(&self, encode: impl FnOnce(&S) -> R) -> R {
        let state = {
            let mut gate = lock(&self.0.gate);
            gate.encoding = true;
            // With the gate held: no writer is about to queue on the lock.
            let state = read(&self.0.value);
            self.0.handed_over.send_replace(true);
            state
        };
        // Ends the encoding whatever happens, a panic included.
        struct Ended<'a, S>(&'a Shared<S>);
        impl<S> Drop for Ended<'_, S> {
            fn drop(&mut self) {
                lock(&self.0.gate).encoding = false;
                self.0.ended.notify_all();
            }
        }
        let _ended = Ended(&self.0);
        encode(&state)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// A state whose encoding says it began and then waits for the test's
    /// go-ahead: the test acts while the snapshot is being encoded.
    struct Gated {
        value: u64,
        began: mpsc::SyncSender<()>,
        go: Mutex<mpsc::Receiver<()>>,
    }

    /// Long enough never to be reached unless something is blocked.
    const STUCK: Duration = Duration::from_secs(20);

    #[test]
    fn readers_go_on_while_the_snapshot_is_encoded_and_writers_after_it_are_refused() {
        let (began_tx, began) = mpsc::sync_channel(1);
        let (go, go_rx) = mpsc::channel();
        let (handed_over, _) = watch::channel(false);
        let cell = StateCell::new(
            Gated {
                value: 7,
                began: began_tx,
                go: Mutex::new(go_rx),
            },
            Arc::new(handed_over),
        );
        let encoder = cell.clone();
        let snapshot = std::thread::spawn(move || {
            encoder.snapshot(|state| {
                let _ = state.began.send(());
                let _ = lock(&state.go).recv();
                state.value
            })
        });
        began.recv().unwrap();
        assert!(cell.is_handed_over());
        // The read lock is held: no writer gets in.
        assert!(cell.0.value.try_write().is_err());

        // A writer arrives during the encoding, and waits.
        let writer_cell = cell.clone();
        let writer = std::thread::spawn(move || writer_cell.update_if_owned(|s| s.value += 1));
        while lock(&cell.0.gate).waiting == 0 {
            std::thread::yield_now();
        }

        // Readers are not held up, neither by the encoding nor by the
        // waiting writer.
        let reader_cell = cell.clone();
        let (read_tx, read_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = read_tx.send(reader_cell.read().value);
        });
        assert_eq!(read_rx.recv_timeout(STUCK), Ok(7), "a reader was blocked");
        assert_eq!(cell.read().value, 7);

        go.send(()).unwrap();
        assert_eq!(snapshot.join().unwrap(), 7);
        // The writer got in after the snapshot, and was refused.
        assert_eq!(writer.join().unwrap(), None);
        assert_eq!(cell.read().value, 7);
        assert_eq!(cell.update_if_owned(|s| s.value), None);
        // A plain writer is not refused (its change is simply not carried).
        cell.update(|s| s.value = 8);
        assert_eq!(cell.read().value, 8);
    }

    #[test]
    fn a_writer_before_the_snapshot_is_carried() {
        let (handed_over, _) = watch::channel(false);
        let cell = StateCell::new(1u64, Arc::new(handed_over));
        assert_eq!(cell.update_if_owned(|v| *v += 1), Some(()));
        assert_eq!(cell.snapshot(|v| *v), 2);
        assert_eq!(cell.update_if_owned(|v| *v += 1), None);
        // The snapshot's end opened the gate: writers no longer wait.
        assert!(!lock(&cell.0.gate).encoding);
        *cell.lock() += 1;
        assert_eq!(cell.get(), 3);
    }

    #[test]
    fn a_panicking_encoder_does_not_leave_writers_waiting() {
        let (handed_over, _) = watch::channel(false);
        let cell = StateCell::new(1u64, Arc::new(handed_over));
        let encoder = cell.clone();
        let panicked = std::thread::spawn(move || encoder.snapshot(|_| panic!("encoder")));
        assert!(panicked.join().is_err());
        *cell.lock() = 5;
        assert_eq!(cell.get(), 5);
    }
}
