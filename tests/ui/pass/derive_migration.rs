// Migrations: version 3 reads versions 1 and 2 through the previous schemas
// kept in modules (1 -> 2 -> 3); version 1 refuses version 3; generic
// structs migrate too.
use shellflip::state::{decode_envelope, encode_envelope};
use shellflip::{HandoverState, StateError, StateFds};

mod v1 {
    #[derive(shellflip::HandoverState)]
    pub struct State {
        pub a: u64,
        pub b: u64,
    }
}

mod v2 {
    #[derive(shellflip::HandoverState)]
    #[handover(version = 2, from = "super::v1::State")]
    pub struct State {
        pub total: u64,
    }

    impl From<super::v1::State> for State {
        fn from(old: super::v1::State) -> Self {
            State { total: old.a + old.b }
        }
    }
}

#[derive(shellflip::HandoverState, Debug, PartialEq)]
#[handover(version = 3, from = "v2::State")]
struct State {
    total: String,
}

impl From<v2::State> for State {
    fn from(old: v2::State) -> Self {
        State {
            total: format!("{} in all", old.total),
        }
    }
}

// A generic struct with a migration from a generic one.
#[derive(shellflip::HandoverState)]
struct Old<T> {
    items: Vec<T>,
}

#[derive(shellflip::HandoverState)]
#[handover(version = 2, from = "Old<T>")]
struct New<T> {
    first: Option<T>,
}

impl<T> From<Old<T>> for New<T> {
    fn from(old: Old<T>) -> Self {
        New {
            first: old.items.into_iter().next(),
        }
    }
}

fn carry<S: HandoverState, T: HandoverState>(state: &S) -> Result<T, StateError> {
    let mut fds = StateFds::default();
    let bytes = encode_envelope(state, &mut fds)?;
    decode_envelope(&bytes, &mut fds)
}

fn main() {
    assert_eq!(<State as HandoverState>::VERSION, 3);
    assert_eq!(<State as HandoverState>::OLDEST_VERSION, 1);
    let from_1: State = carry(&v1::State { a: 1, b: 2 }).unwrap();
    assert_eq!(from_1.total, "3 in all");
    let from_2: State = carry(&v2::State { total: 5 }).unwrap();
    assert_eq!(from_2.total, "5 in all");
    let from_3: State = carry(&State { total: "x".into() }).unwrap();
    assert_eq!(from_3.total, "x");

    let error = carry::<_, v1::State>(&State { total: "x".into() }).err().expect("refused");
    assert!(
        matches!(error, StateError::Version { received: 3, version: 1, .. }),
        "{error}"
    );

    let new: New<String> = carry(&Old { items: vec!["a".to_owned()] }).unwrap();
    assert_eq!(new.first.as_deref(), Some("a"));
}
