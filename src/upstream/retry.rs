//! Sending a call again: the copy of a request that makes it possible ([`Replay`]), a route's
//! retry policy ([`RetrySpec`]), the budget that keeps retries from more than doubling the
//! load ([`RetryBudget`]), and the wait between attempts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use std::time::Duration;
use tokio::sync::Notify;

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

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Bytes> {
        let (one, many): (Option<&Bytes>, &[Bytes]) = match self {
            Chunks::Empty => (None, &[]),
            Chunks::One(b) => (Some(b), &[]),
            Chunks::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter())
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

/// A copy of a request: its head and its body's chunks (the same `Bytes`, shared, not
/// copied). The body was either complete when the request was sent, or is captured while it
/// is piped upstream, and usable only once it was whole. A capture lives only as long as
/// another attempt is possible: dropping the replay (when the response head arrived) lets the
/// pipe free what it kept.
pub(crate) struct Replay {
    parts: Parts,
    body: ReplayBody,
}

enum ReplayBody {
    Whole(Chunks),
    Piped(Arc<Capture>),
}

/// A request body captured as it is piped upstream.
pub(crate) struct Capture {
    state: Mutex<Piped>,
    /// Told when the capture is over (whole or unusable).
    over: Notify,
}

#[derive(Default)]
struct Piped {
    chunks: Chunks,
    size: usize,
    complete: bool,
    /// Too large to keep, ended with an error or trailers, or no longer wanted.
    unusable: bool,
}

/// The most a piped body keeps for another attempt.
const PIPED_LIMIT: usize = 1 << 20;
/// How long another attempt waits for the rest of a piped body.
const PIPED_WAIT: Duration = Duration::from_secs(1);

impl Capture {
    /// Starts a capture with what was taken before the pipe started.
    pub(crate) fn new(taken: Chunks) -> Arc<Capture> {
        let size = taken.iter().map(Bytes::len).sum();
        Arc::new(Capture {
            state: Mutex::new(Piped {
                chunks: taken,
                size,
                complete: false,
                unusable: size > PIPED_LIMIT,
            }),
            over: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Piped> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the pipe should go on capturing: a replay still wants the body and it is
    /// neither whole nor unusable yet.
    pub(crate) fn wanted(self: &Arc<Self>) -> bool {
        let p = self.lock();
        Arc::strong_count(self) > 1 && !p.complete && !p.unusable
    }

    /// Keeps a chunk (`end` when it was the last); false once nothing more is wanted.
    pub(crate) fn keep(self: &Arc<Self>, chunk: &Bytes, end: bool) -> bool {
        let mut p = self.lock();
        if p.unusable || p.complete {
            return false;
        }
        p.size += chunk.len();
        if p.size > PIPED_LIMIT || Arc::strong_count(self) == 1 {
            p.unusable = true;
            p.chunks = Chunks::Empty;
            drop(p);
            self.over.notify_waiters();
            return false;
        }
        p.chunks.push(chunk.clone());
        if end {
            p.complete = true;
            drop(p);
            self.over.notify_waiters();
        }
        true
    }

    /// The pipe stopped capturing: a body not whole by now never will be, so whoever waits
    /// for it stops waiting.
    pub(crate) fn abandon(&self) {
        let mut p = self.lock();
        if p.complete || p.unusable {
            return;
        }
        p.unusable = true;
        p.chunks = Chunks::Empty;
        drop(p);
        self.over.notify_waiters();
    }

    /// The body is over (cleanly when `ok`).
    pub(crate) fn end(&self, ok: bool) {
        let mut p = self.lock();
        if ok {
            p.complete = true;
        } else {
            p.unusable = true;
            p.chunks = Chunks::Empty;
        }
        drop(p);
        self.over.notify_waiters();
    }
}

impl Replay {
    pub(crate) fn new(parts: Parts, body: Chunks) -> Replay {
        Replay {
            parts,
            body: ReplayBody::Whole(body),
        }
    }

    pub(crate) fn piped(parts: Parts, capture: Arc<Capture>) -> Replay {
        Replay {
            parts,
            body: ReplayBody::Piped(capture),
        }
    }

    /// The request again, its `grpc-timeout` set to what is left before `deadline`; `None`
    /// while (or when) its body is not whole.
    pub(crate) fn request(&self, deadline: Option<Instant>) -> Option<Request<BoxBody>> {
        let chunks = match &self.body {
            ReplayBody::Whole(chunks) => chunks.clone(),
            ReplayBody::Piped(capture) => {
                let p = capture.lock();
                if !p.complete || p.unusable {
                    return None;
                }
                p.chunks.clone()
            }
        };
        let mut parts = self.parts.clone();
        if let Some(d) = deadline {
            parts.headers.insert(
                GRPC_TIMEOUT,
                encode_grpc_timeout(d.saturating_duration_since(Instant::now())),
            );
        }
        let body = crate::body::chunks(chunks.into_iter().collect());
        Some(Request::from_parts(parts, body))
    }

    /// Waits (within `deadline`, and a second at most) until a piped body is whole; true
    /// when the request can be sent again.
    pub(crate) async fn whole(&self, deadline: Option<Instant>) -> bool {
        let ReplayBody::Piped(capture) = &self.body else {
            return true;
        };
        let limit = Instant::now() + PIPED_WAIT;
        let until = deadline.map_or(limit, |d| d.min(limit));
        loop {
            let over = capture.over.notified();
            {
                let p = capture.lock();
                if p.unusable {
                    return false;
                }
                if p.complete {
                    return true;
                }
            }
            if tokio::time::timeout_at(until, over).await.is_err() {
                return false;
            }
        }
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

    #[tokio::test]
    async fn a_piped_body_is_replayed_only_once_whole() {
        let (parts, ()) = Request::new(()).into_parts();
        let capture = Capture::new(Chunks::One(Bytes::from_static(b"a")));
        let replay = Replay::piped(parts.clone(), capture.clone());
        assert!(capture.wanted());
        assert!(replay.request(None).is_none());
        assert!(capture.keep(&Bytes::from_static(b"b"), false));
        assert!(replay.request(None).is_none());
        let waiting = tokio::spawn({
            let capture = capture.clone();
            async move {
                tokio::task::yield_now().await;
                capture.end(true);
            }
        });
        assert!(replay.whole(None).await);
        waiting.await.unwrap();
        assert!(replay.request(None).is_some());
        assert!(!capture.wanted());

        let capture = Capture::new(Chunks::Empty);
        let replay = Replay::piped(parts.clone(), capture.clone());
        assert!(!capture.keep(&Bytes::from(vec![0u8; PIPED_LIMIT + 1]), true));
        assert!(replay.request(None).is_none(), "over the limit");
        assert!(!replay.whole(None).await);

        let capture = Capture::new(Chunks::Empty);
        let replay = Replay::piped(parts, capture.clone());
        capture.end(false);
        assert!(replay.request(None).is_none(), "ended with an error");

        // Nobody wants it any more: the pipe stops keeping.
        drop(replay);
        let capture = Capture::new(Chunks::Empty);
        assert!(!capture.wanted());
        assert!(!capture.keep(&Bytes::from_static(b"x"), false));
    }

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
        let again = replay
            .request(Some(Instant::now() + Duration::from_millis(500)))
            .unwrap();
        let t = again.headers()["grpc-timeout"].to_str().unwrap();
        let ms: u64 = t.trim_end_matches(['m', 'u']).parse().unwrap();
        assert!(t.ends_with('m') || t.ends_with('u'), "{t}");
        assert!(ms <= 500_000, "{t}");
    }
}
