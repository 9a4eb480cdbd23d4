//! One upstream call, whatever the caller's protocol: deadline, headers, sending, and
//! classifying the reply into metadata plus a [`GrpcStream`].

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use futures_util::future::{Either, FutureExt as _};

use crate::body::{self, BoxBody, End, FailureSlot, GrpcStream, RequestBody};
use crate::observe::CallContext;
use crate::protocol::compression::Encoding;
use crate::protocol::grpc::metadata::is_hop_or_protocol_header;
use crate::protocol::grpc::status::GRPC_STATUS;
use crate::protocol::grpc::timeout::{encode_grpc_timeout, GRPC_TIMEOUT};
use crate::protocol::grpc::GRPC_ENCODING;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::Method;
use crate::routing::Target;
use crate::upstream::{RetrySpec, UpstreamBody, UpstreamClient};

/// A call on its way to an upstream.
pub(crate) struct Call {
    /// The call's context (request id, client, what it ended with).
    pub(crate) ctx: Arc<CallContext>,
    upstream: Arc<UpstreamClient>,
    name: Arc<str>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) limit: usize,
    /// Longest gap in a request body that must arrive whole (HTTP/1.1, Connect unary).
    pub(crate) body_timeout: Duration,
    pub(crate) failure: FailureSlot,
    /// The route's retry policy.
    retry: Option<RetrySpec>,
}

/// What the upstream answered: response metadata and the rest of the call as a stream.
pub(crate) struct Reply {
    /// Response-header metadata (protocol headers removed).
    pub(crate) metadata: HeaderMap,
    /// The upstream's `content-type`, when it answered gRPC.
    pub(crate) content_type: Option<HeaderValue>,
    /// Messages and the end.
    pub(crate) stream: GrpcStream,
    /// The call's context, where the end is recorded (none for errors made before a call).
    pub(crate) ctx: Option<Arc<CallContext>>,
}

impl Reply {
    /// The same reply with each message transcoded from protobuf to JSON (decompressed first
    /// when the upstream compressed it).
    pub(crate) fn into_json(mut self, method: &Method) -> Reply {
        let encoding = super::grpc_web::header_encoding(&self.metadata, GRPC_ENCODING)
            .unwrap_or(Encoding::Identity);
        self.metadata.remove(GRPC_ENCODING);
        let m = method.clone();
        let ctx = self.ctx.clone();
        self.stream = self.stream.transforming(
            encoding,
            Arc::new(move |msg: bytes::Bytes, out: &mut Vec<u8>| {
                let json = m.response_json_into(msg, out);
                if let (Err(_), Some(ctx)) = (&json, &ctx) {
                    ctx.set_transcoding_failed();
                }
                json
            }),
        );
        self
    }

    /// The same reply, recording its end in `ctx`.
    pub(crate) fn with_ctx(mut self, ctx: Arc<CallContext>) -> Reply {
        self.ctx = Some(ctx);
        self
    }

    /// A call that ends with `status` before any message.
    pub(crate) fn error(status: Status) -> Reply {
        Reply {
            metadata: HeaderMap::new(),
            content_type: None,
            stream: GrpcStream::ended(End::status(status)),
            ctx: None,
        }
    }
}

