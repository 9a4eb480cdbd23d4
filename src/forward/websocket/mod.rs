//! Calls over improbable-eng's WebSocket transport (`grpc-websockets`, see
//! [`crate::protocol::websocket`] for the wire format).
//!
//! The upgrade is classified by `protocol::detect` like any call and answered here: the
//! `Origin` is checked against the CORS allowlist (no CORS preflight protects a WebSocket), the
//! handshake is accepted, and a session task takes the socket. The call itself is an ordinary
//! gRPC-Web call through the same pipeline: once the socket's first message (the call's
//! metadata) has arrived, the session builds a request whose headers are the upgrade's plus
//! that metadata and whose body is the socket's request messages, and hands it to
//! `Proxy::admit` (routing, auth, rate limits, one gRPC call via `Call`). The gRPC-Web response
//! that comes back is written to the socket message by message.

mod session;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::{reject, Proxy};
use crate::body::{self, BoxBody, BoxError, CallerBody};
use crate::observe::CallContext;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::grpc_web::Mode;
use crate::protocol::websocket::{self, is_handshake_header};
use crate::protocol::{Codec, Rejection};

/// Marks the response that accepted an upgrade: the pipeline's last stage leaves the call's
/// observation to the session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted;

/// Answers a classified `grpc-websockets` upgrade: refused (plain HTTP, no upgrade) or
/// accepted, with a session task started for the socket.
pub(crate) fn upgrade(
    proxy: &Arc<Proxy>,
    mut req: Request<Incoming>,
    ctx: &Arc<CallContext>,
) -> Response<BoxBody> {
    if !proxy.websocket.enabled {
        return reject(Rejection {
            status: StatusCode::NOT_FOUND,
            message: "the WebSocket transport is disabled (websocket.enabled: false)".into(),
            header: None,
        });
    }
    // Cross-site WebSocket hijacking: a browser opens a socket to any site and sends its
    // cookies; no preflight asks first. So the page's origin must be on the CORS allowlist.
    // An upgrade without `Origin` does not come from a browser page.
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        if !proxy.cors.allows(origin) {
            ctx.set_code(Code::PermissionDenied);
            let origin = String::from_utf8_lossy(origin.as_bytes()).into_owned();
            return reject(Rejection {
                status: StatusCode::FORBIDDEN,
                message: format!("origin {origin:?} is not allowed (cors.allow_origins)"),
                header: None,
            });
        }
    }
    let (status, headers) = match websocket::accept(&req) {
        Ok(accepted) => accepted,
        Err(rejection) => return reject(rejection),
    };
    // The socket's messages are checked against the route's message limit from the first.
    let limit = proxy
        .route(req.uri().path(), &req)
        .map_or(crate::config::DEFAULT_MAX_MESSAGE_SIZE, |t| {
            t.max_message_size
        });
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (parts, _) = req.into_parts();
    tokio::spawn(session::run(
        proxy.clone(),
        parts,
        on_upgrade,
        ctx.clone(),
        limit,
    ));
    let mut res = Response::new(body::empty());
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res.extensions_mut().insert(Accepted);
    res
}

/// How the call's messages are encoded, from the `content-type` in its metadata: gRPC-Web
/// binary, protobuf (what the improbable client sends) or JSON. Text mode has no use on a
/// socket that carries binary messages.
pub(crate) fn call_mode(headers: &HeaderMap) -> Result<Mode, Status> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(reply_mode());
    };
    let ct = ct.to_str().unwrap_or_default().trim().to_ascii_lowercase();
    match Mode::from_headers(&ct, None) {
        Ok(mode) if !mode.text_request => Ok(mode),
        _ => Err(Status::new(
            Code::InvalidArgument,
            format!(
                "content-type {ct:?} in grpc-websockets metadata; expected application/grpc-web+proto or application/grpc-web+json"
            ),
        )),
    }
}

/// The mode of what the socket carries back when the call fails before it has one.
pub(crate) fn reply_mode() -> Mode {
    Mode {
        text_request: false,
        text_response: false,
        codec: Codec::Proto,
        response_content_type: HeaderValue::from_static("application/grpc-web+proto"),
    }
}

