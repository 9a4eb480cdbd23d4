//! The admin listener: probes, the effective config (redacted), reload and drain over HTTP,
//! and `grpc.health.v1.Health` checked by grpcio's health client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;

use crate::support::admin::{count, get, metrics, post};
use crate::support::daemon::Daemon;
use crate::support::*;

/// An API key hash (SHA-256, hex) in the config: shown nowhere.
const KEY_HASH: &str = "e3e0ea2b1a2c4aa0a0d36ad9b8b1b4e0f21bf1d63d7d8d8e2f4d8b5b4d0b9a11";

#[tokio::test]
async fn probes_config_and_wrong_requests() {
    let backend = spawn_backend().await;
    let cert = tls::test_cert("admin-config");
    let yaml = format!(
        r#"admin: {{ address: 127.0.0.1:0 }}
rate_limit_store: "redis://switchboard:hunter2@127.0.0.1:6379/0"
listeners:
  - address: 127.0.0.1:0
    tls: {{ cert: "{}", key: "{}" }}
upstreams:
  - name: backend
    endpoints: ["{}"]
routes:
  - match: {{ prefix: / }}
    upstream: backend
    auth: {{ api_key: {{ keys: ["{KEY_HASH}"] }} }}
"#,
        cert.cert_path.display(),
        cert.key_path.display(),
        backend.url
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let admin = proxy.running.admin_addr().unwrap();
    assert_ne!(admin, proxy.addr);

    let a = get(admin, "/healthz").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ok\n"));
    let a = get(admin, "/readyz").await;
    assert_eq!((a.status, a.body.as_str()), (StatusCode::OK, "ready\n"));

    // The effective config: JSON by default, YAML on request; no secret, no key path.
    let key_path = cert.key_path.display().to_string();
    let a = get(admin, "/config").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    let json: Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(json["upstreams"][0]["name"], "backend");
    assert_eq!(
        json["listeners"][0]["tls"]["cert"],
        cert.cert_path.display().to_string()
    );
    assert_eq!(json["listeners"][0]["tls"]["key"], "<redacted>");
    let yaml = get(admin, "/config?format=yaml").await;
    assert_eq!(yaml.status, StatusCode::OK);
    assert!(
        yaml.body.contains("upstreams:") && yaml.body.contains("name: backend"),
        "{}",
        yaml.body
    );
    for body in [&a.body, &yaml.body] {
        for secret in [key_path.as_str(), "hunter2", KEY_HASH] {
            assert!(!body.contains(secret), "{secret} shown:\n{body}");
        }
    }

    // Wrong paths and methods.
    assert_eq!(get(admin, "/nope").await.status, StatusCode::NOT_FOUND);
    let a = post(admin, "/healthz").await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.headers["allow"], "GET");
    assert_eq!(
        get(admin, "/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        get(admin, "/drain").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(proxy.running.control().is_ready());
}

#[tokio::test]
async fn the_admin_port_is_only_the_admin_port() {
    let backend = spawn_backend().await;
    let mut config = switchboard::config::Config::quick(loopback(), &backend.url, vec![]).unwrap();
    config.admin = Some(switchboard::config::Admin {
        address: loopback(),
    });
    let proxy = spawn_proxy_config(config).await;
    // The proxy's listener does not answer admin paths.
    let a = get(proxy.addr, "/healthz").await;
    assert_ne!((a.status, a.body.as_str()), (StatusCode::OK, "ok\n"));
    let a = post(proxy.addr, "/drain").await;
    assert_ne!(a.status, StatusCode::OK);
    assert!(proxy.running.control().is_ready());
}

fn health_client(mode: &str, addr: std::net::SocketAddr) -> Daemon {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop");
    Daemon::start(
        "python3",
        &["health_check.py", mode, &addr.to_string()],
        &dir,
        &[],
    )
}

#[tokio::test]
async fn grpc_health_serves_until_a_drain_and_watch_sees_it() {
    let backend = spawn_backend().await;
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\n{}",
        one_upstream_yaml(&backend.url, &[], &[])
    );
    let proxy = spawn_proxy_yaml(&yaml).await;
    let admin = proxy.running.admin_addr().unwrap();

    let mut check = health_client("check", admin);
    let line = tokio::task::spawn_blocking(move || {
        let line = check.wait_line(Duration::from_secs(20), |_| true);
        (line, check.wait_exit(Duration::from_secs(20)))
    })
    .await
    .unwrap();
    assert_eq!(line.0, "SERVING");
    assert!(line.1.success());

    // Watch from before the drain: it streams SERVING, then NOT_SERVING.
    let mut watch = health_client("watch", admin);
    let mut watch = tokio::task::spawn_blocking(move || {
        assert_eq!(
            watch.wait_line(Duration::from_secs(20), |_| true),
            "SERVING"
        );
        watch
    })
    .await
    .unwrap();
    let a = post(admin, "/drain").await;
    assert_eq!(a.status, StatusCode::OK);
    let a = get(admin, "/readyz").await;
    assert_eq!(
        (a.status, a.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    );
    let status = tokio::task::spawn_blocking(move || {
        let line = watch.wait_line(Duration::from_secs(20), |_| true);
        (line, watch.wait_exit(Duration::from_secs(20)))
    })
    .await
    .unwrap();
    assert_eq!(status.0, "NOT_SERVING");
    assert!(status.1.success());
    let mut check = health_client("check", admin);
    let line =
        tokio::task::spawn_blocking(move || check.wait_line(Duration::from_secs(20), |_| true))
            .await
            .unwrap();
    assert_eq!(line, "NOT_SERVING");
}

#[tokio::test]
async fn reload_over_http_answers_200_or_400_with_the_location() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let dir = temp_dir("admin-reload");
    let file = dir.join("config.yaml");
    let admin_line = "admin: { address: 127.0.0.1:0 }\n";
    std::fs::write(
        &file,
        format!("{admin_line}{}", one_upstream_yaml(&a.url, &[], &[])),
    )
    .unwrap();
    let config = switchboard::config::Config::load(&file).unwrap();
    let proxy = spawn_proxy_config(config).await;
    let admin = proxy.running.admin_addr().unwrap();
    web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("a"), &[])
        .await
        .assert_ok();
    assert_eq!(a.state.calls.get(), 1);

    // A good file: 200 once the new config is in use.
    std::fs::write(
        &file,
        format!("{admin_line}{}", one_upstream_yaml(&b.url, &[], &[])),
    )
    .unwrap();
    let r = post(admin, "/reload").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("b"), &[])
        .await
        .assert_ok();
    assert_eq!((a.state.calls.get(), b.state.calls.get()), (1, 1));

    // A broken file: 400 naming file, line, column and key; the old config stays.
    let broken = format!("{admin_line}{}", one_upstream_yaml(&b.url, &[], &[]))
        .replace("upstream: backend", "upstream: nowhere");
    std::fs::write(&file, &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("nowhere")).unwrap() + 1;
    let r = post(admin, "/reload").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let want = format!("{}:{line}:", file.display());
    assert!(
        r.body.contains(&want) && r.body.contains("routes[0].upstream"),
        "{want} in {}",
        r.body
    );
    web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("b"), &[])
        .await
        .assert_ok();
    assert_eq!(b.state.calls.get(), 2);

    let text = metrics(admin).await;
    assert_eq!(
        count(&text, "switchboard_reloads_total", &[("result", "applied")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(&text, "switchboard_reloads_total", &[("result", "refused")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        count(&text, "switchboard_config_errors_total", &[]),
        1.0,
        "{text}"
    );
}

#[tokio::test]
async fn reload_in_quick_mode_changes_nothing() {
    let backend = spawn_backend().await;
    let mut config = switchboard::config::Config::quick(loopback(), &backend.url, vec![]).unwrap();
    config.admin = Some(switchboard::config::Admin {
        address: loopback(),
    });
    let proxy = spawn_proxy_config(config).await;
    let admin = proxy.running.admin_addr().unwrap();
    let r = post(admin, "/reload").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.contains("nothing to reload"), "{}", r.body);
    web_call(proxy.addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("a"), &[])
        .await
        .assert_ok();
}
