//! One HTTP/2 connection to an upstream endpoint, driven with the h2 crate directly, and the
//! streams sent on it.
//!
//! hyper's client sends a request's HEADERS and then, in a later write, its DATA: a body is
//! only sent once h2 has assigned the stream send capacity, which happens after the HEADERS
//! frame is written, and the waiting is done in a task spawned per request (about 1.6 KiB,
//! and kept alive after it ends by the waker the stream still holds). Here whatever the body
//! has ready is handed to h2 together with the headers, so a unary call costs the upstream
//! connection one write and the backend one wakeup; a body that is not complete yet (client
//! streams) is piped by a small task that waits for send capacity before each chunk.
//!
//! Every stream carries a [`StreamGuard`]: it counts the stream on its connection, and tells
//! the endpoint how the stream went (outlier detection) and the connection when a call ended
//! at its deadline without a byte from upstream (a PING then checks that the connection is
//! still alive).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream};
use http::{Request, Response};
use http_body::{Body, Frame};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::endpoint::{Endpoint, Failure};
use super::pipe::{send_frame, Pipe};
use super::pool::MAX_STREAMS_PER_CONNECTION;
use super::retry::{Capture, Chunks, Replay};
use crate::body::BoxBody;

/// What one connection's users share with the task that drives it.
pub(crate) struct ConnState {
    /// Streams open on it.
    pub(crate) active: AtomicUsize,
    /// Streams it takes at once: the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`, at most
    /// `pool::MAX_STREAMS_PER_CONNECTION`. More would wait inside h2 for a stream to end.
    limit: AtomicUsize,
    /// The connection has ended, or takes no new stream (GOAWAY): no new stream goes there.
    closed: AtomicBool,
    /// The pool gave the connection up: its driver drops it (streams still open fail).
    abandoned: AtomicBool,
    /// Set when something arrives from the peer (response heads, data, trailers); the driver
    /// clears it to learn whether the peer spoke since it last looked.
    heard: AtomicBool,
    /// Wakes the driver: a call ended at its deadline without a byte (a PING may probe the
    /// connection), or the connection is to be closed.
    pub(crate) wake: Notify,
    /// The endpoint it connects to.
    pub(crate) endpoint: Arc<Endpoint>,
}

