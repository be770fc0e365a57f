// Builds that differ only in their state struct exchange state by field
// name: reordered, added (with a default), removed and renamed fields, in
// both directions; a changed type is refused naming the field.
use shellflip::state::{decode_envelope, decode_envelope_with_report, encode_envelope};
use shellflip::{HandoverState, StateError, StateFds};

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
pub struct Inner {
    pub x: u64,
    pub y: u64,
}

mod v1 {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: super::Inner,
        #[handover(fd)]
        pub socket: std::net::UdpSocket,
    }
}

mod reordered {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        #[handover(fd)]
        pub socket: std::net::UdpSocket,
        pub inner: super::Inner,
        pub b: u64,
        pub a: u64,
        pub count: u64,
    }
}

mod added {
    pub fn ten() -> u64 {
        10
    }

    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: super::Inner,
        #[handover(fd)]
        pub socket: std::net::UdpSocket,
        #[handover(default)]
        pub peers: Vec<String>,
        #[handover(default = "ten")]
        pub limit: u64,
        #[handover(default = "crate::added::ten")]
        pub other: u64,
        #[handover(default)]
        pub blob: Vec<u8>,
    }
}

mod renamed {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        #[handover(alias = "count")]
        pub served: u64,
        #[handover(alias = "a", alias = "alpha_old")]
        pub alpha: u64,
        pub b: u64,
        pub inner: super::Inner,
        #[handover(fd, alias = "socket")]
        pub udp: std::net::UdpSocket,
    }
}

mod retyped {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Inner {
        pub x: i32,
        pub y: u64,
    }

    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: Inner,
        #[handover(fd)]
        pub socket: std::net::UdpSocket,
    }
}

/// Encodes `state`, decodes it as `T`.
fn carry<S: HandoverState, T: HandoverState>(state: &S) -> Result<(T, Vec<String>), StateError> {
    let mut fds = StateFds::default();
    let bytes = encode_envelope(state, &mut fds)?;
    decode_envelope_with_report::<T>(&bytes, &mut fds).map(|(t, report)| (t, report.dropped))
}

fn socket() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

fn sample() -> v1::State {
    v1::State {
        count: 7,
        a: 1,
        b: 2,
        inner: Inner { x: 3, y: 4 },
        socket: socket(),
    }
}

fn main() {
    // Reordered, at both levels (the nested type is the same here).
    let (r, _) = carry::<_, reordered::State>(&sample()).unwrap();
    assert_eq!((r.count, r.a, r.b, r.inner.x, r.inner.y), (7, 1, 2, 3, 4));

    // Added: the defaults; then rolled back (dropped), then added again.
    let (n, dropped) = carry::<_, added::State>(&sample()).unwrap();
    assert!(dropped.is_empty());
    assert_eq!((n.count, n.peers.len(), n.limit, n.other, n.blob.len()), (7, 0, 10, 10, 0));
    let n = added::State {
        limit: 99,
        peers: vec!["p".into()],
        ..n
    };
    let (back, dropped) = carry::<_, v1::State>(&n).unwrap();
    assert_eq!((back.count, back.a, back.b, &back.inner), (7, 1, 2, &Inner { x: 3, y: 4 }));
    assert_eq!(dropped, ["State.peers", "State.limit", "State.other", "State.blob"]);
    let (again, _) = carry::<_, added::State>(&back).unwrap();
    assert_eq!(again.limit, 10);

    // Renamed: found by the alias, the descriptor too; and back: the old
    // build finds the fields under the former names the new one lists.
    let (renamed, _) = carry::<_, renamed::State>(&sample()).unwrap();
    assert_eq!((renamed.served, renamed.alpha), (7, 1));
    let udp = renamed.udp.local_addr().unwrap();
    let mut fds = StateFds::default();
    let bytes = encode_envelope(&renamed, &mut fds).unwrap();
    // (The descriptor goes by its new name only: hand the old name over
    // for the rollback.)
    let fd = fds.take("udp").unwrap();
    fds.put("socket", std::os::fd::AsFd::as_fd(&fd)).unwrap();
    let old: v1::State = decode_envelope(&bytes, &mut fds).unwrap();
    assert_eq!((old.count, old.a), (7, 1));
    assert_eq!(old.socket.local_addr().unwrap(), udp);

    // Changed type: refused, naming the path and both types.
    let error = carry::<_, retyped::State>(&sample()).err().expect("refused");
    assert!(error.is_mismatch());
    let message = error.to_string();
    assert!(message.contains("`State.inner.x` is i32 in this build but the previous generation sent u64"), "{message}");
}
