//! The load generator: drives one protocol at one server with a fixed concurrency for a fixed
//! time and prints one JSON object (calls, req/s, p50/p99, messages, CPU of the watched
//! processes over the measured window, its own CPU). Every loop is bounded in time.
//!
//! ```text
//! bench-load --target 127.0.0.1:8080 --wire grpc-web --http 1 --rpc unary --size 100 \
//!     --concurrency 16 --warmup 1 --duration 5 --pids proxy=123,backend=456 \
//!     [--header "authorization: Bearer …"]
//! ```
//! `--rpc stream` loops ServerStream calls of `--count` messages of `--size` bytes and counts
//! messages as they arrive; `--rpc idle` opens `--streams` server streams over HTTP/2 that
//! receive one message and then stay open, and reports the RSS of the watched processes
//! before, with, and after them; `--rpc check` makes one unary and one stream call;
//! `--rpc bidi --bidi ws|connect` holds `--concurrency` Bidi echo conversations (WebSocket, or
//! Connect over HTTP/2; see `switchboard_bench::bidi`) and counts echoed messages as calls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use switchboard_bench::pb::EchoRequest;
use switchboard_bench::wire::{prepare, Prepared, Reader, Rpc, Wire};
use switchboard_bench::{h2, procfs};
use tokio::net::TcpStream;

/// Phases (0 is warm-up).
const MEASURE: u8 = 1;
const STOP: u8 = 2;
/// No single call may take longer than this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Args {
    target: String,
    wire: Wire,
    http1: bool,
    rpc: String,
    size: usize,
    count: u32,
    concurrency: usize,
    conns: usize,
    warmup: f64,
    duration: f64,
    pids: Vec<(String, u32)>,
    streams: usize,
    bidi: switchboard_bench::bidi::Way,
    /// Extra request headers (`--header NAME:VALUE`), e.g. credentials.
    headers: Vec<(String, String)>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        target: "127.0.0.1:8080".into(),
        wire: Wire::Grpc,
        http1: false,
        rpc: "unary".into(),
        size: 100,
        count: 100,
        concurrency: 1,
        conns: 0,
        warmup: 1.0,
        duration: 5.0,
        pids: Vec::new(),
        streams: 10_000,
        bidi: switchboard_bench::bidi::Way::WebSocket,
        headers: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--target" => a.target = val()?,
            "--wire" => {
                let v = val()?;
                a.wire = Wire::parse(&v).ok_or(format!("unknown wire {v}"))?
            }
            "--http" => a.http1 = val()? == "1",
            "--rpc" => a.rpc = val()?,
            "--bidi" => {
                let v = val()?;
                a.bidi =
                    switchboard_bench::bidi::Way::parse(&v).ok_or(format!("unknown --bidi {v}"))?
            }
            "--size" => a.size = num(val()?)? as usize,
            "--count" => a.count = num(val()?)? as u32,
            "--concurrency" => a.concurrency = num(val()?)? as usize,
            "--conns" => a.conns = num(val()?)? as usize,
            "--warmup" => a.warmup = num(val()?)?,
            "--duration" => a.duration = num(val()?)?,
            "--streams" => a.streams = num(val()?)? as usize,
            "--header" => {
                let v = val()?;
                let (name, value) = v.split_once(':').ok_or("--header NAME:VALUE")?;
                a.headers
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "--pids" => {
                for kv in val()?.split(',').filter(|s| !s.is_empty()) {
                    let (k, v) = kv.split_once('=').ok_or("--pids name=pid,...")?;
                    a.pids
                        .push((k.to_owned(), v.parse().map_err(|e| format!("pid: {e}"))?));
                }
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if a.conns == 0 {
        // HTTP/1.1: one connection per concurrent call, as a browser pool would need.
        // HTTP/2: a few connections, the calls multiplexed on them.
        a.conns = if a.http1 {
            a.concurrency
        } else {
            a.concurrency.clamp(1, 4)
        };
    }
    a.duration = a.duration.clamp(0.1, 600.0);
    a.warmup = a.warmup.clamp(0.0, 60.0);
    Ok(a)
}

/// One connection's request sender.
#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

async fn connect(target: &str, http1: bool) -> Result<Sender, String> {
    let tcp = TcpStream::connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let io = TokioIo::new(tcp);
    if http1 {
        let (send, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Sender::H1(Arc::new(tokio::sync::Mutex::new(send))))
    } else {
        let (send, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(h2::STREAM_WINDOW)
            .initial_connection_window_size(h2::CONN_WINDOW)
            .max_frame_size(h2::MAX_FRAME)
            .max_concurrent_reset_streams(100_000)
            .handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Sender::H2(send))
    }
}

struct Call {
    target: Arc<str>,
    prepared: Prepared,
    wire: Wire,
    rpc: Rpc,
    http1: bool,
}

impl Call {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.prepared.body.clone()));
        *req.method_mut() = self.prepared.method.clone();
        *req.headers_mut() = self.prepared.headers.clone();
        if self.http1 {
            *req.uri_mut() = self.prepared.path.parse().unwrap_or_default();
            req.headers_mut().insert(
                http::header::HOST,
                http::HeaderValue::from_str(&self.target)
                    .unwrap_or(http::HeaderValue::from_static("localhost")),
            );
        } else {
            *req.uri_mut() = format!("http://{}{}", self.target, self.prepared.path)
                .parse()
                .unwrap_or_default();
        }
        req
    }

    /// Makes one call; `on_messages` sees each batch of completed messages as it arrives and
    /// may end the call early (returning false), as the stop of a throughput run does.
    async fn run(
        &self,
        sender: &Sender,
        mut on_messages: impl FnMut(u64) -> bool,
    ) -> Result<u64, String> {
        let req = self.request();
        let mut reader = Reader::new(self.wire, self.rpc, self.http1);
        let res = match sender {
            Sender::H1(s) => {
                // One call at a time per HTTP/1.1 connection.
                let mut s = s.lock().await;
                s.ready().await.map_err(|e| format!("connection: {e}"))?;
                let res = s
                    .send_request(req)
                    .await
                    .map_err(|e| format!("request: {e}"))?;
                drop(s);
                res
            }
            Sender::H2(s) => {
                let mut s = s.clone();
                s.ready().await.map_err(|e| format!("connection: {e}"))?;
                s.send_request(req)
                    .await
                    .map_err(|e| format!("request: {e}"))?
            }
        };
        let (parts, mut body) = res.into_parts();
        reader.head(parts.status, &parts.headers)?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            match frame.into_data() {
                Ok(data) => {
                    let n = reader.data(&data)?;
                    if !on_messages(n) {
                        return Ok(reader.messages());
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        reader.trailers(&t);
                    }
                }
            }
        }
        reader.finish()
    }
}

