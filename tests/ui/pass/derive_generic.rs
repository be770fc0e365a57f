// Generic structs: the impl requires of each field type what its role needs.
use std::fmt::Debug;
use std::marker::PhantomData;

use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::{HandoverState, StateFds};

#[derive(HandoverState)]
#[handover(version = 1)]
struct Registry<T: Clone, const N: usize>
where
    T: Debug,
{
    items: Vec<T>,
    slots: [u8; N],
    #[handover(skip)]
    scratch: Option<T>,
    #[handover(skip)]
    marker: PhantomData<fn() -> T>,
}

#[derive(HandoverState)]
struct OnlyFd<L> {
    #[handover(fd)]
    socket: L,
}

fn main() {
    let state = Registry::<String, 2> {
        items: vec!["a".into()],
        slots: [1, 2],
        scratch: Some("s".into()),
        marker: PhantomData,
    };
    let mut fds = StateFds::default();
    let bytes = encode_envelope(&state, &mut fds).unwrap();
    let back: Registry<String, 2> = decode_envelope(&bytes, &mut fds).unwrap();
    assert_eq!(back.items, vec!["a".to_owned()]);
    assert_eq!(back.slots, [1, 2]);
    assert_eq!(back.scratch, None);

    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let bytes = encode_envelope(&OnlyFd { socket }, &mut fds).unwrap();
    let back: OnlyFd<std::net::UdpSocket> = decode_envelope(&bytes, &mut fds).unwrap();
    assert_eq!(back.socket.local_addr().unwrap(), addr);
}
