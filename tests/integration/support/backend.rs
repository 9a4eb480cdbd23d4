//! The test backend: `switchboard.testing.v1.TestService` implemented with tonic, served by
//! hyper's HTTP/2 server so the test can count connections and see every request.
//!
//! Behaviour is driven by the request (see testing.proto), plus metadata echo:
//! a request header `x-header-NAME` comes back as a response header, `x-trailer-NAME` as a
//! response trailer (in the Trailers-Only block when the call fails before any message).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
use tokio::sync::{watch, Semaphore};
use tonic::codegen::Service as _;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::pb::library_service_server::LibraryServiceServer;
use super::pb::test_service_server::{TestService, TestServiceServer};
use super::pb::{EchoRequest, EchoResponse};
use super::AbortOnDrop;

/// A `ServerStream` request whose message is this waits on [`BackendState::gate`] before
/// every message after the first, so a test decides when the stream may go on.
pub(crate) const GATED: &str = "gated";

/// Headers the proxy itself adds to every call; not echoed, so replies compare equal with and
/// without a proxy in between.
pub(crate) const PROXY_HEADERS: [&str; 4] = [
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-real-ip",
];

/// A count that tests can wait on.
#[derive(Debug)]
pub(crate) struct Counter(watch::Sender<usize>);

impl Default for Counter {
    fn default() -> Counter {
        Counter(watch::Sender::new(0))
    }
}

impl Counter {
    pub(crate) fn incr(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    pub(crate) fn get(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits (without limit) until the count reaches `n`.
    pub(crate) async fn until(&self, n: usize) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// Waits until the count reaches `n`; false if that takes longer than `limit`.
    pub(crate) async fn reaches(&self, n: usize, limit: Duration) -> bool {
        let mut rx = self.0.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|v| *v >= n))
            .await
            .is_ok();
        reached
    }
}

/// What the backend has seen, for assertions.
#[derive(Debug)]
pub(crate) struct BackendState {
    /// TCP connections accepted.
    pub(crate) connections: Counter,
    /// Calls received (any method).
    pub(crate) calls: Counter,
    /// Stream messages handed to the transport by ServerStream.
    pub(crate) sent: Counter,
    /// Calls that were dropped before they finished (caller cancelled or reset the stream).
    pub(crate) cancellations: Counter,
    /// Request messages read by ClientStream and Bidi, as each arrives.
    pub(crate) received: Counter,
    /// ClientStream calls that read their request stream to its end.
    pub(crate) uploads: Counter,
    /// Permits for [`GATED`] streams: one per message after the first.
    pub(crate) gate: Semaphore,
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` of connections accepted from now on (0: hyper's
    /// default, 200).
    pub(crate) stream_limit: std::sync::atomic::AtomicU32,
    /// Headers of the most recent request.
    pub(crate) last_headers: Mutex<Option<HeaderMap>>,
    /// Bumped by [`BackendState::kill_connections`].
    kills: Counter,
    /// What its `grpc.health.v1.Health` service answers.
    health: tonic_health::server::HealthReporter,
}

impl Default for BackendState {
    fn default() -> BackendState {
        BackendState {
            connections: Counter::default(),
            calls: Counter::default(),
            sent: Counter::default(),
            cancellations: Counter::default(),
            received: Counter::default(),
            uploads: Counter::default(),
            gate: Semaphore::new(0),
            stream_limit: std::sync::atomic::AtomicU32::new(0),
            last_headers: Mutex::new(None),
            kills: Counter::default(),
            health: tonic_health::server::HealthReporter::new(),
        }
    }
}

impl BackendState {
    /// Headers of the most recent request.
    pub(crate) fn last_headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .unwrap()
            .clone()
            .expect("the backend has received no request")
    }

    /// Closes every open connection at once (TCP close, no GOAWAY), as a crashing backend
    /// would. Connections accepted afterwards are served normally.
    pub(crate) fn kill_connections(&self) {
        self.kills.incr();
    }

    /// Makes its health service answer SERVING or NOT_SERVING (for the whole server, `""`).
    pub(crate) async fn set_serving(&self, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.health.set_service_status("", status).await;
    }

    /// Lets gated streams send `n` more messages.
    pub(crate) fn open_gate(&self, n: usize) {
        self.gate.add_permits(n);
    }
}

/// A running backend. Keep it alive for the whole test: dropping it stops accepting.
#[derive(Debug)]
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:port`.
    pub(crate) url: String,
    pub(crate) state: Arc<BackendState>,
    pub(crate) task: AbortOnDrop,
}

/// Starts the test backend (h2c) on an ephemeral loopback port.
pub(crate) async fn spawn_backend() -> Backend {
    spawn_backend_with(None).await
}

