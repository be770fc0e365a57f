// The fingerprint follows the schema: version, field names, roles, types.
// Skipped fields and the order of named fields do not change it.
use shellflip::HandoverState;

mod v1 {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub a: u64,
        pub b: Vec<Vec<u8>>,
    }
}
mod reordered {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub b: Vec<Vec<u8>>,
        pub a: u64,
        #[handover(skip)]
        pub cache: Vec<u8>,
    }
}
mod spaced {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub a : u64,
        pub b : Vec < Vec < u8 > >,
    }
}
mod bumped {
    #[derive(shellflip::HandoverState)]
    #[handover(version = 2)]
    pub struct State {
        pub a: u64,
        pub b: Vec<Vec<u8>>,
    }
}
mod retyped {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub a: u32,
        pub b: Vec<Vec<u8>>,
    }
}
mod renamed {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub a2: u64,
        pub b: Vec<Vec<u8>>,
    }
}

fn main() {
    let v1 = <v1::State as HandoverState>::FINGERPRINT;
    assert_eq!(v1, <reordered::State as HandoverState>::FINGERPRINT);
    assert_eq!(v1, <spaced::State as HandoverState>::FINGERPRINT);
    assert_ne!(v1, <bumped::State as HandoverState>::FINGERPRINT);
    assert_ne!(v1, <retyped::State as HandoverState>::FINGERPRINT);
    assert_ne!(v1, <renamed::State as HandoverState>::FINGERPRINT);

    // A decoder refuses the state of another schema, naming both.
    let mut fds = shellflip::StateFds::default();
    let bytes = shellflip::state::encode_envelope(&v1::State { a: 1, b: vec![vec![1]] }, &mut fds)
        .unwrap();
    let err = shellflip::state::decode_envelope::<retyped::State>(&bytes, &mut fds)
        .err()
        .expect("a mismatch");
    assert!(err.is_mismatch(), "{err}");
}
