//! Sending a call again: the copy of a request that makes it possible ([`Replay`]), a route's
//! retry policy ([`RetrySpec`]), the budget that keeps retries from more than doubling the
//! load ([`RetryBudget`]), and the wait between attempts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use tokio::time::Instant;

use super::conn::UpstreamBody;
use crate::body::BoxBody;
use crate::config;
use crate::protocol::grpc::status::GRPC_STATUS;
use crate::protocol::grpc::timeout::{encode_grpc_timeout, GRPC_TIMEOUT};
use crate::protocol::grpc::Code;

/// A small list of body chunks that allocates only past one (a unary request is one chunk).
#[derive(Default, Clone)]
pub(crate) enum Chunks {
    #[default]
    Empty,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Chunks {
    pub(crate) fn push(&mut self, b: Bytes) {
        *self = match std::mem::take(self) {
            Chunks::Empty => Chunks::One(b),
            Chunks::One(a) => Chunks::Many(vec![a, b]),
            Chunks::Many(mut v) => {
                v.push(b);
                Chunks::Many(v)
            }
        };
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Chunks::Empty => 0,
            Chunks::One(_) => 1,
            Chunks::Many(v) => v.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl IntoIterator for Chunks {
    type Item = Bytes;
    type IntoIter = std::collections::vec_deque::IntoIter<Bytes>;

    fn into_iter(self) -> Self::IntoIter {
        let deque: VecDeque<Bytes> = match self {
            Chunks::Empty => VecDeque::new(),
            Chunks::One(b) => VecDeque::from([b]),
            Chunks::Many(v) => v.into(),
        };
        deque.into_iter()
    }
}

/// A copy of a request whose body was complete when it was sent: its head and the body's
/// chunks (the same `Bytes`, shared, not copied).
pub(crate) struct Replay {
    parts: Parts,
    body: Chunks,
}

impl Replay {
    pub(crate) fn new(parts: Parts, body: Chunks) -> Replay {
        Replay { parts, body }
    }

    /// The request again, its `grpc-timeout` set to what is left before `deadline`.
    pub(crate) fn request(&self, deadline: Option<Instant>) -> Request<BoxBody> {
        let mut parts = self.parts.clone();
        if let Some(d) = deadline {
            parts.headers.insert(
                GRPC_TIMEOUT,
                encode_grpc_timeout(d.saturating_duration_since(Instant::now())),
            );
        }
        let body = crate::body::chunks(self.body.clone().into_iter().collect());
        Request::from_parts(parts, body)
    }
}

/// A route's retry policy, small and `Copy` so that a route's target carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetrySpec {
    /// The retried codes, one bit per code number.
    on: u32,
    /// Attempts in all, the first included.
    pub(crate) attempts: u32,
    /// Wait before the first retry; doubled for each further one, with jitter.
    backoff: Duration,
}

impl RetrySpec {
    pub(crate) fn new(retry: &config::Retry) -> RetrySpec {
        RetrySpec {
            on: retry
                .on
                .iter()
                .fold(0, |bits, c| bits | 1u32 << (c.as_i32() & 31)),
            attempts: retry.attempts,
            backoff: retry.backoff,
        }
    }

    /// Whether calls that end with `code` are retried.
    pub(crate) fn covers(&self, code: Code) -> bool {
        code != Code::Ok && self.on & (1u32 << (code.as_i32() & 31)) != 0
    }

    /// Whether `res` is a Trailers-Only answer (nothing of it reached the caller yet) whose
    /// status is retried.
    pub(crate) fn retries_reply(&self, res: &Response<UpstreamBody>) -> bool {
        use http_body::Body as _;
        if !res.body().is_end_stream() {
            return false;
        }
        let code = res
            .headers()
            .get(GRPC_STATUS)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
            .and_then(|s| s.trim().parse::<i32>().ok())
            .map(Code::from_i32);
        code.is_some_and(|c| self.covers(c))
    }

    /// The wait before retry number `n` (1 for the first): the backoff doubled per retry, with
    /// jitter between half and one and a half of it, so callers that failed together do not
    /// come back together.
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let base = self
            .backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(10));
        base.mul_f64(0.5 + fastrand::f64())
    }
}

/// Whether a wait of `delay` still leaves time before `deadline` for another attempt.
pub(crate) fn fits(deadline: Option<Instant>, delay: Duration) -> bool {
    deadline.is_none_or(|d| Instant::now() + delay < d)
}

/// Retries allowed, earned by first attempts: each call on a route with a retry policy adds
/// one (up to a cap), each retry spends one. So retries never outnumber first attempts by
/// more than the cap, and a failing upstream sees at most about twice its load.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    tokens: AtomicU32,
}

/// Retries held in reserve: what a quiet upstream may spend at once.
const BUDGET_CAP: u32 = 10;

impl Default for RetryBudget {
    fn default() -> RetryBudget {
        RetryBudget {
            tokens: AtomicU32::new(BUDGET_CAP),
        }
    }
}

impl RetryBudget {
    /// A first attempt was made.
    pub(crate) fn deposit(&self) {
        // Read first: at the cap (a healthy upstream) nothing is written.
        if self.tokens.load(Ordering::Relaxed) < BUDGET_CAP {
            let _ = self
                .tokens
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                    Some((t + 1).min(BUDGET_CAP))
                });
        }
    }

    /// Takes one retry; false when none is left.
    pub(crate) fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| t.checked_sub(1))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn spec_covers_listed_codes_only() {
        let spec = RetrySpec::new(&config::Retry {
            on: vec![Code::Unavailable, Code::ResourceExhausted],
            attempts: 3,
            backoff: Duration::from_millis(10),
        });
        assert!(spec.covers(Code::Unavailable));
        assert!(spec.covers(Code::ResourceExhausted));
        assert!(!spec.covers(Code::Internal));
        assert!(!spec.covers(Code::Ok));
    }

    #[test]
    fn delay_doubles_with_jitter() {
        let spec = RetrySpec::new(&config::Retry {
            on: vec![Code::Unavailable],
            attempts: 5,
            backoff: Duration::from_millis(100),
        });
        for n in 1..=4u32 {
            let base = 100.0 * f64::from(1u32 << (n - 1));
            for _ in 0..50 {
                let d = spec.delay(n).as_secs_f64() * 1000.0;
                assert!(d >= base * 0.5 && d < base * 1.5, "retry {n}: {d} ms");
            }
        }
    }

    #[test]
    fn budget_keeps_retries_to_first_attempts_plus_the_cap() {
        let budget = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            // Every call fails and would retry four times.
            for _ in 0..4 {
                if budget.withdraw() {
                    retries += 1;
                }
            }
        }
        assert!(retries <= 1000 + BUDGET_CAP, "{retries}");
        assert!(retries >= 1000, "{retries}");
    }

    #[test]
    fn replay_sets_the_remaining_budget() {
        let req = Request::builder()
            .uri("http://a/p")
            .header("grpc-timeout", "10S")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut chunks = Chunks::default();
        chunks.push(Bytes::from_static(b"ab"));
        chunks.push(Bytes::from_static(b"c"));
        let replay = Replay::new(parts, chunks);
        let again = replay.request(Some(Instant::now() + Duration::from_millis(500)));
        let t = again.headers()["grpc-timeout"].to_str().unwrap();
        let ms: u64 = t.trim_end_matches(['m', 'u']).parse().unwrap();
        assert!(t.ends_with('m') || t.ends_with('u'), "{t}");
        assert!(ms <= 500_000, "{t}");
    }
}
