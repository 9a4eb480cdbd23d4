//! Schemas for JSON transcoding, per upstream: from a descriptor set file, or fetched from the
//! upstream's server reflection, cached, and fetched again when a method is unknown and on an
//! interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::UpstreamClient;
use crate::config;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::{Method, Schema};

/// How long one reflection fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Unknown methods trigger a fetch at most this often.
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

#[derive(Debug)]
struct Reflected {
    refresh: Duration,
    current: RwLock<Option<Arc<Fetched>>>,
    fetching: tokio::sync::Mutex<()>,
    last_attempt: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
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
        let reflection = (json.reflection == config::Reflection::On).then(|| Reflected {
            refresh: json.refresh,
            current: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            last_attempt: Mutex::new(None),
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

    /// Whether any schema source is configured.
    pub(crate) fn has_source(&self) -> bool {
        self.file.is_some() || self.reflection.is_some()
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
        let current = r
            .current
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
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
            Err(e) => Plan::Fail(Status::new(Code::Unavailable, e)),
        }
    }

    /// Fetches descriptors by reflection. `Ok(None)` when a fetch was made too recently.
    async fn fetch(
        &self,
        client: &Arc<UpstreamClient>,
        force: bool,
    ) -> Result<Option<Schema>, String> {
        let Some(r) = &self.reflection else {
            return Ok(None);
        };
        let _one_at_a_time = r.fetching.lock().await;
        {
            let mut last = r.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = *last {
                if !force && at.elapsed() < REFETCH_MIN_INTERVAL {
                    let current = r.current.read().unwrap_or_else(|p| p.into_inner());
                    return Ok(current.as_ref().map(|f| f.schema.clone()));
                }
            }
            *last = Some(Instant::now());
        }
        let schema = fetch_by_reflection(client).await.map_err(|e| {
            format!(
                "cannot get descriptors of upstream {:?} by server reflection: {e}",
                self.name
            )
        })?;
        tracing::info!(upstream = %self.name, services = ?schema.services(), "descriptors fetched by server reflection");
        let fetched = Arc::new(Fetched {
            schema: schema.clone(),
            at: Instant::now(),
        });
        *r.current.write().unwrap_or_else(|p| p.into_inner()) = Some(fetched);
        Ok(Some(schema))
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
            if let Err(e) = me.fetch(&client, true).await {
                tracing::warn!(upstream = %me.name, error = %e, "refreshing descriptors failed; keeping the old ones");
            }
            if let Some(r) = &me.reflection {
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

/// Asks the upstream's server reflection service.
async fn fetch_by_reflection(client: &UpstreamClient) -> Result<Schema, String> {
    super::reflection::fetch_schema(client, FETCH_TIMEOUT).await
}
