//! The interop matrix: every third-party client × every call type, through the proxy, in
//! front of each of three gRPC backends.
//!
//! - Backends: tonic (in process, `support::spawn_backend`), `@grpc/grpc-js` on Node
//!   (`tests/interop/backends/grpc-js-server.mjs`) and Python `grpcio`
//!   (`tests/interop/backends/grpcio_server.py`). The last two are child processes that listen
//!   on an ephemeral loopback port, print it as their first line of stdout (the readiness
//!   signal) and exit when their stdin closes; they are killed when dropped.
//! - Clients and call types: `tests/interop/matrix.mjs`, run once per backend (all three at
//!   once), which prints one `CELL <client> <call> PASS|FAIL <detail>` line per cell.
//!
//! The whole matrix is printed to stderr as a table (past the test harness's capture, so it
//! shows in every test log), then every cell must have passed. Without the npm or Python
//! packages this test fails and says to run `scripts/test.sh`, unless
//! `SWITCHBOARD_SKIP_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support;

/// The FileDescriptorSet of proto/switchboard/testing/v1/testing.proto.
const DESCRIPTOR: &str = concat!(env!("OUT_DIR"), "/testing_descriptor.bin");
/// Hang guard for one run of matrix.mjs (every cell inside has its own 15 s guard).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Hang guard for a child backend to print its port (grpcio generates its stubs first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The backends, in column order.
const BACKENDS: [&str; 3] = ["tonic", "grpc-js", "grpcio"];

/// The files the test needs from `npm ci` in tests/interop.
const NODE_PACKAGES: [&str; 8] = [
    "@connectrpc/connect-node/package.json",
    "@bufbuild/buf/package.json",
    "@grpc/grpc-js/package.json",
    "@grpc/proto-loader/package.json",
    "grpc-web/package.json",
    "xhr2/package.json",
    "@improbable-eng/grpc-web/package.json",
    "@improbable-eng/grpc-web-node-http-transport/package.json",
];
/// What the grpcio backend imports (tests/interop/requirements.txt).
pub(crate) const PYTHON_CHECK: &str = "import grpc, grpc_tools.protoc, grpc_status.rpc_status, \
     grpc_reflection.v1alpha.reflection, google.rpc.error_details_pb2, google.api.annotations_pb2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_matrix() {
    if !prerequisites_present() {
        return;
    }
    let dir = interop_dir();
    // The child backends start (and generate stubs) while tonic and the proxies start.
    let children = tokio::task::spawn_blocking(move || {
        let backends = dir.join("backends");
        let grpc_js =
            ChildBackend::spawn("grpc-js", "node", &[backends.join("grpc-js-server.mjs")]);
        let grpcio = ChildBackend::spawn("grpcio", "python3", &[backends.join("grpcio_server.py")]);
        (grpc_js.wait_ready(), grpcio.wait_ready())
    });
    let tonic = support::spawn_backend().await;
    let (grpc_js, grpcio) = children.await.expect("backend starter panicked");
    let urls = [tonic.url.clone(), grpc_js.url.clone(), grpcio.url.clone()];

    let mut proxies = Vec::new();
    for url in &urls {
        proxies.push(support::spawn_proxy(url).await);
    }
    let runs: Vec<_> = proxies
        .iter()
        .map(|proxy| {
            let url = proxy.url.trim_end_matches('/').to_owned();
            tokio::task::spawn_blocking(move || run_matrix_script(&url))
        })
        .collect();
    let mut outputs = Vec::new();
    for run in runs {
        outputs.push(run.await.expect("runner thread panicked"));
    }

    let mut matrix = Matrix::default();
    for (backend, out) in BACKENDS.iter().zip(&outputs) {
        matrix.add_run(backend, out);
    }
    let report = matrix.render();
    // Written to stderr directly: the harness does not capture it, so the table shows in
    // every test log, passing or not.
    let _ = std::io::stderr().write_all(report.as_bytes());

    let mut problems = Vec::new();
    for (backend, out) in BACKENDS.iter().zip(&outputs) {
        // Cell failures are in the table; anything else the script said is shown here.
        if !out.success && (matrix.failed_in(backend) == 0 || !out.stderr.trim().is_empty()) {
            problems.push(format!(
                "matrix.mjs against the {backend} backend failed ({}):\n{}{}",
                out.status, out.stdout, out.stderr
            ));
        }
    }
    let failed = matrix.failed();
    assert!(
        failed == 0 && problems.is_empty(),
        "{failed} matrix cell(s) failed or are missing (table above){}",
        problems
            .iter()
            .map(|p| format!("\n{p}"))
            .collect::<String>()
    );
    drop(proxies);
    drop((grpc_js, grpcio, tonic));
}