#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    calls: AtomicU64,
    errors: AtomicU64,
    messages: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(e);
    }
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Serialize, Default)]
struct Output {
    ok: bool,
    error: Option<String>,
    target: String,
    wire: String,
    http: u8,
    rpc: String,
    size: usize,
    concurrency: usize,
    conns: usize,
    secs: f64,
    calls: u64,
    errors: u64,
    first_error: Option<String>,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    messages: u64,
    /// Messages per second times `size`, in MB/s (10^6 bytes).
    mb_per_s: f64,
    /// CPU seconds of each watched process during the measured window.
    cpu_s: BTreeMap<String, f64>,
    /// VmRSS (KiB) of each watched process at the end (idle: see the rss_* fields).
    rss_kib: BTreeMap<String, u64>,
    /// This load generator's CPU seconds during the window.
    loadgen_cpu_s: f64,
    /// CPU seconds used during the window by every other process on the machine (neither
    /// watched nor this one): how disturbed the measurement was.
    other_cpu_s: f64,
    // Idle streams only.
    streams_open: usize,
    open_secs: f64,
    rss_before_kib: BTreeMap<String, u64>,
    rss_open_kib: BTreeMap<String, u64>,
    rss_closed_kib: BTreeMap<String, u64>,
    threads_open: BTreeMap<String, u64>,
    /// The proxy's VmRSS (KiB) every 250 ms for 5 s after the burst closed.
    rss_after_kib: Vec<u64>,
}

fn cpu_now(pids: &[(String, u32)]) -> BTreeMap<String, f64> {
    pids.iter()
        .filter_map(|(n, p)| Some((n.clone(), procfs::cpu_seconds(*p)?)))
        .collect()
}

fn rss_now(pids: &[(String, u32)]) -> BTreeMap<String, u64> {
    pids.iter()
        .filter_map(|(n, p)| Some((n.clone(), procfs::rss_kib(*p)?)))
        .collect()
}

