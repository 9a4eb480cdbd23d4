//! Streaming bodies between caller and upstream. Message bytes pass through as the `Bytes`
//! they arrived in; only frame headers are inspected, to enforce size limits.

mod request;
mod response;

pub(crate) use request::*;
pub(crate) use response::*;

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::protocol::grpc::status::{GRPC_MESSAGE, GRPC_STATUS, GRPC_STATUS_DETAILS_BIN};
use crate::protocol::grpc::{Code, Status};

/// Error type of bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request and response the proxy makes.
pub(crate) type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub(crate) fn full(bytes: impl Into<Bytes>) -> BoxBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of these chunks, in order (each one DATA frame upstream).
pub(crate) fn chunks(chunks: std::collections::VecDeque<Bytes>) -> BoxBody {
    Chunked(chunks).boxed_unsync()
}

struct Chunked(std::collections::VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

/// A caller's request body: an HTTP request's, or the request messages of a WebSocket call.
pub(crate) enum CallerBody {
    /// The body hyper received.
    Http(Incoming),
    /// Request frames read from a WebSocket (see `forward::websocket`).
    Socket(BoxBody),
}

impl CallerBody {
    /// Whether the body arrives over HTTP/1.1 or HTTP/2 (not a WebSocket).
    pub(crate) fn is_http(&self) -> bool {
        matches!(self, CallerBody::Http(_))
    }
}

impl From<Incoming> for CallerBody {
    fn from(body: Incoming) -> CallerBody {
        CallerBody::Http(body)
    }
}

impl Body for CallerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            CallerBody::Http(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            CallerBody::Socket(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CallerBody::Http(b) => b.is_end_stream(),
            CallerBody::Socket(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            CallerBody::Http(b) => b.size_hint(),
            CallerBody::Socket(b) => b.size_hint(),
        }
    }
}

/// An empty body.
pub(crate) fn empty() -> BoxBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Rewrites one message on its way through (JSON ⇄ protobuf transcoding): the message in,
/// its new form appended to the buffer (which already holds the frame header, so a large
/// message is written once, straight into the frame that carries it on).
pub(crate) type Transform = Arc<dyn Fn(Bytes, &mut Vec<u8>) -> Result<(), Status> + Send + Sync>;

/// Where a request body that fails records why, so the response side reports that status
/// instead of the upstream reset it causes.
pub(crate) type FailureSlot = Arc<OnceLock<Status>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct RequestFailed(pub(super) Status);

/// The error of a caller body that cannot go on, with the status the caller gets for it
/// (rather than the upstream reset the error causes).
pub(crate) fn failed(status: Status) -> BoxError {
    Box::new(RequestFailed(status))
}

/// How a call ended: its status and the trailing metadata (without the status fields).
#[derive(Debug, Clone)]
pub(crate) struct End {
    /// The status.
    pub(crate) status: Status,
    /// Trailing metadata other than `grpc-status`, `grpc-message`, `grpc-status-details-bin`.
    pub(crate) metadata: HeaderMap,
    /// The upstream answered plain HTTP 404 (no such path): Connect callers get 404 too, as
    /// a Connect server answers an unknown procedure.
    pub(crate) not_found: bool,
}

impl End {
    /// An end with a status and no metadata.
    pub(crate) fn status(status: Status) -> End {
        End {
            status,
            metadata: HeaderMap::new(),
            not_found: false,
        }
    }

    /// Splits a trailer block (or Trailers-Only headers) into status and metadata.
    pub(crate) fn from_trailers(mut trailers: HeaderMap, upstream: &str) -> End {
        let status = Status::from_headers(&trailers).unwrap_or_else(|| {
            Status::new(
                Code::Unknown,
                format!("upstream {upstream:?} sent trailers without grpc-status"),
            )
        });
        remove_names(&mut trailers, |n| {
            is_status_header(n)
                // HTTP's own, present when a Trailers-Only block doubles as response headers.
                || n == http::header::DATE
                || crate::protocol::grpc::metadata::is_hop_or_protocol_header(n)
        });
        End {
            status,
            metadata: trailers,
            not_found: false,
        }
    }
}

/// `grpc-status`, `grpc-message` or `grpc-status-details-bin`.
pub(crate) fn is_status_header(name: &http::HeaderName) -> bool {
    name == GRPC_STATUS || name == GRPC_MESSAGE || name == GRPC_STATUS_DETAILS_BIN
}

/// Removes the headers named in `connection` (rare: HTTP/1.1 callers, usually `keep-alive`).
pub(crate) fn remove_connection_listed(headers: &mut HeaderMap) {
    if !headers.contains_key(http::header::CONNECTION) {
        return;
    }
    let listed: Vec<http::HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| http::HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
}

/// Removes every header whose name `drop` selects. Usually none or all of them are (the map is
/// then kept or cleared, keeping its capacity, without hashing), else a few: one pass over the
/// names finds them (up to eight, kept on the stack), and each is then removed by name.
pub(crate) fn remove_names(headers: &mut HeaderMap, drop: impl Fn(&http::HeaderName) -> bool) {
    let mut found: [Option<http::HeaderName>; 8] = Default::default();
    let (mut n, mut all, mut more) = (0, true, false);
    for name in headers.keys() {
        if !drop(name) {
            all = false;
        } else if let Some(slot) = found.get_mut(n) {
            *slot = Some(name.clone());
            n += 1;
        } else {
            more = true;
        }
    }
    if n == 0 {
        return;
    }
    if all {
        headers.clear();
        return;
    }
    for name in found.into_iter().flatten() {
        headers.remove(name);
    }
    // More than eight (rare): the rest, found one at a time.
    while more {
        match headers.keys().find(|n| drop(n)).cloned() {
            Some(name) => {
                headers.remove(name);
            }
            None => more = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(names: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (i, n) in names.iter().enumerate() {
            if let Ok(name) = http::HeaderName::from_bytes(n.as_bytes()) {
                h.append(name.clone(), http::HeaderValue::from(i));
                h.append(name, http::HeaderValue::from(i + 100));
            }
        }
        assert_eq!(h.keys_len(), names.len());
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn removes_exactly_the_selected_names_with_all_their_values() {
        let drop = |n: &http::HeaderName| n.as_str().starts_with("d-");
        // None, all, a few, and more than fit in one pass.
        let mut none = map(&["a", "b"]);
        remove_names(&mut none, drop);
        assert_eq!(names(&none), ["a", "b"]);
        let mut all = map(&["d-1", "d-2"]);
        remove_names(&mut all, drop);
        assert!(all.is_empty());
        let mut few = map(&["a", "d-1", "b", "d-2"]);
        remove_names(&mut few, drop);
        assert_eq!(names(&few), ["a", "b"]);
        assert_eq!(few.get_all("a").iter().count(), 2);
        let many: Vec<String> = (0..20).map(|i| format!("d-{i}")).collect();
        let mut list: Vec<&str> = many.iter().map(String::as_str).collect();
        list.extend(["a", "z"]);
        let mut lots = map(&list);
        remove_names(&mut lots, drop);
        assert_eq!(names(&lots), ["a", "z"]);
    }
}
