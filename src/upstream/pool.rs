//! The connection pool of one endpoint: a few HTTP/2 connections that every caller shares; a
//! new connection opens only when the existing ones are busy or gone.
//!
//! Callers never wait for a connection while one is open: when every open connection is busy,
//! another one is opened in the background and the call goes on the least busy one meanwhile
//! (HTTP/2 multiplexes, so busy means slower, not refused). Only when no connection is open do
//! callers wait, and then all of them wait for the same connect, and all learn at once when it
//! failed.
//!
//! The list of connections is published with `arc-swap`: picking one reads it without a lock;
//! only opening and losing connections write it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::conn::{ConnState, Connection};
use super::connect::{self, ConnectError};
use super::endpoint::{Endpoint, Failure};

/// Streams on one connection before another one is opened. Fewer, fuller connections batch
/// more frames per write (measured at 256 concurrent small calls: one connection costs about
/// 8% less proxy CPU per call than three); more connections spread the framing over the
/// runtime's workers and stay under the server's stream limit, which hyper does not expose:
/// 200 is hyper's own server default, Go's is 250.
const STREAMS_PER_CONNECTION: usize = 200;
/// Connections per endpoint, unless every one carries [`MAX_STREAMS_PER_CONNECTION`].
const MAX_CONNECTIONS: usize = 8;
/// Streams one connection may carry at most: so many full stream windows still fit in the
/// connection window, so streams whose callers stopped reading can never take the window
/// the others need.
pub(crate) const MAX_STREAMS_PER_CONNECTION: usize =
    (connect::CONNECTION_WINDOW / connect::STREAM_WINDOW) as usize - 8;
/// Active streams at which a connection taking at most `limit` is busy and another one is
/// opened in the background: [`STREAMS_PER_CONNECTION`], or an eighth below a lower peer
/// limit, so the new connection is usually up before this one is full.
fn grow_at(limit: usize) -> usize {
    STREAMS_PER_CONNECTION.min(limit - limit / 8)
}

/// After a background connect failed, the pool grows no earlier than this.
const GROW_BACKOFF: Duration = Duration::from_secs(1);
/// A connection beyond the first that carried no stream for this long is let go: a burst's
/// extra connections (and their buffers) do not outlive it.
pub(crate) const SURPLUS_IDLE: Duration = Duration::from_secs(2);

/// What [`Pool::pick`] found.
pub(crate) enum Pick {
    /// A connection with room.
    Ready(Connection),
    /// The least busy connection; all are busy and the pool may grow.
    Busy(Connection),
    /// No open connection with room.
    None,
}

/// The connections of one endpoint.
#[derive(Default)]
pub(crate) struct Pool {
    conns: ArcSwap<Vec<Connection>>,
    /// When a background connect failed last.
    grow_failed: Mutex<Option<Instant>>,
    /// Held by whoever is connecting, so that only one connect runs at a time.
    connecting: Arc<tokio::sync::Mutex<()>>,
    /// Connect attempts finished, and the error of the last one when it failed.
    attempts: Mutex<(u64, Option<ConnectError>)>,
    /// Connections whose driver still runs (some may be closing).
    open: AtomicUsize,
}

