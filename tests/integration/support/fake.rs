//! A fake upstream that speaks HTTP/2 but not gRPC, like a load balancer's error page.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::AbortOnDrop;

/// The HTML body every answer carries.
pub(crate) const FAKE_BODY: &str = "<html>bad gateway from lb</html>";

/// Request header that picks the HTTP status of the answer (default 502).
pub(crate) const FAKE_STATUS_HEADER: &str = "x-fake-status";

/// A running fake upstream.
#[derive(Debug)]
pub(crate) struct FakeUpstream {
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub(crate) url: String,
    pub(crate) task: AbortOnDrop,
}

/// Starts an h2c server that answers every request with an HTML error page: status 502, or
/// the status named by the `x-fake-status` request header.
pub(crate) async fn spawn_non_grpc_upstream() -> FakeUpstream {
    let listener = TcpListener::bind(super::loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    });
    FakeUpstream {
        addr,
        url: format!("http://{addr}"),
        task: AbortOnDrop(task),
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = req
        .headers()
        .get(FAKE_STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|v| StatusCode::from_u16(v).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = Response::new(Full::new(Bytes::from_static(FAKE_BODY.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert("content-type", "text/html".parse().unwrap());
    Ok(res)
}

/// Request header that picks how [`spawn_misbehaving_upstream`] breaks its answer:
/// `trailers` (a frame cut short, then OK trailers), `reset` (cut short, then a stream
/// reset) or `eof` (cut short, then the end of the stream without trailers).
pub(crate) const MISBEHAVE_HEADER: &str = "x-misbehave";

/// Starts an h2c gRPC server that answers every call with one whole `EchoResponse`
/// (message "whole"), then a frame that announces 100 bytes and carries 10, then breaks off
/// as [`MISBEHAVE_HEADER`] says.
pub(crate) async fn spawn_misbehaving_upstream() -> FakeUpstream {
    let listener = TcpListener::bind(super::loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service_fn(misbehave))
                    .await;
            });
        }
    });
    FakeUpstream {
        addr,
        url: format!("http://{addr}"),
        task: AbortOnDrop(task),
    }
}

type MisbehavingBody = http_body_util::StreamBody<
    futures_util::stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, std::io::Error>>>,
>;

async fn misbehave(req: Request<Incoming>) -> Result<Response<MisbehavingBody>, Infallible> {
    use http_body::Frame;
    use prost::Message as _;
    let how = req
        .headers()
        .get(MISBEHAVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("trailers")
        .to_owned();
    // Read the request first, as a server would.
    let _ = http_body_util::BodyExt::collect(req.into_body()).await;
    let whole = super::pb::EchoResponse {
        message: "whole".into(),
        ..Default::default()
    };
    let mut data = super::wire::frame_with_flag(0, &whole.encode_to_vec()).to_vec();
    data.extend_from_slice(&[0, 0, 0, 0, 100]);
    data.extend_from_slice(&[b'x'; 10]);
    let mut frames = vec![Ok(Frame::data(Bytes::from(data)))];
    match how.as_str() {
        "reset" => frames.push(Err(std::io::Error::other("broken backend"))),
        "eof" => {}
        _ => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            frames.push(Ok(Frame::trailers(trailers)));
        }
    }
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let mut res = Response::new(body);
    res.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    Ok(res)
}
