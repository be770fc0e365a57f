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
    /// little: each entry's integers and string have their markers).
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

/// Bytes of the blob each connection of the state service reads.
pub const READ_BYTES: usize = 16;

impl BenchState {
    /// What a connection of the state service reads of the state before it
    /// greets (under `StateCell::read()`): the sum of [`READ_BYTES`] bytes
    /// of the blob at an index derived from `served` (the connection's
    /// number) and the map's length, plus the `hits` of the entry keyed
    /// `served` modulo that length. A map lookup and a few bytes: cheap,
    /// but every connection touches both parts of the state.
    pub fn read_probe(&self, served: u64) -> u64 {
        let entries = self.entries.len() as u64;
        let hits = match served.checked_rem(entries) {
            Some(key) => self.entries.get(&key).map_or(0, |e| e.hits),
            None => 0,
        };
        let at = served
            .wrapping_mul(4099)
            .wrapping_add(entries)
            .checked_rem(self.blob.len() as u64)
            .unwrap_or(0) as usize;
        let bytes: u64 = self
            .blob
            .iter()
            .skip(at)
            .take(READ_BYTES)
            .map(|&b| u64::from(b))
            .sum();
        hits + bytes
    }
}

/// The line the state service prints on stdout when a generation stops
/// serving (its `main` returns at the shutdown, after its successor's
/// READY): its own `VmHWM`, in KiB, read from `/proc/self/status` then.
/// The driver resets that peak (`clear_refs`) just before each trigger, so
/// this is the generation's peak RSS during the handover. Printed by the
/// generation itself because with the probation off it exits a few
/// milliseconds after READY, often before the driver could read its
/// `/proc` entry.
pub fn peak_line(pid: u32, vm_hwm_kib: u64) -> String {
    format!("peak pid={pid} vmhwm_kib={vm_hwm_kib}")
}

/// The pid and `VmHWM` (KiB) of a [`peak_line`]; `None` for another line.
pub fn parse_peak_line(line: &str) -> Option<(u32, u64)> {
    let mut fields = line.trim_end().strip_prefix("peak ")?.split_whitespace();
    let pid = fields.next()?.strip_prefix("pid=")?.parse().ok()?;
    let kib = fields.next()?.strip_prefix("vmhwm_kib=")?.parse().ok()?;
    Some((pid, kib))
}

/// `VmHWM` (the peak resident set since the process started or since
/// `5` was written to its `clear_refs`) of a `/proc/<pid>/status` text, in
/// KiB. `None` if absent (a zombie has no memory lines).
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A byte blob borrowed, serialized as one MessagePack `bin` value (what
/// `serde_bytes` does): how a user of `rmp_serde` writes a blob, and what
/// `#[derive(HandoverState)]` does for a plain `Vec<u8>` field.
#[derive(Clone, Copy, Debug)]
pub struct BinRef<'a>(pub &'a [u8]);

impl Serialize for BinRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// An owned byte blob read back from a MessagePack `bin` value.
#[derive(Clone, Debug, PartialEq)]
pub struct BinBlob(pub Vec<u8>);

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

/// [`BenchState`] as `rmp_serde` alone serializes it, borrowed (no copy
/// of the data): the baseline of the codec measurement. `rmp_serde::to_vec`
/// writes structs as arrays of their fields, like the envelope's payload,
/// and the blob as one `bin` value, like the derive.
#[derive(Serialize, Debug)]
pub struct RmpView<'a> {
    pub blob: BinRef<'a>,
    pub entries: &'a BTreeMap<u64, Entry>,
}

/// What `rmp_serde::from_slice` rebuilds from an [`RmpView`].
#[derive(Deserialize, Debug, PartialEq)]
pub struct RmpState {
    pub blob: BinBlob,
    pub entries: BTreeMap<u64, Entry>,
}

impl BenchState {
    /// The same data, as `rmp_serde` is given it.
    pub fn rmp_view(&self) -> RmpView<'_> {
        RmpView {
            blob: BinRef(&self.blob),
            entries: &self.entries,
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
    fn the_read_probe_touches_the_blob_and_the_map() {
        let state = BenchState::of_size(64 * 1024);
        let n = state.entries.len() as u64;
        let at = (7 * 4099 + n) as usize % state.blob.len();
        let bytes: u64 = state.blob[at..at + READ_BYTES]
            .iter()
            .map(|&b| u64::from(b))
            .sum();
        assert_eq!(state.read_probe(7), bytes + state.entries[&(7 % n)].hits);
        // Near the blob's end fewer bytes are read, never out of bounds.
        for served in 0..5000 {
            state.read_probe(served);
        }
        let empty = BenchState {
            blob: Vec::new(),
            entries: BTreeMap::new(),
        };
        assert_eq!(empty.read_probe(3), 0);
    }

    #[test]
    fn peak_lines_round_trip_and_vm_hwm_is_read_from_a_status() {
        assert_eq!(
            parse_peak_line(&peak_line(42, 123_456)),
            Some((42, 123_456))
        );
        assert_eq!(parse_peak_line("peak pid=42 vmhwm_kib=7\n"), Some((42, 7)));
        assert_eq!(parse_peak_line("ready pid=42 generation=1"), None);
        assert_eq!(parse_peak_line("peak pid=42"), None);
        let status =
            "Name:\tstate_service\nVmPeak:\t  900 kB\nVmHWM:\t  51234 kB\nVmRSS:\t  40000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(51_234));
        assert_eq!(vm_hwm_kib("Name:\tzombie\nState:\tZ (zombie)\n"), None);
    }

    #[test]
    fn rmp_serde_baseline_reads_back_the_same_data() {
        let state = BenchState::of_size(64 * 1024);
        let bytes = rmp_serde::to_vec(&state.rmp_view()).unwrap();
        let back: RmpState = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.blob.0, state.blob);
        assert_eq!(back.entries, state.entries);
        // The blob is one `bin` value there too: the two encodings are of
        // the same order of size, so their speeds compare.
        let envelope = encode_envelope(&state, &mut StateFds::default()).unwrap();
        assert!(bytes.len() < 64 * 1024 * 5 / 4, "{} bytes", bytes.len());
        assert!(
            envelope.len() < bytes.len() * 3 / 2,
            "{} vs {}",
            envelope.len(),
            bytes.len()
        );
    }
}
