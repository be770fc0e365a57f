//! Unit tests of the codec: what one build writes and another reads.
//!
//! Each "build" is a set of serde types; [`carry`] encodes a value of one
//! build into an envelope and decodes it as the other build's type.

use std::collections::{BTreeMap, HashMap};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::*;

/// A state whose data is a `T`, under the name `State` and version `V`.
struct Data<T, const V: u32 = 1>(T);

impl<T, const V: u32> HandoverState for Data<T, V>
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    const TYPE_NAME: &'static str = "State";
    const VERSION: u32 = V;

    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        state.put_data(&self.0)
    }

    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        state.take_data().map(Data)
    }
}

/// A state this build only reads: decoded as a `T` named `State`.
struct Read<T>(T);

impl<T: DeserializeOwned + Send + Sync + 'static> HandoverState for Read<T> {
    const TYPE_NAME: &'static str = "State";

    fn encode_state(&self, _state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        unreachable!("only read")
    }

    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        state.take_data().map(Read)
    }
}

fn envelope<T: Serialize + DeserializeOwned + Send + Sync + 'static>(value: T) -> Vec<u8> {
    encode_envelope(&Data::<T>(value), &mut StateFds::default()).expect("encodes")
}

/// Encodes `value` (one build's type) and decodes it as `B` (another's).
fn carry<A, B>(value: A) -> Result<B, StateError>
where
    A: Serialize + DeserializeOwned + Send + Sync + 'static,
    B: DeserializeOwned + Send + Sync + 'static,
{
    carry_report(value).map(|(b, _)| b)
}

fn carry_report<A, B>(value: A) -> Result<(B, DecodeReport), StateError>
where
    A: Serialize + DeserializeOwned + Send + Sync + 'static,
    B: DeserializeOwned + Send + Sync + 'static,
{
    let bytes = envelope(value);
    decode_envelope_with_report::<Read<B>>(&bytes, &mut StateFds::default())
        .map(|(data, report)| (data.0, report))
}

#[track_caller]
fn type_changed(error: StateError, path: &str, expected: &str, received: &str) {
    match &error {
        StateError::TypeChanged {
            path: p,
            expected: e,
            received: r,
            ..
        } => {
            assert_eq!(p, path, "{error}");
            assert_eq!(e, expected, "{error}");
            assert_eq!(r, received, "{error}");
            assert!(error.is_mismatch());
            let message = error.to_string();
            assert!(message.contains(&format!("`{path}`")), "{message}");
        }
        other => panic!("expected TypeChanged at {path}, got {other:?}: {other}"),
    }
}

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
struct Everything {
    b: bool,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    u128: u128,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    i128: i128,
    f32: f32,
    f64: f64,
    c: char,
    s: String,
    #[serde(with = "bytes")]
    blob: Vec<u8>,
    plain_bytes: Vec<u8>,
    list: Vec<String>,
    map: HashMap<String, Inner>,
    by_kind: BTreeMap<u32, Kind>,
    enum_keys: BTreeMap<Kind, u8>,
    maybe: Option<Inner>,
    none: Option<u64>,
    nested_option: Option<Option<u8>>,
    tuple: (u8, String, Option<i64>),
    pair: Pair,
    meters: Meters,
    unit: (),
    marker: Marker,
    kinds: Vec<Kind>,
    empty: Vec<u64>,
    #[serde(skip)]
    skipped: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
struct Inner {
    x: u64,
    y: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
struct Pair(u32, String);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
struct Meters(u64);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone, Default)]
struct Marker;

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Default)]
enum Kind {
    #[default]
    Plain,
    Tagged(String),
    Pair(u8, u8),
    Limited {
        max: u32,
        burst: i16,
    },
}

fn everything() -> Everything {
    Everything {
        b: true,
        u8: 200,
        u16: 60_000,
        u32: 4_000_000_000,
        u64: u64::MAX,
        u128: u128::MAX - 1,
        i8: -100,
        i16: -30_000,
        i32: i32::MIN,
        i64: i64::MIN + 1,
        i128: i128::MIN,
        f32: 1.5,
        f64: -0.1,
        c: 'é',
        s: "hello ✓".into(),
        blob: (0..=255).collect(),
        plain_bytes: vec![1, 2, 3],
        list: vec!["a".into(), String::new()],
        map: [("k".to_owned(), Inner { x: 1, y: 2 })]
            .into_iter()
            .collect(),
        by_kind: [
            (1, Kind::Plain),
            (2, Kind::Tagged("t".into())),
            (3, Kind::Pair(1, 2)),
            (4, Kind::Limited { max: 9, burst: -1 }),
        ]
        .into_iter()
        .collect(),
        enum_keys: [(Kind::Plain, 1), (Kind::Tagged("x".into()), 2)]
            .into_iter()
            .collect(),
        maybe: Some(Inner { x: 5, y: 6 }),
        none: None,
        nested_option: Some(None),
        tuple: (7, "seven".into(), Some(-7)),
        pair: Pair(8, "eight".into()),
        meters: Meters(9),
        unit: (),
        marker: Marker,
        kinds: vec![Kind::Plain, Kind::Plain, Kind::Tagged("z".into())],
        empty: Vec::new(),
        skipped: 77,
    }
}

#[test]
fn every_kind_of_value_round_trips() {
    let value = everything();
    let back: Everything = carry(value.clone()).unwrap();
    assert_eq!(
        back,
        Everything {
            skipped: 0,
            ..value
        }
    );
}

