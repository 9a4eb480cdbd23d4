//! The caller's request body on its way upstream, and the discarding of abandoned bodies.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};

use crate::observe::CallContext;
use crate::protocol::compression::{self, Encoding};
use crate::protocol::grpc::frame::{self, FrameDecoder, FrameError, FrameScanner, FLAG_COMPRESSED};
use crate::protocol::grpc::{Code, Status};
use crate::protocol::grpc_web::TextDecoder;

use super::{BoxError, CallerBody, FailureSlot, RequestFailed, Transform};

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

/// The caller's request body on its way upstream: text mode decoded, frames checked.
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
