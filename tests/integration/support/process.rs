//! Programs run as child processes: a third-party program (node, buf) run to completion with
//! a time limit; a long-running child (a backend in another language, the switchboard binary)
//! whose first line of stdout is its readiness signal; and the check that the third-party
//! programs a test needs are installed.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `tests/interop`: the npm package of the third-party clients and the child backends.
pub(crate) fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("interop")
}

/// What a finished program left behind.
pub(crate) struct Output {
    pub(crate) success: bool,
    pub(crate) status: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Output {
    /// Writes stdout (and stderr, if any) between `---- {title} ----` and
    /// `---- end of {name} ----` straight to stderr, past the test harness's capture, so the
    /// program's report shows in every test log, passing or not.
    pub(crate) fn show(&self, title: &str, name: &str) {
        let report = format!(
            "---- {title} ----\n{}{}{}---- end of {name} ----\n",
            self.stdout,
            if self.stderr.is_empty() {
                ""
            } else {
                "stderr:\n"
            },
            self.stderr,
        );
        let _ = std::io::stderr().write_all(report.as_bytes());
    }
}

/// Reads a child's pipe to its end on a thread of its own.
fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits up to `timeout` for `child` to exit; None if it is still running then.
fn wait_until(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child failed") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Polling a child process: there is no readiness signal to wait on instead.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `program` in `dir` to completion, killing it after `timeout`.
pub(crate) fn run<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    dir: &Path,
    timeout: Duration,
) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let (success, status) = match wait_until(&mut child, timeout) {
        Some(status) => (status.success(), status.to_string()),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            (false, format!("killed after {timeout:?}"))
        }
    };
    Output {
        success,
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A long-running child process with its stdin, stdout and stderr piped. Its first line of
/// stdout is its readiness signal ([`Spawned::first_line`]); the rest is drained. Dropping it
/// closes its stdin (which asks the test backends to exit) and then kills it.
pub(crate) struct Spawned {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    first_line: Option<mpsc::Receiver<Result<String, String>>>,
    stderr: Option<JoinHandle<String>>,
}

impl Spawned {
    /// Starts `command`, named `name` in failure messages.
    pub(crate) fn start(name: &str, mut command: Command) -> Spawned {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let stderr = read_all(child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = match reader.read_line(&mut line) {
                Ok(0) => Err("it exited without printing a line".to_owned()),
                Ok(_) => Ok(line.trim_end().to_owned()),
                Err(e) => Err(format!("reading its stdout failed: {e}")),
            };
            let _ = tx.send(first);
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        Spawned {
            name: name.to_owned(),
            child,
            stdin,
            first_line: Some(rx),
            stderr: Some(stderr),
        }
    }

    /// The OS process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the first line of stdout (no sleeps: the line is the
    /// readiness signal); kills the child and fails the test, with its stderr, if none comes.
    /// Call it once.
    pub(crate) fn first_line(&mut self, timeout: Duration) -> String {
        let rx = self.first_line.take().expect("first_line is read once");
        match rx.recv_timeout(timeout) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => self.fail(&e),
            Err(_) => self.fail(&format!("no line on stdout within {timeout:?}")),
        }
    }

    /// Waits for the printed port: the first line must be a port number.
    pub(crate) fn port(&mut self, timeout: Duration) -> u16 {
        let line = self.first_line(timeout);
        line.trim()
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("its first line is not a port: {line:?}")))
    }

    /// Sends `signal` (`INT`, `TERM`, `HUP`, ...) with kill(1).
    pub(crate) fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("cannot run kill");
        assert!(sent.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits up to `timeout` for the child to exit; returns its status and whole stderr.
    /// Kills it and fails the test if it does not exit in time.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, String) {
        match wait_until(&mut self.child, timeout) {
            Some(status) => (status, self.take_stderr()),
            None => self.fail(&format!("it did not exit within {timeout:?}")),
        }
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Kills the child and fails the test, quoting its stderr.
    pub(crate) fn fail(&mut self, why: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = self.take_stderr();
        panic!("{}: {why}; its stderr:\n{stderr}", self.name);
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // Closing stdin asks it to exit; killing makes sure it does.
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when `program args` runs and exits 0 (output discarded).
pub(crate) fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// What keeps a test that runs Node from running: `node` itself missing, or the first of
/// `needed` (a path, and what its absence means) that is not there; None when all is there.
pub(crate) fn node_missing(needed: &[(&Path, &str)]) -> Option<String> {
    if !runs("node", &["--version"]) {
        return Some("`node` is not on PATH".to_owned());
    }
    needed
        .iter()
        .find(|(path, _)| !path.exists())
        .map(|(path, problem)| format!("{problem} ({} is missing)", path.display()))
}

/// Whether `what` (a test that needs third-party programs) may run: true when nothing is
/// `missing`; false (a skip, said on stderr) when something is and
/// `SWITCHBOARD_SKIP_INTEROP=1`; otherwise the test fails, saying how to install it.
pub(crate) fn may_run(what: &str, missing: Option<String>) -> bool {
    let Some(problem) = missing else {
        return true;
    };
    if std::env::var_os("SWITCHBOARD_SKIP_INTEROP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED {what}: {problem} (SWITCHBOARD_SKIP_INTEROP=1)");
        return false;
    }
    panic!(
        "{what}: {problem}. Run scripts/test.sh (it installs what the tests need, then runs \
         every test), or set SWITCHBOARD_SKIP_INTEROP=1 to skip the tests that need it"
    );
}

/// Runs `program` to completion like [`run`], answering it as it goes: every line it prints
/// is handed to `answer`, and what that returns (if anything) is written to its stdin as a line.
/// `answer` runs on the reading thread and may block (it waits for what the program reports).
pub(crate) fn run_conversation<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    dir: &Path,
    timeout: Duration,
    mut answer: impl FnMut(&str) -> Option<String> + Send + 'static,
) -> Output {
    use std::io::{BufRead as _, Write as _};
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let talk = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(reply) = answer(&line) {
                let _ = writeln!(stdin, "{reply}");
                let _ = stdin.flush();
            }
        }
        seen
    });
    let mut stderr = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    });
    let deadline = Instant::now() + timeout;
    let (success, status) = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child failed") {
            break (status.success(), status.to_string());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (false, format!("killed after {timeout:?}"));
        }
        // Polling a child process: there is no readiness signal to wait on instead.
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        success,
        status,
        stdout: talk.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A `switchboard --config FILE` process (the built binary), killed when dropped.
pub(crate) struct ProxyProcess {
    /// Its first listener.
    pub(crate) addr: std::net::SocketAddr,
    child: std::process::Child,
    /// Everything it logged so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ProxyProcess {
    /// Starts the binary on `config` and waits for its first "listening" line.
    pub(crate) fn start(config: &Path) -> ProxyProcess {
        use std::io::BufRead as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start switchboard: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .and_then(|a| a.parse::<std::net::SocketAddr>().ok());
                    if let (Some(addr), Some(tx)) = (addr, tx.take()) {
                        let _ = tx.send(addr);
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(super::GUARD) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "switchboard did not start listening:\n{}",
                log.lock().unwrap()
            );
        };
        ProxyProcess { addr, child, log }
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Its resident memory, from /proc.
    pub(crate) fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kib << 10
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
