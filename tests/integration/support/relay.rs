//! A TCP relay in front of a backend that a test can turn into a black hole: it then keeps
//! every connection open but forwards nothing in either direction (what a backend behind a
//! dead network path, or a hung process, looks like from the proxy), and connections it
//! accepts meanwhile never reach the backend.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::{AbortOnDrop, Counter};

#[derive(Debug, Default)]
struct RelayState {
    black_hole: watch::Sender<bool>,
    /// Connections accepted.
    accepted: Counter,
    /// Connections the client (the proxy) closed.
    client_closed: Counter,
}

/// A running relay.
#[derive(Debug)]
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    /// `http://address:port`.
    pub(crate) url: String,
    state: Arc<RelayState>,
    _task: AbortOnDrop,
}

impl Relay {
    /// A relay on an ephemeral loopback port to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Relay {
        Relay::start_on(super::loopback(), target).await
    }

    /// A relay listening on `bind` to `target`.
    pub(crate) async fn start_on(bind: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(RelayState::default());
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                st.accepted.incr();
                tokio::spawn(relay(client, target, st.clone()));
            }
        });
        Relay {
            addr,
            url: format!("http://{addr}"),
            state,
            _task: AbortOnDrop(task),
        }
    }

    /// Stops (true) or resumes (false) forwarding on every connection.
    pub(crate) fn black_hole(&self, on: bool) {
        self.state.black_hole.send_replace(on);
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> &Counter {
        &self.state.accepted
    }

    /// Connections the proxy closed so far.
    pub(crate) fn client_closed(&self) -> &Counter {
        &self.state.client_closed
    }

    /// Whether the proxy closes `n` connections within `limit` (a future of its own, so it
    /// can run beside the traffic that should cause it).
    pub(crate) fn closes_within(
        &self,
        n: usize,
        limit: std::time::Duration,
    ) -> impl std::future::Future<Output = bool> + Send + 'static {
        let st = self.state.clone();
        async move { st.client_closed.reaches(n, limit).await }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, st: Arc<RelayState>) {
    let _ = client.set_nodelay(true);
    let (mut c_read, mut c_write) = client.into_split();
    if *st.black_hole.borrow() {
        // Accepted inside the black hole: it never reaches the backend.
        swallow(&mut c_read).await;
        st.client_closed.incr();
        return;
    }
    let Ok(upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (mut u_read, mut u_write) = upstream.into_split();
    let holes = st.black_hole.subscribe();
    let up = async {
        pump(&mut c_read, &mut u_write, holes.clone()).await;
        st.client_closed.incr();
    };
    let down = pump(&mut u_read, &mut c_write, holes.clone());
    tokio::join!(up, down);
}

/// Reads and drops everything until the peer closes.
async fn swallow(from: &mut tokio::net::tcp::OwnedReadHalf) {
    let mut buf = vec![0u8; 16 << 10];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

/// Copies `from` to `to` until `from` ends; while the hole is open, bytes are dropped.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    holes: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if *holes.borrow() {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