/// Headers the proxy decides about the caller; metadata inside the socket cannot set them.
const PROXY_OWNED: [&str; 7] = [
    "host",
    "x-request-id",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// The call's request: the upgrade's method turned into POST, its headers without the
/// handshake's plus the metadata from the socket, and the socket's request messages as body.
fn call_request(
    mut parts: http::request::Parts,
    metadata: HeaderMap,
    identity_header: Option<&HeaderName>,
    body: SocketBody,
) -> Request<CallerBody> {
    parts.method = http::Method::POST;
    parts.extensions.remove::<hyper::ext::Protocol>();
    body::remove_names(&mut parts.headers, |n| {
        is_handshake_header(n) || n == header::UPGRADE || n == header::CONNECTION
    });
    let owned = |n: &HeaderName| {
        PROXY_OWNED.contains(&n.as_str()) || identity_header.is_some_and(|h| h == n)
    };
    // Metadata replaces an upgrade header of the same name; repeated names keep every value.
    let mut current: Option<HeaderName> = None;
    for (name, value) in metadata {
        if let Some(name) = name {
            if owned(&name) {
                current = None;
                continue;
            }
            parts.headers.insert(name.clone(), value);
            current = Some(name);
        } else if let Some(name) = &current {
            parts.headers.append(name.clone(), value);
        }
    }
    Request::from_parts(
        parts,
        CallerBody::Socket(http_body_util::BodyExt::boxed_unsync(body)),
    )
}

/// What the session hands the request body.
#[derive(Debug)]
enum Up {
    /// Bytes of request frames.
    Data(Bytes),
    /// The client sent its last message.
    Finish,
    /// The socket sent something the call cannot take.
    Fail(Status),
}

/// The request body of a WebSocket call: frames as the session reads them off the socket,
/// one message at a time (the session reads the next only when this has taken the last).
/// Ends cleanly only after the client's end-of-send message; a socket that closes before it
/// fails the body, which resets the upstream stream: a cancel, never a completed upload.
struct SocketBody {
    rx: mpsc::Receiver<Up>,
    done: bool,
}

impl http_body::Body for SocketBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        let up = std::task::ready!(self.rx.poll_recv(cx));
        match up {
            Some(Up::Data(data)) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Some(Up::Finish) => {
                self.done = true;
                Poll::Ready(None)
            }
            Some(Up::Fail(status)) => {
                self.done = true;
                Poll::Ready(Some(Err(body::failed(status))))
            }
            None => {
                self.done = true;
                Poll::Ready(Some(Err(body::failed(Status::new(
                    Code::Cancelled,
                    "the WebSocket closed before the client finished sending",
                )))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = Request::get("/a.B/C");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn body() -> SocketBody {
        SocketBody {
            rx: mpsc::channel(1).1,
            done: false,
        }
    }

    #[test]
    fn the_call_request_merges_metadata_but_not_what_the_proxy_owns() {
        let upgrade = parts(&[
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", "k"),
            ("cookie", "a=1"),
            ("x-request-id", "from-upgrade"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-client-cert", "verified"),
        ]);
        let metadata = websocket::parse_metadata(
            b"content-type: application/grpc-web+proto\r\nx-request-id: forged\r\nx-forwarded-for: 1.2.3.4\r\nx-client-cert: forged\r\nauthorization: Bearer t\r\nx-multi: 1\r\nx-multi: 2\r\ncookie: b=2\r\n",
        )
        .unwrap();
        let identity = HeaderName::from_static("x-client-cert");
        let req = call_request(upgrade, metadata, Some(&identity), body());
        let h = req.headers();
        assert_eq!(req.method(), http::Method::POST);
        assert!(!h.contains_key("upgrade") && !h.contains_key("sec-websocket-key"));
        assert_eq!(h["x-request-id"], "from-upgrade");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-client-cert"], "verified");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["cookie"], "b=2");
        assert_eq!(h.get_all("x-multi").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(!req.body().is_http());
    }

    #[test]
    fn call_modes() {
        let mut h = HeaderMap::new();
        assert_eq!(call_mode(&h).unwrap().codec, Codec::Proto);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+json"),
        );
        assert_eq!(call_mode(&h).unwrap().codec, Codec::Json);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text"),
        );
        assert_eq!(call_mode(&h).unwrap_err().code, Code::InvalidArgument);
    }
}
