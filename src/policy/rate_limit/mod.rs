//! Rate limits per route: a token bucket per key (client IP, API key, JWT claim or header),
//! kept in process ([`bucket`]) or shared by every replica through Redis ([`redis`]).
//!
//! A call over the limit is refused with `resource_exhausted` and a `retry-after`. When the
//! key's source is missing (no such header, no such claim in the token), the call is limited
//! by its client IP instead, in a bucket of its own, so leaving the header out is no way
//! around the limit.

pub(crate) mod bucket;
pub(crate) mod redis;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use self::bucket::Buckets;
use self::redis::Answer;
pub(crate) use self::redis::SharedStore;
use super::Refusal;
use crate::config::{FailMode, RateKey, RateLimit};
use crate::protocol::grpc::{Code, Status};

/// A route's limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    config: RateLimit,
    store: Store,
}

#[derive(Debug)]
enum Store {
    Local(Arc<Buckets>),
    Shared {
        store: Arc<SharedStore>,
        /// `switchboard:rl:<route>:`, the prefix of this route's keys in Redis.
        prefix: String,
    },
}

impl Limiter {
    /// The limit of route `route_id`; in-process buckets of an unchanged rule carry over from
    /// `previous`.
    pub(crate) fn new(
        config: &RateLimit,
        route_id: String,
        shared: Option<Arc<SharedStore>>,
        previous: Option<&Limiter>,
    ) -> Limiter {
        let store = match shared {
            Some(store) => Store::Shared {
                store,
                prefix: format!("switchboard:rl:{route_id}:"),
            },
            None => {
                let kept = previous.and_then(|p| match &p.store {
                    Store::Local(b)
                        if b.same_rule(config.per_second, config.burst)
                            && p.config.key == config.key =>
                    {
                        Some(b.clone())
                    }
                    _ => None,
                });
                Store::Local(
                    kept.unwrap_or_else(|| Arc::new(Buckets::new(config.per_second, config.burst))),
                )
            }
        };
        Limiter {
            config: config.clone(),
            store,
        }
    }

    /// The header value a `header:NAME` key reads, taken before authentication may remove it.
    pub(crate) fn header_key(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        match &self.config.key {
            RateKey::Header(name) => headers.get(name).cloned(),
            _ => None,
        }
    }

    /// Takes a token for the call, or refuses it.
    pub(crate) async fn admit(
        &self,
        client_ip: IpAddr,
        principal: Option<&[u8]>,
        header: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        let key = self.key(client_ip, principal, header);
        let waited = match &self.store {
            Store::Local(buckets) => buckets.take(&key),
            Store::Shared { store, prefix } => {
                let mut name = String::with_capacity(prefix.len() + 32);
                name.push_str(prefix);
                let digest = ring::digest::digest(&ring::digest::SHA256, &key);
                for b in &digest.as_ref()[..16] {
                    name.push(char::from(HEX[usize::from(b >> 4)]));
                    name.push(char::from(HEX[usize::from(b & 15)]));
                }
                match store
                    .take(&name, self.config.per_second, self.config.burst)
                    .await
                {
                    Answer::Taken => Ok(()),
                    Answer::Empty(wait) => Err(wait),
                    Answer::Unreachable => match store.failure {
                        FailMode::Open => Ok(()),
                        FailMode::Closed => {
                            return Err(Refusal {
                                status: Status::new(
                                    Code::Unavailable,
                                    "rate limit store unavailable",
                                ),
                                retry_after: Some(Duration::from_secs(1)),
                            })
                        }
                    },
                }
            }
        };
        waited.map_err(|wait| Refusal {
            status: Status::new(Code::ResourceExhausted, "rate limit exceeded"),
            retry_after: Some(wait),
        })
    }

    /// The bucket key: a tag for its kind, then the value. A missing header or claim falls
    /// back to the client IP under its own tag.
    fn key(&self, ip: IpAddr, principal: Option<&[u8]>, header: Option<&HeaderValue>) -> Vec<u8> {
        let value = match &self.config.key {
            RateKey::ClientIp => None,
            RateKey::ApiKey | RateKey::Claim(_) => principal.map(|p| (b'k', p)),
            RateKey::Header(_) => header.map(|h| (b'h', h.as_bytes())),
        };
        let mut key = Vec::with_capacity(24);
        match value {
            Some((tag, v)) => {
                key.push(tag);
                key.extend_from_slice(v);
            }
            None => {
                key.push(b'i');
                match ip.to_canonical() {
                    IpAddr::V4(v4) => key.extend_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => key.extend_from_slice(&v6.octets()),
                }
            }
        }
        key
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn keys_and_fallbacks() {
        let limit = |key| {
            Limiter::new(
                &RateLimit {
                    per_second: 0.001,
                    burst: 1,
                    key,
                },
                "0:prefix=/".into(),
                None,
                None,
            )
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let l = limit(RateKey::ClientIp);
        assert!(l.admit(a, None, None).await.is_ok());
        let refused = l.admit(a, None, None).await.unwrap_err();
        assert_eq!(refused.status.code, Code::ResourceExhausted);
        assert!(refused.retry_after.unwrap() > Duration::from_secs(900));
        assert!(l.admit(b, None, None).await.is_ok());

        let l = limit(RateKey::Header(http::HeaderName::from_static("x-tenant")));
        let t1 = HeaderValue::from_static("t1");
        assert!(l.admit(a, None, Some(&t1)).await.is_ok());
        assert!(l.admit(b, None, Some(&t1)).await.is_err(), "same tenant");
        assert!(l.admit(a, None, None).await.is_ok(), "no header: by IP");
        assert!(l.admit(a, None, None).await.is_err());

        let l = limit(RateKey::Claim("sub".into()));
        assert!(l.admit(a, Some(b"alice"), None).await.is_ok());
        assert!(l.admit(b, Some(b"alice"), None).await.is_err());
        assert!(l.admit(a, Some(b"bob"), None).await.is_ok());
    }
}
