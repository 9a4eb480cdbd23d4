//! The keys a route verifies JWTs with: a JWKS file (read when the config is loaded or
//! reloaded) or an https URL (fetched on first use, then cached).
//!
//! A fetched set is used for `jwks_cache`; after that the next call starts a fetch in the
//! background and calls go on with the old keys until the new ones arrive (a key server that
//! is down does not stop calls whose keys are known). A token naming a `kid` the set does not
//! have makes the proxy fetch at once, within a budget (a few at once, then one per
//! [`UNKNOWN_KID_REFILL`]) so made-up `kid`s cannot turn callers into a flood on the key
//! server. One fetch runs at a time; callers that need it wait for that one.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::fetch::Fetcher;
use super::jwk::{self, Key};
use crate::config::{JwksSource, Jwt};
use crate::protocol::grpc::{Code, Status};

/// Fetches for unknown `kid`s allowed at once.
const UNKNOWN_KID_BURST: f64 = 3.0;
/// Then one more per this long.
const UNKNOWN_KID_REFILL: Duration = Duration::from_secs(10);
/// After a failed fetch, the next one waits this long (callers without keys fail at once).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// One version of the key set.
#[derive(Debug)]
pub(crate) struct Keys {
    pub(crate) keys: Vec<Key>,
    /// Changes whenever the keys do (verified tokens are cached per generation).
    pub(crate) generation: u64,
    fetched: Instant,
}

#[derive(Debug)]
struct FetchState {
    last_failure: Option<Instant>,
    /// Unknown-kid fetches left, refilled over time.
    budget: f64,
    budget_at: Instant,
}

/// A route's key set.
#[derive(Debug)]
pub(crate) struct KeySet {
    /// The settings it was built from (an unchanged URL source survives a reload).
    source: (JwksSource, Option<std::path::PathBuf>, Duration, Duration),
    fetcher: Option<Fetcher>,
    current: ArcSwapOption<Keys>,
    cache_for: Duration,
    fetching: tokio::sync::Mutex<()>,
    state: Mutex<FetchState>,
    refreshing: AtomicBool,
    next_generation: AtomicU64,
}

fn unavailable() -> Status {
    Status::new(
        Code::Unavailable,
        "the keys that verify tokens for this route are unavailable",
    )
}

impl KeySet {
    /// The key set of a route's `jwt` settings: a file is read now.
    pub(crate) fn new(config: &Jwt) -> Result<Arc<KeySet>, String> {
        let (fetcher, current) = match &config.jwks {
            JwksSource::File(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read jwks {}: {e}", path.display()))?;
                let keys =
                    jwk::parse_set(&bytes).map_err(|e| format!("jwks {}: {e}", path.display()))?;
                let keys = Keys {
                    keys,
                    generation: 1,
                    fetched: Instant::now(),
                };
                (None, Some(Arc::new(keys)))
            }
            JwksSource::Url(url) => (
                Some(
                    Fetcher::new(url, config.jwks_ca.as_deref(), config.jwks_timeout)
                        .map_err(|e| format!("jwks: {e}"))?,
                ),
                None,
            ),
        };
        Ok(Arc::new(KeySet {
            source: Self::source_of(config),
            fetcher,
            current: ArcSwapOption::new(current),
            cache_for: config.jwks_cache,
            fetching: tokio::sync::Mutex::new(()),
            state: Mutex::new(FetchState {
                last_failure: None,
                budget: UNKNOWN_KID_BURST,
                budget_at: Instant::now(),
            }),
            refreshing: AtomicBool::new(false),
            next_generation: AtomicU64::new(2),
        }))
    }

    fn source_of(config: &Jwt) -> (JwksSource, Option<std::path::PathBuf>, Duration, Duration) {
        (
            config.jwks.clone(),
            config.jwks_ca.clone(),
            config.jwks_timeout,
            config.jwks_cache,
        )
    }

    /// Whether this set can serve `config` after a reload: the same URL fetched the same way.
    /// Files are always read again.
    pub(crate) fn serves(&self, config: &Jwt) -> bool {
        matches!(config.jwks, JwksSource::Url(_)) && self.source == Self::source_of(config)
    }

