//! Edge policies, each a stage of the request pipeline (see `forward::Proxy::handle`): who the
//! client is (`forwarded`), CORS (`cors`), cross-site protection (`origin`), and per route,
//! authentication (`auth`) and rate limits (`rate_limit`), composed by [`RoutePolicy`].

pub(crate) mod auth;
pub(crate) mod cors;
pub(crate) mod forwarded;
pub(crate) mod origin;
pub(crate) mod rate_limit;

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;

use self::auth::Authenticator;
use self::rate_limit::{Limiter, SharedStore};
use crate::config::{Config, RateKey, Route};
use crate::observe::CallContext;
use crate::protocol::grpc::Status;

/// Why a call was refused by a route policy.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// The status the caller gets (in its own protocol).
    pub(crate) status: Status,
    /// For rate limits: when to try again (`retry-after`, whole seconds).
    pub(crate) retry_after: Option<Duration>,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Refusal {
        Refusal {
            status,
            retry_after: None,
        }
    }
}

/// The policies of one route: authentication, then the rate limit.
#[derive(Debug)]
pub(crate) struct RoutePolicy {
    /// The route as configured, to recognise it in the next config.
    route: Route,
    auth: Option<Authenticator>,
    limit: Option<Limiter>,
}

impl RoutePolicy {
    /// Admits the call or says why not. May rewrite the request headers (claims for
    /// upstream, the credential removed).
    ///
    /// Authentication comes first: a limit keyed by an API key or a claim needs the verified
    /// credential, and an unauthenticated caller must not use up an authenticated one's bucket.
    pub(crate) async fn admit(&self, parts: &mut Parts, ctx: &CallContext) -> Result<(), Refusal> {
        // Read before authentication may remove the header it names.
        let header_key = self
            .limit
            .as_ref()
            .and_then(|l| l.header_key(&parts.headers));
        let principal = match &self.auth {
            Some(auth) => auth.authenticate(&mut parts.headers).await?,
            None => None,
        };
        if let Some(limit) = &self.limit {
            limit
                .admit(ctx.client_ip, principal.as_deref(), header_key.as_ref())
                .await?;
        }
        Ok(())
    }
}

/// The route policies of a config, by route index; routes without policies pay nothing.
#[derive(Debug, Default)]
pub(crate) struct RoutePolicies {
    routes: Vec<Option<RoutePolicy>>,
    /// The Redis store, when `rate_limit_store` is set and a route has a limit.
    shared: Option<Arc<SharedStore>>,
}

impl RoutePolicies {
    /// Builds the policies (reads key files). State worth keeping across a reload carries
    /// over from `previous`: the in-process buckets of an unchanged limit (so a reload does
    /// not refill them), the keys fetched from an unchanged JWKS URL, the Redis connection.
    pub(crate) fn new(
        config: &Config,
        previous: Option<&RoutePolicies>,
    ) -> Result<RoutePolicies, String> {
        let any_limit = config.routes.iter().any(|r| r.rate_limit.is_some());
        let shared = match (&config.rate_limit_store, any_limit) {
            (Some(url), true) => {
                let same = previous
                    .and_then(|p| p.shared.as_ref())
                    .filter(|s| s.is_same(url, config.rate_limit_store_failure));
                Some(match same {
                    Some(s) => s.clone(),
                    None => {
                        let store = Arc::new(
                            SharedStore::new(url, config.rate_limit_store_failure)
                                .map_err(|e| format!("rate_limit_store: {e}"))?,
                        );
                        store.warm();
                        store
                    }
                })
            }
            _ => None,
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            if route.auth.is_none() && route.rate_limit.is_none() {
                routes.push(None);
                continue;
            }
            let before = previous.and_then(|p| p.find(route));
            let rate_claim = match route.rate_limit.as_ref().map(|r| &r.key) {
                Some(RateKey::Claim(c)) => Some(c.as_str()),
                _ => None,
            };
            let auth = match &route.auth {
                Some(a) => Some(
                    Authenticator::new(a, rate_claim, before.and_then(|b| b.auth.as_ref()))
                        .map_err(|e| format!("routes[{i}].auth: {e}"))?,
                ),
                None => None,
            };
            let limit = route.rate_limit.as_ref().map(|rl| {
                Limiter::new(
                    rl,
                    route_id(i, route),
                    shared.clone(),
                    before.and_then(|b| b.limit.as_ref()),
                )
            });
            routes.push(Some(RoutePolicy {
                route: route.clone(),
                auth,
                limit,
            }));
        }
        Ok(RoutePolicies { routes, shared })
    }

    /// Failures of the shared rate-limit store so far, when there is one.
    pub(crate) fn store_errors(&self) -> Option<u64> {
        self.shared.as_ref().map(|s| s.errors())
    }

    /// The policy of a route, when it has one.
    pub(crate) fn get(&self, route: usize) -> Option<&RoutePolicy> {
        self.routes.get(route).and_then(Option::as_ref)
    }

    /// The policy of the same route (same match, host and upstream index) in this config.
    fn find(&self, route: &Route) -> Option<&RoutePolicy> {
        self.routes.iter().flatten().find(|p| {
            p.route.kind == route.kind
                && p.route.host == route.host
                && p.route.upstream == route.upstream
        })
    }
}

/// A name for a route's buckets that every replica with the same config agrees on.
fn route_id(i: usize, route: &Route) -> String {
    let kind = match &route.kind {
        crate::config::MatchKind::Method(m) => format!("method={m}"),
        crate::config::MatchKind::Service(s) => format!("service={s}"),
        crate::config::MatchKind::Prefix(p) => format!("prefix={p}"),
    };
    match &route.host {
        Some(h) => format!("{i}:{kind}:host={h}"),
        None => format!("{i}:{kind}"),
    }
}
