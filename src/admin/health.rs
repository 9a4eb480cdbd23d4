//! `grpc.health.v1.Health` (tonic-health): the whole server (service `""`) is SERVING while
//! the proxy is ready and NOT_SERVING from the start of a drain; Watch streams the change.

use std::sync::Arc;

use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use tonic::codegen::Service as _;
use tonic_health::ServingStatus;

use crate::body::{BoxBody, BoxError};
use crate::server::Control;

/// The health service, shared by the admin connections.
#[derive(Clone)]
pub(crate) struct GrpcHealth {
    server: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl GrpcHealth {
    /// Answers one gRPC request.
    pub(crate) async fn call(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let mut server = self.server.clone();
        match server.call(req).await {
            Ok(res) => res.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
            Err(never) => match never {},
        }
    }
}

/// The service (SERVING before it answers anything), and the task that marks it NOT_SERVING
/// when the proxy stops being ready.
pub(crate) async fn service(control: Arc<Control>) -> (GrpcHealth, tokio::task::JoinHandle<()>) {
    let reporter = tonic_health::server::HealthReporter::new();
    let server = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter.clone()),
    );
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let task = tokio::spawn(async move {
        control.until_not_ready().await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
    });
    (GrpcHealth { server }, task)
}
