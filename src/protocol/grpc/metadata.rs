//! Metadata rules shared by every protocol: binary (`-bin`) values and the headers a proxy
//! must not copy between hops.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use http::header::HeaderName;

/// Headers that belong to one hop or to one protocol's framing and are never copied as
/// metadata from a caller to the upstream or back.
pub(crate) fn is_hop_or_protocol_header(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    // `connect-*` names are reserved by the Connect protocol.
    if name.starts_with(b"connect-") {
        return true;
    }
    // By length first: this runs for every header of every call.
    match name.len() {
        2 => name == b"te",
        4 => name == b"host",
        6 => name == b"accept",
        7 => name == b"upgrade" || name == b"trailer",
        10 => name == b"connection" || name == b"keep-alive" || name == b"x-grpc-web",
        12 => name == b"content-type" || name == b"grpc-timeout",
        14 => name == b"content-length" || name == b"http2-settings",
        15 => name == b"accept-encoding",
        16 => name == b"proxy-connection" || name == b"content-encoding",
        17 => name == b"transfer-encoding",
        _ => false,
    }
}

/// Decodes a binary metadata value: standard alphabet, padded or not. Several values joined
/// with `,` are decoded one by one and concatenated only by callers that want that; this
/// function decodes one value.
pub fn decode_binary_header(value: &[u8]) -> Result<Vec<u8>, base64::DecodeError> {
    let trimmed = value.trim_ascii();
    if trimmed.len() % 4 == 0 {
        STANDARD.decode(trimmed)
    } else {
        STANDARD_NO_PAD.decode(trimmed)
    }
}

/// Encodes a binary metadata value: standard alphabet, unpadded.
pub fn encode_binary_header(value: &[u8]) -> String {
    STANDARD_NO_PAD.encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_values_accept_padded_and_unpadded() {
        // PROTOCOLS.md §8.10
        assert_eq!(encode_binary_header(&[0, 1, 2, 0xfe, 0xff]), "AAEC/v8");
        assert_eq!(
            decode_binary_header(b"AAEC/v8").ok(),
            Some(vec![0, 1, 2, 0xfe, 0xff])
        );
        assert_eq!(
            decode_binary_header(b"AAEC/v8=").ok(),
            Some(vec![0, 1, 2, 0xfe, 0xff])
        );
        assert!(decode_binary_header(b"AAEC_v8").is_err());
    }

    #[test]
    fn hop_headers() {
        for h in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "te",
            "trailer",
            "host",
            "content-length",
            "content-type",
            "content-encoding",
            "accept",
            "accept-encoding",
            "grpc-timeout",
            "x-grpc-web",
            "http2-settings",
            "connect-timeout-ms",
            "connect-protocol-version",
        ] {
            assert!(
                is_hop_or_protocol_header(&HeaderName::from_static(h)),
                "{h}"
            );
        }
        for h in [
            "authorization",
            "tee",
            "hostname",
            "x-request-id",
            "user-agent",
            "grpc-encoding",
            "x-grpc-web-x",
            "connect",
            "content-language",
        ] {
            assert!(
                !is_hop_or_protocol_header(&HeaderName::from_static(h)),
                "{h}"
            );
        }
    }
}
