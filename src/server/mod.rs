//! Listeners: accept loops, TLS, HTTP/1.1 and HTTP/2 on every port, graceful shutdown.

pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::forward::Proxy;

/// How long shutdown waits for open calls to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Bound listener addresses, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stops accepting, lets open calls finish (up to 30 s), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds every listener and serves in the background. Returns once all sockets are bound.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let proxy = Arc::new(Proxy::new(&config).map_err(anyhow::Error::msg)?);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut addrs = Vec::new();
    let mut tasks = Vec::new();
    for l in &config.listeners {
        let tls = match &l.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(
                tls::load_server_config(files)
                    .map_err(|e| anyhow::anyhow!("listener {}: {e}", l.address))?,
            )),
            None => None,
        };
        let listener = TcpListener::bind(l.address)
            .await
            .with_context(|| format!("cannot listen on {}", l.address))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, tls = tls.is_some(), "listening");
        addrs.push(addr);
        tasks.push(tokio::spawn(accept_loop(
            listener,
            tls,
            proxy.clone(),
            shutdown_rx.clone(),
        )));
    }
    Ok(Running {
        addrs,
        shutdown,
        tasks,
    })
}

fn http_builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(64 << 10)
        .max_concurrent_streams(1000)
        .keep_alive_interval(Duration::from_secs(60))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(http_builder());
    // Every connection task holds a sender; when all are gone, draining is over.
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.changed() => break,
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
        let _ = tcp.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        let drain = drain_tx.clone();
        tokio::spawn(async move {
            let _drain = drain;
            match tls {
                None => serve(&builder, TokioIo::new(tcp), proxy, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve(&builder, TokioIo::new(stream), proxy, shutdown).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    drop(drain_tx);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain_rx.recv()).await;
}

async fn serve<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    proxy: Arc<Proxy>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The future is small (the protocol's own state is boxed inside): an HTTP/2 stream's task
    // is sized for it and keeps that size while the response body streams.
    let service = service_fn(move |req| proxy.handle(req));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
