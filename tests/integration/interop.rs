//! Interop: third-party clients against the proxy in front of the tonic test backend.
//!
//! The clients live in `tests/interop/` (a small npm package, installed by `scripts/test.sh`):
//! - `clients.mjs`: `@connectrpc/connect-node` transports (gRPC-Web and Connect over HTTP/1.1
//!   and HTTP/2, protobuf; with `--json` also their JSON forms, run against a proxy that
//!   transcodes with descriptors from the backend's server reflection),
//! - `buf-curl.mjs`: `buf curl` with `--protocol grpcweb` and `--protocol grpc`.
//!
//! Each script prints one PASS/FAIL line per case and exits non-zero if any failed. Both read
//! the service schema from the descriptor set that build.rs writes, so nothing is generated.
//! Without `tests/interop/node_modules` these tests fail, unless `SWITCHBOARD_SKIP_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::support;
use crate::support::backend::TESTING_DESCRIPTOR;
use crate::support::process::{interop_dir, may_run, node_missing};
/// A whole script; every case inside has its own, shorter limit.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_clients() {
    run_against_proxy("clients.mjs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buf_curl() {
    run_against_proxy("buf-curl.mjs").await;
}

/// The JSON transports of `clients.mjs` (Connect JSON, Connect GET with JSON, gRPC-Web JSON):
/// the backend speaks protobuf only, so the proxy transcodes with the schema it gets from the
/// backend's server reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_node_json_clients() {
    if !prerequisites_present() {
        return;
    }
    let (backend, reflection) =
        support::backend::spawn_backend_with_reflection(support::backend::ReflectionVersion::V1)
            .await;
    let yaml = support::one_upstream_yaml(&backend.url, &["json: { reflection: true }"], &[]);
    let proxy = support::spawn_proxy_yaml(&yaml).await;
    run_script("clients.mjs", &proxy.url, &["--json", "--only", "json-"]).await;
    assert!(
        reflection.calls.get() > 0,
        "the proxy never asked the backend's server reflection"
    );
    drop(proxy);
    drop(backend);
}

/// Starts the backend and the proxy, runs `node tests/interop/SCRIPT`, asserts it passed.
async fn run_against_proxy(script: &str) {
    if !prerequisites_present() {
        return;
    }
    let backend = support::spawn_backend().await;
    let proxy = support::spawn_proxy(&backend.url).await;
    run_script(script, &proxy.url, &[]).await;
    drop(proxy);
    drop(backend);
}

/// Runs `node tests/interop/SCRIPT --url URL --descriptor … EXTRA…`, asserts it passed.
pub(crate) async fn run_script(script: &str, url: &str, extra: &[&str]) {
    let script_path = interop_dir().join(script);
    let mut args = vec![
        script_path.display().to_string(),
        "--url".to_owned(),
        url.trim_end_matches('/').to_owned(),
        "--descriptor".to_owned(),
        TESTING_DESCRIPTOR.to_owned(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let out = tokio::task::spawn_blocking(move || {
        support::process::run("node", &args, &interop_dir(), SCRIPT_TIMEOUT)
    })
    .await
    .expect("runner thread panicked");
    out.show(&format!("interop {script}"), script);
    assert!(
        out.success,
        "{script} failed ({}); its output is above",
        out.status
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("PASS ")),
        "{script} ran no case"
    );
}

/// True when node and the npm packages are there (see [`may_run`]).
pub(crate) fn prerequisites_present() -> bool {
    let modules = interop_dir().join("node_modules");
    let missing = node_missing(&[
        (
            &modules.join("@connectrpc/connect-node/package.json"),
            "the interop clients are not installed",
        ),
        (
            &modules.join(".bin/buf"),
            "the interop clients are not installed",
        ),
    ]);
    may_run("interop test", missing)
}