pub(crate) fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
}

/// Every cell's outcome: (client, call) rows in the order matrix.mjs printed them.
#[derive(Default)]
struct Matrix {
    rows: Vec<(String, String)>,
    /// (client, call, backend) -> (passed, detail)
    cells: BTreeMap<(String, String, String), (bool, String)>,
}

impl Matrix {
    fn add_run(&mut self, backend: &str, out: &Output) {
        for line in out.stdout.lines() {
            let mut parts = line.splitn(5, ' ');
            let (Some("CELL"), Some(client), Some(call), Some(verdict)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let detail = parts.next().unwrap_or_default().to_owned();
            let row = (client.to_owned(), call.to_owned());
            if !self.rows.contains(&row) {
                self.rows.push(row);
            }
            self.cells.insert(
                (client.to_owned(), call.to_owned(), backend.to_owned()),
                (verdict == "PASS", detail),
            );
        }
    }

    fn cell(&self, client: &str, call: &str, backend: &str) -> Option<&(bool, String)> {
        self.cells
            .get(&(client.to_owned(), call.to_owned(), backend.to_owned()))
    }

    /// Failed or missing cells in one backend's column.
    fn failed_in(&self, backend: &str) -> usize {
        self.rows
            .iter()
            .filter(|(client, call)| !matches!(self.cell(client, call, backend), Some((true, _))))
            .count()
    }

    fn failed(&self) -> usize {
        if self.rows.is_empty() {
            return 1;
        }
        BACKENDS.iter().map(|b| self.failed_in(b)).sum()
    }

    fn render(&self) -> String {
        let client_w = self
            .rows
            .iter()
            .map(|(c, _)| c.len())
            .chain(["client".len()])
            .max()
            .unwrap_or(0);
        let call_w = self
            .rows
            .iter()
            .map(|(_, c)| c.len())
            .chain(["call".len()])
            .max()
            .unwrap_or(0);
        let mut s = String::from(
            "---- interop matrix: client × call × backend, through the proxy (✔ pass, ✘ fail) ----\n",
        );
        s.push_str(&format!("{:<client_w$}  {:<call_w$}", "client", "call"));
        for b in BACKENDS {
            s.push_str(&format!("  {b:<7}"));
        }
        trim_line_end(&mut s);
        let mut notes: Vec<(String, Vec<&str>)> = Vec::new();
        let mut failures = Vec::new();
        for (client, call) in &self.rows {
            s.push_str(&format!("{client:<client_w$}  {call:<call_w$}"));
            for b in BACKENDS {
                let mark = match self.cell(client, call, b) {
                    Some((true, detail)) => {
                        // "(12 ms; note) info": keep the note, grouped over the backends.
                        if let Some(note) = detail
                            .strip_prefix('(')
                            .and_then(|d| d.split_once(')'))
                            .and_then(|(d, _)| d.split_once("; "))
                            .map(|(_, note)| format!("{client} {call}: {note}"))
                        {
                            match notes.iter_mut().find(|(n, _)| *n == note) {
                                Some((_, backends)) => backends.push(b),
                                None => notes.push((note, vec![b])),
                            }
                        }
                        "✔"
                    }
                    Some((false, detail)) => {
                        failures.push(format!("{client} {call} [{b}]: {detail}"));
                        "✘"
                    }
                    None => {
                        failures.push(format!("{client} {call} [{b}]: no result"));
                        "✘"
                    }
                };
                s.push_str(&format!("  {mark:<7}"));
            }
            trim_line_end(&mut s);
        }
        let total = self.rows.len() * BACKENDS.len();
        let failed = self.failed();
        s.push_str(&format!(
            "matrix: {} of {total} cells passed\n",
            total.saturating_sub(failed)
        ));
        if !notes.is_empty() {
            s.push_str("notes:\n");
            for (note, backends) in notes {
                s.push_str(&format!("  {note} [{}]\n", backends.join(", ")));
            }
        }
        if !failures.is_empty() {
            s.push_str("failures:\n");
            for f in failures {
                s.push_str(&format!("  {f}\n"));
            }
        }
        s.push_str("---- end of interop matrix ----\n");
        s
    }
}

/// Ends the line being built, without its trailing padding.
fn trim_line_end(s: &mut String) {
    s.truncate(s.trim_end_matches(' ').len());
    s.push('\n');
}

/// A test backend running as a child process; killed when dropped. (The REST tests start the
/// grpcio backend with it too.)
pub(crate) struct ChildBackend {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) url: String,
    port: Option<mpsc::Receiver<Result<u16, String>>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl ChildBackend {
    pub(crate) fn spawn(name: &'static str, program: &str, args: &[PathBuf]) -> ChildBackend {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the {name} backend ({program}): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        // The first line is the port; the rest (none expected) is drained.
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let port = match reader.read_line(&mut line) {
                Ok(0) => Err("it exited without printing its port".to_owned()),
                Ok(_) => line
                    .trim()
                    .parse::<u16>()
                    .map_err(|_| format!("its first line is not a port: {line:?}")),
                Err(e) => Err(format!("reading its stdout failed: {e}")),
            };
            let _ = tx.send(port);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let stderr = read_all(Box::new(child.stderr.take().unwrap()));
        ChildBackend {
            name,
            child,
            stdin,
            url: String::new(),
            port: Some(rx),
            stderr: Some(stderr),
        }
    }

    /// Waits for the printed port (no sleeps: the line is the readiness signal).
    pub(crate) fn wait_ready(mut self) -> ChildBackend {
        let rx = self.port.take().unwrap();
        let port = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(port)) => port,
            Ok(Err(e)) => self.fail(&e),
            Err(_) => self.fail(&format!("no port within {READY_TIMEOUT:?}")),
        };
        self.url = format!("http://127.0.0.1:{port}");
        self
    }

    fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        panic!(
            "the {} backend did not start: {why}; its stderr:\n{stderr}",
            self.name
        );
    }
}

