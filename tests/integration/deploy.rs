//! What ships for deployment: `switchboard healthcheck` (the container's probe) against a real
//! HTTP server, `switchboard check` on the config in deploy/kubernetes/configmap.yaml, and
//! the manifests and Dockerfile agreeing with that config (probe and listener ports, the
//! preStop sleep and `shutdown.delay`, the grace period). Schema validation and the Helm
//! chart's rendering run in scripts/validate-deploy.sh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_yaml::Value;
use switchboard::config::Config;
use tokio::net::TcpListener;

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A one-document YAML file of the repository.
fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The switchboard.yaml held by the ConfigMap.
fn configmap_config() -> String {
    yaml("deploy/kubernetes/configmap.yaml")["data"]["switchboard.yaml"]
        .as_str()
        .expect("configmap.yaml has data.switchboard.yaml")
        .to_owned()
}

// --- switchboard healthcheck -----------------------------------------------------------------

/// An HTTP/1.1 server (hyper) answering 200 on /readyz and 503 anywhere else.
async fn spawn_status_server() -> (String, AbortOnDrop) {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let answer = |req: Request<Incoming>| async move {
                    let status = if req.uri().path() == "/readyz" {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    let mut res = Response::new(Full::new(Bytes::from_static(b"status\n")));
                    *res.status_mut() = status;
                    Ok::<_, Infallible>(res)
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(answer))
                    .await;
            });
        }
    });
    (format!("http://{addr}"), AbortOnDrop(task))
}

/// Runs `switchboard healthcheck ARGS` to completion.
async fn healthcheck(args: Vec<String>) -> std::process::Output {
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("healthcheck")
            .args(&args)
            .output()
            .expect("run switchboard healthcheck")
    });
    guard("switchboard healthcheck", out).await.unwrap()
}

#[tokio::test]
async fn healthcheck_exits_0_on_a_2xx_answer_and_1_otherwise() {
    let (url, _server) = spawn_status_server().await;

    let out = healthcheck(vec!["--url".into(), format!("{url}/readyz")]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("200 OK"),
        "{out:?}"
    );

    let out = healthcheck(vec!["--url".into(), format!("{url}/draining")]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("503"),
        "{out:?}"
    );

    let closed = format!("http://{}/readyz", closed_port());
    let out = healthcheck(vec![
        "--url".into(),
        closed,
        "--timeout".into(),
        "1s".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test]
async fn healthcheck_gives_up_on_a_silent_server_at_its_timeout() {
    // Connections are accepted by the kernel and never answered.
    let silent = std::net::TcpListener::bind(loopback()).unwrap();
    let url = format!("http://{}/readyz", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let out = healthcheck(vec![
        "--url".into(),
        url,
        "--timeout".into(),
        "300ms".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{out:?}");
}

// --- deploy/ --------------------------------------------------------------------------------

#[test]
fn check_accepts_the_configmaps_config() {
    let path = temp_dir("configmap").join("switchboard.yaml");
    std::fs::write(&path, configmap_config()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The seconds of a whole-second config duration such as `5s`.
fn seconds(d: Duration) -> u64 {
    assert_eq!(d.subsec_nanos(), 0, "{d:?} is not whole seconds");
    d.as_secs()
}

#[test]
fn manifests_agree_with_the_config() {
    let config = Config::from_yaml(&configmap_config(), "configmap.yaml").unwrap();
    let admin_port = config
        .admin
        .as_ref()
        .expect("admin is configured")
        .address
        .port();
    let http_port = config.listeners[0].address.port();

    let deployment = yaml("deploy/kubernetes/deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port_named = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    assert_eq!(port_named("admin"), u64::from(admin_port));
    assert_eq!(port_named("http"), u64::from(http_port));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "admin", "{probe}");
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");

    // The preStop sleep matches shutdown.delay, and the grace period holds the sleep, the
    // delay and the whole drain.
    let sleep = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let delay = seconds(config.shutdown.delay);
    assert_eq!(sleep, delay, "preStop sleep vs shutdown.delay");
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > sleep + delay + seconds(config.shutdown.drain_timeout),
        "terminationGracePeriodSeconds {grace} is too short"
    );

    // The config is mounted as a directory, so ConfigMap edits reach the pod.
    let mount = &container["volumeMounts"][0];
    assert!(mount.get("subPath").is_none(), "{mount:?}");
    let config_arg = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .and_then(Value::as_str)
        .unwrap();
    assert!(
        config_arg.starts_with(mount["mountPath"].as_str().unwrap()),
        "{config_arg}"
    );

    // The Service exposes the listener, never the admin port.
    let service = yaml("deploy/kubernetes/service.yaml");
    let targets: Vec<&Value> = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| &p["targetPort"])
        .collect();
    assert_eq!(targets, [&Value::from("http")]);

    // The image probes the same admin port and exposes both.
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains(&format!("http://127.0.0.1:{admin_port}/readyz")),
        "HEALTHCHECK must probe the admin port {admin_port}"
    );
    assert!(dockerfile.contains(&format!("EXPOSE {http_port} {admin_port}")));
}
