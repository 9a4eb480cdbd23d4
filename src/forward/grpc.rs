//! Native gRPC callers: headers cleaned and the deadline re-encoded, messages and trailers
//! passed through.

use std::future::Future;

use bytes::Bytes;
use futures_util::FutureExt as _;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;

use super::call::{upstream_request, Call, Reply};
use crate::body::{BoxBody, CallerBody, End, Render, RenderBody, RequestBody};
use crate::protocol::grpc::CONTENT_TYPE_PROTO;

/// Forwards one native gRPC call. The request is on its way before this returns; the future
/// only waits for the answer.
pub(crate) fn forward(
    call: Call,
    req: Request<CallerBody>,
) -> impl Future<Output = Response<BoxBody>> + Send {
    // Chained, not awaited in an async block, so the call's future holds the send once.
    call.start(upstream(&call, req)).map(respond)
}

fn upstream(call: &Call, req: Request<CallerBody>) -> Request<BoxBody> {
    let (mut parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static(CONTENT_TYPE_PROTO));
    let headers = call.upstream_headers(std::mem::take(&mut parts.headers), content_type);
    let body = RequestBody::new(
        body,
        false,
        call.limit,
        call.failure.clone(),
        call.ctx.clone(),
    );
    upstream_request(&parts.uri, headers, body.boxed_unsync())
}

/// Renders a reply for a gRPC caller: headers, messages, trailers.
pub(crate) fn respond(reply: Reply) -> Response<BoxBody> {
    let content_type = reply
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static(CONTENT_TYPE_PROTO));
    let mut res =
        Response::new(RenderBody::new(reply.stream, GrpcRender, reply.ctx).boxed_unsync());
    *res.headers_mut() = reply.metadata;
    res.headers_mut().insert(header::CONTENT_TYPE, content_type);
    res
}

/// gRPC: frames unchanged, the end as HTTP/2 trailers.
struct GrpcRender;

impl Render for GrpcRender {
    fn end(&mut self, end: End) -> Frame<Bytes> {
        let mut trailers = HeaderMap::with_capacity(end.metadata.len() + 3);
        end.status.write_headers(&mut trailers);
        trailers.extend(end.metadata);
        Frame::trailers(trailers)
    }
}