impl Drop for ChildBackend {
    fn drop(&mut self) {
        // Closing stdin asks it to exit; killing makes sure it does.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when node, the npm packages and the Python packages are there; false (skip) when
/// something is missing and SWITCHBOARD_SKIP_INTEROP=1; panics when missing otherwise.
fn prerequisites_present() -> bool {
    let dir = interop_dir();
    let runs = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing_npm: Vec<&str> = NODE_PACKAGES
        .iter()
        .filter(|p| !dir.join("node_modules").join(p).is_file())
        .map(|p| p.trim_end_matches("/package.json"))
        .collect();
    let problem = if !runs("node", &["--version"]) {
        "`node` is not on PATH".to_owned()
    } else if !missing_npm.is_empty() {
        format!(
            "npm packages missing from {}/node_modules: {}",
            dir.display(),
            missing_npm.join(", ")
        )
    } else if !runs("python3", &["-c", PYTHON_CHECK]) {
        "the Python packages of the grpcio backend (tests/interop/requirements.txt) are not \
         installed for python3"
            .to_owned()
    } else {
        return true;
    };
    if std::env::var_os("SWITCHBOARD_SKIP_INTEROP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED interop matrix: {problem} (SWITCHBOARD_SKIP_INTEROP=1)");
        return false;
    }
    panic!(
        "{problem}. Run scripts/test.sh (it installs the npm and Python packages, then runs \
         every test), or set SWITCHBOARD_SKIP_INTEROP=1 to skip the interop tests"
    );
}

struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

fn read_all(mut r: Box<dyn Read + Send>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `node matrix.mjs` against one proxy to completion, killing it after SCRIPT_TIMEOUT.
fn run_matrix_script(url: &str) -> Output {
    let dir = interop_dir();
    let mut child = Command::new("node")
        .arg(dir.join("matrix.mjs"))
        .args(["--url", url, "--descriptor", DESCRIPTOR])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node: {e}"));
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let (success, status) = loop {
        if let Some(status) = child.try_wait().expect("waiting for node failed") {
            break (status.success(), status.to_string());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (false, format!("killed after {SCRIPT_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        success,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
