//! Connect calls. Unary (POST and GET): the bare message is framed for gRPC, and the reply is
//! collected (bounded) because the HTTP status and `trailer-` headers depend on the gRPC
//! trailers. Streams: envelopes pass through; the end becomes the end-stream message.

use std::future::poll_fn;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt as _;

use super::call::{upstream_request, Call, Reply};
use super::Json;
use crate::body::{
    self, BoxBody, CallerBody, End, Event, GrpcStream, Render, RenderBody, RequestBody,
};
use crate::protocol::compression::{self, Encoding};
use crate::protocol::connect::{self, error, get, Kind, Mode, FLAG_END_STREAM};
use crate::protocol::grpc::frame::{self, FrameDecoder, FLAG_COMPRESSED};
use crate::protocol::grpc::{
    Code, Status, CONTENT_TYPE_JSON, CONTENT_TYPE_PROTO, GRPC_ACCEPT_ENCODING, GRPC_ENCODING,
};
use crate::protocol::json::Method;
use crate::protocol::Codec;

/// Unary responses smaller than this are not compressed.
const COMPRESS_MIN_BYTES: usize = 1024;
/// Longest GET URL accepted; longer ones get 414 URI Too Long (clients should POST instead).
const MAX_GET_URL: usize = 48 << 10;

/// Forwards one Connect call; `json` says how JSON messages are handled.
pub(crate) async fn forward(
    call: Call,
    mode: Mode,
    json: Option<Json>,
    req: Request<CallerBody>,
) -> Response<BoxBody> {
    let transcode = json.as_ref().and_then(Json::method);
    match mode.kind {
        Kind::Stream => stream(call, mode, transcode, req).await,
        Kind::Unary | Kind::Get => unary(call, mode, transcode, req).await,
    }
}