#[test]
fn the_envelope_describes_itself() {
    let mut out = b"prefix".to_vec();
    let info =
        encode_envelope_into(&Data::<u64, 3>(42), &mut StateFds::default(), &mut out).unwrap();
    assert_eq!(&out[..6], b"prefix");
    let bytes = &out[6..];
    assert_eq!(info.len, bytes.len());
    assert_eq!(info.type_name, "State");
    assert_eq!(info.version, 3);
    let header = parse_envelope(bytes).unwrap();
    assert_eq!(header.format_version, STATE_FORMAT_VERSION);
    assert_eq!(header.version, 3);
    assert_eq!(header.type_name, "State");
    assert_eq!(header.payload, [0xcf, 0, 0, 0, 0, 0, 0, 0, 42]);
    assert_eq!(header.payload.len(), info.payload_len);
    assert_eq!(header.schema.len(), info.schema_len);
    // The same bytes as encode_envelope, and as the two parts the channel
    // sends.
    let whole = encode_envelope(&Data::<u64, 3>(42), &mut StateFds::default()).unwrap();
    assert_eq!(whole, bytes);
    let parts = encode_envelope_parts(&Data::<u64, 3>(42), &mut StateFds::default()).unwrap();
    assert_eq!([parts.header, parts.payload].concat(), bytes);
}

#[test]
fn scalars_carry_their_declared_type() {
    #[derive(Serialize)]
    struct Small {
        a: u64,
        b: u8,
        c: i16,
        d: f32,
    }
    let mut schema = encode::Schema::default();
    let mut out = Vec::new();
    Small {
        a: 1,
        b: 2,
        c: 3,
        d: 0.5,
    }
    .serialize(&mut encode::Encoder::new(&mut out, &mut schema, usize::MAX))
    .unwrap();
    assert_eq!(
        out,
        [
            0x95, // array of 5: the shape and 4 values
            0xd6, 1, 0, 0, 0, 0, // SHAPE(0)
            0xcf, 0, 0, 0, 0, 0, 0, 0, 1, // u64 1
            0xcc, 2, // u8 2
            0xd1, 0, 3, // i16 3
            0xca, 0x3f, 0, 0, 0, // f32 0.5
        ]
    );
    assert_eq!(schema.shapes.len(), 1);
    assert_eq!(schema.shapes[0].fields, ["a", "b", "c", "d"]);
}

#[test]
fn byte_blobs_are_one_bin() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Blob {
        #[serde(with = "bytes")]
        data: Vec<u8>,
    }
    let blob = Blob {
        data: (0..=255u8).cycle().take(100_000).collect(),
    };
    let bytes = envelope(Blob {
        data: blob.data.clone(),
    });
    assert!(bytes.len() < 100_100, "{} bytes", bytes.len());
    let back = decode_envelope::<Data<Blob>>(&bytes, &mut StateFds::default())
        .unwrap()
        .0;
    assert_eq!(back, blob);
    // A plain `Vec<u8>` (a sequence of u8) is read into a byte field, and
    // a byte string into a `Vec<u8>`.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        data: Vec<u8>,
    }
    let read: Blob = carry(Plain {
        data: vec![1, 200, 3],
    })
    .unwrap();
    assert_eq!(read.data, [1, 200, 3]);
    let read: Plain = carry(Blob { data: vec![4, 5] }).unwrap();
    assert_eq!(read.data, [4, 5]);
}

#[test]
fn a_byte_string_read_as_a_sequence_widens_and_refuses_leftover_bytes() {
    #[derive(Serialize, Deserialize)]
    struct Blob(#[serde(with = "bytes")] Vec<u8>);
    let wide: Vec<u16> = carry(Blob(vec![1, 2, 250])).unwrap();
    assert_eq!(wide, [1, 2, 250]);

    /// Takes the first two elements of a sequence and leaves the rest.
    #[derive(Debug)]
    struct FirstTwo;
    impl<'de> Deserialize<'de> for FirstTwo {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visit;
            impl<'de> serde::de::Visitor<'de> for Visit {
                type Value = FirstTwo;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("two elements")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<FirstTwo, A::Error> {
                    seq.next_element::<u8>()?;
                    seq.next_element::<u8>()?;
                    Ok(FirstTwo)
                }
            }
            d.deserialize_seq(Visit)
        }
    }
    let error = carry::<_, FirstTwo>(Blob(vec![1, 2, 3])).unwrap_err();
    match &error {
        StateError::Incompatible { path, reason, .. } => {
            assert_eq!(path, "State", "{error}");
            assert_eq!(
                reason, "received 3 bytes, this build takes only 2",
                "{error}"
            );
        }
        other => panic!("{other}"),
    }
}

// ---------------------------------------------------------------------------
// Matching by name
// ---------------------------------------------------------------------------

mod v1 {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: Inner,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    pub struct Inner {
        pub x: u64,
        pub y: u64,
    }

    pub fn sample() -> State {
        State {
            count: 7,
            a: 1,
            b: 2,
            inner: Inner { x: 3, y: 4 },
        }
    }
}

mod reordered {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct State {
        pub inner: Inner,
        pub b: u64,
        pub count: u64,
        pub a: u64,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Inner {
        pub y: u64,
        pub x: u64,
    }
}

#[test]
fn reordering_fields_at_every_level_keeps_every_value() {
    let back: reordered::State = carry(v1::sample()).unwrap();
    assert_eq!(
        back,
        reordered::State {
            inner: reordered::Inner { y: 4, x: 3 },
            b: 2,
            count: 7,
            a: 1,
        }
    );
    // And back again.
    let again: v1::State = carry(back).unwrap();
    assert_eq!(again, v1::sample());
}

#[test]
fn reordering_inside_map_values_and_sequences_keeps_every_value() {
    let map: BTreeMap<String, v1::Inner> = (0..50)
        .map(|i| (format!("k{i}"), v1::Inner { x: i, y: 1000 + i }))
        .collect();
    let back: BTreeMap<String, reordered::Inner> = carry(map).unwrap();
    for (k, v) in &back {
        let i: u64 = k[1..].parse().unwrap();
        assert_eq!((v.x, v.y), (i, 1000 + i));
    }
    let list = vec![v1::sample(); 3];
    let back: Vec<reordered::State> = carry(list).unwrap();
    assert!(back.iter().all(|s| s.a == 1 && s.b == 2 && s.inner.y == 4));
}

mod added {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    pub struct State {
        pub count: u64,
        pub a: u64,
        pub b: u64,
        pub inner: Inner,
        #[serde(default = "seven")]
        pub extra: u64,
        pub note: Option<String>,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    pub struct Inner {
        pub x: u64,
        pub y: u64,
        #[serde(default)]
        pub z: Vec<u8>,
    }

