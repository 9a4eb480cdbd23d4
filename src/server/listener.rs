//! One listener: the accept loop and each connection's life, with its bounds. Every phase of a
//! caller connection is bounded:
//!
//! - `limits.max_connections` open connections per listener (more are closed at once);
//! - the TLS handshake and the first request's headers within `limits.header_timeout`
//!   (HTTP/1.1 also for every later request's headers);
//! - a connection with no call in flight for `limits.idle_timeout` is closed gracefully;
//! - HTTP/2: at most `limits.max_concurrent_streams` streams, PINGs find dead peers;
//! - on close, unread request bytes are read and dropped for a while (lingering close), so the
//!   caller reads the answer instead of a reset (see [`Linger`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Shared;
use crate::config::{Limits, Listener};
use crate::gated::Gated;
use crate::observe::metrics::ConnectionMetrics;
use crate::observe::ConnInfo;

/// How long, and how much, a closing connection keeps reading what the caller still sends.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 128 << 20;

/// A bound listener and its accept loop.
pub(crate) struct ListenerHandle {
    config: Listener,
    /// The bound address.
    pub(crate) local: SocketAddr,
    tls: Arc<ArcSwapOption<ListenerTls>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for ListenerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerHandle")
            .field("name", &self.config.name)
            .field("local", &self.local)
            .finish()
    }
}

/// A listener's TLS, swapped as one on reload (certificates, CAs and the identity header).
pub(crate) struct ListenerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    /// Carries the verified client identity upstream.
    identity_header: Option<http::HeaderName>,
}

impl ListenerTls {
    /// Reads the listener's TLS files.
    pub(crate) fn load(files: &crate::config::ServerTls) -> Result<ListenerTls, String> {
        Ok(ListenerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(super::tls::load_server_config(files)?),
            identity_header: files.identity_header.clone(),
        })
    }
}

/// What a listener's connections share.
struct ListenerState {
    name: Arc<str>,
    tls: Arc<ArcSwapOption<ListenerTls>>,
    open: AtomicUsize,
    /// Stops this listener's connections gracefully (the listener was removed).
    stop: watch::Receiver<bool>,
    /// Its connection series (open, accepted, rejected at the limit).
    metrics: Option<ConnectionMetrics>,
}

impl ListenerHandle {
    /// Binds the listener and starts accepting.
    pub(crate) async fn bind(
        config: &Listener,
        shared: &Arc<Shared>,
        _limits: &Limits,
    ) -> anyhow::Result<ListenerHandle> {
        let acceptor = match &config.tls {
            Some(files) => Some(Arc::new(
                ListenerTls::load(files).map_err(anyhow::Error::msg)?,
            )),
            None => None,
        };
        let listener = TcpListener::bind(config.address)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.address))?;
        let local = listener.local_addr()?;
        tracing::info!(addr = %local, name = %config.name, tls = acceptor.is_some(), "listening");
        let tls = Arc::new(ArcSwapOption::new(acceptor));
        let (stop, stop_rx) = watch::channel(false);
        let state = Arc::new(ListenerState {
            name: Arc::from(config.name.as_str()),
            tls: tls.clone(),
            open: AtomicUsize::new(0),
            stop: stop_rx,
            metrics: shared.metrics.connections(&config.name),
        });
        let task = tokio::spawn(accept_loop(listener, state, shared.clone()));
        Ok(ListenerHandle {
            config: config.clone(),
            local,
            tls,
            stop,
            task,
        })
    }

    /// Whether `other` configures this same listener (address and TLS or not).
    pub(crate) fn same(&self, other: &Listener) -> bool {
        self.config.address == other.address && self.config.tls.is_some() == other.tls.is_some()
    }

    /// Uses a new TLS config for connections accepted from now on (certificates re-read).
    pub(crate) fn set_tls(&self, tls: Option<Arc<ListenerTls>>) {
        self.tls.store(tls);
    }

    /// Stops accepting; this listener's connections finish gracefully.
    pub(crate) fn stop(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the accept loop to end.
    pub(crate) async fn join(self) {
        self.stop();
        let _ = self.task.await;
    }
}

/// The HTTP server settings for the current limits.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.header_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(64 << 10)
        .max_concurrent_streams(limits.max_concurrent_streams)
        // RFC 8441: WebSockets over HTTP/2 (extended CONNECT).
        .enable_connect_protocol()
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn accept_loop(listener: TcpListener, state: Arc<ListenerState>, shared: Arc<Shared>) {
    let mut stop = state.stop.clone();
    let mut drain = shared.drain.subscribe();
    // The builder is made again only when the limits change (on reload).
    let mut built: Option<(Limits, Arc<auto::Builder<TokioExecutor>>)> = None;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = until_set(&mut stop) => break,
            _ = until_set(&mut drain) => break,
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let limits = shared.current.load().limits;
        if state.open.load(Ordering::Relaxed) >= limits.max_connections {
            // Closed at once: the caller (or its load balancer) learns now and can go
            // elsewhere, instead of waiting in the accept queue.
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                tracing::warn!(listener = %state.name, max = limits.max_connections, "connection limit reached: closing new connections");
                last_refusal_log = Some(Instant::now());
            }
            drop(tcp);
            if let Some(m) = &state.metrics {
                m.rejected.inc();
            }
            continue;
        }
        let builder = match &built {
            Some((l, b)) if *l == limits => b.clone(),
            _ => {
                let b = Arc::new(http_builder(&limits));
                built = Some((limits, b.clone()));
                b
            }
        };
        state.open.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &state.metrics {
            m.accepted.inc();
            m.open.inc();
        }
        let slot = OpenSlot(state.clone());
        shared
            .connections
            .spawn(connection(tcp, peer, slot, shared.clone(), builder, limits));
    }
}