impl ConnState {
    pub(crate) fn new(endpoint: Arc<Endpoint>) -> ConnState {
        ConnState {
            active: AtomicUsize::new(0),
            limit: AtomicUsize::new(MAX_STREAMS_PER_CONNECTION),
            closed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            heard: AtomicBool::new(false),
            wake: Notify::new(),
            endpoint,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the connection closed (its driver ended).
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Gives the connection up: wakes its driver, which then drops it.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.abandoned.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Whether the pool gave the connection up.
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Records that the peer spoke. Usually the flag is already set: then this only reads it,
    /// so streams of one connection on several threads do not contend for the cache line.
    fn hear(&self) {
        if !self.heard.load(Ordering::Relaxed) {
            self.heard.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the peer spoke since the last call; clears the flag.
    pub(crate) fn take_heard(&self) -> bool {
        self.heard.swap(false, Ordering::Relaxed)
    }
}

/// A connection's send handle; clones share the connection.
#[derive(Clone)]
pub(crate) struct Connection {
    sender: SendRequest<Bytes>,
    pub(crate) state: Arc<ConnState>,
    /// Picked knowing it is full: a call sent here waits inside h2 for one of its streams to
    /// end (every connection the pool may open is full).
    queue: bool,
}

/// How a stream's outcome is accounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accounting {
    /// A call: its outcome counts for outlier detection, and ending at `deadline` without a
    /// byte from upstream is a failure that probes the connection.
    Call(Option<Instant>),
    /// A health check: judged by the health checker itself.
    Check,
}

impl Connection {
    /// A connection whose handshake is done (the peer's SETTINGS are known).
    pub(crate) fn new(sender: SendRequest<Bytes>, state: Arc<ConnState>) -> Connection {
        let conn = Connection {
            sender,
            state,
            queue: false,
        };
        conn.refresh_limit();
        conn
    }

    /// This connection, to be sent to even though it is full.
    pub(crate) fn queued(&self) -> Connection {
        Connection {
            queue: true,
            ..self.clone()
        }
    }

    /// Whether the connection has ended (or is being given up).
    pub(crate) fn is_closed(&self) -> bool {
        self.state.is_closed()
    }

    /// Streams it takes at once, as last read from the peer's settings.
    pub(crate) fn limit(&self) -> usize {
        self.state.limit.load(Ordering::Relaxed)
    }

    /// Reads the peer's stream limit again (it may send new SETTINGS at any time); returns it.
    pub(crate) fn refresh_limit(&self) -> usize {
        let limit = self
            .sender
            .current_max_send_streams()
            .min(MAX_STREAMS_PER_CONNECTION);
        self.state.limit.store(limit, Ordering::Relaxed);
        limit
    }

    /// Sends a request (its URI absolute). The headers and whatever of the body is ready are
    /// with h2 when this returns; the rest of the body follows from a task. When the body was
    /// complete, a copy of the request comes back too ([`Replay`]: the same `Bytes`, shared),
    /// so that a stream the upstream provably did not process can be sent elsewhere; with
    /// `keep`, a body still arriving is captured as it is piped, for the same purpose. The
    /// request comes back when the connection can take no new stream, or none now: it is full
    /// (another caller took the last stream since the pick; health checks wait instead).
    // The error hands the request back whole, to be sent elsewhere; it is rare.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(
        &self,
        req: Request<BoxBody>,
        accounting: Accounting,
        keep: bool,
    ) -> Result<(Sending, Option<Replay>), Refused> {
        let mut sender = self.sender.clone();
        let mut cx = Context::from_waker(Waker::noop());
        // A fresh handle has no stream of its own waiting to open, so this only says whether
        // the connection still takes streams (not closed, no GOAWAY).
        if self.is_closed() {
            return Err(Refused::closed(req));
        }
        if let Poll::Ready(Err(_)) = sender.poll_ready(&mut cx) {
            self.state.closed.store(true, Ordering::Release);
            return Err(Refused::closed(req));
        }
        // Counted from here: two callers that picked the last free stream cannot both take it.
        let mut guard = StreamGuard::new(&self.state, accounting);
        if guard.over_limit && !self.queue && accounting != Accounting::Check {
            guard.settled = true;
            return Err(Refused {
                request: Some(req),
                full: true,
            });
        }
        let (parts, mut body) = req.into_parts();
        // What the body has ready now (the noop waker is fine: what is not ready is polled
        // again, with the pipe task's waker, before anything waits on it).
        let mut taken = Taken::default();
        let complete = body.is_end_stream() || taken.take_ready(&mut body, &mut cx);
        let over = complete || taken.rest.is_some();
        let (replay, capture) = if complete {
            (Some(Replay::new(parts.clone(), taken.chunks.clone())), None)
        } else if keep && !over {
            let capture = Capture::new(taken.chunks.clone());
            (
                Some(Replay::piped(parts.clone(), capture.clone())),
                Some(capture),
            )
        } else {
            (None, None)
        };
        let headers_end = complete && taken.chunks.is_empty() && taken.rest.is_none();
        let (response, mut send) =
            match sender.send_request(Request::from_parts(parts, ()), headers_end) {
                Ok(pair) => pair,
                Err(_) => {
                    // Not taken after all (a GOAWAY or the end of the connection came in
                    // between): only a copy can be sent elsewhere.
                    self.state.closed.store(true, Ordering::Release);
                    guard.settled = true;
                    return Err(Refused {
                        request: replay.and_then(|r| r.request(None)),
                        full: false,
                    });
                }
            };
        let last = taken.chunks.len();
        for (i, chunk) in taken.chunks.into_iter().enumerate() {
            let end = complete && i + 1 == last;
            if send.send_data(chunk, end).is_err() {
                break;
            }
        }
        if let Some(step) = taken.rest {
            send_frame(&mut send, Some(step), true);
        }
        if over {
            return Ok((
                Sending {
                    response,
                    cancel: None,
                    guard: Some(guard),
                },
                replay,
            ));
        }
        let (cancel, cancelled) = oneshot::channel();
        tokio::spawn(Pipe::new(body, send, cancelled, capture));
        Ok((
            Sending {
                response,
                cancel: Some(cancel),
                guard: Some(guard),
            },
            replay,
        ))
    }
}

/// The part of a request body that was ready when it was sent.
#[derive(Default)]
struct Taken {
    chunks: Chunks,
    /// A frame that is not data (trailers) or an error, which ends what is sent.
    rest: Option<Result<Frame<Bytes>, crate::body::BoxError>>,
}

impl Taken {
    /// Takes every frame the body has ready; true when the body is over.
    fn take_ready(&mut self, body: &mut BoxBody, cx: &mut Context<'_>) -> bool {
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return false,
                Poll::Ready(None) => return true,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        self.chunks.push(data);
                        if body.is_end_stream() {
                            return true;
                        }
                    }
                    Err(frame) => {
                        self.rest = Some(Ok(frame));
                        return false;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    self.rest = Some(Err(e));
                    return false;
                }
            }
        }
    }
}

/// A request the connection did not take.
pub(crate) struct Refused {
    /// The request, when it can still be sent elsewhere.
    pub(crate) request: Option<Request<BoxBody>>,
    /// The connection is open but full; otherwise it closed.
    pub(crate) full: bool,
}

impl Refused {
    fn closed(req: Request<BoxBody>) -> Refused {
        Refused {
            request: Some(req),
            full: false,
        }
    }
}

/// A sent request, waiting for the response head.
pub(crate) struct Sending {
    response: ResponseFuture,
    /// Dropped (with the response body) when the call is over: the pipe task then resets the
    /// stream if the caller is still sending.
    cancel: Option<oneshot::Sender<()>>,
    guard: Option<StreamGuard>,
}

