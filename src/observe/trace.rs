//! W3C trace context: the proxy's own span in every traced call, and optional OTLP export.
//!
//! A caller's `traceparent` is always followed: the upstream gets the same trace id with the
//! proxy's span id as its parent, and the caller's sampled flag. Without one, a new trace
//! starts only when tracing is configured (a `tracing` section), sampled at `sample_ratio`.
//! `tracestate` passes through unchanged (it stays in the headers), except when a malformed
//! `traceparent` is replaced. With `tracing.otlp.endpoint`, sampled spans are exported by the
//! OpenTelemetry SDK's batch processor (its own thread, bounded queue) over OTLP/gRPC.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

use crate::config;

/// `traceparent`.
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

const FLAG_SAMPLED: u8 = 0x01;
/// How long the exporter may take to send one batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// A `traceparent` as parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub(crate) trace_id: [u8; 16],
    pub(crate) parent_id: [u8; 8],
    pub(crate) flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value (version 00, or a later version's first fields).
    pub(crate) fn parse(v: &[u8]) -> Option<TraceParent> {
        // version "-" trace-id "-" parent-id "-" flags: 2+1+32+1+16+1+2 = 55.
        if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        let extra = v.len() > 55;
        if version == 0xff || (version == 0 && extra) || (extra && v[55] != b'-') {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, b) in parent_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

/// Lower-case hex only, as the spec requires.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(digit(two[0])? << 4 | digit(two[1])?)
}

/// The proxy's span in a call: its trace, its own id, its parent (the caller's span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceIds {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) parent_id: Option<[u8; 8]>,
    pub(crate) sampled: bool,
}

impl TraceIds {
    /// The `traceparent` the upstream gets.
    pub(crate) fn header(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 55];
        out[..3].copy_from_slice(b"00-");
        let mut o = 3;
        for b in &self.trace_id {
            out[o] = HEX[usize::from(b >> 4)];
            out[o + 1] = HEX[usize::from(b & 0xf)];
            o += 2;
        }
        out[o] = b'-';
        o += 1;
        for b in &self.span_id {
            out[o] = HEX[usize::from(b >> 4)];
            out[o + 1] = HEX[usize::from(b & 0xf)];
            o += 2;
        }
        out[o..].copy_from_slice(if self.sampled { b"-01" } else { b"-00" });
        HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// A span being recorded for export; ended when the call finishes.
pub(crate) struct SpanSlot(opentelemetry_sdk::trace::Span);

impl std::fmt::Debug for SpanSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpanSlot")
    }
}

/// What ends a span: the call's outcome.
pub(crate) struct SpanEnd<'a> {
    pub(crate) end: SystemTime,
    pub(crate) rpc_path: &'a str,
    pub(crate) code: Option<crate::protocol::grpc::Code>,
    pub(crate) http_status: u16,
    pub(crate) protocol: &'static str,
    pub(crate) upstream: Option<&'a str>,
    pub(crate) endpoint: Option<&'a str>,
    pub(crate) request_id: &'a str,
    pub(crate) client: String,
}

impl SpanSlot {
    /// Ends the span with the call's outcome; the batch processor exports it.
    pub(crate) fn end(mut self, e: SpanEnd<'_>) {
        let mut attrs = vec![
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("switchboard.protocol", e.protocol),
            KeyValue::new("switchboard.request_id", e.request_id.to_owned()),
            KeyValue::new("http.response.status_code", i64::from(e.http_status)),
            KeyValue::new("client.address", e.client),
        ];
        if let Some((service, method)) = super::methods::split_path(e.rpc_path) {
            attrs.push(KeyValue::new("rpc.service", service.to_owned()));
            attrs.push(KeyValue::new("rpc.method", method.to_owned()));
        }
        if let Some(code) = e.code {
            attrs.push(KeyValue::new(
                "rpc.grpc.status_code",
                i64::from(code.as_i32()),
            ));
        }
        if let Some(u) = e.upstream {
            attrs.push(KeyValue::new("switchboard.upstream", u.to_owned()));
        }
        if let Some(ep) = e.endpoint {
            attrs.push(KeyValue::new("server.address", ep.to_owned()));
        }
        self.0.set_attributes(attrs);
        match e.code {
            Some(crate::protocol::grpc::Code::Ok) => {}
            Some(code) => self
                .0
                .set_status(Status::error(super::methods::code_name(code))),
            None if e.http_status >= 500 => self.0.set_status(Status::error("HTTP error")),
            None => {}
        }
        self.0.end_with_timestamp(e.end);
    }
}

