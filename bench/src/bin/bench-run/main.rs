//! The benchmark run: starts the backend, the baselines and Switchboard (pinned to one core),
//! drives every variant with `bench-load` (pinned to the other core) through every workload,
//! and writes `bench/RESULTS.md`. Started by `bench/run.sh`, which builds everything first.
//!
//! ```text
//! bench-run --switchboard ../target/release/switchboard [--quick] [--only ID,ID]
//!           [--workloads unary,paired,stream,idle,h2load] [--no-pin] [--out FILE]
//! ```

mod jwt;
mod paired;
mod report;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Which process serves a variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Server {
    /// The backend itself (no proxy).
    Backend,
    /// The bare hyper forwarder in front of the backend.
    Forwarder,
    /// tonic + tonic-web serving the service in-process.
    TonicWeb,
    /// Switchboard in front of the backend.
    Switchboard,
    /// Switchboard with JWT auth (ES256, key from a JWKS file) on its route.
    SwitchboardJwt,
    /// The same, with metrics (an admin port) and the JSON access log (to its log file) on.
    SwitchboardObserved,
}

/// One way of calling the service.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Variant {
    pub id: &'static str,
    pub label: &'static str,
    pub server: Server,
    /// `bench-load --wire`.
    pub wire: &'static str,
    pub http1: bool,
    /// Part of the unary and stream matrix (else idle streams only).
    pub matrix: bool,
    /// Measured with 10,000 idle streams.
    pub idle: bool,
}

const fn v(
    id: &'static str,
    label: &'static str,
    server: Server,
    wire: &'static str,
    http1: bool,
    matrix: bool,
    idle: bool,
) -> Variant {
    Variant {
        id,
        label,
        server,
        wire,
        http1,
        matrix,
        idle,
    }
}

/// Every variant, baselines first.
pub const VARIANTS: &[Variant] = &[
    v(
        "direct",
        "direct gRPC (no proxy)",
        Server::Backend,
        "grpc",
        false,
        true,
        false,
    ),
    v(
        "fwd-h1",
        "bare forwarder, HTTP/1.1",
        Server::Forwarder,
        "grpc",
        true,
        true,
        false,
    ),
    v(
        "fwd-h2",
        "bare forwarder, HTTP/2",
        Server::Forwarder,
        "grpc",
        false,
        true,
        true,
    ),
    v(
        "tw-web-h1",
        "tonic-web, gRPC-Web binary, HTTP/1.1",
        Server::TonicWeb,
        "grpc-web",
        true,
        true,
        false,
    ),
    v(
        "tw-web-h2",
        "tonic-web, gRPC-Web binary, HTTP/2",
        Server::TonicWeb,
        "grpc-web",
        false,
        true,
        true,
    ),
    v(
        "tw-text-h1",
        "tonic-web, gRPC-Web text, HTTP/1.1",
        Server::TonicWeb,
        "grpc-web-text",
        true,
        true,
        false,
    ),
    v(
        "tw-text-h2",
        "tonic-web, gRPC-Web text, HTTP/2",
        Server::TonicWeb,
        "grpc-web-text",
        false,
        true,
        false,
    ),
    v(
        "sb-web-h1",
        "Switchboard, gRPC-Web binary, HTTP/1.1",
        Server::Switchboard,
        "grpc-web",
        true,
        true,
        false,
    ),
    v(
        "sb-web-h2",
        "Switchboard, gRPC-Web binary, HTTP/2",
        Server::Switchboard,
        "grpc-web",
        false,
        true,
        true,
    ),
    v(
        "sb-text-h1",
        "Switchboard, gRPC-Web text, HTTP/1.1",
        Server::Switchboard,
        "grpc-web-text",
        true,
        true,
        false,
    ),
    v(
        "sb-text-h2",
        "Switchboard, gRPC-Web text, HTTP/2",
        Server::Switchboard,
        "grpc-web-text",
        false,
        true,
        true,
    ),
    v(
        "sb-connect-proto-h1",
        "Switchboard, Connect proto, HTTP/1.1",
        Server::Switchboard,
        "connect-proto",
        true,
        true,
        false,
    ),
    v(
        "sb-web-h1-jwt",
        "Switchboard + JWT auth (ES256), gRPC-Web binary, HTTP/1.1",
        Server::SwitchboardJwt,
        "grpc-web",
        true,
        true,
        false,
    ),
    v(
        "sb-connect-proto-h1-jwt",
        "Switchboard + JWT auth (ES256), Connect proto, HTTP/1.1",
        Server::SwitchboardJwt,
        "connect-proto",
        true,
        true,
        false,
    ),
    v(
        "sb-connect-json-h1",
        "Switchboard, Connect JSON, HTTP/1.1",
        Server::Switchboard,
        "connect-json",
        true,
        true,
        false,
    ),
    v(
        "sb-rest-h1",
        "Switchboard, REST GET (google.api.http), HTTP/1.1",
        Server::Switchboard,
        "rest",
        true,
        true,
        false,
    ),
    v(
        "sb-connect-proto-h2",
        "Switchboard, Connect proto, HTTP/2",
        Server::Switchboard,
        "connect-proto",
        false,
        false,
        true,
    ),
    v(
        "sb-grpc-h2",
        "Switchboard, gRPC passthrough, HTTP/2",
        Server::Switchboard,
        "grpc",
        false,
        true,
        true,
    ),
    v(
        "sbo-web-h1",
        "Switchboard + metrics + access log, gRPC-Web binary, HTTP/1.1",
        Server::SwitchboardObserved,
        "grpc-web",
        true,
        true,
        false,
    ),
    v(
        "sbo-web-h2",
        "Switchboard + metrics + access log, gRPC-Web binary, HTTP/2",
        Server::SwitchboardObserved,
        "grpc-web",
        false,
        true,
        false,
    ),
    v(
        "sbo-grpc-h2",
        "Switchboard + metrics + access log, gRPC passthrough, HTTP/2",
        Server::SwitchboardObserved,
        "grpc",
        false,
        true,
        false,
    ),
];

