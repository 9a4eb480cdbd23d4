//! Configuration: loading, error messages, units, `switchboard check`, and what a config does
//! once running (routing, listeners, shutdown).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use switchboard::config::Config;

use crate::support::*;

/// A valid config; the line numbers matter to the error table below.
const GOOD: &str = "listeners:
  - address: 127.0.0.1:0
cors:
  allow_origins: [\"https://app.example.com\"]
  max_age: 10m
upstreams:
  - name: backend
    endpoints: [\"http://127.0.0.1:50051\"]
    timeout: 30s
    max_message_size: 4MiB
routes:
  - match: { service: switchboard.testing.v1.TestService }
    upstream: backend
    timeout: 5s
";

fn check(path: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run switchboard check")
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let path = temp_dir(name).join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn good_config_parses_into_the_runtime_model() {
    let c = Config::from_yaml(GOOD, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.cors.max_age, Duration::from_secs(600));
    assert_eq!(c.upstreams[0].name, "backend");
    assert_eq!(c.upstreams[0].timeout, Some(Duration::from_secs(30)));
    assert_eq!(c.upstreams[0].max_message_size, 4 << 20);
    assert_eq!(c.routes.len(), 1);
    assert_eq!(c.routes[0].timeout, Some(Duration::from_secs(5)));
}

#[test]
fn config_errors_name_the_file_line_and_key() {
    // (what is wrong, replace this, with this, key path, line)
    let table = [
        (
            "unknown top-level key",
            "routes:",
            "retries: 3\nroutes:",
            "retries",
            11,
        ),
        (
            "unknown nested key",
            "    timeout: 30s\n",
            "    timeout: 30s\n    retries: 3\n",
            "upstreams[0]",
            10,
        ),
        (
            "unknown match key",
            "{ service:",
            "{ servce:",
            "routes[0].match",
            12,
        ),
        (
            "unknown upstream",
            "    upstream: backend",
            "    upstream: nope",
            "routes[0].upstream",
            13,
        ),
        (
            "bad duration",
            "timeout: 30s",
            "timeout: 30 seconds",
            "upstreams[0].timeout",
            9,
        ),
        (
            "bad route duration",
            "timeout: 5s",
            "timeout: 5x",
            "routes[0].timeout",
            14,
        ),
        (
            "bad max_age",
            "max_age: 10m",
            "max_age: soon",
            "cors.max_age",
            5,
        ),
        (
            "bad size",
            "4MiB",
            "4 bananas",
            "upstreams[0].max_message_size",
            10,
        ),
        (
            "address without port",
            "127.0.0.1:0",
            "localhost",
            "listeners[0].address",
            2,
        ),
        (
            "port out of range",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "listeners[0].address",
            2,
        ),
        (
            "endpoint without scheme",
            "\"http://127.0.0.1:50051\"",
            "\"127.0.0.1:50051\"",
            "upstreams[0].endpoints[0]",
            8,
        ),
    ];
    for (what, from, to, key, line) in table {
        assert!(
            GOOD.contains(from),
            "{what}: {from:?} not in the base config"
        );
        let text = GOOD.replacen(from, to, 1);
        let err = match Config::from_yaml(&text, "test.yaml") {
            Ok(_) => panic!("{what}: accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("test.yaml"), "{what}: file not named: {err}");
        assert!(err.contains(key), "{what}: key {key} not named: {err}");
        assert!(
            err.contains(&format!("test.yaml:{line}")),
            "{what}: line {line} not named: {err}"
        );
    }
}

#[test]
fn units_are_read_into_durations_and_sizes() {
    let durations = [
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("10m", Duration::from_secs(600)),
        ("1h", Duration::from_secs(3600)),
    ];
    for (text, want) in durations {
        let yaml = GOOD.replace("timeout: 30s", &format!("timeout: {text}"));
        let c = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.upstreams[0].timeout, Some(want), "{text}");
    }
    let sizes = [
        ("4MiB", 4 << 20),
        ("512KiB", 512 << 10),
        ("100B", 100),
        ("1024", 1024),
    ];
    for (text, want) in sizes {
        let yaml = GOOD.replace(
            "max_message_size: 4MiB",
            &format!("max_message_size: {text}"),
        );
        let c = Config::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(c.upstreams[0].max_message_size, want, "{text}");
    }
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let path = temp_dir("missing").join("nowhere.yaml");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("nowhere.yaml"), "{err}");
}

#[test]
fn quick_mode_rejects_bad_upstreams() {
    for upstream in ["ftp://127.0.0.1:1", "127.0.0.1:50051", "not a url"] {
        let r = Config::quick(loopback(), upstream, Vec::new());
        assert!(r.is_err(), "{upstream} accepted");
    }
    assert!(Config::quick(loopback(), "http://127.0.0.1:50051", vec!["*".into()]).is_ok());
}

#[test]
fn check_accepts_every_shipped_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            continue;
        }
        seen += 1;
        let out = check(&path);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(seen > 0, "no configs in {}", dir.display());
}

#[test]
fn check_rejects_a_bad_config_with_a_located_message() {
    let good = write_config("check-good", GOOD);
    let out = check(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write_config(
        "check-bad",
        &GOOD.replace("    upstream: backend", "    upstream: nope"),
    );
    let out = check(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted a bad config: {stderr}");
    assert!(
        stderr.contains("check-bad.yaml"),
        "file not named: {stderr}"
    );
    assert!(
        stderr.contains("routes[0].upstream"),
        "key not named: {stderr}"
    );
    assert!(stderr.contains(":13"), "line not named: {stderr}");
}

#[tokio::test]
async fn routes_match_by_method_service_host_and_prefix_first_match_wins() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let c = spawn_backend().await;
    let yaml = format!(
        r#"
listeners:
  - address: 127.0.0.1:0
upstreams:
  - name: a
    endpoints: ["{}"]
  - name: b
    endpoints: ["{}"]
  - name: c
    endpoints: ["{}"]
routes:
  - match: {{ method: {LOOKUP} }}
    upstream: a
  - match: {{ service: switchboard.testing.v1.TestService, host: api.example.com }}
    upstream: b
  - match: {{ prefix: /switchboard. }}
    upstream: c
"#,
        a.url, b.url, c.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let default_host = proxy.addr.to_string();
    // (path, authority, which backend must answer)
    let table = [
        (LOOKUP, default_host.as_str(), "a"),
        (LOOKUP, "api.example.com", "a"),
        (UNARY, "api.example.com", "b"),
        (UNARY, "api.example.com:8080", "b"),
        (UNARY, default_host.as_str(), "c"),
        (UNARY, "other.example.com", "c"),
    ];
    for (path, authority, want) in table {
        for http in HTTP_VERSIONS {
            let before = [
                a.state.calls.get(),
                b.state.calls.get(),
                c.state.calls.get(),
            ];
            let mut client = Client::connect(proxy.addr, http).await;
            client.authority = authority.to_owned();
            let reply = client
                .send(web_request(path, GRPC_WEB_PROTO, &frame(&echo("r"))))
                .await
                .web()
                .await;
            reply.assert_ok();
            let after = [
                a.state.calls.get(),
                b.state.calls.get(),
                c.state.calls.get(),
            ];
            let answered: Vec<&str> = ["a", "b", "c"]
                .into_iter()
                .zip(before.iter().zip(after.iter()))
                .filter(|(_, (x, y))| x != y)
                .map(|(name, _)| name)
                .collect();
            assert_eq!(answered, [want], "{path} for {authority} over {http:?}");
        }
    }
}

#[tokio::test]
async fn every_listener_serves() {
    let backend = spawn_backend().await;
    let yaml = one_upstream_yaml(&backend.url, &[], &[]).replace(
        "  - address: 127.0.0.1:0\n",
        "  - address: 127.0.0.1:0\n  - address: 127.0.0.1:0\n",
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let addrs = proxy.running.addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    for addr in addrs {
        let reply = web_call(addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("l"), &[]).await;
        assert_eq!(reply.ok_response().message, "l", "{addr}");
    }
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let backend = spawn_backend().await;
    let proxy = spawn_proxy(&backend.url).await;
    let addr = proxy.addr;
    web_call(addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("x"), &[])
        .await
        .assert_ok();
    guard("shutdown", proxy.running.shutdown()).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting on {addr} after shutdown"
    );
}
