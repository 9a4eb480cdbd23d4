//! Reloading the config: streams in flight finish on the old config, new calls take the new
//! routes, upstreams, CORS and listeners, unchanged upstreams keep their connections, a broken
//! file keeps the old config; `watch: true` follows a ConfigMap's symlink swap; SIGHUP reloads
//! the file, logs a refusal with its key and line, and never stops quick mode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{Method, Request, StatusCode};

use crate::support::admin::{count, metrics_until};
use crate::support::client::empty;
use crate::support::daemon::Daemon;
use crate::support::*;

/// Listeners, CORS, two upstreams `a` and `b`, and every call routed to `to`.
fn config(listeners: &[&str], origin: &str, a: &str, b: &str, to: &str) -> String {
    let mut y = String::from("listeners:\n");
    for l in listeners {
        y.push_str(&format!("  - address: {l}\n"));
    }
    y.push_str(&format!(
        "cors:\n  allow_origins: [\"{origin}\"]\nupstreams:\n  - name: a\n    endpoints: [\"{a}\"]\n  - name: b\n    endpoints: [\"{b}\"]\nroutes:\n  - match: {{ prefix: / }}\n    upstream: {to}\n"
    ));
    y
}

async fn preflight(addr: SocketAddr, origin: &str) -> StatusCode {
    let mut c = Client::connect(addr, Http::H1).await;
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri(UNARY)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .body(empty())
        .unwrap();
    c.send(req).await.status
}

async fn unary(addr: SocketAddr) {
    web_call(addr, Http::H2, GRPC_WEB_PROTO, UNARY, &echo("x"), &[])
        .await
        .assert_ok();
}

