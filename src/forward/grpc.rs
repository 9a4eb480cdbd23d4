//! Native gRPC callers: headers cleaned and the deadline re-encoded, messages and trailers
//! passed through.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use super::call::{upstream_request, Call, Reply};
use crate::body::{BoxBody, BoxError, Event, GrpcStream, RequestBody};
use crate::protocol::grpc::CONTENT_TYPE_PROTO;

/// Forwards one native gRPC call.
pub(crate) async fn forward(call: Call, req: Request<Incoming>) -> Response<BoxBody> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static(CONTENT_TYPE_PROTO));
    let headers = call.upstream_headers(&parts.headers, content_type);
    let body = RequestBody::new(body, false, call.limit, call.failure.clone());
    let reply = call
        .start(upstream_request(
            parts.uri.path(),
            headers,
            body.boxed_unsync(),
        ))
        .await;
    respond(reply)
}

/// Renders a reply for a gRPC caller: headers, messages, trailers.
pub(crate) fn respond(reply: Reply) -> Response<BoxBody> {
    let content_type = reply
        .content_type
        .clone()
        .unwrap_or(HeaderValue::from_static(CONTENT_TYPE_PROTO));
    let mut res = Response::new(
        GrpcBody {
            stream: reply.stream,
        }
        .boxed_unsync(),
    );
    *res.headers_mut() = reply.metadata;
    res.headers_mut().insert(header::CONTENT_TYPE, content_type);
    res
}

struct GrpcBody {
    stream: GrpcStream,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.stream.poll_event(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Event::Data(data))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Event::End(end))) => {
                let mut trailers = HeaderMap::with_capacity(end.metadata.len() + 3);
                end.status.write_headers(&mut trailers);
                trailers.extend(end.metadata);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
        }
    }
}