impl Pool {
    /// The open connection with the fewest active streams, and whether the pool should grow.
    pub(crate) fn pick(&self) -> Pick {
        let conns = self.conns.load();
        let mut best: Option<(&Connection, usize, usize)> = None;
        // The least busy of the connections full by the peer's limit (below ours): h2 holds a
        // stream sent there until one of them ends.
        let mut queue: Option<(&Connection, usize)> = None;
        let mut open = 0;
        for c in conns.iter().filter(|c| !c.is_closed()) {
            open += 1;
            let active = c.state.active.load(Ordering::Relaxed);
            let mut limit = c.limit();
            if active >= limit {
                // Full, unless the peer has raised its limit since.
                limit = c.refresh_limit();
                if active >= limit {
                    if active < MAX_STREAMS_PER_CONNECTION && queue.is_none_or(|(_, a)| active < a)
                    {
                        queue = Some((c, active));
                    }
                    continue;
                }
            }
            if best.is_none_or(|(_, a, _)| active < a) {
                best = Some((c, active, limit));
            }
        }
        let Some((best, active, limit)) = best else {
            // Every connection is full: a new one takes the call, unless the peer's limit
            // filled the pool's usual number (a server that takes few streams, or none for a
            // while, does not get a connection per call).
            return match queue {
                Some((c, _)) if open >= MAX_CONNECTIONS => Pick::Ready(c.queued()),
                _ => Pick::None,
            };
        };
        if active < grow_at(limit) {
            return Pick::Ready(best.clone());
        }
        let may_grow = open < MAX_CONNECTIONS
            && self
                .grow_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|t| t.elapsed() >= GROW_BACKOFF);
        if may_grow {
            Pick::Busy(best.clone())
        } else {
            Pick::Ready(best.clone())
        }
    }

    /// Streams open on all its connections.
    pub(crate) fn in_flight(&self) -> usize {
        self.conns
            .load()
            .iter()
            .map(|c| c.state.active.load(Ordering::Relaxed))
            .sum()
    }

    /// Connections whose driver still runs.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Lets go of every connection: each closes once its streams are over.
    pub(crate) fn clear(&self) {
        self.conns.store(Arc::new(Vec::new()));
    }

    /// Takes an idle connection out of the list when another open one stays: new calls no
    /// longer pick it, and it closes once the calls holding it are gone. False when it is the
    /// last open one (which the pool keeps).
    pub(crate) fn retire_surplus(&self, state: &Arc<ConnState>) -> bool {
        let mut retired = false;
        self.conns.rcu(|list| {
            let others = list
                .iter()
                .filter(|c| !Arc::ptr_eq(&c.state, state) && !c.is_closed())
                .count();
            retired = others > 0 && list.iter().any(|c| Arc::ptr_eq(&c.state, state));
            if !retired {
                return Vec::clone(list);
            }
            list.iter()
                .filter(|c| !Arc::ptr_eq(&c.state, state))
                .cloned()
                .collect::<Vec<_>>()
        });
        if retired {
            state.mark_closed();
        }
        retired
    }

    /// Drops a connection that ended from the list.
    pub(crate) fn forget(&self, state: &Arc<ConnState>) {
        self.conns.rcu(|list| {
            list.iter()
                .filter(|c| !Arc::ptr_eq(&c.state, state) && !c.is_closed())
                .cloned()
                .collect::<Vec<_>>()
        });
    }

    pub(crate) fn driver_started(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn driver_ended(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        // A connection retired after a burst frees its buffers seconds after the last call:
        // the next collect rounds return them too.
        crate::activity::mark();
    }

    fn add(&self, conn: &Connection) {
        self.conns.rcu(|list| {
            let mut next: Vec<Connection> =
                list.iter().filter(|c| !c.is_closed()).cloned().collect();
            next.push(conn.clone());
            next
        });
        *self.grow_failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn finish_attempt(&self, result: Option<ConnectError>) {
        let mut a = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        a.0 += 1;
        a.1 = result;
    }

    fn attempts(&self) -> u64 {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// A connection with room, connecting when there is none. A caller whose `deadline`
    /// passes while it waits for the connect counts against the endpoint, as a call that got
    /// no byte from it.
    pub(crate) async fn conn(
        ep: &Arc<Endpoint>,
        deadline: Option<Instant>,
    ) -> Result<Connection, ConnectError> {
        match ep.pool.pick() {
            Pick::Ready(c) => Ok(c),
            Pick::Busy(c) => {
                Pool::grow(ep);
                Ok(c)
            }
            Pick::None => {
                let mut waiting = Waiting {
                    ep,
                    deadline,
                    done: false,
                };
                let result = Pool::open(ep).await;
                waiting.done = true;
                result
            }
        }
    }

    /// Opens one more connection in the background, unless a connect is already running.
    pub(crate) fn grow(ep: &Arc<Endpoint>) {
        let Ok(guard) = ep.pool.connecting.clone().try_lock_owned() else {
            return;
        };
        let ep = ep.clone();
        tokio::spawn(async move {
            let _connecting = guard;
            let connect = Box::pin(connect::connect(&ep));
            match connect.await {
                Ok(conn) => ep.pool.add(&conn),
                Err(e) => {
                    *ep.pool
                        .grow_failed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    connect_failed(&ep, &e);
                }
            }
        });
    }

    /// Opens a connection, or waits for the connect already running and shares its result.
    /// The connect runs in a task of its own: a caller that gives up (its deadline) does not
    /// abandon it, so every attempt ends (within the connect timeout) and is counted.
    async fn open(ep: &Arc<Endpoint>) -> Result<Connection, ConnectError> {
        let seen = ep.pool.attempts();
        let lock = ep.pool.connecting.clone().lock_owned().await;
        if let Pick::Ready(c) | Pick::Busy(c) = ep.pool.pick() {
            return Ok(c);
        }
        {
            // An attempt that ended while this caller waited failed: that is the answer (a
            // black-holed endpoint then costs the callers one connect timeout, not one each).
            let a = ep.pool.attempts.lock().unwrap_or_else(|p| p.into_inner());
            if a.0 != seen {
                if let Some(e) = &a.1 {
                    return Err(e.clone());
                }
            }
        }
        let owner = ep.clone();
        let attempt = tokio::spawn(async move {
            // Held until the attempt ends, so the callers queue behind it.
            let _connecting = lock;
            let ep = owner;
            match connect::connect(&ep).await {
                Ok(conn) => {
                    ep.pool.add(&conn);
                    ep.pool.finish_attempt(None);
                    Ok(conn)
                }
                Err(e) => {
                    ep.pool.finish_attempt(Some(e.clone()));
                    connect_failed(&ep, &e);
                    Err(e)
                }
            }
        });
        match attempt.await {
            Ok(result) => result,
            Err(_) => Err(connect::ConnectError::gone()),
        }
    }
}

/// A caller waiting for a connect: if its deadline passes first, the endpoint failed it.
struct Waiting<'a> {
    ep: &'a Arc<Endpoint>,
    deadline: Option<Instant>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let expired = self.deadline.is_some_and(Failure::timed_out);
        if !self.done && expired {
            self.ep.failed(Failure::Silent);
        }
    }
}

/// Counts a failed connect against the endpoint and logs why (callers see only the kind).
fn connect_failed(ep: &Arc<Endpoint>, e: &ConnectError) {
    if let Some(shared) = ep.shared.upgrade() {
        shared.log_connect_failure(ep, e);
    }
    ep.failed(Failure::Connect);
}
