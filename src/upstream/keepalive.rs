//! The task that drives one connection: its I/O, the PING that confirms the handshake,
//! keepalive PINGs while streams are open, and the probe PING sent after a call ended at its
//! deadline without a byte from upstream. A PING unanswered within `keepalive.timeout` closes
//! the connection, so a black-holed connection stops taking calls within the timeout of its
//! first silent call.
//!
//! gRPC servers police PINGs (grpc-go and grpc-core by default): a PING less than five
//! minutes after the previous one, with no HEADERS or DATA sent by the server in between,
//! is a strike, and after two strikes the server answers GOAWAY ENHANCE_YOUR_CALM. So at
//! most one PING is outstanding, a PING after the server spoke is always free, and without
//! that at most two strikes are risked until the server speaks again.

use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use h2::client::Connection as H2Connection;
use h2::{Ping, PingPong};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tokio::time::{Instant, MissedTickBehavior};

use super::conn::ConnState;
use super::pool::SURPLUS_IDLE;
use crate::config::Keepalive;
use crate::gated::Gated;

/// A PING sooner than this after the previous one may count as a strike.
const SERVER_MIN_PING_INTERVAL: Duration = Duration::from_secs(300);
/// Strikes a server forgives.
const MAX_STRIKES: u8 = 2;

/// Why a connection's task ended.
enum End {
    /// The connection ended (every handle dropped, or the peer closed it in order).
    Closed,
    Error(h2::Error),
    /// A PING went unanswered.
    Unanswered,
    /// Given up by the pool (a handshake that took too long, or the endpoint left).
    Abandoned,
}

/// The server's PING policy as seen from here: when a PING may go out.
#[derive(Debug, Default)]
struct PingPolicy {
    /// When the outstanding PING was sent.
    outstanding: Option<Instant>,
    last_sent: Option<Instant>,
    /// The server sent something since the last PING (which resets its strikes).
    heard_since_ping: bool,
    /// PINGs the server may have counted against this connection.
    strikes: u8,
}

impl PingPolicy {
    /// Whether a PING now would count as a strike.
    fn would_strike(&self, now: Instant, active: usize) -> bool {
        // The first PING is free; one after the server spoke resets the count.
        let Some(last) = self.last_sent else {
            return false;
        };
        // Without open streams grpc-go allows one PING in two hours; with streams, one in
        // five minutes.
        !self.heard_since_ping && (active == 0 || now - last < SERVER_MIN_PING_INTERVAL)
    }

    fn may_send(&self, now: Instant, active: usize) -> bool {
        self.outstanding.is_none()
            && (!self.would_strike(now, active) || self.strikes < MAX_STRIKES)
    }

    /// Records a PING sent now.
    fn sent(&mut self, now: Instant, active: usize) {
        if self.heard_since_ping {
            self.strikes = 0;
        }
        if self.would_strike(now, active) {
            self.strikes += 1;
        }
        self.outstanding = Some(now);
        self.last_sent = Some(now);
        self.heard_since_ping = false;
    }
}

/// The PING side of a connection.
struct Pinger {
    ping: PingPong,
    policy: PingPolicy,
}

impl Pinger {
    fn new(ping: PingPong) -> Pinger {
        Pinger {
            ping,
            policy: PingPolicy::default(),
        }
    }

    fn may_send(&self, now: Instant, active: usize) -> bool {
        self.policy.may_send(now, active)
    }

    fn send(&mut self, now: Instant, active: usize) {
        if self.ping.send_ping(Ping::opaque()).is_ok() {
            self.policy.sent(now, active);
        }
    }
}

