//! Observability: the per-call context, request ids, and what is made of a finished call
//! (metrics, the access log line, the proxy's span).
//!
//! The [`Observer`] is the observe stage's state. It sees every call twice: when it is
//! classified and routed ([`Observer::started`]) and when it is over
//! ([`Observer::finished`]): when its [`CallContext`] is dropped, that is when the response
//! body is gone and nothing else (an upstream request body still sending) holds the call.

pub(crate) mod access_log;
pub(crate) mod context;
pub(crate) mod methods;
pub(crate) mod metrics;
pub(crate) mod request_id;
pub(crate) mod trace;
pub(crate) mod upstreams;

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};

pub(crate) use context::{CallContext, CallProtocol, ConnInfo};
pub(crate) use metrics::Metrics;

use self::methods::{GrpcType, MethodSeries};
use self::trace::{SpanEnd, SpanSlot, TraceIds, Tracer};
use crate::body::{BoxBody, BoxError};
use crate::config::{Config, LogFormat};
use crate::protocol::grpc::Code;

/// The observe stage of one config snapshot: metrics (recorded when the admin listener is
/// configured, since nothing could read them otherwise), the access log, and tracing. The
/// metrics registry is shared by every snapshot of the process.
#[derive(Debug)]
pub(crate) struct Observer {
    metrics: Arc<Metrics>,
    record: bool,
    access_log: Option<LogFormat>,
    tracer: Tracer,
}