impl Call {
    /// Prepares a call; the deadline is the shorter of the caller's timeout and the route's.
    pub(crate) fn new(
        upstream: Arc<UpstreamClient>,
        target: Target,
        caller_timeout: Option<Duration>,
        ctx: Arc<CallContext>,
    ) -> Call {
        let timeout = match (caller_timeout, target.timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let name = upstream.name.clone();
        Call {
            ctx,
            upstream,
            name,
            deadline: timeout.and_then(|t| Instant::now().checked_add(t)),
            limit: target.max_message_size,
            body_timeout: target.body_timeout,
            failure: Arc::new(OnceLock::new()),
            retry: target.retry,
        }
    }

    /// The upstream request headers: the caller's metadata without hop-by-hop and protocol
    /// headers, plus `content-type`, `te: trailers` and the remaining deadline budget.
    /// The caller's map is reused: removing a few names costs less than building a new map.
    pub(crate) fn upstream_headers(
        &self,
        caller: HeaderMap,
        content_type: HeaderValue,
    ) -> HeaderMap {
        let mut h = caller;
        // Hop and protocol headers go, except the two set next (`insert` replaces them in
        // place, which costs less than removing them first).
        body::remove_connection_listed(&mut h);
        body::remove_names(&mut h, |n| {
            n != header::CONTENT_TYPE && n != header::TE && is_hop_or_protocol_header(n)
        });
        h.insert(header::CONTENT_TYPE, content_type);
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        if let Some(d) = self.deadline {
            h.insert(
                GRPC_TIMEOUT,
                encode_grpc_timeout(d.saturating_duration_since(Instant::now())),
            );
        }
        h
    }

    /// [`Call::start`] for a request whose body is the caller's. hyper hands an HTTP/1.1 body
    /// over only after the service has been called; there the body is whole (HTTP/1.1 has no
    /// full duplex), so with `caller_h1` its first frame is awaited (within the deadline) and
    /// goes upstream with the headers, in one write. An HTTP/2 caller's first DATA frame has
    /// usually arrived with its headers, and waiting could stall a bidi call whose client waits
    /// for the response headers first.
    pub(crate) fn start_request(
        self,
        req: Request<RequestBody>,
        caller_h1: bool,
    ) -> impl Future<Output = Reply> + Send {
        if !caller_h1 {
            return Either::Left(self.start(req.map(|b| b.boxed_unsync())));
        }
        let (parts, mut body) = req.into_parts();
        Either::Right(async move {
            match self.deadline {
                Some(d) => {
                    let _ = tokio::time::timeout_at(d, body.first_frame()).await;
                }
                None => body.first_frame().await,
            }
            self.start(Request::from_parts(parts, body.boxed_unsync()))
                .await
        })
    }

    /// Sends the request and waits for the response head (bounded by the deadline). The
    /// request is handed to an upstream connection before this returns, when one is open, so
    /// the future holds that send and what classifying the answer needs, nothing more.
    pub(crate) fn start(&self, req: Request<BoxBody>) -> impl Future<Output = Reply> + Send {
        let answer = Answer {
            ctx: self.ctx.clone(),
            name: self.name.clone(),
            deadline: self.deadline,
            limit: self.limit,
            failure: self.failure.clone(),
        };
        if self.deadline.is_some_and(|d| d <= Instant::now()) {
            let expired = Reply::error(body::deadline_exceeded()).with_ctx(answer.ctx);
            return Either::Left(std::future::ready(expired));
        }
        let sending = self.upstream.start(req, self.deadline, self.retry);
        // Chained rather than awaited in an async block: a block that awaits a future it
        // captured holds it twice (captured, and moved into its await), and this is the
        // largest part of every call's future.
        let bounded = match self.deadline {
            Some(d) => Either::Left(tokio::time::timeout_at(d, sending).map(|r| r.ok())),
            None => Either::Right(sending.map(Some)),
        };
        Either::Right(bounded.then(move |sent| answer.finish(sent)))
    }
}

/// What turning the upstream's answer into a [`Reply`] needs of the call.
struct Answer {
    ctx: Arc<CallContext>,
    name: Arc<str>,
    deadline: Option<Instant>,
    limit: usize,
    failure: FailureSlot,
}

impl Answer {
    /// The reply to what the send came to (`None`: the deadline passed first).
    async fn finish(self, sent: Option<crate::upstream::Answer>) -> Reply {
        match sent {
            None => Reply::error(body::deadline_exceeded()).with_ctx(self.ctx),
            Some(Ok(res)) => {
                let reply = self.classify(res).await;
                reply.with_ctx(self.ctx)
            }
            Some(Err(e)) => {
                let endpoint = e.endpoint().cloned();
                let status = self
                    .failure
                    .get()
                    .cloned()
                    .unwrap_or_else(|| e.into_status(&self.name));
                if let Some(endpoint) = endpoint {
                    let _ = self.ctx.endpoint.set(endpoint);
                }
                Reply::error(status).with_ctx(self.ctx)
            }
        }
    }

