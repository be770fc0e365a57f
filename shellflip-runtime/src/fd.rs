//! File-descriptor and process plumbing: passing descriptors over a Unix
//! socket (SCM_RIGHTS), adopting the channel descriptor a parent left us,
//! letting exactly one descriptor survive `exec` in a spawned child,
//! forking the spawner helper with only its own descriptor, and forking
//! the first generation off the keeper; and one piece of memory plumbing,
//! asking for huge pages behind the large buffers of a state handover.
//!
//! This is the only module of the runtime with `unsafe` code. Every block
//! states why it is sound.
//!
//! Invariants kept here: the service process never clears `FD_CLOEXEC` on
//! any of its descriptors (another thread may fork at any time); when it
//! spawns a process itself (inline spawning), the one descriptor the child
//! inherits is made inheritable in the child only, between `fork` and
//! `exec`. (The spawner, single-threaded and spawning one process at a
//! time, may clear it on the one descriptor it is passing on: see
//! `spawner`.) A process is forked without `exec` only while it has a
//! single thread, and the forked copy never returns into its caller's code.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// The most descriptors one `sendmsg` can carry on Linux (`SCM_MAX_FD`).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `data` with `fds` attached as `SCM_RIGHTS`. Returns the number of
/// bytes sent (the descriptors travel with the first byte). The caller keeps
/// ownership of `fds`; the receiver gets its own duplicates.
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS_PER_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} file descriptors to hand over, more than the {MAX_FDS_PER_MESSAGE} one message can carry",
                fds.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let iov = [IoSlice::new(data)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() {
        &[]
    } else {
        &[ControlMessage::ScmRights(&raw)]
    };
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)
}

/// One datagram received by [`recv_datagram`].
#[derive(Debug)]
pub(crate) struct Datagram {
    /// Its length in the buffer.
    pub len: usize,
    /// The sender's pid and uid (`SCM_CREDENTIALS`: the socket needs
    /// `SO_PASSCRED`), as the kernel vouches for them.
    pub sender: Option<(i32, u32)>,
    /// The descriptors it carried (close-on-exec).
    pub fds: Vec<OwnedFd>,
}

/// Receives one datagram into `buf` with its sender's credentials and its
/// descriptors. A datagram longer than `buf` is an error (it was cut).
pub(crate) fn recv_datagram(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Datagram> {
    let (datagram, flags) = receive(socket, buf, libc::MSG_DONTWAIT)?;
    if flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::other(
            "a datagram or its descriptors were cut (longer than the buffer)",
        ));
    }
    Ok(datagram)
}

/// Receives into `buf`, adopting any descriptors attached (close-on-exec is
/// set on them atomically). Returns the byte count (0 at end of stream) and
/// the descriptors; descriptors lost in transit (the process is at its
/// open-file limit) are an error.
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let (bytes, fds, lost) = recv_with_fds_or_lost(socket, buf)?;
    if lost {
        return Err(io::Error::other(FDS_LOST));
    }
    Ok((bytes, fds))
}

/// What was lost when descriptors could not be installed.
pub(crate) const FDS_LOST: &str = "file descriptors were lost in transit (control message truncated); is the process near its open-file limit?";

/// [`recv_with_fds`], telling a loss of descriptors apart (`true`) instead
/// of failing: the bytes were received all the same, so a framed stream
/// stays in step, and the descriptors that were installed are returned.
/// (At its open-file limit, the kernel installs the first descriptors of a
/// message, drops the rest and sets `MSG_CTRUNC`.)
pub(crate) fn recv_with_fds_or_lost(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<OwnedFd>, bool)> {
    let (received, flags) = receive(socket, buf, 0)?;
    Ok((received.len, received.fds, flags & libc::MSG_CTRUNC != 0))
}

/// Room for the control message of one [`receive`]: [`MAX_FDS_PER_MESSAGE`]
/// descriptors and the sender's credentials.
// SAFETY: CMSG_SPACE is arithmetic on its argument; it reads no memory.
const CMSG_ROOM: usize = unsafe {
    libc::CMSG_SPACE((MAX_FDS_PER_MESSAGE * std::mem::size_of::<RawFd>()) as libc::c_uint)
        + libc::CMSG_SPACE(std::mem::size_of::<libc::ucred>() as libc::c_uint)
} as usize;