impl Observer {
    /// The stage for `config`, sharing the registry (and an unchanged span exporter) of
    /// `previous`, the snapshot being replaced.
    pub(crate) fn build(config: &Config, previous: Option<&Observer>) -> Result<Observer, String> {
        let metrics = match previous {
            Some(p) => p.metrics.clone(),
            None => Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?),
        };
        Ok(Observer {
            metrics,
            record: config.admin.is_some(),
            access_log: config
                .access_log
                .enabled
                .then_some(config.access_log.format),
            tracer: Tracer::new(&config.tracing, previous.map(|p| &p.tracer))?,
        })
    }

    /// The registry.
    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether anything reads the end of a call; when not, bodies are not wrapped.
    pub(crate) fn is_enabled(&self) -> bool {
        self.record || self.access_log.is_some() || self.tracer.exports()
    }

    /// Starts the proxy's span of a request (see [`trace`]); the upstream's `traceparent` is
    /// written into `headers`.
    pub(crate) fn begin_trace(
        &self,
        headers: &mut http::HeaderMap,
        start: SystemTime,
        path: &str,
    ) -> Option<(TraceIds, Option<Box<SpanSlot>>)> {
        self.tracer.begin(headers, start, path)
    }

    /// Sends queued spans and writes queued access log lines (at shutdown).
    pub(crate) fn flush(&self) {
        self.tracer.flush();
        access_log::flush();
    }

    /// A call was classified (and routed, when a route matched): counted as in flight, and as
    /// started when its method is known to exist. Other calls count as started when they end,
    /// once it is known whether the method exists.
    pub(crate) fn started(&self, ctx: &CallContext) {
        ctx.observed.store(true, Ordering::Relaxed);
        if !self.record {
            return;
        }
        let protocol = ctx.protocol();
        self.metrics.in_flight(protocol).inc();
        let upstream = ctx.upstream.get().map_or("", |u| u);
        if let Some(series) = self.metrics.methods.known(upstream, ctx.rpc_path()) {
            series.learn(ctx.grpc_type.get().copied());
            if let Some(p) = series.protocol(&self.metrics, protocol) {
                p.start();
            }
            let _ = ctx.series.set(series);
        }
    }

    /// Counts a request refused by the cross-origin policy.
    pub(crate) fn cors_refused(&self, reason: &str) {
        if self.record {
            self.metrics.cors_refusal(reason);
        }
    }

    /// A call refused by its route's auth or rate limit (`reason`: the gRPC code's name).
    pub(crate) fn policy_refused(&self, reason: &str) {
        if self.record {
            self.metrics.policy_refusal(reason);
        }
    }

    /// A call is over: every holder of its context is done with it.
    pub(crate) fn finished(&self, ctx: &CallContext, span: Option<Box<SpanSlot>>) {
        let duration = ctx.start.elapsed();
        let code = ctx.code().or_else(|| match ctx.http_status() {
            // No response at all: the caller went away first.
            0 => Some(Code::Cancelled),
            s if ctx.observed.load(Ordering::Relaxed) && (200..300).contains(&s) => Some(Code::Ok),
            _ => None,
        });
        let bytes_in = ctx.bytes_in.load(Ordering::Relaxed);
        let bytes_out = ctx.bytes_out.load(Ordering::Relaxed);
        let series = (self.record && ctx.observed.load(Ordering::Relaxed)).then(|| {
            self.count(
                ctx,
                code.unwrap_or(Code::Unknown),
                duration.as_secs_f64(),
                bytes_in,
                bytes_out,
            )
        });
        if let Some(format) = self.access_log {
            let line = access_log::Line {
                format,
                time: ctx.wall,
                request_id: ctx.request_id.as_bytes(),
                conn: &ctx.conn,
                client_ip: ctx.client_ip,
                protocol: ctx.protocol().label(),
                http_method: ctx.http_method.as_str(),
                path: ctx.uri.path(),
                // The metrics' series knows them already; otherwise split the path.
                names: series
                    .as_deref()
                    .and_then(MethodSeries::names)
                    .or_else(|| methods::split_path(ctx.rpc_path())),
                code: code.filter(|_| ctx.protocol() != CallProtocol::Http),
                http_status: ctx.http_status(),
                duration,
                bytes_in,
                bytes_out,
                upstream: ctx.upstream.get().map(|u| &**u),
                endpoint: ctx.endpoint.get().map(|e| &**e),
                user_agent: ctx.user_agent.as_ref().map(HeaderValue::as_bytes),
            };
            access_log::log(&line, &self.metrics.access_log_dropped);
        }
        if let Some(span) = span {
            span.end(SpanEnd {
                end: ctx.wall + duration,
                rpc_path: ctx.rpc_path(),
                code,
                http_status: ctx.http_status(),
                protocol: ctx.protocol().label(),
                upstream: ctx.upstream.get().map(|u| &**u),
                endpoint: ctx.endpoint.get().map(|e| &**e),
                request_id: ctx.request_id.to_str().unwrap_or_default(),
                client: ctx.client_ip.to_string(),
            });
        }
    }

    /// Counts a finished call; returns the method's series.
    fn count(
        &self,
        ctx: &CallContext,
        code: Code,
        seconds: f64,
        bytes_in: u64,
        bytes_out: u64,
    ) -> Arc<MethodSeries> {
        let m = &self.metrics;
        let protocol = ctx.protocol();
        m.in_flight(protocol).dec();
        let upstream = ctx.upstream.get().map_or("", |u| u);
        let series = match ctx.series.get() {
            Some(s) => s.clone(),
            None => {
                // Started is counted now, under the name the call has shown it deserves: the
                // method exists when it answered anything but UNIMPLEMENTED, or sent a message.
                let exists =
                    ctx.upstream.get().is_some() && (code != Code::Unimplemented || ctx.answered());
                let s = if exists {
                    let kind = ctx.grpc_type.get().copied().unwrap_or(GrpcType::Unknown);
                    let s = m.methods.admit(upstream, ctx.rpc_path(), kind);
                    s.learn(Some(kind));
                    s
                } else {
                    m.methods.unknown(upstream)
                };
                if let Some(p) = s.protocol(m, protocol) {
                    p.start();
                }
                s
            }
        };
        series.learn(ctx.grpc_type.get().copied());
        if let Some(p) = series.protocol(m, protocol) {
            p.finish(m, code, seconds);
            p.bytes(bytes_in, bytes_out);
        }
        if ctx.transcoding_failed() {
            m.transcoding_error(upstream);
        }
        series
    }
}

/// A response body that counts the bytes it hands out and, when dropped, records how the
/// call ended if nothing else did (the caller went away, or an HTTP refusal).
pub(crate) struct ObservedBody {
    inner: BoxBody,
    ctx: Arc<CallContext>,
    done: bool,
}

impl ObservedBody {
    pub(crate) fn new(inner: BoxBody, ctx: Arc<CallContext>) -> Self {
        ObservedBody {
            inner,
            ctx,
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
    }
}