/// The tracing stage of one config snapshot.
#[derive(Debug)]
pub(crate) struct Tracer {
    /// Whether calls without a caller trace start one.
    enabled: bool,
    ratio: f64,
    export: Option<Arc<Export>>,
}

impl Tracer {
    /// The stage for `config`; the exporter of `previous` is kept when its settings are the
    /// same, so a reload does not lose queued spans or reconnect.
    pub(crate) fn new(
        config: &config::Tracing,
        previous: Option<&Tracer>,
    ) -> Result<Tracer, String> {
        let export = match &config.otlp_endpoint {
            None => None,
            Some(endpoint) => {
                let same = previous
                    .and_then(|p| p.export.as_ref())
                    .filter(|e| e.settings == *config);
                match same {
                    Some(e) => Some(e.clone()),
                    None => Export::new(endpoint, config)?.map(Arc::new),
                }
            }
        };
        Ok(Tracer {
            enabled: config.enabled,
            ratio: config.sample_ratio,
            export,
        })
    }

    /// Whether any call can carry a trace without a caller's.
    pub(crate) fn exports(&self) -> bool {
        self.export.is_some()
    }

    /// Starts the proxy's span for a request: reads the caller's `traceparent`, writes the
    /// one the upstream gets. None when the call is not traced.
    pub(crate) fn begin(
        &self,
        headers: &mut HeaderMap,
        start: SystemTime,
        path: &str,
    ) -> Option<(TraceIds, Option<Box<SpanSlot>>)> {
        let caller = match headers.get(&TRACEPARENT) {
            None => None,
            Some(v) => match TraceParent::parse(v.as_bytes()) {
                Some(p) => Some(p),
                // A malformed one is left alone when tracing is off, and replaced (with the
                // state that belonged to it) when a new trace starts.
                None if !self.enabled => return None,
                None => {
                    headers.remove(&TRACESTATE);
                    None
                }
            },
        };
        if caller.is_none() && !self.enabled {
            return None;
        }
        let (ids, span) = match &self.export {
            Some(export) => export.start(caller, start, path),
            None => (self.own_ids(caller), None),
        };
        headers.insert(TRACEPARENT, ids.header());
        Some((ids, span))
    }

    fn own_ids(&self, caller: Option<TraceParent>) -> TraceIds {
        let span_id = fastrand::u64(1..).to_be_bytes();
        match caller {
            Some(p) => TraceIds {
                trace_id: p.trace_id,
                span_id,
                parent_id: Some(p.parent_id),
                sampled: p.flags & FLAG_SAMPLED != 0,
            },
            None => TraceIds {
                trace_id: fastrand::u128(1..).to_be_bytes(),
                span_id,
                parent_id: None,
                sampled: self.ratio >= 1.0 || fastrand::f64() < self.ratio,
            },
        }
    }

    /// Sends the spans queued so far (at shutdown), waiting up to the export timeout.
    pub(crate) fn flush(&self) {
        if let Some(e) = &self.export {
            if let Err(err) = e.provider.force_flush() {
                tracing::warn!(error = %err, "flushing trace spans failed");
            }
        }
    }
}

/// The OTLP exporter and the SDK tracer in front of it.
pub(crate) struct Export {
    settings: config::Tracing,
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("endpoint", &self.settings.otlp_endpoint)
            .finish()
    }
}