    async fn classify(&self, res: Response<UpstreamBody>) -> Reply {
        let _ = self.ctx.endpoint.set(res.body().endpoint().clone());
        let (parts, body) = res.into_parts();
        let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
        let is_grpc = content_type
            .as_ref()
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
        if parts.headers.contains_key(GRPC_STATUS) && body.is_end_stream() {
            // Trailers-Only: one header block carries status and metadata.
            return Reply {
                metadata: HeaderMap::new(),
                content_type: content_type.filter(|_| is_grpc),
                stream: GrpcStream::ended(End::from_trailers(parts.headers, &self.name)),
                ctx: None,
            };
        }
        if parts.status != StatusCode::OK || !is_grpc {
            // Boxed (in a statement of its own, so no unboxed temporary stays in the state):
            // a rare path that would otherwise enlarge every call's future.
            let snippet = Box::pin(read_snippet(body, self.deadline));
            let snippet = snippet.await;
            let (code, what) = if parts.status != StatusCode::OK {
                (
                    Code::from_http_status(parts.status),
                    format!("HTTP {}", parts.status),
                )
            } else {
                let ct = content_type
                    .as_ref()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_else(|| "none".to_owned());
                (Code::Unknown, format!("content-type {ct:?}"))
            };
            // What the body said may name hosts and software: it goes to the log only.
            tracing::warn!(
                request_id = ?self.ctx.request_id,
                upstream = %self.name,
                body = %snippet,
                "upstream answered {what}, not gRPC"
            );
            let message = format!("upstream {:?} answered {what}, not gRPC", self.name);
            let mut end = End::status(Status::new(code, message));
            end.not_found = parts.status == StatusCode::NOT_FOUND;
            return Reply {
                metadata: HeaderMap::new(),
                content_type: None,
                stream: GrpcStream::ended(end),
                ctx: None,
            };
        }
        let mut metadata = parts.headers;
        body::remove_connection_listed(&mut metadata);
        // A status in the headers of a response that has a body is not authoritative.
        body::remove_names(&mut metadata, |n| {
            body::is_status_header(n) || is_hop_or_protocol_header(n)
        });
        Reply {
            ctx: None,
            metadata,
            content_type,
            stream: GrpcStream::new(
                body,
                self.limit,
                self.deadline,
                self.failure.clone(),
                self.name.clone(),
                self.ctx.clone(),
            ),
        }
    }
}

/// The start of a non-gRPC reply's body, as one line of text, for the error message.
async fn read_snippet(mut body: UpstreamBody, deadline: Option<Instant>) -> String {
    const LIMIT: usize = 1024;
    let soon = Instant::now() + Duration::from_secs(2);
    let until = deadline.map_or(soon, |d| d.min(soon));
    let mut buf: Vec<u8> = Vec::new();
    let _ = tokio::time::timeout_at(until, async {
        while buf.len() < LIMIT {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                }
                _ => break,
            }
        }
    })
    .await;
    buf.truncate(LIMIT);
    let text = String::from_utf8_lossy(&buf);
    let mut line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.len() > 512 {
        let mut cut = 512;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// Builds the upstream request for the caller's URI (its path; a query, as in Connect GET, is
/// dropped), with headers and a body.
pub(crate) fn upstream_request<B>(caller: &http::Uri, headers: HeaderMap, body: B) -> Request<B> {
    let mut req = Request::new(body);
    *req.method_mut() = http::Method::POST;
    *req.version_mut() = http::Version::HTTP_2;
    // Without a query the caller's parsed path is reused as is (a reference-counted copy).
    *req.uri_mut() = match caller.path_and_query() {
        Some(pq) if pq.query().is_none() => http::Uri::from(pq.clone()),
        _ => http::Uri::try_from(caller.path()).unwrap_or_default(),
    };
    *req.headers_mut() = headers;
    req
}

/// Reads the caller's `grpc-timeout`; malformed values are ignored, like tonic does.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| crate::protocol::grpc::timeout::parse_grpc_timeout(v.as_bytes()))
}
