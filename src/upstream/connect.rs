//! Opening a connection to an endpoint: TCP, TLS and the HTTP/2 handshake, within one
//! `connect_timeout`. The handshake counts as done when the server answers a PING, which it
//! can only do after its SETTINGS: a server that accepts TCP and then says nothing fails the
//! connect instead of holding calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::conn::{ConnState, Connection};
use super::endpoint::Endpoint;
use super::keepalive;

/// The flow-control window of one stream: what h2 buffers for a stream whose reader is slow.
/// Small enough that streams whose callers stopped reading cost bounded memory (this much
/// each), large enough that one stream is not limited by it on a fast path.
pub(crate) const STREAM_WINDOW: u32 = 1 << 20;
/// The connection's window, at the protocol's maximum, so the streams of one connection can
/// never take it all (see `pool::MAX_STREAMS_PER_CONNECTION`).
pub(crate) const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
const MAX_FRAME_SIZE: u32 = 64 << 10;

/// What went wrong connecting; callers see the kind, logs the detail.
#[derive(Debug, Clone)]
pub(crate) struct ConnectError {
    pub(crate) kind: ConnectFailure,
    /// For the log only: it may name addresses and certificates.
    pub(crate) detail: Arc<str>,
}

/// The kind of a connect failure, in words that name no address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectFailure {
    Refused,
    TimedOut,
    Tls,
    Handshake,
    Other,
}

impl ConnectFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "connection refused",
            ConnectFailure::TimedOut => "no connection within the connect timeout",
            ConnectFailure::Tls => "TLS handshake failed",
            ConnectFailure::Handshake => "HTTP/2 handshake failed",
            ConnectFailure::Other => "cannot connect",
        }
    }
}

impl ConnectError {
    /// The connect task ended without an answer (the runtime is shutting down).
    pub(crate) fn gone() -> ConnectError {
        ConnectError::new(ConnectFailure::Other, "the connect task ended")
    }

    fn new(kind: ConnectFailure, detail: impl Into<Arc<str>>) -> ConnectError {
        ConnectError {
            kind,
            detail: detail.into(),
        }
    }
}

/// Opens a connection to `ep`, driven by a task of its own.
pub(crate) async fn connect(ep: &Arc<Endpoint>) -> Result<Connection, ConnectError> {
    let Some(shared) = ep.shared.upgrade() else {
        return Err(ConnectError::new(
            ConnectFailure::Other,
            "the upstream is gone",
        ));
    };
    let budget = shared.config.connect_timeout;
    let keepalive = shared.config.keepalive;
    let tls = shared.tls_connector();
    drop(shared);
    let establish = async {
        // Unacknowledged writes are bounded too: a peer that vanished mid-write is noticed
        // by the kernel even while no PING is due.
        let user_timeout = (keepalive.timeout * 2).max(Duration::from_secs(10));
        let tcp = tcp_connect(ep.addr, user_timeout).await.map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ConnectFailure::Refused
            } else {
                ConnectFailure::Other
            };
            ConnectError::new(kind, format!("TCP connect to {}: {e}", ep.addr))
        })?;
        if ep.scheme != Scheme::HTTPS {
            return handshake(tcp, ep, keepalive).await;
        }
        let (Some(connector), Some(name)) = (tls, ep.tls_name.clone()) else {
            return Err(ConnectError::new(
                ConnectFailure::Tls,
                "no TLS settings for an https endpoint",
            ));
        };
        let stream = connector.connect(name, tcp).await.map_err(|e| {
            ConnectError::new(
                ConnectFailure::Tls,
                format!("TLS handshake with {}: {e}", ep.addr),
            )
        })?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectError::new(
                ConnectFailure::Tls,
                format!("{} did not agree to HTTP/2 (ALPN h2)", ep.addr),
            ));
        }
        handshake(stream, ep, keepalive).await
    };
    match tokio::time::timeout(budget, establish).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::new(
            ConnectFailure::TimedOut,
            format!(
                "no connection to {} within {budget:?} (TCP, TLS and HTTP/2 handshake)",
                ep.addr
            ),
        )),
    }
}

async fn tcp_connect(addr: SocketAddr, user_timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(&socket).set_tcp_user_timeout(Some(user_timeout))?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = user_timeout;
    socket.connect(addr).await
}

/// Whether a connection failed in TLS (an alert from the peer, a certificate refused).
fn tls_error(e: &h2::Error) -> bool {
    e.get_io()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

/// Closes a connection whose handshake was abandoned (the connect timed out meanwhile).
struct CloseOnDrop(Option<Arc<ConnState>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(state) = self.0.take() {
            state.close();
        }
    }
}

/// The HTTP/2 handshake on `io`, confirmed by the server's answer to a PING.
async fn handshake<T>(
    io: T,
    ep: &Arc<Endpoint>,
    keepalive: crate::config::Keepalive,
) -> Result<Connection, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| {
            ConnectError::new(
                ConnectFailure::Handshake,
                format!("HTTP/2 handshake with {}: {e}", ep.addr),
            )
        })?;
    let ping = conn.ping_pong();
    let state = Arc::new(ConnState::new(ep.clone()));
    let (ready, handshaken) = oneshot::channel();
    ep.pool.driver_started();
    tokio::spawn(keepalive::drive(
        conn,
        ping,
        state.clone(),
        keepalive,
        ready,
    ));
    let mut closer = CloseOnDrop(Some(state.clone()));
    match handshaken.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            // A server that refuses the client certificate says so only now (TLS 1.3).
            let kind = if tls_error(&e) {
                ConnectFailure::Tls
            } else {
                ConnectFailure::Handshake
            };
            return Err(ConnectError::new(
                kind,
                format!("HTTP/2 handshake with {}: {e}", ep.addr),
            ));
        }
        Err(_) => {
            return Err(ConnectError::new(
                ConnectFailure::Handshake,
                format!(
                    "{} closed the connection during the HTTP/2 handshake",
                    ep.addr
                ),
            ))
        }
    }
    closer.0 = None;
    Ok(Connection::new(sender, state))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn upstream_sockets_bound_unacknowledged_writes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = tcp_connect(addr, Duration::from_secs(10)).await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(10))
        );
        assert!(sock.tcp_nodelay().unwrap());
    }
}
