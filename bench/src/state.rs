//! The state of the handover benchmark: a blob and a map of small structs,
//! sized by a number of megabytes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One small record of the map (a session, a counter, a cache entry...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Entry {
    pub hits: u64,
    pub last_seen_ms: u64,
    pub name: String,
}

/// What the state service hands over: three quarters of the size in a
/// byte blob, one quarter in a map of small structs.
#[derive(shellflip::HandoverState, Clone, Debug, PartialEq)]
pub struct BenchState {
    pub blob: Vec<u8>,
    pub entries: BTreeMap<u64, Entry>,
}

/// Bytes per map entry counted towards the size.
pub const ENTRY_BYTES: usize = 64;

impl BenchState {
    /// A state of about `bytes` bytes of data (the encoded size differs a
    /// little: the struct field names are written with each entry).
    pub fn of_size(bytes: usize) -> BenchState {
        let blob_len = bytes / 4 * 3;
        let entries = (bytes - blob_len) / ENTRY_BYTES;
        // xorshift: incompressible, reproducible, all byte values.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut blob = Vec::with_capacity(blob_len);
        while blob.len() < blob_len {
            let word = next().to_le_bytes();
            let take = (blob_len - blob.len()).min(8);
            blob.extend_from_slice(&word[..take]);
        }
        let entries = (0..entries as u64)
            .map(|k| {
                let v = next();
                (
                    k,
                    Entry {
                        hits: v % 1_000_000,
                        last_seen_ms: v >> 20,
                        name: format!("client-{:08x}", v as u32),
                    },
                )
            })
            .collect();
        BenchState { blob, entries }
    }
}

/// A byte blob serialized by hand as one MessagePack `bin` value (what
/// `serde_bytes` does). `#[derive(HandoverState)]` now does the same for a
/// plain `Vec<u8>` field; the two are measured side by side to show that
/// the derive's encoding costs nothing over the hand-written one.
#[derive(Clone, Debug, PartialEq)]
pub struct BinBlob(pub Vec<u8>);

impl Serialize for BinBlob {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for BinBlob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = BinBlob;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<BinBlob, E> {
                Ok(BinBlob(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<BinBlob, E> {
                Ok(BinBlob(v))
            }
        }
        deserializer.deserialize_byte_buf(Visitor)
    }
}

/// [`BenchState`] with its blob as a [`BinBlob`].
#[derive(shellflip::HandoverState, Clone, Debug, PartialEq)]
pub struct BenchStateBin {
    pub blob: BinBlob,
    pub entries: BTreeMap<u64, Entry>,
}

impl From<BenchState> for BenchStateBin {
    fn from(s: BenchState) -> Self {
        BenchStateBin {
            blob: BinBlob(s.blob),
            entries: s.entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shellflip::state::{decode_envelope, encode_envelope};
    use shellflip::StateFds;

    #[test]
    fn sized_state_round_trips_through_the_envelope() {
        let state = BenchState::of_size(64 * 1024);
        assert_eq!(state.blob.len(), 48 * 1024);
        assert_eq!(state.entries.len(), 16 * 1024 / ENTRY_BYTES);
        let mut fds = StateFds::default();
        let bytes = encode_envelope(&state, &mut fds).unwrap();
        // The blob is one byte string: the envelope stays close to the data.
        assert!(bytes.len() < 64 * 1024 * 5 / 4, "{} bytes", bytes.len());
        let back: BenchState = decode_envelope(&bytes, &mut fds).unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn bin_blob_round_trips_and_is_no_bigger() {
        let plain = BenchState::of_size(64 * 1024);
        let bin = BenchStateBin::from(plain.clone());
        let mut fds = StateFds::default();
        let plain_bytes = encode_envelope(&plain, &mut fds).unwrap();
        let bin_bytes = encode_envelope(&bin, &mut fds).unwrap();
        // The derive writes a `Vec<u8>` as one byte string too.
        assert!(bin_bytes.len() <= plain_bytes.len() + 16);
        assert!(plain_bytes.len() <= bin_bytes.len() + 16);
        let back: BenchStateBin = decode_envelope(&bin_bytes, &mut fds).unwrap();
        assert_eq!(back, bin);
    }
}
