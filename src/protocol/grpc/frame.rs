//! The 5-byte length-prefixed envelope shared by gRPC, gRPC-Web and Connect streams:
//! a scanner that checks frames as they stream past without copying them, and a decoder
//! that yields whole messages when a protocol needs them.

use bytes::{Buf, Bytes, BytesMut};

/// Flag bit: the payload is compressed.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit (gRPC-Web): the frame carries trailers.
pub const FLAG_TRAILERS: u8 = 0x80;

/// The length of an envelope header.
pub const HEADER_LEN: usize = 5;

/// Returns the 5-byte header of a frame.
pub fn header(flags: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [flags, len[0], len[1], len[2], len[3]]
}

/// Builds a whole frame.
pub fn encode(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header(flags, payload.len()));
    out.extend_from_slice(payload);
    out.freeze()
}

/// What went wrong with a frame stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame announced more than the limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a message ({missing} more bytes were announced)")]
    Truncated {
        /// Bytes still missing.
        missing: usize,
    },
    /// The flag byte has bits the protocol does not allow here.
    #[error("invalid frame flags 0x{0:02x}")]
    BadFlags(u8),
}

/// Follows frame boundaries through a byte stream that arrives in arbitrary chunks, checking
/// each frame's length against a limit. It never copies or holds message bytes.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    limit: usize,
    allowed_flags: u8,
    header: [u8; HEADER_LEN],
    header_have: usize,
    payload_left: usize,
    frames: u64,
}

impl FrameScanner {
    /// A scanner that rejects frames longer than `limit` and flag bits outside `allowed_flags`.
    pub fn new(limit: usize, allowed_flags: u8) -> FrameScanner {
        FrameScanner {
            limit,
            allowed_flags,
            header: [0; HEADER_LEN],
            header_have: 0,
            payload_left: 0,
            frames: 0,
        }
    }

    /// Follows `chunk`.
    pub fn scan(&mut self, chunk: &[u8]) -> Result<(), FrameError> {
        self.scan_to_boundary(chunk).map(|_| ())
    }

    /// Whether the bytes seen so far end exactly at the end of a frame.
    pub fn at_boundary(&self) -> bool {
        self.header_have == 0 && self.payload_left == 0
    }

    /// Follows `chunk` and returns how much of it ends on a frame boundary: `Some(k)` when
    /// `chunk[..k]` completes the last frame that ends inside it (`Some(0)` when the chunk
    /// starts on a boundary and completes no frame), `None` when the whole chunk lies inside
    /// a frame begun earlier.
    pub fn scan_to_boundary(&mut self, chunk: &[u8]) -> Result<Option<usize>, FrameError> {
        let mut boundary = self.at_boundary().then_some(0);
        let mut at = 0;
        while at < chunk.len() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(chunk.len() - at);
                self.payload_left -= n;
                at += n;
                if self.payload_left == 0 {
                    boundary = Some(at);
                }
                continue;
            }
            let n = (HEADER_LEN - self.header_have).min(chunk.len() - at);
            self.header[self.header_have..self.header_have + n].copy_from_slice(&chunk[at..at + n]);
            self.header_have += n;
            at += n;
            if self.header_have == HEADER_LEN {
                self.header_have = 0;
                let flags = self.header[0];
                if flags & !self.allowed_flags != 0 {
                    return Err(FrameError::BadFlags(flags));
                }
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]) as usize;
                if len > self.limit {
                    return Err(FrameError::TooLarge {
                        len,
                        limit: self.limit,
                    });
                }
                self.payload_left = len;
                self.frames += 1;
                if len == 0 {
                    boundary = Some(at);
                }
            }
        }
        Ok(boundary)
    }

    /// Checks that the stream ended on a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.header_have > 0 {
            return Err(FrameError::Truncated {
                missing: HEADER_LEN - self.header_have,
            });
        }
        if self.payload_left > 0 {
            return Err(FrameError::Truncated {
                missing: self.payload_left,
            });
        }
        Ok(())
    }

    /// The limit on one frame.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Frames whose header has been seen.
    pub fn frames(&self) -> u64 {
        self.frames
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The flag byte.
    pub flags: u8,
    /// The payload.
    pub payload: Bytes,
}