impl Export {
    /// The exporter to `endpoint`. Its channel connects lazily and needs a tokio runtime, so
    /// outside one (`switchboard check`) there is none: the settings were validated already.
    fn new(endpoint: &str, config: &config::Tracing) -> Result<Option<Export>, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Ok(None);
        }
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("tracing.otlp.endpoint: {e}"))?;
        // Spans leave at least every second: a trace shows up while someone looks for it.
        let batch = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                opentelemetry_sdk::trace::BatchConfigBuilder::default()
                    .with_scheduled_delay(Duration::from_secs(1))
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(batch)
            // The caller's decision is followed; new traces are sampled at the ratio.
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("switchboard");
        Ok(Some(Export {
            settings: config.clone(),
            provider,
            tracer,
        }))
    }

    fn start(
        &self,
        caller: Option<TraceParent>,
        start: SystemTime,
        path: &str,
    ) -> (TraceIds, Option<Box<SpanSlot>>) {
        let parent = match caller {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from_bytes(p.trace_id),
                SpanId::from_bytes(p.parent_id),
                TraceFlags::new(p.flags),
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let name: String = path.trim_start_matches('/').chars().take(200).collect();
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .start_with_context(&self.tracer, &parent);
        let sc = span.span_context();
        let ids = TraceIds {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            parent_id: caller.map(|p| p.parent_id),
            sampled: sc.is_sampled(),
        };
        let slot = span.is_recording().then(|| Box::new(SpanSlot(span)));
        (ids, slot)
    }
}

impl Drop for Export {
    /// Shutting the provider down joins its thread and sends what is queued; that must not
    /// block a runtime worker (the last call of an old snapshot may drop it there).
    fn drop(&mut self) {
        let provider = self.provider.clone();
        let _ = std::thread::Builder::new()
            .name("otlp-shutdown".into())
            .spawn(move || {
                let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
            });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_spec_example_and_refuses_bad_ones() {
        let p = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.parent_id[7], 0xb7);
        assert_eq!(p.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
        // A later version may append fields.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
        assert!(TraceParent::parse(later.as_bytes()).is_some());
    }

    fn tracer(enabled: bool, ratio: f64) -> Tracer {
        Tracer {
            enabled,
            ratio,
            export: None,
        }
    }

    #[test]
    fn a_caller_trace_continues_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static(GOOD));
        h.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        let (ids, _) = tracer(false, 0.0)
            .begin(&mut h, SystemTime::now(), "/a.B/C")
            .unwrap();
        let sent = h[&TRACEPARENT].to_str().unwrap().to_owned();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(sent.ends_with("-01"), "{sent}");
        assert_ne!(&sent[36..52], "00f067aa0ba902b7");
        assert_eq!(
            TraceParent::parse(sent.as_bytes()).unwrap().parent_id,
            ids.span_id
        );
        assert_eq!(h[&TRACESTATE], "k=v");
    }

    #[test]
    fn without_a_caller_trace_one_starts_only_when_enabled() {
        let mut h = HeaderMap::new();
        assert!(tracer(false, 1.0)
            .begin(&mut h, SystemTime::now(), "/")
            .is_none());
        assert!(h.get(&TRACEPARENT).is_none());
        let (ids, _) = tracer(true, 1.0)
            .begin(&mut h, SystemTime::now(), "/")
            .unwrap();
        assert!(ids.sampled);
        assert_eq!(ids.parent_id, None);
        let p = TraceParent::parse(h[&TRACEPARENT].as_bytes()).unwrap();
        assert_eq!(
            (p.trace_id, p.parent_id, p.flags),
            (ids.trace_id, ids.span_id, 1)
        );
        let mut h = HeaderMap::new();
        let (ids, _) = tracer(true, 0.0)
            .begin(&mut h, SystemTime::now(), "/")
            .unwrap();
        assert!(!ids.sampled);
        assert!(h[&TRACEPARENT].to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn a_malformed_caller_trace_is_replaced_only_when_enabled() {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_static("garbage"));
        h.insert(TRACESTATE, HeaderValue::from_static("k=v"));
        assert!(tracer(false, 1.0)
            .begin(&mut h, SystemTime::now(), "/")
            .is_none());
        assert_eq!(h[&TRACEPARENT], "garbage");
        assert!(tracer(true, 1.0)
            .begin(&mut h, SystemTime::now(), "/")
            .is_some());
        assert!(TraceParent::parse(h[&TRACEPARENT].as_bytes()).is_some());
        assert!(h.get(&TRACESTATE).is_none());
    }
}