/// HTTP 404 with the Connect error JSON of `status`.
pub(crate) fn not_found(status: Status) -> Response<BoxBody> {
    let mut res = unary_error(&status, HeaderMap::new(), HeaderMap::new());
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

/// An error that stops a call before it reaches the upstream.
pub(crate) fn early_error(mode: Mode, status: Status) -> Response<BoxBody> {
    match mode.kind {
        Kind::Stream => stream_response(mode, Reply::error(status), false),
        Kind::Unary | Kind::Get => unary_error(&status, HeaderMap::new(), HeaderMap::new()),
    }
}

/// The upstream content type: JSON only when it is passed through.
fn grpc_content_type(codec: Codec, transcode: Option<(&Method, bool)>) -> HeaderValue {
    HeaderValue::from_static(match (codec, transcode) {
        (Codec::Json, None) => CONTENT_TYPE_JSON,
        _ => CONTENT_TYPE_PROTO,
    })
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> &str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn unary(
    call: Call,
    mut mode: Mode,
    transcode: Option<(&Method, bool)>,
    req: Request<CallerBody>,
) -> Response<BoxBody> {
    let (mut parts, body) = req.into_parts();
    let client_gzip = Encoding::accepts_gzip(header_str(&parts.headers, header::ACCEPT_ENCODING));
    let url_len = parts.uri.path().len() + parts.uri.query().map_or(0, str::len);
    if mode.kind == Kind::Get && url_len > MAX_GET_URL {
        let status = Status::new(
            Code::ResourceExhausted,
            format!("URL of {url_len} bytes exceeds the limit of {MAX_GET_URL} bytes; send the call with POST"),
        );
        call.ctx.set_code(status.code);
        let mut res = unary_error(&status, HeaderMap::new(), HeaderMap::new());
        *res.status_mut() = StatusCode::URI_TOO_LONG;
        return res;
    }
    // The request is read within the call's deadline, and no gap in it may last longer
    // than the body timeout: a caller that stalls mid-body holds nothing for long.
    let reading = read_unary_message(&call, &mut mode, &parts, body);
    let read = match call.deadline {
        Some(d) => tokio::time::timeout_at(d, reading)
            .await
            .unwrap_or_else(|_| Err(body::deadline_exceeded())),
        None => reading.await,
    };
    let message = match read {
        Ok(m) => m,
        Err(status) => return call_error(&call, &status, HeaderMap::new(), HeaderMap::new()),
    };
    let message = match transcode {
        Some((method, ignore)) => match method.request_to_proto(&message.contiguous(), ignore) {
            Ok(m) => Chunks(vec![m]),
            Err(status) => {
                call.ctx.set_transcoding_failed();
                return call_error(&call, &status, HeaderMap::new(), HeaderMap::new());
            }
        },
        None => message,
    };
    let mut headers = call.upstream_headers(
        std::mem::take(&mut parts.headers),
        grpc_content_type(mode.codec, transcode),
    );
    headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
    // The frame header goes first as a chunk of its own: the message is not copied.
    let header = Bytes::copy_from_slice(&frame::header(0, message.len()));
    let frame = std::iter::once(header).chain(message.0).collect();
    let upstream_req = upstream_request(&parts.uri, headers, body::chunks(frame));
    // Not kept across the awaits that follow: less state per call.
    drop(parts);
    let reply = call.start(upstream_req).await;
    let mut metadata = reply.metadata;
    let upstream_encoding = metadata.remove(GRPC_ENCODING);
    metadata.remove(GRPC_ACCEPT_ENCODING);
    let (frames, end) = collect(reply.stream, call.limit).await;
    let mut status = end.status;
    let mut payload = None;
    if status.code == Code::Ok {
        let decoded = unary_payload(frames, upstream_encoding.as_ref(), call.limit);
        let converted = match (transcode, decoded) {
            (Some((method, _)), Ok(p)) => {
                let json = method.response_to_json(&p);
                if json.is_err() {
                    call.ctx.set_transcoding_failed();
                }
                json
            }
            (_, decoded) => decoded,
        };
        match converted {
            Ok(p) => payload = Some(p),
            Err(s) => status = s,
        }
    }
    let Some(payload) = payload else {
        let mut res = call_error(&call, &status, metadata, end.metadata);
        if end.not_found && status.code == Code::Unimplemented {
            *res.status_mut() = StatusCode::NOT_FOUND;
        }
        return res;
    };
    call.ctx.set_answered();
    call.ctx.set_code(Code::Ok);
    let mut res = Response::new(body::empty());
    let h = res.headers_mut();
    *h = metadata;
    add_trailer_headers(h, &end.metadata);
    h.insert(header::CONTENT_TYPE, mode.content_type());
    if mode.kind == Kind::Get {
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    let payload = if client_gzip && payload.len() >= COMPRESS_MIN_BYTES {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        compression::gzip(&payload)
    } else {
        payload
    };
    *res.body_mut() = body::full(payload);
    res
}

/// A message as the chunks it arrived in.
pub(super) struct Chunks(Vec<Bytes>);

impl Chunks {
    fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// The message in one buffer (copied only when it came in several chunks).
    pub(super) fn contiguous(self) -> Bytes {
        match <[Bytes; 1]>::try_from(self.0) {
            Ok([one]) => one,
            Err(chunks) => chunks.concat().into(),
        }
    }
}

/// The request message of a unary call: the POST body (bounded, decompressed) or the GET query.
async fn read_unary_message(
    call: &Call,
    mode: &mut Mode,
    parts: &http::request::Parts,
    body: CallerBody,
) -> Result<Chunks, Status> {
    connect::check_version(&parts.headers)?;
    if mode.kind == Kind::Get {
        let g = get::parse(parts.uri.query().unwrap_or_default(), call.limit)?;
        mode.codec = g.codec;
        return Ok(Chunks(vec![g.message]));
    }
    read_body(call, &parts.headers, body).await
}

/// A whole request body (a Connect unary message, a REST body): bounded by the call's message
/// limit, with no gap longer than the body timeout, decompressed per `content-encoding`.
/// Callers bound the whole read by the call's deadline.
pub(super) async fn read_body(
    call: &Call,
    headers: &HeaderMap,
    mut body: CallerBody,
) -> Result<Chunks, Status> {
    let encoding_name = header_str(headers, header::CONTENT_ENCODING);
    let encoding =
        Encoding::parse(encoding_name).ok_or_else(|| compression::unsupported(encoding_name))?;
    let mut chunks = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout(call.body_timeout, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) => {
                return Err(Status::new(
                    Code::DeadlineExceeded,
                    format!(
                        "the request body stalled: no data for {} (limits.body_timeout)",
                        crate::config::units::format_duration(call.body_timeout)
                    ),
                ))
            }
        };
        let frame = frame.map_err(|e| {
            Status::new(Code::Cancelled, format!("reading the request failed: {e}"))
        })?;
        if let Ok(data) = frame.into_data() {
            call.ctx.add_bytes_in(data.len());
            len += data.len();
            if len > call.limit {
                return Err(Status::new(
                    Code::ResourceExhausted,
                    format!("request message exceeds the limit of {} bytes", call.limit),
                ));
            }
            chunks.push(data);
        }
    }
    let message = Chunks(chunks);
    if encoding == Encoding::Identity {
        return Ok(message);
    }
    compression::decompress(encoding, &message.contiguous(), call.limit).map(|m| Chunks(vec![m]))
}

/// Reads a reply to its end, keeping whole messages (each within the limit).
pub(super) async fn collect(mut stream: GrpcStream, limit: usize) -> (Vec<frame::Frame>, End) {
    let mut decoder = FrameDecoder::new(limit);
    let mut frames = Vec::new();
    loop {
        match poll_fn(|cx| stream.poll_event(cx)).await {
            Some(Event::Data(data)) => {
                decoder.push(&data);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(e) => {
                            return (
                                frames,
                                End::status(Status::new(Code::Internal, e.to_string())),
                            )
                        }
                    }
                }
            }
            Some(Event::End(end)) => return (frames, end),
            None => {
                return (
                    frames,
                    End::status(Status::new(Code::Internal, "upstream reply ended early")),
                )
            }
        }
    }
}

