//! Streaming bodies between caller and upstream. Message bytes pass through as the `Bytes`
//! they arrived in; only frame headers are inspected, to enforce size limits.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::observe::CallContext;
use crate::protocol::compression::{self, Encoding};
use crate::protocol::grpc::frame::{self, FrameDecoder, FrameError, FrameScanner, FLAG_COMPRESSED};
use crate::protocol::grpc::status::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS_BIN};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::grpc_web::TextDecoder;
use crate::upstream::UpstreamBody;

/// Error type of bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy makes.
pub(crate) type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of these chunks, in order (each one DATA frame upstream).
pub(crate) fn chunks(chunks: std::collections::VecDeque<Bytes>) -> BoxBody {
    Chunked(chunks).boxed_unsync()
}

struct Chunked(std::collections::VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A caller's request body: an HTTP request's, or the request messages of a WebSocket call.
pub(crate) enum CallerBody {
    /// The body hyper received.
    Http(Incoming),
    /// Request frames read from a WebSocket (see `forward::websocket`).
    Socket(BoxBody),
}

impl CallerBody {
    /// Whether the body arrives over HTTP/1.1 or HTTP/2 (not a WebSocket).
    pub(crate) fn is_http(&self) -> bool {
        matches!(self, CallerBody::Http(_))
    }
}

impl From<Incoming> for CallerBody {
    fn from(body: Incoming) -> CallerBody {
        CallerBody::Http(body)
    }
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            CallerBody::Http(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            CallerBody::Socket(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CallerBody::Http(b) => b.is_end_stream(),
            CallerBody::Socket(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            CallerBody::Http(b) => b.size_hint(),
            CallerBody::Socket(b) => b.size_hint(),
        }
    }
}

/// An empty body.
pub(crate) fn empty() -> BoxBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Rewrites one message on its way through (JSON ⇄ protobuf transcoding): the message in,
/// its new form appended to the buffer (which already holds the frame header, so a large
/// message is written once, straight into the frame that carries it on).
pub(crate) type Transform = Arc<dyn Fn(Bytes, &mut Vec<u8>) -> Result<(), Status> + Send + Sync>;

/// Where a request body that fails records why, so the response side reports that status
/// instead of the upstream reset it causes.
pub(crate) type FailureSlot = Arc<OnceLock<Status>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RequestFailed(Status);

/// The error of a caller body that cannot go on, with the status the caller gets for it
/// (rather than the upstream reset the error causes).
pub(crate) fn failed(status: Status) -> BoxError {
    Box::new(RequestFailed(status))
}

/// The caller's request body on its way upstream: text mode decoded, frames checked.
/// Message-level rewriting of a frame stream: whole frames are decoded, decompressed with
/// `encoding` when flagged, transformed, and forwarded uncompressed.
pub(crate) struct Recode {
    decoder: FrameDecoder,
    encoding: Encoding,
    transform: Option<Transform>,
    limit: usize,
}

impl Recode {
    pub(crate) fn new(limit: usize, encoding: Encoding, transform: Option<Transform>) -> Recode {
        Recode {
            decoder: FrameDecoder::new(limit),
            encoding,
            transform,
            limit,
        }
    }

    /// Every whole frame in `data` (plus what was buffered), rewritten.
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        on_error: fn(&FrameError) -> Status,
    ) -> Result<Bytes, Status> {
        self.decoder.push(data);
        let mut out: Vec<u8> = Vec::new();
        while let Some(f) = self.decoder.next_frame().map_err(|e| on_error(&e))? {
            let payload = if f.flags & FLAG_COMPRESSED != 0 {
                compression::decompress(self.encoding, &f.payload, self.limit)?
            } else {
                f.payload
            };
            let start = out.len();
            match &self.transform {
                Some(t) => {
                    // Room for JSON of about twice the protobuf size (base64 is 4/3).
                    out.reserve(frame::HEADER_LEN + payload.len().saturating_mul(2) + 64);
                    out.extend_from_slice(&[0; frame::HEADER_LEN]);
                    t(payload, &mut out)?;
                }
                None => {
                    out.reserve(frame::HEADER_LEN + payload.len());
                    out.extend_from_slice(&[0; frame::HEADER_LEN]);
                    out.extend_from_slice(&payload);
                }
            }
            let len = out.len() - start - frame::HEADER_LEN;
            out[start..start + frame::HEADER_LEN].copy_from_slice(&frame::header(0, len));
        }
        Ok(Bytes::from(out))
    }
}

pub(crate) struct RequestBody {
    /// The call, whose bytes in are counted here (as the caller sent them).
    ctx: Arc<CallContext>,
    /// Taken only when the body is dropped unfinished (see `Drop`).
    inner: Option<CallerBody>,
    text: Option<TextDecoder>,
    scanner: FrameScanner,
    /// Set when request messages are rewritten: decompressed and/or transformed.
    recode: Option<Box<Recode>>,
    failure: FailureSlot,
    done: bool,
    /// A frame polled ahead by [`RequestBody::first_frame`], returned first.
    ahead: Option<Result<Frame<Bytes>, BoxError>>,
    /// Longest wait for the next chunk, for bodies that must arrive whole (HTTP/1.1 has no
    /// full duplex); the timer is made only when a wait actually happens.
    idle_limit: Option<Duration>,
    idle: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    /// Wraps a caller body. `text` decodes base64 first.
    pub(crate) fn new(
        inner: CallerBody,
        text: bool,
        limit: usize,
        failure: FailureSlot,
        ctx: Arc<CallContext>,
    ) -> RequestBody {
        RequestBody {
            ctx,
            inner: Some(inner),
            text: text.then(TextDecoder::default),
            scanner: FrameScanner::new(limit, FLAG_COMPRESSED),
            recode: None,
            failure,
            done: false,
            ahead: None,
            idle_limit: None,
            idle: None,
        }
    }

    /// Fails the body when no data arrives for `limit` (a stalled caller).
    pub(crate) fn with_idle_timeout(mut self, limit: Duration) -> RequestBody {
        self.idle_limit = Some(limit);
        self
    }

    /// Waits until the body has its first frame (or has ended), which is then returned first.
    /// The request then goes upstream with its message in the same write as its headers.
    pub(crate) async fn first_frame(&mut self) {
        if self.ahead.is_none() && !self.done {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut *self).poll_frame(cx)).await;
            self.ahead = frame;
        }
    }

    /// Rewrites each request message: decompressed from `encoding` when flagged, then passed
    /// through `transform`, and forwarded uncompressed.
    pub(crate) fn recoding(
        mut self,
        encoding: Encoding,
        transform: Option<Transform>,
    ) -> RequestBody {
        self.recode = Some(Box::new(Recode::new(
            self.scanner.limit(),
            encoding,
            transform,
        )));
        self
    }

    /// Whether the body ended cleanly: no partial base64 quantum, no partial frame.
    fn check_end(&self) -> Result<(), Status> {
        if let Some(Err(e)) = self.text.as_ref().map(TextDecoder::finish) {
            return Err(Status::new(Code::InvalidArgument, e.to_string()));
        }
        self.scanner.finish().map_err(|e| request_frame_status(&e))
    }

    fn fail(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        let _ = self.failure.set(status.clone());
        Poll::Ready(Some(Err(Box::new(RequestFailed(status)))))
    }
}