    fn seven() -> u64 {
        7
    }
}

#[test]
fn an_added_field_takes_its_default_and_a_rollback_drops_it() {
    // v1 -> added: the new fields take their defaults (an Option is None).
    let (new, report) = carry_report::<_, added::State>(v1::sample()).unwrap();
    assert_eq!(
        new,
        added::State {
            count: 7,
            a: 1,
            b: 2,
            inner: added::Inner {
                x: 3,
                y: 4,
                z: Vec::new()
            },
            extra: 7,
            note: None,
        }
    );
    assert!(report.dropped.is_empty());

    // The new build ran on and set the new fields; rollback to v1: they
    // are dropped (and listed), everything else is kept.
    let mut later = new.clone();
    later.count = 8;
    later.extra = 99;
    later.inner.z = vec![1];
    later.note = Some("n".into());
    let (old, report) = carry_report::<_, v1::State>(later).unwrap();
    assert_eq!(
        old,
        v1::State {
            count: 8,
            ..v1::sample()
        }
    );
    assert_eq!(
        report.dropped,
        ["State.inner.z", "State.extra", "State.note"]
    );

    // And forward again: the defaults once more.
    let again: added::State = carry(old).unwrap();
    assert_eq!(again.count, 8);
    assert_eq!(again.extra, 7);
}

#[test]
fn an_added_field_without_default_is_refused_naming_it() {
    #[derive(Serialize, Deserialize)]
    struct Inner {
        x: u64,
        y: u64,
        z: u64,
    }
    #[derive(Serialize, Deserialize)]
    struct State {
        count: u64,
        a: u64,
        b: u64,
        inner: Inner,
    }
    let error = carry::<_, State>(v1::sample()).map(|_| ()).unwrap_err();
    assert!(
        matches!(&error, StateError::MissingField { path, .. } if path == "State.inner.z"),
        "{error:?}"
    );
    assert!(error.is_mismatch());
    let message = error.to_string();
    assert!(message.contains("`State.inner.z`"), "{message}");
    assert!(message.contains("#[handover(default)]"), "{message}");
}

mod renamed {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct State {
        pub count: u64,
        #[serde(alias = "a")]
        pub alpha: u64,
        pub b: u64,
        pub inner: Inner,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct Inner {
        #[serde(alias = "x")]
        pub ex: u64,
        pub y: u64,
    }
}

/// `renamed::State` as `#[derive(HandoverState)]` with
/// `#[handover(alias = "a")]` sends it: with the field's former name.
struct Renamed(renamed::State);

impl HandoverState for Renamed {
    const TYPE_NAME: &'static str = "State";
    const FIELD_ALIASES: &'static [(&'static str, &'static [&'static str])] = &[("alpha", &["a"])];

    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        state.put_data(&self.0)
    }

    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        state.take_data().map(Renamed)
    }
}

#[test]
fn a_renamed_field_is_found_by_its_alias_in_both_directions() {
    let new: renamed::State = carry(v1::sample()).unwrap();
    assert_eq!(
        new,
        renamed::State {
            count: 7,
            alpha: 1,
            b: 2,
            inner: renamed::Inner { ex: 3, y: 4 },
        }
    );
    // Rollback: the renamed build lists the former name of its top-level
    // field, so the old build finds `a`.
    let bytes = encode_envelope(&Renamed(new), &mut StateFds::default()).unwrap();
    let result = decode_envelope::<Data<v1::State>>(&bytes, &mut StateFds::default());
    // ...but not the nested `x`, whose alias lives in serde's derive of the
    // new build, which the old build never sees.
    let error = result.map(|_| ()).unwrap_err();
    assert!(
        matches!(&error, StateError::MissingField { path, .. } if path == "State.inner.x"),
        "{error}"
    );

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct TopOnly {
        count: u64,
        #[serde(alias = "a")]
        alpha: u64,
        b: u64,
        inner: v1::Inner,
    }
    struct RenamedTop(TopOnly);
    impl HandoverState for RenamedTop {
        const TYPE_NAME: &'static str = "State";
        const FIELD_ALIASES: &'static [(&'static str, &'static [&'static str])] =
            &[("alpha", &["a"])];
        fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
            state.put_data(&self.0)
        }
        fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.take_data().map(RenamedTop)
        }
    }
    let top: TopOnly = carry(v1::sample()).unwrap();
    assert_eq!(top.alpha, 1);
    let bytes = encode_envelope(&RenamedTop(top), &mut StateFds::default()).unwrap();
    let (old, report) =
        decode_envelope_with_report::<Data<v1::State>>(&bytes, &mut StateFds::default()).unwrap();
    assert_eq!(old.0, v1::sample());
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
}

#[test]
fn a_removed_field_is_dropped_and_listed_once() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Inner {
        y: u64,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct State {
        count: u64,
        inner: Inner,
    }
    let (state, report) = carry_report::<_, State>(v1::sample()).unwrap();
    assert_eq!(
        state,
        State {
            count: 7,
            inner: Inner { y: 4 }
        }
    );
    assert_eq!(report.dropped, ["State.a", "State.b", "State.inner.x"]);
    // Many values of the same struct: each dropped field listed once.
    let (list, report) = carry_report::<_, Vec<Inner>>(vec![v1::sample().inner; 100]).unwrap();
    assert_eq!(list.len(), 100);
    assert_eq!(report.dropped, ["State[0].x"]);
}

// ---------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------

