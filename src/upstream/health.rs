//! Active health checks: `grpc.health.v1.Health/Check` on every endpoint, every `interval`.
//! SERVING puts an endpoint (back) in the balancer; any other answer, an error, or no answer
//! within `timeout` takes it out.

use std::sync::{Arc, Weak};

use bytes::{Buf, Bytes};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt as _;
use prost::Message as _;
use tokio::time::Instant;

use super::conn::{Accounting, ConnState};
use super::endpoint::{Endpoint, Health};
use super::pool::Pool;
use super::shared::Shared;
use crate::config::HealthCheck;
use crate::protocol::grpc::frame::{self, HEADER_LEN};
use crate::protocol::grpc::status::GRPC_STATUS;
use crate::protocol::grpc::timeout::{encode_grpc_timeout, GRPC_TIMEOUT};

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// A health answer is a few bytes; anything longer is not one.
const MAX_ANSWER: usize = 4096;
/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// Checks `ep` until it leaves the upstream (or the upstream is gone).
pub(crate) fn spawn(ep: Arc<Endpoint>, shared: Weak<Shared>, check: HealthCheck) {
    tokio::spawn(async move {
        loop {
            if ep.is_removed() {
                return;
            }
            let health = check_once(&ep, &check).await;
            let Some(s) = shared.upgrade() else {
                return;
            };
            if ep.is_removed() {
                return;
            }
            s.set_health(&ep, health);
            drop(s);
            tokio::time::sleep(check.interval).await;
        }
    });
}

/// One check, within the timeout; no answer in time counts as NOT_SERVING.
pub(crate) async fn check_once(ep: &Arc<Endpoint>, check: &HealthCheck) -> Health {
    let deadline = Instant::now() + check.timeout;
    let mut used: Option<Arc<ConnState>> = None;
    let result = tokio::time::timeout_at(deadline, ask(ep, check, deadline, &mut used)).await;
    match result {
        Ok(Ok(true)) => Health::Serving,
        Ok(Ok(false)) => Health::NotServing,
        Ok(Err(why)) => {
            tracing::debug!(endpoint = %ep.label, reason = why, "health check failed");
            Health::NotServing
        }
        Err(_) => {
            // The connection may be a black hole: probe it, so it is closed if it is, and the
            // next check connects afresh.
            if let Some(state) = used {
                state.wake.notify_one();
            }
            Health::NotServing
        }
    }
}

/// Asks the endpoint; true when it answered SERVING.
async fn ask(
    ep: &Arc<Endpoint>,
    check: &HealthCheck,
    deadline: Instant,
    used: &mut Option<Arc<ConnState>>,
) -> Result<bool, &'static str> {
    let conn = Pool::conn(ep, None).await.map_err(|e| e.kind.as_str())?;
    *used = Some(conn.state.clone());
    let message = HealthCheckRequest {
        service: check.service.clone(),
    }
    .encode_to_vec();
    let path = http::uri::PathAndQuery::from_static(CHECK_PATH);
    let mut req = Request::new(crate::body::full(frame::encode(0, &message)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = ep.uri(&path);
    let h = req.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(TE, HeaderValue::from_static("trailers"));
    h.insert(
        GRPC_TIMEOUT,
        encode_grpc_timeout(deadline.saturating_duration_since(Instant::now())),
    );
    let (sending, _) = conn
        .send(req, Accounting::Check, false)
        .map_err(|_| "the connection closed")?;
    let res = sending.await.map_err(|_| "the stream failed")?;
    let (parts, body) = res.into_parts();
    if parts.status != StatusCode::OK {
        return Err("not an HTTP 200 answer");
    }
    if parts.headers.contains_key(GRPC_STATUS) {
        // Trailers-Only: no message, so no SERVING (NOT_FOUND for a service the server does
        // not know, UNIMPLEMENTED without a health service).
        return Ok(false);
    }
    let collected = http_body_util::Limited::new(body, MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| "the answer failed or was too long")?;
    let ok = collected
        .trailers()
        .and_then(|t| t.get(GRPC_STATUS))
        .is_some_and(|s| s == "0");
    if !ok {
        return Ok(false);
    }
    Ok(serving(collected.to_bytes()))
}

/// Whether the message of an answer says SERVING.
fn serving(mut data: Bytes) -> bool {
    if data.len() < HEADER_LEN || data[0] != 0 {
        return false;
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.advance(HEADER_LEN);
    if data.len() != len {
        return false;
    }
    HealthCheckResponse::decode(data).is_ok_and(|r| r.status == SERVING)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: i32) -> Bytes {
        frame::encode(0, &HealthCheckResponse { status }.encode_to_vec())
    }

    #[test]
    fn reads_the_serving_status() {
        assert!(serving(answer(1)));
        for other in [0, 2, 3] {
            assert!(!serving(answer(other)), "{other}");
        }
        // Truncated, compressed or trailing bytes: not an answer.
        let whole = answer(1);
        assert!(!serving(whole.slice(..whole.len() - 1)));
        let mut flagged = whole.to_vec();
        flagged[0] = 1;
        assert!(!serving(Bytes::from(flagged)));
        assert!(!serving(Bytes::new()));
    }
}