fn message(a: &Args, rpc: Rpc) -> EchoRequest {
    match (a.rpc.as_str(), rpc) {
        (_, Rpc::Unary) => EchoRequest {
            message: "bench".into(),
            payload: Bytes::from(vec![b'p'; a.size]),
            ..EchoRequest::default()
        },
        ("idle", _) => EchoRequest {
            message: "idle".into(),
            response_size: a.size as u32,
            count: 2,
            delay_ms: 3_600_000,
            ..EchoRequest::default()
        },
        _ => EchoRequest {
            message: "bench".into(),
            response_size: a.size as u32,
            count: a.count,
            ..EchoRequest::default()
        },
    }
}

fn call_for(a: &Args, rpc: Rpc) -> Arc<Call> {
    let mut prepared = prepare(a.wire, rpc, &message(a, rpc));
    for (name, value) in &a.headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            prepared.headers.insert(n, v);
        }
    }
    Arc::new(Call {
        target: Arc::from(a.target.as_str()),
        prepared,
        wire: a.wire,
        rpc,
        http1: a.http1,
    })
}

async fn open_conns(a: &Args) -> Result<Vec<Sender>, String> {
    let mut conns = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        conns.push(connect(&a.target, a.http1).await?);
    }
    Ok(conns)
}

/// Bidi echo: messages per second and round-trip latency per message.
async fn bidi(a: &Args, out: &mut Output) -> Result<(), String> {
    let shared = Arc::new(Shared::default());
    let mut workers = Vec::new();
    for _ in 0..a.concurrency {
        let shared = shared.clone();
        let (way, target, size) = (a.bidi, a.target.clone(), a.size);
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            while shared.phase() != STOP {
                let result = switchboard_bench::bidi::converse(
                    way,
                    &target,
                    size,
                    || shared.phase() != STOP,
                    |rtt| {
                        if shared.phase() == MEASURE {
                            shared.calls.fetch_add(1, Ordering::Relaxed);
                            let _ = hist.record((rtt.as_micros() as u64).clamp(1, 60_000_000));
                        }
                    },
                )
                .await;
                if let Err(e) = result {
                    if shared.phase() != STOP {
                        shared.error(e);
                        // Do not spin on a refused connection.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let cpu0 = cpu_now(&a.pids);
    let self0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let busy0 = procfs::machine_busy_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    shared.phase.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_now(&a.pids);
    let self1 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let busy1 = procfs::machine_busy_seconds().unwrap_or(0.0);
    out.rss_kib = rss_now(&a.pids);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for w in workers {
        if let Ok(Ok(h)) = tokio::time::timeout_at(deadline, w).await {
            let _ = hist.add(h);
        }
    }
    out.secs = secs;
    out.calls = shared.calls.load(Ordering::Relaxed);
    out.messages = out.calls;
    out.errors = shared.errors.load(Ordering::Relaxed);
    out.first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    out.rps = out.calls as f64 / secs;
    out.mb_per_s = out.calls as f64 * a.size as f64 / secs / 1e6;
    if !hist.is_empty() {
        out.p50_us = hist.value_at_quantile(0.50) as f64;
        out.p99_us = hist.value_at_quantile(0.99) as f64;
    }
    out.cpu_s = cpu1
        .iter()
        .map(|(n, v)| (n.clone(), v - cpu0.get(n).copied().unwrap_or(0.0)))
        .collect();
    out.loadgen_cpu_s = self1 - self0;
    let watched: f64 = out.cpu_s.values().sum();
    out.other_cpu_s = (busy1 - busy0 - watched - out.loadgen_cpu_s).max(0.0);
    out.ok = out.calls > 0;
    if !out.ok && out.error.is_none() {
        out.error = out
            .first_error
            .clone()
            .or(Some("no message was echoed".into()));
    }
    Ok(())
}

/// Unary or stream throughput.
async fn load(a: &Args, rpc: Rpc, out: &mut Output) -> Result<(), String> {
    let conns = open_conns(a).await?;
    let call = call_for(a, rpc);
    let shared = Arc::new(Shared::default());
    let mut workers = Vec::new();
    for i in 0..a.concurrency {
        let mut sender = conns[i % conns.len()].clone();
        let (call, shared) = (call.clone(), shared.clone());
        let http1 = a.http1;
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            while shared.phase() != STOP {
                let start = Instant::now();
                let result = tokio::time::timeout(
                    CALL_TIMEOUT,
                    call.run(&sender, |n| {
                        if shared.phase() == MEASURE {
                            shared.messages.fetch_add(n, Ordering::Relaxed);
                        }
                        shared.phase() != STOP
                    }),
                )
                .await
                .unwrap_or_else(|_| Err("call timed out".to_owned()));
                match result {
                    Ok(_) if shared.phase() == MEASURE => {
                        shared.calls.fetch_add(1, Ordering::Relaxed);
                        let us = start.elapsed().as_micros() as u64;
                        let _ = hist.record(us.clamp(1, 60_000_000));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if shared.phase() != STOP {
                            let transport = ["connection:", "request:", "body:", "call timed out"]
                                .iter()
                                .any(|p| e.starts_with(p));
                            shared.error(e);
                            // Do not spin on a broken connection: pause, then open a new one.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if transport {
                                if let Ok(fresh) = connect(&call.target, http1).await {
                                    sender = fresh;
                                }
                            }
                        }
                    }
                }
            }
            hist
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
    let cpu0 = cpu_now(&a.pids);
    let self0 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let busy0 = procfs::machine_busy_seconds().unwrap_or(0.0);
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
    shared.phase.store(STOP, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_now(&a.pids);
    let self1 = procfs::cpu_seconds(std::process::id()).unwrap_or(0.0);
    let busy1 = procfs::machine_busy_seconds().unwrap_or(0.0);
    out.rss_kib = rss_now(&a.pids);

    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for w in workers {
        // Stragglers are dropped with the runtime.
        if let Ok(Ok(h)) = tokio::time::timeout_at(deadline, w).await {
            let _ = hist.add(h);
        }
    }
    out.secs = secs;
    out.calls = shared.calls.load(Ordering::Relaxed);
    out.errors = shared.errors.load(Ordering::Relaxed);
    out.first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    out.messages = shared.messages.load(Ordering::Relaxed);
    out.rps = out.calls as f64 / secs;
    out.mb_per_s = out.messages as f64 * a.size as f64 / secs / 1e6;
    if !hist.is_empty() {
        out.p50_us = hist.value_at_quantile(0.50) as f64;
        out.p99_us = hist.value_at_quantile(0.99) as f64;
    }
    out.cpu_s = cpu1
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v - cpu0.get(k)?)))
        .collect();
    out.loadgen_cpu_s = self1 - self0;
    out.other_cpu_s =
        ((busy1 - busy0) - out.loadgen_cpu_s - out.cpu_s.values().sum::<f64>()).max(0.0);
    out.ok = out.calls > 0 || out.messages > 0;
    if !out.ok {
        out.error = Some(
            out.first_error
                .clone()
                .unwrap_or_else(|| "no call completed".into()),
        );
    }
    Ok(())
}

/// Samples the proxy's RSS every 250 ms for 5 s after a burst closed; the sample at 1 s is
/// the "closed" figure.
async fn sample_after(a: &Args, out: &mut Output) {
    for i in 1..=20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_now(&a.pids);
        if i == 4 {
            out.rss_closed_kib = now.clone();
        }
        out.rss_after_kib
            .push(now.get("proxy").copied().unwrap_or(0));
    }
}

/// Opens `conns` HTTP/1.1 connections that each make one unary call and stay open until all
/// have, then closes them all: the memory of a burst of connections, and whether it comes
/// back.
async fn burst_h1(a: &Args, out: &mut Output) -> Result<(), String> {
    let call = call_for(a, Rpc::Unary);
    // One connection first, so the proxy's upstream connection exists before the baseline.
    let first = connect(&a.target, true).await?;
    call.run(&first, |_| true)
        .await
        .map_err(|e| format!("warm-up call: {e}"))?;
    drop(first);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    out.rss_before_kib = rss_now(&a.pids);
    let t0 = Instant::now();
    let mut conns = Vec::with_capacity(a.conns);
    for _ in 0..a.conns {
        conns.push(connect(&a.target, true).await?);
    }
    let mut tasks = Vec::with_capacity(conns.len());
    for c in &conns {
        let (c, call) = (c.clone(), call.clone());
        tasks.push(tokio::spawn(async move { call.run(&c, |_| true).await }));
    }
    let mut done = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(_)) => done += 1,
            Ok(Err(e)) => out.first_error = out.first_error.take().or(Some(e)),
            Err(e) => out.first_error = out.first_error.take().or(Some(e.to_string())),
        }
    }
    out.open_secs = t0.elapsed().as_secs_f64();
    out.streams_open = done;
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.rss_open_kib = rss_now(&a.pids);
    drop(conns);
    sample_after(a, out).await;
    out.errors = (a.conns - done) as u64;
    out.ok = done == a.conns;
    if !out.ok {
        out.error = out.first_error.clone();
    }
    Ok(())
}

