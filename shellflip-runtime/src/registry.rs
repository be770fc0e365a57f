//! The fd registry: the named descriptors a generation inherited and the
//! ones it will hand to the next generation.
//!
//! Each listener the service asks for is first looked up among the inherited
//! descriptors by name (and kind); only when none matches is a new socket
//! bound. Either way the registry keeps its own duplicate of the descriptor
//! so that it can be sent at the next restart, and closes all of them when
//! this generation hands over or stops.
//!
//! Descriptors systemd passed by socket activation enter the registry as
//! inherited ones under their `FileDescriptorName=`; the registry remembers
//! which names came from systemd (across generations, via the lineage), so
//! that for those the name alone decides: the unit's `ListenStream=` is the
//! operator's truth, whatever address the code asks for.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Names starting with this are the runtime's own.
pub(crate) const RESERVED_PREFIX: &str = "shellflip.";
/// The name under which the control socket travels.
pub(crate) const CONTROL_FD_NAME: &str = "shellflip.control";
/// The prefix of descriptors that belong to the handover state.
pub(crate) const STATE_FD_PREFIX: &str = "shellflip.state.";

/// A descriptor of the registry that systemd's fd store holds (see
/// `systemd::sync_fd_store`), as the lineage remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredFd {
    /// The registry's name (the store's `FDNAME=` is prefixed).
    pub name: String,
    /// The socket's inode: another inode under the same name is another
    /// socket (bound anew), which replaces the stored one.
    pub ino: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Inherited and not claimed (yet).
    inherited: Vec<(String, OwnedFd)>,
    /// Claimed or created in this generation; sent at the next restart.
    active: Vec<(String, OwnedFd)>,
    /// Names whose inherited descriptor systemd passed (socket activation).
    socket_activated: Vec<String>,
}

impl Registry {
    pub(crate) fn new(inherited: Vec<(String, OwnedFd)>) -> Self {
        Registry {
            inherited,
            ..Registry::default()
        }
    }

    /// Records that the inherited descriptors named `names` come from
    /// systemd socket activation (in this generation or an earlier one).
    pub(crate) fn mark_socket_activated(&mut self, names: &[String]) {
        self.socket_activated.extend(names.iter().cloned());
    }

    /// True when the inherited descriptor named `name` comes from systemd.
    pub(crate) fn is_socket_activated(&self, name: &str) -> bool {
        self.socket_activated.iter().any(|n| n == name)
    }

    /// The names of systemd's sockets this generation uses: what the next
    /// generation must know about the descriptors it inherits.
    pub(crate) fn socket_activated_in_use(&self) -> Vec<String> {
        self.socket_activated
            .iter()
            .filter(|n| self.is_registered(n))
            .cloned()
            .collect()
    }

    /// Takes the inherited descriptor named `name`, if any.
    pub(crate) fn claim(&mut self, name: &str) -> Option<OwnedFd> {
        let index = self.inherited.iter().position(|(n, _)| n == name)?;
        Some(self.inherited.swap_remove(index).1)
    }

