//! Typed state carried from one generation to the next.
//!
//! A type implements [`HandoverState`] (normally through
//! `#[derive(HandoverState)]`); the old generation encodes it when a restart
//! starts and the new generation decodes it before the user's code runs.
//!
//! On the wire the state is an *envelope*: a fixed header followed by the
//! MessagePack payload produced by the type.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "SFST"
//! 4       2     format version (big endian), currently 1
//! 6       8     schema fingerprint of the type (big endian)
//! 14      2     length N of the type name (big endian)
//! 16      N     type name, UTF-8
//! 16+N    ...   payload (MessagePack, written by the type)
//! ```
//!
//! File descriptors held by the state (listeners, streams, files) never go
//! into the payload: they travel beside it, by name, in [`StateFds`].

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of the envelope layout written by this build.
pub const STATE_FORMAT_VERSION: u16 = 1;
const MAGIC: &[u8; 4] = b"SFST";
const HEADER_FIXED: usize = 4 + 2 + 8 + 2;
/// The largest envelope a generation accepts (1 GiB).
pub const MAX_STATE_BYTES: u64 = 1 << 30;

/// State that survives a restart.
///
/// Implemented by `#[derive(HandoverState)]`; implement it by hand only for
/// special needs. `()` implements it for services that keep no state.
///
/// ```
/// use shellflip_runtime::state::{self, HandoverState, StateError, StateFds};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Default, Debug, PartialEq)]
/// struct Counters { served: u64 }
///
/// impl HandoverState for Counters {
///     const TYPE_NAME: &'static str = "Counters";
///     const FINGERPRINT: u64 = 0x5eed_0001;
///     fn encode_state(&self, _fds: &mut StateFds) -> Result<Vec<u8>, StateError> {
///         state::encode_data(Self::TYPE_NAME, self)
///     }
///     fn decode_state(payload: &[u8], _fds: &mut StateFds) -> Result<Self, StateError> {
///         state::decode_data(Self::TYPE_NAME, payload)
///     }
/// }
///
/// let mut fds = StateFds::default();
/// let bytes = state::encode_envelope(&Counters { served: 7 }, &mut fds)?;
/// let back: Counters = state::decode_envelope(&bytes, &mut fds)?;
/// assert_eq!(back, Counters { served: 7 });
/// # Ok::<(), StateError>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be handed over to the next generation",
    label = "`{Self}` does not implement `HandoverState`",
    note = "add `#[derive(shellflip::HandoverState)]` to `{Self}` (or use `Context<()>` for a service without state)"
)]
pub trait HandoverState: Sized + Send + 'static {
    /// The type's name, shown in error messages.
    const TYPE_NAME: &'static str;
    /// A fingerprint of the type's schema (version, field names and types).
    /// Two builds exchange state only if their fingerprints are equal.
    const FINGERPRINT: u64;

    /// Writes the data part as MessagePack and puts fd-holding fields into
    /// `fds` under their names.
    fn encode_state(&self, fds: &mut StateFds) -> Result<Vec<u8>, StateError>;

    /// Rebuilds the value from a payload written by [`encode_state`] of an
    /// identical schema, taking fd-holding fields out of `fds`.
    ///
    /// [`encode_state`]: HandoverState::encode_state
    fn decode_state(payload: &[u8], fds: &mut StateFds) -> Result<Self, StateError>;
}

impl HandoverState for () {
    const TYPE_NAME: &'static str = "()";
    const FINGERPRINT: u64 = 0;

    fn encode_state(&self, _fds: &mut StateFds) -> Result<Vec<u8>, StateError> {
        Ok(Vec::new())
    }

    fn decode_state(_payload: &[u8], _fds: &mut StateFds) -> Result<Self, StateError> {
        Ok(())
    }
}

