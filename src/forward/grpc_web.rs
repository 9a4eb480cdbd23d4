//! gRPC-Web calls: caller body decoded and checked on the way up; upstream messages passed
//! through (base64 per chunk in text mode) and the end written as one trailer frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::call::{upstream_request, Call, Reply};
use crate::body::{BoxBody, BoxError, Event, GrpcStream, RequestBody};
use crate::protocol::grpc::{CONTENT_TYPE_JSON, CONTENT_TYPE_PROTO};
use crate::protocol::grpc_web::{encode_text, trailer_frame, Mode};
use crate::protocol::Codec;

/// Forwards one gRPC-Web call.
pub(crate) async fn forward(call: Call, mode: Mode, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let content_type = HeaderValue::from_static(match mode.codec {
        Codec::Proto => CONTENT_TYPE_PROTO,
        Codec::Json => CONTENT_TYPE_JSON,
    });
    let mut headers = call.upstream_headers(&parts.headers, content_type);
    // Browsers cannot decode per-message compression unless they asked for it.
    if !headers.contains_key("grpc-accept-encoding") {
        headers.insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
    }
    let body = RequestBody::new(body, mode.text_request, call.limit, call.failure.clone());
    let reply = call
        .start(upstream_request(
            parts.uri.path(),
            headers,
            body.boxed_unsync(),
        ))
        .await;
    respond(&mode, reply)
}

/// Renders a reply for a gRPC-Web caller: HTTP 200, metadata as headers, messages, then one
/// trailer frame with the status and trailing metadata (also for Trailers-Only replies, so
/// status never hides in headers behind an empty trailer frame).
pub(crate) fn respond(mode: &Mode, reply: Reply) -> Response<BoxBody> {
    let mut res = Response::new(
        GrpcWebBody {
            stream: reply.stream,
            text: mode.text_response,
        }
        .boxed_unsync(),
    );
    let headers = res.headers_mut();
    *headers = reply.metadata;
    headers.insert(header::CONTENT_TYPE, mode.response_content_type.clone());
    res
}

struct GrpcWebBody {
    stream: GrpcStream,
    text: bool,
}

impl Body for GrpcWebBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let bytes = match this.stream.poll_event(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Event::Data(data))) => data,
            Poll::Ready(Some(Event::End(end))) => trailer_frame(&end.status, &end.metadata),
        };
        let bytes = if this.text {
            encode_text(&bytes)
        } else {
            bytes
        };
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }
}
