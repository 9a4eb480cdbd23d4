//! REST calls (`google.api.http` rules): the request's path, query and JSON body become the
//! method's protobuf message; the answer comes back as JSON with the response metadata and
//! trailers as headers, or as an error object with the matching HTTP status. Server streams
//! answer NDJSON or Server-Sent Events once their first message (or their end) is there, so a
//! stream that fails before any message gets an HTTP error status like a unary call.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;

use super::call::{upstream_request, Call};
use super::connect::{collect, unary_payload};
use crate::body::{self, BoxBody, BoxError, CallerBody, End, Event, Render, RenderBody};
use crate::protocol::compression::Encoding;
use crate::protocol::grpc::frame::{self, HEADER_LEN};
use crate::protocol::grpc::{
    Code, Status, CONTENT_TYPE_PROTO, GRPC_ACCEPT_ENCODING, GRPC_ENCODING,
};
use crate::protocol::json::Schema;
use crate::protocol::rest::{self, message, Binding, Mode};

/// A request matched to a binding, on its way through routing and policies.
#[derive(Debug, Clone)]
pub(crate) struct RestCall {
    pub(crate) binding: Arc<Binding>,
    /// The raw path segments the binding matched.
    pub(crate) segments: Vec<String>,
    /// The schema the binding is from (for error details).
    pub(crate) schema: Schema,
    pub(crate) ignore_unknown_fields: bool,
}

/// Forwards one REST call.
pub(crate) async fn forward(
    call: Call,
    mode: Mode,
    rc: RestCall,
    req: Request<CallerBody>,
) -> Response<BoxBody> {
    let (mut parts, body) = req.into_parts();
    let binding = &rc.binding;
    let method = &binding.method;
    // Read within the call's deadline, as a Connect unary body is.
    let reading = super::connect::read_body(&call, &parts.headers, body);
    let read = match call.deadline {
        Some(d) => tokio::time::timeout_at(d, reading)
            .await
            .unwrap_or_else(|_| Err(body::deadline_exceeded())),
        None => reading.await,
    };
    let request = match read {
        Ok(body) => message::request(
            binding,
            &rc.segments,
            parts.uri.query(),
            &body.contiguous(),
            rc.ignore_unknown_fields,
        ),
        Err(status) => Err(status),
    };
    let request = match request {
        Ok(r) => r,
        Err(status) => return error(&call, &status, Some(&rc.schema), HeaderMap::new()),
    };
    let mut headers = call.upstream_headers(
        std::mem::take(&mut parts.headers),
        HeaderValue::from_static(CONTENT_TYPE_PROTO),
    );
    // Messages are rewritten as JSON, so they travel uncompressed.
    headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    let header = Bytes::copy_from_slice(&frame::header(0, request.len()));
    let upstream = upstream_request(
        &method.uri(),
        headers,
        body::chunks([header, request].into_iter().collect()),
    );
    drop(parts);
    let reply = call.start(upstream).await;
    let mut metadata = reply.metadata;
    let encoding = super::grpc_web::header_encoding(&metadata, GRPC_ENCODING);
    metadata.remove(GRPC_ENCODING);
    metadata.remove(GRPC_ACCEPT_ENCODING);
    if !method.server_streaming() {
        return unary(&call, &rc, metadata, reply.stream, encoding).await;
    }
    let Some(encoding) = encoding else {
        let status = Status::new(Code::Internal, "upstream used an unknown grpc-encoding");
        return error(&call, &status, Some(&rc.schema), metadata);
    };
    let output = method.output().clone();
    let field = binding.response_body.clone();
    let transform: body::Transform = Arc::new(move |msg: Bytes, out: &mut Vec<u8>| {
        out.extend_from_slice(mode.prefix());
        message::response_json(&output, field.as_ref(), msg, out)?;
        out.extend_from_slice(mode.suffix());
        Ok(())
    });
    let mut stream = reply.stream.transforming(encoding, transform);
    let mut render = StreamRender {
        mode,
        schema: rc.schema.clone(),
    };
    // The status line waits for the first message, or for the end of a stream that has none.
    let first = poll_fn(|cx| stream.poll_event(cx)).await;
    let first = match first {
        Some(Event::Data(data)) => render.data(data),
        Some(Event::End(end)) => {
            if end.status.code != Code::Ok {
                let mut headers = metadata;
                headers.extend(end.metadata);
                return error(&call, &end.status, Some(&rc.schema), headers);
            }
            call.ctx.set_code(Code::Ok);
            let mut res = Response::new(body::empty());
            *res.headers_mut() = metadata;
            res.headers_mut().extend(end.metadata);
            res.headers_mut()
                .insert(header::CONTENT_TYPE, mode.content_type());
            return res;
        }
        None => Bytes::new(),
    };
    let inner = RenderBody::new(stream, render, Some(call.ctx.clone()));
    let mut res = Response::new(
        Prepend {
            first: Some(first),
            inner,
        }
        .boxed_unsync(),
    );
    *res.headers_mut() = metadata;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, mode.content_type());
    res
}