/// The single response message of a successful unary call, decompressed.
pub(super) fn unary_payload(
    mut frames: Vec<frame::Frame>,
    upstream_encoding: Option<&HeaderValue>,
    limit: usize,
) -> Result<Bytes, Status> {
    if frames.len() != 1 {
        return Err(Status::new(
            Code::Unimplemented,
            format!(
                "upstream sent {} response messages for a unary call; expected 1",
                frames.len()
            ),
        ));
    }
    let f = frames.remove(0);
    if f.flags & FLAG_COMPRESSED == 0 {
        return Ok(f.payload);
    }
    let name = upstream_encoding
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    match Encoding::parse(name) {
        Some(Encoding::Gzip) => compression::decompress(Encoding::Gzip, &f.payload, limit),
        _ => Err(Status::new(
            Code::Internal,
            format!("upstream sent a compressed message with grpc-encoding {name:?}"),
        )),
    }
}

/// Trailing metadata as `trailer-<name>` headers.
fn add_trailer_headers(headers: &mut HeaderMap, trailers: &HeaderMap) {
    for (name, value) in trailers {
        if let Ok(n) = HeaderName::from_bytes(format!("trailer-{name}").as_bytes()) {
            headers.append(n, value.clone());
        }
    }
}

/// [`unary_error`] for a call, recording its status.
fn call_error(
    call: &Call,
    status: &Status,
    metadata: HeaderMap,
    trailers: HeaderMap,
) -> Response<BoxBody> {
    call.ctx.set_code(status.code);
    unary_error(status, metadata, trailers)
}

