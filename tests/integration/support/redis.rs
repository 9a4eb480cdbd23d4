//! A real Redis (Debian's `redis-server`) for one test: on a loopback port of its own, no
//! persistence, killed when dropped. Ready when it prints that it accepts connections.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A running `redis-server`.
pub(crate) struct Redis {
    pub(crate) addr: SocketAddr,
    /// `redis://127.0.0.1:PORT`.
    pub(crate) url: String,
    child: Child,
}

impl Redis {
    /// Whether `redis-server` can be run; when not, the test is skipped only with
    /// `SWITCHBOARD_SKIP_REDIS=1` and fails otherwise.
    pub(crate) fn available() -> bool {
        let ok = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if std::env::var_os("SWITCHBOARD_SKIP_REDIS").is_some_and(|v| v == "1") {
                eprintln!("SKIPPED: redis-server is not installed (SWITCHBOARD_SKIP_REDIS=1)");
                return false;
            }
            panic!(
                "redis-server is not installed. Run scripts/test.sh (it installs it), \
                 or set SWITCHBOARD_SKIP_REDIS=1 to skip the tests that need Redis"
            );
        }
        true
    }

    /// Starts Redis on a free loopback port and waits until it is ready.
    pub(crate) fn start() -> Redis {
        // Redis cannot report a port it chose itself, so one is picked free just before.
        let addr = super::closed_port();
        let mut child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &addr.port().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--loglevel",
                "notice",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.contains("Ready to accept connections") {
                    let _ = tx.send(Ok(()));
                    // Keep draining so Redis never blocks on a full pipe.
                    continue;
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let _ = tx.send(Err(seen));
        });
        match rx.recv_timeout(super::GUARD) {
            Ok(Ok(())) => {}
            other => {
                let _ = child.kill();
                panic!("redis-server did not get ready: {other:?}");
            }
        }
        Redis {
            addr,
            url: format!("redis://{addr}"),
            child,
        }
    }

    /// Stops Redis (the store becomes unreachable).
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