/// Starts the test backend with TLS (ALPN h2) when `tls` is given.
pub(crate) async fn spawn_backend_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Backend {
    spawn_backend_on(super::loopback(), tls).await
}

/// Starts the test backend on `addr` (another loopback address, a given port), with TLS when
/// `tls` is given.
pub(crate) async fn spawn_backend_on(
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Backend {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(BackendState::default());
    let scheme = if tls.is_some() { "https" } else { "http" };
    let task = tokio::spawn(accept_loop(listener, tls, state.clone()));
    Backend {
        addr,
        url: format!("{scheme}://{addr}"),
        state,
        task: AbortOnDrop(task),
    }
}

/// Serves the test backend (h2c) on `listener` until the task is dropped; used by
/// `cargo run --example test-backend`.
pub(crate) async fn serve(listener: TcpListener) {
    accept_loop(listener, None, Arc::default()).await;
}

/// [`serve`] with gRPC server reflection (v1) too.
pub(crate) async fn serve_with_reflection(listener: TcpListener) {
    let reflection = Arc::new(Reflection {
        calls: Counter::default(),
        paths: Mutex::new(Vec::new()),
        enabled: std::sync::atomic::AtomicBool::new(true),
        hang: std::sync::atomic::AtomicBool::new(false),
    });
    reflecting_accept_loop(listener, Arc::default(), reflection, ReflectionVersion::V1).await;
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<BackendState>,
) {
    // No message limit of its own: the proxy's limits are what the tests exercise.
    let svc = TestServiceServer::from_arc(Arc::new(Svc {
        state: state.clone(),
    }))
    .max_decoding_message_size(usize::MAX)
    .max_encoding_message_size(usize::MAX);
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(state.health.clone()),
    );
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.connections.incr();
        let svc = svc.clone();
        let health = health.clone();
        let state = state.clone();
        let tls = tls.clone();
        let generation = state.kills.get();
        let limit = state.stream_limit.load(std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            let killed = state.clone();
            let service = service_fn(move |req: Request<Incoming>| {
                let (svc, mut health, state) = (svc.clone(), health.clone(), state.clone());
                async move {
                    if req.uri().path().starts_with("/grpc.health.v1.Health/") {
                        let res = health.call(req).await?;
                        return Ok::<_, Infallible>(res.map(|b| b.boxed_unsync()));
                    }
                    let res = handle(req, svc, state).await?;
                    Ok(res.map(|b| b.boxed_unsync()))
                }
            });
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            if limit > 0 {
                builder.max_concurrent_streams(limit);
            }
            let serve = async move {
                let _ = match tls {
                    None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    Some(acceptor) => match acceptor.accept(tcp).await {
                        Ok(stream) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Err(_) => return,
                    },
                };
            };
            // Dropping the connection future closes the socket.
            tokio::select! {
                () = serve => {}
                () = killed.kills.until(generation + 1) => {}
            }
        });
    }
}

/// Runs one call through tonic (the test service, or the library service of the REST tests),
/// then adds the echoed `x-header-*` / `x-trailer-*` metadata.
async fn handle(
    req: Request<Incoming>,
    mut svc: TestServiceServer<Svc>,
    state: Arc<BackendState>,
) -> Result<Response<impl http_body::Body<Data = Bytes, Error = Status>>, Infallible> {
    // The proxy asks for server reflection by itself (`reflection: auto`): not a test's call.
    if !req.uri().path().starts_with("/grpc.reflection.") {
        state.calls.incr();
        *state.last_headers.lock().unwrap() = Some(req.headers().clone());
    }
    let mut echo_headers = HeaderMap::new();
    let mut echo_trailers = HeaderMap::new();
    for (name, value) in req.headers() {
        if name.as_str().starts_with("x-header-") {
            echo_headers.append(name.clone(), value.clone());
        } else if name.as_str().starts_with("x-trailer-") {
            echo_trailers.append(name.clone(), value.clone());
        }
    }
    let res = if req.uri().path().starts_with(super::library::LIBRARY) {
        let mut library = LibraryServiceServer::new(super::library::Library);
        library.call(req).await?.map(|b| b.boxed_unsync())
    } else {
        svc.call(req).await?.map(|b| b.boxed_unsync())
    };
    let (mut parts, body) = res.into_parts();
    parts.headers.extend(echo_headers);
    if parts.headers.contains_key("grpc-status") {
        // Trailers-Only: the one header block is also the trailer block.
        parts.headers.extend(echo_trailers.clone());
    }
    let body = body.map_frame(move |f| match f.into_trailers() {
        Ok(mut trailers) => {
            trailers.extend(echo_trailers.clone());
            Frame::trailers(trailers)
        }
        Err(f) => f,
    });
    Ok(Response::from_parts(parts, body))
}

struct Svc {
    state: Arc<BackendState>,
}

