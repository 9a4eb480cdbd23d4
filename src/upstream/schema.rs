//! Schemas for JSON transcoding and REST, per upstream: from a descriptor set file, or fetched
//! from the upstream's server reflection the first time a call needs one, cached, fetched again
//! when a method is unknown and on an interval.
//!
//! With `reflection: auto` (the default) an upstream that answers that it has no reflection
//! service gets its JSON passed through unchanged and serves no REST rules; that is logged once
//! and asked again after the refresh interval. `reflection: true` makes it an error, `false`
//! never asks. Only calls that need a schema wait for a fetch: proto calls never do, and a
//! fetch is made by one call at a time (the others wait for its result).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::reflection::FetchError;
use super::UpstreamClient;
use crate::config;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::{Method, Schema};

/// How long one reflection fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Fetches (for unknown methods, or after a failure) are made at most this often.
const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// What to do with a JSON call.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// Send JSON unchanged as `application/grpc+json`.
    Passthrough,
    /// Transcode with this method's descriptors.
    Transcode {
        /// The method.
        method: Method,
        /// Accept unknown JSON fields.
        ignore_unknown_fields: bool,
    },
    /// Fail the call.
    Fail(Status),
}

#[derive(Debug)]
struct Fetched {
    schema: Schema,
    at: Instant,
}

/// What reflection has given so far.
#[derive(Debug, Default)]
struct State {
    current: Option<Arc<Fetched>>,
    /// Fetches tried, so a call that waited for another's fetch uses its result.
    attempts: u64,
    last_attempt: Option<Instant>,
    /// The last fetch's failure, when it failed.
    failure: Option<FetchError>,
    /// Whether the current lack of reflection has been logged.
    logged: bool,
}

#[derive(Debug)]
struct Reflected {
    /// `reflection: true`: a backend without it fails JSON calls instead of passing them.
    required: bool,
    refresh: Duration,
    state: RwLock<State>,
    fetching: tokio::sync::Mutex<()>,
    refreshing: AtomicBool,
}

impl Reflected {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure of a fetch tried too recently to try again, when the last one failed:
    /// a backend without reflection is asked again after the refresh interval, other failures
    /// after [`REFETCH_MIN_INTERVAL`]. With `reflection: true` a JSON call always asks again
    /// (it fails otherwise); `always` applies the intervals anyway (REST lookups, made for
    /// requests that may not be calls at all).
    fn recent_failure(&self, always: bool) -> Option<FetchError> {
        if self.required && !always {
            return None;
        }
        let st = self.state();
        let failure = st.failure.clone()?;
        let wait = match failure {
            FetchError::NoReflection(_) if !self.required => self.refresh.max(REFETCH_MIN_INTERVAL),
            _ => REFETCH_MIN_INTERVAL,
        };
        st.last_attempt
            .filter(|at| at.elapsed() < wait)
            .map(|_| failure)
    }
}

/// The schema sources of one upstream.
#[derive(Debug)]
pub(crate) struct Schemas {
    name: String,
    file: Option<Schema>,
    reflection: Option<Reflected>,
    passthrough: bool,
    ignore_unknown_fields: bool,
}

impl Schemas {
    /// Loads the descriptor file, if any.
    pub(crate) fn new(upstream: &config::Upstream) -> Result<Schemas, String> {
        let json = &upstream.json;
        let file = match &json.descriptors {
            Some(path) => Some(load(path)?),
            None => None,
        };
        let reflection =
            (json.reflection != config::Reflection::Off && !json.passthrough).then(|| Reflected {
                required: json.reflection == config::Reflection::On,
                refresh: json.refresh,
                state: RwLock::new(State::default()),
                fetching: tokio::sync::Mutex::new(()),
                refreshing: AtomicBool::new(false),
            });
        Ok(Schemas {
            name: upstream.name.clone(),
            file,
            reflection,
            passthrough: json.passthrough,
            ignore_unknown_fields: json.ignore_unknown_fields,
        })
    }

    /// Accept unknown JSON fields (and query parameters) instead of rejecting the call.
    pub(crate) fn ignore_unknown_fields(&self) -> bool {
        self.ignore_unknown_fields
    }

    /// The method at `path` if a schema at hand describes it; never waits.
    pub(crate) fn peek(&self, path: &str) -> Option<Method> {
        if let Some(m) = self.file.as_ref().and_then(|s| s.method(path)) {
            return Some(m);
        }
        let r = self.reflection.as_ref()?;
        let current = r.state().current.clone()?;
        current.schema.method(path)
    }

    fn transcode(&self, method: Method) -> Plan {
        Plan::Transcode {
            method,
            ignore_unknown_fields: self.ignore_unknown_fields,
        }
    }

    fn unknown(&self, path: &str, source: &str) -> Plan {
        Plan::Fail(Status::new(
            Code::Unimplemented,
            format!(
                "no schema for {path}: the {source} of upstream {:?} does not describe it, so its JSON cannot be transcoded",
                self.name
            ),
        ))
    }

