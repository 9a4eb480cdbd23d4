//! The Python grpcio backend of tests/interop (`backends/grpcio_server.py`) as a child
//! process: started with options (address, health service, TLS/mTLS), told to change its
//! health over stdin, killed like a crashing backend.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Stubs are generated at start-up, which takes a few seconds on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// What the backend imports (tests/interop/requirements.txt).
pub(crate) const PYTHON_CHECK: &str =
    "import grpc, grpc_tools.protoc, grpc_status.rpc_status, grpc_health.v1.health, \
     google.rpc.error_details_pb2, grpc_reflection.v1alpha.reflection, google.api.annotations_pb2";

/// A running grpcio backend.
#[derive(Debug)]
pub(crate) struct GrpcioBackend {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines it printed after its port (acknowledgements of commands).
    lines: mpsc::Receiver<String>,
    pub(crate) addr: SocketAddr,
    /// `http://…` or `https://…` (with `--tls-cert`).
    pub(crate) url: String,
}

fn backends_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/backends")
}

/// True when python3 and the backend's packages are there; false (skip) when they are
/// missing and SWITCHBOARD_SKIP_INTEROP=1; panics when they are missing otherwise.
pub(crate) fn available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", PYTHON_CHECK])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return true;
    }
    if std::env::var_os("SWITCHBOARD_SKIP_INTEROP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: the grpcio backend's Python packages are missing");
        return false;
    }
    panic!(
        "the grpcio backend needs python3 with tests/interop/requirements.txt installed \
         (scripts/test.sh does it), or SWITCHBOARD_SKIP_INTEROP=1 to skip"
    );
}

impl GrpcioBackend {
    /// Starts it with these options (see the script's doc) and waits for its port.
    pub(crate) async fn spawn(args: &[&str]) -> GrpcioBackend {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::spawn_blocking(move || GrpcioBackend::spawn_blocking(&args))
            .await
            .unwrap()
    }

    fn spawn_blocking(args: &[String]) -> GrpcioBackend {
        let tls = args.iter().any(|a| a == "--tls-cert");
        let host = args
            .iter()
            .position(|a| a == "--listen")
            .and_then(|i| args.get(i + 1))
            .and_then(|l| l.rsplit_once(':'))
            .map_or("127.0.0.1".to_owned(), |(h, _)| h.to_owned());
        let mut child = Command::new("python3")
            .arg(backends_dir().join("grpcio_server.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the grpcio backend: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let first = rx.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| {
            panic!("the grpcio backend printed no port within {READY_TIMEOUT:?}")
        });
        let port: u16 = first
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the grpcio backend's first line is not a port: {first:?}"));
        let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
        let scheme = if tls { "https" } else { "http" };
        GrpcioBackend {
            child,
            stdin,
            lines: rx,
            addr,
            url: format!("{scheme}://{addr}"),
        }
    }

    /// Makes its health service answer SERVING or NOT_SERVING, and waits until it does.
    pub(crate) async fn set_serving(&mut self, serving: bool) {
        let command = if serving { "serving" } else { "not_serving" };
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let ack = tokio::task::block_in_place(|| self.lines.recv_timeout(super::GUARD));
        assert_eq!(
            ack.as_deref(),
            Ok(command),
            "the grpcio backend did not confirm"
        );
    }

    /// Kills the process: its connections end without GOAWAY and its port refuses.
    pub(crate) fn kill(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GrpcioBackend {
    fn drop(&mut self) {
        self.kill();
    }
}