/// One `recvmsg` (with `MSG_CMSG_CLOEXEC` and `flags`; retried when a
/// signal interrupts it) into `buf`: what arrived, and the message's flags. The descriptors the kernel installed
/// are returned even when others were lost (`MSG_CTRUNC`).
///
/// Written against libc rather than nix: nix refuses to walk the control
/// messages once `MSG_CTRUNC` is set, which would leave the installed
/// descriptors without an owner.
fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: libc::c_int,
) -> io::Result<(Datagram, libc::c_int)> {
    // In u64 words, so that the buffer is aligned for `cmsghdr`.
    let mut control = [0u64; CMSG_ROOM.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is a plain C struct for which all zeroes (null
    // pointers, zero lengths) is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_ROOM as _;
    let len = loop {
        // SAFETY: `msg` points to one iovec describing `buf` (writable for
        // its length) and to `control` (writable for `msg_controllen`
        // bytes), both alive for the whole call; recvmsg writes only within
        // them and updates `msg`'s lengths and flags.
        let received =
            unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC | flags) };
        match usize::try_from(received) {
            Ok(len) => break len,
            // Interrupted by a signal before anything arrived: again.
            Err(_) if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(io::Error::last_os_error()),
        }
    };
    let control_start = control.as_ptr() as usize;
    let control_end = control_start + (msg.msg_controllen as usize).min(CMSG_ROOM);
    let mut datagram = Datagram {
        len,
        sender: None,
        fds: Vec::new(),
    };
    // SAFETY: `msg` is as recvmsg left it: CMSG_FIRSTHDR returns the first
    // header if `msg_controllen` has room for one (within `control`), else
    // null.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR only return headers that lie
        // whole within the `msg_controllen` bytes of `control`; read
        // without assuming alignment.
        let header = unsafe { std::ptr::read_unaligned(cmsg) };
        // SAFETY: CMSG_DATA is pointer arithmetic past the header, which
        // lies within `control`.
        let data = unsafe { libc::CMSG_DATA(cmsg) } as usize;
        let data_len = (header.cmsg_len as usize).saturating_sub(data - cmsg as usize);
        let within = data.saturating_add(data_len) <= control_end;
        let kind = (header.cmsg_level, header.cmsg_type);
        if within && kind == (libc::SOL_SOCKET, libc::SCM_RIGHTS) {
            for i in 0..data_len / std::mem::size_of::<RawFd>() {
                let at = (data + i * std::mem::size_of::<RawFd>()) as *const RawFd;
                // SAFETY: `at` and the descriptor number after it lie
                // within the header's data, inside `control` (checked
                // above); read without assuming alignment.
                let raw = unsafe { std::ptr::read_unaligned(at) };
                // SAFETY: the kernel just installed `raw` in our descriptor
                // table for this SCM_RIGHTS message; nothing else in the
                // process knows the number yet, so this OwnedFd is its only
                // owner and will close it exactly once.
                datagram.fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        let whole_ucred = data_len >= std::mem::size_of::<libc::ucred>();
        if within && whole_ucred && kind == (libc::SOL_SOCKET, libc::SCM_CREDENTIALS) {
            // SAFETY: a whole ucred lies within the header's data, inside
            // `control` (checked above); read without assuming alignment.
            let ucred = unsafe { std::ptr::read_unaligned(data as *const libc::ucred) };
            datagram.sender = Some((ucred.pid, ucred.uid));
        }
        // SAFETY: `msg` as recvmsg left it and `cmsg` one of its headers:
        // CMSG_NXTHDR returns the next header within `msg_controllen`, or
        // null.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok((datagram, msg.msg_flags))
}

/// Takes ownership of a descriptor number the environment names — the
/// channel a parent generation left (`SHELLFLIP_HANDOVER_FD`), or a socket
/// systemd passed (`LISTEN_FDS`, from fd 3 on) — after checking that it is
/// open. Sets close-on-exec on it so that processes the service spawns do
/// not inherit it.
///
/// Must be called at most once per number (the caller removes the variable
/// from the environment after reading it).
pub(crate) fn adopt_inherited(raw: RawFd) -> io::Result<OwnedFd> {
    if raw < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {raw} is a standard stream, not a handover channel"),
        ));
    }
    fd_flags(raw)?;
    // SAFETY: `raw` is open (checked above) and was left to this process by
    // its parent (the previous generation, or systemd after checking
    // LISTEN_PID) for the sole purpose of being adopted here, before the
    // runtime starts; the variable naming it is read once and removed, so no
    // other owner exists.
    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(owned)
}

