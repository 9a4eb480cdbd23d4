//! Streaming bodies between caller and upstream. Message bytes pass through as the `Bytes`
//! they arrived in; only frame headers are inspected, to enforce size limits.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

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
use crate::upstream::{StreamGuard, UpstreamBody};

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

/// The caller's request body on its way upstream: text mode decoded, frames checked.
/// Message-level rewriting of a frame stream: whole frames are decoded, decompressed with
/// `encoding` when flagged, transformed, and forwarded uncompressed.
struct Recode {
    decoder: FrameDecoder,
    encoding: Encoding,
    transform: Option<Transform>,
    limit: usize,
}

impl Recode {
    fn new(limit: usize, encoding: Encoding, transform: Option<Transform>) -> Recode {
        Recode {
            decoder: FrameDecoder::new(limit),
            encoding,
            transform,
            limit,
        }
    }

    /// Every whole frame in `data` (plus what was buffered), rewritten.
    fn push(&mut self, data: &[u8], on_error: fn(&FrameError) -> Status) -> Result<Bytes, Status> {
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
    /// Taken only when the body is dropped unfinished (see `Drop`).
    inner: Option<Incoming>,
    text: Option<TextDecoder>,
    scanner: FrameScanner,
    /// Set when request messages are rewritten: decompressed and/or transformed.
    recode: Option<Box<Recode>>,
    failure: FailureSlot,
    done: bool,
    /// A frame polled ahead by [`RequestBody::first_frame`], returned first.
    ahead: Option<Result<Frame<Bytes>, BoxError>>,
}

impl RequestBody {
    /// Wraps a caller body. `text` decodes base64 first.
    pub(crate) fn new(
        inner: Incoming,
        text: bool,
        limit: usize,
        failure: FailureSlot,
    ) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            text: text.then(TextDecoder::default),
            scanner: FrameScanner::new(limit, FLAG_COMPRESSED),
            recode: None,
            failure,
            done: false,
            ahead: None,
        }
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
        let (Some(mut inner), Ok(rt)) = (self.inner.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                let mut seen = 0usize;
                while let Some(Ok(frame)) = inner.frame().await {
                    seen += frame.data_ref().map_or(0, |d| d.len());
                    if seen > DRAIN_BYTES {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

fn request_frame_status(e: &FrameError) -> Status {
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
            match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        // Callers must not send request trailers; they are dropped.
                        continue;
                    };
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
                    // The caller went away; the upstream stream is reset.
                    this.done = true;
                    return Poll::Ready(Some(Err(Box::new(e))));
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
}

impl End {
    /// An end with a status and no metadata.
    pub(crate) fn status(status: Status) -> End {
        End {
            status,
            metadata: HeaderMap::new(),
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
        }
    }
}

/// `grpc-status`, `grpc-message` or `grpc-status-details-bin`.
pub(crate) fn is_status_header(name: &http::HeaderName) -> bool {
    name == GRPC_STATUS || name == GRPC_MESSAGE || name == GRPC_STATUS_DETAILS_BIN
}

/// Removes headers that never travel as metadata.
pub(crate) fn strip_hop_headers(headers: &mut HeaderMap) {
    remove_names(
        headers,
        crate::protocol::grpc::metadata::is_hop_or_protocol_header,
    );
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
    body: Option<UpstreamBody>,
    _guard: Option<StreamGuard>,
    scanner: FrameScanner,
    deadline: Option<Pin<Box<Sleep>>>,
    failure: FailureSlot,
    upstream: Arc<str>,
    /// Boxed, like `recode`: rare, and a call's reply is moved a few times on its way out.
    pending_end: Option<Box<End>>,
    recode: Option<Box<Recode>>,
}

impl GrpcStream {
    /// Follows an upstream body.
    pub(crate) fn new(
        body: UpstreamBody,
        guard: StreamGuard,
        limit: usize,
        deadline: Option<Instant>,
        failure: FailureSlot,
        upstream: Arc<str>,
    ) -> GrpcStream {
        GrpcStream {
            body: Some(body),
            _guard: Some(guard),
            scanner: FrameScanner::new(limit, FLAG_COMPRESSED),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
            failure,
            upstream,
            pending_end: None,
            recode: None,
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
            body: None,
            _guard: None,
            scanner: FrameScanner::new(0, 0),
            deadline: None,
            failure: Arc::new(OnceLock::new()),
            upstream: Arc::from(""),
            pending_end: Some(Box::new(end)),
            recode: None,
        }
    }

    /// Whether the end has been delivered: nothing more will come.
    pub(crate) fn is_over(&self) -> bool {
        self.body.is_none() && self.pending_end.is_none()
    }

    fn finish(&mut self, end: End) -> Poll<Option<Event>> {
        // Dropping the body resets the upstream stream if it is still open.
        self.body = None;
        self._guard = None;
        self.deadline = None;
        Poll::Ready(Some(Event::End(end)))
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
                        Some(Ok(out)) if out.is_empty() => {
                            // No whole message yet: ask for more.
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        }
                        Some(Ok(out)) => Poll::Ready(Some(Event::Data(out))),
                        Some(Err(status)) => self.finish(End::status(status)),
                        None => Poll::Ready(Some(Event::Data(data))),
                    }
                }
                Ok(data) => {
                    if let Err(e) = self.scanner.scan(&data) {
                        return self.finish(End::status(self.response_frame_status(&e)));
                    }
                    Poll::Ready(Some(Event::Data(data)))
                }
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
                    self.finish(end)
                }
            },
            Some(Err(e)) => {
                let end = self.failure_or(status_from_error(&e, &self.upstream));
                self.finish(end)
            }
            None => {
                let end = self.failure_or(Status::new(
                    Code::Internal,
                    format!(
                        "upstream {:?} closed the stream without trailers",
                        self.upstream
                    ),
                ));
                self.finish(end)
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
            Some(Event::Data(data)) => Poll::Ready(Some(Ok(Frame::data(this.render.data(data))))),
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
/// error's causes.
pub(crate) fn status_from_error(err: &(dyn std::error::Error + 'static), upstream: &str) -> Status {
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
            if h2e.is_io() {
                return Status::new(
                    Code::Unavailable,
                    format!("connection to upstream {upstream:?} lost: {h2e}"),
                );
            }
        }
        if e.downcast_ref::<std::io::Error>().is_some() {
            return Status::new(
                Code::Unavailable,
                format!("connection to upstream {upstream:?} lost: {e}"),
            );
        }
        source = e.source();
    }
    Status::new(
        Code::Unavailable,
        format!("upstream {upstream:?} failed: {err}"),
    )
}
