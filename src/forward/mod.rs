//! The proxy service: CORS, protocol detection, routing, then one forwarding function per
//! caller protocol, all translating through gRPC.

mod call;
mod connect;
mod grpc;
mod grpc_web;

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response};
use hyper::body::Incoming;

use self::call::{Call, Reply};
use crate::body::{self, BoxBody};
use crate::config::Config;
use crate::cors::CorsPolicy;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::{self, Protocol, Rejection};
use crate::routing::{RouteTable, Target};
use crate::upstream::UpstreamClient;

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub(crate) struct Proxy {
    routes: RouteTable,
    upstreams: Vec<Arc<UpstreamClient>>,
    cors: CorsPolicy,
    assets: Option<crate::assets::Assets>,
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
        Ok(Proxy {
            routes: RouteTable::new(config),
            upstreams,
            cors: CorsPolicy::new(config.cors.clone()),
            assets: config.assets.clone(),
        })
    }

    /// Handles one request. Never fails: every problem becomes a response in the caller's
    /// protocol.
    pub(crate) async fn handle(&self, req: Request<Incoming>) -> Response<BoxBody> {
        // Preflights are answered here; they never reach routing.
        if CorsPolicy::is_preflight(&req) {
            return self.cors.preflight(&req).map(|()| body::empty());
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut res = self.dispatch(req).await;
        self.cors.decorate(origin.as_ref(), res.headers_mut());
        res
    }

    async fn dispatch(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let protocol = match protocol::detect(&req) {
            Ok(p) => p,
            Err(rejection) => {
                // Plain GETs that are not Connect calls may be files of the demo page.
                let page = self.assets.as_ref().and_then(|a| a.serve(&req));
                return page.unwrap_or_else(|| reject(rejection));
            }
        };
        let target = self.route(&req);
        let path = req.uri().path();
        match protocol {
            Protocol::GrpcWeb(mode) => match target {
                Some(t) => grpc_web::forward(self.call(t, &req), mode, req).await,
                None => grpc_web::respond(&mode, Reply::error(no_route(path))),
            },
            Protocol::Grpc => match target {
                Some(t) => grpc::forward(self.call(t, &req), req).await,
                None => grpc::respond(Reply::error(no_route(path))),
            },
            Protocol::Connect(mode) => {
                let Some(t) = target else {
                    return connect::no_route(path);
                };
                match crate::protocol::connect::timeout(req.headers()) {
                    Ok(timeout) => {
                        let call = Call::new(self.upstreams[t.upstream].clone(), t, timeout);
                        connect::forward(call, mode, req).await
                    }
                    Err(status) => connect::early_error(mode, status),
                }
            }
        }
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
