//! One HTTP/2 connection to an upstream, driven with the h2 crate directly.
//!
//! hyper's client sends a request's HEADERS and then, in a later write, its DATA: a body is
//! only sent once h2 has assigned the stream send capacity, which happens after the HEADERS
//! frame is written, and the waiting is done in a task spawned per request (about 1.6 KiB,
//! and kept alive after it ends by the waker the stream still holds). Here whatever the body
//! has ready is handed to h2 together with the headers, so a unary call costs the upstream
//! connection one write and the backend one wakeup; a body that is not complete yet (client
//! streams) is piped by a small task that waits for send capacity before each chunk.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;

use crate::body::BoxBody;

/// Keepalive: a PING after this long, while streams are open. gRPC servers count PINGs more
/// frequent than 5 minutes as abuse by default (grpc-go's `MinTime`) and close the connection.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(300);
/// How long a keepalive PING may go unanswered before the connection is given up.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A connection's send handle; clones share the connection.
#[derive(Clone)]
pub(crate) struct Connection {
    sender: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Whether the connection has ended (or its task has given it up).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends a request (its URI absolute). The headers and whatever of the body is ready are
    /// with h2 when this returns; the rest of the body follows from a task. The request comes
    /// back when the connection can take no new stream, so another can be tried.
    // The error hands the request back whole, to be sent elsewhere; it is rare.
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, req: Request<BoxBody>) -> Result<Sending, Refused> {
        let mut sender = self.sender.clone();
        let mut cx = Context::from_waker(Waker::noop());
        // A fresh handle has no stream of its own waiting to open, so this only says whether
        // the connection still takes streams (not closed, no GOAWAY).
        if let Poll::Ready(Err(e)) = sender.poll_ready(&mut cx) {
            self.closed.store(true, Ordering::Release);
            return Err(Refused {
                request: Some(req),
                error: e,
            });
        }
        let (parts, mut body) = req.into_parts();
        let eos = body.is_end_stream();
        let (response, mut send) = match sender.send_request(Request::from_parts(parts, ()), eos) {
            Ok(pair) => pair,
            Err(e) => {
                return Err(Refused {
                    request: None,
                    error: e,
                })
            }
        };
        if eos {
            return Ok(Sending {
                response,
                cancel: None,
            });
        }
        // The noop waker is fine: what is not ready now is polled again, with the pipe task's
        // waker, before anything waits on it.
        match pump_ready(&mut body, &mut send, &mut cx) {
            Pumped::Done => Ok(Sending {
                response,
                cancel: None,
            }),
            Pumped::More => {
                let (cancel, cancelled) = oneshot::channel();
                tokio::spawn(Pipe {
                    body,
                    send,
                    cancelled,
                    pending: None,
                });
                Ok(Sending {
                    response,
                    cancel: Some(cancel),
                })
            }
        }
    }
}

/// A request the connection did not take.
pub(crate) struct Refused {
    /// The request, when it can still be sent elsewhere (the connection was found closed
    /// before it was handed over).
    pub(crate) request: Option<Request<BoxBody>>,
    pub(crate) error: h2::Error,
}

/// A sent request, waiting for the response head.
pub(crate) struct Sending {
    response: ResponseFuture,
    /// Dropped (with the response body) when the call is over: the pipe task then resets the
    /// stream if the caller is still sending.
    cancel: Option<oneshot::Sender<()>>,
}

impl Future for Sending {
    type Output = Result<Response<UpstreamBody>, h2::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = ready!(Pin::new(&mut self.response).poll(cx))?;
        let cancel = self.cancel.take();
        Poll::Ready(Ok(res.map(|recv| UpstreamBody {
            recv,
            data_done: false,
            _cancel: cancel,
        })))
    }
}

enum Pumped {
    Done,
    More,
}

/// Hands h2 every frame the body has ready now.
fn pump_ready(body: &mut BoxBody, send: &mut SendStream<Bytes>, cx: &mut Context<'_>) -> Pumped {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Pending => return Pumped::More,
            Poll::Ready(step) => {
                if let Some(done) = send_frame(body, send, step) {
                    return done;
                }
            }
        }
    }
}