/// Resolves once the flag is set (or its sender is gone).
pub(crate) async fn until_set(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|set| *set).await;
}

/// Counts an open connection of its listener until dropped.
struct OpenSlot(Arc<ListenerState>);

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.0.metrics {
            m.open.dec();
        }
        // Its buffers are freed now: the next collect rounds return them.
        crate::activity::mark();
    }
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OpenSlot,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Limits,
) {
    let _ = tcp.set_nodelay(true);
    let state = slot.0.clone();
    let tls = state.tls.load_full();
    // The open-connection count and shutdown's wait last as long as the connection's info:
    // past the HTTP server when a WebSocket upgrade took the connection over.
    let holds = (slot, shared.connections.token());
    match tls {
        None => {
            let info = ConnInfo::new(peer, state.name.clone(), false, None, None);
            info.hold(holds);
            serve(Linger::new(tcp), info, &state, &shared, &builder, &limits).await;
        }
        Some(tls) => {
            match tokio::time::timeout(limits.header_timeout, tls.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Read once per connection: every request on it carries the same identity.
                    let identity = tls
                        .identity_header
                        .as_ref()
                        .and_then(|_| super::tls::client_identity(stream.get_ref().1));
                    let info = ConnInfo::new(
                        peer,
                        state.name.clone(),
                        true,
                        identity,
                        tls.identity_header.clone(),
                    );
                    info.hold(holds);
                    serve(
                        Linger::new(stream),
                        info,
                        &state,
                        &shared,
                        &builder,
                        &limits,
                    )
                    .await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn serve<I>(
    io: Linger<I>,
    info: ConnInfo,
    state: &ListenerState,
    shared: &Arc<Shared>,
    builder: &auto::Builder<TokioExecutor>,
    limits: &Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let conn_info = info.clone();
    let current = shared.clone();
    // Each request reads the runtime snapshot current when it arrives, and keeps it.
    let service = service_fn(move |req| {
        let proxy = current.current.load_full();
        proxy.handle(req, &conn_info)
    });
    // With upgrades: an HTTP/1.1 WebSocket takes the connection over.
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut drain = shared.drain.subscribe();
    let mut stop = state.stop.clone();
    // The side branches are gated: the connection wakes this task several times per call, and
    // they are polled only when their own signal or timer fired (see `crate::gated`).
    let closed = Gated::new(async {
        tokio::select! {
            _ = until_set(&mut drain) => {}
            _ = until_set(&mut stop) => {}
        }
    });
    tokio::pin!(closed);
    let idle = Gated::new(tokio::time::sleep(limits.header_timeout));
    tokio::pin!(idle);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            biased;
            r = conn.as_mut() => break r,
            () = &mut closed, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = &mut idle => {
                if closing {
                    break Ok(());
                }
                let now = Instant::now();
                if !info.has_seen_request() {
                    // Nothing at all (not even a first request) within the header timeout.
                    tracing::debug!(peer = %info.peer, "no request within the header timeout: closing");
                    break Ok(());
                }
                match info.idle_since() {
                    Some(since) if now.duration_since(since) >= limits.idle_timeout => {
                        tracing::debug!(peer = %info.peer, "idle: closing");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        // An idle connection has nothing to finish; give it a moment.
                        idle.as_mut().inner().reset(now + Duration::from_secs(1));
                    }
                    Some(since) => idle.as_mut().inner().reset(since + limits.idle_timeout),
                    None => idle.as_mut().inner().reset(now + limits.idle_timeout),
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// A caller's connection that, when dropped without having seen the caller's end of the
/// stream, half-closes and keeps reading (and dropping) what the caller still sends for a
/// while before closing. Closing a socket with unread bytes makes the kernel send a reset,
/// and a caller still sending a request body would then see "connection reset" or "broken
/// pipe" instead of the answer it was sent (a 415, a 413-like status, an early error).
pub(crate) struct Linger<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<I>,
    read_closed: bool,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Linger<I> {
    fn new(io: I) -> Self {
        Linger {
            io: Some(io),
            read_closed: false,
        }
    }

    fn io(&mut self) -> io::Result<&mut I> {
        self.io
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Linger<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let io = match this.io() {
            Ok(io) => io,
            Err(e) => return Poll::Ready(Err(e)),
        };
        let polled = Pin::new(io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            if buf.filled().len() == before && buf.remaining() > 0 {
                this.read_closed = true;
            }
        }
        polled
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Linger<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io() {
            Ok(io) => Pin::new(io).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Linger<I> {
    fn drop(&mut self) {
        if self.read_closed {
            return;
        }
        let (Some(mut io), Ok(rt)) = (self.io.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        rt.spawn(async move {
            let _ = tokio::time::timeout(LINGER_TIME, async {
                // Our side is done: the caller sees the end of the answer, then its own
                // writes are read and dropped until it closes too.
                let _ = io.shutdown().await;
                let mut buf = [0u8; 8192];
                let mut seen = 0usize;
                while seen < LINGER_BYTES {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => seen += n,
                    }
                }
            })
            .await;
        });
    }
}
