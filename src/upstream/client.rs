//! The client of one upstream: picks an endpoint and a connection, sends, and sends again
//! when that is safe (a transparent retry of a call no endpoint processed; a route's retry
//! policy for unary calls whose answer has not reached the caller).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::Either;
use http::uri::PathAndQuery;
use http::{Request, Response};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::conn::{Accounting, Failed, Sending, UpstreamBody};
use super::endpoint::Endpoint;
use super::pool::{Pick, Pool};
use super::retry::{fits, Replay, RetrySpec};
use super::shared::Shared;
use super::stats::UpstreamStats;
use crate::body::BoxBody;
use crate::config;
use crate::protocol::grpc::{Code, Status};

/// A client for one upstream.
pub(crate) struct UpstreamClient {
    pub(crate) config: Arc<config::Upstream>,
    /// The configured name, shared by every call's error messages.
    pub(crate) name: Arc<str>,
    shared: Arc<Shared>,
    /// DNS refreshes and ejection ends; stopped with the client.
    background: Option<AbortHandle>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("name", &self.config.name)
            .finish()
    }
}

impl Drop for UpstreamClient {
    fn drop(&mut self) {
        if let Some(task) = self.background.take() {
            task.abort();
        }
        self.shared.retire_all();
    }
}

/// Why a request could not be sent.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No endpoint took the call; `why` names no address.
    Unavailable {
        why: &'static str,
        endpoint: Option<Arc<str>>,
    },
    /// The stream failed before its response head.
    Stream {
        error: h2::Error,
        endpoint: Arc<str>,
    },
}

impl SendError {
    /// The status a caller sees: it names the upstream by its configured name only.
    pub(crate) fn into_status(self, upstream: &str) -> Status {
        match self {
            SendError::Unavailable { why, .. } => Status::new(
                Code::Unavailable,
                format!("upstream {upstream:?} is unavailable: {why}"),
            ),
            SendError::Stream { error, .. } => {
                crate::body::status_from_error(&error, upstream, None)
            }
        }
    }

    /// The endpoint the call last went to, if it got that far.
    pub(crate) fn endpoint(&self) -> Option<&Arc<str>> {
        match self {
            SendError::Unavailable { endpoint, .. } => endpoint.as_ref(),
            SendError::Stream { endpoint, .. } => Some(endpoint),
        }
    }
}

/// What a call's further attempts need to know.
struct Ctx {
    deadline: Option<Instant>,
    retry: Option<RetrySpec>,
    /// Attempts made so far (route retries), the first included.
    attempts: u32,
    /// The transparent retry has been used.
    transparent_used: bool,
    /// Where the last attempt went: the next one goes elsewhere when it can.
    avoid: Option<Arc<Endpoint>>,
}

pub(crate) type Answer = Result<Response<UpstreamBody>, SendError>;
type Boxed = Pin<Box<dyn Future<Output = Answer> + Send>>;

impl UpstreamClient {
    pub(crate) fn new(config: Arc<config::Upstream>) -> Result<UpstreamClient, String> {
        let shared = Shared::new(config.clone())?;
        let background = tokio::runtime::Handle::try_current()
            .ok()
            .map(|rt| rt.spawn(shared.clone().run()).abort_handle());
        Ok(UpstreamClient {
            name: shared.name.clone(),
            config,
            shared,
            background,
        })
    }

    /// For a rebuilt runtime (config reload): this same client when `config` equals its own,
    /// so its endpoints, connections and counters carry over, with its TLS files read again
    /// (new connections use them). `None` when the config changed: build a new client.
    pub(crate) fn carry_over(
        self: &Arc<Self>,
        config: &config::Upstream,
    ) -> Option<Result<Arc<UpstreamClient>, String>> {
        if *self.config != *config {
            return None;
        }
        Some(self.shared.reload_tls().map(|()| self.clone()))
    }

    /// A snapshot of the endpoints and counters, for metrics.
    pub(crate) fn stats(&self) -> UpstreamStats {
        self.shared.stats()
    }