/// Sends one polled frame on; `Some` when the body is over.
fn send_frame(
    body: &BoxBody,
    send: &mut SendStream<Bytes>,
    step: Option<Result<Frame<Bytes>, crate::body::BoxError>>,
) -> Option<Pumped> {
    match step {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => {
                let end = body.is_end_stream();
                if send.send_data(data, end).is_err() || end {
                    return Some(Pumped::Done);
                }
                None
            }
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_else(|_| HeaderMap::new());
                let _ = send.send_trailers(trailers);
                Some(Pumped::Done)
            }
        },
        // The caller's body failed (it went away, or sent something malformed): the call is
        // over upstream too.
        Some(Err(_)) => {
            send.send_reset(CUT_SHORT);
            Some(Pumped::Done)
        }
        None => {
            let _ = send.send_data(Bytes::new(), true);
            Some(Pumped::Done)
        }
    }
}

/// How a request stream that will not be finished is reset. Not `CANCEL`: tonic's decoder
/// (and so every tonic server) reads a request stream reset with `CANCEL` as its clean end, so
/// a client-streaming handler would take an upload cut short for a complete one. Every gRPC
/// server reads `INTERNAL_ERROR` as a failed stream.
const CUT_SHORT: Reason = Reason::INTERNAL_ERROR;

/// Pipes the rest of a request body, one chunk at a time as send capacity allows, so at most
/// one chunk per stream waits in h2's buffer.
struct Pipe {
    body: BoxBody,
    send: SendStream<Bytes>,
    cancelled: oneshot::Receiver<()>,
    /// A chunk polled from the body, waiting for capacity, and whether it is the last.
    pending: Option<(Bytes, bool)>,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        // The call is over (its response side dropped) or the upstream reset the stream.
        if Pin::new(&mut this.cancelled).poll(cx).is_ready() {
            this.send.send_reset(CUT_SHORT);
            return Poll::Ready(());
        }
        if this.send.poll_reset(cx).is_ready() {
            return Poll::Ready(());
        }
        loop {
            if let Some((data, end)) = this.pending.take() {
                if this.send.capacity() == 0 {
                    this.send.reserve_capacity(1);
                    match this.send.poll_capacity(cx) {
                        Poll::Pending => {
                            this.pending = Some((data, end));
                            return Poll::Pending;
                        }
                        Poll::Ready(Some(Ok(_))) => {}
                        Poll::Ready(_) => return Poll::Ready(()),
                    }
                    if this.send.capacity() == 0 {
                        this.pending = Some((data, end));
                        continue;
                    }
                }
                if this.send.send_data(data, end).is_err() || end {
                    return Poll::Ready(());
                }
            }
            let step = ready!(Pin::new(&mut this.body).poll_frame(cx));
            match step {
                Some(Ok(frame)) if frame.is_data() => {
                    let end = this.body.is_end_stream();
                    if let Ok(data) = frame.into_data() {
                        this.pending = Some((data, end));
                    }
                }
                step => {
                    send_frame(&this.body, &mut this.send, step);
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// The body of an upstream response: data as it arrives (its flow-control window released as
/// it is handed on), then the trailers.
pub(crate) struct UpstreamBody {
    recv: RecvStream,
    data_done: bool,
    _cancel: Option<oneshot::Sender<()>>,
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
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// The HTTP/2 handshake on `io`; the connection is driven by a task of its own, which also
/// sends keepalive PINGs while `active` streams are open.
pub(crate) async fn handshake<T>(io: T, active: Arc<AtomicUsize>) -> Result<Connection, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut conn) = h2::client::Builder::new()
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(64 << 10)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    let closed = Arc::new(AtomicBool::new(false));
    let ping = conn.ping_pong();
    let done = closed.clone();
    tokio::spawn(async move {
        let result = match ping {
            Some(ping) => {
                tokio::select! {
                    r = &mut conn => r,
                    why = keepalive(ping, active) => {
                        tracing::debug!(reason = why, "upstream connection given up");
                        Ok(())
                    }
                }
            }
            None => conn.await,
        };
        done.store(true, Ordering::Release);
        if let Err(e) = result {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    Ok(Connection { sender, closed })
}

/// Resolves when a PING goes unanswered.
async fn keepalive(mut ping: h2::PingPong, active: Arc<AtomicUsize>) -> &'static str {
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        if active.load(Ordering::Relaxed) == 0 {
            continue;
        }
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "PING failed",
            Err(_) => return "no answer to a PING",
        }
    }
}