    /// Takes the inherited descriptor named `name` for the service (`None`:
    /// nothing by that name was inherited). Refuses the runtime's own names
    /// ([`RESERVED_PREFIX`]) and a name already registered in this
    /// generation.
    pub(crate) fn claim_for_service(&mut self, name: &str) -> Result<Option<OwnedFd>, Error> {
        if name.starts_with(RESERVED_PREFIX) {
            let reserved =
                "names starting with \"shellflip.\" are the runtime's own; choose another name";
            let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, reserved);
            return Err(Error::fd(name, source));
        }
        if self.is_registered(name) {
            return Err(Error::DuplicateName(name.to_owned()));
        }
        Ok(self.claim(name))
    }

    /// Takes every inherited descriptor whose name starts with `prefix`,
    /// with the prefix stripped.
    pub(crate) fn claim_prefixed(&mut self, prefix: &str) -> Vec<(String, OwnedFd)> {
        let (matching, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.inherited)
            .into_iter()
            .partition(|(n, _)| n.starts_with(prefix));
        self.inherited = rest;
        matching
            .into_iter()
            .map(|(n, fd)| (n[prefix.len()..].to_owned(), fd))
            .collect()
    }

    /// Records a duplicate of `fd` to hand over under `name`.
    pub(crate) fn register(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), Error> {
        if self.is_registered(name) {
            return Err(Error::DuplicateName(name.to_owned()));
        }
        let owned = fd.try_clone_to_owned().map_err(|e| Error::fd(name, e))?;
        self.active.push((name.to_owned(), owned));
        Ok(())
    }

    /// Stops handing over the descriptor named `name` (closing this copy).
    pub(crate) fn forget(&mut self, name: &str) {
        self.active.retain(|(n, _)| n != name);
    }

    /// A duplicate of the registered descriptor named `name`, if any.
    pub(crate) fn duplicate(&self, name: &str) -> Option<std::io::Result<OwnedFd>> {
        self.active
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, fd)| fd.as_fd().try_clone_to_owned())
    }

    /// The registered descriptors, by name.
    pub(crate) fn active(&self) -> impl Iterator<Item = (&str, BorrowedFd<'_>)> {
        self.active
            .iter()
            .map(|(name, fd)| (name.as_str(), fd.as_fd()))
    }

    /// True when a descriptor named `name` is registered.
    pub(crate) fn is_registered(&self, name: &str) -> bool {
        self.active.iter().any(|(n, _)| n == name)
    }

    /// The descriptors to send at a restart, duplicated so that the restart
    /// owns them independently of this registry.
    pub(crate) fn snapshot(&self) -> std::io::Result<Vec<(String, OwnedFd)>> {
        self.active
            .iter()
            .map(|(name, fd)| Ok((name.clone(), fd.as_fd().try_clone_to_owned()?)))
            .collect()
    }

    /// Closes inherited descriptors nobody claimed; returns their names.
    pub(crate) fn close_unclaimed(&mut self) -> Vec<String> {
        let closed: Vec<String> = std::mem::take(&mut self.inherited)
            .into_iter()
            .map(|(name, _fd)| name)
            .collect();
        self.socket_activated.retain(|n| !closed.contains(n));
        closed
    }

    /// Closes everything this registry holds (after a handover or at stop).
    pub(crate) fn close_all(&mut self) {
        self.inherited.clear();
        self.active.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn fd() -> OwnedFd {
        OwnedFd::from(UnixStream::pair().unwrap().0)
    }

    #[test]
    fn the_service_claims_its_own_names_once_and_never_the_runtimes() {
        let mut r = Registry::new(vec![("db".into(), fd()), (CONTROL_FD_NAME.into(), fd())]);
        let reserved = r.claim_for_service(CONTROL_FD_NAME).unwrap_err();
        let message = reserved.to_string();
        assert!(matches!(reserved, Error::Fd { .. }), "{reserved:?}");
        assert!(
            message.contains("the runtime's own; choose another name"),
            "{message}"
        );
        // The runtime's descriptor is still there for the runtime.
        assert!(r.claim(CONTROL_FD_NAME).is_some());
        let db = r.claim_for_service("db").unwrap().unwrap();
        r.register("db", db.as_fd()).unwrap();
        assert!(matches!(
            r.claim_for_service("db"),
            Err(Error::DuplicateName(name)) if name == "db"
        ));
        // Nothing inherited under a free name: the caller creates it.
        assert!(r.claim_for_service("cache").unwrap().is_none());
    }

    #[test]
    fn claim_register_and_snapshot() {
        let mut r = Registry::new(vec![("a".into(), fd()), ("shellflip.state.x".into(), fd())]);
        assert!(r.claim("missing").is_none());
        let a = r.claim("a").unwrap();
        assert!(r.claim("a").is_none());
        r.register("a", a.as_fd()).unwrap();
        assert!(matches!(
            r.register("a", a.as_fd()),
            Err(Error::DuplicateName(_))
        ));
        assert!(r.is_registered("a"));
        let state = r.claim_prefixed(STATE_FD_PREFIX);
        assert_eq!(state.len(), 1);
        assert_eq!(state[0].0, "x");
        let snap = r.snapshot().unwrap();
        assert_eq!(snap.len(), 1);
        assert!(r.close_unclaimed().is_empty());
        r.close_all();
        assert!(r.snapshot().unwrap().is_empty());
    }

    #[test]
    fn socket_activated_names_follow_the_descriptors_in_use() {
        let mut r = Registry::new(vec![("echo".into(), fd()), ("admin".into(), fd())]);
        r.mark_socket_activated(&["echo".into(), "admin".into()]);
        assert!(r.is_socket_activated("echo"));
        let echo = r.claim("echo").unwrap();
        r.register("echo", echo.as_fd()).unwrap();
        assert_eq!(r.close_unclaimed(), vec!["admin".to_string()]);
        assert!(!r.is_socket_activated("admin"));
        assert_eq!(r.socket_activated_in_use(), vec!["echo".to_string()]);
    }

    #[test]
    fn unclaimed_are_reported() {
        let mut r = Registry::new(vec![("old".into(), fd())]);
        assert_eq!(r.close_unclaimed(), vec!["old".to_string()]);
    }
}