/// Opens `streams` server streams that each get one message and then stay open.
async fn idle(a: &Args, out: &mut Output) -> Result<(), String> {
    if a.http1 {
        return Err("idle streams are measured over HTTP/2 only".into());
    }
    let conns = open_conns(a).await?;
    // One call per connection first, so every connection (and the proxy's upstream
    // connection) exists before the baseline.
    let warm = call_for(a, Rpc::Unary);
    for c in &conns {
        warm.run(c, |_| true)
            .await
            .map_err(|e| format!("warm-up call: {e}"))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.rss_before_kib = rss_now(&a.pids);
    let call = call_for(a, Rpc::ServerStream);
    let shared = Arc::new(Shared::default());
    let opened = Arc::new(AtomicU64::new(0));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(a.streams);
    for i in 0..a.streams {
        let sender = conns[i % conns.len()].clone();
        let (call, shared, opened) = (call.clone(), shared.clone(), opened.clone());
        let mut release = release_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut counted = false;
            let mut on_msg = |n: u64| {
                if n > 0 && !counted {
                    counted = true;
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                true
            };
            tokio::select! {
                r = call.run(&sender, &mut on_msg) => {
                    // The stream should stay open; it ending is an error.
                    shared.error(match r {
                        Ok(_) => "stream ended early".to_owned(),
                        Err(e) => e,
                    });
                }
                _ = release.wait_for(|r| *r) => {}
            }
        }));
    }
    let open_deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = opened.load(Ordering::Relaxed) as usize;
        let errors = shared.errors.load(Ordering::Relaxed) as usize;
        if n + errors >= a.streams || Instant::now() >= open_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.open_secs = t0.elapsed().as_secs_f64();
    out.streams_open = opened.load(Ordering::Relaxed) as usize;
    // Let allocators and the proxy settle.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    out.rss_open_kib = rss_now(&a.pids);
    out.threads_open = a
        .pids
        .iter()
        .filter_map(|(n, p)| Some((n.clone(), procfs::threads(*p)?)))
        .collect();
    let _ = release_tx.send(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for t in tasks {
        let _ = tokio::time::timeout_at(deadline, t).await;
    }
    drop(conns);
    sample_after(a, out).await;
    out.errors = shared.errors.load(Ordering::Relaxed);
    out.first_error = shared
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    out.ok = out.streams_open == a.streams;
    if !out.ok {
        out.error = Some(format!(
            "{} of {} streams opened; first error: {}",
            out.streams_open,
            a.streams,
            out.first_error.as_deref().unwrap_or("none")
        ));
    }
    Ok(())
}

