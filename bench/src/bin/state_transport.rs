//! How fast a state envelope's bytes can go from one process's memory to
//! another's, by each transport issue 24 considered: what decided that the
//! envelope stays on the channel's socket rather than in a sealed memfd
//! (docs/bench.md, "The state section").
//!
//! ```text
//! cargo run --release --bin state_transport -- 100     # MiB; 3 rounds
//! ```
//!
//! Per round, on `N` MiB of bytes:
//! - `socket`: written into a socketpair, read on another thread into a
//!   fresh buffer backed by transparent huge pages (what the channel does);
//! - `memfd write+seal`: written into a new memfd, then sealed against
//!   writes, growth and shrinking (what a sender would do);
//! - `map`: the receiver's `mmap(MAP_POPULATE)` of that memfd, read-only;
//! - `copy-out`: copying the mapping into a fresh huge-page buffer (what
//!   decoding a `Vec<u8>` costs at least);
//! - `plain copy`: the same copy from ordinary memory, for comparison;
//! - `shared-map write`: the bytes copied into a shared mapping of a memfd
//!   (encoding straight into it).
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

const HUGE_PAGE: usize = 2 << 20;

/// An empty vector with room for `len` bytes, advised to use huge pages.
fn huge(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::with_capacity(len);
    let start = (v.as_mut_ptr() as usize).next_multiple_of(HUGE_PAGE);
    let end = (v.as_mut_ptr() as usize + len) & !(HUGE_PAGE - 1);
    if end > start {
        // SAFETY: the range lies within the vector's allocation; advice
        // changes no contents.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
    v
}

fn memfd() -> std::fs::File {
    // SAFETY: a static NUL-terminated name and flags; returns a new fd or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"state".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned to us and nothing else owns it.
    std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A mapping of `len` bytes of `file`, unmapped when dropped.
struct Mapping(*mut libc::c_void, usize);

impl Mapping {
    fn new(file: &std::fs::File, len: usize, prot: i32, flags: i32) -> Mapping {
        // SAFETY: a new mapping at an address the kernel picks, of an open
        // file at least `len` bytes long.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, file.as_raw_fd(), 0) };
        assert!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Mapping(p, len)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer borrowed.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn round(src: &[u8]) {
    let len = src.len();
    let (mut writer, mut reader) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let started = Instant::now();
    let receiving = std::thread::spawn(move || {
        let mut buf = huge(len);
        (&mut reader)
            .take(len as u64)
            .read_to_end(&mut buf)
            .expect("read");
        (buf, Instant::now())
    });
    writer.write_all(src).expect("write");
    let (received, done) = receiving.join().expect("reader");
    let socket = done - started;
    assert_eq!(received.len(), len);

    let started = Instant::now();
    let mut file = memfd();
    file.write_all(src).expect("write the memfd");
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on an open descriptor with integer arguments.
    let sealed = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    assert_eq!(sealed, 0, "seal: {}", std::io::Error::last_os_error());
    let written = started.elapsed();
    let started = Instant::now();
    let map = Mapping::new(
        &file,
        len,
        libc::PROT_READ,
        libc::MAP_PRIVATE | libc::MAP_POPULATE,
    );
    let mapped = started.elapsed();
    // SAFETY: the mapping is `len` readable bytes, sealed against writes,
    // and lives until `map` is dropped below.
    let bytes = unsafe { std::slice::from_raw_parts(map.0 as *const u8, len) };
    let started = Instant::now();
    let mut out = huge(len);
    out.extend_from_slice(bytes);
    let copied_out = started.elapsed();
    assert!(out == src);
    drop(map);

    let started = Instant::now();
    let mut plain = huge(len);
    plain.extend_from_slice(src);
    let plain_copy = started.elapsed();

    let started = Instant::now();
    let file = memfd();
    file.set_len(len as u64).expect("size the memfd");
    let map = Mapping::new(
        &file,
        len,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED | libc::MAP_POPULATE,
    );
    // SAFETY: the mapping is `len` writable bytes, ours alone until dropped.
    unsafe { std::slice::from_raw_parts_mut(map.0 as *mut u8, len) }.copy_from_slice(src);
    drop(map);
    let shared_write = started.elapsed();

    println!(
        "{} MiB: socket {} | memfd write+seal {}, map {}, copy-out {} | plain copy {} | shared-map write {}",
        len >> 20,
        ms(socket),
        ms(written),
        ms(mapped),
        ms(copied_out),
        ms(plain_copy),
        ms(shared_write)
    );
}

fn main() {
    let mib: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 100,
        Some(Ok(mib)) if mib > 0 => mib,
        Some(_) => {
            eprintln!("usage: state_transport [MiB, default 100]");
            std::process::exit(2);
        }
    };
    let len = mib << 20;
    let mut src = huge(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while src.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        src.extend_from_slice(&x.to_le_bytes()[..(len - src.len()).min(8)]);
    }
    for _ in 0..3 {
        round(&src);
    }
}
