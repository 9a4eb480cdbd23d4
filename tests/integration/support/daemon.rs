//! Long-running child processes (the built `switchboard` binary, a Python client) whose output
//! lines a test waits for, and that it signals.

use std::io::{BufRead as _, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running child; killed when dropped.
pub(crate) struct Daemon {
    child: Child,
    lines: mpsc::Receiver<(Stream, String)>,
    /// Every line seen so far, in order, for failure messages and later searches.
    pub(crate) seen: Vec<(Stream, String)>,
}

/// Which output a line came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Daemon {
    /// Starts `program` with `args` in `dir`, with `env` added.
    pub(crate) fn start<S: AsRef<std::ffi::OsStr>>(
        program: &str,
        args: &[S],
        dir: &Path,
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let (tx, lines) = mpsc::channel();
        let pump = |r: Box<dyn Read + Send>, which: Stream, tx: mpsc::Sender<(Stream, String)>| {
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send((which, line)).is_err() {
                        break;
                    }
                }
            });
        };
        pump(
            Box::new(child.stdout.take().unwrap()),
            Stream::Stdout,
            tx.clone(),
        );
        pump(Box::new(child.stderr.take().unwrap()), Stream::Stderr, tx);
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The switchboard binary with `args`, logging at info (the default) without colours.
    pub(crate) fn switchboard<S: AsRef<std::ffi::OsStr>>(args: &[S], dir: &Path) -> Daemon {
        Daemon::start(
            env!("CARGO_BIN_EXE_switchboard"),
            args,
            dir,
            &[("RUST_LOG", "info")],
        )
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (up to `limit`) for an output line that `want` accepts, and returns it. Lines
    /// seen while waiting are kept in `seen`.
    pub(crate) fn wait_line(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((which, line)) => {
                    self.seen.push((which, line.clone()));
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no expected line within {limit:?}; output so far:\n{}",
                    self.output()
                ),
            }
        }
    }

    /// Collects the lines that arrive within `window`.
    pub(crate) fn drain_lines(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        while let Ok(l) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(l);
        }
    }

    /// Every line seen so far, as one text.
    pub(crate) fn output(&self) -> String {
        self.seen
            .iter()
            .map(|(w, l)| format!("{w:?}: {l}\n"))
            .collect()
    }

    /// The address a `switchboard` log line `what ... addr=HOST:PORT` names.
    pub(crate) fn logged_addr(&mut self, what: &str) -> std::net::SocketAddr {
        let line = self.wait_line(Duration::from_secs(20), |l| {
            l.contains(what) && l.contains("addr=")
        });
        let after = line.split("addr=").nth(1).unwrap();
        let addr = after.split_whitespace().next().unwrap();
        addr.parse()
            .unwrap_or_else(|e| panic!("{addr:?} in {line:?}: {e}"))
    }

    /// Sends a signal by name (`TERM`, `HUP`) with kill(1).
    pub(crate) fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([format!("-{name}"), self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (up to `limit`) for the process to exit, keeping its last lines.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.drain_lines(Duration::from_millis(200));
                return status;
            }
            if Instant::now() >= deadline {
                panic!("still running after {limit:?}; output:\n{}", self.output());
            }
            // Polling a child process: there is no readiness signal to wait on instead.
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