/// One unary call and one short stream, checked.
async fn check(a: &Args, out: &mut Output) -> Result<(), String> {
    let conns = open_conns(&Args {
        conns: 1,
        ..a.clone()
    })
    .await?;
    let unary = call_for(a, Rpc::Unary);
    unary
        .run(&conns[0], |_| true)
        .await
        .map_err(|e| format!("unary: {e}"))?;
    let stream = call_for(
        &Args {
            count: 3,
            ..a.clone()
        },
        Rpc::ServerStream,
    );
    let n = stream
        .run(&conns[0], |_| true)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    if n != 3 {
        return Err(format!("stream: {n} messages instead of 3"));
    }
    out.ok = true;
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-load: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut out = Output {
        target: args.target.clone(),
        wire: format!("{:?}", args.wire),
        http: if args.http1 { 1 } else { 2 },
        rpc: args.rpc.clone(),
        size: args.size,
        concurrency: args.concurrency,
        conns: args.conns,
        ..Output::default()
    };
    // Hard bound on the whole run, whatever happens.
    let limit = Duration::from_secs_f64(args.warmup + args.duration + 120.0);
    let result = rt.block_on(async {
        let run = async {
            match args.rpc.as_str() {
                "unary" => load(&args, Rpc::Unary, &mut out).await,
                "stream" => load(&args, Rpc::ServerStream, &mut out).await,
                "idle" => idle(&args, &mut out).await,
                "burst-h1" => burst_h1(&args, &mut out).await,
                "check" => check(&args, &mut out).await,
                "bidi" => bidi(&args, &mut out).await,
                other => Err(format!("unknown --rpc {other}")),
            }
        };
        tokio::time::timeout(limit, run)
            .await
            .unwrap_or_else(|_| Err("run timed out".into()))
    });
    if let Err(e) = result {
        out.ok = false;
        out.error = Some(e);
    }
    println!("{}", serde_json::to_string(&out).expect("json"));
    // Do not wait for stragglers (open streams, connections) to wind down.
    std::process::exit(if out.ok { 0 } else { 1 });
}
