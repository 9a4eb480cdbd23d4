//! Cross-site requests from headless Chromium (tests/browser/cross_site.mjs): pages on other
//! sites (127.0.0.2 and 127.0.0.3, so the browser marks requests to 127.0.0.1 cross-site)
//! call the proxy; only the allowed origin's CORS calls reach the backend.

use std::convert::Infallible;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message as _;
use tokio::net::TcpListener;

use super::*;

/// Serves an empty page on `ip`, port chosen by the system.
async fn page_server(ip: [u8; 4]) -> (String, AbortOnDrop) {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let page = "<!doctype html><title>another site</title><p>another site</p>";
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("content-type", "text/html; charset=utf-8")
                            .body(Full::new(Bytes::from_static(page.as_bytes())))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    (url, AbortOnDrop(task))
}

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn prerequisites() -> bool {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    if chromium.exists() && playwright.is_file() {
        return true;
    }
    if std::env::var_os("SWITCHBOARD_SKIP_INTEROP").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED the cross-site browser test: Chromium or playwright-core is missing");
        return false;
    }
    panic!("Chromium or tests/browser/node_modules is missing: run scripts/test.sh (or set SWITCHBOARD_SKIP_INTEROP=1)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_another_site_cannot_call_unless_allowed() {
    if !prerequisites() {
        return;
    }
    let (evil, _evil_server) = page_server([127, 0, 0, 2]).await;
    let (allowed, _allowed_server) = page_server([127, 0, 0, 3]).await;
    let allowed_origin = allowed.trim_end_matches('/').to_owned();
    let evil_origin = evil.trim_end_matches('/').to_owned();
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
cors: {{ allow_origins: ["{allowed_origin}"], allow_credentials: true }}
upstreams: [{{ name: backend, endpoints: ["{url}"] }}]
routes: [{{ match: {{ prefix: / }}, upstream: backend }}]
"#,
        url = backend.url
    ))
    .await;
    let message =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(echo("get").encode_to_vec());
    let get = format!("{LOOKUP}?connect=v1&encoding=proto&base64=1&message={message}");
    let web_body = base64::engine::general_purpose::STANDARD.encode(frame(&echo("post")));
    let args: Vec<String> = vec![
        "cross_site.mjs".into(),
        "--proxy".into(),
        proxy.url.clone(),
        "--page".into(),
        evil.clone(),
        "--page".into(),
        allowed.clone(),
        "--get".into(),
        get,
        "--unary".into(),
        UNARY.into(),
        "--web-body".into(),
        web_body,
    ];
    let dir = browser_dir();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::process::run("node", &args, &dir, std::time::Duration::from_secs(120))
    })
    .await
    .unwrap();
    assert!(
        out.success,
        "cross_site.mjs failed ({}):\n{}\n{}",
        out.status, out.stdout, out.stderr
    );
    let results: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    eprintln!("cross-site results: {results}");
    let from_evil = &results[&evil_origin];
    let from_allowed = &results[&allowed_origin];
    // Another site: nothing it can do reaches the backend or can be read.
    assert_eq!(from_evil["img"], "error", "{from_evil}");
    assert!(
        from_evil["corsGet"]
            .as_str()
            .unwrap()
            .starts_with("rejected"),
        "{from_evil}"
    );
    assert!(
        from_evil["corsPost"]
            .as_str()
            .unwrap()
            .starts_with("rejected"),
        "{from_evil}"
    );
    // The allowed origin's CORS calls work and can be read …
    assert_eq!(from_allowed["corsGet"], 200, "{from_allowed}");
    assert_eq!(
        from_allowed["corsPost"], "200 grpc-status:0",
        "{from_allowed}"
    );
    // … and they are the only calls that reached the backend: the <img> and no-cors requests
    // (no Origin, Sec-Fetch-Site: cross-site) were refused from both sites.
    assert_eq!(from_allowed["img"], "error", "{from_allowed}");
    assert_eq!(backend.state.calls.get(), 2, "{results}");
    let seen = backend.state.last_headers();
    assert_eq!(
        seen["sec-fetch-site"], "cross-site",
        "the browser marked it"
    );
    assert_eq!(seen["origin"], allowed_origin.as_str());
    proxy.running.shutdown().await;
}