/// A stream that failed before its response head, and where it was sent.
pub(crate) struct Failed {
    pub(crate) error: h2::Error,
    pub(crate) endpoint: Arc<Endpoint>,
}

impl Failed {
    /// Whether the upstream provably did not process the stream: refused it, or announced
    /// (GOAWAY) that it stopped taking streams before this one. A stream that meets the
    /// connection already shutting down cleanly (a GOAWAY without error, which h2 reports as
    /// its own once the peer's has been handled) was not taken either: streams the peer did
    /// take are let finish before a clean shutdown ends the connection.
    pub(crate) fn never_processed(&self) -> bool {
        let e = &self.error;
        (e.is_remote() && (e.is_go_away() || e.reason() == Some(Reason::REFUSED_STREAM)))
            || (e.is_go_away() && e.reason() == Some(Reason::NO_ERROR))
    }
}

impl Future for Sending {
    type Output = Result<Response<UpstreamBody>, Failed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let result = ready!(Pin::new(&mut self.response).poll(cx));
        let Some(mut guard) = self.guard.take() else {
            // Polled again after it completed: nothing more will come.
            return Poll::Pending;
        };
        match result {
            Ok(res) => {
                guard.answered();
                let cancel = self.cancel.take();
                Poll::Ready(Ok(res.map(|recv| UpstreamBody {
                    recv,
                    data_done: false,
                    _cancel: cancel,
                    guard,
                })))
            }
            Err(error) => {
                guard.failed(&error);
                Poll::Ready(Err(Failed {
                    error,
                    endpoint: guard.conn.endpoint.clone(),
                }))
            }
        }
    }
}

/// Counts a stream as active on its connection until dropped, and reports how it went.
pub(crate) struct StreamGuard {
    conn: Arc<ConnState>,
    accounting: Accounting,
    /// Something came back on the stream, or its outcome was already reported.
    settled: bool,
    /// The connection already carried as many streams as it takes: the stream waited in h2
    /// for a free one, so getting nothing back by its deadline says nothing of the endpoint.
    over_limit: bool,
}

impl std::fmt::Debug for StreamGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamGuard")
            .field("endpoint", &self.conn.endpoint.label)
            .finish()
    }
}

impl StreamGuard {
    fn new(conn: &Arc<ConnState>, accounting: Accounting) -> StreamGuard {
        let before = conn.active.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            conn: conn.clone(),
            accounting,
            settled: false,
            over_limit: before >= conn.limit.load(Ordering::Relaxed),
        }
    }

    /// The response head arrived: the endpoint is alive.
    fn answered(&mut self) {
        self.settled = true;
        self.conn.hear();
        if let Accounting::Call(_) = self.accounting {
            self.conn.endpoint.succeeded();
        }
    }

    /// The stream failed with `e`.
    fn failed(&mut self, e: &h2::Error) {
        self.settled = true;
        if matches!(self.accounting, Accounting::Call(_)) && endpoint_fault(e) {
            self.conn.endpoint.failed(Failure::Stream);
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.conn.active.fetch_sub(1, Ordering::Relaxed);
        if self.settled || self.over_limit {
            return;
        }
        // Nothing came back. If the call ended at its deadline, the endpoint failed it, and
        // its connection may be a black hole: the driver probes it with a PING.
        if let Accounting::Call(Some(deadline)) = self.accounting {
            if Failure::timed_out(deadline) {
                self.conn.endpoint.failed(Failure::Silent);
                self.conn.wake.notify_one();
            }
        }
    }
}

/// Whether a stream error says something is wrong with the endpoint (rather than a call that
/// was cancelled or an orderly shutdown).
pub(crate) fn endpoint_fault(e: &h2::Error) -> bool {
    if e.is_io() {
        return true;
    }
    !matches!(
        e.reason(),
        None | Some(Reason::NO_ERROR) | Some(Reason::CANCEL)
    )
}

/// The body of an upstream response: data as it arrives (its flow-control window released as
/// it is handed on), then the trailers. It holds the stream's [`StreamGuard`].
pub(crate) struct UpstreamBody {
    recv: RecvStream,
    data_done: bool,
    _cancel: Option<oneshot::Sender<()>>,
    guard: StreamGuard,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("endpoint", &self.guard.conn.endpoint.label)
            .finish()
    }
}

impl UpstreamBody {
    /// The endpoint that serves the stream (`address:port`), for the access log.
    pub(crate) fn endpoint(&self) -> &Arc<str> {
        &self.guard.conn.endpoint.label
    }

    pub(crate) fn endpoint_ref(&self) -> &Arc<Endpoint> {
        &self.guard.conn.endpoint
    }

    fn fail(&mut self, e: &h2::Error) {
        if matches!(self.guard.accounting, Accounting::Call(_)) && endpoint_fault(e) {
            self.guard.conn.endpoint.failed(Failure::Stream);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    this.guard.conn.hear();
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => {
                    this.fail(&e);
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => {
                this.guard.conn.hear();
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Ok(None) => Poll::Ready(None),
            Err(e) => {
                this.fail(&e);
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