#[test]
fn a_changed_type_is_refused_naming_the_path_and_both_types() {
    #[derive(Serialize, Deserialize, Debug)]
    struct Inner {
        x: i32,
        y: u64,
    }
    #[derive(Serialize, Deserialize, Debug)]
    struct State {
        count: u64,
        a: u64,
        b: u64,
        inner: Inner,
    }
    type_changed(
        carry::<_, State>(v1::sample()).unwrap_err(),
        "State.inner.x",
        "i32",
        "u64",
    );

    #[derive(Serialize, Deserialize, Debug)]
    struct Text {
        count: String,
    }
    type_changed(
        carry::<_, Text>(v1::sample()).unwrap_err(),
        "State.count",
        "a string",
        "u64",
    );
    type_changed(
        carry::<_, Vec<u64>>(v1::sample()).unwrap_err(),
        "State",
        "a sequence",
        "struct `State`",
    );
    type_changed(
        carry::<_, v1::State>(vec![1u64]).unwrap_err(),
        "State",
        "struct `State`",
        "a sequence of 1",
    );
    // Inside a map value and a sequence element.
    let map: BTreeMap<String, v1::Inner> = [("k".to_owned(), v1::sample().inner)].into();
    type_changed(
        carry::<_, BTreeMap<String, Inner>>(map).unwrap_err(),
        "State[\"k\"].x",
        "i32",
        "u64",
    );
    type_changed(
        carry::<_, Vec<Inner>>(vec![v1::sample().inner; 2]).unwrap_err(),
        "State[0].x",
        "i32",
        "u64",
    );
}

#[test]
fn lossless_widenings_are_accepted() {
    assert_eq!(carry::<u8, u64>(200).unwrap(), 200);
    assert_eq!(carry::<u16, u32>(60_000).unwrap(), 60_000);
    assert_eq!(carry::<u32, u64>(4_000_000_000).unwrap(), 4_000_000_000);
    assert_eq!(carry::<u64, u128>(u64::MAX).unwrap(), u128::from(u64::MAX));
    assert_eq!(carry::<u32, i64>(u32::MAX).unwrap(), i64::from(u32::MAX));
    assert_eq!(carry::<u8, i16>(255).unwrap(), 255);
    assert_eq!(carry::<i8, i64>(-5).unwrap(), -5);
    assert_eq!(carry::<i64, i128>(i64::MIN).unwrap(), i128::from(i64::MIN));
    assert_eq!(carry::<f32, f64>(0.1).unwrap(), f64::from(0.1f32));
    assert_eq!(carry::<u16, f32>(65_535).unwrap(), 65_535.0);
    assert_eq!(carry::<i32, f64>(i32::MIN).unwrap(), f64::from(i32::MIN));
    assert_eq!(carry::<u64, Option<u64>>(3).unwrap(), Some(3));
    assert_eq!(
        carry::<v1::Inner, Option<v1::Inner>>(v1::sample().inner).unwrap(),
        Some(v1::sample().inner)
    );
    assert_eq!(carry::<Vec<u8>, Vec<u32>>(vec![1, 2]).unwrap(), [1, 2]);
    assert_eq!(
        carry::<Meters, u64>(Meters(4)).unwrap(),
        4,
        "a newtype is its content"
    );
    assert_eq!(carry::<u64, Meters>(4).unwrap(), Meters(4));
    assert_eq!(carry::<char, String>('x').unwrap(), "x");
}

#[test]
fn narrowing_and_other_changes_are_refused_even_when_the_value_fits() {
    type_changed(carry::<u64, u32>(1).unwrap_err(), "State", "u32", "u64");
    type_changed(carry::<i64, u64>(1).unwrap_err(), "State", "u64", "i64");
    type_changed(carry::<u64, i64>(1).unwrap_err(), "State", "i64", "u64");
    type_changed(carry::<i8, u8>(1).unwrap_err(), "State", "u8", "i8");
    type_changed(carry::<f64, f32>(1.0).unwrap_err(), "State", "f32", "f64");
    type_changed(carry::<u64, f64>(1).unwrap_err(), "State", "f64", "u64");
    type_changed(
        carry::<bool, u8>(true).unwrap_err(),
        "State",
        "u8",
        "a bool",
    );
    type_changed(
        carry::<String, char>("x".into()).unwrap_err(),
        "State",
        "a char",
        "a string",
    );
    // Option<T> -> T is refused whether the value is Some or None.
    type_changed(
        carry::<Option<u64>, u64>(Some(1)).unwrap_err(),
        "State",
        "u64",
        "an Option (Some)",
    );
    type_changed(
        carry::<Option<u64>, u64>(None).unwrap_err(),
        "State",
        "u64",
        "nil (a unit, a unit struct or None)",
    );
    type_changed(
        carry::<String, Vec<u8>>("x".into()).unwrap_err(),
        "State",
        "a sequence",
        "a string",
    );
    // A tuple's length is part of its type.
    let error = carry::<(u8, u8, u8), (u8, u8)>((1, 2, 3)).unwrap_err();
    assert!(matches!(error, StateError::Incompatible { .. }), "{error}");
    let error = carry::<(u8, u8), (u8, u8, u8)>((1, 2)).unwrap_err();
    assert!(matches!(error, StateError::Incompatible { .. }), "{error}");
}

// ---------------------------------------------------------------------------
// Enums
// ---------------------------------------------------------------------------

mod kinds_v2 {
    use super::*;

    /// `Kind` with its variants in another order and one more.
    #[derive(Serialize, Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Kind {
        Limited { burst: i16, max: u64 },
        New,
        Pair(u8, u8),
        Tagged(String),
        Plain,
    }
}

