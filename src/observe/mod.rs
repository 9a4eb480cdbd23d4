//! Observability: the per-call context, request ids, and what is made of a finished call
//! (metrics, the access log line, the proxy's span).
//!
//! The [`Observer`] is the observe stage's state. It sees every call twice: when it is
//! classified and routed ([`Observer::started`]) and when its response body is dropped
//! ([`Observer::finished`], through [`ObservedBody`]).

pub(crate) mod context;
pub(crate) mod request_id;

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub(crate) use context::{CallContext, CallProtocol, ConnInfo};

use crate::body::{BoxBody, BoxError};
use crate::protocol::grpc::Code;

/// The observe stage: metrics and the access log, as configured.
#[derive(Debug, Default)]
pub(crate) struct Observer {}

impl Observer {
    /// Whether anything is recorded at all; when not, bodies are not wrapped.
    pub(crate) fn is_enabled(&self) -> bool {
        false
    }

    /// A call was classified and routed.
    pub(crate) fn started(&self, _ctx: &CallContext) {}

    /// A call's response is over (sent whole, or dropped).
    pub(crate) fn finished(&self, _ctx: &CallContext) {}
}

/// A response body that counts the bytes it hands out and reports the call to the
/// [`Observer`] when dropped.
pub(crate) struct ObservedBody {
    inner: BoxBody,
    ctx: Arc<CallContext>,
    observer: Arc<Observer>,
    done: bool,
}

impl ObservedBody {
    pub(crate) fn new(inner: BoxBody, ctx: Arc<CallContext>, observer: Arc<Observer>) -> Self {
        ObservedBody {
            inner,
            ctx,
            observer,
            done: false,
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.ctx
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.done = true;
                }
            }
            Poll::Ready(None) => this.done = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        if self.ctx.code().is_none() {
            if !self.done && !self.inner.is_end_stream() {
                // The caller went away before the end.
                self.ctx.set_code(Code::Cancelled);
            } else if let Ok(status) = http::StatusCode::from_u16(self.ctx.http_status()) {
                // Answered without a gRPC status (a plain HTTP refusal).
                if !status.is_success() {
                    self.ctx.set_code(Code::from_http_status(status));
                }
            }
        }
        self.observer.finished(&self.ctx);
    }
}
