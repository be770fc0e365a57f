//! Reading a frame from a Tokio stream. The frame codec itself (the
//! length prefix, the bounds, [`FrameDecoder`], the errors) is
//! `shellflip_control::frame`, shared with the blocking client: this is only
//! the async loop around its decoder, for the control socket's server. The
//! channel between generations drives the codec itself (it receives
//! descriptors with the bytes).

use shellflip_control::frame::{FrameDecoder, FrameError};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads one frame of at most `max` bytes and returns its payload.
///
/// An announcement above `max` is rejected with [`FrameError::TooLarge`]
/// without reading or allocating the payload. End-of-file before the first
/// byte gives [`FrameError::Eof`]; inside the frame,
/// [`FrameError::Truncated`]. Nothing beyond the frame is read.
pub(crate) async fn read_frame<R>(reader: &mut R, max: u32) -> Result<Vec<u8>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut decoder = FrameDecoder::new(max);
    loop {
        let n = reader.read(decoder.buf()).await?;
        if let Some(payload) = decoder.advance(n)? {
            return Ok(payload);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shellflip_control::frame::encode_frame;
    use tokio::io::AsyncWriteExt;

    const MAX: u32 = 64 * 1024;

    /// The loop is wired to the decoder, reads frames written in pieces,
    /// and reads nothing beyond a frame.
    #[tokio::test]
    async fn frames_are_read_from_a_tokio_stream() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let writer = tokio::spawn(async move {
            a.write_all(&encode_frame(b"one", MAX).unwrap())
                .await
                .unwrap();
            let large = encode_frame(&vec![b'x'; MAX as usize], MAX).unwrap();
            a.write_all(&large).await.unwrap();
        });
        assert_eq!(read_frame(&mut b, MAX).await.unwrap(), b"one");
        assert_eq!(read_frame(&mut b, MAX).await.unwrap().len(), MAX as usize);
        writer.await.unwrap();
        assert!(matches!(
            read_frame(&mut b, MAX).await,
            Err(FrameError::Eof)
        ));

        let mut data = &b"\xff\xff\xff\xffrest"[..];
        assert!(matches!(
            read_frame(&mut data, MAX).await,
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(data, b"rest");
    }
}
