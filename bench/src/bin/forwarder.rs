//! The bare forwarder: the least any HTTP/1.1 → HTTP/2 proxy must do, translating nothing.
//! `forwarder LISTEN UPSTREAM` (UPSTREAM = host:port of an h2c server).
//!
//! Accepts HTTP/1.1 and h2c, sends each request (headers and streaming body, path unchanged)
//! on one shared HTTP/2 connection to the upstream, and streams the response back. HTTP/2
//! callers get the trailers; HTTP/1.1 callers get them only as chunked trailers (when they sent
//! `te: trailers`), which is fine for a baseline.

use std::convert::Infallible;

use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use switchboard_bench::{h2, runtime};
use tokio::net::{TcpListener, TcpStream};

type Body = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, hyper::Error>;

/// The same allocator as Switchboard, so allocation strategy is not what a comparison
/// measures.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8082".to_owned());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:50051".to_owned());
    runtime().block_on(async move {
        let tcp = TcpStream::connect(&upstream).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(h2::STREAM_WINDOW)
            .initial_connection_window_size(h2::CONN_WINDOW)
            .max_frame_size(h2::MAX_FRAME)
            .handshake::<_, Incoming>(TokioIo::new(tcp))
            .await?;
        tokio::spawn(conn);
        let authority: http::uri::Authority = upstream.parse()?;
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http2()
            .initial_stream_window_size(h2::STREAM_WINDOW)
            .initial_connection_window_size(h2::CONN_WINDOW)
            .max_frame_size(h2::MAX_FRAME)
            .max_concurrent_streams(h2::MAX_STREAMS);
        let listener = TcpListener::bind(&listen).await?;
        eprintln!("forwarder on http://{listen} -> h2c {upstream}");
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let (sender, authority, server) = (sender.clone(), authority.clone(), server.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let mut sender = sender.clone();
                    let authority = authority.clone();
                    async move {
                        let (mut parts, body) = req.into_parts();
                        let path = parts.uri.path_and_query().cloned();
                        parts.uri = Uri::builder()
                            .scheme("http")
                            .authority(authority)
                            .path_and_query(path.unwrap_or_else(|| "/".parse().unwrap()))
                            .build()
                            .unwrap_or_default();
                        parts.version = http::Version::HTTP_2;
                        parts.headers.remove(http::header::HOST);
                        let res = match sender.send_request(Request::from_parts(parts, body)).await
                        {
                            Ok(res) => res.map(BodyExt::boxed_unsync),
                            Err(e) => {
                                let mut res = Response::new(
                                    Full::new(bytes::Bytes::from(e.to_string()))
                                        .map_err(|never| match never {})
                                        .boxed_unsync(),
                                );
                                *res.status_mut() = http::StatusCode::BAD_GATEWAY;
                                res
                            }
                        };
                        Ok::<Response<Body>, Infallible>(res)
                    }
                });
                let _ = server.serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    })
}
