//! Length-prefixed frames: the one framing of every byte stream shellflip
//! speaks (the control socket, and the runtime's channel between two
//! generations).
//!
//! ```text
//! +----------------------+---------------------------+
//! | length: u32, BE      | payload: `length` bytes   |
//! +----------------------+---------------------------+
//!   00 00 00 0f            {"op":"status"}
//! ```
//!
//! Every user of frames has its own bound on `length` (`max`): an
//! announcement above it is rejected with [`FrameError::TooLarge`] as soon
//! as the 4 length bytes are in, before anything is allocated or read.
//! A zero length is a valid, empty frame.
//!
//! The codec is one sans-I/O core, [`FrameDecoder`], which says where the
//! next bytes go and takes note of how many arrived, and [`encode_frame`];
//! [`read_frame_blocking`]/[`write_frame_blocking`] (std) are thin loops
//! around them (the runtime has the same loop for Tokio streams).
//! [`FrameBuffer`] is the other core, for a reader that takes in a burst of
//! frames with one read and keeps the surplus for the next (the decoder
//! never reads beyond its frame). A caller with its own way of reading (one
//! that receives file descriptors or credentials alongside the bytes)
//! drives the decoder itself:
//!
//! ```
//! use shellflip_control::frame::{encode_frame, FrameDecoder};
//!
//! # fn main() -> Result<(), shellflip_control::frame::FrameError> {
//! let wire = encode_frame(b"hello", 1024)?;
//! let mut input = &wire[..];
//! let mut decoder = FrameDecoder::new(1024);
//! let payload = loop {
//!     // Any read will do: here, at most 3 bytes at a time.
//!     let buf = decoder.buf();
//!     let n = buf.len().min(input.len()).min(3);
//!     buf[..n].copy_from_slice(&input[..n]);
//!     input = &input[n..];
//!     if let Some(payload) = decoder.advance(n)? {
//!         break payload;
//!     }
//! };
//! assert_eq!(payload, b"hello");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::io::{self, Read, Write};

/// The length of a frame's length prefix, in bytes.
pub const HEADER_BYTES: usize = 4;

/// Which part of a frame a connection ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePart {
    /// The 4-byte length.
    Length,
    /// The payload.
    Payload,
}

impl fmt::Display for FramePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramePart::Length => "length",
            FramePart::Payload => "payload",
        })
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The underlying read or write failed (including the timeout of a
    /// blocking socket, reported as `WouldBlock` or `TimedOut`).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The frame is larger than its reader or writer allows. When reading,
    /// nothing beyond the 4-byte length was read.
    #[error("a frame of {len} bytes is larger than the maximum of {max} bytes")]
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The maximum.
        max: u32,
    },
    /// The stream ended cleanly, before the first byte of a frame.
    #[error("the connection was closed")]
    Eof,
    /// The stream ended in the middle of a frame.
    #[error(
        "malformed frame: the connection was closed after {got} of the {expected} bytes of the \
         frame {part}"
    )]
    Truncated {
        /// Where it ended.
        part: FramePart,
        /// How many bytes of that part had arrived.
        got: usize,
        /// How many the part has.
        expected: usize,
    },
}

impl FrameError {
    /// Whether the stream ended, cleanly or in the middle of a frame.
    pub fn is_closed(&self) -> bool {
        matches!(self, FrameError::Eof | FrameError::Truncated { .. })
    }
}

/// For callers that speak `io::Error`: an I/O error stays itself, the
/// others keep the frame error as their source (`InvalidData` for an
/// oversized frame, `UnexpectedEof` for a closed stream).
impl From<FrameError> for io::Error {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::Io(error) => error,
            FrameError::TooLarge { .. } => io::Error::new(io::ErrorKind::InvalidData, error),
            FrameError::Eof | FrameError::Truncated { .. } => {
                io::Error::new(io::ErrorKind::UnexpectedEof, error)
            }
        }
    }
}

/// Checks a frame length against `max`: the payload length as a `usize`,
/// or [`FrameError::TooLarge`].
pub fn check_len(len: u64, max: u32) -> Result<usize, FrameError> {
    if len > u64::from(max) {
        return Err(FrameError::TooLarge { len, max });
    }
    // `max` is a u32, so this only fails on a 16-bit target.
    usize::try_from(len).map_err(|_| FrameError::TooLarge { len, max })
}

