// Data, skipped and fd fields of a struct with named fields survive an
// encode/decode round trip, the sockets being the same kernel sockets.
use std::collections::HashMap;
use std::net::{TcpListener, UdpSocket};

use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::{HandoverState, StateFds};

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq, Clone)]
struct Peer {
    name: String,
    port: u16,
}

#[derive(HandoverState)]
#[handover(version = 3)]
struct State {
    served: u64,
    peers: Vec<Peer>,
    by_name: HashMap<String, u32>,
    #[handover(skip)]
    cache: HashMap<String, String>,
    #[handover(fd)]
    listener: TcpListener,
    #[handover(fd)]
    udp: UdpSocket,
    note: Option<String>,
    r#type: String,
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (listener.local_addr().unwrap(), udp.local_addr().unwrap());
    let state = State {
        served: 42,
        peers: vec![Peer { name: "a".into(), port: 1 }],
        by_name: HashMap::from([("a".to_owned(), 1)]),
        cache: HashMap::from([("k".to_owned(), "v".to_owned())]),
        listener,
        udp,
        note: None,
        r#type: "t".into(),
    };

    let mut fds = StateFds::default();
    let bytes = encode_envelope(&state, &mut fds).unwrap();
    assert_eq!(fds.len(), 2);
    drop(state);
    let back: State = decode_envelope(&bytes, &mut fds).unwrap();
    assert!(fds.is_empty());

    assert_eq!(back.served, 42);
    assert_eq!(back.peers, vec![Peer { name: "a".into(), port: 1 }]);
    assert_eq!(back.by_name.get("a"), Some(&1));
    assert!(back.cache.is_empty(), "skipped fields come back as Default");
    assert_eq!(back.listener.local_addr().unwrap(), tcp_addr);
    assert_eq!(back.udp.local_addr().unwrap(), udp_addr);
    assert_eq!(back.note, None);
    assert_eq!(back.r#type, "t");
    assert_eq!(<State as HandoverState>::TYPE_NAME, "State");
}
