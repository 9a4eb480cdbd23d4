//! Caller protocols and their detection. Each protocol module owns both directions of its
//! translation to gRPC, the hub.

pub mod compression;
pub mod connect;
pub mod grpc;
pub mod grpc_web;
pub mod json;
pub mod rest;
pub mod websocket;

use http::{header, Method, Request, StatusCode, Version};

/// A message codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Protocol buffers binary.
    Proto,
    /// ProtoJSON.
    Json,
}

/// The protocol of one call, decided once from method, version and content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC-Web, binary or text.
    GrpcWeb(grpc_web::Mode),
    /// Native gRPC over HTTP/2, forwarded unchanged.
    Grpc,
    /// Connect unary (POST or GET) or streaming.
    Connect(connect::Mode),
    /// improbable-eng's gRPC-Web over a WebSocket (`grpc-websockets`): the upgrade, whose
    /// metadata and messages arrive on the socket.
    WebSocket,
    /// REST from a `google.api.http` rule (found by matching the request against the rules,
    /// never by [`detect`]).
    Rest(rest::Mode),
}

/// What a request is, before any schema is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// Its content type (or a Connect GET query) names a protocol: that protocol, or the
    /// refusal its rules give. A gRPC-Web, gRPC or Connect content type always wins over a
    /// REST rule for the same path.
    Call(Result<Protocol, Rejection>),
    /// Anything else may be a REST call; if no rule matches, it is what `fallback` says (a
    /// Connect unary JSON call without `connect-protocol-version`, or a refusal).
    Other(Result<Protocol, Rejection>),
}

/// Classifies a request: [`detect`], then whether a REST rule could still claim it.
pub fn classify<B>(req: &Request<B>) -> Classified {
    let detected = detect(req);
    let definite = match &detected {
        Ok(Protocol::Connect(m)) if m.kind == connect::Kind::Unary => {
            m.codec == Codec::Proto || req.headers().contains_key(connect::PROTOCOL_VERSION)
        }
        Ok(_) => true,
        Err(_) => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            ct.starts_with("application/grpc")
                || ct.starts_with("application/connect+")
                || connect::codec_from_name(ct.strip_prefix("application/").unwrap_or(""))
                    == Some(Codec::Proto)
        }
    };
    if definite {
        Classified::Call(detected)
    } else {
        Classified::Other(detected)
    }
}

/// A request that is not a call we can take, with the plain HTTP answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: StatusCode,
    /// Text body.
    pub message: String,
    /// Extra header, e.g. `allow` for 405.
    pub header: Option<(header::HeaderName, &'static str)>,
}

impl Rejection {
    fn new(status: StatusCode, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            message: message.into(),
            header: None,
        }
    }
}

const ACCEPTED_TYPES: &str = "application/proto, application/json, application/connect+proto, application/connect+json, application/grpc-web, application/grpc-web+proto, application/grpc-web+json, application/grpc-web-text, application/grpc-web-text+proto, application/grpc";

/// Classifies a request by method, HTTP version and `content-type`.
pub fn detect<B>(req: &Request<B>) -> Result<Protocol, Rejection> {
    // A WebSocket upgrade has no content type: it is one by its method and upgrade headers.
    if let Some(upgrade) = websocket::classify(req) {
        return upgrade.map(|()| Protocol::WebSocket);
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let trimmed = content_type.trim();
    // Lower-cased only when it has to be (it almost never does).
    let lower = if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(trimmed)
    };
    if lower.starts_with("application/grpc-web") {
        // gRPC-Web: any HTTP version, POST only.
        require_post(req.method())?;
        let accept = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        return grpc_web::Mode::from_headers(&lower, accept)
            .map(Protocol::GrpcWeb)
            .map_err(|e| unsupported(&e.0));
    }
    if lower.starts_with("application/grpc") {
        // Native gRPC needs HTTP/2: its status travels in HTTP trailers.
        require_post(req.method())?;
        if req.version() != Version::HTTP_2 {
            return Err(Rejection::new(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "gRPC requires HTTP/2; HTTP/1.1 callers can use gRPC-Web",
            ));
        }
        return Ok(Protocol::Grpc);
    }
    if let Some(suffix) = lower.strip_prefix("application/connect+") {
        // Connect streaming: POST only, proto or JSON.
        require_post(req.method())?;
        let codec = connect::codec_from_name(suffix).ok_or_else(|| unsupported(content_type))?;
        return Ok(Protocol::Connect(connect::Mode {
            kind: connect::Kind::Stream,
            codec,
        }));
    }
    if req.method() == Method::GET {
        // Connect unary GET: everything is in the query.
        let query = req.uri().query().unwrap_or_default();
        if connect::get::is_connect_query(query) {
            return Ok(Protocol::Connect(connect::Mode {
                kind: connect::Kind::Get,
                codec: connect::get::codec(query).unwrap_or(Codec::Proto),
            }));
        }
        return Err(Rejection::new(StatusCode::NOT_FOUND, "not found"));
    }
    if let Some(name) = lower.strip_prefix("application/") {
        // Connect unary POST: a bare message of a known codec.
        if let Some(codec) = connect::codec_from_name(name) {
            require_post(req.method())?;
            return Ok(Protocol::Connect(connect::Mode {
                kind: connect::Kind::Unary,
                codec,
            }));
        }
    }
    if content_type.is_empty() && req.method() != Method::POST {
        return Err(Rejection::new(StatusCode::NOT_FOUND, "not found"));
    }
    Err(unsupported(content_type))
}