/// How long, and how much, an abandoned caller body is read to keep its connection usable.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);
const DRAIN_BYTES: usize = 1 << 20;

impl Drop for RequestBody {
    /// An upstream that answers before it has read the whole request (and resets the stream,
    /// as gRPC servers may) leaves the caller's body unread; an HTTP/1.1 connection could then
    /// not carry another request. Read what is left, within bounds, so it can.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(inner) = self.inner.take() {
            discard(inner);
        }
    }
}

/// Reads and drops what is left of a caller's body in the background, within
/// [`DRAIN_TIME`] and [`DRAIN_BYTES`]: a call answered without its body (refused, or answered
/// early upstream) then leaves its HTTP/1.1 connection usable for the caller's next request.
pub(crate) fn discard(body: impl Into<CallerBody>) {
    // A WebSocket's body needs no draining: its socket carries no other request.
    let CallerBody::Http(mut body) = body.into() else {
        return;
    };
    if body.is_end_stream() {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len());
                if seen > DRAIN_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

pub(crate) fn request_frame_status(e: &FrameError) -> Status {
    match e {
        FrameError::TooLarge { .. } => Status::new(Code::ResourceExhausted, format!("request {e}")),
        FrameError::Truncated { .. } | FrameError::BadFlags(_) => Status::new(
            Code::InvalidArgument,
            format!("malformed request body: {e}"),
        ),
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.ahead.take() {
            return Poll::Ready(Some(frame));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            let Some(inner) = this.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(polled) => {
                    if let (Some(idle), Some(limit)) = (this.idle.as_mut(), this.idle_limit) {
                        idle.as_mut().reset(Instant::now() + limit);
                    }
                    polled
                }
                Poll::Pending => {
                    if let Some(limit) = this.idle_limit {
                        let idle = this
                            .idle
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                        if idle.as_mut().poll(cx).is_ready() {
                            return this.fail(Status::new(
                                Code::DeadlineExceeded,
                                format!(
                                    "the request body stalled: no data for {} (limits.body_timeout)",
                                    crate::config::units::format_duration(limit)
                                ),
                            ));
                        }
                    }
                    return Poll::Pending;
                }
            };
            match polled {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        // Callers must not send request trailers; they are dropped.
                        continue;
                    };
                    this.ctx.add_bytes_in(data.len());
                    if let Some(text) = &mut this.text {
                        match text.decode(&data) {
                            Ok(decoded) => data = decoded,
                            Err(e) => {
                                return this.fail(Status::new(Code::InvalidArgument, e.to_string()))
                            }
                        }
                        if data.is_empty() {
                            continue;
                        }
                    }
                    if let Err(e) = this.scanner.scan(&data) {
                        return this.fail(request_frame_status(&e));
                    }
                    if let Some(recode) = this.recode.as_mut() {
                        match recode.push(&data, request_frame_status) {
                            Ok(d) if d.is_empty() => continue,
                            Ok(d) => data = d,
                            Err(status) => return this.fail(status),
                        }
                    }
                    // The caller's body is over (its length is known): check the end now, so
                    // `is_end_stream` can say so and the last DATA frame upstream carries
                    // END_STREAM instead of an empty frame following it.
                    if this.inner.as_ref().is_some_and(Body::is_end_stream) {
                        if let Err(status) = this.check_end() {
                            return this.fail(status);
                        }
                        this.done = true;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    // The caller went away, or its body failed with a status of its own; the
                    // upstream stream is reset.
                    this.done = true;
                    if let Some(RequestFailed(status)) = e.downcast_ref::<RequestFailed>() {
                        let _ = this.failure.set(status.clone());
                    }
                    return Poll::Ready(Some(Err(e)));
                }
                None => {
                    if let Err(status) = this.check_end() {
                        return this.fail(status);
                    }
                    this.done = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ahead.is_none()
    }
}

/// How a call ended: its status and the trailing metadata (without the status fields).
#[derive(Debug, Clone)]
pub(crate) struct End {
    /// The status.
    pub(crate) status: Status,
    /// Trailing metadata other than `grpc-status`, `grpc-message`, `grpc-status-details-bin`.
    pub(crate) metadata: HeaderMap,
    /// The upstream answered plain HTTP 404 (no such path): Connect callers get 404 too, as
    /// a Connect server answers an unknown procedure.
    pub(crate) not_found: bool,
}

impl End {
    /// An end with a status and no metadata.
    pub(crate) fn status(status: Status) -> End {
        End {
            status,
            metadata: HeaderMap::new(),
            not_found: false,
        }
    }

    /// Splits a trailer block (or Trailers-Only headers) into status and metadata.
    pub(crate) fn from_trailers(mut trailers: HeaderMap, upstream: &str) -> End {
        let status = Status::from_headers(&trailers).unwrap_or_else(|| {
            Status::new(
                Code::Unknown,
                format!("upstream {upstream:?} sent trailers without grpc-status"),
            )
        });
        remove_names(&mut trailers, |n| {
            is_status_header(n)
                // HTTP's own, present when a Trailers-Only block doubles as response headers.
                || n == http::header::DATE
                || crate::protocol::grpc::metadata::is_hop_or_protocol_header(n)
        });
        End {
            status,
            metadata: trailers,
            not_found: false,
        }
    }
}

/// `grpc-status`, `grpc-message` or `grpc-status-details-bin`.
pub(crate) fn is_status_header(name: &http::HeaderName) -> bool {
    name == GRPC_STATUS || name == GRPC_MESSAGE || name == GRPC_STATUS_DETAILS_BIN
}

/// Removes headers that never travel as metadata: the fixed hop-by-hop and protocol set, and
/// every header the `connection` header names (RFC 9110 §7.6.1: they belong to this hop).
pub(crate) fn strip_hop_headers(headers: &mut HeaderMap) {
    remove_connection_listed(headers);
    remove_names(
        headers,
        crate::protocol::grpc::metadata::is_hop_or_protocol_header,
    );
}

/// Removes the headers named in `connection` (rare: HTTP/1.1 callers, usually `keep-alive`).
pub(crate) fn remove_connection_listed(headers: &mut HeaderMap) {
    if !headers.contains_key(http::header::CONNECTION) {
        return;
    }
    let listed: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Removes every header whose name `drop` selects. Usually none or all of them are (the map is
/// then kept or cleared, keeping its capacity, without hashing), else a few: those are found
/// and removed one by one rather than collected into a list.
pub(crate) fn remove_names(headers: &mut HeaderMap, drop: impl Fn(&http::HeaderName) -> bool) {
    let (mut some, mut all) = (false, true);
    for name in headers.keys() {
        let d = drop(name);
        some |= d;
        all &= d;
    }
    if !some {
        return;
    }
    if all {
        headers.clear();
        return;
    }
    while let Some(name) = headers.keys().find(|n| drop(n)).cloned() {
        headers.remove(name);
    }
}

/// One step of an upstream response.
#[derive(Debug)]
pub(crate) enum Event {
    /// Bytes of gRPC frames, in arrival order, at arbitrary boundaries.
    Data(Bytes),
    /// The end of the call. Nothing follows.
    End(End),
}

/// The body of an upstream gRPC response as a sequence of [`Event`]s: data as it arrives,
/// then exactly one end. Enforces the response size limit and the call's deadline, and maps
/// resets and lost connections to statuses. Dropping it resets the upstream stream.
pub(crate) struct GrpcStream {
    /// The call (its request id names failures in the log).
    ctx: Option<Arc<CallContext>>,
    /// Holds the stream's guard: dropping it ends the stream's count on its connection.
    body: Option<UpstreamBody>,
    scanner: FrameScanner,
    deadline: Option<Pin<Box<Sleep>>>,
    failure: FailureSlot,
    upstream: Arc<str>,
    /// Boxed, like `recode`: rare, and a call's reply is moved a few times on its way out.
    pending_end: Option<Box<End>>,
    recode: Option<Box<Recode>>,
    /// Whole frames ready to go out, in order (usually empty: a chunk that ends on a frame
    /// boundary goes out as it came).
    ready: VecDeque<Bytes>,
    /// The start of a frame whose end has not arrived yet. A frame goes out only once it is
    /// whole, so a stream that breaks off inside a frame never leaves the caller a partial
    /// frame before its status.
    partial: VecDeque<Bytes>,
}

/// Pieces of one partial frame kept before they are joined into one (a peer sending tiny
/// DATA frames must not make the queue grow by one entry per byte).
const MAX_PARTIAL_PIECES: usize = 64;

impl GrpcStream {
    /// Follows an upstream body.
    pub(crate) fn new(
        body: UpstreamBody,
        limit: usize,
        deadline: Option<Instant>,
        failure: FailureSlot,
        upstream: Arc<str>,
        ctx: Arc<CallContext>,
    ) -> GrpcStream {
        GrpcStream {
            ctx: Some(ctx),
            body: Some(body),
            scanner: FrameScanner::new(limit, FLAG_COMPRESSED),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            failure,
            upstream,
            pending_end: None,
            recode: None,
            ready: VecDeque::new(),
            partial: VecDeque::new(),
        }
    }

    /// Rewrites each response message: decompressed from `encoding` when flagged, passed
    /// through `transform`, and delivered uncompressed.
    #[allow(dead_code)] // used by JSON transcoding
    pub(crate) fn transforming(mut self, encoding: Encoding, transform: Transform) -> GrpcStream {
        self.recode = Some(Box::new(Recode::new(
            self.scanner.limit(),
            encoding,
            Some(transform),
        )));
        self
    }

    /// A stream that is already over.
    pub(crate) fn ended(end: End) -> GrpcStream {
        GrpcStream {
            ctx: None,
            body: None,
            scanner: FrameScanner::new(0, 0),
            deadline: None,
            failure: Arc::new(OnceLock::new()),
            upstream: Arc::from(""),
            pending_end: Some(Box::new(end)),
            recode: None,
            ready: VecDeque::new(),
            partial: VecDeque::new(),
        }
    }

    /// Whether the end has been delivered: nothing more will come.
    pub(crate) fn is_over(&self) -> bool {
        self.body.is_none() && self.pending_end.is_none() && self.ready.is_empty()
    }

    /// Ends the stream with `end`, after the whole frames already received. A partial frame
    /// is dropped.
    fn finish(&mut self, end: End) -> Poll<Option<Event>> {
        // Dropping the body resets the upstream stream if it is still open.
        self.body = None;
        self.deadline = None;
        self.partial.clear();
        match self.ready.pop_front() {
            Some(data) => {
                self.pending_end = Some(Box::new(end));
                Poll::Ready(Some(Event::Data(data)))
            }
            None => Poll::Ready(Some(Event::End(end))),
        }
    }

    /// Passes a chunk of upstream frames on: at once when it ends on a frame boundary (the
    /// usual case), else the whole frames in it now and the rest once its frame is complete.
    /// `None` when nothing is ready yet.
    fn pass(&mut self, mut data: Bytes) -> Result<Option<Bytes>, FrameError> {
        match self.scanner.scan_to_boundary(&data)? {
            Some(k) if k == data.len() && self.partial.is_empty() => return Ok(Some(data)),
            Some(k) => {
                let rest = data.split_off(k);
                self.ready.extend(self.partial.drain(..));
                if !data.is_empty() {
                    self.ready.push_back(data);
                }
                if !rest.is_empty() {
                    self.partial.push_back(rest);
                }
            }
            None => {
                self.partial.push_back(data);
                if self.partial.len() > MAX_PARTIAL_PIECES {
                    let joined: Vec<u8> = self.partial.drain(..).flat_map(|b| b.to_vec()).collect();
                    self.partial.push_back(Bytes::from(joined));
                }
            }
        }
        Ok(self.ready.pop_front())
    }

    fn response_frame_status(&self, e: &FrameError) -> Status {
        match e {
            FrameError::TooLarge { .. } => {
                Status::new(Code::ResourceExhausted, format!("response {e}"))
            }
            _ => Status::new(
                Code::Internal,
                format!("upstream {:?} sent a malformed frame: {e}", self.upstream),
            ),
        }
    }

    fn failure_or(&self, status: Status) -> End {
        End::status(self.failure.get().cloned().unwrap_or(status))
    }

    /// The next event.
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            if let Some(data) = self.ready.pop_front() {
                return Poll::Ready(Some(Event::Data(data)));
            }
            if let Some(end) = self.pending_end.take() {
                return Poll::Ready(Some(Event::End(*end)));
            }
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(d) = self.deadline.as_mut() {
                if d.as_mut().poll(cx).is_ready() {
                    return self.finish(End::status(deadline_exceeded()));
                }
            }
            match ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if self.recode.is_some() => {
                        if let Err(e) = self.scanner.scan(&data) {
                            return self.finish(End::status(self.response_frame_status(&e)));
                        }
                        let rewritten = self
                            .recode
                            .as_mut()
                            .map(|r| r.push(&data, |e| Status::new(Code::Internal, e.to_string())));
                        match rewritten {
                            // No whole message yet: read on.
                            Some(Ok(out)) if out.is_empty() => continue,
                            Some(Ok(out)) => return Poll::Ready(Some(Event::Data(out))),
                            Some(Err(status)) => return self.finish(End::status(status)),
                            None => return Poll::Ready(Some(Event::Data(data))),
                        }
                    }
                    Ok(data) => match self.pass(data) {
                        Ok(Some(out)) => return Poll::Ready(Some(Event::Data(out))),
                        Ok(None) => continue,
                        Err(e) => return self.finish(End::status(self.response_frame_status(&e))),
                    },
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        let end = match self.scanner.finish() {
                            Ok(()) => End::from_trailers(trailers, &self.upstream),
                            Err(e) => End::status(Status::new(
                                Code::Internal,
                                format!(
                                    "upstream {:?} ended the stream mid-message: {e}",
                                    self.upstream
                                ),
                            )),
                        };
                        return self.finish(end);
                    }
                },
                Some(Err(e)) => {
                    let request_id = self.ctx.as_ref().map(|c| &c.request_id);
                    let end = self.failure_or(status_from_error(&e, &self.upstream, request_id));
                    return self.finish(end);
                }
                None => {
                    let end = match self.scanner.finish() {
                        Err(e) => Status::new(
                            Code::Internal,
                            format!(
                                "upstream {:?} ended the stream mid-message: {e}",
                                self.upstream
                            ),
                        ),
                        Ok(()) => Status::new(
                            Code::Internal,
                            format!(
                                "upstream {:?} closed the stream without trailers",
                                self.upstream
                            ),
                        ),
                    };
                    let end = self.failure_or(end);
                    return self.finish(end);
                }
            }
        }
    }
}