/// Why state could not be handed over.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The old generation could not serialize its state.
    #[error("could not encode the handover state `{type_name}`: {reason}")]
    Encode {
        /// The state type.
        type_name: &'static str,
        /// What the encoder said.
        reason: String,
    },
    /// The payload does not decode as the expected type.
    #[error("could not decode the handover state `{type_name}`: {reason}; the previous generation sent data this build cannot read")]
    Decode {
        /// The state type.
        type_name: &'static str,
        /// What the decoder said.
        reason: String,
    },
    /// The envelope is damaged: wrong magic, truncated, oversized.
    #[error("the handover state is corrupt: {0}")]
    Corrupt(String),
    /// The envelope was written by a newer or older layout.
    #[error("the handover state uses format version {found}, this build reads version {expected}; restart with a build of a compatible shellflip version")]
    UnsupportedFormat {
        /// Version found in the envelope.
        found: u16,
        /// Version this build reads.
        expected: u16,
    },
    /// The previous generation's state type differs from this build's.
    #[error("the handover state is incompatible: the previous generation sent `{found_type}` with fingerprint {found_fingerprint:#018x}, this build expects `{expected_type}` with fingerprint {expected_fingerprint:#018x}; deploy a build with the same state schema, bump nothing by accident, or choose on_state_mismatch = \"fresh\" to start with fresh state")]
    Mismatch {
        /// The type this build expects.
        expected_type: &'static str,
        /// Its fingerprint.
        expected_fingerprint: u64,
        /// The type named in the envelope.
        found_type: String,
        /// The fingerprint in the envelope.
        found_fingerprint: u64,
    },
    /// A field's file descriptor was not among those handed over.
    #[error("the handover state expects a file descriptor named `{0}` but the previous generation did not send one")]
    MissingFd(String),
    /// A file descriptor could not be duplicated or adopted.
    #[error("file descriptor `{name}` of the handover state: {source}")]
    Fd {
        /// The field name.
        name: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

impl StateError {
    /// True when the state was readable but written for another schema, the
    /// case that `on_state_mismatch = "fresh"` turns into a fresh start.
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            StateError::Mismatch { .. } | StateError::UnsupportedFormat { .. }
        )
    }
}

/// Named file descriptors carried beside the state payload.
#[derive(Default)]
pub struct StateFds {
    fds: Vec<(String, OwnedFd)>,
}

impl fmt::Debug for StateFds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.fds.iter().map(|(name, _)| name))
            .finish()
    }
}

impl StateFds {
    /// Adds a duplicate of `fd` under `name` (the original stays with the
    /// caller and keeps working).
    pub fn put(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), StateError> {
        let owned = fd.try_clone_to_owned().map_err(|source| StateError::Fd {
            name: name.to_owned(),
            source,
        })?;
        self.fds.push((name.to_owned(), owned));
        Ok(())
    }

    /// Takes the descriptor named `name` out.
    pub fn take(&mut self, name: &str) -> Result<OwnedFd, StateError> {
        let index = self
            .fds
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| StateError::MissingFd(name.to_owned()))?;
        Ok(self.fds.swap_remove(index).1)
    }

    /// Puts the value of an fd-holding field.
    pub fn put_field<T: HandoverFd>(&mut self, name: &str, value: &T) -> Result<(), StateError> {
        self.put(name, value.handover_fd())
    }

    /// Takes and adopts the value of an fd-holding field.
    pub fn take_field<T: HandoverFd>(&mut self, name: &str) -> Result<T, StateError> {
        let fd = self.take(name)?;
        T::from_handover_fd(fd).map_err(|source| StateError::Fd {
            name: name.to_owned(),
            source,
        })
    }

    /// The number of descriptors held.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// True when no descriptor is held.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<(String, OwnedFd)> {
        self.fds
    }

    pub(crate) fn from_vec(fds: Vec<(String, OwnedFd)>) -> Self {
        StateFds { fds }
    }
}

/// A field type that is handed over as a file descriptor rather than
/// serialized: sockets, listeners, files.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be handed over as a file descriptor",
    note = "`#[handover(fd)]` works for sockets, listeners, files and `OwnedFd` (std and tokio), and `Arc`s of them"
)]
pub trait HandoverFd: Sized {
    /// The descriptor to hand over (it is duplicated; `self` keeps its own).
    fn handover_fd(&self) -> BorrowedFd<'_>;
    /// Rebuilds the value from a handed-over descriptor.
    fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self>;
}

macro_rules! std_handover_fd {
    ($($ty:ty),* $(,)?) => {$(
        impl HandoverFd for $ty {
            fn handover_fd(&self) -> BorrowedFd<'_> {
                self.as_fd()
            }
            fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self> {
                Ok(<$ty>::from(fd))
            }
        }
    )*};
}

std_handover_fd!(
    OwnedFd,
    std::fs::File,
    std::net::TcpListener,
    std::net::TcpStream,
    std::net::UdpSocket,
    std::os::unix::net::UnixListener,
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixDatagram,
);

macro_rules! tokio_handover_fd {
    ($($ty:ty => $std:ty),* $(,)?) => {$(
        impl HandoverFd for $ty {
            fn handover_fd(&self) -> BorrowedFd<'_> {
                self.as_fd()
            }
            /// Must be called inside a Tokio runtime.
            fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self> {
                let std = <$std>::from(fd);
                std.set_nonblocking(true)?;
                <$ty>::from_std(std)
            }
        }
    )*};
}