    /// Sends a request (its URI holds only the path) to one of the endpoints. When a
    /// connection is open (the usual case) the request is handed to it before this returns:
    /// the future then holds that send and what another attempt would need, nothing more.
    /// `deadline` bounds the call (a call that reaches it without any byte from upstream
    /// counts against the endpoint); `retry` is the route's retry policy.
    pub(crate) fn start(
        &self,
        mut req: Request<BoxBody>,
        deadline: Option<Instant>,
        retry: Option<RetrySpec>,
    ) -> impl Future<Output = Answer> + Send + 'static {
        let shared = &self.shared;
        if retry.is_some() {
            shared.budget.deposit();
        }
        let ctx = Ctx {
            deadline,
            retry,
            attempts: 1,
            transparent_used: false,
            avoid: None,
        };
        let set = shared.set.load();
        let Some(ep) = set.pick(shared.config.balance, &shared.next, None) else {
            return Either::Right(send_slow(shared.clone(), req, ctx, None));
        };
        let conn = match ep.pool.pick() {
            Pick::Ready(c) => c,
            Pick::Busy(c) => {
                Pool::grow(ep);
                c
            }
            // No connection yet: the general path connects (to this endpoint).
            Pick::None => {
                return Either::Right(send_slow(shared.clone(), req, ctx, Some(ep.clone())))
            }
        };
        *req.uri_mut() = ep.uri(&path(&req));
        match conn.send(req, Accounting::Call(deadline), true) {
            Ok((sending, replay)) => Either::Left(follow(sending, replay, ctx)),
            Err(refused) => Either::Right(match refused.request {
                // The connection was found closed or full: the general path, which tries
                // again.
                Some(back) => send_slow(shared.clone(), back, ctx, Some(ep.clone())),
                None => {
                    let endpoint = Some(ep.label.clone());
                    Box::pin(std::future::ready(Err(SendError::Unavailable {
                        why: "the connection closed",
                        endpoint,
                    })))
                }
            }),
        }
    }

    /// Sends a request (its URI holds only the path) to one of the endpoints, without a
    /// deadline of its own or a retry policy.
    pub(crate) async fn send(&self, req: Request<BoxBody>) -> Answer {
        self.start(req, None, None).await
    }
}