fn require_post(method: &Method) -> Result<(), Rejection> {
    if method == Method::POST {
        return Ok(());
    }
    Err(Rejection {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method {method} is not allowed for RPCs; use POST"),
        header: Some((header::ALLOW, "POST")),
    })
}

fn unsupported(content_type: &str) -> Rejection {
    Rejection {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        message: format!(
            "unsupported content-type {content_type:?}; expected one of: {ACCEPTED_TYPES}"
        ),
        header: Some((
            header::HeaderName::from_static("accept-post"),
            ACCEPTED_TYPES,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, version: Version, ct: Option<&str>) -> Request<()> {
        let mut b = Request::builder()
            .method(method)
            .version(version)
            .uri("/a.B/C");
        if let Some(ct) = ct {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(()).unwrap_or_default()
    }

    #[test]
    fn detects_protocols_and_rejects_the_rest() {
        let h1 = Version::HTTP_11;
        let h2 = Version::HTTP_2;
        assert!(matches!(
            detect(&req(Method::POST, h1, Some("application/grpc-web+proto"))),
            Ok(Protocol::GrpcWeb(_))
        ));
        assert!(matches!(
            detect(&req(Method::POST, h2, Some("application/grpc-web-text"))),
            Ok(Protocol::GrpcWeb(_))
        ));
        assert_eq!(
            detect(&req(Method::POST, h2, Some("application/grpc"))),
            Ok(Protocol::Grpc)
        );
        assert_eq!(
            detect(&req(Method::POST, h1, Some("application/grpc"))).map_err(|r| r.status),
            Err(StatusCode::HTTP_VERSION_NOT_SUPPORTED)
        );
        assert_eq!(
            detect(&req(Method::GET, h1, Some("application/grpc-web"))).map_err(|r| r.status),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            detect(&req(Method::POST, h1, Some("text/plain"))).map_err(|r| r.status),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            detect(&req(Method::POST, h1, Some("application/grpc-web+thrift")))
                .map_err(|r| r.status),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            detect(&req(Method::GET, h1, None)).map_err(|r| r.status),
            Err(StatusCode::NOT_FOUND)
        );
        for (ct, kind) in [
            ("application/proto", connect::Kind::Unary),
            ("application/json; charset=utf-8", connect::Kind::Unary),
            ("application/connect+proto", connect::Kind::Stream),
            ("application/connect+json", connect::Kind::Stream),
        ] {
            assert!(
                matches!(detect(&req(Method::POST, h1, Some(ct))), Ok(Protocol::Connect(m)) if m.kind == kind),
                "{ct}"
            );
        }
        assert_eq!(
            detect(&req(Method::POST, h1, Some("application/connect+xml"))).map_err(|r| r.status),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            detect(&req(Method::PUT, h1, Some("application/proto"))).map_err(|r| r.status),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        let ws = Request::get("/a.B/C")
            .header(header::UPGRADE, "websocket")
            .header("sec-websocket-protocol", "grpc-websockets")
            .body(())
            .unwrap_or_default();
        assert_eq!(detect(&ws), Ok(Protocol::WebSocket));
        let get = Request::get("/a.B/C?connect=v1&encoding=proto&message=x")
            .body(())
            .unwrap_or_default();
        assert!(matches!(detect(&get), Ok(Protocol::Connect(m)) if m.kind == connect::Kind::Get));
    }
}
