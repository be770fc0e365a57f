// `Vec<u8>` fields, and other byte containers marked `#[handover(bytes)]`,
// travel as one MessagePack byte string: a 64 KiB blob of high bytes
// encodes to about 64 KiB (not ~128 KiB of integers) and round-trips.
use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::{HandoverState, StateFds};

#[derive(HandoverState)]
struct Blobs {
    blob: Vec<u8>,
    #[handover(bytes)]
    boxed: Box<[u8]>,
    numbers: Vec<u16>,
}

#[derive(HandoverState)]
struct Tuple(std::vec::Vec<u8>, u8);

fn main() {
    let state = Blobs {
        blob: vec![0xff; 64 * 1024],
        boxed: vec![1, 2, 3].into_boxed_slice(),
        numbers: vec![1, 2, 300],
    };
    let mut fds = StateFds::default();
    let bytes = encode_envelope(&state, &mut fds).unwrap();
    assert!(bytes.len() < 66 * 1024, "{} bytes", bytes.len());
    let back: Blobs = decode_envelope(&bytes, &mut fds).unwrap();
    assert_eq!(back.blob, state.blob);
    assert_eq!(&*back.boxed, &[1, 2, 3]);
    assert_eq!(back.numbers, vec![1, 2, 300]);

    let tuple = Tuple(vec![9; 10], 7);
    let bytes = encode_envelope(&tuple, &mut fds).unwrap();
    let back: Tuple = decode_envelope(&bytes, &mut fds).unwrap();
    assert_eq!((back.0, back.1), (vec![9; 10], 7));
}