tokio_handover_fd!(
    tokio::net::TcpListener => std::net::TcpListener,
    tokio::net::TcpStream => std::net::TcpStream,
    tokio::net::UdpSocket => std::net::UdpSocket,
    tokio::net::UnixListener => std::os::unix::net::UnixListener,
    tokio::net::UnixStream => std::os::unix::net::UnixStream,
    tokio::net::UnixDatagram => std::os::unix::net::UnixDatagram,
);

impl HandoverFd for tokio::fs::File {
    fn handover_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self> {
        Ok(tokio::fs::File::from_std(std::fs::File::from(fd)))
    }
}

/// An `Arc` of an fd type hands over the shared descriptor, so a listener
/// kept in the state can also be shared with an accept loop.
impl<T: HandoverFd> HandoverFd for std::sync::Arc<T> {
    fn handover_fd(&self) -> BorrowedFd<'_> {
        (**self).handover_fd()
    }
    fn from_handover_fd(fd: OwnedFd) -> std::io::Result<Self> {
        T::from_handover_fd(fd).map(std::sync::Arc::new)
    }
}

/// Byte blobs as MessagePack `bin` (one length and the bytes) rather than
/// a sequence of integers (one to two bytes each, decoded one by one):
/// what `#[derive(HandoverState)]` uses for `Vec<u8>` fields and fields
/// marked `#[handover(bytes)]`. Usable as `#[serde(with = "...")]`.
pub mod bytes {
    use std::fmt;

    use serde::de::{Deserializer, SeqAccess, Visitor};
    use serde::Serializer;

    /// Writes `value` as one byte string.
    pub fn serialize<T, S>(value: &T, serializer: S) -> Result<S::Ok, S::Error>
    where
        T: AsRef<[u8]> + ?Sized,
        S: Serializer,
    {
        serializer.serialize_bytes(value.as_ref())
    }

    /// Reads a byte string (or, from older encodings, a sequence of bytes).
    pub fn deserialize<'de, T, D>(deserializer: D) -> Result<T, D::Error>
    where
        T: From<Vec<u8>>,
        D: Deserializer<'de>,
    {
        deserializer.deserialize_byte_buf(BytesVisitor).map(T::from)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

/// Serializes the data part of a state as MessagePack, structs as arrays
/// of their fields in order: field names are not repeated with every value
/// (a map of 400 000 small structs encodes 25 % faster and 7 % smaller).
/// Field order is safe to rely on: builds exchange state only when their
/// schema fingerprints, which cover the fields in order, are equal.
/// [`decode_data`] also reads structs written as maps with field names.
pub fn encode_data<T: Serialize + ?Sized>(
    type_name: &'static str,
    value: &T,
) -> Result<Vec<u8>, StateError> {
    rmp_serde::to_vec(value).map_err(|e| StateError::Encode {
        type_name,
        reason: e.to_string(),
    })
}

/// How deeply nested the decoded state may be (maps and arrays inside one
/// another). The limit keeps decoding within a small thread stack whatever
/// the input (the fuzzer's 1000-deep input needed over 2 MiB in a debug
/// build at MessagePack's default of 1024); real states stay far below it.
pub const MAX_STATE_DEPTH: usize = 128;

/// Deserializes the data part written by [`encode_data`].
pub fn decode_data<T: DeserializeOwned>(
    type_name: &'static str,
    payload: &[u8],
) -> Result<T, StateError> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(payload);
    deserializer.set_max_depth(MAX_STATE_DEPTH);
    T::deserialize(&mut deserializer).map_err(|e| StateError::Decode {
        type_name,
        reason: e.to_string(),
    })
}

/// Encodes `state` into an envelope (header and payload); its fds go into
/// `fds`.
pub fn encode_envelope<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
) -> Result<Vec<u8>, StateError> {
    let EncodedState {
        mut header,
        payload,
    } = encode_envelope_parts(state, fds)?;
    header.extend_from_slice(&payload);
    Ok(header)
}

/// An envelope in two parts, sent one after the other so that a large
/// payload is never copied behind its header.
#[derive(Debug, Default)]
pub(crate) struct EncodedState {
    pub header: Vec<u8>,
    pub payload: Vec<u8>,
}

impl EncodedState {
    pub(crate) fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }
}

