//! `grpc-timeout` parsing and encoding, and the deadline a call carries.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Parses a `grpc-timeout` value leniently: more than the 8 digits the spec allows saturate
/// instead of failing (grpc-web's JS client sends 9+ digits for deadlines over ~27 hours).
/// `None` for a value that is not digits followed by one unit letter.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (unit, digits) = value.split_last()?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    let nanos_per_unit: u64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    let nanos = u128::from(n) * u128::from(nanos_per_unit);
    let secs = u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it always fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).unwrap_or(0);
    Some(Duration::new(secs, sub))
}

/// Encodes a remaining budget as grpc-go does: the finest unit whose value fits in 8 digits,
/// rounding up so that a small budget never becomes zero.
pub fn encode_grpc_timeout(budget: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = budget.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    for (per, unit) in units {
        let value = nanos.div_ceil(per);
        if value <= MAX {
            return HeaderValue::from_str(&format!("{value}{unit}"))
                .unwrap_or(HeaderValue::from_static("99999999H"));
        }
    }
    HeaderValue::from_static("99999999H")
}

/// Parses `connect-timeout-ms`: 1 to 10 digits of milliseconds.
pub fn parse_connect_timeout(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > 10 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = value
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let cases: [(&[u8], Duration); 6] = [
            (b"1H", Duration::from_secs(3600)),
            (b"2M", Duration::from_secs(120)),
            (b"3S", Duration::from_secs(3)),
            (b"250m", Duration::from_millis(250)),
            (b"250u", Duration::from_micros(250)),
            (b"7n", Duration::from_nanos(7)),
        ];
        for (raw, want) in cases {
            assert_eq!(parse_grpc_timeout(raw), Some(want));
        }
    }

    #[test]
    fn rejects_malformed_and_saturates_long_values() {
        for bad in [&b""[..], b"m", b"10", b"10x", b"-1S", b"1.5S", b" 1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        // 9 digits from grpc-web JS for a >27.7 h deadline: accepted.
        assert_eq!(
            parse_grpc_timeout(b"100000000m"),
            Some(Duration::from_secs(100_000))
        );
        assert!(parse_grpc_timeout(b"99999999999999999999999H").is_some());
    }

    #[test]
    fn encodes_like_grpc_go() {
        // PROTOCOLS.md §8.7
        assert_eq!(
            encode_grpc_timeout(Duration::from_nanos(4_987_654_321)),
            "4987655u"
        );
        assert_eq!(
            encode_grpc_timeout(Duration::from_nanos(999_999)),
            "999999n"
        );
        assert_eq!(encode_grpc_timeout(Duration::from_secs(120)), "120000m");
        assert_eq!(encode_grpc_timeout(Duration::ZERO), "0n");
        assert_eq!(
            encode_grpc_timeout(Duration::from_secs(10_000_000)),
            "10000000S"
        );
    }

    #[test]
    fn connect_timeouts() {
        assert_eq!(
            parse_connect_timeout(b"5000"),
            Some(Duration::from_millis(5000))
        );
        assert_eq!(
            parse_connect_timeout(b"9999999999"),
            Some(Duration::from_millis(9_999_999_999))
        );
        assert_eq!(parse_connect_timeout(b"99999999999"), None);
        assert_eq!(parse_connect_timeout(b"12a"), None);
        assert_eq!(parse_connect_timeout(b""), None);
    }
}