#[test]
fn enum_variants_are_matched_by_name() {
    let values = vec![
        Kind::Plain,
        Kind::Tagged("t".into()),
        Kind::Pair(1, 2),
        Kind::Limited { max: 9, burst: -1 },
    ];
    let back: Vec<kinds_v2::Kind> = carry(values).unwrap();
    assert_eq!(
        back,
        [
            kinds_v2::Kind::Plain,
            kinds_v2::Kind::Tagged("t".into()),
            kinds_v2::Kind::Pair(1, 2),
            kinds_v2::Kind::Limited { burst: -1, max: 9 },
        ]
    );
    // As map keys too.
    let keys: BTreeMap<Kind, u8> = [(Kind::Plain, 1), (Kind::Pair(3, 4), 2)].into();
    let back: BTreeMap<kinds_v2::Kind, u8> = carry(keys).unwrap();
    assert_eq!(back[&kinds_v2::Kind::Plain], 1);
    assert_eq!(back[&kinds_v2::Kind::Pair(3, 4)], 2);
}

#[test]
fn an_unknown_variant_or_a_changed_variant_kind_is_refused() {
    let error =
        carry::<_, Vec<Kind>>(vec![kinds_v2::Kind::Plain, kinds_v2::Kind::New]).unwrap_err();
    match &error {
        StateError::UnknownVariant {
            path,
            variant,
            expected,
            ..
        } => {
            assert_eq!(path, "State[1]");
            assert_eq!(variant, "New");
            assert_eq!(expected, "`Plain`, `Tagged`, `Pair` and `Limited`");
        }
        other => panic!("{other:?}"),
    }
    assert!(error.is_mismatch());

    #[derive(Serialize, Deserialize, Debug)]
    enum Changed {
        Plain(u8),
    }
    type_changed(
        carry::<_, Changed>(Kind::Plain).unwrap_err(),
        "State",
        "a newtype variant `Kind::Plain`",
        "unit variant `Kind::Plain`",
    );
    #[derive(Serialize, Deserialize, Debug)]
    enum Widened {
        Limited { max: u8, burst: i16 },
    }
    type_changed(
        carry::<_, Widened>(Kind::Limited { max: 1, burst: 2 }).unwrap_err(),
        "State::Limited.max",
        "u8",
        "u32",
    );
}

// ---------------------------------------------------------------------------
// Shapes that vary, tuple structs, serde's self-describing paths
// ---------------------------------------------------------------------------

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Sparse {
    id: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    note: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct SparseReordered {
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    note: Option<String>,
    id: u64,
}

#[test]
fn structs_whose_field_list_varies_are_patched() {
    let values: Vec<Sparse> = (0..40)
        .map(|i| Sparse {
            id: i,
            note: (i % 3 == 0).then(|| format!("n{i}")),
            tags: if i % 2 == 0 {
                vec![format!("t{i}")]
            } else {
                Vec::new()
            },
        })
        .collect();
    let back: Vec<Sparse> = carry(values.clone()).unwrap();
    assert_eq!(back, values);
    let reordered: Vec<SparseReordered> = carry(values.clone()).unwrap();
    for (a, b) in values.iter().zip(&reordered) {
        assert_eq!(
            (u64::from(a.id), &a.note, &a.tags),
            (b.id, &b.note, &b.tags)
        );
    }
    // Four shapes of `Sparse` in the table, each once.
    let bytes = envelope(values);
    let header = parse_envelope(&bytes).unwrap();
    let schema = wire::read_schema(header.schema).unwrap();
    assert_eq!(schema.shapes.len(), 4);
}

#[test]
fn tuple_structs_are_positional_and_drop_trailing_fields() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Three(u32, String, u8);
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Two(u32, String);
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct TwoAndDefault(u32, String, #[serde(default)] u16);
    let (two, report) = carry_report::<_, Two>(Three(1, "a".into(), 3)).unwrap();
    assert_eq!(two, Two(1, "a".into()));
    assert_eq!(report.dropped, ["State[2]"]);
    let three: TwoAndDefault = carry(two).unwrap();
    assert_eq!(three, TwoAndDefault(1, "a".into(), 0));
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Swapped(String, u32);
    type_changed(
        carry::<_, Swapped>(Pair(1, "x".into()))
            .map(|_| ())
            .unwrap_err(),
        "State[0]",
        "a string",
        "u32",
    );
    let error = carry::<_, Three>(Pair(1, "x".into()))
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, StateError::Incompatible { .. }), "{error}");
}

#[test]
fn serde_attributes_that_need_a_self_describing_format_work() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Flat {
        id: u64,
        #[serde(flatten)]
        extra: BTreeMap<String, u64>,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Loose {
        Number(u64),
        Inner(v1::Inner),
        Text(String),
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(tag = "type")]
    enum Tagged {
        A { x: u64 },
        B(v1::Inner),
    }
    let flat = Flat {
        id: 1,
        extra: [("k".to_owned(), 2)].into(),
    };
    let back: Flat = carry(Flat {
        id: 1,
        extra: [("k".to_owned(), 2)].into(),
    })
    .unwrap();
    assert_eq!(back, flat);
    let loose = vec![
        Loose::Number(3),
        Loose::Inner(v1::sample().inner),
        Loose::Text("t".into()),
    ];
    let back: Vec<Loose> = carry(loose).unwrap();
    assert_eq!(back[1], Loose::Inner(v1::sample().inner));
    let tagged = vec![Tagged::A { x: 1 }, Tagged::B(v1::sample().inner)];
    let back: Vec<Tagged> = carry(tagged).unwrap();
    assert_eq!(back, [Tagged::A { x: 1 }, Tagged::B(v1::sample().inner)]);
    let any: Vec<Kind> = vec![Kind::Limited { max: 1, burst: 2 }, Kind::Plain];
    let back: serde_json::Value = carry(any).unwrap();
    assert_eq!(
        back,
        serde_json::json!([{"Limited": {"max": 1, "burst": 2}}, "Plain"])
    );
}