/// Arranges for `fd` to survive `exec` in the child spawned by `command`,
/// and only there (close-on-exec is cleared after `fork`, in the child),
/// and for the child to start with the signals of `mask` blocked.
pub(crate) fn prepare_inline_child(
    command: &mut tokio::process::Command,
    fd: RawFd,
    mask: nix::sys::signal::SigSet,
) {
    let in_child = move || -> io::Result<()> {
        // SAFETY: runs in the forked child, where `fd` is open (the parent
        // keeps the OwnedFd alive until spawn returns). fcntl is
        // async-signal-safe, allocates nothing and takes no lock.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::empty()))?;
        // sigprocmask is async-signal-safe; the set was built before fork.
        nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_BLOCK, Some(&mask), None)
            .map_err(io::Error::from)
    };
    // SAFETY: the closure only calls fcntl and sigprocmask (both
    // async-signal-safe) on values captured by copy; it touches no memory
    // shared with other threads of the parent and does not allocate.
    unsafe {
        command.pre_exec(in_child);
    }
}

/// Registers `socket` (non-blocking) with the Tokio reactor, for a socket
/// kind Tokio has no type for (the spawner's `SOCK_SEQPACKET` pair). Must be
/// called inside the runtime.
pub(crate) fn register_async(socket: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd owns an open descriptor, and the AsyncFd owns the
    // OwnedFd from now on: nobody can close or replace the descriptor while
    // it is registered (it is deregistered before the OwnedFd is dropped).
    unsafe { tokio::io::unix::AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}

/// Forks this process — which must have exactly one thread — into a helper
/// that runs `helper(keep)` and exits with the code it returns, without
/// ever returning into the caller's code. In the helper, every descriptor
/// but the standard streams and `keep` is closed first, so it holds none of
/// the service's sockets. In this process, `keep` is closed; the helper's
/// pid is returned (it is this process's child: reap it).
///
/// Fails, forking nothing, if the process has more than one thread: a fork
/// would then copy locks held by other threads.
pub(crate) fn fork_helper(
    keep: OwnedFd,
    helper: impl FnOnce(OwnedFd) -> i32,
) -> io::Result<nix::unistd::Pid> {
    single_threaded("a helper can only be forked by a single-threaded process")?;
    // SAFETY: the process has a single thread (checked just above; no other
    // thread can appear meanwhile, as only this one could create it), so
    // the child's copy of memory holds no lock taken by another thread and
    // may run any code, allocation included.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(child),
        nix::unistd::ForkResult::Child => {
            close_all_except(keep.as_raw_fd());
            // A panic must not unwind into the caller's frames: they belong
            // to the service, which runs in the parent.
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| helper(keep)))
                .unwrap_or(101);
            std::process::exit(code)
        }
    }
}

/// Which side of [`fork_first_generation`] this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Forked {
    /// The original process, which becomes the keeper; the first
    /// generation's pid.
    Keeper(nix::unistd::Pid),
    /// The copy, which carries on as the service's first generation.
    Service,
}

/// Forks this process — which must have exactly one thread — at the very
/// start of `run`: the copy returns [`Forked::Service`] and carries on with
/// the caller's code as the service; the original returns
/// [`Forked::Keeper`] and must never run the service's code (it runs the
/// keeper's loop and returns its exit code from `run`).
///
/// Fails, forking nothing, if the process has more than one thread.
pub(crate) fn fork_first_generation() -> io::Result<Forked> {
    single_threaded("call shellflip's run first thing in main")?;
    // SAFETY: the process has a single thread (checked just above; only this
    // thread could start another meanwhile), so the copy's memory holds no
    // lock taken by another thread and may run any code. Each side owns its
    // copies of the descriptors; the caller closes, in the copy, those that
    // belong to the keeper.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Keeper(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Service),
    }
}

/// Buffers smaller than this are left to the allocator's usual pages.
pub(crate) const HUGE_PAGE_MIN: usize = 4 << 20;

/// Asks the kernel to back the spare capacity of `buf`, memory about to be
/// written in one go, with transparent huge pages where it can
/// (`madvise(MADV_HUGEPAGE)`): one page fault per 2 MiB rather than one
/// per 4 KiB. Writing 100 MB of fresh memory then takes about a third of
/// the time. Only for spare capacities of [`HUGE_PAGE_MIN`] and more. Advice
/// only: nothing changes if the kernel does not take it (huge pages
/// disabled, none free), and the contents never change.
pub(crate) fn advise_huge_pages(buf: &mut Vec<u8>) {
    let spare = buf.spare_capacity_mut();
    if spare.len() < HUGE_PAGE_MIN {
        return;
    }
    let page = page_size();
    let start = spare.as_mut_ptr() as usize;
    let end = start + spare.len();
    // The whole pages inside the spare capacity.
    let first = start.next_multiple_of(page);
    let last = end - end % page;
    if last <= first {
        return;
    }
    // SAFETY: [first, last) lies inside the spare capacity of `buf`, memory
    // this `Vec` owns and that is borrowed exclusively here; no Rust value
    // lives there yet. MADV_HUGEPAGE only changes how the kernel backs these
    // pages from now on: it never changes their contents, their protection
    // or the mapping's address, so nothing points to freed or changed
    // memory afterwards. A failure (EINVAL where huge pages are not built
    // in) leaves the memory as it was, so the result is ignored.
    let _ = unsafe {
        libc::madvise(
            first as *mut libc::c_void,
            last - first,
            libc::MADV_HUGEPAGE,
        )
    };
}

