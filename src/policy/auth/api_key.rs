//! API keys: the caller sends the key in a header; the config lists SHA-256 hashes of the
//! accepted keys (inline and in a file), so the config holds nothing that lets anyone call.
//!
//! The presented key is hashed and looked up by the first 8 bytes of its hash, then compared
//! whole in constant time. The lookup's timing can only tell an attacker about hashes of keys
//! they already chose, which does not help them find a listed key (SHA-256 is one-way); the
//! full comparison leaks nothing.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderName};
use subtle::ConstantTimeEq as _;

use crate::config::ApiKey;
use crate::protocol::grpc::{Code, Status};

/// The accepted keys of a route.
#[derive(Debug)]
pub(crate) struct ApiKeys {
    header: HeaderName,
    by_prefix: HashMap<u64, Vec<[u8; 32]>>,
}

impl ApiKeys {
    /// The inline hashes and those of `keys_file` (read now, and on every reload).
    pub(crate) fn new(config: &ApiKey) -> Result<ApiKeys, String> {
        let mut hashes = config.hashes.clone();
        if let Some(path) = &config.keys_file {
            hashes.extend(read_file(path)?);
        }
        let mut by_prefix: HashMap<u64, Vec<[u8; 32]>> = HashMap::new();
        for h in hashes {
            let list = by_prefix.entry(prefix(&h)).or_default();
            if !list.contains(&h) {
                list.push(h);
            }
        }
        Ok(ApiKeys {
            header: config.header.clone(),
            by_prefix,
        })
    }

    /// Checks the key and removes it from the request (a backend has no use for the proxy's
    /// credential). Returns the key's hash, which rate limits key by.
    pub(crate) fn authenticate(&self, headers: &mut HeaderMap) -> Result<Bytes, Status> {
        let Some(value) = headers.get(&self.header) else {
            return Err(Status::new(
                Code::Unauthenticated,
                format!("missing API key (header {})", self.header),
            ));
        };
        let hash = sha256(value.as_bytes());
        let known = self.by_prefix.get(&prefix(&hash)).is_some_and(|list| {
            // Every candidate is compared, so the time does not depend on which matched.
            list.iter()
                .fold(0u8, |found, h| found | h.ct_eq(&hash).unwrap_u8())
                == 1
        });
        if !known {
            return Err(Status::new(Code::Unauthenticated, "invalid API key"));
        }
        headers.remove(&self.header);
        Ok(Bytes::copy_from_slice(&hash))
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn prefix(h: &[u8; 32]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// One hex SHA-256 per line; blank lines and `#` comments are skipped.
fn read_file(path: &Path) -> Result<Vec<[u8; 32]>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read keys_file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_hex(line).ok_or_else(|| {
            format!(
                "{}:{}: expected a SHA-256 hash (64 hex digits)",
                path.display(),
                n + 1
            )
        })?);
    }
    Ok(out)
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn hex(h: &[u8; 32]) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn keys_inline_and_from_a_file() {
        let dir = std::env::temp_dir().join(format!("sb-apikey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("keys.txt");
        std::fs::write(
            &file,
            format!("# ops\n\n{}  # bob\n", hex(&sha256(b"bob-key"))),
        )
        .unwrap();
        let keys = ApiKeys::new(&ApiKey {
            header: HeaderName::from_static("x-api-key"),
            hashes: vec![sha256(b"alice-key")],
            keys_file: Some(file.clone()),
        })
        .unwrap();
        for (key, ok) in [("alice-key", true), ("bob-key", true), ("eve-key", false)] {
            let mut h = HeaderMap::new();
            h.insert("x-api-key", HeaderValue::from_static(key));
            let r = keys.authenticate(&mut h);
            assert_eq!(r.is_ok(), ok, "{key}");
            assert_eq!(
                h.contains_key("x-api-key"),
                !ok,
                "{key}: removed when accepted"
            );
        }
        let err = keys.authenticate(&mut HeaderMap::new()).unwrap_err();
        assert_eq!(err.code, Code::Unauthenticated);
        std::fs::write(&file, "nothex\n").unwrap();
        let err = ApiKeys::new(&ApiKey {
            header: HeaderName::from_static("x-api-key"),
            hashes: vec![],
            keys_file: Some(file),
        })
        .unwrap_err();
        assert!(
            err.ends_with("keys.txt:1: expected a SHA-256 hash (64 hex digits)"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