#[test]
fn a_struct_with_the_same_fields_is_read_positionally() {
    thread_local! {
        static SEEN: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// Records whether it was given a sequence or a map.
    #[derive(Debug)]
    struct Probe;
    impl<'de> Deserialize<'de> for Probe {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Probe;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("Inner")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Probe, A::Error> {
                    while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    SEEN.with(|s| s.borrow_mut().push("seq"));
                    Ok(Probe)
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut a: A,
                ) -> Result<Probe, A::Error> {
                    while a.next_entry::<String, serde::de::IgnoredAny>()?.is_some() {}
                    SEEN.with(|s| s.borrow_mut().push("map"));
                    Ok(Probe)
                }
            }
            d.deserialize_struct("Inner", &["x", "y"], V)
        }
    }
    let _: Vec<Probe> = carry(vec![v1::sample().inner; 2]).unwrap();
    let _: Vec<Probe> = carry(vec![reordered::Inner { y: 1, x: 2 }]).unwrap();
    assert_eq!(SEEN.with(|s| s.borrow().clone()), ["seq", "seq", "map"]);
}

// ---------------------------------------------------------------------------
// Versions and migrations
// ---------------------------------------------------------------------------

mod chain {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct V1 {
        pub a: u64,
        pub b: u64,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct V2 {
        pub total: u64,
    }
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    pub struct V3 {
        pub total: String,
    }

    pub struct S1(pub V1);
    pub struct S2(pub V2);
    pub struct S3(pub V3);

    impl HandoverState for S1 {
        const TYPE_NAME: &'static str = "State";
        fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
            state.put_data(&self.0)
        }
        fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.take_data().map(S1)
        }
    }

    impl HandoverState for S2 {
        const TYPE_NAME: &'static str = "State";
        const VERSION: u32 = 2;
        const OLDEST_VERSION: u32 = S1::OLDEST_VERSION;
        fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
            state.put_data(&self.0)
        }
        fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.take_data().map(S2)
        }
        fn decode_version(version: u32, state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.migrate::<S1, Self>(version)
        }
    }

    impl From<S1> for S2 {
        fn from(old: S1) -> Self {
            S2(V2 {
                total: old.0.a + old.0.b,
            })
        }
    }

    impl HandoverState for S3 {
        const TYPE_NAME: &'static str = "State";
        const VERSION: u32 = 3;
        const OLDEST_VERSION: u32 = S2::OLDEST_VERSION;
        fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
            state.put_data(&self.0)
        }
        fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.take_data().map(S3)
        }
        fn decode_version(version: u32, state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            state.migrate::<S2, Self>(version)
        }
    }

    impl From<S2> for S3 {
        fn from(old: S2) -> Self {
            S3(V3 {
                total: format!("total {}", old.0.total),
            })
        }
    }
}

#[test]
fn migrations_chain_from_any_older_version() {
    use chain::*;
    let mut fds = StateFds::default();
    let v1 = encode_envelope(&S1(V1 { a: 1, b: 2 }), &mut fds).unwrap();
    let v2 = encode_envelope(&S2(V2 { total: 5 }), &mut fds).unwrap();
    assert_eq!(
        decode_envelope::<S2>(&v1, &mut fds).unwrap().0,
        V2 { total: 3 }
    );
    assert_eq!(
        decode_envelope::<S3>(&v1, &mut fds).unwrap().0.total,
        "total 3",
        "1 -> 2 -> 3"
    );
    assert_eq!(
        decode_envelope::<S3>(&v2, &mut fds).unwrap().0.total,
        "total 5"
    );
    assert_eq!(
        decode_envelope::<S1>(&v1, &mut fds).unwrap().0,
        V1 { a: 1, b: 2 }
    );
}

#[test]
fn a_newer_version_or_one_without_a_route_is_refused_naming_both() {
    use chain::*;
    let mut fds = StateFds::default();
    let v3 = encode_envelope(&S3(V3 { total: "t".into() }), &mut fds).unwrap();
    let error = decode_envelope::<S2>(&v3, &mut fds)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(
        error,
        StateError::Version {
            received: 3,
            version: 2,
            oldest: 1,
            ..
        }
    ));
    assert!(error.is_mismatch());
    let message = error.to_string();
    assert!(message.contains("version 3 of `State`"), "{message}");
    assert!(message.contains("versions 1 to 2"), "{message}");
    assert!(message.contains("cannot be migrated back"), "{message}");
    assert_eq!(
        message,
        format!(
            "the handover state cannot be carried: the previous generation sent version 3 of `State`, this build's `{}` reads versions 1 to 2 (older ones through its migrations); a state cannot be migrated back to an older schema: deploy a build that reads it, or restart once with fresh state",
            S2::TYPE_NAME
        )
    );

    let v2 = encode_envelope(&S2(V2 { total: 5 }), &mut fds).unwrap();
    let error = decode_envelope::<S1>(&v2, &mut fds)
        .map(|_| ())
        .unwrap_err();
    assert!(error.to_string().contains("version 1 only"), "{error}");
    // Version 0 (no route below version 1).
    let v0 = encode_envelope(&Data::<u64, 0>(1), &mut fds).unwrap();
    let error = decode_envelope::<S3>(&v0, &mut fds)
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(
            error,
            StateError::Version {
                received: 0,
                version: 3,
                oldest: 1,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("add a migration"), "{error}");
}

#[test]
fn a_build_without_state_drops_whatever_it_receives() {
    let bytes = envelope(v1::sample());
    decode_envelope::<()>(&bytes, &mut StateFds::default()).unwrap();
    let unit = encode_envelope(&(), &mut StateFds::default()).unwrap();
    decode_envelope::<()>(&unit, &mut StateFds::default()).unwrap();
}

// ---------------------------------------------------------------------------
// Damaged and hostile input
// ---------------------------------------------------------------------------

