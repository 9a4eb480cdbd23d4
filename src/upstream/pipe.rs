//! Piping a request body upstream when it was not complete at send time (client streams,
//! bodies still arriving): one chunk at a time as send capacity allows, captured for another
//! attempt while one is possible.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::sync::oneshot;

use super::retry::Capture;
use crate::body::BoxBody;

/// How a request stream that will not be finished is reset. Not `CANCEL`: tonic's decoder
/// (and so every tonic server) reads a request stream reset with `CANCEL` as its clean end, so
/// a client-streaming handler would take an upload cut short for a complete one. Every gRPC
/// server reads `INTERNAL_ERROR` as a failed stream.
const CUT_SHORT: Reason = Reason::INTERNAL_ERROR;

/// Sends one polled frame on; true when the body is over.
pub(crate) fn send_frame(
    send: &mut SendStream<Bytes>,
    step: Option<Result<Frame<Bytes>, crate::body::BoxError>>,
    end: bool,
) -> bool {
    match step {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => send.send_data(data, end).is_err() || end,
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_else(|_| HeaderMap::new());
                let _ = send.send_trailers(trailers);
                true
            }
        },
        // The caller's body failed (it went away, or sent something malformed): the call is
        // over upstream too.
        Some(Err(_)) => {
            send.send_reset(CUT_SHORT);
            true
        }
        None => {
            let _ = send.send_data(Bytes::new(), true);
            true
        }
    }
}

/// Pipes the rest of a request body, one chunk at a time as send capacity allows, so at most
/// one chunk per stream waits in h2's buffer.
pub(crate) struct Pipe {
    body: BoxBody,
    send: SendStream<Bytes>,
    cancelled: oneshot::Receiver<()>,
    /// A chunk polled from the body, waiting for capacity, and whether it is the last.
    pending: Option<(Bytes, bool)>,
    /// Where the body is kept for another attempt, while one is possible.
    capture: Option<Arc<Capture>>,
    /// The stream is over (reset, or the call ended) but another attempt waits for the rest
    /// of the body: it is read into the capture, not sent.
    draining: bool,
}

impl Future for Pipe {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.draining {
            return this.drain(cx);
        }
        // The call is over (its response side dropped) or the upstream reset the stream.
        let cancelled = Pin::new(&mut this.cancelled).poll(cx).is_ready();
        if cancelled || this.send.poll_reset(cx).is_ready() {
            if cancelled {
                this.send.send_reset(CUT_SHORT);
            }
            return this.stop(cx);
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
                        Poll::Ready(_) => return this.stop(cx),
                    }
                    if this.send.capacity() == 0 {
                        this.pending = Some((data, end));
                        continue;
                    }
                }
                if end {
                    let _ = this.send.send_data(data, true);
                    return Poll::Ready(());
                }
                if this.send.send_data(data, false).is_err() {
                    return this.stop(cx);
                }
            }
            let step = ready!(Pin::new(&mut this.body).poll_frame(cx));
            match step {
                Some(Ok(frame)) if frame.is_data() => {
                    let end = this.body.is_end_stream();
                    if let Ok(data) = frame.into_data() {
                        if let Some(c) = &this.capture {
                            if !c.keep(&data, end) {
                                this.capture = None;
                            }
                        }
                        this.pending = Some((data, end));
                    }
                }
                step => {
                    if let Some(c) = &this.capture {
                        c.end(step.is_none());
                    }
                    send_frame(&mut this.send, step, true);
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        if let Some(c) = &self.capture {
            c.abandon();
        }
    }
}

impl Pipe {
    pub(crate) fn new(
        body: BoxBody,
        send: SendStream<Bytes>,
        cancelled: oneshot::Receiver<()>,
        capture: Option<Arc<Capture>>,
    ) -> Pipe {
        Pipe {
            body,
            send,
            cancelled,
            pending: None,
            capture,
            draining: false,
        }
    }

    /// The stream is over (reset, refused, its connection gone, or the call ended): the rest
    /// of the body goes into the capture when another attempt may want it.
    fn stop(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.capture.as_ref().is_some_and(Capture::wanted) {
            self.draining = true;
            return self.drain(cx);
        }
        Poll::Ready(())
    }

    /// Reads the rest of the body into the capture, for another attempt elsewhere.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(capture) = self.capture.clone() else {
            return Poll::Ready(());
        };
        loop {
            if !capture.wanted() {
                return Poll::Ready(());
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        let end = self.body.is_end_stream();
                        if !capture.keep(&data, end) || end {
                            return Poll::Ready(());
                        }
                    }
                    Err(_) => {
                        capture.end(false);
                        return Poll::Ready(());
                    }
                },
                Some(Err(_)) => {
                    capture.end(false);
                    return Poll::Ready(());
                }
                None => {
                    capture.end(true);
                    return Poll::Ready(());
                }
            }
        }
    }
}