fn unary_error(status: &Status, metadata: HeaderMap, trailers: HeaderMap) -> Response<BoxBody> {
    let mut res = Response::new(body::full(error::error_body(status)));
    *res.status_mut() = error::http_status(status.code);
    let h = res.headers_mut();
    *h = metadata;
    add_trailer_headers(h, &trailers);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

async fn stream(
    call: Call,
    mode: Mode,
    transcode: Option<(&Method, bool)>,
    req: Request<CallerBody>,
) -> Response<BoxBody> {
    // Built before the await, so the caller's request is not part of the call's state.
    let (upstream_req, client_gzip) = match stream_upstream(&call, mode, transcode, req) {
        Ok(r) => r,
        Err(status) => return stream_response(mode, Reply::error(status), false),
    };
    let mut reply = call.start(upstream_req).await;
    if let Some((method, _)) = transcode {
        reply = reply.into_json(method);
    }
    stream_response(mode, reply, client_gzip)
}

/// The upstream request of a Connect stream, and whether the caller accepts gzip.
fn stream_upstream(
    call: &Call,
    mode: Mode,
    transcode: Option<(&Method, bool)>,
    req: Request<CallerBody>,
) -> Result<(Request<BoxBody>, bool), Status> {
    let (mut parts, body) = req.into_parts();
    let client_gzip = Encoding::accepts_gzip(header_str(&parts.headers, connect::ACCEPT_ENCODING));
    connect::check_version(&parts.headers)?;
    let encoding_name = header_str(&parts.headers, connect::CONTENT_ENCODING);
    let encoding =
        Encoding::parse(encoding_name).ok_or_else(|| compression::unsupported(encoding_name))?;
    let mut headers = call.upstream_headers(
        std::mem::take(&mut parts.headers),
        grpc_content_type(mode.codec, transcode),
    );
    // Compressed upstream messages pass through untouched when the caller can read them;
    // transcoded ones are rewritten anyway.
    let accept = if client_gzip && transcode.is_none() {
        "gzip"
    } else {
        "identity"
    };
    headers.insert(GRPC_ACCEPT_ENCODING, HeaderValue::from_static(accept));
    let mut body = RequestBody::new(
        body,
        false,
        call.limit,
        call.failure.clone(),
        call.ctx.clone(),
    );
    if parts.version < http::Version::HTTP_2 {
        body = body.with_idle_timeout(call.body_timeout);
    }
    if let Some((method, ignore)) = transcode {
        body = body.recoding(
            encoding,
            Some(super::request_transcoder(method, ignore, &call.ctx)),
        );
    } else if encoding == Encoding::Gzip {
        body = body.recoding(Encoding::Gzip, None);
    }
    Ok((
        upstream_request(&parts.uri, headers, body.boxed_unsync()),
        client_gzip,
    ))
}

/// HTTP 200 with the metadata as headers, the messages, and the end-stream message.
fn stream_response(mode: Mode, reply: Reply, client_gzip: bool) -> Response<BoxBody> {
    let mut metadata = reply.metadata;
    let upstream_encoding = metadata.remove(GRPC_ENCODING);
    metadata.remove(GRPC_ACCEPT_ENCODING);
    if let Some(enc) = upstream_encoding.filter(|e| e != "identity") {
        metadata.insert(connect::CONTENT_ENCODING, enc);
    }
    if client_gzip {
        metadata.insert(
            connect::ACCEPT_ENCODING,
            HeaderValue::from_static(compression::SUPPORTED),
        );
    }
    metadata.insert(header::CONTENT_TYPE, mode.content_type());
    let mut res =
        Response::new(RenderBody::new(reply.stream, ConnectStreamRender, reply.ctx).boxed_unsync());
    *res.headers_mut() = metadata;
    res
}

/// Connect streams: envelopes unchanged, the end as the end-stream message.
struct ConnectStreamRender;

impl Render for ConnectStreamRender {
    fn end(&mut self, end: End) -> Frame<Bytes> {
        let json = error::end_stream_json(&end.status, &end.metadata);
        Frame::data(frame::encode(FLAG_END_STREAM, &json))
    }
}