fn path<B>(req: &Request<B>) -> PathAndQuery {
    req.uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// Waits for the answer to a sent request, and sends again when that is safe and allowed.
async fn follow(sending: Sending, replay: Option<Replay>, ctx: Ctx) -> Answer {
    match sending.await {
        Ok(res) => match (ctx.retry, replay) {
            (Some(spec), Some(replay))
                if ctx.attempts < spec.attempts && spec.retries_reply(&res) =>
            {
                Box::pin(retry_reply(res, replay, spec, ctx)).await
            }
            _ => Ok(res),
        },
        Err(failed) => Box::pin(after_failure(failed, replay, ctx)).await,
    }
}

/// A Trailers-Only answer with a status the route retries: sent again after the backoff,
/// when the deadline and the budget allow; else that answer stands.
async fn retry_reply(
    res: Response<UpstreamBody>,
    replay: Replay,
    spec: RetrySpec,
    mut ctx: Ctx,
) -> Answer {
    let ep = res.body().endpoint_ref().clone();
    let Some(shared) = ep.shared.upgrade() else {
        return Ok(res);
    };
    let delay = spec.delay(ctx.attempts);
    // A body still arriving is awaited (the answer kept meanwhile, to stand if it never
    // completes).
    if !fits(ctx.deadline, delay) || !replay.whole(ctx.deadline).await || !shared.budget.withdraw()
    {
        return Ok(res);
    }
    drop(res);
    shared.retries.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(delay).await;
    ctx.attempts += 1;
    ctx.avoid = Some(ep);
    match replay.request(ctx.deadline) {
        Some(req) => send_slow(shared, req, ctx, None).await,
        None => Err(SendError::Unavailable {
            why: "the call could not be sent again",
            endpoint: None,
        }),
    }
}

/// A stream that failed before its response head: sent again when no endpoint processed it
/// (once, transparently), or when the route retries the status it maps to.
async fn after_failure(failed: Failed, replay: Option<Replay>, mut ctx: Ctx) -> Answer {
    let endpoint = failed.endpoint.label.clone();
    let shared = failed.endpoint.shared.upgrade();
    let (Some(shared), Some(replay)) = (shared, replay) else {
        return Err(SendError::Stream {
            error: failed.error,
            endpoint,
        });
    };
    if failed.never_processed() && !ctx.transparent_used && replay.whole(ctx.deadline).await {
        if let Some(req) = replay.request(ctx.deadline) {
            ctx.transparent_used = true;
            ctx.avoid = Some(failed.endpoint.clone());
            shared.transparent_retries.fetch_add(1, Ordering::Relaxed);
            return send_slow(shared, req, ctx, None).await;
        }
    }
    if let Some(spec) = ctx.retry {
        let code = crate::body::status_from_error(&failed.error, "", None).code;
        let delay = spec.delay(ctx.attempts);
        if spec.covers(code)
            && ctx.attempts < spec.attempts
            && fits(ctx.deadline, delay)
            && replay.whole(ctx.deadline).await
            && shared.budget.withdraw()
        {
            shared.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
            ctx.attempts += 1;
            ctx.avoid = Some(failed.endpoint.clone());
            if let Some(req) = replay.request(ctx.deadline) {
                return send_slow(shared, req, ctx, None).await;
            }
        }
    }
    Err(SendError::Stream {
        error: failed.error,
        endpoint,
    })
}

/// The general path: waits for the first DNS answer and for a connection when needed, and
/// tries another endpoint when a connect fails (nothing was sent). `chosen` is the endpoint
/// the balancer already picked for the call, if it did.
fn send_slow(
    shared: Arc<Shared>,
    req: Request<BoxBody>,
    ctx: Ctx,
    chosen: Option<Arc<Endpoint>>,
) -> Boxed {
    Box::pin(async move {
        let mut req = req;
        let mut ctx = ctx;
        let mut chosen = chosen;
        // A connection found closed between the pick and the send gives the request back.
        let mut closed_found = 0;
        let mut full_found = 0;
        loop {
            let picked = match chosen.take() {
                Some(ep) => Some(ep),
                None => pick_or_wait(&shared, ctx.avoid.as_deref()).await,
            };
            let Some(ep) = picked else {
                return Err(SendError::Unavailable {
                    why: "no endpoint (its DNS names have no address)",
                    endpoint: None,
                });
            };
            *req.uri_mut() = ep.uri(&path(&req));
            let conn = match Pool::conn(&ep, ctx.deadline).await {
                Ok(conn) => conn,
                Err(e) => {
                    // Nothing was sent: another endpoint may take the call.
                    ctx.avoid = Some(ep.clone());
                    if !ctx.transparent_used {
                        ctx.transparent_used = true;
                        shared.transparent_retries.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if let Some(spec) = ctx.retry {
                        let delay = spec.delay(ctx.attempts);
                        if spec.covers(Code::Unavailable)
                            && ctx.attempts < spec.attempts
                            && fits(ctx.deadline, delay)
                            && shared.budget.withdraw()
                        {
                            shared.retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(delay).await;
                            ctx.attempts += 1;
                            continue;
                        }
                    }
                    return Err(SendError::Unavailable {
                        why: e.kind.as_str(),
                        endpoint: Some(ep.label.clone()),
                    });
                }
            };
            match conn.send(req, Accounting::Call(ctx.deadline), true) {
                Ok((sending, replay)) => return follow(sending, replay, ctx).await,
                Err(refused) => match refused.request {
                    // Full: another caller took its last stream since the pick, so the pick
                    // now finds another connection (or opens one, or queues where all are full).
                    Some(back) if refused.full && full_found < 16 => {
                        full_found += 1;
                        req = back;
                        chosen = Some(ep);
                    }
                    Some(back) if !refused.full && closed_found < 3 => {
                        closed_found += 1;
                        req = back;
                        ep.pool.forget(&conn.state);
                        chosen = Some(ep);
                    }
                    _ => {
                        return Err(SendError::Unavailable {
                            why: if refused.full {
                                "every connection is full"
                            } else {
                                "the connection closed"
                            },
                            endpoint: Some(ep.label.clone()),
                        })
                    }
                },
            }
        }
    })
}

/// An endpoint for a call; before the first DNS answer, waits for it (bounded).
async fn pick_or_wait(shared: &Arc<Shared>, avoid: Option<&Endpoint>) -> Option<Arc<Endpoint>> {
    let pick = |shared: &Shared| {
        let set = shared.set.load();
        set.pick(shared.config.balance, &shared.next, avoid)
            .cloned()
    };
    if let Some(ep) = pick(shared) {
        return Some(ep);
    }
    if !*shared.resolved.borrow() {
        let mut rx = shared.resolved.subscribe();
        let wait = rx.wait_for(|done| *done);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), wait).await;
    }
    pick(shared)
}