/// Counts a cancellation when dropped before [`CancelGuard::done`].
struct CancelGuard {
    state: Arc<BackendState>,
    done: bool,
}

impl CancelGuard {
    fn new(state: &Arc<BackendState>) -> CancelGuard {
        CancelGuard {
            state: state.clone(),
            done: false,
        }
    }

    fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.cancellations.incr();
        }
    }
}

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

fn error_status(req: &EchoRequest) -> Option<Status> {
    let spec = req.error.as_ref()?;
    let code = Code::from_i32(spec.code);
    Some(if spec.with_details {
        Status::with_error_details(
            code,
            spec.message.clone(),
            ErrorDetails::with_bad_request_violation("message", "must not be empty"),
        )
    } else {
        Status::new(code, spec.message.clone())
    })
}

fn respond(req: &EchoRequest, index: u32, headers: &tonic::metadata::MetadataMap) -> EchoResponse {
    let payload = if req.response_size > 0 {
        vec![b'x'; req.response_size as usize]
    } else {
        req.payload.clone()
    };
    let h = headers.as_ref();
    EchoResponse {
        message: req.message.clone(),
        payload,
        index,
        grpc_timeout: h
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        metadata: h
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-") && !PROXY_HEADERS.contains(&n.as_str()))
            .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
    }
}

impl Svc {
    async fn answer_once(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        let mut guard = CancelGuard::new(&self.state);
        let req = request.get_ref().clone();
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
        }
        guard.done();
        if let Some(status) = error_status(&req) {
            return Err(status);
        }
        Ok(tonic::Response::new(respond(&req, 0, request.metadata())))
    }
}

struct StreamState {
    req: EchoRequest,
    metadata: tonic::metadata::MetadataMap,
    next: u32,
    backend: Arc<BackendState>,
    guard: CancelGuard,
}

#[tonic::async_trait]
impl TestService for Svc {
    async fn unary(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        self.answer_once(request).await
    }

