//! Message compression: identity and gzip, with decompression bounded by the size limit so a
//! small compressed message cannot expand without end.

use std::io::{Read as _, Write as _};

use bytes::Bytes;

use super::grpc::{Code, Status};

/// A supported encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
}

/// What we accept, for error messages and `accept-encoding` headers.
pub const SUPPORTED: &str = "gzip, identity";

impl Encoding {
    /// Parses an encoding name; `None` for unsupported ones.
    pub fn parse(name: &str) -> Option<Encoding> {
        match name.trim() {
            "" | "identity" => Some(Encoding::Identity),
            n if n.eq_ignore_ascii_case("gzip") => Some(Encoding::Gzip),
            _ => None,
        }
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
        }
    }

    /// Whether a comma-separated accept list names gzip.
    pub fn accepts_gzip(list: &str) -> bool {
        list.split(',').any(|e| {
            e.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("gzip")
        })
    }
}

/// The status for an unsupported request encoding.
pub fn unsupported(name: &str) -> Status {
    Status::new(
        Code::Unimplemented,
        format!("unsupported compression {name:?}; supported: {SUPPORTED}"),
    )
}

/// Decompresses `data`, failing with RESOURCE_EXHAUSTED past `limit` bytes and
/// INVALID_ARGUMENT on corrupt input. Zero bytes are never decompressed.
pub fn decompress(encoding: Encoding, data: &[u8], limit: usize) -> Result<Bytes, Status> {
    if encoding == Encoding::Identity || data.is_empty() {
        return Ok(Bytes::copy_from_slice(data));
    }
    let mut out = Vec::with_capacity(data.len().saturating_mul(2).min(limit));
    let reader = flate2::read::GzDecoder::new(data);
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| Status::new(Code::InvalidArgument, format!("invalid gzip data: {e}")))?;
    if out.len() > limit {
        return Err(Status::new(
            Code::ResourceExhausted,
            format!("decompressed message exceeds the limit of {limit} bytes"),
        ));
    }
    Ok(Bytes::from(out))
}

/// Compresses `data` with gzip.
pub fn gzip(data: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 2 + 32),
        flate2::Compression::fast(),
    );
    let _ = enc.write_all(data);
    Bytes::from(enc.finish().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_limits() {
        let data = vec![b'x'; 10_000];
        let z = gzip(&data);
        assert!(z.len() < 200);
        assert_eq!(
            decompress(Encoding::Gzip, &z, 10_000).ok().as_deref(),
            Some(&data[..])
        );
        let err = decompress(Encoding::Gzip, &z, 9_999).err();
        assert_eq!(err.map(|s| s.code), Some(Code::ResourceExhausted));
        let err = decompress(Encoding::Gzip, b"not gzip", 100).err();
        assert_eq!(err.map(|s| s.code), Some(Code::InvalidArgument));
        assert_eq!(decompress(Encoding::Gzip, b"", 0).ok(), Some(Bytes::new()));
    }

    #[test]
    fn vector_8_11() {
        // PROTOCOLS.md §8.11: gzip of GreetRequest{name:"Buf"}
        let z = [
            0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0x02, 0x03, 0xe3, 0x62, 0x76, 0x2a, 0x4d, 0x03, 0,
            0x22, 0x50, 0xa0, 0x1b, 0x05, 0, 0, 0,
        ];
        assert_eq!(
            decompress(Encoding::Gzip, &z, 100).ok().as_deref(),
            Some(&[0x0a, 0x03, b'B', b'u', b'f'][..])
        );
    }

    #[test]
    fn names() {
        assert_eq!(Encoding::parse("gzip"), Some(Encoding::Gzip));
        assert_eq!(Encoding::parse("identity"), Some(Encoding::Identity));
        assert_eq!(Encoding::parse("br"), None);
        assert!(Encoding::accepts_gzip("br, gzip;q=0.5"));
        assert!(!Encoding::accepts_gzip("identity"));
    }
}