/// An empty buffer of `capacity` bytes, backed by huge pages where the
/// kernel can (see [`advise_huge_pages`]); an error rather than an abort if
/// the memory cannot be had.
pub(crate) fn huge_buffer(capacity: usize) -> Result<Vec<u8>, std::collections::TryReserveError> {
    let mut buf = Vec::new();
    buf.try_reserve_exact(capacity)?;
    advise_huge_pages(&mut buf);
    Ok(buf)
}

fn page_size() -> usize {
    let size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE);
    let size = size
        .ok()
        .flatten()
        .and_then(|size| usize::try_from(size).ok());
    size.filter(|size| size.is_power_of_two()).unwrap_or(4096)
}

/// A pidfd of process `pid` (`pidfd_open(2)`, Linux 5.3+): readable once
/// the process has exited, whoever its parent is, and immune to pid reuse.
/// Close-on-exec.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "not a pid"))?;
    // SAFETY: pidfd_open takes a pid and flags (plain integers) and returns
    // a new descriptor or -1; no memory is shared with the kernel.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = RawFd::try_from(raw)
        .map_err(|_| io::Error::other("pidfd_open returned an impossible descriptor"))?;
    // SAFETY: the kernel just returned `raw` as a new descriptor of this
    // process (pidfds are close-on-exec); nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sends `signal` to the process `pidfd` refers to (`pidfd_send_signal(2)`,
/// Linux 5.1+): never to another process that reused its pid.
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor (borrowed, open for the
    // call), a signal number, a null siginfo pointer (the kernel then fills
    // in the usual one) and flags 0; no memory is written.
    let result = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Fails, saying `advice`, unless the process has exactly one thread.
fn single_threaded(advice: &str) -> io::Result<()> {
    match std::fs::read_dir("/proc/self/task")?.count() {
        1 => Ok(()),
        threads => Err(io::Error::other(format!(
            "the process already runs {threads} threads; {advice}"
        ))),
    }
}

/// Closes every descriptor above the standard streams except `keep`. Only
/// called in a freshly forked helper, which never returns into the code
/// that owns those descriptors (see [`fork_helper`]).
fn close_all_except(keep: RawFd) {
    if close_ranges_except(keep).is_ok() {
        return;
    }
    // Kernels before 5.9 have no close_range: list /proc/self/fd instead.
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        // Without /proc, the descriptors stay open in the helper; they are
        // all close-on-exec, so nothing it spawns inherits them.
        return;
    };
    let open: Vec<RawFd> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own descriptor is closed now; it is not in the way.
    for raw in open {
        if raw > 2 && raw != keep && fd_flags(raw).is_ok() {
            // SAFETY: in the forked helper, the owners of these descriptors
            // are objects of the caller's frames and statics, which the
            // helper never returns to, drops or uses (`fork_helper` exits
            // the process after the helper's function). Closing them here
            // is their single close in this process.
            drop(unsafe { OwnedFd::from_raw_fd(raw) });
        }
    }
}