#[test]
fn an_envelope_of_the_old_format_is_refused_with_what_to_do() {
    // What shellflip's format version 1 wrote: magic, version 1, an 8-byte
    // fingerprint, the name, a MessagePack payload.
    let mut old = b"SFST\x00\x01".to_vec();
    old.extend_from_slice(&42u64.to_be_bytes());
    old.extend_from_slice(&5u16.to_be_bytes());
    old.extend_from_slice(b"State");
    old.extend_from_slice(&[0x91, 0x01]);
    let error = decode_envelope::<Data<u64>>(&old, &mut StateFds::default())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(
        error,
        StateError::OldFormat {
            found: 1,
            expected: 2
        }
    ));
    assert!(error.is_mismatch());
    let message = error.to_string();
    assert!(message.contains("older shellflip"), "{message}");
    assert!(message.contains("fresh state"), "{message}");
    let mut newer = envelope(1u64);
    newer[5] = 9;
    assert!(matches!(
        decode_envelope::<Data<u64>>(&newer, &mut StateFds::default()),
        Err(StateError::UnsupportedFormat { found: 9, .. })
    ));
}

#[test]
fn every_truncation_and_byte_flip_is_an_error_or_a_value_never_a_panic() {
    let bytes = envelope(everything());
    for len in 0..bytes.len() {
        assert!(
            decode_envelope::<Data<Everything>>(&bytes[..len], &mut StateFds::default()).is_err(),
            "truncated to {len}"
        );
    }
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x10, 0x80, 0xff] {
            let mut mutated = bytes.clone();
            mutated[i] ^= flip;
            let _ = decode_envelope::<Data<Everything>>(&mutated, &mut StateFds::default());
            let _ = decode_envelope::<Data<serde_json::Value>>(&mutated, &mut StateFds::default());
        }
    }
}

#[test]
fn damaged_input_is_reported_as_such() {
    let mut bytes = envelope(v1::sample());
    bytes[0] = b'X';
    let error = decode_envelope::<Data<v1::State>>(&bytes, &mut StateFds::default())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(&error, StateError::Corrupt { type_name, .. } if type_name == "State"));
    assert!(!error.is_mismatch());
    assert!(error
        .to_string()
        .starts_with("could not decode the handover state `State`"));

    // A payload announcing more than there is.
    let mut bytes = envelope(v1::sample());
    bytes[10..18].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(matches!(
        decode_envelope::<Data<v1::State>>(&bytes, &mut StateFds::default()),
        Err(StateError::Corrupt { .. })
    ));
    // Garbage in place of the payload.
    let mut out = Vec::new();
    encode_envelope_into(&Damaged, &mut StateFds::default(), &mut out).unwrap();
    let error = decode_envelope::<Damaged>(&out, &mut StateFds::default())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
}

struct Damaged;

impl HandoverState for Damaged {
    const TYPE_NAME: &'static str = "Damaged";
    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        state.put_data(&v1::sample())?;
        state.__damage_payload(|payload| payload.truncate(payload.len() / 2));
        Ok(())
    }
    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        state.take_data::<v1::State>().map(|_| Damaged)
    }
}

/// A hand-built payload of `depth` nested one-element arrays around nil.
fn nested(depth: usize) -> Vec<u8> {
    let mut out = Vec::new();
    write_header::<Data<serde_json::Value>>(&mut out, depth + 1).unwrap();
    out.extend(std::iter::repeat_n(0x91, depth));
    out.push(wire::Marker::Null.to_u8());
    wire::write_schema(&mut out, &[], &[]).unwrap();
    out
}

#[test]
fn nesting_is_bounded_on_both_sides() {
    let ok = nested(MAX_STATE_DEPTH);
    decode_envelope::<Data<serde_json::Value>>(&ok, &mut StateFds::default()).unwrap();
    decode_envelope::<Read<serde::de::IgnoredAny>>(&ok, &mut StateFds::default()).unwrap();
    let deep = nested(MAX_STATE_DEPTH + 1);
    for error in [
        decode_envelope::<Data<serde_json::Value>>(&deep, &mut StateFds::default())
            .map(|_| ())
            .unwrap_err(),
        decode_envelope::<Read<serde::de::IgnoredAny>>(&deep, &mut StateFds::default())
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            matches!(error, StateError::TooDeep { limit: 128, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("depth limit"), "{error}");
    }
    // The encoder refuses what the decoder would.
    let mut value = serde_json::Value::Null;
    for _ in 0..=MAX_STATE_DEPTH {
        value = serde_json::Value::Array(vec![value]);
    }
    let error = encode_envelope(&Data::<_, 1>(value), &mut StateFds::default()).unwrap_err();
    assert!(error.to_string().contains("depth limit"), "{error}");
}

#[test]
fn huge_announced_lengths_allocate_nothing_and_fail() {
    let mut out = Vec::new();
    write_header::<Data<Vec<u64>>>(&mut out, 5).unwrap();
    out.extend_from_slice(&[wire::Marker::Array32.to_u8(), 0xff, 0xff, 0xff, 0xff]);
    wire::write_schema(&mut out, &[], &[]).unwrap();
    let error = decode_envelope::<Data<Vec<u64>>>(&out, &mut StateFds::default())
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(error, StateError::Corrupt { .. }), "{error}");
}

#[test]
fn a_serialize_impl_that_miscounts_is_an_encode_error() {
    struct Liar;
    impl Serialize for Liar {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut st = s.serialize_struct("Liar", 2)?;
            st.serialize_field("only", &1u8)?;
            st.end()
        }
    }
    struct LiarState;
    impl HandoverState for LiarState {
        const TYPE_NAME: &'static str = "Liar";
        fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
            state.put_data(&Liar)
        }
        fn decode_state(_: &mut StateDecoder<'_>) -> Result<Self, StateError> {
            Ok(LiarState)
        }
    }
    let mut out = b"keep".to_vec();
    let error = encode_envelope_into(&LiarState, &mut StateFds::default(), &mut out).unwrap_err();
    assert!(matches!(error, StateError::Encode { .. }), "{error}");
    assert_eq!(out, b"keep", "nothing is left behind");
}

#[test]
fn fds_travel_by_name() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut fds = StateFds::default();
    fds.put_field("peer", &a).unwrap();
    assert_eq!(fds.len(), 1);
    assert!(fds.contains("peer"));
    assert!(matches!(fds.take("nope"), Err(StateError::MissingFd(n)) if n == "nope"));
    let back: std::os::unix::net::UnixStream = fds.take_field("peer").unwrap();
    assert!(back.peer_addr().is_ok());
    assert!(fds.is_empty());
}