/// [`encode_envelope`] without joining the header and the payload.
pub(crate) fn encode_envelope_parts<S: HandoverState>(
    state: &S,
    fds: &mut StateFds,
) -> Result<EncodedState, StateError> {
    let payload = state.encode_state(fds)?;
    let name = S::TYPE_NAME.as_bytes();
    let name_len = u16::try_from(name.len()).map_err(|_| StateError::Encode {
        type_name: S::TYPE_NAME,
        reason: "the type name is longer than 65535 bytes".to_owned(),
    })?;
    let mut header = Vec::with_capacity(HEADER_FIXED + name.len() + payload.len());
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&STATE_FORMAT_VERSION.to_be_bytes());
    header.extend_from_slice(&S::FINGERPRINT.to_be_bytes());
    header.extend_from_slice(&name_len.to_be_bytes());
    header.extend_from_slice(name);
    let encoded = EncodedState { header, payload };
    if encoded.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::Encode {
            type_name: S::TYPE_NAME,
            reason: format!(
                "the encoded state is {} bytes, more than the {} bytes a generation accepts",
                encoded.len(),
                MAX_STATE_BYTES
            ),
        });
    }
    Ok(encoded)
}

/// The parsed header of an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader<'a> {
    /// Layout version.
    pub format_version: u16,
    /// Schema fingerprint.
    pub fingerprint: u64,
    /// Type name.
    pub type_name: &'a str,
    /// The payload that follows the header.
    pub payload: &'a [u8],
}

/// Parses an envelope's header without interpreting the payload. Never
/// panics, whatever the input.
pub fn parse_envelope(bytes: &[u8]) -> Result<EnvelopeHeader<'_>, StateError> {
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::Corrupt(format!(
            "{} bytes is more than the {} bytes a generation accepts",
            bytes.len(),
            MAX_STATE_BYTES
        )));
    }
    if bytes.len() < HEADER_FIXED {
        return Err(StateError::Corrupt(format!(
            "{} bytes is shorter than the {HEADER_FIXED}-byte header",
            bytes.len()
        )));
    }
    let (magic, rest) = bytes.split_at(4);
    if magic != MAGIC {
        return Err(StateError::Corrupt(
            "it does not start with the shellflip state magic".to_owned(),
        ));
    }
    let (version, rest) = rest.split_at(2);
    let format_version = u16::from_be_bytes([version[0], version[1]]);
    if format_version != STATE_FORMAT_VERSION {
        return Err(StateError::UnsupportedFormat {
            found: format_version,
            expected: STATE_FORMAT_VERSION,
        });
    }
    let (fp, rest) = rest.split_at(8);
    let mut fp_bytes = [0u8; 8];
    fp_bytes.copy_from_slice(fp);
    let fingerprint = u64::from_be_bytes(fp_bytes);
    let (len, rest) = rest.split_at(2);
    let name_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if rest.len() < name_len {
        return Err(StateError::Corrupt(format!(
            "the type name is announced as {name_len} bytes but only {} remain",
            rest.len()
        )));
    }
    let (name, payload) = rest.split_at(name_len);
    let type_name = std::str::from_utf8(name)
        .map_err(|_| StateError::Corrupt("the type name is not UTF-8".to_owned()))?;
    Ok(EnvelopeHeader {
        format_version,
        fingerprint,
        type_name,
        payload,
    })
}

