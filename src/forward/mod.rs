//! The proxy service: CORS, protocol detection, routing, then one forwarding function per
//! caller protocol, all translating through gRPC.

mod answer;
mod call;
mod connect;
mod grpc;
mod grpc_web;
mod rest;
mod rest_dispatch;
mod websocket;

use std::sync::Arc;
use std::task::ready;
use std::time::SystemTime;

use http::header::{self};
use http::{Request, Response};
use hyper::body::Incoming;

use self::answer::{call_protocol, no_route, ready, reject, Responding};
pub(crate) use self::answer::{error_response, request_transcoder, Handling};
use self::call::{Call, Reply};
use crate::body::{self, BoxBody, CallerBody};
use crate::config::Config;
use crate::observe::methods::GrpcType;
use crate::observe::{request_id, CallContext, CallProtocol, ConnInfo, Observer};
use crate::policy::cors::CorsPolicy;
use crate::policy::forwarded::Forwarded;
use crate::policy::{self, RoutePolicies};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::{Method, Schema};
use crate::protocol::Codec;
use crate::protocol::{self, Protocol, Rejection};
use crate::routing::{RouteTable, Target};
use crate::upstream::schema::{self, Plan, Schemas};
use crate::upstream::UpstreamClient;

/// How the messages of a JSON call are handled.
#[derive(Debug, Clone)]
pub(crate) enum Json {
    /// Sent unchanged (`application/grpc+json`).
    Passthrough,
    /// Transcoded message by message with the method's descriptors.
    Transcode(Method, bool),
}

impl Json {
    /// The transcoding method, when transcoding.
    pub(crate) fn method(&self) -> Option<(&Method, bool)> {
        match self {
            Json::Passthrough => None,
            Json::Transcode(m, ignore) => Some((m, *ignore)),
        }
    }
}

/// Everything a request needs, built from one config snapshot and shared by all connections.
/// A reload builds a new one beside it; calls in flight keep the one they started with.
#[derive(Debug)]
pub(crate) struct Proxy {
    /// Caller-side limits (read by connections when they are accepted).
    pub(crate) limits: crate::config::Limits,
    routes: RouteTable,
    upstreams: Vec<Arc<UpstreamClient>>,
    cors: CorsPolicy,
    forwarded: Forwarded,
    policies: RoutePolicies,
    observer: Arc<Observer>,
    assets: Option<crate::assets::Assets>,
    /// Schema sources per upstream.
    schemas: Vec<Arc<Schemas>>,
    /// Descriptor sets per route (when the route has its own).
    route_schemas: Vec<Option<Schema>>,
    /// The WebSocket transport's settings.
    websocket: crate::config::WebSocket,
    /// Upstreams whose schemas' REST rules are served (`rest`, and a schema source).
    rest_upstreams: Vec<usize>,
    /// Each route's `rest` override.
    route_rest: Vec<Option<bool>>,
    /// `GET <path>` serves the OpenAPI document of that upstream.
    openapi: Vec<(String, usize)>,
}

