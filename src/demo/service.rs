//! The demo gRPC service, `switchboard.demo.v1.DemoService` (proto/switchboard/demo/v1/demo.proto),
//! implemented with tonic and served over h2c on an ephemeral loopback port. It speaks protobuf
//! only, as most backends do: JSON callers are transcoded by the proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tonic::codegen::Service as _;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use self::pb::demo_service_server::{DemoService, DemoServiceServer};
use self::pb::{
    ChatRequest, ChatResponse, CountdownRequest, CountdownResponse, GreetRequest, GreetResponse,
    SlowRequest, SlowResponse, UploadRequest, UploadResponse,
};

/// The generated messages and server.
pub(crate) mod pb {
    #![allow(
        unreachable_pub,
        missing_docs,
        clippy::all,
        clippy::unwrap_used,
        clippy::expect_used
    )]
    tonic::include_proto!("switchboard.demo.v1");
}

/// Request metadata with this prefix is echoed into response headers and trailers.
const ECHO_PREFIX: &str = "x-demo-";
/// Countdown: default and largest `from`.
const COUNTDOWN_DEFAULT: u32 = 5;
const COUNTDOWN_MAX: u32 = 20;
/// Countdown: default and largest pause between messages.
const INTERVAL_DEFAULT_MS: u32 = 400;
const INTERVAL_MAX_MS: u32 = 2_000;
/// Slow: default and longest sleep.
const SLEEP_DEFAULT_MS: u32 = 2_000;
const SLEEP_MAX_MS: u32 = 30_000;
/// Greet: names are cut to this many characters.
const NAME_MAX_CHARS: usize = 100;
/// Chat: longest text.
const CHAT_MAX_CHARS: usize = 500;

/// The service task; dropping it stops the service and closes its connections.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Where it listens (loopback, ephemeral port).
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0` and serves the demo service in the background.
pub(crate) async fn spawn() -> std::io::Result<Backend> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(accept_loop(listener));
    Ok(Backend { addr, task })
}

async fn accept_loop(listener: TcpListener) {
    let svc = DemoServiceServer::new(Demo);
    // Owned here, so aborting this task closes every connection too.
    let mut connections = JoinSet::new();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "demo service: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let svc = svc.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(req, svc.clone()));
            let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!(error = %e, "demo service: connection ended with an error");
            }
        });
    }
}

/// Runs one call through tonic and echoes the `x-demo-*` request metadata into the response
/// headers and trailers (into the one header block of a Trailers-Only response).
async fn handle(
    req: Request<Incoming>,
    mut svc: DemoServiceServer<Demo>,
) -> Result<Response<impl http_body::Body<Data = Bytes, Error = Status>>, Infallible> {
    let mut echo = HeaderMap::new();
    for (name, value) in req.headers() {
        if name.as_str().starts_with(ECHO_PREFIX) {
            echo.append(name.clone(), value.clone());
        }
    }
    let res = svc.call(req).await?;
    let (mut parts, body) = res.into_parts();
    parts.headers.extend(echo.clone());
    let body = body.map_frame(move |f| match f.into_trailers() {
        Ok(mut trailers) => {
            trailers.extend(echo.clone());
            Frame::trailers(trailers)
        }
        Err(f) => f,
    });
    Ok(Response::from_parts(parts, body))
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field.
fn bad_request(field: &str, description: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field} {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

struct Demo;

type CountdownStream = Pin<Box<dyn Stream<Item = Result<CountdownResponse, Status>> + Send>>;
type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DemoService for Demo {
    async fn greet(
        &self,
        request: tonic::Request<GreetRequest>,
    ) -> Result<tonic::Response<GreetResponse>, Status> {
        let metadata = request
            .metadata()
            .as_ref()
            .iter()
            .filter(|(n, _)| n.as_str().starts_with(ECHO_PREFIX))
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let name = request.get_ref().name.trim();
        if name.is_empty() {
            return Err(bad_request("name", "must not be empty"));
        }
        let name: String = name.chars().take(NAME_MAX_CHARS).collect();
        Ok(tonic::Response::new(GreetResponse {
            greeting: format!("Hello, {name}!"),
            metadata,
        }))
    }

    type CountdownStream = CountdownStream;

    async fn countdown(
        &self,
        request: tonic::Request<CountdownRequest>,
    ) -> Result<tonic::Response<CountdownStream>, Status> {
        let req = request.into_inner();
        let from = match req.from {
            0 => COUNTDOWN_DEFAULT,
            n if n > COUNTDOWN_MAX => {
                return Err(bad_request(
                    "from",
                    &format!("must be at most {COUNTDOWN_MAX}"),
                ))
            }
            n => n,
        };
        let interval = match req.interval_ms {
            0 => INTERVAL_DEFAULT_MS,
            n => n.min(INTERVAL_MAX_MS),
        };
        let interval = Duration::from_millis(interval.into());
        // The first message at once, then one every `interval`; when the caller goes away the
        // transport drops the stream mid-sleep.
        let out = stream::unfold(0_u32, move |index| async move {
            if index >= from {
                return None;
            }
            if index > 0 {
                tokio::time::sleep(interval).await;
            }
            let msg = CountdownResponse {
                remaining: from - index,
                index,
            };
            Some((Ok(msg), index + 1))
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn slow(
        &self,
        request: tonic::Request<SlowRequest>,
    ) -> Result<tonic::Response<SlowResponse>, Status> {
        let sleep_ms = match request.get_ref().sleep_ms {
            0 => SLEEP_DEFAULT_MS,
            n => n.min(SLEEP_MAX_MS),
        };
        tokio::time::sleep(Duration::from_millis(sleep_ms.into())).await;
        Ok(tonic::Response::new(SlowResponse { slept_ms: sleep_ms }))
    }

    type ChatStream = ChatStream;

    async fn chat(
        &self,
        request: tonic::Request<tonic::Streaming<ChatRequest>>,
    ) -> Result<tonic::Response<ChatStream>, Status> {
        let input = request.into_inner();
        // One answer per message, as each arrives; the stream ends when the client's does.
        let out = stream::unfold(Some((input, 0_u32)), |state| async move {
            let (mut input, index) = state?;
            let msg = match input.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => return None,
                Err(status) => return Some((Err(status), None)),
            };
            if msg.text.chars().count() > CHAT_MAX_CHARS {
                let too_long = format!("must be at most {CHAT_MAX_CHARS} characters");
                return Some((Err(bad_request("text", &too_long)), None));
            }
            let answer = ChatResponse {
                text: format!("echo: {}", msg.text),
                index,
            };
            Some((Ok(answer), Some((input, index + 1))))
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn upload(
        &self,
        request: tonic::Request<tonic::Streaming<UploadRequest>>,
    ) -> Result<tonic::Response<UploadResponse>, Status> {
        let mut input = request.into_inner();
        let (mut chunks, mut bytes) = (0_u32, 0_u64);
        while let Some(msg) = input.message().await? {
            chunks = chunks.saturating_add(1);
            bytes = bytes.saturating_add(msg.chunk.len() as u64);
        }
        Ok(tonic::Response::new(UploadResponse { chunks, bytes }))
    }
}
