//! gRPC-Web calls: caller body decoded and checked on the way up; upstream messages passed
//! through (base64 per chunk in text mode) and the end written as one trailer frame.

use std::future::Future;

use bytes::Bytes;
use futures_util::future::{Either, FutureExt as _};
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use http_body::Frame;
use http_body_util::BodyExt as _;

use super::call::{upstream_request, Call, Reply};
use super::Json;
use crate::body::{BoxBody, CallerBody, End, Render, RenderBody, RequestBody};
use crate::protocol::compression::{self, Encoding};
use crate::protocol::grpc::{
    CONTENT_TYPE_JSON, CONTENT_TYPE_PROTO, GRPC_ACCEPT_ENCODING, GRPC_ENCODING,
};
use crate::protocol::grpc_web::{encode_text, trailer_frame, Mode};
use crate::protocol::Codec;

/// Forwards one gRPC-Web call; `json` says how JSON messages are handled. The request is on
/// its way before this returns; the future only waits for the answer.
pub(crate) fn forward(
    call: Call,
    mode: Mode,
    json: Option<Json>,
    req: Request<CallerBody>,
) -> impl Future<Output = Response<BoxBody>> + Send {
    let transcode = json.as_ref().and_then(Json::method);
    // A WebSocket call's body is a stream whatever the socket's HTTP version.
    let h1 = req.version() < Version::HTTP_2 && req.body().is_http();
    match upstream(&call, &mode, transcode, req, h1) {
        // Chained, not awaited in an async block, so the call's future holds the send once.
        Ok(r) => Either::Left(call.start_request(r, h1).map(move |reply| {
            // Messages transcoded on the way up are transcoded back.
            let reply = match json.as_ref().and_then(Json::method) {
                Some((method, _)) => reply.into_json(method),
                None => reply,
            };
            respond(&mode, reply)
        })),
        Err(status) => Either::Right(std::future::ready(respond(&mode, Reply::error(status)))),
    }
}

/// The upstream request: headers cleaned, body decoded (and transcoded) on the way.
fn upstream(
    call: &Call,
    mode: &Mode,
    transcode: Option<(&crate::protocol::json::Method, bool)>,
    req: Request<CallerBody>,
    h1: bool,
) -> Result<Request<RequestBody>, crate::protocol::grpc::Status> {
    let (mut parts, body) = req.into_parts();
    let content_type = HeaderValue::from_static(match (mode.codec, transcode) {
        (Codec::Json, None) => CONTENT_TYPE_JSON,
        _ => CONTENT_TYPE_PROTO,
    });
    let mut headers = call.upstream_headers(std::mem::take(&mut parts.headers), content_type);
    let mut body = RequestBody::new(
        body,
        mode.text_request,
        call.limit,
        call.failure.clone(),
        call.ctx.clone(),
    );
    if h1 {
        body = body.with_idle_timeout(call.body_timeout);
    }
    if let Some((method, ignore)) = transcode {
        // Messages are rewritten, so they travel uncompressed in both directions.
        let Some(encoding) = header_encoding(&headers, GRPC_ENCODING) else {
            let name = header_text(&headers, GRPC_ENCODING);
            return Err(compression::unsupported(&name));
        };
        headers.remove(GRPC_ENCODING);
        headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        body = body.recoding(
            encoding,
            Some(super::request_transcoder(method, ignore, &call.ctx)),
        );
    }
    // Browsers cannot decode per-message compression unless they asked for it.
    if !headers.contains_key(GRPC_ACCEPT_ENCODING) {
        headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    Ok(upstream_request(&parts.uri, headers, body))
}

/// The encoding a header names (absent means identity); `None` when unsupported.
pub(crate) fn header_encoding(
    headers: &http::HeaderMap,
    name: impl header::AsHeaderName,
) -> Option<Encoding> {
    match headers.get(name) {
        None => Some(Encoding::Identity),
        Some(v) => v.to_str().ok().and_then(Encoding::parse),
    }
}

/// A header's value as text, empty when absent.
pub(crate) fn header_text(headers: &http::HeaderMap, name: impl header::AsHeaderName) -> String {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}

/// Renders a reply for a gRPC-Web caller: HTTP 200, metadata as headers, messages, then one
/// trailer frame with the status and trailing metadata (also for Trailers-Only replies, so
/// status never hides in headers behind an empty trailer frame).
pub(crate) fn respond(mode: &Mode, reply: Reply) -> Response<BoxBody> {
    let render = GrpcWebRender {
        text: mode.text_response,
    };
    let mut res = Response::new(RenderBody::new(reply.stream, render, reply.ctx).boxed_unsync());
    let headers = res.headers_mut();
    *headers = reply.metadata;
    headers.insert(header::CONTENT_TYPE, mode.response_content_type.clone());
    res
}

/// gRPC-Web: frames unchanged, the end as a trailer frame; all of it base64 in text mode.
struct GrpcWebRender {
    text: bool,
}

impl GrpcWebRender {
    fn encode(&self, bytes: Bytes) -> Bytes {
        if self.text {
            encode_text(&bytes)
        } else {
            bytes
        }
    }
}

impl Render for GrpcWebRender {
    fn data(&mut self, data: Bytes) -> Bytes {
        self.encode(data)
    }

    fn end(&mut self, end: End) -> Frame<Bytes> {
        Frame::data(self.encode(trailer_frame(&end.status, &end.metadata)))
    }
}
