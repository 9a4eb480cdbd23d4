//! The pipeline's last stage and the answers given before a call is forwarded: the finished
//! response (CORS headers, request id, observation), errors in the caller's protocol, and
//! refusals of requests that are not calls.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::{self, HeaderValue};
use http::Response;
use http_body_util::BodyExt as _;

use super::call::Reply;
use super::{connect, grpc, grpc_web, rest, websocket, Proxy};
use crate::body::{self, BoxBody};
use crate::observe::{request_id, CallContext, CallProtocol, ObservedBody};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::Method;
use crate::protocol::{Protocol, Rejection};

/// A response on its way, boxed (see [`Proxy::dispatch`]).
pub(super) type Responding = Pin<Box<dyn Future<Output = Response<BoxBody>> + Send>>;

pub(super) fn ready(res: Response<BoxBody>) -> Responding {
    Box::pin(std::future::ready(res))
}

/// The future of [`Proxy::handle`]: the response, finished by the pipeline's last stage.
pub(crate) struct Handling {
    pub(super) inner: Responding,
    pub(super) proxy: Arc<Proxy>,
    /// The caller's `origin`, for the CORS headers.
    pub(super) origin: Option<HeaderValue>,
    pub(super) ctx: Arc<CallContext>,
}

impl Future for Handling {
    type Output = Result<Response<BoxBody>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(self.inner.as_mut().poll(cx));
        let (mut parts, body) = res.into_parts();
        self.proxy
            .cors
            .decorate(self.origin.as_ref(), &mut parts.headers);
        // An accepted WebSocket upgrade: the call goes on over the socket, whose session
        // finishes (and observes) the call's own response.
        if parts.extensions.remove::<websocket::Accepted>().is_some() {
            parts
                .headers
                .insert(request_id::X_REQUEST_ID, self.ctx.request_id.clone());
            return Poll::Ready(Ok(Response::from_parts(parts, body)));
        }
        let body = self.proxy.finish(&mut parts, body, &self.ctx);
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

impl Proxy {
    /// The pipeline's last stage: the request id on the response, and the observe stage
    /// (metrics and the access log) when the response body is over.
    pub(super) fn finish(
        &self,
        parts: &mut http::response::Parts,
        body: BoxBody,
        ctx: &Arc<CallContext>,
    ) -> BoxBody {
        parts.headers.insert(
            request_id::X_REQUEST_ID,
            request_id::for_header(&ctx.request_id),
        );
        ctx.set_http_status(parts.status);
        // The observe stage: bytes out counted, and how the call ended recorded, until the
        // response is over.
        if self.observer.is_enabled() {
            ObservedBody::new(body, ctx.clone()).boxed_unsync()
        } else {
            body
        }
    }
}

/// The protocol label of a classified call.
pub(super) fn call_protocol(p: &Protocol) -> CallProtocol {
    match p {
        Protocol::GrpcWeb(m) if m.text_request || m.text_response => CallProtocol::GrpcWebText,
        Protocol::GrpcWeb(_) => CallProtocol::GrpcWeb,
        Protocol::Grpc => CallProtocol::Grpc,
        Protocol::Connect(_) => CallProtocol::Connect,
        Protocol::WebSocket => CallProtocol::WebSocket,
        Protocol::Rest(_) => CallProtocol::Rest,
    }
}

/// The rewriting of request messages from JSON to protobuf for `method`; a message that fails
/// is counted as a transcoding error of the call.
pub(crate) fn request_transcoder(
    method: &Method,
    ignore_unknown_fields: bool,
    ctx: &Arc<CallContext>,
) -> body::Transform {
    let m = method.clone();
    let ctx = ctx.clone();
    Arc::new(move |msg: bytes::Bytes, out: &mut Vec<u8>| {
        let proto = m.request_to_proto(&msg, ignore_unknown_fields);
        match proto {
            Ok(p) => {
                out.extend_from_slice(&p);
                Ok(())
            }
            Err(e) => {
                ctx.set_transcoding_failed();
                Err(e)
            }
        }
    })
}

/// A call that ends before it is forwarded, answered in its caller's protocol (`retry-after`
/// in whole seconds, rounded up, when given).
pub(crate) fn error_response(
    protocol: &Protocol,
    status: Status,
    retry_after: Option<std::time::Duration>,
) -> Response<BoxBody> {
    let mut res = match protocol {
        Protocol::GrpcWeb(mode) => grpc_web::respond(mode, Reply::error(status)),
        Protocol::Grpc => grpc::respond(Reply::error(status)),
        Protocol::Connect(mode) => connect::early_error(*mode, status),
        // What the socket carries back: gRPC-Web binary (see `websocket`).
        Protocol::WebSocket => grpc_web::respond(&websocket::reply_mode(), Reply::error(status)),
        Protocol::Rest(_) => rest::error_response(&status, None, http::HeaderMap::new()),
    };
    if let Some(after) = retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

pub(super) fn no_route(path: &str) -> Status {
    Status::new(Code::Unimplemented, format!("no route for {path}"))
}

pub(super) fn reject(r: Rejection) -> Response<BoxBody> {
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
