//! In-process token buckets, one per key: capacity `burst`, refilled at `per_second`, full
//! when first seen.
//!
//! Memory is bounded: a route keeps at most [`MAX_KEYS`] buckets. When a shard is full, the
//! buckets that have refilled completely are dropped first (a full bucket is the same as no
//! bucket, so that changes nothing), then the longest-idle eighth. A flood of made-up keys
//! can thus refill some idle callers' buckets early; it cannot grow memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SHARDS: usize = 8;
/// Buckets per route, over all shards.
pub(crate) const MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// Seconds since the store's epoch.
    at: f64,
}

/// The buckets of one route.
#[derive(Debug)]
pub(crate) struct Buckets {
    per_second: f64,
    burst: f64,
    epoch: Instant,
    shards: [Mutex<HashMap<Box<[u8]>, Bucket>>; SHARDS],
}

/// FNV-1a: cheap and good enough to spread keys over shards.
fn shard(key: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % SHARDS as u64) as usize
}

impl Buckets {
    pub(crate) fn new(per_second: f64, burst: u32) -> Buckets {
        Buckets {
            per_second,
            burst: f64::from(burst),
            epoch: Instant::now(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// Whether these buckets follow the same rule.
    pub(crate) fn same_rule(&self, per_second: f64, burst: u32) -> bool {
        self.per_second == per_second && self.burst == f64::from(burst)
    }

    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub(crate) fn take(&self, key: &[u8]) -> Result<(), Duration> {
        self.take_at(key, self.epoch.elapsed().as_secs_f64())
    }

    fn take_at(&self, key: &[u8], now: f64) -> Result<(), Duration> {
        let mut map = self.shards[shard(key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(b) = map.get_mut(key) {
            b.tokens = (b.tokens + (now - b.at).max(0.0) * self.per_second).min(self.burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return Ok(());
            }
            return Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_second));
        }
        if map.len() >= MAX_KEYS / SHARDS {
            self.evict(&mut map, now);
        }
        map.insert(
            key.into(),
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Makes room in a full shard: refilled buckets go; if that is not enough, the
    /// longest-idle eighth goes at once (so a flood of new keys costs O(log n) per key, not a
    /// scan each).
    fn evict(&self, map: &mut HashMap<Box<[u8]>, Bucket>, now: f64) {
        map.retain(|_, b| b.tokens + (now - b.at) * self.per_second < self.burst);
        if map.len() >= MAX_KEYS / SHARDS {
            let mut ages: Vec<f64> = map.values().map(|b| b.at).collect();
            let nth = ages.len() / 8;
            let (_, cut, _) = ages.select_nth_unstable_by(nth, f64::total_cmp);
            let cut = *cut;
            map.retain(|_, b| b.at > cut);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn burst_then_refill() {
        let b = Buckets::new(2.0, 3);
        for _ in 0..3 {
            assert!(b.take_at(b"k", 0.0).is_ok());
        }
        let wait = b.take_at(b"k", 0.0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        assert!(b.take_at(b"other", 0.0).is_ok(), "keys are separate");
        assert!(b.take_at(b"k", 0.25).is_err(), "half a token");
        assert!(b.take_at(b"k", 0.5).is_ok());
        assert!(b.take_at(b"k", 0.5).is_err());
        // Long idle: full again, never more than the burst.
        for _ in 0..3 {
            assert!(b.take_at(b"k", 100.0).is_ok());
        }
        assert!(b.take_at(b"k", 100.0).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let b = Buckets::new(1.0, 5);
        for i in 0..(MAX_KEYS * 2) {
            let _ = b.take_at(format!("key-{i}").as_bytes(), 0.0);
        }
        assert!(b.len() <= MAX_KEYS, "{}", b.len());
        // Refilled buckets go first: forgetting them changes nothing.
        let mut map = HashMap::new();
        map.insert(
            Box::from(&b"idle"[..]),
            Bucket {
                tokens: 0.0,
                at: 0.0,
            },
        );
        map.insert(
            Box::from(&b"busy"[..]),
            Bucket {
                tokens: 0.0,
                at: 9.0,
            },
        );
        b.evict(&mut map, 10.0);
        assert!(map.contains_key(&b"busy"[..]) && !map.contains_key(&b"idle"[..]));
    }
}
