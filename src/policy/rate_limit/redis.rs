//! Buckets shared by every replica through Redis (`rate_limit_store: redis://…`).
//!
//! One Lua script takes a token atomically: it reads the bucket, refills it by the time since
//! its last use (Redis's clock, so replicas' clocks do not matter), takes a token or says how
//! long until one is there, and lets an idle bucket expire once it would be full again.
//!
//! Every answer is awaited at most [`WAIT`]. A store that fails or does not answer is left
//! alone for [`DOWN_FOR`] (calls meanwhile do not wait for it) while the route's
//! `rate_limit_store_failure` applies; failures are counted and logged (at most every 10 s).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use crate::config::FailMode;

/// The longest a call waits for the store (connecting included).
pub(crate) const WAIT: Duration = Duration::from_millis(250);
/// After a failure, the store is not asked again for this long.
const DOWN_FOR: Duration = Duration::from_secs(1);
const LOG_EVERY: Duration = Duration::from_secs(10);

/// KEYS[1] = bucket; ARGV = per_second, burst. Returns {1, 0} when a token was taken, or
/// {0, milliseconds until the next token}.
const TAKE: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local b = redis.call('HMGET', KEYS[1], 'n', 't')
local tokens = tonumber(b[1])
local last = tonumber(b[2])
if tokens == nil or last == nil then
  tokens = burst
  last = now
end
tokens = math.min(burst, tokens + math.max(0, now - last) / 1000000 * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'n', tostring(tokens), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, wait}
";

/// The connection to the shared store, shared by every route of a config (and carried over
/// a reload that keeps the same URL).
pub(crate) struct SharedStore {
    url: String,
    /// What callers get while the store is unreachable.
    pub(crate) failure: FailMode,
    client: redis::Client,
    conn: Mutex<Option<MultiplexedConnection>>,
    connecting: tokio::sync::Mutex<()>,
    down_until: Mutex<Option<Instant>>,
    script: redis::Script,
    errors: AtomicU64,
    last_log: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedStore")
            .field("failure", &self.failure)
            .field("errors", &self.errors.load(Ordering::Relaxed))
            .finish()
    }
}

/// What the store said.
pub(crate) enum Answer {
    /// A token was taken.
    Taken,
    /// None left; the next one in this long.
    Empty(Duration),
    /// The store could not be asked (down, slow, or an error).
    Unreachable,
}

impl SharedStore {
    /// Parses the URL; connects on first use.
    pub(crate) fn new(url: &str, failure: FailMode) -> Result<SharedStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        Ok(SharedStore {
            url: url.to_owned(),
            failure,
            client,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            down_until: Mutex::new(None),
            script: redis::Script::new(TAKE),
            errors: AtomicU64::new(0),
            last_log: Mutex::new(None),
        })
    }

    /// Connects in the background, so the first limited call need not wait for it.
    pub(crate) fn warm(self: &std::sync::Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        rt.spawn(async move {
            if tokio::time::timeout(WAIT * 4, store.connection())
                .await
                .is_err()
            {
                tracing::debug!("rate limit store: no connection yet");
            }
        });
    }

    /// Whether this store serves the given settings.
    pub(crate) fn is_same(&self, url: &str, failure: FailMode) -> bool {
        self.url == url && self.failure == failure
    }

    /// Failures so far (connect errors, error answers, answers later than [`WAIT`]):
    /// `switchboard_rate_limit_store_errors_total`.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Takes a token from bucket `key`.
    pub(crate) async fn take(&self, key: &str, per_second: f64, burst: u32) -> Answer {
        let down = *self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        if down.is_some_and(|t| Instant::now() < t) {
            return Answer::Unreachable;
        }
        let asked = tokio::time::timeout(WAIT, async {
            let mut conn = self.connection().await?;
            self.script
                .key(key)
                .arg(per_second)
                .arg(burst)
                .invoke_async::<(i64, i64)>(&mut conn)
                .await
        })
        .await;
        match asked {
            Ok(Ok((1, _))) => Answer::Taken,
            Ok(Ok((_, ms))) => Answer::Empty(Duration::from_millis(ms.max(1).unsigned_abs())),
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Answer::Unreachable
            }
            Err(_) => {
                self.failed(&format!("no answer within {WAIT:?}"));
                Answer::Unreachable
            }
        }
    }

    async fn connection(&self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(WAIT))
            .set_response_timeout(Some(WAIT));
        let c = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn failed(&self, why: &str) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed) + 1;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + DOWN_FOR);
        let mut last = self.last_log.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            *last = Some(Instant::now());
            let mode = match self.failure {
                FailMode::Open => "letting calls through (fail open)",
                FailMode::Closed => "refusing limited calls (fail closed)",
            };
            tracing::warn!(error = %why, failures = n, "rate limit store unreachable: {mode}");
        }
    }
}
