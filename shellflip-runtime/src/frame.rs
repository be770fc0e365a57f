//! Reading a frame from a Tokio Unix stream. The frame codec itself (the
//! length prefix, the bounds, [`FrameDecoder`], the errors) is
//! `shellflip_control::frame`, shared with the blocking client: this is only
//! the async loop around its decoder, for the control socket's server and
//! the new generation's reports on the channel. The channel's other
//! readers drive the codec themselves (they receive descriptors with the
//! bytes).

use shellflip_control::frame::{FrameDecoder, FrameError};
use tokio::io::Interest;
use tokio::net::UnixStream;

/// Reads one frame of at most `max` bytes from `stream` and returns its
/// payload.
///
/// An announcement above `max` is rejected with [`FrameError::TooLarge`]
/// without reading or allocating the payload. End-of-file before the first
/// byte gives [`FrameError::Eof`]; inside the frame,
/// [`FrameError::Truncated`]. Nothing beyond the frame is read.
pub(crate) async fn read_frame(stream: &UnixStream, max: u32) -> Result<Vec<u8>, FrameError> {
    let mut decoder = FrameDecoder::new(max);
    loop {
        // async_io waits for readability again when the read would block.
        let n = stream
            .async_io(Interest::READABLE, || stream.try_read(decoder.buf()))
            .await?;
        if let Some(payload) = decoder.advance(n)? {
            return Ok(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shellflip_control::frame::encode_frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MAX: u32 = 64 * 1024;

    /// The loop is wired to the decoder, reads frames written in pieces,
    /// and reads nothing beyond a frame.
    #[tokio::test]
    async fn frames_are_read_from_a_unix_stream() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = tokio::spawn(async move {
            a.write_all(&encode_frame(b"one", MAX).unwrap())
                .await
                .unwrap();
            let large = encode_frame(&vec![b'x'; MAX as usize], MAX).unwrap();
            a.write_all(&large).await.unwrap();
        });
        assert_eq!(read_frame(&b, MAX).await.unwrap(), b"one");
        assert_eq!(read_frame(&b, MAX).await.unwrap().len(), MAX as usize);
        writer.await.unwrap();
        assert!(matches!(read_frame(&b, MAX).await, Err(FrameError::Eof)));

        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"\xff\xff\xff\xffrest").await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&b, MAX).await,
            Err(FrameError::TooLarge { .. })
        ));
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"rest");
    }
}
