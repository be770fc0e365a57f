// Every kind of descriptor field, std's and Tokio's, plain and in an Arc.
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::sync::Arc;

use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::{HandoverState, StateFds};

#[derive(HandoverState)]
struct StdFds {
    #[handover(fd)]
    tcp: std::net::TcpListener,
    #[handover(fd)]
    shared: Arc<std::net::TcpListener>,
    #[handover(fd)]
    stream: UnixStream,
    #[handover(fd)]
    datagram: UnixDatagram,
    #[handover(fd)]
    unix: UnixListener,
    #[handover(fd)]
    file: File,
    #[handover(fd)]
    raw: OwnedFd,
}

#[derive(HandoverState)]
struct TokioFds {
    #[handover(fd)]
    tcp: tokio::net::TcpListener,
    #[handover(fd)]
    udp: Arc<tokio::net::UdpSocket>,
    #[handover(fd)]
    unix: tokio::net::UnixListener,
    #[handover(fd)]
    file: tokio::fs::File,
    requests: u64,
}

fn main() {
    let dir = std::env::temp_dir().join(format!("shellflip-ui-fds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (mut a, b) = UnixStream::pair().unwrap();
    let mut file = tempfile_in(&dir, "std-file");
    file.write_all(b"kept").unwrap();
    let state = StdFds {
        tcp: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        shared: Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
        stream: b,
        datagram: UnixDatagram::unbound().unwrap(),
        unix: UnixListener::bind(dir.join("std.sock")).unwrap(),
        file,
        raw: OwnedFd::from(File::open("/dev/null").unwrap()),
    };
    let tcp_addr = state.tcp.local_addr().unwrap();
    let mut fds = StateFds::default();
    let bytes = encode_envelope(&state, &mut fds).unwrap();
    assert_eq!(fds.len(), 7);
    drop(state);
    let mut back: StdFds = decode_envelope(&bytes, &mut fds).unwrap();
    assert_eq!(back.tcp.local_addr().unwrap(), tcp_addr);
    a.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    back.stream.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"x");
    let mut text = String::new();
    back.file.rewind().unwrap();
    back.file.read_to_string(&mut text).unwrap();
    assert_eq!(text, "kept");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let state = TokioFds {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            udp: Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap()),
            unix: tokio::net::UnixListener::bind(dir.join("tokio.sock")).unwrap(),
            file: tokio::fs::File::from_std(tempfile_in(&dir, "tokio-file")),
            requests: 9,
        };
        let udp_addr = state.udp.local_addr().unwrap();
        let mut fds = StateFds::default();
        let bytes = encode_envelope(&state, &mut fds).unwrap();
        drop(state);
        let back: TokioFds = decode_envelope(&bytes, &mut fds).unwrap();
        assert_eq!(back.udp.local_addr().unwrap(), udp_addr);
        assert_eq!(back.requests, 9);
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempfile_in(dir: &std::path::Path, name: &str) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap()
}