    async fn lookup(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        self.answer_once(request).await
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoStream>, Status> {
        let (metadata, _, req) = request.into_parts();
        let start = StreamState {
            req,
            metadata,
            next: 0,
            backend: self.state.clone(),
            guard: CancelGuard::new(&self.state),
        };
        // Driven by the transport: when the caller goes away the stream (and its guard) is
        // dropped mid-wait, which records the cancellation.
        let out = stream::unfold(Some(start), |st| async move {
            let mut st = st?;
            if st.next >= st.req.count {
                st.guard.done();
                return error_status(&st.req).map(|e| (Err(e), None));
            }
            if st.req.message == GATED && st.next > 0 {
                st.backend.gate.acquire().await.unwrap().forget();
            }
            if st.req.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(st.req.delay_ms.into())).await;
            }
            let msg = respond(&st.req, st.next, &st.metadata);
            st.next += 1;
            st.backend.sent.incr();
            Some((Ok(msg), Some(st)))
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }

    async fn client_stream(
        &self,
        request: tonic::Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoResponse>, Status> {
        let (metadata, _, mut input) = request.into_parts();
        // A request stream cut short fails (or the call is dropped): a cancellation.
        let mut guard = CancelGuard::new(&self.state);
        let mut messages = Vec::new();
        let mut payload = Vec::new();
        while let Some(req) = input.message().await? {
            self.state.received.incr();
            messages.push(req.message);
            payload.extend_from_slice(&req.payload);
        }
        guard.done();
        self.state.uploads.incr();
        let joined = EchoRequest {
            message: messages.join(","),
            payload,
            ..EchoRequest::default()
        };
        Ok(tonic::Response::new(respond(&joined, 0, &metadata)))
    }

    type BidiStream = EchoStream;

    async fn bidi(
        &self,
        request: tonic::Request<tonic::Streaming<EchoRequest>>,
    ) -> Result<tonic::Response<EchoStream>, Status> {
        let (metadata, _, input) = request.into_parts();
        // Dropped (or failing) before the caller's end of stream: a cancellation.
        let start = (input, CancelGuard::new(&self.state), 0u32);
        let state = self.state.clone();
        let out = stream::unfold(Some(start), move |st| {
            let (state, metadata) = (state.clone(), metadata.clone());
            async move {
                let (mut input, mut guard, i) = st?;
                match input.message().await {
                    Ok(Some(req)) => {
                        state.received.incr();
                        if let Some(status) = error_status(&req) {
                            guard.done();
                            return Some((Err(status), None));
                        }
                        let res = respond(&req, i, &metadata);
                        Some((Ok(res), Some((input, guard, i + 1))))
                    }
                    Ok(None) => {
                        guard.done();
                        None
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(out)))
    }
}

/// The FileDescriptorSet of testing.proto, written by build.rs.
pub(crate) const TESTING_DESCRIPTOR: &str = concat!(env!("OUT_DIR"), "/testing_descriptor.bin");

/// Which gRPC server reflection service a backend from [`spawn_backend_with_reflection`]
/// offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReflectionVersion {
    /// `grpc.reflection.v1` only.
    V1,
    /// `grpc.reflection.v1alpha` only: v1 calls get UNIMPLEMENTED, as from an older server.
    V1AlphaOnly,
}

/// The server reflection side of a backend from [`spawn_backend_with_reflection`].
#[derive(Debug)]
pub(crate) struct Reflection {
    /// Reflection calls received (either version, answered or refused).
    pub(crate) calls: Counter,
    /// The path of every reflection call, in order.
    pub(crate) paths: Mutex<Vec<String>>,
    /// While false, every reflection call is answered UNIMPLEMENTED.
    pub(crate) enabled: std::sync::atomic::AtomicBool,
    /// While true, reflection calls are never answered (a hung reflection service).
    pub(crate) hang: std::sync::atomic::AtomicBool,
}

impl Reflection {
    /// Paths of the reflection calls so far.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }

    /// Turns the reflection service on or off.
    pub(crate) fn set_enabled(&self, on: bool) {
        self.enabled.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The body of every response of a reflecting backend.
type AnyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Status>;

/// Starts the test backend (h2c) serving gRPC server reflection as well, built from
/// [`TESTING_DESCRIPTOR`]. Reflection calls are not counted in [`BackendState::calls`] nor
/// recorded in [`BackendState::last_headers`]; they are counted in [`Reflection`].
pub(crate) async fn spawn_backend_with_reflection(
    version: ReflectionVersion,
) -> (Backend, Arc<Reflection>) {
    let listener = TcpListener::bind(super::loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(BackendState::default());
    let reflection = Arc::new(Reflection {
        calls: Counter::default(),
        paths: Mutex::new(Vec::new()),
        enabled: std::sync::atomic::AtomicBool::new(true),
        hang: std::sync::atomic::AtomicBool::new(false),
    });
    let task = tokio::spawn(reflecting_accept_loop(
        listener,
        state.clone(),
        reflection.clone(),
        version,
    ));
    let backend = Backend {
        addr,
        url: format!("http://{addr}"),
        state,
        task: AbortOnDrop(task),
    };
    (backend, reflection)
}

async fn reflecting_accept_loop(
    listener: TcpListener,
    state: Arc<BackendState>,
    reflection: Arc<Reflection>,
    version: ReflectionVersion,
) {
    let descriptors = std::fs::read(TESTING_DESCRIPTOR).unwrap();
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .build_v1()
        .unwrap();
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(&descriptors)
        .build_v1alpha()
        .unwrap();
    let svc = TestServiceServer::from_arc(Arc::new(Svc {
        state: state.clone(),
    }))
    .max_decoding_message_size(usize::MAX)
    .max_encoding_message_size(usize::MAX);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        state.connections.incr();
        let (svc, state, reflection) = (svc.clone(), state.clone(), reflection.clone());
        let (v1, v1alpha) = (v1.clone(), v1alpha.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (svc, state, reflection) = (svc.clone(), state.clone(), reflection.clone());
                let (mut v1, mut v1alpha) = (v1.clone(), v1alpha.clone());
                async move {
                    let path = req.uri().path().to_owned();
                    if !path.starts_with("/grpc.reflection.") {
                        let res = handle(req, svc, state).await?;
                        return Ok::<_, Infallible>(res.map(|b| b.boxed_unsync()));
                    }
                    reflection.paths.lock().unwrap().push(path.clone());
                    reflection.calls.incr();
                    if reflection.hang.load(std::sync::atomic::Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    let enabled = reflection.enabled.load(std::sync::atomic::Ordering::SeqCst);
                    let res = match (enabled, version) {
                        (true, ReflectionVersion::V1)
                            if path.starts_with("/grpc.reflection.v1.") =>
                        {
                            v1.call(req).await?.map(|b| b.boxed_unsync())
                        }
                        (true, ReflectionVersion::V1AlphaOnly)
                            if path.starts_with("/grpc.reflection.v1alpha.") =>
                        {
                            v1alpha.call(req).await?.map(|b| b.boxed_unsync())
                        }
                        _ => unimplemented_response(&path),
                    };
                    Ok(res)
                }
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// A Trailers-Only UNIMPLEMENTED answer, as a gRPC server gives for a service it lacks.
fn unimplemented_response(path: &str) -> Response<AnyBody> {
    Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "12")
        .header("grpc-message", format!("unknown service {path}"))
        .body(
            http_body_util::Empty::new()
                .map_err(|never: Infallible| match never {})
                .boxed_unsync(),
        )
        .unwrap()
}
