//! The admin listener: probes, metrics, the effective config, reload and drain, and
//! `grpc.health.v1.Health` on the same port (HTTP/1.1 and h2c), for load balancers and
//! Kubernetes probes. It is its own socket, never one of the proxy's listeners.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/healthz` | GET | 200 while the process runs |
//! | `/readyz` | GET | 200 when ready; 503 while draining |
//! | `/metrics` | GET | Prometheus text |
//! | `/config` | GET | the effective config as JSON (`?format=yaml`: YAML), secrets redacted |
//! | `/reload` | POST | 200 when the new config is in use; 400 with the error when refused |
//! | `/drain` | POST | 200; the drain (as on SIGTERM) goes on in the background |
//! | `/grpc.health.v1.Health/{Check,Watch}` | gRPC | SERVING while ready, NOT_SERVING from the start of a drain |

mod health;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::body::{self, BoxBody};
use crate::server::{Control, ReloadOutcome};

/// How long an admin request's headers may take.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections open at once at most (probes and scrapes are few).
const MAX_CONNECTIONS: usize = 64;

/// The running admin listener; dropping it stops accepting.
#[derive(Debug)]
pub(crate) struct Admin {
    /// The bound address.
    pub(crate) local: SocketAddr,
    task: JoinHandle<()>,
    health: JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.task.abort();
        self.health.abort();
    }
}

/// Binds the admin listener and serves it in the background.
pub(crate) async fn spawn(address: SocketAddr, control: Arc<Control>) -> anyhow::Result<Admin> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("admin: cannot listen on {address}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "admin listening");
    let (grpc, health) = health::service(control.clone()).await;
    let task = tokio::spawn(accept_loop(listener, control, grpc));
    Ok(Admin {
        local,
        task,
        health,
    })
}

async fn accept_loop(listener: TcpListener, control: Arc<Control>, grpc: health::GrpcHealth) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Usually out of file descriptors: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let control = control.clone();
        let grpc = grpc.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| handle(req, control.clone(), grpc.clone()));
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    control: Arc<Control>,
    grpc: health::GrpcHealth,
) -> Result<Response<BoxBody>, Infallible> {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return Ok(grpc.call(req).await);
    }
    let path = req.uri().path().to_owned();
    let allowed = match path.as_str() {
        "/healthz" | "/readyz" | "/metrics" | "/config" => Method::GET,
        "/reload" | "/drain" => Method::POST,
        _ => return Ok(text(StatusCode::NOT_FOUND, "not found\n")),
    };
    let method = req.method().clone();
    if method != allowed && !(allowed == Method::GET && method == Method::HEAD) {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes {allowed}\n"),
        );
        if let Ok(v) = HeaderValue::from_str(allowed.as_str()) {
            res.headers_mut().insert(header::ALLOW, v);
        }
        return Ok(res);
    }
    Ok(match path.as_str() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if control.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" if control.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        "/metrics" => {
            let mut res = text(StatusCode::OK, &control.metrics_text());
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        "/config" => config(&req, &control),
        "/reload" => {
            // The request body is not used; read it so the connection stays reusable.
            let _ = tokio::time::timeout(HEADER_TIMEOUT, req.into_body().collect()).await;
            match control.reload().await {
                Ok(ReloadOutcome::Applied) => text(StatusCode::OK, "reloaded: the new config is in use\n"),
                Ok(ReloadOutcome::NoFile) => text(
                    StatusCode::OK,
                    "nothing to reload: the config comes from the command line (quick mode); the running config stays\n",
                ),
                Err(e) => text(StatusCode::BAD_REQUEST, &format!("reload refused, the old config stays: {e}\n")),
            }
        }
        "/drain" => {
            let c = control.clone();
            tokio::spawn(async move { c.drain().await });
            text(StatusCode::OK, "draining\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// The effective config: JSON, or YAML when asked for with `?format=yaml` or an `accept` of
/// YAML.
fn config(req: &Request<Incoming>, control: &Control) -> Response<BoxBody> {
    let query = req.uri().query().unwrap_or_default();
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let yaml = query.split('&').any(|kv| kv == "format=yaml") || accept.contains("yaml");
    let config = control.config();
    let (rendered, content_type) = if yaml {
        (config.to_yaml(), "application/yaml")
    } else {
        (
            serde_json::to_string_pretty(&*config)
                .map(|mut s| {
                    s.push('\n');
                    s
                })
                .map_err(|e| e.to_string()),
            "application/json",
        )
    };
    match rendered {
        Ok(body) => {
            let mut res = text(StatusCode::OK, &body);
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            res
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render the config: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<BoxBody> {
    let mut res = Response::new(body::full(Bytes::copy_from_slice(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}
