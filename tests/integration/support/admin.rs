//! The admin port from a test: plain HTTP/1.1 requests, samples read from the Prometheus
//! text, and the real `promtool` checking it.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Method, Request, StatusCode};

use super::client::{empty, Client, Http};

/// A whole admin answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// One admin request on a fresh HTTP/1.1 connection.
pub(crate) async fn request(addr: SocketAddr, method: Method, path: &str) -> Answer {
    let mut c = Client::connect(addr, Http::H1).await;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .body(empty())
        .unwrap();
    let reply = c.send(req).await;
    let status = reply.status;
    let headers = reply.headers.clone();
    let body = String::from_utf8(reply.bytes().await.to_vec()).unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// GET `path`.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, Method::GET, path).await
}

/// POST `path` (no body).
pub(crate) async fn post(addr: SocketAddr, path: &str) -> Answer {
    request(addr, Method::POST, path).await
}

/// GET /metrics, checked to be 200.
pub(crate) async fn metrics(addr: SocketAddr) -> String {
    let a = get(addr, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

/// The value of the sample of `name` whose labels include all of `labels`; none when there
/// is no such sample. Panics when several match (the test's labels are not specific enough).
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once("} ") else {
                continue;
            };
            (l, v)
        } else if let Some(v) = rest.strip_prefix(' ') {
            ("", v)
        } else {
            continue;
        };
        let all = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if all {
            assert!(
                found.is_none(),
                "several samples of {name} match {labels:?}:\n{text}"
            );
            found = Some(value.trim().parse::<f64>().unwrap());
        }
    }
    found
}

/// Like [`sample`], 0 when absent.
pub(crate) fn count(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

/// Runs `promtool check metrics` on `text`; panics with its output unless it exits 0.
pub(crate) fn promtool_check(text: &str) {
    let dir = super::temp_dir("promtool");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = super::process::run(
        "sh",
        &[
            "-c",
            &format!("promtool check metrics < {}", file.display()),
        ],
        &dir,
        Duration::from_secs(30),
    );
    assert!(
        out.success,
        "promtool check metrics: {}\n{}{}\n--- text ---\n{text}",
        out.status, out.stdout, out.stderr
    );
}

/// Polls `check` on the admin metrics until it holds (metrics of a call are recorded when the
/// call's last holder lets go, just after the caller has read the end).
pub(crate) async fn metrics_until(
    addr: SocketAddr,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + super::GUARD;
    loop {
        let text = metrics(addr).await;
        if check(&text) {
            return text;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("metrics never showed {what}:\n{text}");
        }
        // Nothing signals "recorded" to an outside scraper: poll, briefly.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