    /// The generation of the keys in use (0 before the first fetch). Calls whose token is
    /// cached come here instead of [`KeySet::keys`], so this too starts the background fetch
    /// once the set is older than `jwks_cache`.
    pub(crate) fn generation(self: &Arc<Self>) -> u64 {
        let current = self.current.load();
        let Some(keys) = current.as_ref() else {
            return 0;
        };
        if self.fetcher.is_some() && keys.fetched.elapsed() >= self.cache_for {
            self.refresh_in_background();
        }
        keys.generation
    }

    /// The keys to verify with now. Waits for the first fetch of a URL; starts a background
    /// fetch when the cached set is older than `jwks_cache`.
    pub(crate) async fn keys(self: &Arc<Self>) -> Result<Arc<Keys>, Status> {
        if let Some(keys) = self.current.load_full() {
            if self.fetcher.is_some() && keys.fetched.elapsed() >= self.cache_for {
                self.refresh_in_background();
            }
            return Ok(keys);
        }
        if self.failed_recently() {
            return Err(unavailable());
        }
        self.fetch_after(None).await.map_err(|()| unavailable())
    }

    /// After a token named a `kid` that `seen` lacks: a newer set, fetched now if the budget
    /// allows (or by another caller meanwhile); none when there is nothing newer.
    pub(crate) async fn refetch_for_unknown_kid(
        self: &Arc<Self>,
        seen: &Keys,
    ) -> Option<Arc<Keys>> {
        self.fetcher.as_ref()?;
        if let Some(now) = self.current.load_full() {
            if now.generation != seen.generation || now.fetched > seen.fetched {
                return Some(now);
            }
        }
        if !self.take_budget() {
            tracing::debug!("unknown kid: JWKS refetch budget used up");
            return None;
        }
        self.fetch_after(Some(seen.fetched)).await.ok()
    }

    fn failed_recently(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .last_failure
            .is_some_and(|t| t.elapsed() < RETRY_AFTER_FAILURE)
    }

    fn take_budget(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill =
            now.duration_since(state.budget_at).as_secs_f64() / UNKNOWN_KID_REFILL.as_secs_f64();
        state.budget = (state.budget + refill).min(UNKNOWN_KID_BURST);
        state.budget_at = now;
        if state.budget >= 1.0 {
            state.budget -= 1.0;
            true
        } else {
            false
        }
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.failed_recently() || self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let set = self.clone();
        tokio::spawn(async move {
            let seen = set.current.load().as_ref().map(|k| k.fetched);
            let _ = set.fetch_after(seen).await;
            set.refreshing.store(false, Ordering::Release);
        });
    }

    /// Fetches the set unless one newer than `seen` arrived while waiting for the fetch lock.
    async fn fetch_after(&self, seen: Option<Instant>) -> Result<Arc<Keys>, ()> {
        let Some(fetcher) = &self.fetcher else {
            return self.current.load_full().ok_or(());
        };
        let _one = self.fetching.lock().await;
        if let Some(now) = self.current.load_full() {
            if seen.is_none_or(|s| now.fetched > s) {
                return Ok(now);
            }
        }
        if self.failed_recently() {
            return Err(());
        }
        let fetched = fetcher
            .fetch()
            .await
            .and_then(|bytes| jwk::parse_set(&bytes));
        match fetched {
            Ok(keys) => {
                let old = self.current.load_full();
                let generation = match &old {
                    Some(o) if o.keys == keys => o.generation,
                    _ => self.next_generation.fetch_add(1, Ordering::Relaxed),
                };
                let keys = Arc::new(Keys {
                    keys,
                    generation,
                    fetched: Instant::now(),
                });
                if old.as_ref().is_none_or(|o| o.generation != generation) {
                    tracing::info!(url = %fetcher.url(), keys = keys.keys.len(), "JWKS fetched");
                }
                self.current.store(Some(keys.clone()));
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(url = %fetcher.url(), error = %e, "JWKS fetch failed; keeping the keys in use");
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                state.last_failure = Some(Instant::now());
                Err(())
            }
        }
    }
}