#[test]
fn a_state_over_the_cap_is_refused_before_sending_naming_its_size() {
    #[derive(Serialize, Deserialize)]
    struct Big {
        #[serde(with = "crate::state::bytes")]
        blob: Vec<u8>,
        values: Vec<u64>,
    }
    let state: Data<Big> = Data(Big {
        blob: vec![7; 600],
        values: (0..100).collect(),
    });
    let mut fds = StateFds::default();
    // A blob past the cap (500 bytes less the 25 of the header): refused before it is copied.
    let error = encode_envelope_parts_within(&state, &mut fds, 500, None).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, StateError::Encode { .. }), "{error:?}");
    assert!(message.contains("past 475 bytes"), "{message}");
    assert!(message.contains("MAX_STATE_BYTES"), "{message}");
    // Small values that add up past the cap: refused as the output grows.
    let error = encode_envelope_parts_within(&state, &mut fds, 1000, None).unwrap_err();
    assert!(error.to_string().contains("past 975 bytes"), "{error}");
    // Just over, with the schema table: refused when the envelope is done.
    let fits = encode_envelope_parts(&state, &mut fds).unwrap();
    let error =
        encode_envelope_parts_within(&state, &mut fds, fits.len() as u64 - 1, None).unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("the encoded state is {} bytes", fits.len())),
        "{error}"
    );
    assert!(encode_envelope_parts_within(&state, &mut fds, fits.len() as u64, None).is_ok());
}

#[test]
fn a_state_over_half_the_memory_available_is_refused_naming_both_sizes() {
    #[derive(Serialize, Deserialize)]
    struct Big {
        #[serde(with = "crate::state::bytes")]
        blob: Vec<u8>,
    }
    let state: Data<Big> = Data(Big {
        blob: vec![7; 3 << 20],
    });
    let mut fds = StateFds::default();
    let memory = |bytes: u64| {
        Some(crate::memory::Available {
            bytes,
            source: "/cg/memory.max = 8.0 MiB".to_owned(),
        })
    };
    // 4 MiB available: the envelope may take 2 MiB; the blob is 3.
    let error = encode_envelope_parts_within(&state, &mut fds, MAX_STATE_BYTES, memory(4 << 20))
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, StateError::OutOfMemory { available, .. } if available == 4 << 20),
        "{error:?}"
    );
    assert!(message.contains("was not sent"), "{message}");
    assert!(message.contains("grew past 2.0 MiB"), "{message}");
    assert!(
        message.contains("half of the 4.0 MiB available (/cg/memory.max = 8.0 MiB)"),
        "{message}"
    );
    assert!(message.contains("keeps serving"), "{message}");
    // Enough memory: sent; and the cap still applies when it is the lower.
    assert!(
        encode_envelope_parts_within(&state, &mut fds, MAX_STATE_BYTES, memory(7 << 20)).is_ok()
    );
    let error =
        encode_envelope_parts_within(&state, &mut fds, 1 << 20, memory(7 << 20)).unwrap_err();
    assert!(error.to_string().contains("MAX_STATE_BYTES"), "{error}");
}

#[test]
fn a_small_state_takes_a_small_buffer() {
    // A connection's state, encoded once per connection handed over.
    #[derive(Serialize, Deserialize)]
    struct Session {
        id: u64,
        count: u64,
    }
    let mut out = Vec::new();
    encode_envelope_into(
        &Data::<Session>(Session { id: 1, count: 2 }),
        &mut StateFds::default(),
        &mut out,
    )
    .unwrap();
    assert!(out.len() < 100, "{} bytes", out.len());
    assert!(
        out.capacity() <= 1024,
        "a buffer of {} bytes",
        out.capacity()
    );
}

#[test]
fn a_large_blob_round_trips_through_huge_page_buffers() {
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Blobs {
        #[serde(with = "crate::state::bytes")]
        big: Vec<u8>,
        #[serde(with = "crate::state::bytes")]
        small: Vec<u8>,
        tail: Vec<u64>,
    }
    let value = Blobs {
        big: (0..crate::fd::HUGE_PAGE_MIN * 2 + 3)
            .map(|i| (i % 251) as u8)
            .collect(),
        small: vec![1, 2, 3],
        tail: (0..100_000).collect(),
    };
    let bytes = envelope(value);
    let back: Read<Blobs> = decode_envelope(&bytes, &mut StateFds::default()).unwrap();
    assert_eq!(back.0.big.len(), crate::fd::HUGE_PAGE_MIN * 2 + 3);
    assert!(back
        .0
        .big
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (i % 251) as u8));
    assert_eq!(back.0.small, [1, 2, 3]);
    assert_eq!(back.0.tail, (0..100_000).collect::<Vec<u64>>());
}

/// The data is read once: a second `take_data` is refused at the root.
struct ReadTwice;

impl HandoverState for ReadTwice {
    const TYPE_NAME: &'static str = "State";

    fn encode_state(&self, state: &mut StateEncoder<'_>) -> Result<(), StateError> {
        state.put_data(&1u8)
    }

    fn decode_state(state: &mut StateDecoder<'_>) -> Result<Self, StateError> {
        let _: u8 = state.take_data()?;
        state.take_data::<u8>().map(|_| ReadTwice)
    }
}

#[test]
fn the_data_is_taken_once() {
    let bytes = encode_envelope(&ReadTwice, &mut StateFds::default()).unwrap();
    match decode_envelope::<ReadTwice>(&bytes, &mut StateFds::default()) {
        Err(StateError::Incompatible {
            type_name,
            path,
            reason,
        }) => {
            assert_eq!((type_name.as_str(), path.as_str()), ("State", "State"));
            assert_eq!(reason, "the data was read twice; call `take_data` once");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
