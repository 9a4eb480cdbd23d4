//! Upstreams that come and go: balancing, endpoints from DNS, health checks, outlier
//! ejection, safe retries, mTLS, and connections that stop answering, against several real
//! backends (the tonic test backend, the grpcio backend of tests/interop, an HTTP/2 server
//! that misbehaves on purpose) on loopback.
//!
//! Failover tests print how long the failover took (`failover: …`), so a test log shows the
//! figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod balance;
mod dns;
mod faults;
mod health;
mod pool;
mod retries;
mod stalled;
mod tls;

use std::time::Duration;

use tonic::transport::Channel;

use crate::support::pb::test_service_client::TestServiceClient;
use crate::support::*;

/// A config with one loopback listener, one upstream `backend` with `endpoints`, and one
/// route for everything; `upstream` and `route` are extra YAML lines for each.
pub(crate) fn config(endpoints: &[&str], upstream: &[&str], route: &[&str]) -> String {
    let list = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut yaml = format!(
        "listeners:\n  - address: 127.0.0.1:0\nupstreams:\n  - name: backend\n    endpoints: [{list}]\n"
    );
    for line in upstream {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml.push_str("routes:\n  - match: { prefix: / }\n    upstream: backend\n");
    for line in route {
        yaml.push_str(&format!("    {line}\n"));
    }
    yaml
}

/// A native gRPC client (tonic, HTTP/2) of the proxy.
pub(crate) struct Caller {
    client: TestServiceClient<Channel>,
}

impl Caller {
    pub(crate) async fn new(proxy: &Proxy) -> Caller {
        Caller::at(&proxy.url).await
    }

    /// A client of the proxy at `url`.
    pub(crate) async fn at(url: &str) -> Caller {
        let client = guard(
            "connect to the proxy",
            TestServiceClient::connect(url.to_owned()),
        )
        .await
        .unwrap();
        Caller { client }
    }

    /// One unary call with a deadline.
    pub(crate) async fn unary(
        &mut self,
        msg: EchoRequest,
        timeout: Duration,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        guard("a unary call", self.client.unary(req)).await
    }

    /// One unary call of `echo("hi")` within `timeout`: true when it succeeded.
    pub(crate) async fn ok(&mut self, timeout: Duration) -> bool {
        self.unary(echo("hi"), timeout).await.is_ok()
    }
}

/// The `x-backend` header a grpcio backend started with `--name` adds.
pub(crate) fn served_by<T>(res: &tonic::Response<T>) -> Option<String> {
    res.metadata()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Prints a failover figure where the test log shows it.
pub(crate) fn report(what: &str, took: Duration) {
    eprintln!("failover: {what}: {} ms", took.as_millis());
}