/// `close_range(2)` around `keep`: two system calls, however many
/// descriptors the service had.
fn close_ranges_except(keep: RawFd) -> io::Result<()> {
    let keep = keep as libc::c_uint;
    let ranges = [(3, keep.saturating_sub(1)), (keep + 1, libc::c_uint::MAX)];
    for (first, last) in ranges {
        if first > last {
            continue;
        }
        // SAFETY: close_range only closes descriptors, none of which is
        // used again in this process (same reasoning as for the loop in
        // `close_all_except`); it takes plain integers and no pointer.
        let result = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The descriptor flags of `raw`: `EBADF` if it is not open.
fn fd_flags(raw: RawFd) -> nix::Result<i32> {
    // SAFETY: F_GETFD only reads the flags of `raw` and fails with EBADF if
    // it is not open; the borrow does not outlive this statement.
    fcntl(unsafe { BorrowedFd::borrow_raw(raw) }, FcntlArg::F_GETFD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn fds_cross_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut p1, p2) = UnixStream::pair().unwrap();
        let sent = send_with_fds(a.as_fd(), b"hello", &[p2.as_fd()]).unwrap();
        assert_eq!(sent, 5);
        let mut buf = [0u8; 16];
        let (n, fds) = recv_with_fds(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let flags = fcntl(&fds[0], FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        let mut received = UnixStream::from(fds.into_iter().next().unwrap());
        p1.write_all(b"x").unwrap();
        let mut one = [0u8; 1];
        received.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }

    #[test]
    fn the_most_fds_one_message_carries_cross_in_one_receive() {
        let (a, b) = UnixStream::pair().unwrap();
        let pairs: Vec<(UnixStream, UnixStream)> = (0..MAX_FDS_PER_MESSAGE)
            .map(|_| UnixStream::pair().unwrap())
            .collect();
        let sent: Vec<BorrowedFd<'_>> = pairs.iter().map(|(_, theirs)| theirs.as_fd()).collect();
        assert_eq!(send_with_fds(a.as_fd(), b"batch", &sent).unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, fds, lost) = recv_with_fds_or_lost(b.as_fd(), &mut buf).unwrap();
        assert_eq!(
            (&buf[..n], fds.len(), lost),
            (&b"batch"[..], MAX_FDS_PER_MESSAGE, false)
        );
        // In order: the last one received is the last one sent.
        let mut last = UnixStream::from(fds.into_iter().next_back().unwrap());
        let mut peer = &pairs[MAX_FDS_PER_MESSAGE - 1].0;
        peer.write_all(b"z").unwrap();
        let mut one = [0u8; 1];
        last.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"z");
    }

    #[test]
    fn a_datagram_comes_with_its_sender_and_descriptors() {
        use nix::sys::socket::{setsockopt, sockopt::PassCred};
        use std::os::unix::net::UnixDatagram;
        let (a, b) = UnixDatagram::pair().unwrap();
        setsockopt(&b, PassCred, &true).unwrap();
        let (_keep, passed) = UnixStream::pair().unwrap();
        send_with_fds(a.as_fd(), b"READY=1", &[passed.as_fd()]).unwrap();
        let mut buf = [0u8; 64];
        let datagram = recv_datagram(b.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..datagram.len], b"READY=1");
        let me = (std::process::id() as i32, nix::unistd::getuid().as_raw());
        assert_eq!(datagram.sender, Some(me));
        assert_eq!(datagram.fds.len(), 1);
        // Nothing waiting; a datagram longer than the buffer is an error.
        assert!(recv_datagram(b.as_fd(), &mut buf).is_err());
        a.send(&[0u8; 100]).unwrap();
        assert!(recv_datagram(b.as_fd(), &mut buf).is_err());
    }

    #[test]
    fn too_many_fds_is_an_error() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fds = vec![a.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        assert!(send_with_fds(a.as_fd(), b"x", &fds).is_err());
    }

    #[test]
    fn a_helper_is_never_forked_from_a_multithreaded_process() {
        // A second thread for certain (the test harness may run this test
        // on the main thread), alive until the attempt is over.
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || stop_rx.recv());
        let (keep, _peer) = UnixStream::pair().unwrap();
        let result = fork_helper(OwnedFd::from(keep), |_| 0);
        drop(stop_tx);
        let _ = other.join();
        let error = result.expect_err("forked although another thread runs");
        assert!(error.to_string().contains("threads"), "{error}");
    }

    #[test]
    fn adopting_a_closed_or_standard_fd_fails() {
        assert!(adopt_inherited(1).is_err());
        assert!(adopt_inherited(99_999).is_err());
    }

    #[test]
    fn huge_buffers_hold_what_is_written() {
        let mut buf = huge_buffer(HUGE_PAGE_MIN + 12_345).unwrap();
        assert!(buf.capacity() >= HUGE_PAGE_MIN + 12_345);
        buf.extend((0..HUGE_PAGE_MIN + 12_345).map(|i| i as u8));
        assert!(buf.iter().enumerate().all(|(i, &b)| b == i as u8));
        // Small or full buffers are left alone.
        let mut small = vec![1u8; 10];
        advise_huge_pages(&mut small);
        assert_eq!(small, [1u8; 10]);
        assert!(huge_buffer(usize::MAX).is_err());
    }
}