    /// Decides how a JSON call (or a GET that needs method options) is handled.
    pub(crate) async fn plan(
        self: &Arc<Self>,
        client: &Arc<UpstreamClient>,
        route_schema: Option<&Schema>,
        path: &str,
    ) -> Plan {
        if let Some(schema) = route_schema {
            return match schema.method(path) {
                Some(m) => self.transcode(m),
                None => self.unknown(path, "descriptor set of its route"),
            };
        }
        if self.passthrough {
            return Plan::Passthrough;
        }
        if let Some(m) = self.file.as_ref().and_then(|s| s.method(path)) {
            return self.transcode(m);
        }
        let Some(r) = &self.reflection else {
            return match self.file {
                Some(_) => self.unknown(path, "descriptor set"),
                // Without descriptors, JSON goes through unchanged.
                None => Plan::Passthrough,
            };
        };
        let current = r.state().current.clone();
        if let Some(fetched) = &current {
            if fetched.at.elapsed() >= r.refresh {
                self.refresh_in_background(client);
            }
            if let Some(m) = fetched.schema.method(path) {
                return self.transcode(m);
            }
        }
        // Unknown (or nothing fetched yet): fetch now, unless a fetch just happened. Boxed: a
        // rare path whose future would otherwise enlarge every call's.
        match Box::pin(self.fetch(client, current.is_none())).await {
            Ok(Some(schema)) => match schema.method(path) {
                Some(m) => self.transcode(m),
                None => self.unknown(path, "server reflection"),
            },
            Ok(None) => self.unknown(path, "server reflection"),
            Err(FetchError::NoReflection(_)) if self.file.is_some() => {
                self.unknown(path, "descriptor set")
            }
            Err(FetchError::NoReflection(_)) if !r.required => Plan::Passthrough,
            Err(e) => Plan::Fail(Status::new(Code::Unavailable, e.to_string())),
        }
    }

    /// The schema whose REST rules this upstream serves: the descriptor file's, else the one
    /// from reflection. Waits for a fetch only when none was tried recently.
    pub(crate) async fn rest_schema(
        self: &Arc<Self>,
        client: &Arc<UpstreamClient>,
    ) -> Option<Schema> {
        if let Some(file) = &self.file {
            return Some(file.clone());
        }
        let r = self.reflection.as_ref()?;
        let current = r.state().current.clone();
        if let Some(fetched) = current {
            if fetched.at.elapsed() >= r.refresh {
                self.refresh_in_background(client);
            }
            return Some(fetched.schema.clone());
        }
        if r.recent_failure(true).is_some() {
            return None;
        }
        Box::pin(self.fetch(client, true)).await.ok().flatten()
    }

    /// Fetches descriptors by reflection. `Ok(None)` when a fetch was made too recently; a
    /// call that waited while another fetched gets that fetch's result.
    async fn fetch(
        &self,
        client: &Arc<UpstreamClient>,
        force: bool,
    ) -> Result<Option<Schema>, FetchError> {
        let Some(r) = &self.reflection else {
            return Ok(None);
        };
        if let Some(failure) = r.recent_failure(false) {
            return Err(failure);
        }
        let seen = r.state().attempts;
        let _one_at_a_time = r.fetching.lock().await;
        {
            let mut st = r.state_mut();
            let current = st.current.as_ref().map(|f| f.schema.clone());
            if st.attempts != seen {
                return match &st.failure {
                    Some(failure) => Err(failure.clone()),
                    None => Ok(current),
                };
            }
            if let Some(at) = st.last_attempt {
                if !force && at.elapsed() < REFETCH_MIN_INTERVAL {
                    return Ok(current);
                }
            }
            st.last_attempt = Some(Instant::now());
        }
        let result = super::reflection::fetch_schema(client, FETCH_TIMEOUT).await;
        let mut st = r.state_mut();
        st.attempts += 1;
        st.last_attempt = Some(Instant::now());
        match result {
            Ok(schema) => {
                tracing::info!(upstream = %self.name, services = ?schema.services(), "descriptors fetched by server reflection");
                st.current = Some(Arc::new(Fetched {
                    schema: schema.clone(),
                    at: Instant::now(),
                }));
                st.failure = None;
                st.logged = false;
                Ok(Some(schema))
            }
            Err(e) => {
                if !st.logged {
                    st.logged = true;
                    match &e {
                        FetchError::NoReflection(_) if !r.required => tracing::info!(
                            upstream = %self.name,
                            "the upstream offers no server reflection: JSON calls pass through unchanged and no REST rules are served (asked again in {:?})",
                            r.refresh.max(REFETCH_MIN_INTERVAL)
                        ),
                        _ => {
                            tracing::warn!(upstream = %self.name, error = %e, "cannot get descriptors by server reflection")
                        }
                    }
                }
                st.failure = Some(e.clone());
                Err(e)
            }
        }
    }

    fn refresh_in_background(self: &Arc<Self>, client: &Arc<UpstreamClient>) {
        let Some(r) = &self.reflection else {
            return;
        };
        if r.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let client = client.clone();
        tokio::spawn(async move {
            if let Some(r) = &me.reflection {
                // A failed refresh keeps the old descriptors.
                let result = me.fetch(&client, true).await;
                if result.is_err() {
                    let mut st = r.state_mut();
                    if let Some(current) = st.current.as_mut() {
                        *current = Arc::new(Fetched {
                            schema: current.schema.clone(),
                            at: Instant::now(),
                        });
                    }
                    st.failure = None;
                }
                r.refreshing.store(false, Ordering::Release);
            }
        });
    }
}

/// Loads a descriptor set file into a schema.
pub(crate) fn load(path: &std::path::Path) -> Result<Schema, String> {
    let bytes = config::load_descriptors(path)?;
    Schema::from_descriptor_set(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