/// The variant of `id` without metrics and the access log, for `sbo-*` ids.
pub fn unobserved_of(id: &str) -> Option<&'static str> {
    match id {
        "sbo-web-h1" => Some("sb-web-h1"),
        "sbo-web-h2" => Some("sb-web-h2"),
        "sbo-grpc-h2" => Some("sb-grpc-h2"),
        _ => None,
    }
}

/// What `bench-load` printed (fields the report uses).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadOut {
    pub ok: bool,
    pub error: Option<String>,
    pub secs: f64,
    pub calls: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub messages: u64,
    pub mb_per_s: f64,
    pub cpu_s: std::collections::BTreeMap<String, f64>,
    pub loadgen_cpu_s: f64,
    pub other_cpu_s: f64,
    pub streams_open: usize,
    pub open_secs: f64,
    pub rss_before_kib: std::collections::BTreeMap<String, u64>,
    pub rss_open_kib: std::collections::BTreeMap<String, u64>,
    pub rss_closed_kib: std::collections::BTreeMap<String, u64>,
    pub threads_open: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub rss_after_kib: Vec<u64>,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub workload: &'static str,
    pub size: usize,
    pub concurrency: usize,
    pub variant: &'static str,
    pub out: LoadOut,
    /// h2load's req/s (cross-check cells only).
    pub h2load_rps: Option<f64>,
    /// Unary req/s relative to the bare forwarder of the same HTTP version measured right
    /// before and right after it (their mean), averaged over the rounds: a ratio that the
    /// machine's speed drifting from minute to minute does not move.
    pub vs_fwd: Option<f64>,
}

/// Settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Opts {
    pub quick: bool,
    pub out: PathBuf,
    pub only: Option<Vec<String>>,
    pub workloads: Vec<String>,
    pub switchboard: PathBuf,
    pub pin: bool,
    pub load_core: usize,
    pub server_core: usize,
    pub warmup: f64,
    pub duration: f64,
    /// Rounds over all variants per cell; the best round of each variant is kept.
    pub repeat: usize,
    /// Extra tries of a measurement that other work disturbed (more than CALM cores).
    pub retries: usize,
    pub small: usize,
    pub large: usize,
    pub concurrencies: Vec<usize>,
    pub stream_size: usize,
    pub stream_count: usize,
    pub stream_concurrency: usize,
    pub idle_streams: usize,
    pub idle_conns: usize,
    pub argv: String,
}

fn parse_opts() -> Result<Opts, String> {
    let bench_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        quick: false,
        out: bench_dir.join("RESULTS.md"),
        only: None,
        workloads: [
            "unary",
            "paired",
            "stream",
            "stream-apart",
            "idle",
            "burst",
            "h2load",
            "bidi",
        ]
        .map(String::from)
        .to_vec(),
        switchboard: bench_dir.join("../target/release/switchboard"),
        pin: true,
        load_core: 0,
        server_core: 1,
        warmup: 0.4,
        duration: 2.0,
        repeat: 2,
        retries: 2,
        small: 100,
        large: 64 << 10,
        concurrencies: vec![1, 16, 256],
        stream_size: 64 << 10,
        stream_count: 256,
        stream_concurrency: 4,
        idle_streams: 10_000,
        idle_conns: 20,
        // run.sh passes the command the user typed; --switchboard is its own addition.
        argv: std::env::var("BENCH_COMMAND").unwrap_or_else(|_| {
            format!(
                "bench-run {}",
                std::env::args().skip(1).collect::<Vec<_>>().join(" ")
            )
        }),
    };
    let mut duration = None;
    let mut repeat = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--quick" => o.quick = true,
            "--out" => o.out = PathBuf::from(val()?),
            "--only" => o.only = Some(val()?.split(',').map(String::from).collect()),
            "--workloads" => o.workloads = val()?.split(',').map(String::from).collect(),
            "--switchboard" => o.switchboard = PathBuf::from(val()?),
            "--no-pin" => o.pin = false,
            "--cores" => {
                let v = val()?;
                let (a, b) = v.split_once(',').ok_or("--cores LOAD,SERVER")?;
                o.load_core = a.parse().map_err(|_| "--cores LOAD,SERVER")?;
                o.server_core = b.parse().map_err(|_| "--cores LOAD,SERVER")?;
            }
            "--duration" => duration = Some(val()?.parse::<f64>().map_err(|e| e.to_string())?),
            "--retries" => o.retries = val()?.parse::<usize>().map_err(|_| "--retries N")?.min(10),
            "--repeat" => {
                repeat = Some(
                    val()?
                        .parse::<usize>()
                        .map_err(|_| "--repeat N")?
                        .clamp(1, 10),
                )
            }
            "--idle-streams" => o.idle_streams = val()?.parse().map_err(|_| "--idle-streams N")?,
            "-h" | "--help" => {
                println!("{}", include_str!("usage.txt"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (see --help)")),
        }
    }
    if o.quick {
        o.warmup = 0.25;
        o.duration = 0.8;
        o.repeat = 1;
    }
    if let Some(r) = repeat {
        o.repeat = r;
    }
    if let Some(d) = duration {
        o.duration = d.clamp(0.2, 60.0);
        o.warmup = (d / 5.0).clamp(0.2, 2.0);
    }
    Ok(o)
}