/// Drives `conn` until it ends, then takes it out of its endpoint's pool. `ready` is told
/// when the server answered the first PING (the handshake is complete), or why the
/// connection ended before.
pub(crate) async fn drive<T>(
    conn: H2Connection<T, Bytes>,
    ping: Option<PingPong>,
    state: Arc<ConnState>,
    keepalive: Keepalive,
    ready: oneshot::Sender<Result<(), h2::Error>>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut conn = std::pin::pin!(conn);
    let mut ready = Some(ready);
    let mut pinger = ping.map(Pinger::new);
    let start = Instant::now();
    match pinger.as_mut() {
        Some(p) => p.send(start, 0),
        None => {
            if let Some(tx) = ready.take() {
                let _ = tx.send(Ok(()));
            }
        }
    }
    let mut tick = tokio::time::interval_at(start + keepalive.interval, keepalive.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // When the peer was last known to have spoken (sampled when the task wakes up).
    let mut heard_at = start;
    // Surplus connections are let go once idle (see `Pool::retire_surplus`).
    let mut idle = tokio::time::interval(SURPLUS_IDLE);
    idle.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idle_since: Option<Instant> = None;
    // The timers are gated: the connection wakes this task several times per call, and a
    // timer is polled only when it fired (see `crate::gated`).
    let mut tick = std::pin::pin!(Gated::new(poll_fn(move |cx| tick.poll_tick(cx))));
    let mut idle = std::pin::pin!(Gated::new(poll_fn(move |cx| idle.poll_tick(cx))));
    let end = loop {
        let outstanding = pinger.as_ref().and_then(|p| p.policy.outstanding);
        let pong_due = outstanding.map_or(start, |t| t + keepalive.timeout);
        tokio::select! {
            biased;
            r = conn.as_mut() => break match r {
                Ok(()) => End::Closed,
                Err(e) => End::Error(e),
            },
            pong = poll_fn(|cx| match pinger.as_mut() {
                Some(p) => p.ping.poll_pong(cx),
                None => Poll::Pending,
            }), if outstanding.is_some() => match pong {
                Ok(_) => {
                    if let Some(p) = pinger.as_mut() {
                        p.policy.outstanding = None;
                    }
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
                Err(e) => break End::Error(e),
            },
            // The handshake PING is bounded by the connect timeout instead.
            () = tokio::time::sleep_until(pong_due), if outstanding.is_some() && ready.is_none() => {
                break End::Unanswered;
            }
            () = state.wake.notified() => {
                if state.is_abandoned() {
                    break End::Abandoned;
                }
                // A call ended at its deadline without a byte: probe the connection.
                let now = Instant::now();
                if let Some(p) = pinger.as_mut() {
                    if state.take_heard() {
                        p.policy.heard_since_ping = true;
                        heard_at = now;
                    }
                    if p.may_send(now, state.active.load(Ordering::Relaxed)) {
                        tracing::debug!(endpoint = %state.endpoint.label, "probing a silent upstream connection with a PING");
                        p.send(now, state.active.load(Ordering::Relaxed));
                    }
                }
            }
            _ = idle.as_mut(), if !state.is_closed() => {
                let now = Instant::now();
                if state.active.load(Ordering::Relaxed) > 0 {
                    idle_since = None;
                } else if idle_since.is_some_and(|t| now - t >= SURPLUS_IDLE) {
                    if state.endpoint.pool.retire_surplus(&state) {
                        tracing::debug!(endpoint = %state.endpoint.label, "closing an idle surplus upstream connection");
                    }
                } else if idle_since.is_none() {
                    idle_since = Some(now);
                }
            }
            _ = tick.as_mut() => {
                let now = Instant::now();
                let active = state.active.load(Ordering::Relaxed);
                if let Some(p) = pinger.as_mut() {
                    if state.take_heard() {
                        p.policy.heard_since_ping = true;
                        heard_at = now;
                    }
                    // Keepalive: only while streams are open and the peer said nothing for
                    // an interval.
                    let quiet = now.saturating_duration_since(heard_at) >= keepalive.interval;
                    if active > 0 && quiet && p.may_send(now, active) {
                        p.send(now, active);
                    }
                }
            }
        }
    };
    state.mark_closed();
    let ep = &state.endpoint;
    ep.pool.forget(&state);
    ep.pool.driver_ended();
    match end {
        End::Unanswered => {
            if let Some(shared) = ep.shared.upgrade() {
                shared.log_unanswered_ping(ep, keepalive.timeout);
            }
        }
        End::Error(e) => {
            tracing::debug!(endpoint = %ep.label, error = %e, "upstream connection closed");
            if let Some(tx) = ready.take() {
                let _ = tx.send(Err(e));
            }
        }
        End::Closed | End::Abandoned => {}
    }
    // Returning drops the connection: streams still open on it fail at once.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_never_risk_a_third_strike() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = PingPolicy::default();
        // The handshake PING is free.
        assert!(p.may_send(t0, 0));
        p.sent(t0, 0);
        // One at a time.
        assert!(!p.may_send(t0 + s, 1));
        p.outstanding = None;
        // Two more without the server speaking: strikes one and two.
        assert!(p.may_send(t0 + s, 1));
        p.sent(t0 + s, 1);
        p.outstanding = None;
        assert!(p.may_send(t0 + 2 * s, 1));
        p.sent(t0 + 2 * s, 1);
        p.outstanding = None;
        assert_eq!(p.strikes, 2);
        // A third would be one too many.
        assert!(!p.may_send(t0 + 3 * s, 1));
        // Five minutes later, with a stream open, it is no strike.
        let later = t0 + 2 * s + SERVER_MIN_PING_INTERVAL;
        assert!(p.may_send(later, 1));
        // But without streams the server allows one in two hours.
        assert!(!p.may_send(later, 0));
        // Once the server spoke, a PING is free again and the count starts over.
        p.heard_since_ping = true;
        assert!(p.may_send(t0 + 3 * s, 0));
        p.sent(t0 + 3 * s, 0);
        assert_eq!(p.strikes, 0);
    }
}
