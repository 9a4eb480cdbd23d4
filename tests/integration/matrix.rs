//! The interop matrix: every third-party client × every call type, through the proxy, in
//! front of each of three gRPC backends.
//!
//! - Backends: tonic (in process, `support::spawn_backend`), `@grpc/grpc-js` on Node
//!   (`tests/interop/backends/grpc-js-server.mjs`) and Python `grpcio`
//!   (`tests/interop/backends/grpcio_server.py`). The last two are child processes that listen
//!   on an ephemeral loopback port, print it as their first line of stdout (the readiness
//!   signal) and exit when their stdin closes; they are killed when dropped.
//! - Clients and call types: `tests/interop/matrix.mjs`, run once per backend (all three at
//!   once), which prints one `CELL <client> <call> PASS|FAIL <detail>` line per cell; then
//!   `tests/browser/improbable.mjs` per backend, the `improbable-ws` row again in headless
//!   Chromium (the browser's own WebSocket), printing the same lines.
//!
//! The whole matrix is printed to stderr as a table (past the test harness's capture, so it
//! shows in every test log), then every cell must have passed. Without the npm or Python
//! packages this test fails and says to run `scripts/test.sh`, unless
//! `SWITCHBOARD_SKIP_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support;
use crate::support::backend::TESTING_DESCRIPTOR;
use crate::support::grpcio::PYTHON_CHECK;
use crate::support::process::{interop_dir, may_run, runs, Output, Spawned};
/// Hang guard for one run of matrix.mjs (every cell inside has its own 15 s guard).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Hang guard for a child backend to print its port (grpcio generates its stubs first).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The backends, in column order.
const BACKENDS: [&str; 3] = ["tonic", "grpc-js", "grpcio"];

/// The files the test needs from `npm ci` in tests/interop.
const NODE_PACKAGES: [&str; 9] = [
    "@connectrpc/connect-node/package.json",
    "@bufbuild/buf/package.json",
    "@grpc/grpc-js/package.json",
    "@grpc/proto-loader/package.json",
    "grpc-web/package.json",
    "xhr2/package.json",
    "@improbable-eng/grpc-web/package.json",
    "@improbable-eng/grpc-web-node-http-transport/package.json",
    "ws/package.json",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interop_matrix() {
    if !may_run("the interop matrix", missing_prerequisites()) {
        return;
    }
    let dir = interop_dir();
    // The child backends start (and generate stubs) while tonic and the proxies start.
    let children = tokio::task::spawn_blocking(move || {
        let backends = dir.join("backends");
        let grpc_js =
            ChildBackend::spawn("grpc-js", "node", &[backends.join("grpc-js-server.mjs")]);
        let grpcio = ChildBackend::spawn("grpcio", "python3", &[backends.join("grpcio_server.py")]);
        (grpc_js.ready(), grpcio.ready())
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
    // Chromium, one backend at a time (a browser each is enough load for two cores).
    for (proxy, out) in proxies.iter().zip(outputs.iter_mut()) {
        let url = proxy.url.trim_end_matches('/').to_owned();
        let browser = tokio::task::spawn_blocking(move || run_browser_script(&url))
            .await
            .expect("runner thread panicked");
        out.stdout.push_str(&browser.stdout);
        out.stderr.push_str(&browser.stderr);
        if !browser.success {
            out.success = false;
            out.status = format!("improbable.mjs: {}", browser.status);
        }
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

/// A test backend running as a child process that prints its port as its first line of
/// stdout; killed when dropped.
struct ChildBackend {
    process: Spawned,
    url: String,
}

impl ChildBackend {
    fn spawn(name: &'static str, program: &str, args: &[PathBuf]) -> ChildBackend {
        let mut command = Command::new(program);
        command.args(args).current_dir(interop_dir());
        ChildBackend {
            process: Spawned::start(&format!("the {name} backend"), command),
            url: String::new(),
        }
    }

    /// Waits for the printed port.
    fn ready(mut self) -> ChildBackend {
        let port = self.process.port(READY_TIMEOUT);
        self.url = format!("http://127.0.0.1:{port}");
        self
    }
}

/// What is missing for the matrix: node, the npm packages or the Python packages.
fn missing_prerequisites() -> Option<String> {
    let dir = interop_dir();
    let missing_npm: Vec<&str> = NODE_PACKAGES
        .iter()
        .filter(|p| !dir.join("node_modules").join(p).is_file())
        .map(|p| p.trim_end_matches("/package.json"))
        .collect();
    if !runs("node", &["--version"]) {
        Some("`node` is not on PATH".to_owned())
    } else if !missing_npm.is_empty() {
        Some(format!(
            "npm packages missing from {}/node_modules: {}",
            dir.display(),
            missing_npm.join(", ")
        ))
    } else if !Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/browser/node_modules/playwright-core/package.json")
        .is_file()
    {
        Some("playwright-core is not installed in tests/browser".to_owned())
    } else if !Path::new(
        &std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()),
    )
    .exists()
    {
        Some(
            "Chromium is not installed (Debian: apt-get install chromium; or set CHROMIUM)"
                .to_owned(),
        )
    } else if !runs("python3", &["-c", PYTHON_CHECK]) {
        Some(
            "the Python packages of the grpcio backend (tests/interop/requirements.txt) are not \
             installed for python3"
                .to_owned(),
        )
    } else {
        None
    }
}

/// Runs `node tests/browser/improbable.mjs` (headless Chromium) against one proxy.
fn run_browser_script(url: &str) -> Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = support::process::run(
        "node",
        &["improbable.mjs", "--url", url],
        &dir,
        SCRIPT_TIMEOUT,
    );
    Output {
        success: out.success,
        status: out.status,
        stdout: out.stdout,
        stderr: out.stderr,
    }
}

/// Runs `node matrix.mjs` against one proxy to completion, killing it after SCRIPT_TIMEOUT.
fn run_matrix_script(url: &str) -> Output {
    let dir = interop_dir();
    let args = [
        dir.join("matrix.mjs").display().to_string(),
        "--url".to_owned(),
        url.to_owned(),
        "--descriptor".to_owned(),
        TESTING_DESCRIPTOR.to_owned(),
    ];
    support::process::run("node", &args, &dir, SCRIPT_TIMEOUT)
}
