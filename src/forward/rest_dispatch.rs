//! The REST stage of the pipeline: a request no protocol claims by its content type is
//! matched against the `google.api.http` rules of the upstreams that serve them (waiting for a
//! schema only when none was fetched yet), mapped to its method, and from then on routed and
//! forwarded like any call to that method. Also the OpenAPI document of an upstream.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use super::{rest, Proxy, Target};
use crate::body::{self, BoxBody, CallerBody};
use crate::observe::methods::GrpcType;
use crate::observe::{CallContext, CallProtocol};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::{Protocol, Rejection};

impl Proxy {
    /// A request no protocol claims by its content type: a REST call when a rule matches;
    /// a Connect JSON call to a method path stays one; else what `fallback` says.
    pub(super) async fn dispatch_rest(
        self: Arc<Self>,
        fallback: Result<Protocol, Rejection>,
        mut req: Request<Incoming>,
        ctx: &Arc<CallContext>,
    ) -> Response<BoxBody> {
        let found = self.rest_lookup(&req).await;
        let path = req.uri().path();
        let connect_method = matches!(fallback, Ok(Protocol::Connect(_)))
            && self
                .route(path, &req)
                .is_some_and(|t| self.schemas[t.upstream].peek(path).is_some());
        match found {
            RestLookup::Found(rc, target) if !connect_method => {
                ctx.set_protocol(CallProtocol::Rest);
                let _ = ctx.rpc_path.set(Arc::from(rc.binding.method.path()));
                let mode =
                    crate::protocol::rest::Mode::from_accept(req.headers().get(header::ACCEPT));
                let m = &rc.binding.method;
                let _ = ctx
                    .grpc_type
                    .set(GrpcType::of(m.client_streaming(), m.server_streaming()));
                req.extensions_mut().insert(rc);
                let req = req.map(CallerBody::Http);
                self.dispatch_routed(Protocol::Rest(mode), target, req, ctx)
                    .await
            }
            RestLookup::WrongMethod(allow) if !connect_method => {
                ctx.set_protocol(CallProtocol::Rest);
                ctx.set_code(Code::Unimplemented);
                rest::method_not_allowed(req.method(), &allow)
            }
            _ => {
                // Neither RPC nor REST: a verb only REST uses on a path that is not an RPC
                // path gets REST's 404 instead of the RPC protocols' 405.
                if let Err(r) = &fallback {
                    if r.status == http::StatusCode::METHOD_NOT_ALLOWED && !rpc_shaped(path) {
                        return rest::not_found(path);
                    }
                }
                self.dispatch_detected(fallback, req, ctx).await
            }
        }
    }

    /// Matches a request against the REST rules of every upstream that serves them, in
    /// upstream order; a match counts when the method it maps to is routed to that upstream
    /// and the route allows REST.
    async fn rest_lookup(&self, req: &Request<Incoming>) -> RestLookup {
        // Fetched side by side when several upstreams have none yet (usually: all cached).
        let schemas = match self.rest_upstreams.as_slice() {
            [u] => vec![self.schemas[*u].rest_schema(&self.upstreams[*u]).await],
            many => {
                futures_util::future::join_all(
                    many.iter()
                        .map(|&u| self.schemas[u].rest_schema(&self.upstreams[u])),
                )
                .await
            }
        };
        let mut allow = Vec::new();
        for (&u, schema) in self.rest_upstreams.iter().zip(schemas) {
            let Some(schema) = schema else {
                continue;
            };
            match schema.rest().lookup(req.method(), req.uri().path()) {
                crate::protocol::rest::Lookup::Found(binding, segments) => {
                    let Some(target) = self.route(binding.method.path(), req) else {
                        continue;
                    };
                    if target.upstream != u || self.route_rest[target.route] == Some(false) {
                        continue;
                    }
                    let rc = rest::RestCall {
                        binding,
                        segments,
                        schema,
                        ignore_unknown_fields: self.schemas[u].ignore_unknown_fields(),
                    };
                    return RestLookup::Found(rc, target);
                }
                crate::protocol::rest::Lookup::WrongMethod(methods) => allow.extend(methods),
                crate::protocol::rest::Lookup::NotFound => {}
            }
        }
        if allow.is_empty() {
            return RestLookup::NotFound;
        }
        allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        allow.dedup();
        RestLookup::WrongMethod(allow)
    }

    /// The upstream whose OpenAPI document is served at `path`.
    pub(super) fn openapi_upstream(&self, path: &str) -> Option<usize> {
        self.openapi
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, u)| *u)
    }

    /// The OpenAPI document of an upstream's schema (fetched by reflection if need be).
    pub(super) async fn serve_openapi(&self, u: usize) -> Response<BoxBody> {
        let schema = Box::pin(self.schemas[u].rest_schema(&self.upstreams[u])).await;
        match schema {
            Some(schema) => {
                let mut res = Response::new(body::full(schema.openapi()));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res
            }
            None => {
                let status = Status::new(
                    Code::Unavailable,
                    format!(
                        "no schema for upstream {:?}: it offers no server reflection and has no descriptor set",
                        self.upstreams[u].name
                    ),
                );
                rest::error_response(&status, None, http::HeaderMap::new())
            }
        }
    }
}

/// What a REST lookup found.
enum RestLookup {
    Found(rest::RestCall, Target),
    WrongMethod(Vec<http::Method>),
    NotFound,
}

/// `/pkg.Service/Method`: two non-empty segments, as RPC paths are.
fn rpc_shaped(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .is_some_and(|(service, method)| {
            !service.is_empty() && !method.is_empty() && !method.contains('/')
        })
}