fn bin(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A server process; killed (by its own pid) when dropped.
pub struct Proc {
    pub name: String,
    pub port: u16,
    pub cmdline: String,
    child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything the run needs to start processes.
pub struct Env {
    pub opts: Opts,
    pub work: PathBuf,
    pub pinned: bool,
    pub commands: Vec<String>,
}

impl Env {
    /// A command, prefixed with `taskset -c CORE` when pinning.
    fn command(&self, core: usize, program: &Path, args: &[String]) -> (Command, String) {
        let mut line = Vec::new();
        let mut cmd = if self.pinned {
            line.push(format!("taskset -c {core}"));
            let mut c = Command::new("taskset");
            c.arg("-c").arg(core.to_string()).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.args(args);
        die_with_parent(&mut cmd);
        line.push(program.display().to_string());
        line.extend(args.iter().map(|a| {
            if a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }));
        (cmd, line.join(" "))
    }

    fn start(
        &mut self,
        name: &str,
        program: &Path,
        args: Vec<String>,
        port: u16,
    ) -> Result<Proc, String> {
        self.start_on(self.opts.server_core, name, program, args, port)
    }

    /// Starts a server pinned to `core` and waits until it listens.
    fn start_on(
        &mut self,
        core: usize,
        name: &str,
        program: &Path,
        args: Vec<String>,
        port: u16,
    ) -> Result<Proc, String> {
        let (mut cmd, cmdline) = self.command(core, program, &args);
        let log = std::fs::File::create(self.work.join(format!("{name}-{port}.log")))
            .map_err(|e| e.to_string())?;
        cmd.env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let mut proc = Proc {
            name: name.to_owned(),
            port,
            cmdline: cmdline.clone(),
            child,
        };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!(
                    "{name} exited at start ({status}); see {}",
                    self.work.display()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{name} did not listen on {addr} within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // One line per program and core (ports differ from start to start).
        let pin = format!("taskset -c {core} {}", program.display());
        if !self.commands.iter().any(|c| {
            c.contains(program.to_string_lossy().as_ref()) && (!self.pinned || c.starts_with(&pin))
        }) {
            self.commands.push(cmdline);
        }
        Ok(proc)
    }

    fn start_backend(&mut self) -> Result<Proc, String> {
        self.start_backend_on(self.opts.server_core)
    }

    fn start_backend_on(&mut self, core: usize) -> Result<Proc, String> {
        let port = free_port();
        self.start_on(
            core,
            "bench-backend",
            &bin("bench-backend"),
            vec![format!("127.0.0.1:{port}")],
            port,
        )
    }

    fn start_server(&mut self, server: Server, backend: &Proc) -> Result<Proc, String> {
        let port = free_port();
        match server {
            Server::Backend => unreachable!("the backend is started once"),
            Server::Forwarder => self.start(
                "forwarder",
                &bin("forwarder"),
                vec![
                    format!("127.0.0.1:{port}"),
                    format!("127.0.0.1:{}", backend.port),
                ],
                port,
            ),
            Server::TonicWeb => self.start(
                "tonic-web-peer",
                &bin("tonic-web-peer"),
                vec![format!("127.0.0.1:{port}")],
                port,
            ),
            Server::Switchboard | Server::SwitchboardJwt | Server::SwitchboardObserved => {
                let descriptors = self.work.join("testing.binpb");
                std::fs::write(&descriptors, switchboard_bench::REST_DESCRIPTOR_SET)
                    .map_err(|e| e.to_string())?;
                let config = self.work.join(format!("switchboard-{port}.yaml"));
                let mut yaml = switchboard_config(port, backend.port, &descriptors);
                if server == Server::SwitchboardJwt {
                    let jwks = self.work.join("jwks.json");
                    let (document, token) = jwt::es256_key_and_token()?;
                    std::fs::write(&jwks, document).map_err(|e| e.to_string())?;
                    let _ = JWT_TOKEN.set(format!("authorization: Bearer {token}"));
                    yaml.push_str(&jwt::route_auth(&jwks));
                }
                if server == Server::SwitchboardObserved {
                    yaml.insert_str(0, OBSERVED);
                }
                std::fs::write(&config, &yaml).map_err(|e| e.to_string())?;
                let sb = self.opts.switchboard.clone();
                self.start(
                    "switchboard",
                    &sb,
                    vec!["--config".into(), config.display().to_string()],
                    port,
                )
            }
        }
    }

    /// Runs `bench-load`, again (up to `retries` more times) while other work on the machine
    /// disturbed it; keeps the best by `score`. Returns the result, the command and the tries.
    fn load_calm(
        &mut self,
        args: Vec<String>,
        limit: Duration,
        score: fn(&LoadOut) -> f64,
    ) -> (LoadOut, String, usize) {
        let mut best = None;
        let mut line = String::new();
        let mut tries = 0;
        while tries <= self.opts.retries {
            tries += 1;
            let (out, l) = self.load(args.clone(), limit);
            line = l;
            let calm = !out.ok || out.secs <= 0.0 || out.other_cpu_s / out.secs <= CALM;
            keep_best(&mut best, out, score);
            if calm {
                break;
            }
        }
        (best.unwrap_or_default(), line, tries)
    }

    /// Runs `bench-load` (pinned to the load core) and parses its JSON.
    fn load(&mut self, args: Vec<String>, limit: Duration) -> (LoadOut, String) {
        let (child, line) = self.spawn_load(&args);
        (collect_load(child, Instant::now() + limit), line)
    }

    /// Runs two `bench-load`s at the same time (both pinned to the load core), each against
    /// its own target, and parses both results.
    fn load_together(
        &mut self,
        a: Vec<String>,
        b: Vec<String>,
        limit: Duration,
    ) -> ((LoadOut, String), (LoadOut, String)) {
        let (ca, la) = self.spawn_load(&a);
        let (cb, lb) = self.spawn_load(&b);
        let deadline = Instant::now() + limit;
        (
            (collect_load(ca, deadline), la),
            (collect_load(cb, deadline), lb),
        )
    }

    fn spawn_load(&mut self, args: &[String]) -> (Result<Child, String>, String) {
        let (mut cmd, line) = self.command(self.opts.load_core, &bin("bench-load"), args);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start bench-load: {e}"));
        (child, line)
    }
}

/// Waits for `child` to exit; kills it (false) when it is still running at `deadline`.
fn exits_by(child: &mut Child, deadline: Instant) -> bool {
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

/// Waits for a `bench-load` (killed at `deadline`) and parses its JSON.
fn collect_load(child: Result<Child, String>, deadline: Instant) -> LoadOut {
    let mut out = LoadOut::default();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    if !exits_by(&mut child, deadline) {
        out.error = Some("bench-load did not finish in time".into());
        return out;
    }
    match child.wait_with_output() {
        Ok(o) => match serde_json::from_slice::<LoadOut>(&o.stdout) {
            Ok(parsed) => out = parsed,
            Err(e) => {
                out.error = Some(format!(
                    "bench-load printed no result ({e}): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
        },
        Err(e) => out.error = Some(e.to_string()),
    }
    out
}

/// Children get SIGKILL when bench-run dies, however it dies, so no server outlives a run.
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// The largest unary message the REST variant sends (in its URL).
const REST_MAX_UNARY: usize = 16 << 10;

/// Other processes may use at most this many cores during a measurement before it is retried.
pub const CALM: f64 = 0.25;

/// What `sbo-*` variants add to the config: metrics are recorded (an admin port to scrape
/// them) and every call is logged as a JSON line to stderr (the process's log file).
pub const OBSERVED: &str =
    "admin: { address: 127.0.0.1:0 }\naccess_log: { enabled: true, format: json }\n";

/// The Switchboard config of the run: one listener, the backend, JSON schema from a file.
fn switchboard_config(port: u16, backend: u16, descriptors: &Path) -> String {
    format!(
        "listeners:\n  - address: 127.0.0.1:{port}\nupstreams:\n  - name: bench\n    endpoints: [\"http://127.0.0.1:{backend}\"]\n    json:\n      descriptors: {}\nroutes:\n  - match: {{ prefix: / }}\n    upstream: bench\n",
        descriptors.display()
    )
}

fn nproc() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn secs_limit(o: &Opts) -> Duration {
    Duration::from_secs_f64(o.warmup + o.duration + 30.0)
}

fn pids_arg(proxy: Option<&Proc>, backend: Option<&Proc>) -> String {
    let mut parts = Vec::new();
    if let Some(p) = proxy {
        parts.push(format!("proxy={}", p.pid()));
    }
    if let Some(b) = backend {
        parts.push(format!("backend={}", b.pid()));
    }
    parts.join(",")
}

struct Servers {
    backend: Proc,
    forwarder: Option<Proc>,
    tonic_web: Option<Proc>,
    switchboard: Option<Proc>,
    switchboard_jwt: Option<Proc>,
    observed: Option<Proc>,
}

impl Servers {
    fn get(&self, s: Server) -> Option<&Proc> {
        match s {
            Server::Backend => Some(&self.backend),
            Server::Forwarder => self.forwarder.as_ref(),
            Server::TonicWeb => self.tonic_web.as_ref(),
            Server::Switchboard => self.switchboard.as_ref(),
            Server::SwitchboardJwt => self.switchboard_jwt.as_ref(),
            Server::SwitchboardObserved => self.observed.as_ref(),
        }
    }
    fn slot(&mut self, s: Server) -> &mut Option<Proc> {
        match s {
            Server::Forwarder => &mut self.forwarder,
            Server::TonicWeb => &mut self.tonic_web,
            Server::Switchboard => &mut self.switchboard,
            Server::SwitchboardJwt => &mut self.switchboard_jwt,
            Server::SwitchboardObserved => &mut self.observed,
            Server::Backend => unreachable!("the backend is not restarted"),
        }
    }
    /// (target port, proxy process, backend process) of a variant.
    fn of(&self, v: &Variant) -> Option<(u16, Option<&Proc>, Option<&Proc>)> {
        match v.server {
            Server::Backend => Some((self.backend.port, None, Some(&self.backend))),
            Server::TonicWeb => self.tonic_web.as_ref().map(|p| (p.port, Some(p), None)),
            s => self.get(s).map(|p| (p.port, Some(p), Some(&self.backend))),
        }
    }
}

fn progress(msg: &str) {
    let mut e = std::io::stderr();
    let _ = writeln!(e, "{msg}");
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-run: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(opts) {
        eprintln!("bench-run: {e}");
        std::process::exit(1);
    }
}

fn run(opts: Opts) -> Result<(), String> {
    let started = Instant::now();
    if !opts.switchboard.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release` at the crate root (bench/run.sh does)",
            opts.switchboard.display()
        ));
    }
    let work = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-run");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let pinned = opts.pin && nproc() >= 2 && have("taskset");
    let mut env = Env {
        opts: opts.clone(),
        work: work.clone(),
        pinned,
        commands: Vec::new(),
    };
    let machine_before = report::Machine::read(&env);

    let selected: Vec<&'static Variant> = VARIANTS
        .iter()
        .filter(|v| {
            opts.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == v.id))
        })
        .collect();
    let wants = |w: &str| opts.workloads.iter().any(|x| x == w);

    let backend = env.start_backend()?;
    let mut servers = Servers {
        backend,
        forwarder: None,
        tonic_web: None,
        switchboard: None,
        switchboard_jwt: None,
        observed: None,
    };
    for s in [
        Server::Forwarder,
        Server::TonicWeb,
        Server::Switchboard,
        Server::SwitchboardJwt,
        Server::SwitchboardObserved,
    ] {
        if selected.iter().any(|v| v.server == s) {
            let p = env.start_server(s, &servers.backend)?;
            *servers.slot(s) = Some(p);
        }
    }

    // Every variant must answer correctly before it is measured.
    let mut skipped = Vec::new();
    let mut variants = Vec::new();
    for v in &selected {
        let (port, _, _) = servers.of(v).ok_or("server missing")?;
        let args = load_args(v, port, "check", 100, 1, &opts, "");
        let (out, _) = env.load(args, Duration::from_secs(30));
        if out.ok {
            variants.push(*v);
        } else {
            let why = out.error.unwrap_or_default();
            progress(&format!("skipping {}: {why}", v.id));
            skipped.push((v.id, why));
        }
    }

    let mut cells = Vec::new();
    let matrix: Vec<&Variant> = variants.iter().copied().filter(|v| v.matrix).collect();
    let unary_total = if wants("unary") {
        let small_only: Vec<&Variant> = matrix
            .iter()
            .copied()
            .filter(|v| v.wire != "rest")
            .collect();
        (bracketed(&matrix).len() + bracketed(&small_only).len())
            * opts.concurrencies.len()
            * opts.repeat
    } else {
        0
    };
    let mut n = 0;
    // The h2load cross-check runs right after bench-load's last round of the same cell.
    let cross_check =
        wants("unary") && wants("h2load") && opts.concurrencies.contains(&16) && have("h2load");
    let body = work.join("unary-small.bin");
    if cross_check {
        let msg = switchboard_bench::pb::EchoRequest {
            message: "bench".into(),
            payload: bytes::Bytes::from(vec![b'p'; opts.small]),
            ..Default::default()
        };
        std::fs::write(
            &body,
            switchboard_bench::wire::frame(0, &prost::Message::encode_to_vec(&msg)),
        )
        .map_err(|e| e.to_string())?;
    }
    if wants("unary") {
        for size in [opts.small, opts.large] {
            // A REST GET carries its message in the URL, which a 64 KiB message does not fit
            // (URIs stop at 64 KiB): REST unary calls are measured with small messages only.
            let matrix: Vec<&Variant> = matrix
                .iter()
                .copied()
                .filter(|v| v.wire != "rest" || size <= REST_MAX_UNARY)
                .collect();
            for &c in &opts.concurrencies {
                let mut best: Vec<Option<LoadOut>> = vec![None; matrix.len()];
                let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); matrix.len()];
                for round in 0..opts.repeat {
                    let order = bracketed(&matrix);
                    let mut measured: Vec<(usize, f64)> = Vec::with_capacity(order.len());
                    for &i in &order {
                        let v = matrix[i];
                        n += 1;
                        let (port, proxy, backend) = servers.of(v).ok_or("server missing")?;
                        let pids = pids_arg(proxy, backend);
                        let args = load_args(v, port, "unary", size, c, &opts, &pids);
                        let (out, line, tries) = env.load_calm(args, secs_limit(&opts), |o| o.rps);
                        note_command(&mut env, "unary", &line);
                        progress(&format!(
                            "[{n}/{unary_total}] unary {} c{c} {} (round {}{}): {}",
                            report::size_name(size),
                            v.id,
                            round + 1,
                            tries_note(tries),
                            report::summary(&out)
                        ));
                        measured.push((i, if out.ok { out.rps } else { 0.0 }));
                        keep_best(&mut best[i], out, |o| o.rps);
                        let last_round = round + 1 == opts.repeat;
                        let first_time = measured.iter().filter(|(j, _)| *j == i).count() == 1;
                        if cross_check
                            && last_round
                            && first_time
                            && size == opts.small
                            && c == 16
                            && H2LOAD_VARIANTS.contains(&v.id)
                        {
                            let (rps, line) = h2load(&mut env, v, port, &body);
                            note_command(&mut env, "h2load", &line);
                            progress(&format!(
                                "h2load {}: {}",
                                v.id,
                                rps.map_or("failed".into(), |r| format!("{r:.0} req/s"))
                            ));
                            cells.push(Cell {
                                workload: "h2load",
                                size,
                                concurrency: c,
                                variant: v.id,
                                out: LoadOut::default(),
                                h2load_rps: rps,
                                vs_fwd: None,
                            });
                        }
                    }
                    for (i, r) in bracket_ratios(&matrix, &measured) {
                        ratios[i].push(r);
                    }
                }
                for ((v, out), r) in matrix.iter().zip(best).zip(ratios) {
                    let out = out.unwrap_or_default();
                    cells.push(Cell {
                        workload: "unary",
                        size,
                        concurrency: c,
                        variant: v.id,
                        out,
                        h2load_rps: None,
                        vs_fwd: (!r.is_empty()).then(|| r.iter().sum::<f64>() / r.len() as f64),
                    });
                }
            }
        }
    }
    let paired = if wants("paired") {
        paired::measure(&mut env, &servers, &variants)
    } else {
        Vec::new()
    };
    if wants("stream") {
        cells.extend(measure_streams(&mut env, &servers, &matrix, "stream")?);
    }
    if wants("idle") {
        for v in variants.iter().filter(|v| v.idle) {
            // A fresh process, so the figure is not blurred by memory kept from earlier loads.
            *servers.slot(v.server) = None;
            let fresh = env.start_server(v.server, &servers.backend)?;
            *servers.slot(v.server) = Some(fresh);
            let (port, proxy, backend) = servers.of(v).ok_or("server missing")?;
            let pids = pids_arg(proxy, backend);
            let mut args = load_args(v, port, "idle", 100, 1, &opts, &pids);
            args.extend(["--streams".into(), opts.idle_streams.to_string()]);
            args.extend(["--conns".into(), opts.idle_conns.to_string()]);
            let (out, line) = env.load(args, Duration::from_secs(150));
            note_command(&mut env, "idle", &line);
            let per = report::idle_per_stream(&out, "proxy", opts.idle_streams);
            progress(&format!(
                "idle {}: {} streams, {} KiB/stream {}",
                v.id,
                out.streams_open,
                per.map_or("?".into(), |k| format!("{k:.1}")),
                out.error.as_deref().unwrap_or("")
            ));
            cells.push(Cell {
                workload: "idle",
                size: 100,
                concurrency: opts.idle_streams,
                variant: v.id,
                out,
                h2load_rps: None,
                vs_fwd: None,
            });
        }
    }
    if wants("burst") {
        // A burst that ends: 2,000 HTTP/2 streams, and 1,000 HTTP/1.1 connections with one
        // call each, on a fresh proxy; then whether its memory comes back within 5 s.
        for (id, rpc, streams, conns) in [
            ("sb-web-h2", "idle", 2000usize, 20usize),
            ("sb-web-h1", "burst-h1", 0, 1000),
        ] {
            let Some(v) = variants.iter().find(|v| v.id == id) else {
                continue;
            };
            *servers.slot(v.server) = None;
            let fresh = env.start_server(v.server, &servers.backend)?;
            *servers.slot(v.server) = Some(fresh);
            let (port, proxy, backend) = servers.of(v).ok_or("server missing")?;
            let pids = pids_arg(proxy, backend);
            let mut args = load_args(v, port, rpc, 100, 1, &opts, &pids);
            args.extend(["--streams".into(), streams.to_string()]);
            args.extend(["--conns".into(), conns.to_string()]);
            let (out, line) = env.load(args, Duration::from_secs(150));
            note_command(&mut env, "burst", &line);
            progress(&format!(
                "burst {}: before {:?} open {:?} after {:?} {}",
                v.id,
                out.rss_before_kib.get("proxy"),
                out.rss_open_kib.get("proxy"),
                out.rss_after_kib,
                out.error.as_deref().unwrap_or("")
            ));
            cells.push(Cell {
                workload: "burst",
                size: 100,
                concurrency: streams.max(conns),
                variant: v.id,
                out,
                h2load_rps: None,
                vs_fwd: None,
            });
        }
    }
    if wants("bidi") {
        cells.extend(measure_bidi(&mut env, &mut servers)?);
    }
    drop(servers);
    // The same streams with each proxy on a core of its own: the backend and the load
    // generator share the other core, in every variant including direct gRPC.
    let apart: Vec<&Variant> = matrix
        .iter()
        .copied()
        .filter(|v| !matches!(v.server, Server::TonicWeb | Server::SwitchboardJwt))
        .collect();
    if wants("stream-apart") && pinned && !apart.is_empty() {
        let backend = env.start_backend_on(opts.load_core)?;
        let mut servers = Servers {
            backend,
            forwarder: None,
            tonic_web: None,
            switchboard: None,
            switchboard_jwt: None,
            observed: None,
        };
        for s in [Server::Forwarder, Server::Switchboard] {
            if apart.iter().any(|v| v.server == s) {
                let p = env.start_server(s, &servers.backend)?;
                *servers.slot(s) = Some(p);
            }
        }
        cells.extend(measure_streams(&mut env, &servers, &apart, "stream-apart")?);
    }
    let machine_after = report::Machine::read(&env);
    let elapsed = started.elapsed();
    let jsonl: String = cells
        .iter()
        .filter_map(|c| serde_json::to_string(c).ok())
        .map(|l| l + "\n")
        .collect();
    let _ = std::fs::write(work.join("results.jsonl"), jsonl);
    let md = report::render(
        &env,
        &machine_before,
        &machine_after,
        &variants,
        &skipped,
        &cells,
        &paired,
        elapsed,
    );
    std::fs::write(&env.opts.out, md)
        .map_err(|e| format!("writing {}: {e}", env.opts.out.display()))?;
    progress(&format!(
        "wrote {} ({} cells in {:.0} s; raw results in {})",
        env.opts.out.display(),
        cells.len(),
        elapsed.as_secs_f64(),
        work.join("results.jsonl").display()
    ));
    Ok(())
}

/// The two ways a browser holds a bidi call through Switchboard, compared.
const BIDI_WAYS: [(&str, &str); 2] = [("sb-ws-h1", "ws"), ("sb-connect-proto-h2", "connect")];
/// Conversations held at once.
const BIDI_CONCURRENCIES: [usize; 2] = [1, 16];
/// Payload of each echoed message.
const BIDI_SIZE: usize = 100;

/// Bidi echo through Switchboard over a WebSocket (`grpc-websockets`) and as a Connect stream
/// over HTTP/2: messages per second and per-message round trip, `opts.repeat` interleaved
/// rounds, the best of each kept.
fn measure_bidi(env: &mut Env, servers: &mut Servers) -> Result<Vec<Cell>, String> {
    if servers.switchboard.is_none() {
        let p = env.start_server(Server::Switchboard, &servers.backend)?;
        servers.switchboard = Some(p);
    }
    let sb = VARIANTS
        .iter()
        .find(|v| v.server == Server::Switchboard)
        .ok_or("no Switchboard variant")?;
    let (port, proxy, backend) = servers.of(sb).ok_or("Switchboard is not running")?;
    let pids = pids_arg(proxy, backend);
    let opts = env.opts.clone();
    let mut cells = Vec::new();
    for c in BIDI_CONCURRENCIES {
        let mut best: Vec<Option<LoadOut>> = vec![None; BIDI_WAYS.len()];
        for round in 0..opts.repeat.max(1) {
            for (i, (id, way)) in BIDI_WAYS.iter().enumerate() {
                let mut args: Vec<String> = [
                    "--target",
                    &format!("127.0.0.1:{port}"),
                    "--rpc",
                    "bidi",
                    "--bidi",
                    way,
                    "--size",
                    &BIDI_SIZE.to_string(),
                    "--concurrency",
                    &c.to_string(),
                    "--warmup",
                    &opts.warmup.to_string(),
                    "--duration",
                    &opts.duration.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                if !pids.is_empty() {
                    args.extend(["--pids".into(), pids.clone()]);
                }
                let (out, line) = env.load(args, secs_limit(&opts));
                note_command(env, "bidi", &line);
                progress(&format!(
                    "bidi {id} c={c} (round {}): {:.0} msg/s p50 {:.0} us p99 {:.0} us {}",
                    round + 1,
                    out.rps,
                    out.p50_us,
                    out.p99_us,
                    out.error.as_deref().unwrap_or("")
                ));
                keep_best(&mut best[i], out, |o| o.rps);
            }
        }
        for ((id, _), out) in BIDI_WAYS.iter().zip(best) {
            if let Some(out) = out {
                cells.push(Cell {
                    workload: "bidi",
                    size: BIDI_SIZE,
                    concurrency: c,
                    variant: id,
                    out,
                    h2load_rps: None,
                    vs_fwd: None,
                });
            }
        }
    }
    Ok(cells)
}

/// Server-streaming throughput of every variant, `opts.repeat` interleaved rounds, the best
/// round of each kept; the cells are labelled `workload`.
fn measure_streams(
    env: &mut Env,
    servers: &Servers,
    variants: &[&'static Variant],
    workload: &'static str,
) -> Result<Vec<Cell>, String> {
    let opts = env.opts.clone();
    let mut best: Vec<Option<LoadOut>> = vec![None; variants.len()];
    for round in 0..opts.repeat {
        for (i, v) in variants.iter().enumerate() {
            let (port, proxy, backend) = servers.of(v).ok_or("server missing")?;
            let pids = pids_arg(proxy, backend);
            let args = load_args(
                v,
                port,
                "stream",
                opts.stream_size,
                opts.stream_concurrency,
                &opts,
                &pids,
            );
            let (out, line, tries) = env.load_calm(args, secs_limit(&opts), |o| o.mb_per_s);
            note_command(env, workload, &line);
            progress(&format!(
                "{workload} {} (round {}{}): {:.0} MB/s {}",
                v.id,
                round + 1,
                tries_note(tries),
                out.mb_per_s,
                out.error.as_deref().unwrap_or("")
            ));
            keep_best(&mut best[i], out, |o| o.mb_per_s);
        }
    }
    Ok(variants
        .iter()
        .zip(best)
        .map(|(v, out)| Cell {
            workload,
            size: opts.stream_size,
            concurrency: opts.stream_concurrency,
            variant: v.id,
            out: out.unwrap_or_default(),
            h2load_rps: None,
            vs_fwd: None,
        })
        .collect())
}

/// The order of one unary round: every variant once, and the bare forwarder of the same HTTP
/// version right before each Switchboard variant, and once more at the end, so
/// each of those has a baseline measured on either side (indices into `matrix`).
fn bracketed(matrix: &[&'static Variant]) -> Vec<usize> {
    let pos = |id: &str| matrix.iter().position(|v| v.id == id);
    let mut order: Vec<usize> = Vec::new();
    let push = |order: &mut Vec<usize>, i: usize| {
        if order.last() != Some(&i) {
            order.push(i);
        }
    };
    for (i, v) in matrix.iter().enumerate() {
        let fwd = pos(report::fwd_of(v));
        match fwd {
            Some(f) if v.server.is_switchboard() => {
                push(&mut order, f);
                push(&mut order, i);
            }
            _ => push(&mut order, i),
        }
    }
    for id in ["fwd-h1", "fwd-h2"] {
        if let Some(f) = pos(id) {
            push(&mut order, f);
        }
    }
    order
}

/// Each measured variant's req/s over the mean of its forwarder's nearest measurements before
/// and after it in the round (`measured`: matrix index and req/s, in order).
fn bracket_ratios(matrix: &[&'static Variant], measured: &[(usize, f64)]) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    for (p, &(i, rps)) in measured.iter().enumerate() {
        let v = matrix[i];
        if !v.server.is_switchboard() || rps <= 0.0 {
            continue;
        }
        let fwd = report::fwd_of(v);
        let is_fwd = |&&(j, r): &&(usize, f64)| matrix[j].id == fwd && r > 0.0;
        let before = measured[..p].iter().rev().find(is_fwd).map(|x| x.1);
        let after = measured[p + 1..].iter().find(is_fwd).map(|x| x.1);
        let base = match (before, after) {
            (Some(a), Some(b)) => (a + b) / 2.0,
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => continue,
        };
        out.push((i, rps / base));
    }
    out
}

fn tries_note(tries: usize) -> String {
    if tries > 1 {
        format!(", {tries} tries: other work disturbed it")
    } else {
        String::new()
    }
}

/// Keeps the better of two results: a successful one, then the higher `score`.
fn keep_best(slot: &mut Option<LoadOut>, out: LoadOut, score: impl Fn(&LoadOut) -> f64) {
    let better = match slot {
        None => true,
        Some(old) => (out.ok && !old.ok) || (out.ok == old.ok && score(&out) > score(old)),
    };
    if better {
        *slot = Some(out);
    }
}

/// Keeps one example command line per workload for the report.
fn note_command(env: &mut Env, workload: &str, line: &str) {
    let tag = format!("# {workload}\n");
    if !env.commands.iter().any(|c| c.starts_with(&tag)) {
        env.commands.push(format!("{tag}{line}"));
    }
}

fn load_args(
    v: &Variant,
    port: u16,
    rpc: &str,
    size: usize,
    c: usize,
    o: &Opts,
    pids: &str,
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "--target".into(),
        format!("127.0.0.1:{port}"),
        "--wire".into(),
        v.wire.into(),
        "--http".into(),
        if v.http1 { "1".into() } else { "2".into() },
        "--rpc".into(),
        rpc.into(),
        "--size".into(),
        size.to_string(),
        "--concurrency".into(),
        c.to_string(),
        "--warmup".into(),
        o.warmup.to_string(),
        "--duration".into(),
        o.duration.to_string(),
    ];
    if rpc == "stream" {
        a.extend(["--count".into(), o.stream_count.to_string()]);
    }
    if !pids.is_empty() {
        a.extend(["--pids".into(), pids.into()]);
    }
    if v.server == Server::SwitchboardJwt {
        if let Some(h) = JWT_TOKEN.get() {
            a.extend(["--header".into(), h.clone()]);
        }
    }
    a
}

/// The `authorization` header the JWT variants send (one token for the run: the proxy
/// verifies it once and then finds it in its cache, as with a real client reusing its token).
static JWT_TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Server {
    /// A Switchboard process (with or without auth).
    pub fn is_switchboard(self) -> bool {
        matches!(self, Server::Switchboard | Server::SwitchboardJwt)
    }
}

/// The variants h2load cross-checks (it speaks gRPC and gRPC-Web binary framing well enough).
const H2LOAD_VARIANTS: &[&str] = &["direct", "fwd-h1", "fwd-h2", "sb-web-h1", "sb-grpc-h2"];

/// Small unary at concurrency 16 with h2load, as a check on bench-load's own figures.
fn h2load(env: &mut Env, v: &Variant, port: u16, body: &Path) -> (Option<f64>, String) {
    let o = env.opts.clone();
    let content_type = match v.wire {
        "grpc-web" => "content-type: application/grpc-web+proto",
        _ => "content-type: application/grpc",
    };
    let mut args: Vec<String> = Vec::new();
    if v.http1 {
        args.extend([
            "--h1".into(),
            "-c".into(),
            "16".into(),
            "-m".into(),
            "1".into(),
        ]);
    } else {
        args.extend(["-c".into(), "4".into(), "-m".into(), "4".into()]);
    }
    args.extend([
        "-t".into(),
        "1".into(),
        "-D".into(),
        format!("{}", o.duration.max(1.0).round() as u64),
        format!("--warm-up-time={}", o.warmup.max(1.0).round() as u64),
        "-d".into(),
        body.display().to_string(),
        "-H".into(),
        content_type.into(),
        "-H".into(),
        "te: trailers".into(),
        format!("http://127.0.0.1:{port}/switchboard.testing.v1.TestService/Unary"),
    ]);
    let (mut cmd, line) = env.command(o.load_core, Path::new("h2load"), &args);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return (None, line);
    };
    let deadline =
        Instant::now() + Duration::from_secs_f64(o.duration.max(1.0) + o.warmup.max(1.0) + 30.0);
    if !exits_by(&mut child, deadline) {
        return (None, line);
    }
    let text = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "finished in 5.00s, 12345.60 req/s, 1.23MB/s" and "requests: ... N failed, N errored"
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.trim_end_matches(" req/s").parse::<f64>().ok());
    let failed = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .is_some_and(|l| !(l.contains(" 0 failed") && l.contains(" 0 errored")));
    (if failed { None } else { rps }, line)
}