/// Builds a frame: the 4-byte big-endian length, then `payload`. A payload
/// above `max` bytes is refused with [`FrameError::TooLarge`].
pub fn encode_frame(payload: &[u8], max: u32) -> Result<Vec<u8>, FrameError> {
    let len = check_len(payload.len() as u64, max)?;
    let mut frame = Vec::with_capacity(HEADER_BYTES + len);
    // check_len bounded it by a u32.
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Reads one frame from any source of bytes, without doing I/O itself:
/// [`FrameDecoder::buf`] is where the next bytes go, and
/// [`FrameDecoder::advance`] takes note of how many arrived.
#[derive(Debug)]
pub struct FrameDecoder {
    max: u32,
    header: [u8; HEADER_BYTES],
    filled: usize,
    /// Allocated once the length is known and checked.
    payload: Option<Vec<u8>>,
}

impl FrameDecoder {
    /// A decoder for one frame of at most `max` bytes.
    pub fn new(max: u32) -> Self {
        FrameDecoder {
            max,
            header: [0; HEADER_BYTES],
            filled: 0,
            payload: None,
        }
    }

    /// Where the next bytes of the frame go: never more than the frame
    /// still needs (so a read into it never consumes the next frame), and
    /// empty only once a zero-length frame's length is in.
    pub fn buf(&mut self) -> &mut [u8] {
        match &mut self.payload {
            None => &mut self.header[self.filled..],
            Some(payload) => &mut payload[self.filled..],
        }
    }

    /// Takes note that `n` bytes were put at the start of [`Self::buf`];
    /// `n == 0` means the stream ended. Returns the payload once the frame
    /// is complete.
    ///
    /// # Panics
    ///
    /// If `n` is larger than the last [`Self::buf`] (a bug of the caller).
    pub fn advance(&mut self, n: usize) -> Result<Option<Vec<u8>>, FrameError> {
        let needed = self.buf().len();
        assert!(
            n <= needed,
            "advanced by {n} bytes, only {needed} were asked for"
        );
        if n == 0 && needed > 0 {
            let (part, expected) = match &self.payload {
                None if self.filled == 0 => return Err(FrameError::Eof),
                None => (FramePart::Length, HEADER_BYTES),
                Some(payload) => (FramePart::Payload, payload.len()),
            };
            return Err(FrameError::Truncated {
                part,
                got: self.filled,
                expected,
            });
        }
        self.filled += n;
        if self.payload.is_none() {
            if self.filled < HEADER_BYTES {
                return Ok(None);
            }
            let len = check_len(u64::from(u32::from_be_bytes(self.header)), self.max)?;
            self.payload = Some(vec![0; len]);
            self.filled = 0;
        }
        match &mut self.payload {
            Some(payload) if self.filled == payload.len() => {
                self.filled = 0;
                self.header = [0; HEADER_BYTES];
                Ok(self.payload.take())
            }
            _ => Ok(None),
        }
    }
}

/// How much a [`FrameBuffer`] offers to read at a time, at least.
const READ_CHUNK: usize = 64 * 1024;

/// Frames out of a byte stream read in chunks of any size. Unlike
/// [`FrameDecoder`], which never reads beyond its frame, one read may take
/// in several frames (one system call for a burst of messages); the bytes
/// beyond a frame are kept for the next ones. Sans-I/O like the decoder:
/// [`spare`](Self::spare) is where the next bytes go,
/// [`filled`](Self::filled) takes note of how many arrived, and
/// [`next_frame`](Self::next_frame) hands out the complete frames.
///
/// Every byte has an offset in the stream (the first byte's is 0).
/// `filled` returns the offset of the last frame that *starts* in the
/// bytes just read, and `next_frame` the offset of each frame: a reader
/// that receives something alongside the bytes — descriptors, which
/// arrive with the first byte of the `sendmsg` that carried them — can
/// attach it to the frame it belongs to.
///
/// ```
/// use shellflip_control::frame::{encode_frame, FrameBuffer};
///
/// # fn main() -> Result<(), shellflip_control::frame::FrameError> {
/// let mut wire = encode_frame(b"one", 1024)?;
/// wire.extend(encode_frame(b"two", 1024)?);
/// let mut frames = FrameBuffer::new(1024);
/// // Both frames in one read: the last one starts at offset 7.
/// frames.spare()[..wire.len()].copy_from_slice(&wire);
/// assert_eq!(frames.filled(wire.len())?, Some(7));
/// assert_eq!(frames.next_frame(), Some((0, b"one".to_vec())));
/// assert_eq!(frames.next_frame(), Some((7, b"two".to_vec())));
/// assert_eq!(frames.next_frame(), None);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FrameBuffer {
    max: u32,
    /// `buf[start..end]`: received, not handed out; `buf[end..]`: room.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The stream offset of `buf[0]`.
    base: u64,
    /// The stream offset of the first frame whose end is not known yet
    /// (its length is not all in) or lies beyond the bytes received.
    boundary: u64,
}