/// Collects chunks and yields whole frames, holding at most one frame plus one chunk.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `limit`.
    pub fn new(limit: usize) -> FrameDecoder {
        FrameDecoder {
            limit,
            buf: BytesMut::new(),
        }
    }

    /// Adds bytes.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.limit {
            return Err(FrameError::TooLarge {
                len,
                limit: self.limit,
            });
        }
        if self.buf.len() < HEADER_LEN + len {
            self.buf.reserve(HEADER_LEN + len - self.buf.len());
            return Ok(None);
        }
        let flags = self.buf[0];
        self.buf.advance(HEADER_LEN);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    /// Checks that nothing is left over at the end of the stream.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let missing = if self.buf.len() < HEADER_LEN {
            HEADER_LEN - self.buf.len()
        } else {
            let len =
                u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
            HEADER_LEN + len - self.buf.len()
        };
        Err(FrameError::Truncated { missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREET: [u8; 10] = [0x00, 0, 0, 0, 5, 0x0a, 0x03, b'B', b'u', b'f'];

    #[test]
    fn encodes_the_greet_request() {
        // PROTOCOLS.md §8.1
        assert_eq!(&encode(0, &GREET[5..])[..], &GREET[..]);
    }

    #[test]
    fn scanner_follows_frames_split_anywhere() {
        let mut stream = GREET.to_vec();
        stream.extend_from_slice(&GREET);
        stream.extend_from_slice(&[0, 0, 0, 0, 0]);
        for split in 0..stream.len() {
            let mut s = FrameScanner::new(100, FLAG_COMPRESSED);
            s.scan(&stream[..split]).unwrap_or(());
            s.scan(&stream[split..]).unwrap_or(());
            assert_eq!(s.finish(), Ok(()), "split at {split}");
            assert_eq!(s.frames(), 3);
        }
    }

    #[test]
    fn scanner_reports_the_last_frame_boundary_in_each_chunk() {
        let mut stream = GREET.to_vec();
        stream.extend_from_slice(&[0, 0, 0, 0, 0]);
        stream.extend_from_slice(&GREET);
        let ends = [10, 15, 25];
        for split in 0..=stream.len() {
            let mut s = FrameScanner::new(100, FLAG_COMPRESSED);
            let first = s.scan_to_boundary(&stream[..split]).unwrap_or(None);
            let want_first = ends
                .iter()
                .rev()
                .find(|e| **e <= split)
                .copied()
                .or(Some(0));
            assert_eq!(first, want_first, "first part, split at {split}");
            let second = s.scan_to_boundary(&stream[split..]).unwrap_or(None);
            let start_on_boundary = split == 0 || ends.contains(&split);
            let want_second = ends
                .iter()
                .rev()
                .find(|e| **e > split)
                .map(|e| e - split)
                .or(start_on_boundary.then_some(0));
            assert_eq!(second, want_second, "second part, split at {split}");
            assert!(s.at_boundary());
        }
        let mut s = FrameScanner::new(100, FLAG_COMPRESSED);
        assert_eq!(s.scan_to_boundary(&GREET[..3]), Ok(Some(0)));
        assert_eq!(s.scan_to_boundary(&GREET[3..6]), Ok(None));
        assert_eq!(s.scan_to_boundary(&GREET[6..]), Ok(Some(4)));
    }

    #[test]
    fn scanner_rejects_large_truncated_and_bad_flags() {
        let mut s = FrameScanner::new(4, FLAG_COMPRESSED);
        assert_eq!(
            s.scan(&GREET),
            Err(FrameError::TooLarge { len: 5, limit: 4 })
        );
        let mut s = FrameScanner::new(5, FLAG_COMPRESSED);
        assert_eq!(s.scan(&GREET), Ok(()));
        let mut s = FrameScanner::new(100, FLAG_COMPRESSED);
        assert_eq!(s.scan(&GREET[..7]), Ok(()));
        assert_eq!(s.finish(), Err(FrameError::Truncated { missing: 3 }));
        let mut s = FrameScanner::new(100, FLAG_COMPRESSED);
        assert_eq!(s.scan(&GREET[..2]), Ok(()));
        assert_eq!(s.finish(), Err(FrameError::Truncated { missing: 3 }));
        let mut s = FrameScanner::new(100, FLAG_COMPRESSED);
        assert_eq!(s.scan(&[0x80, 0, 0, 0, 0]), Err(FrameError::BadFlags(0x80)));
    }

    #[test]
    fn decoder_yields_whole_frames() {
        let mut d = FrameDecoder::new(100);
        d.push(&GREET[..3]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&GREET[3..]);
        d.push(&GREET[..6]);
        let f = d.next_frame().ok().flatten();
        assert_eq!(
            f,
            Some(Frame {
                flags: 0,
                payload: Bytes::from_static(&[0x0a, 0x03, b'B', b'u', b'f'])
            })
        );
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(FrameError::Truncated { missing: 4 }));
        let mut d = FrameDecoder::new(2);
        d.push(&GREET);
        assert!(d.next_frame().is_err());
    }
}