impl Proxy {
    /// Builds the runtime of `config`. Upstreams whose settings are the same as in
    /// `previous` (the snapshot being replaced) keep their clients, and so their connections.
    pub(crate) fn build(config: &Config, previous: Option<&Proxy>) -> Result<Proxy, String> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                // An unchanged upstream keeps its client (pools, health, counters) and reads
                // its TLS files again for the connections it opens from now on.
                let kept = previous
                    .and_then(|p| p.upstreams.iter().find_map(|c| c.carry_over(u)))
                    .transpose()
                    .map_err(|e| format!("upstream {:?}: {e}", u.name))?;
                match kept {
                    Some(client) => Ok(client),
                    None => UpstreamClient::new(u.clone())
                        .map(Arc::new)
                        .map_err(|e| format!("upstream {:?}: {e}", u.name)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let schemas = config
            .upstreams
            .iter()
            .map(|u| {
                Schemas::new(u)
                    .map(Arc::new)
                    .map_err(|e| format!("upstream {:?}: json.descriptors: {e}", u.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let route_schemas = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.descriptors
                    .as_deref()
                    .map(schema::load)
                    .transpose()
                    .map_err(|e| format!("routes[{i}].descriptors: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rest_upstreams: Vec<usize> = config
            .upstreams
            .iter()
            .enumerate()
            .filter(|(_, u)| u.serves_rest())
            .map(|(i, _)| i)
            .collect();
        let openapi = config
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.openapi.clone().map(|p| (p, i)))
            .collect();
        Ok(Proxy {
            limits: config.limits,
            schemas,
            route_schemas,
            route_rest: config.routes.iter().map(|r| r.rest).collect(),
            rest_upstreams,
            openapi,
            routes: RouteTable::new(config),
            upstreams,
            cors: CorsPolicy::new(config),
            forwarded: Forwarded::new(config),
            policies: RoutePolicies::new(config, previous.map(|p| &p.policies))?,
            observer: Arc::new(Observer::build(config, previous.map(|p| &*p.observer))?),
            assets: config.assets.clone(),
            websocket: config.websocket,
        })
    }

    /// The observe stage of this snapshot.
    pub(crate) fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// The series built at scrape time from this snapshot's state: each upstream's endpoints
    /// and counters, and the rate-limit store's errors.
    pub(crate) fn scrape_families(&self) -> Vec<prometheus::proto::MetricFamily> {
        let stats: Vec<_> = self.upstreams.iter().map(|u| u.stats()).collect();
        let mut families = crate::observe::upstreams::families(&stats);
        families.extend(crate::observe::upstreams::store_errors(
            self.policies.store_errors(),
        ));
        families
    }

    /// Handles one request: the pipeline every call goes through, in order. Never fails:
    /// every problem becomes a response in the caller's protocol. On the usual paths the call
    /// is classified, routed and sent upstream before this returns; the future waits for the
    /// answer and finishes the response (CORS headers, request id, observation).
    pub(crate) fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
    ) -> Handling {
        let (mut parts, body) = req.into_parts();
        // Request id: the caller's or a new one. It goes upstream with the call (it stays in
        // the headers) and comes back on the response.
        let request_id = request_id::ensure(&mut parts.headers);
        // Who the client is, before any stage reads it: forwarding headers follow
        // `trusted_proxies`; identity headers callers could forge are removed.
        let client_ip = self.forwarded.apply(&mut parts.headers, conn);
        // Trace context: a caller's trace continues with the proxy's own span (the upstream
        // gets a new `traceparent`); without one, a trace starts when tracing is configured.
        let wall = SystemTime::now();
        let trace = self
            .observer
            .begin_trace(&mut parts.headers, wall, parts.uri.path());
        // The call's context; when the last holder drops it, the observe stage sees the end
        // (metrics, access log line, span).
        let ctx = Arc::new(CallContext::new(
            request_id,
            conn.clone(),
            client_ip,
            &parts,
            self.observer.clone(),
            trace,
            wall,
        ));
        let origin = parts.headers.get(header::ORIGIN).cloned();
        let req = Request::from_parts(parts, body);
        // CORS preflights are answered here: they never reach routing, and never need
        // credentials.
        let inner = if CorsPolicy::is_preflight(&req) {
            let answer = self.cors.preflight(&req);
            if answer.status() == http::StatusCode::FORBIDDEN {
                self.observer.cors_refused("preflight");
            }
            ready(answer.map(|()| body::empty()))
        // Cross-site protection: a request the browser marks cross-site, from an origin not
        // allowed, is refused before it is classified, routed or sent anywhere. Only a
        // top-level navigation to something that is not a call (the demo page) may come
        // from anywhere.
        } else if let Err(why) = policy::origin::check(&self.cors, req.headers(), req.uri())
            .or_else(|why| {
                match policy::origin::is_navigation(req.headers())
                    && protocol::detect(&req).is_err()
                {
                    true => Ok(()),
                    false => Err(why),
                }
            })
        {
            self.observer.cors_refused("cross_site");
            ready(self.refuse_cross_site(req, why, &ctx))
        } else {
            self.dispatch(req, &ctx)
        };
        Handling {
            inner,
            proxy: self.clone(),
            origin,
            ctx,
        }
    }

    /// Classify, then the rest of the pipeline ([`Proxy::admit`]). A WebSocket upgrade is
    /// answered here and continues on its socket: its call's metadata arrives in the socket's
    /// first message, and only then is it routed and admitted (see [`websocket`]). Requests no
    /// protocol claims by content type are matched against the REST rules (which may wait for
    /// a schema; see [`rest_dispatch`]).
    fn dispatch(self: &Arc<Self>, req: Request<Incoming>, ctx: &Arc<CallContext>) -> Responding {
        if req.method() == http::Method::GET {
            if let Some(u) = self.openapi_upstream(req.uri().path()) {
                let proxy = self.clone();
                return Box::pin(async move { proxy.serve_openapi(u).await });
            }
        }
        match protocol::classify(&req) {
            protocol::Classified::Call(detected) => self.dispatch_detected(detected, req, ctx),
            protocol::Classified::Other(fallback) if self.rest_upstreams.is_empty() => {
                self.dispatch_detected(fallback, req, ctx)
            }
            protocol::Classified::Other(fallback) => {
                let proxy = self.clone();
                let ctx = ctx.clone();
                Box::pin(async move { proxy.dispatch_rest(fallback, req, &ctx).await })
            }
        }
    }

    /// A request whose protocol is decided (or refused): route it by its path.
    fn dispatch_detected(
        self: &Arc<Self>,
        detected: Result<Protocol, Rejection>,
        req: Request<Incoming>,
        ctx: &Arc<CallContext>,
    ) -> Responding {
        let protocol = match detected {
            Ok(p) => p,
            Err(rejection) => {
                // Plain GETs that are not Connect calls may be files of the demo page.
                let page = self.assets.as_ref().and_then(|a| a.serve(&req));
                return ready(page.unwrap_or_else(|| reject(rejection)));
            }
        };
        ctx.set_protocol(call_protocol(&protocol));
        if let Protocol::Connect(mode) = &protocol {
            // A Connect unary call is a unary method; streams do not say which kind.
            if mode.kind != crate::protocol::connect::Kind::Stream {
                let _ = ctx.grpc_type.set(GrpcType::Unary);
            }
        }
        if protocol == Protocol::WebSocket {
            return ready(websocket::upgrade(self, req, ctx));
        }
        self.admit(protocol, req.map(CallerBody::Http), ctx)
    }

    /// Route, apply the route's policies, forward. Each protocol's forwarding future is boxed
    /// on its own: a call then holds only the state of its own protocol. The proto paths of
    /// gRPC-Web and gRPC have nothing to wait for before the upstream request goes out, so (on
    /// routes without policies) they are built here.
    fn admit(
        self: &Arc<Self>,
        protocol: Protocol,
        req: Request<CallerBody>,
        ctx: &Arc<CallContext>,
    ) -> Responding {
        let Some(target) = self.route(req.uri().path(), &req) else {
            let status = no_route(req.uri().path());
            ctx.set_code(status.code);
            self.observer.started(ctx);
            return ready(match &protocol {
                Protocol::Connect(_) => connect::not_found(status),
                p => error_response(p, status, None),
            });
        };
        self.dispatch_routed(protocol, target, req, ctx)
    }

    /// Route policies, then forwarding, for a routed call.
    fn dispatch_routed(
        self: &Arc<Self>,
        protocol: Protocol,
        target: Target,
        req: Request<CallerBody>,
        ctx: &Arc<CallContext>,
    ) -> Responding {
        let _ = ctx
            .upstream
            .set(self.upstreams[target.upstream].name.clone());
        self.observer.started(ctx);
        match self.policies.get(target.route) {
            None => self.forward(protocol, target, req, ctx),
            Some(_) => {
                // Authentication, then the rate limit: only routes that configure them pay for
                // the await.
                let proxy = self.clone();
                let ctx = ctx.clone();
                Box::pin(async move {
                    let (mut parts, body) = req.into_parts();
                    let Some(policy) = proxy.policies.get(target.route) else {
                        return reject(Rejection {
                            status: http::StatusCode::INTERNAL_SERVER_ERROR,
                            message: "route policy missing".into(),
                            header: None,
                        });
                    };
                    if let Err(refusal) = policy.admit(&mut parts, &ctx).await {
                        ctx.set_code(refusal.status.code);
                        proxy
                            .observer
                            .policy_refused(crate::observe::methods::code_name(
                                refusal.status.code,
                            ));
                        body::discard(body);
                        return error_response(&protocol, refusal.status, refusal.retry_after);
                    }
                    let req = Request::from_parts(parts, body);
                    proxy.forward(protocol, target, req, &ctx).await
                })
            }
        }
    }

    /// Forwards a classified, routed and admitted call in its protocol.
    fn forward(
        self: &Arc<Self>,
        protocol: Protocol,
        t: Target,
        req: Request<CallerBody>,
        ctx: &Arc<CallContext>,
    ) -> Responding {
        match protocol {
            Protocol::GrpcWeb(mode) => self.forward_grpc_web(mode, t, req, ctx),
            // gRPC-Web over the socket, in the mode its metadata names.
            Protocol::WebSocket => match websocket::call_mode(req.headers()) {
                Ok(mode) => self.forward_grpc_web(mode, t, req, ctx),
                Err(status) => {
                    ctx.set_code(status.code);
                    ready(error_response(&Protocol::WebSocket, status, None))
                }
            },
            Protocol::Grpc => Box::pin(grpc::forward(self.call(t, &req, ctx), req)),
            Protocol::Rest(mode) => {
                let mut req = req;
                let Some(rc) = req.extensions_mut().remove::<rest::RestCall>() else {
                    let status = Status::new(Code::Internal, "REST call without its rule");
                    ctx.set_code(status.code);
                    return ready(rest::error_response(&status, None, http::HeaderMap::new()));
                };
                // `connect-timeout-ms` (as Connect) or `grpc-timeout`, capped by the route.
                let timeout = match crate::protocol::connect::timeout(req.headers()) {
                    Ok(Some(t)) => Some(t),
                    Ok(None) => call::grpc_timeout(req.headers()),
                    Err(status) => {
                        ctx.set_code(status.code);
                        return ready(rest::error_response(&status, None, http::HeaderMap::new()));
                    }
                };
                let call = Call::new(self.upstreams[t.upstream].clone(), t, timeout, ctx.clone());
                Box::pin(rest::forward(call, mode, rc, req))
            }
            Protocol::Connect(mode) => {
                let timeout = match crate::protocol::connect::timeout(req.headers()) {
                    Ok(timeout) => timeout,
                    Err(status) => {
                        ctx.set_code(status.code);
                        return ready(connect::early_error(mode, status));
                    }
                };
                let call = Call::new(self.upstreams[t.upstream].clone(), t, timeout, ctx.clone());
                let proxy = self.clone();
                Box::pin(async move {
                    let path = req.uri().path();
                    let json = match mode.codec {
                        Codec::Proto => None,
                        Codec::Json => match proxy.json_plan(t, path, &call.ctx).await {
                            Ok(json) => Some(json),
                            // A method the schema does not know: answered like a Connect
                            // server answers an unknown path.
                            Err(status) if status.code == Code::Unimplemented => {
                                call.ctx.set_code(status.code);
                                return connect::not_found(status);
                            }
                            Err(status) => {
                                call.ctx.set_code(status.code);
                                return connect::early_error(mode, status);
                            }
                        },
                    };
                    if let Some(refusal) = proxy.check_connect_shape(t, path, mode, json.as_ref()) {
                        return refusal;
                    }
                    connect::forward(call, mode, json, req).await
                })
            }
        }
    }

    /// Forwards a gRPC-Web call; JSON ones once their schema is known.
    fn forward_grpc_web(
        self: &Arc<Self>,
        mode: crate::protocol::grpc_web::Mode,
        t: Target,
        req: Request<CallerBody>,
        ctx: &Arc<CallContext>,
    ) -> Responding {
        if mode.codec == Codec::Proto {
            return Box::pin(grpc_web::forward(self.call(t, &req, ctx), mode, None, req));
        }
        let proxy = self.clone();
        let ctx = ctx.clone();
        Box::pin(async move {
            let json = match proxy.json_plan(t, req.uri().path(), &ctx).await {
                Ok(json) => json,
                Err(status) => {
                    ctx.set_code(status.code);
                    return grpc_web::respond(&mode, Reply::error(status));
                }
            };
            let call = proxy.call(t, &req, &ctx);
            grpc_web::forward(call, mode, Some(json), req).await
        })
    }

    /// The answer to a request refused as cross-site: `permission_denied` in the caller's
    /// protocol when it is a call, else 403.
    fn refuse_cross_site(
        &self,
        req: Request<Incoming>,
        why: String,
        ctx: &CallContext,
    ) -> Response<BoxBody> {
        let status = Status::new(Code::PermissionDenied, why);
        ctx.set_code(status.code);
        let detected = protocol::detect(&req);
        body::discard(req.into_body());
        match detected {
            // A refused upgrade is never upgraded: the socket would carry the refusal.
            Ok(Protocol::WebSocket) => {
                ctx.set_protocol(CallProtocol::WebSocket);
                reject(Rejection {
                    status: http::StatusCode::FORBIDDEN,
                    message: status.message,
                    header: None,
                })
            }
            Ok(p) => {
                ctx.set_protocol(call_protocol(&p));
                error_response(&p, status, None)
            }
            Err(_) => reject(Rejection {
                status: http::StatusCode::FORBIDDEN,
                message: status.message,
                header: None,
            }),
        }
    }

    /// How a JSON call to `path` is handled: passed through or transcoded, or why it fails.
    /// A schema that describes the method also gives the call its kind (for metrics).
    async fn json_plan(&self, t: Target, path: &str, ctx: &CallContext) -> Result<Json, Status> {
        // Boxed: only JSON calls (and Connect calls with a schema) get here, and the plan may
        // fetch descriptors by reflection, a large future.
        let plan = Box::pin(self.schemas[t.upstream].plan(
            &self.upstreams[t.upstream],
            self.route_schemas[t.route].as_ref(),
            path,
        ));
        let plan = plan.await;
        match plan {
            Plan::Passthrough => Ok(Json::Passthrough),
            Plan::Transcode {
                method,
                ignore_unknown_fields,
            } => {
                let kind = GrpcType::of(method.client_streaming(), method.server_streaming());
                let _ = ctx.grpc_type.set(kind);
                Ok(Json::Transcode(method, ignore_unknown_fields))
            }
            Plan::Fail(status) => Err(status),
        }
    }

    /// When the schema of the method is at hand: Connect GET only for methods without side
    /// effects (else 405), unary content types only for unary methods and streaming content
    /// types only for streaming ones (else 415).
    fn check_connect_shape(
        &self,
        t: Target,
        path: &str,
        mode: crate::protocol::connect::Mode,
        json: Option<&Json>,
    ) -> Option<Response<BoxBody>> {
        use crate::protocol::connect::Kind;
        // Proto calls never wait for a schema: only one at hand is consulted.
        let method = match json {
            Some(j) => j.method().map(|(m, _)| m.clone()),
            None => match &self.route_schemas[t.route] {
                Some(schema) => schema.method(path),
                None => self.schemas[t.upstream].peek(path),
            },
        }?;
        let streaming = method.client_streaming() || method.server_streaming();
        let (status, message, allow) = match mode.kind {
            Kind::Get if !method.no_side_effects() => (
                http::StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} has side effects; call it with POST (GET is only for methods with idempotency_level = NO_SIDE_EFFECTS)"),
                Some((header::ALLOW, "POST")),
            ),
            Kind::Get | Kind::Unary if streaming => (
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{path} is a streaming method; use application/connect+proto or application/connect+json"),
                Some((header::HeaderName::from_static("accept-post"), "application/connect+proto, application/connect+json")),
            ),
            Kind::Stream if !streaming => (
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{path} is a unary method; use application/proto or application/json"),
                Some((header::HeaderName::from_static("accept-post"), "application/proto, application/json")),
            ),
            _ => return None,
        };
        Some(reject(Rejection {
            status,
            message,
            header: allow,
        }))
    }

    /// The route of a call to `path` (the request's own path, or a REST call's method path)
    /// with the request's host.
    fn route<B>(&self, path: &str, req: &Request<B>) -> Option<Target> {
        let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        self.routes.resolve(path, host)
    }

    fn call<B>(&self, target: Target, req: &Request<B>, ctx: &Arc<CallContext>) -> Call {
        Call::new(
            self.upstreams[target.upstream].clone(),
            target,
            call::grpc_timeout(req.headers()),
            ctx.clone(),
        )
    }
}
