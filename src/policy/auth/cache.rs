//! Verified tokens, so a client that sends the same token on every call pays for one
//! signature check, not one per call (an ES256 check costs more than proxying a unary call).
//!
//! The key is the whole token: a token that differs in any byte (tampered, re-signed) is a
//! miss and is verified from scratch. An entry is only used with the key generation it was
//! verified under, and `exp`/`nbf` are checked again on every use. Memory is bounded: each
//! shard holds at most [`PER_SHARD`] tokens; a full shard first drops expired tokens, then
//! everything (the next calls verify again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::jwt::Verified;

const SHARDS: usize = 8;
const PER_SHARD: usize = 2048;

#[derive(Debug)]
struct Entry {
    generation: u64,
    verified: Arc<Verified>,
}

/// The verified-token cache of one route.
#[derive(Debug)]
pub(crate) struct TokenCache {
    shards: [Mutex<HashMap<Box<[u8]>, Entry>>; SHARDS],
}

impl Default for TokenCache {
    fn default() -> TokenCache {
        TokenCache {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

/// The shard of a token: from its last bytes, the signature's, which differ between tokens.
fn shard(token: &[u8]) -> usize {
    let n = token.len();
    let a = token.get(n.wrapping_sub(1)).copied().unwrap_or(0) as usize;
    let b = token.get(n.wrapping_sub(2)).copied().unwrap_or(0) as usize;
    (a + 7 * b) % SHARDS
}

impl TokenCache {
    /// The token's verification under key `generation`, when cached.
    pub(crate) fn get(&self, token: &[u8], generation: u64) -> Option<Arc<Verified>> {
        let map = self.shards[shard(token)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(token)
            .filter(|e| e.generation == generation)
            .map(|e| e.verified.clone())
    }

    /// Remembers a verified token.
    pub(crate) fn insert(&self, token: &[u8], generation: u64, verified: Arc<Verified>, now: i64) {
        let mut map = self.shards[shard(token)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if map.len() >= PER_SHARD && !map.contains_key(token) {
            map.retain(|_, e| e.generation == generation && !e.verified.expired(now));
            if map.len() >= PER_SHARD {
                map.clear();
            }
        }
        map.insert(
            token.into(),
            Entry {
                generation,
                verified,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bounded_and_per_generation() {
        let cache = TokenCache::default();
        let v = Arc::new(Verified::for_tests(Some(100)));
        cache.insert(b"tok-a", 1, v.clone(), 0);
        assert!(cache.get(b"tok-a", 1).is_some());
        assert!(cache.get(b"tok-a", 2).is_none(), "keys changed");
        assert!(cache.get(b"tok-b", 1).is_none());
        for i in 0..(SHARDS * PER_SHARD * 2) {
            cache.insert(format!("token-{i}").as_bytes(), 1, v.clone(), 0);
        }
        let total: usize = cache.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * PER_SHARD, "{total}");
    }
}