#[tokio::test]
async fn a_reload_changes_new_calls_and_spares_calls_in_flight() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let dir = temp_dir("reload");
    let file = dir.join("config.yaml");
    let one = "127.0.0.1:0";
    std::fs::write(
        &file,
        config(&[one], "https://old.example", &a.url, &b.url, "a"),
    )
    .unwrap();
    let proxy = spawn_proxy_config(switchboard::config::Config::load(&file).unwrap()).await;
    let control = proxy.running.control().clone();
    let first = proxy.addr;

    // A stream in flight on the old config, and a call that opens a connection to `a`.
    unary(first).await;
    let mut c = Client::connect(first, Http::H2).await;
    let req = web_request(
        SERVER_STREAM,
        GRPC_WEB_PROTO,
        &frame(&EchoRequest {
            count: 3,
            ..echo(GATED)
        }),
    );
    let mut stream = c.send(req).await.web_stream();
    assert_eq!(guard("first message", stream.next_message()).await.index, 0);
    assert_eq!(a.state.connections.get(), 1);
    assert_eq!(
        preflight(first, "https://old.example").await,
        StatusCode::NO_CONTENT
    );

    // New: routes to `b`, another origin, a second listener (the first one is kept: same
    // address as written).
    let fixed = closed_port().to_string();
    std::fs::write(
        &file,
        config(&[one, &fixed], "https://new.example", &a.url, &b.url, "b"),
    )
    .unwrap();
    let outcome = guard("reload", control.reload()).await.unwrap();
    assert_eq!(outcome, switchboard::server::ReloadOutcome::Applied);
    let addrs = control.addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    let second: SocketAddr = fixed.parse().unwrap();
    assert!(
        addrs.contains(&first) && addrs.contains(&second),
        "{addrs:?}"
    );

    unary(first).await;
    unary(second).await;
    assert_eq!(b.state.calls.get(), 2);
    assert_eq!(
        preflight(first, "https://new.example").await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        preflight(first, "https://old.example").await,
        StatusCode::FORBIDDEN
    );

    // The stream goes on and ends on the config it started with.
    backend_gate(&a, 2);
    assert_eq!(
        guard("second message", stream.next_message()).await.index,
        1
    );
    assert_eq!(guard("third message", stream.next_message()).await.index, 2);
    guard("stream end", stream.finish()).await.assert_ok();

    // Back to `a` and without the second listener: `a` kept its settings, so its connection.
    std::fs::write(
        &file,
        config(&[one], "https://new.example", &a.url, &b.url, "a"),
    )
    .unwrap();
    guard("reload", control.reload()).await.unwrap();
    unary(first).await;
    assert_eq!(
        a.state.connections.get(),
        1,
        "the unchanged upstream reconnected"
    );
    assert_eq!(control.addrs(), vec![first]);
    let refused = guard("removed listener", async {
        loop {
            match tokio::net::TcpStream::connect(second).await {
                Err(_) => break,
                // Accepted by the closing socket's backlog just before it closed: try again.
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    let () = refused;

    // A broken file: refused, the old config stays.
    std::fs::write(&file, "listeners: [\n").unwrap();
    let err = guard("reload", control.reload()).await.unwrap_err();
    assert!(err.contains(&file.display().to_string()), "{err}");
    unary(first).await;
    assert_eq!(a.state.calls.get(), 4);
}

fn backend_gate(b: &Backend, n: usize) {
    b.state.open_gate(n);
}

/// Makes `dir` look like a Kubernetes ConfigMap volume holding `content` as config.yaml:
/// `config.yaml -> ..data/config.yaml`, `..data -> ..<version>`, swapped atomically by
/// renaming a new symlink over `..data`.
fn configmap_version(dir: &Path, version: &str, content: &str) {
    let v = dir.join(format!("..{version}"));
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("config.yaml"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    let link = dir.join("config.yaml");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink("..data/config.yaml", &link).unwrap();
    }
}

#[tokio::test]
async fn watch_follows_a_configmap_symlink_swap() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let dir = temp_dir("watch");
    let head = "watch: true\nadmin: { address: 127.0.0.1:0 }\n";
    configmap_version(
        &dir,
        "v1",
        &format!(
            "{head}{}",
            config(&["127.0.0.1:0"], "*", &a.url, &b.url, "a")
        ),
    );
    let loaded = switchboard::config::Config::load(&dir.join("config.yaml")).unwrap();
    let proxy = spawn_proxy_config(loaded).await;
    let admin = proxy.running.admin_addr().unwrap();
    unary(proxy.addr).await;
    assert_eq!(a.state.calls.get(), 1);

    configmap_version(
        &dir,
        "v2",
        &format!(
            "{head}{}",
            config(&["127.0.0.1:0"], "*", &a.url, &b.url, "b")
        ),
    );
    metrics_until(admin, "the swap reloaded", |t| {
        count(t, "switchboard_reloads_total", &[("result", "applied")]) == 1.0
    })
    .await;
    unary(proxy.addr).await;
    assert_eq!((a.state.calls.get(), b.state.calls.get()), (1, 1));

    // A broken version is refused and counted; calls keep going to `b`.
    configmap_version(&dir, "v3", "listeners: [\n");
    metrics_until(admin, "the broken swap refused", |t| {
        count(t, "switchboard_reloads_total", &[("result", "refused")]) == 1.0
    })
    .await;
    unary(proxy.addr).await;
    assert_eq!(b.state.calls.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_logs_a_refusal_with_key_and_line() {
    let a = spawn_backend().await;
    let b = spawn_backend().await;
    let dir = temp_dir("sighup");
    let file = dir.join("config.yaml");
    std::fs::write(&file, config(&["127.0.0.1:0"], "*", &a.url, &b.url, "a")).unwrap();
    let mut proc = Daemon::switchboard(&["--config", file.to_str().unwrap()], &dir);
    let addr = proc.logged_addr("listening");
    unary(addr).await;
    assert_eq!(a.state.calls.get(), 1);

    let broken = config(&["127.0.0.1:0"], "*", &a.url, &b.url, "nowhere");
    let line = broken.lines().position(|l| l.contains("nowhere")).unwrap() + 1;
    std::fs::write(&file, &broken).unwrap();
    proc.signal("HUP");
    let logged = proc.wait_line(Duration::from_secs(20), |l| l.contains("reload refused"));
    assert!(
        logged.contains("routes[0].upstream") && logged.contains(&format!("config.yaml:{line}:")),
        "{logged}"
    );
    assert!(logged.contains(&format!("line={line}")), "{logged}");
    unary(addr).await;
    assert_eq!(a.state.calls.get(), 2);

    std::fs::write(&file, config(&["127.0.0.1:0"], "*", &a.url, &b.url, "b")).unwrap();
    proc.signal("HUP");
    proc.wait_line(Duration::from_secs(20), |l| l.contains("config reloaded"));
    unary(addr).await;
    assert_eq!(b.state.calls.get(), 1);
    assert!(proc.running());
    proc.signal("TERM");
    assert!(
        proc.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        proc.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_in_quick_mode_never_exits() {
    let backend = spawn_backend().await;
    let dir = temp_dir("sighup-quick");
    let mut proc = Daemon::switchboard(
        &["--listen", "127.0.0.1:0", "--upstream", &backend.url],
        &dir,
    );
    let addr = proc.logged_addr("listening");
    for _ in 0..3 {
        proc.signal("HUP");
        proc.wait_line(Duration::from_secs(20), |l| l.contains("nothing to reload"));
    }
    assert!(proc.running(), "{}", proc.output());
    unary(addr).await;
    proc.signal("TERM");
    assert!(
        proc.wait_exit(Duration::from_secs(20)).success(),
        "{}",
        proc.output()
    );
}