/// A unary answer: the whole reply read (bounded), then JSON or the error.
async fn unary(
    call: &Call,
    rc: &RestCall,
    metadata: HeaderMap,
    stream: body::GrpcStream,
    encoding: Option<Encoding>,
) -> Response<BoxBody> {
    let (frames, end) = collect(stream, call.limit).await;
    let mut headers = metadata;
    headers.extend(end.metadata);
    if end.status.code != Code::Ok {
        return error(call, &end.status, Some(&rc.schema), headers);
    }
    let encoding = encoding.map(Encoding::name).map(HeaderValue::from_static);
    let json = unary_payload(frames, encoding.as_ref(), call.limit).and_then(|payload| {
        let mut out = Vec::with_capacity(payload.len().saturating_mul(2).saturating_add(16));
        message::response_json(
            rc.binding.method.output(),
            rc.binding.response_body.as_ref(),
            payload,
            &mut out,
        )
        .map(|()| out)
    });
    match json {
        Ok(out) => {
            call.ctx.set_code(Code::Ok);
            let mut res = Response::new(body::full(out));
            *res.headers_mut() = headers;
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(rest::JSON));
            res
        }
        Err(status) => error(call, &status, Some(&rc.schema), headers),
    }
}

/// An error answer: the JSON error object with the status's HTTP status.
pub(crate) fn error(
    call: &Call,
    status: &Status,
    schema: Option<&Schema>,
    headers: HeaderMap,
) -> Response<BoxBody> {
    call.ctx.set_code(status.code);
    error_response(status, schema, headers)
}

/// An error answer made before any call (routing, policies, no rule).
pub(crate) fn error_response(
    status: &Status,
    schema: Option<&Schema>,
    headers: HeaderMap,
) -> Response<BoxBody> {
    let mut res = Response::new(body::full(rest::error_body(status, schema)));
    *res.status_mut() = rest::http_status(status.code);
    *res.headers_mut() = headers;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(rest::JSON));
    res
}

/// 405 for a path whose rules use other methods.
pub(crate) fn method_not_allowed(
    method: &http::Method,
    allow: &[http::Method],
) -> Response<BoxBody> {
    let list: Vec<&str> = allow.iter().map(http::Method::as_str).collect();
    let status = Status::new(
        Code::Unimplemented,
        format!(
            "method {method} is not allowed on this path; allowed: {}",
            list.join(", ")
        ),
    );
    let mut res = error_response(&status, None, HeaderMap::new());
    *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

/// 404 for a path no rule matches.
pub(crate) fn not_found(path: &str) -> Response<BoxBody> {
    let status = Status::new(
        Code::NotFound,
        format!("no REST rule or method matches {path}"),
    );
    error_response(&status, None, HeaderMap::new())
}

/// Server-stream entries: each message as its line or event (the transform wrote it so), the
/// failed end as an `{"error": …}` entry.
struct StreamRender {
    mode: Mode,
    schema: Schema,
}

impl Render for StreamRender {
    fn data(&mut self, data: Bytes) -> Bytes {
        strip_frame_headers(data)
    }

    fn end(&mut self, end: End) -> Frame<Bytes> {
        if end.status.code == Code::Ok {
            return Frame::data(Bytes::new());
        }
        Frame::data(self.mode.error_entry(&end.status, Some(&self.schema)))
    }
}

/// The payloads of whole frames, without their headers: a slice of `data` when it holds one
/// frame (the usual case), else copied together.
fn strip_frame_headers(data: Bytes) -> Bytes {
    let mut payloads = Vec::new();
    let mut at = 0;
    while at + HEADER_LEN <= data.len() {
        let len =
            u32::from_be_bytes([data[at + 1], data[at + 2], data[at + 3], data[at + 4]]) as usize;
        let end = (at + HEADER_LEN + len).min(data.len());
        payloads.push(data.slice(at + HEADER_LEN..end));
        at = end;
    }
    match <[Bytes; 1]>::try_from(payloads) {
        Ok([one]) => one,
        Err(many) => Bytes::from(many.concat()),
    }
}

/// A body that yields one chunk first, then another body.
struct Prepend<B> {
    first: Option<Bytes>,
    inner: B,
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Prepend<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.inner.is_end_stream()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers_are_stripped() {
        let one = frame::encode(0, b"{\"a\":1}\n");
        assert_eq!(&strip_frame_headers(one)[..], b"{\"a\":1}\n");
        let mut two = frame::encode(0, b"x\n").to_vec();
        two.extend_from_slice(&frame::encode(0, b"y\n"));
        assert_eq!(&strip_frame_headers(Bytes::from(two))[..], b"x\ny\n");
        assert!(strip_frame_headers(Bytes::new()).is_empty());
    }
}
