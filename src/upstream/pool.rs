//! The connection pool of one upstream. Each endpoint keeps a few HTTP/2 connections that
//! every caller shares; a new connection opens only when the existing ones are busy or gone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::body::BoxBody;
use crate::config;
use crate::protocol::grpc::{Code, Status};

/// Streams on one connection before another one is opened.
const STREAMS_PER_CONNECTION: usize = 100;
/// Connections per endpoint at most.
const MAX_CONNECTIONS: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Counts a stream as active on its connection until dropped.
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone)]
struct Conn {
    sender: SendRequest<BoxBody>,
    active: Arc<AtomicUsize>,
}

struct EndpointPool {
    endpoint: config::Endpoint,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    conns: Mutex<Vec<Conn>>,
    connecting: tokio::sync::Mutex<()>,
}

/// A client for one upstream.
pub(crate) struct UpstreamClient {
    pub(crate) config: Arc<config::Upstream>,
    /// The configured name, shared by every call's error messages.
    pub(crate) name: Arc<str>,
    endpoints: Vec<EndpointPool>,
    next: AtomicUsize,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.config.name)
            .finish()
    }
}

impl UpstreamClient {
    pub(crate) fn new(config: Arc<config::Upstream>) -> Result<UpstreamClient, String> {
        let needs_tls = config.endpoints.iter().any(|e| e.scheme == Scheme::HTTPS);
        let tls_config = if needs_tls {
            Some(super::tls::client_config(config.ca.as_deref())?)
        } else {
            None
        };
        let mut endpoints = Vec::new();
        for e in &config.endpoints {
            let tls = match &tls_config {
                Some(tc) if e.scheme == Scheme::HTTPS => {
                    let name = config
                        .server_name
                        .clone()
                        .unwrap_or_else(|| e.authority.host().trim_matches(['[', ']']).to_owned());
                    let name = ServerName::try_from(name.clone())
                        .map_err(|_| format!("invalid TLS server name {name:?}"))?;
                    Some((tokio_rustls::TlsConnector::from(tc.clone()), name))
                }
                _ => None,
            };
            endpoints.push(EndpointPool {
                endpoint: e.clone(),
                tls,
                conns: Mutex::new(Vec::new()),
                connecting: tokio::sync::Mutex::new(()),
            });
        }
        Ok(UpstreamClient {
            name: Arc::from(config.name.as_str()),
            config,
            endpoints,
            next: AtomicUsize::new(0),
        })
    }

    /// Sends a request (its URI holds only the path) to one of the endpoints.
    pub(crate) async fn send(
        &self,
        mut req: Request<BoxBody>,
    ) -> Result<(Response<Incoming>, StreamGuard), SendError> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.endpoints.len();
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut last_error = None;
        for i in 0..n {
            let ep = &self.endpoints[(start + i) % n];
            *req.uri_mut() = ep.uri(&path);
            // A connection that went away between checks gives the request back: retry once.
            for _ in 0..2 {
                let mut conn = match ep.conn().await {
                    Ok(c) => c,
                    Err(e) => {
                        last_error = Some(SendError::Connect(format!(
                            "upstream {:?} ({}): {e}",
                            self.config.name, ep.endpoint.authority
                        )));
                        break;
                    }
                };
                conn.active.fetch_add(1, Ordering::Relaxed);
                let guard = StreamGuard(conn.active.clone());
                match conn.sender.try_send_request(req).await {
                    Ok(res) => return Ok((res, guard)),
                    Err(mut e) => match e.take_message() {
                        Some(back) => {
                            req = back;
                            ep.forget_closed();
                        }
                        None => return Err(SendError::Stream(e.into_error())),
                    },
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            SendError::Connect(format!("upstream {:?}: no connection", self.config.name))
        }))
    }
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made.
    Connect(String),
    /// The stream failed.
    Stream(hyper::Error),
}

impl SendError {
    /// The status a caller sees.
    pub(crate) fn into_status(self, upstream: &str) -> Status {
        match self {
            SendError::Connect(msg) => Status::new(Code::Unavailable, msg),
            SendError::Stream(e) => crate::body::status_from_hyper(&e, upstream),
        }
    }
}

impl EndpointPool {
    fn uri(&self, path: &PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.endpoint.scheme.clone());
        parts.authority = Some(self.endpoint.authority.clone());
        parts.path_and_query = Some(path.clone());
        Uri::from_parts(parts).unwrap_or_default()
    }

    /// The open connection with the fewest active streams, unless all are busy and another
    /// may be opened. Closed connections are skipped here and dropped when a new one opens or
    /// a send finds one closed.
    fn pick(&self) -> Option<Conn> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let open = conns.iter().filter(|c| !c.sender.is_closed());
        let best = open
            .clone()
            .min_by_key(|c| c.active.load(Ordering::Relaxed))?;
        let busy = best.active.load(Ordering::Relaxed) >= STREAMS_PER_CONNECTION;
        if busy && open.count() < MAX_CONNECTIONS {
            return None;
        }
        Some(best.clone())
    }

    fn forget_closed(&self) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.sender.is_closed());
    }

    async fn conn(&self) -> Result<Conn, String> {
        match self.pick() {
            Some(c) => Ok(c),
            // Boxed: connecting is rare, and its future (TCP, TLS, HTTP/2 handshake) is large.
            None => Box::pin(self.open()).await,
        }
    }

    /// Opens a connection, or waits for the caller already opening one and shares it.
    async fn open(&self) -> Result<Conn, String> {
        // One caller connects; the others wait and then share its connection.
        let _connecting = self.connecting.lock().await;
        if let Some(c) = self.pick() {
            return Ok(c);
        }
        let sender = self.connect().await?;
        let conn = Conn {
            sender,
            active: Arc::new(AtomicUsize::new(0)),
        };
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| !c.sender.is_closed());
        conns.push(conn.clone());
        Ok(conn)
    }

    async fn connect(&self) -> Result<SendRequest<BoxBody>, String> {
        let authority = self.endpoint.authority.as_str();
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(connect_error(&e)),
            Err(_) => {
                return Err(format!(
                    "no connection within {}s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            }
        };
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(TokioIo::new(tcp)).await,
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| "TLS handshake timed out".to_owned())?
                        .map_err(|e| format!("TLS handshake failed: {e}"))?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err("the server did not agree to HTTP/2 (ALPN h2)".to_owned());
                }
                handshake(TokioIo::new(tls)).await
            }
        }
    }
}

fn connect_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => format!("cannot connect: {e}"),
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<BoxBody>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(64 << 10)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(false)
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection closed");
        }
    });
    Ok(sender)
}
