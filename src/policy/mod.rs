//! Edge policies, each a stage of the request pipeline (see `forward::Proxy::handle`): who the
//! client is (`forwarded`), CORS (`cors`), cross-site protection (`origin`), and per route,
//! authentication and rate limits (`RoutePolicy`).

pub(crate) mod cors;
pub(crate) mod forwarded;
pub(crate) mod origin;

use std::time::Duration;

use http::request::Parts;

use crate::config::Config;
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

/// The policies of one route: authentication, then the rate limit.
#[derive(Debug)]
pub(crate) struct RoutePolicy {}

impl RoutePolicy {
    /// Admits the call or says why not. May rewrite the request headers (identity headers
    /// for upstream, the token header removed).
    pub(crate) async fn admit(
        &self,
        _parts: &mut Parts,
        _ctx: &CallContext,
    ) -> Result<(), Refusal> {
        Ok(())
    }
}

/// The route policies of a config, by route index; routes without policies pay nothing.
#[derive(Debug, Default)]
pub(crate) struct RoutePolicies {
    routes: Vec<Option<RoutePolicy>>,
}

impl RoutePolicies {
    /// Builds the policies (reads key files).
    pub(crate) fn new(config: &Config) -> Result<RoutePolicies, String> {
        Ok(RoutePolicies {
            routes: config.routes.iter().map(|_| None).collect(),
        })
    }

    /// The policy of a route, when it has one.
    pub(crate) fn get(&self, route: usize) -> Option<&RoutePolicy> {
        self.routes.get(route).and_then(Option::as_ref)
    }
}
