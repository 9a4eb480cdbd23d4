//! The access log, read from the binary's stderr: one line per finished call, JSON or text,
//! with the contract's keys; no colour codes when stderr is not a terminal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use tonic::Code;

use crate::support::daemon::Daemon;
use crate::support::*;

const KEYS: [&str; 17] = [
    "time",
    "request_id",
    "peer",
    "listener",
    "protocol",
    "http_method",
    "path",
    "grpc_service",
    "grpc_method",
    "grpc_code",
    "http_status",
    "duration_ms",
    "bytes_in",
    "bytes_out",
    "upstream",
    "endpoint",
    "user_agent",
];

fn start(name: &str, backend: &str, format: &str) -> (Daemon, std::net::SocketAddr) {
    let dir = temp_dir(name);
    let file = dir.join("config.yaml");
    let yaml = format!(
        "access_log: {{ enabled: true, format: {format} }}\nlisteners:\n  - address: 127.0.0.1:0\n    name: edge\nupstreams:\n  - name: backend\n    endpoints: [\"{backend}\"]\nroutes:\n  - match: {{ prefix: / }}\n    upstream: backend\n"
    );
    std::fs::write(&file, yaml).unwrap();
    let mut proc = Daemon::switchboard(&["--config", file.to_str().unwrap()], &dir);
    let addr = proc.logged_addr("listening");
    (proc, addr)
}

/// Waits (off the runtime's threads) for a stderr line containing `want`.
async fn line(proc: Daemon, want: String) -> (Daemon, String) {
    tokio::task::spawn_blocking(move || {
        let mut proc = proc;
        let l = proc.wait_line(Duration::from_secs(20), |l| l.contains(&want));
        (proc, l)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_every_key() {
    let backend = spawn_backend().await;
    let (proc, addr) = start("access-json", &backend.url, "json");
    let headers = [
        ("x-request-id", "req-42"),
        ("user-agent", "tests/1.0 (linux)"),
    ];
    web_call(
        addr,
        Http::H1,
        GRPC_WEB_PROTO,
        UNARY,
        &echo("hello"),
        &headers,
    )
    .await
    .assert_ok();
    let (proc, text) = line(proc, "\"req-42\"".into()).await;
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, KEYS, "{text}");
    let body_len = frame(&echo("hello")).len() as u64;
    assert_eq!(v["request_id"], "req-42");
    assert_eq!(v["listener"], "edge");
    assert_eq!(v["protocol"], "grpc_web");
    assert_eq!(v["http_method"], "POST");
    assert_eq!(v["path"], UNARY);
    assert_eq!(v["grpc_service"], "switchboard.testing.v1.TestService");
    assert_eq!(v["grpc_method"], "Unary");
    assert_eq!(v["grpc_code"], "OK");
    assert_eq!(v["http_status"], 200);
    assert_eq!(v["bytes_in"], body_len);
    assert!(v["bytes_out"].as_u64().unwrap() > 0, "{text}");
    assert!(v["duration_ms"].as_f64().unwrap() > 0.0, "{text}");
    assert_eq!(v["upstream"], "backend");
    assert_eq!(v["endpoint"], backend.addr.to_string());
    assert_eq!(v["user_agent"], "tests/1.0 (linux)");
    assert!(
        v["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{text}"
    );
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{text}");

    // A failing call, with a generated request id (returned to the caller).
    let failing = EchoRequest {
        error: Some(ErrorSpec {
            code: Code::Unavailable as i32,
            message: "down".into(),
            with_details: false,
        }),
        ..echo("x")
    };
    let reply = web_call(addr, Http::H2, GRPC_WEB_TEXT, UNARY, &failing, &[]).await;
    assert_eq!(reply.code(), Code::Unavailable);
    let id = reply.header("x-request-id").unwrap().to_owned();
    let (proc, text) = line(proc, format!("\"{id}\"")).await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["grpc_code"], "UNAVAILABLE", "{text}");
    assert_eq!(v["protocol"], "grpc_web_text", "{text}");
    assert!(
        !proc.output().contains('\u{1b}'),
        "colour codes in a pipe:\n{}",
        proc.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_are_key_value_pairs() {
    let backend = spawn_backend().await;
    let (proc, addr) = start("access-text", &backend.url, "text");
    let headers = [("x-request-id", "req-7")];
    web_call(addr, Http::H1, GRPC_WEB_PROTO, UNARY, &echo("x"), &headers)
        .await
        .assert_ok();
    let (proc, text) = line(proc, "request_id=req-7".into()).await;
    assert!(text.starts_with("time="), "{text}");
    let keys: Vec<&str> = text
        .split(' ')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
        .collect();
    assert_eq!(keys, KEYS, "{text}");
    for want in [
        "listener=edge",
        "protocol=grpc_web",
        "grpc_code=OK",
        "http_status=200",
        "upstream=backend",
        "grpc_method=Unary",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(!proc.output().contains('\u{1b}'), "{}", proc.output());
}