use std::future::Future as _;

/// How one caller protocol writes a reply: message bytes (as they arrive) and the end.
pub(crate) trait Render: Send + Unpin + 'static {
    /// Bytes of upstream frames, rewritten for the caller (unchanged by default).
    fn data(&mut self, data: Bytes) -> Bytes {
        data
    }

    /// The last frame of the response, carrying the status.
    fn end(&mut self, end: End) -> Frame<Bytes>;
}

/// A response body that streams a [`GrpcStream`] through a [`Render`], recording the end in
/// the call's context.
pub(crate) struct RenderBody<R> {
    stream: GrpcStream,
    render: R,
    ctx: Option<Arc<CallContext>>,
}

impl<R: Render> RenderBody<R> {
    pub(crate) fn new(stream: GrpcStream, render: R, ctx: Option<Arc<CallContext>>) -> Self {
        RenderBody {
            stream,
            render,
            ctx,
        }
    }
}

impl<R: Render> Body for RenderBody<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(this.stream.poll_event(cx)) {
            None => Poll::Ready(None),
            Some(Event::Data(data)) => {
                if let Some(ctx) = &this.ctx {
                    ctx.set_answered();
                }
                Poll::Ready(Some(Ok(Frame::data(this.render.data(data)))))
            }
            Some(Event::End(end)) => {
                if let Some(ctx) = &this.ctx {
                    ctx.set_code(end.status.code);
                }
                Poll::Ready(Some(Ok(this.render.end(end))))
            }
        }
    }

    /// True once the last frame is out, so servers can end the response with it (HTTP/1.1:
    /// the closing chunk in the same write; HTTP/2: END_STREAM on the last frame).
    fn is_end_stream(&self) -> bool {
        self.stream.is_over()
    }
}