/// Decodes an envelope into `S`, checking the type name and fingerprint
/// first. Never panics, whatever the input.
pub fn decode_envelope<S: HandoverState>(
    bytes: &[u8],
    fds: &mut StateFds,
) -> Result<S, StateError> {
    let header = parse_envelope(bytes)?;
    if header.fingerprint != S::FINGERPRINT || header.type_name != S::TYPE_NAME {
        return Err(StateError::Mismatch {
            expected_type: S::TYPE_NAME,
            expected_fingerprint: S::FINGERPRINT,
            found_type: header.type_name.to_owned(),
            found_fingerprint: header.fingerprint,
        });
    }
    S::decode_state(header.payload, fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn structs_are_encoded_without_field_names_and_named_ones_still_decode() {
        let value = Sample {
            served: 3,
            names: vec!["a".into()],
        };
        let compact = encode_data("Sample", &value).unwrap();
        let named = rmp_serde::to_vec_named(&value).unwrap();
        assert!(compact.len() < named.len());
        assert!(!compact.windows(6).any(|w| w == b"served"));
        assert_eq!(decode_data::<Sample>("Sample", &compact).unwrap(), value);
        // What earlier builds wrote (maps with field names).
        assert_eq!(decode_data::<Sample>("Sample", &named).unwrap(), value);
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    struct Sample {
        served: u64,
        names: Vec<String>,
    }

    impl HandoverState for Sample {
        const TYPE_NAME: &'static str = "Sample";
        const FINGERPRINT: u64 = 42;
        fn encode_state(&self, _fds: &mut StateFds) -> Result<Vec<u8>, StateError> {
            encode_data(Self::TYPE_NAME, self)
        }
        fn decode_state(payload: &[u8], _fds: &mut StateFds) -> Result<Self, StateError> {
            decode_data(Self::TYPE_NAME, payload)
        }
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq, Default)]
    struct Other {
        served: String,
    }

    impl HandoverState for Other {
        const TYPE_NAME: &'static str = "Sample";
        const FINGERPRINT: u64 = 43;
        fn encode_state(&self, _fds: &mut StateFds) -> Result<Vec<u8>, StateError> {
            encode_data(Self::TYPE_NAME, self)
        }
        fn decode_state(payload: &[u8], _fds: &mut StateFds) -> Result<Self, StateError> {
            decode_data(Self::TYPE_NAME, payload)
        }
    }

    fn sample() -> Sample {
        Sample {
            served: 9,
            names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn round_trip() {
        let mut fds = StateFds::default();
        let bytes = encode_envelope(&sample(), &mut fds).unwrap();
        let header = parse_envelope(&bytes).unwrap();
        assert_eq!(header.type_name, "Sample");
        assert_eq!(header.fingerprint, 42);
        assert_eq!(header.format_version, STATE_FORMAT_VERSION);
        assert_eq!(
            decode_envelope::<Sample>(&bytes, &mut fds).unwrap(),
            sample()
        );
    }

    #[test]
    fn fingerprint_mismatch_names_both() {
        let mut fds = StateFds::default();
        let bytes = encode_envelope(&sample(), &mut fds).unwrap();
        let err = decode_envelope::<Other>(&bytes, &mut fds).unwrap_err();
        assert!(err.is_mismatch());
        let msg = err.to_string();
        assert!(msg.contains("0x000000000000002a"), "{msg}");
        assert!(msg.contains("0x000000000000002b"), "{msg}");
        assert!(msg.contains("`Sample`"), "{msg}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut fds = StateFds::default();
        let bytes = encode_envelope(&sample(), &mut fds).unwrap();
        for len in 0..bytes.len() {
            assert!(
                decode_envelope::<Sample>(&bytes[..len], &mut fds).is_err(),
                "truncated to {len}"
            );
        }
    }

    #[test]
    fn corrupt_inputs_are_errors() {
        let mut fds = StateFds::default();
        let mut bytes = encode_envelope(&sample(), &mut fds).unwrap();
        bytes[0] = b'X';
        assert!(matches!(
            decode_envelope::<Sample>(&bytes, &mut fds),
            Err(StateError::Corrupt(_))
        ));
        let mut bytes = encode_envelope(&sample(), &mut fds).unwrap();
        bytes[5] = 99;
        assert!(matches!(
            decode_envelope::<Sample>(&bytes, &mut fds),
            Err(StateError::UnsupportedFormat { found: 99, .. })
        ));
        let mut bytes = encode_envelope(&sample(), &mut fds).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        bytes.push(0xc1); // never used in MessagePack
        assert!(decode_envelope::<Sample>(&bytes, &mut fds).is_err());
    }

    #[test]
    fn byte_blobs_are_one_bin_and_round_trip() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Blob {
            #[serde(with = "super::bytes")]
            data: Vec<u8>,
        }
        let blob = Blob {
            data: (0..=255u8).cycle().take(10_000).collect(),
        };
        let encoded = encode_data("Blob", &blob).unwrap();
        assert!(encoded.len() < 10_100, "{} bytes", encoded.len());
        assert_eq!(decode_data::<Blob>("Blob", &encoded).unwrap(), blob);
        // A sequence of integers (an older encoding) is still read.
        #[derive(Serialize)]
        struct Plain {
            data: Vec<u8>,
        }
        let plain = encode_data(
            "Blob",
            &Plain {
                data: vec![1, 200, 3],
            },
        )
        .unwrap();
        assert_eq!(
            decode_data::<Blob>("Blob", &plain).unwrap().data,
            vec![1, 200, 3]
        );
    }

    #[test]
    fn fds_travel_by_name() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut fds = StateFds::default();
        fds.put_field("peer", &a).unwrap();
        assert_eq!(fds.len(), 1);
        assert!(matches!(fds.take("nope"), Err(StateError::MissingFd(n)) if n == "nope"));
        let back: std::os::unix::net::UnixStream = fds.take_field("peer").unwrap();
        assert!(back.peer_addr().is_ok());
        assert!(fds.is_empty());
    }
}
