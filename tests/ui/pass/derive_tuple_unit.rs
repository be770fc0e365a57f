// Tuple structs (fds named by index) and unit structs.
use std::net::TcpListener;

use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::{HandoverState, StateFds};

#[derive(HandoverState)]
struct Pair(u32, #[handover(fd)] TcpListener, #[handover(skip)] Vec<u8>, String);

#[derive(HandoverState)]
struct Newtype(Vec<u64>);

#[derive(HandoverState)]
struct Marker;

#[derive(HandoverState)]
struct Empty {}

fn round_trip<S: HandoverState>(state: &S) -> S {
    let mut fds = StateFds::default();
    let bytes = encode_envelope(state, &mut fds).unwrap();
    decode_envelope(&bytes, &mut fds).unwrap()
}

fn main() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let back = round_trip(&Pair(7, listener, vec![1, 2], "x".into()));
    assert_eq!((back.0, back.3.as_str()), (7, "x"));
    assert_eq!(back.1.local_addr().unwrap(), addr);
    assert!(back.2.is_empty());

    assert_eq!(round_trip(&Newtype(vec![1, 2, 3])).0, vec![1, 2, 3]);
    let Marker = round_trip(&Marker);
    let Empty {} = round_trip(&Empty {});
    assert_eq!(<Marker as HandoverState>::TYPE_NAME, "Marker");
    assert_eq!(<Marker as HandoverState>::VERSION, 1);
    // A unit struct and a struct without fields carry the same (nothing):
    // either reads the other's state.
    let mut fds = StateFds::default();
    let bytes = encode_envelope(&Marker, &mut fds).unwrap();
    let Empty {} = decode_envelope(&bytes, &mut fds).unwrap();
}
