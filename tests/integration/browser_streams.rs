//! Request streams from Chromium, with the real clients:
//!
//! - a streaming upload (fetch with a ReadableStream body, `duplex: "half"`, which Chromium sends
//!   only over HTTP/2, so to a TLS listener) in Connect and in gRPC-Web is forwarded message by
//!   message: the page sends each message only after the backend has received the one before
//!   (`tests/browser/upload.mjs`; the backend is in this process and reports each message).
//!
//! Needs Node, playwright-core in tests/browser and Debian's chromium (scripts/test.sh installs
//! them); without them the test fails, unless `SWITCHBOARD_SKIP_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{self, process, spawn_backend, spawn_proxy_yaml, tls};

/// A whole browser run; every step inside has its own, shorter limit.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn browser_present(what: &str) -> bool {
    crate::demo::prerequisites(
        what,
        &[
            (
                &browser_dir().join("node_modules/playwright-core/package.json"),
                "playwright-core is not installed in tests/browser",
            ),
            (
                &chromium(),
                "Chromium is not installed (Debian: apt-get install chromium; or set CHROMIUM)",
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_streaming_uploads_over_http2_go_up_message_by_message() {
    if !browser_present("the streaming upload browser test") {
        return;
    }
    let backend = spawn_backend().await;
    let cert = tls::test_cert("browser-upload");
    let yaml = support::one_upstream_yaml(&backend.url, &[], &[]).replace(
        "  - address: 127.0.0.1:0\n",
        &format!(
            "  - address: 127.0.0.1:0\n    tls: {{ cert: {}, key: {} }}\n",
            cert.cert_path.display(),
            cert.key_path.display()
        ),
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let url = format!("https://127.0.0.1:{}", proxy.addr.port());
    let state = backend.state.clone();
    let rt = tokio::runtime::Handle::current();
    let out = tokio::task::spawn_blocking(move || {
        process::run_conversation(
            "node",
            &["upload.mjs", "--url", &url],
            &browser_dir(),
            SCRIPT_TIMEOUT,
            move |line| {
                let mut words = line.split_whitespace();
                let (Some("WAIT"), Some(_protocol), Some(n)) =
                    (words.next(), words.next(), words.next())
                else {
                    return None;
                };
                let n: usize = n.parse().ok()?;
                // The browser holds its next message back until the backend has n of them.
                let seen = rt.block_on(state.received.reaches(n, Duration::from_secs(10)));
                Some(if seen { "GO" } else { "TIMEOUT" }.to_owned())
            },
        )
    })
    .await
    .expect("runner thread panicked");
    let report = format!(
        "---- browser tests/browser/upload.mjs ----\n{}{}---- end of upload.mjs ----\n",
        out.stdout, out.stderr
    );
    let _ = std::io::stderr().write_all(report.as_bytes());
    assert!(
        out.success,
        "upload.mjs failed ({}); its output is above",
        out.status
    );
    assert_eq!(backend.state.uploads.get(), 2, "both uploads completed");
}
