//! Running a third-party program (node, buf) to completion with a time limit.

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished program left behind.
pub(crate) struct Output {
    pub(crate) success: bool,
    pub(crate) status: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
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
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().unwrap()));
    let stderr = read_all(Box::new(child.stderr.take().unwrap()));
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
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
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
