//! `x-request-id`: the caller's, or a new UUID (version 4) when it sent none or an unusable one.
//! It goes upstream with the call, comes back on the response and names the call in logs.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest caller-sent id kept (longer ones are replaced, so logs stay bounded).
const MAX_LEN: usize = 200;

/// The request's id, set on `headers` when it had none. The value in `headers` is marked
/// sensitive (see [`for_header`]).
pub(crate) fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get_mut(&X_REQUEST_ID) {
        let usable = !v.is_empty()
            && v.len() <= MAX_LEN
            && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if usable {
            // The returned copy is not marked: logs print it (`Debug` hides sensitive values).
            let id = v.clone();
            v.set_sensitive(true);
            return id;
        }
    }
    let id = new_id();
    headers.insert(X_REQUEST_ID, for_header(&id));
    id
}

/// The id as a header value marked sensitive: HTTP/2 then sends it as a literal that is never
/// indexed, so ids, which differ on every call, do not churn the connection's HPACK table
/// (evicting the entries that repeat, such as `user-agent`).
pub(crate) fn for_header(id: &HeaderValue) -> HeaderValue {
    let mut value = id.clone();
    value.set_sensitive(true);
    value
}

/// A random UUID (version 4), lower-case hex.
pub(crate) fn new_id() -> HeaderValue {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = HEX[usize::from(b >> 4)];
        out[o + 1] = HEX[usize::from(b & 0xf)];
        o += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_usable_id_and_replaces_the_rest() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ensure(&mut h), "abc-123");
        for bad in ["", "has space"] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_static(bad));
            let id = ensure(&mut h);
            assert_eq!(id.len(), 36, "{bad:?}");
            assert_eq!(h[X_REQUEST_ID], id);
        }
        let mut h = HeaderMap::new();
        h.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(300))
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        );
        assert_eq!(ensure(&mut h).len(), 36);
    }

    #[test]
    fn the_forwarded_copy_is_never_indexed_and_the_logged_one_prints() {
        let mut kept = HeaderMap::new();
        kept.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        let mut made = HeaderMap::new();
        for h in [&mut kept, &mut made] {
            let id = ensure(h);
            assert!(!id.is_sensitive());
            assert_eq!(
                format!("{id:?}"),
                format!("{:?}", id.to_str().unwrap_or(""))
            );
            assert!(h[X_REQUEST_ID].is_sensitive());
            assert_eq!(h[X_REQUEST_ID], id);
        }
    }

    #[test]
    fn new_ids_are_version_4_uuids() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        let s = a.to_str().unwrap_or_default();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }
}