/// The status for a call whose deadline passed.
pub(crate) fn deadline_exceeded() -> Status {
    Status::new(Code::DeadlineExceeded, "deadline exceeded")
}

/// Maps a failed upstream exchange to a status, finding HTTP/2 resets and I/O errors in the
/// error's causes. The caller's message names the upstream by its config name and says what
/// happened; the error itself (which may carry addresses or TLS details) goes to the log with
/// the request id.
pub(crate) fn status_from_error(
    err: &(dyn std::error::Error + 'static),
    upstream: &str,
    request_id: Option<&http::HeaderValue>,
) -> Status {
    let status = classify_error(err, upstream);
    tracing::debug!(request_id = ?request_id, upstream, error = %err, code = ?status.code, "upstream exchange failed");
    status
}

fn classify_error(err: &(dyn std::error::Error + 'static), upstream: &str) -> Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h2e) = e.downcast_ref::<h2::Error>() {
            if h2e.is_go_away() {
                return Status::new(
                    Code::Unavailable,
                    format!("upstream {upstream:?} closed the connection (GOAWAY)"),
                );
            }
            if let Some(reason) = h2e.reason() {
                return Status::new(
                    Code::from_h2_reason(reason),
                    format!("upstream {upstream:?} reset the stream ({reason:?})"),
                );
            }
            if let Some(kind) = h2e.get_io().map(std::io::Error::kind) {
                return Status::new(
                    Code::Unavailable,
                    format!("connection to upstream {upstream:?} lost ({kind})"),
                );
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Status::new(
                Code::Unavailable,
                format!("connection to upstream {upstream:?} lost ({})", io.kind()),
            );
        }
        source = e.source();
    }
    Status::new(Code::Unavailable, format!("upstream {upstream:?} failed"))
}
