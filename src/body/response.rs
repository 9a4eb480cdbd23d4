//! The upstream response as a stream of events, and the bodies that render it to callers.

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::{Instant, Sleep};

use crate::observe::CallContext;
use crate::protocol::compression::Encoding;
use crate::protocol::grpc::frame::{FrameError, FrameScanner, FLAG_COMPRESSED};
use crate::protocol::grpc::{Code, Status};
use crate::upstream::UpstreamBody;

use super::request::Recode;
use super::{BoxError, End, FailureSlot, Transform};

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
