//! The proxy service: CORS, protocol detection, routing, then one forwarding function per
//! caller protocol, all translating through gRPC.

mod call;
mod connect;
mod grpc;
mod grpc_web;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use self::call::{Call, Reply};
use crate::body::{self, BoxBody};
use crate::config::Config;
use crate::cors::CorsPolicy;
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

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct Proxy {
    routes: RouteTable,
    upstreams: Vec<Arc<UpstreamClient>>,
    cors: CorsPolicy,
    assets: Option<crate::assets::Assets>,
    /// Schema sources per upstream.
    schemas: Vec<Arc<Schemas>>,
    /// Descriptor sets per route (when the route has its own).
    route_schemas: Vec<Option<Schema>>,
}

impl Proxy {
    pub(crate) fn new(config: &Config) -> Result<Proxy, String> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                UpstreamClient::new(u.clone())
                    .map(Arc::new)
                    .map_err(|e| format!("upstream {:?}: {e}", u.name))
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
        Ok(Proxy {
            schemas,
            route_schemas,
            routes: RouteTable::new(config),
            upstreams,
            cors: CorsPolicy::new(config.cors.clone()),
            assets: config.assets.clone(),
        })
    }

    /// Handles one request. Never fails: every problem becomes a response in the caller's
    /// protocol. The request is classified, routed and (on the usual paths) sent upstream
    /// before this returns; the future waits for the answer and adds the CORS headers.
    pub(crate) fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Handling {
        // Preflights are answered here; they never reach routing.
        if CorsPolicy::is_preflight(&req) {
            let res = self.cors.preflight(&req).map(|()| body::empty());
            return Handling {
                inner: ready(res),
                cors: None,
            };
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        Handling {
            inner: self.dispatch(req),
            cors: Some((self.clone(), origin)),
        }
    }

    /// Each protocol's forwarding future is boxed on its own: a call then holds only the state
    /// of its own protocol, not room for the largest of them. The proto paths of gRPC-Web and
    /// gRPC have nothing to wait for before the upstream request goes out, so they are built
    /// here; the others (schemas to consult first) are async throughout.
    fn dispatch(self: &Arc<Self>, req: Request<Incoming>) -> Responding {
        let protocol = match protocol::detect(&req) {
            Ok(p) => p,
            Err(rejection) => {
                // Plain GETs that are not Connect calls may be files of the demo page.
                let page = self.assets.as_ref().and_then(|a| a.serve(&req));
                return ready(page.unwrap_or_else(|| reject(rejection)));
            }
        };
        let target = self.route(&req);
        let path = req.uri().path();
        match protocol {
            Protocol::GrpcWeb(mode) => {
                let Some(t) = target else {
                    return ready(grpc_web::respond(&mode, Reply::error(no_route(path))));
                };
                if mode.codec == Codec::Proto {
                    return Box::pin(grpc_web::forward(self.call(t, &req), mode, None, req));
                }
                let proxy = self.clone();
                Box::pin(async move {
                    let json = match proxy.json_plan(t, req.uri().path()).await {
                        Ok(json) => json,
                        Err(status) => return grpc_web::respond(&mode, Reply::error(status)),
                    };
                    let call = proxy.call(t, &req);
                    grpc_web::forward(call, mode, Some(json), req).await
                })
            }
            Protocol::Grpc => match target {
                Some(t) => Box::pin(grpc::forward(self.call(t, &req), req)),
                None => ready(grpc::respond(Reply::error(no_route(path)))),
            },
            Protocol::Connect(mode) => {
                let Some(t) = target else {
                    return ready(connect::no_route(path));
                };
                let timeout = match crate::protocol::connect::timeout(req.headers()) {
                    Ok(timeout) => timeout,
                    Err(status) => return ready(connect::early_error(mode, status)),
                };
                let call = Call::new(self.upstreams[t.upstream].clone(), t, timeout);
                let proxy = self.clone();
                Box::pin(async move {
                    let path = req.uri().path();
                    let json = match mode.codec {
                        Codec::Proto => None,
                        Codec::Json => match proxy.json_plan(t, path).await {
                            Ok(json) => Some(json),
                            // A method the schema does not know: answered like a Connect
                            // server answers an unknown path.
                            Err(status) if status.code == Code::Unimplemented => {
                                return connect::not_found(status)
                            }
                            Err(status) => return connect::early_error(mode, status),
                        },
                    };
                    if let Some(refusal) = proxy
                        .check_connect_shape(t, path, mode, json.as_ref())
                        .await
                    {
                        return refusal;
                    }
                    connect::forward(call, mode, json, req).await
                })
            }
        }
    }

    /// How a JSON call to `path` is handled: passed through or transcoded, or why it fails.
    async fn json_plan(&self, t: Target, path: &str) -> Result<Json, Status> {
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
            } => Ok(Json::Transcode(method, ignore_unknown_fields)),
            Plan::Fail(status) => Err(status),
        }
    }

    /// When the schema of the method is known: Connect GET only for methods without side
    /// effects (else 405), unary content types only for unary methods and streaming content
    /// types only for streaming ones (else 415).
    async fn check_connect_shape(
        &self,
        t: Target,
        path: &str,
        mode: crate::protocol::connect::Mode,
        json: Option<&Json>,
    ) -> Option<Response<BoxBody>> {
        use crate::protocol::connect::Kind;
        let method = match json {
            Some(j) => j.method().map(|(m, _)| m.clone()),
            None if self.schemas[t.upstream].has_source()
                || self.route_schemas[t.route].is_some() =>
            {
                match self.json_plan(t, path).await {
                    Ok(j) => j.method().map(|(m, _)| m.clone()),
                    Err(_) => None,
                }
            }
            None => None,
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

    fn route<B>(&self, req: &Request<B>) -> Option<Target> {
        let host = req.uri().authority().map(|a| a.as_str()).or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        self.routes.resolve(req.uri().path(), host)
    }

    fn call<B>(&self, target: Target, req: &Request<B>) -> Call {
        Call::new(
            self.upstreams[target.upstream].clone(),
            target,
            call::grpc_timeout(req.headers()),
        )
    }
}

/// A response on its way, boxed (see [`Proxy::dispatch`]).
type Responding = Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>;

fn ready(res: Response<BoxBody>) -> Responding {
    Box::pin(std::future::ready(res))
}

/// The future of [`Proxy::handle`]: the response, with the CORS headers added.
pub(crate) struct Handling {
    inner: Responding,
    /// The policy and the caller's `origin`, for the CORS headers (none on preflights).
    cors: Option<(Arc<Proxy>, Option<HeaderValue>)>,
}

impl Future for Handling {
    type Output = Result<Response<BoxBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut res = ready!(self.inner.as_mut().poll(cx));
        if let Some((proxy, origin)) = self.cors.take() {
            proxy.cors.decorate(origin.as_ref(), res.headers_mut());
        }
        Poll::Ready(Ok(res))
    }
}

fn no_route(path: &str) -> Status {
    Status::new(Code::Unimplemented, format!("no route for {path}"))
}

fn reject(r: Rejection) -> Response<BoxBody> {
    let mut res = Response::new(body::full(r.message + "\n"));
    *res.status_mut() = r.status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some((name, value)) = r.header {
        res.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    res
}