impl FrameBuffer {
    /// A buffer for frames of at most `max` bytes each.
    pub fn new(max: u32) -> Self {
        FrameBuffer {
            max,
            buf: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            boundary: 0,
        }
    }

    /// Where the next bytes go: never empty; at least the rest of the
    /// frame being read when its length is known, and at least 64 KiB.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start > 0 {
            // What was handed out makes room.
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
            if self.end == 0 && self.buf.len() > 2 * READ_CHUNK {
                // After a large frame, the buffer does not stay large.
                self.buf.truncate(READ_CHUNK);
                self.buf.shrink_to(READ_CHUNK);
            }
        }
        let rest_of_frame = match self.frame_len(0) {
            Some(len) => (HEADER_BYTES + len).saturating_sub(self.end),
            None => 0,
        };
        let wanted = self.end + rest_of_frame.max(READ_CHUNK);
        if self.buf.len() < wanted {
            self.buf.resize(wanted, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Takes note that `n` bytes were put at the start of the last
    /// [`spare`](Self::spare). Returns the stream offset of the last frame
    /// that starts in them (`None`: they all continue a frame begun
    /// earlier). A frame announced above `max` is
    /// [`FrameError::TooLarge`] as soon as its 4 length bytes are in.
    ///
    /// # Panics
    ///
    /// If `n` is larger than the last [`spare`](Self::spare) (a bug of the
    /// caller).
    pub fn filled(&mut self, n: usize) -> Result<Option<u64>, FrameError> {
        let room = self.buf.len() - self.end;
        assert!(n <= room, "filled {n} bytes, only {room} were offered");
        let first = self.offset(self.end);
        self.end += n;
        let received = self.offset(self.end);
        let mut last = None;
        while self.boundary < received {
            if self.boundary >= first {
                last = Some(self.boundary);
            }
            // `boundary` is never before `base`: it passes a frame once
            // its length is in, and frames are handed out (and their bytes
            // dropped) only once all their bytes are in.
            let Some(len) = self.frame_len(self.index(self.boundary)) else {
                break;
            };
            self.boundary += (HEADER_BYTES + len) as u64;
        }
        // The walk stops at a frame whose length is not all in, or above
        // `max`: which one?
        if let Some(len) = self.announced(self.index(self.boundary)) {
            check_len(len, self.max)?;
        }
        Ok(last)
    }

    /// The next complete frame: its offset in the stream, and its payload.
    pub fn next_frame(&mut self) -> Option<(u64, Vec<u8>)> {
        let len = self.frame_len(self.start)?;
        let payload_at = self.start + HEADER_BYTES;
        if payload_at + len > self.end {
            return None;
        }
        let payload = self.buf[payload_at..payload_at + len].to_vec();
        let offset = self.offset(self.start);
        self.start = payload_at + len;
        Some((offset, payload))
    }

    fn offset(&self, index: usize) -> u64 {
        self.base + index as u64
    }

    fn index(&self, offset: u64) -> usize {
        usize::try_from(offset.saturating_sub(self.base)).unwrap_or(usize::MAX)
    }

    /// The length announced by a frame starting at `buf[at]`, if its 4
    /// bytes are in and it is within `max` (one above `max` is reported by
    /// [`filled`](Self::filled)).
    fn frame_len(&self, at: usize) -> Option<usize> {
        check_len(self.announced(at)?, self.max).ok()
    }

    /// The length announced by a frame starting at `buf[at]`, if its 4
    /// bytes are in.
    fn announced(&self, at: usize) -> Option<u64> {
        let bytes = self.buf[..self.end].get(at..at.checked_add(HEADER_BYTES)?)?;
        Some(u64::from(u32::from_be_bytes(bytes.try_into().ok()?)))
    }
}

/// Reads one frame of at most `max` bytes from a std reader and returns
/// its payload (a read interrupted by a signal is retried).
///
/// An announcement above `max` is rejected with [`FrameError::TooLarge`]
/// without reading or allocating the payload. End-of-file before the first
/// byte gives [`FrameError::Eof`]; inside the frame,
/// [`FrameError::Truncated`]. Nothing beyond the frame is read.
pub fn read_frame_blocking<R>(reader: &mut R, max: u32) -> Result<Vec<u8>, FrameError>
where
    R: Read + ?Sized,
{
    let mut decoder = FrameDecoder::new(max);
    loop {
        let n = match reader.read(decoder.buf()) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        if let Some(payload) = decoder.advance(n)? {
            return Ok(payload);
        }
    }
}

/// Writes one frame carrying `payload` to a std writer and flushes it. A
/// payload above `max` bytes is refused with [`FrameError::TooLarge`] and
/// nothing is written.
pub fn write_frame_blocking<W>(writer: &mut W, payload: &[u8], max: u32) -> Result<(), FrameError>
where
    W: Write + ?Sized,
{
    let frame = encode_frame(payload, max)?;
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    const MAX: u32 = 64 * 1024;

    /// Feeds `wire` to a decoder `chunk` bytes at a time; the payloads read
    /// until the first error, and that error.
    fn decode_all(wire: &[u8], chunk: usize) -> (Vec<Vec<u8>>, FrameError) {
        let mut input = wire;
        let mut frames = Vec::new();
        let mut decoder = FrameDecoder::new(MAX);
        loop {
            let buf = decoder.buf();
            let n = buf.len().min(input.len()).min(chunk);
            buf[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            match decoder.advance(n) {
                Ok(Some(payload)) => {
                    frames.push(payload);
                    decoder = FrameDecoder::new(MAX);
                }
                Ok(None) => {}
                Err(error) => return (frames, error),
            }
        }
    }

    #[test]
    fn frames_round_trip_in_any_chunking() {
        let mut wire = Vec::new();
        for payload in [
            &b"hello"[..],
            b"",
            &[7u8; 1000][..],
            &vec![b'x'; MAX as usize],
        ] {
            wire.extend(encode_frame(payload, MAX).unwrap());
        }
        assert_eq!(&wire[..9], b"\x00\x00\x00\x05hello");
        for chunk in [1, 2, 3, 4, 5, 7, 4096, usize::MAX] {
            let (frames, end) = decode_all(&wire, chunk);
            assert_eq!(frames.len(), 4, "chunk {chunk}");
            assert_eq!(frames[0], b"hello");
            assert!(frames[1].is_empty());
            assert_eq!(frames[3].len(), MAX as usize);
            assert!(matches!(end, FrameError::Eof), "{end:?}");
        }
    }

    #[test]
    fn zero_length_frame_is_complete_after_its_length() {
        let mut decoder = FrameDecoder::new(MAX);
        decoder.buf().copy_from_slice(&[0, 0, 0, 0]);
        assert_eq!(decoder.advance(4).unwrap(), Some(Vec::new()));
    }

    #[test]
    fn oversized_announcement_is_rejected_before_allocating() {
        for len in [MAX + 1, u32::MAX] {
            let mut decoder = FrameDecoder::new(MAX);
            decoder.buf().copy_from_slice(&len.to_be_bytes());
            match decoder.advance(4) {
                Err(FrameError::TooLarge { len: got, max }) => {
                    assert_eq!((got, max), (u64::from(len), MAX));
                }
                other => panic!("{other:?}"),
            }
            // Nothing was allocated for the payload.
            assert!(decoder.buf().is_empty());
        }
        // Exactly the maximum is fine.
        let mut decoder = FrameDecoder::new(MAX);
        decoder.buf().copy_from_slice(&MAX.to_be_bytes());
        assert_eq!(decoder.advance(4).unwrap(), None);
        assert_eq!(decoder.buf().len(), MAX as usize);
    }

    #[test]
    fn truncated_frames_say_where() {
        let (_, end) = decode_all(&[0, 0], 8);
        assert!(
            matches!(
                end,
                FrameError::Truncated {
                    part: FramePart::Length,
                    got: 2,
                    expected: 4
                }
            ),
            "{end:?}"
        );
        let (_, end) = decode_all(&[0, 0, 0, 10, b'a', b'b'], 8);
        assert!(
            matches!(
                end,
                FrameError::Truncated {
                    part: FramePart::Payload,
                    got: 2,
                    expected: 10
                }
            ),
            "{end:?}"
        );
        assert!(end.is_closed());
        assert!(
            end.to_string().contains("closed after 2 of the 10 bytes"),
            "{end}"
        );
        assert_eq!(io::Error::from(end).kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn oversized_payload_is_not_encoded() {
        let payload = vec![0u8; MAX as usize + 1];
        assert!(matches!(
            encode_frame(&payload, MAX),
            Err(FrameError::TooLarge { .. })
        ));
        let mut wire = Vec::new();
        assert!(write_frame_blocking(&mut wire, &payload, MAX).is_err());
        assert!(wire.is_empty());
        let error = io::Error::from(encode_frame(&payload, MAX).unwrap_err());
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    /// Frames read, each with the stream offset it starts at.
    type Frames = Vec<(u64, Vec<u8>)>;

    /// Feeds `wire` to a buffer `chunk` bytes at a time (as much of
    /// `spare` as the chunk allows); the frames with their offsets, and
    /// what `filled` returned for each chunk.
    fn buffer_all(wire: &[u8], chunk: usize) -> (Frames, Vec<Option<u64>>) {
        let mut input = wire;
        let mut frames = Vec::new();
        let mut starts = Vec::new();
        let mut buffer = FrameBuffer::new(MAX);
        while !input.is_empty() {
            let spare = buffer.spare();
            assert!(!spare.is_empty());
            let n = spare.len().min(input.len()).min(chunk);
            spare[..n].copy_from_slice(&input[..n]);
            input = &input[n..];
            starts.push(buffer.filled(n).unwrap());
            while let Some(frame) = buffer.next_frame() {
                frames.push(frame);
            }
        }
        (frames, starts)
    }

    #[test]
    fn a_buffer_hands_out_frames_and_their_offsets_in_any_chunking() {
        let payloads: [&[u8]; 5] = [
            b"hello",
            b"",
            &[7u8; 1000],
            &vec![b'x'; MAX as usize],
            b"end",
        ];
        let mut wire = Vec::new();
        let mut offsets = Vec::new();
        for payload in payloads {
            offsets.push(wire.len() as u64);
            wire.extend(encode_frame(payload, MAX).unwrap());
        }
        for chunk in [1, 2, 3, 4, 5, 7, 4096, 70_000, usize::MAX] {
            let (frames, _) = buffer_all(&wire, chunk);
            let got: Vec<u64> = frames.iter().map(|(offset, _)| *offset).collect();
            assert_eq!(got, offsets, "chunk {chunk}");
            for ((_, payload), expected) in frames.iter().zip(payloads) {
                assert_eq!(&payload[..], expected, "chunk {chunk}");
            }
        }
    }

    #[test]
    fn filled_names_the_last_frame_starting_in_the_bytes() {
        // Frames at 0 (5 bytes), 5 (6 bytes) and 11 (7 bytes).
        let mut wire = encode_frame(b"a", MAX).unwrap();
        wire.extend(encode_frame(b"bb", MAX).unwrap());
        wire.extend(encode_frame(b"ccc", MAX).unwrap());
        let mut buffer = FrameBuffer::new(MAX);
        let mut feed = |bytes: &[u8]| {
            buffer.spare()[..bytes.len()].copy_from_slice(bytes);
            buffer.filled(bytes.len()).unwrap()
        };
        // Half a length prefix: the frame starts here all the same.
        assert_eq!(feed(&wire[..2]), Some(0));
        // The rest of frame 0, all of frame 1, the start of frame 2.
        assert_eq!(feed(&wire[2..12]), Some(11));
        // Only the rest of frame 2.
        assert_eq!(feed(&wire[12..]), None);
        assert_eq!(buffer.next_frame(), Some((0, b"a".to_vec())));
        assert_eq!(buffer.next_frame(), Some((5, b"bb".to_vec())));
        // Room is made; offsets go on.
        assert!(buffer.spare().len() >= READ_CHUNK);
        assert_eq!(buffer.next_frame(), Some((11, b"ccc".to_vec())));
        assert_eq!(buffer.next_frame(), None);
        let next = encode_frame(b"d", MAX).unwrap();
        buffer.spare()[..next.len()].copy_from_slice(&next);
        assert_eq!(buffer.filled(next.len()).unwrap(), Some(18));
        assert_eq!(buffer.next_frame(), Some((18, b"d".to_vec())));
    }

    #[test]
    fn a_buffer_rejects_an_oversized_frame_once_its_length_is_in() {
        let mut wire = encode_frame(b"fine", MAX).unwrap();
        wire.extend_from_slice(&(MAX + 1).to_be_bytes()[..2]);
        let mut buffer = FrameBuffer::new(MAX);
        buffer.spare()[..wire.len()].copy_from_slice(&wire);
        // Two bytes of the length: not known yet.
        assert_eq!(buffer.filled(wire.len()).unwrap(), Some(8));
        buffer.spare()[..2].copy_from_slice(&(MAX + 1).to_be_bytes()[2..]);
        match buffer.filled(2) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!((len, max), (u64::from(MAX) + 1, MAX));
            }
            other => panic!("{other:?}"),
        }
        // The frame before it is intact.
        assert_eq!(buffer.next_frame(), Some((0, b"fine".to_vec())));
    }

    #[test]
    fn a_large_frame_is_read_in_one_go_and_the_buffer_shrinks_after() {
        const LARGE: usize = 1 << 20;
        let wire = encode_frame(&vec![1u8; LARGE], LARGE as u32).unwrap();
        let mut buffer = FrameBuffer::new(LARGE as u32);
        buffer.spare()[..HEADER_BYTES].copy_from_slice(&wire[..HEADER_BYTES]);
        buffer.filled(HEADER_BYTES).unwrap();
        // Room for the whole rest of the frame.
        let spare = buffer.spare();
        assert!(spare.len() >= LARGE, "{}", spare.len());
        spare[..LARGE].copy_from_slice(&wire[HEADER_BYTES..]);
        assert_eq!(buffer.filled(LARGE).unwrap(), None);
        assert_eq!(buffer.next_frame().map(|(_, p)| p.len()), Some(LARGE));
        assert_eq!(buffer.spare().len(), READ_CHUNK);
    }

    // The entry points are thin loops around the core: one check each that
    // they are wired to it, and that nothing beyond a frame is read.

    /// A reader that hands out one byte per call and is interrupted every
    /// other call.
    struct Trickle<'a> {
        data: &'a [u8],
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.data.len()).min(1);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn blocking_entry_points() {
        let mut wire = Vec::new();
        write_frame_blocking(&mut wire, b"one", MAX).unwrap();
        wire.extend_from_slice(b"rest");
        let mut reader = Cursor::new(&wire);
        assert_eq!(read_frame_blocking(&mut reader, MAX).unwrap(), b"one");
        assert_eq!(reader.position(), 7);
        let mut trickle = Trickle {
            data: &wire,
            calls: 0,
        };
        assert_eq!(read_frame_blocking(&mut trickle, MAX).unwrap(), b"one");
        assert_eq!(trickle.data, b"rest");
        let mut oversized = Cursor::new(u32::MAX.to_be_bytes().to_vec());
        assert!(matches!(
            read_frame_blocking(&mut oversized, MAX),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
