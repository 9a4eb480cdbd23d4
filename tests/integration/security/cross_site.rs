//! Cross-site protection with raw requests carrying what browsers send (the Chromium test in
//! `browser.rs` shows a real browser sends it): Fetch Metadata first, `Origin` for older
//! browsers; refusals are `permission_denied` in the caller's protocol and never reach the
//! backend.

use base64::Engine as _;
use prost::Message as _;

use super::*;
use crate::support::client::empty;

const EVIL: &str = "https://evil.example";

/// A case: its name, the request headers, and whether the call may pass.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, bool);

async fn proxy(backend: &Backend) -> Proxy {
    spawn_proxy_yaml(&format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
cors: {{ allow_origins: ["{APP}"], allow_credentials: true }}
upstreams: [{{ name: backend, endpoints: ["{url}"] }}]
routes:
  - match: {{ prefix: / }}
    upstream: backend
"#,
        url = backend.url
    ))
    .await
}

/// A Connect GET of Lookup, as a link, an `<img>` or a no-cors fetch would send it.
async fn connect_get(addr: SocketAddr, headers: &[(&str, &str)]) -> (StatusCode, String) {
    let message =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(echo("get").encode_to_vec());
    let mut req = Request::get(format!(
        "{LOOKUP}?connect=v1&encoding=proto&base64=1&message={message}"
    ))
    .body(empty())
    .unwrap();
    for (n, v) in headers {
        req.headers_mut().insert(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let reply = Client::connect(addr, Http::H1).await.send(req).await;
    let status = reply.status;
    let body = String::from_utf8_lossy(&reply.bytes().await).into_owned();
    (status, body)
}

#[tokio::test]
async fn fetch_metadata_and_origin_decide() {
    let backend = spawn_backend().await;
    let proxy = proxy(&backend).await;
    let own = format!("http://{}", proxy.addr);
    let cases: Vec<Case<'_>> = vec![
        ("not a browser", vec![], true),
        ("same-origin", vec![("sec-fetch-site", "same-origin")], true),
        ("typed URL", vec![("sec-fetch-site", "none")], true),
        (
            "cross-site no-cors (no Origin)",
            vec![("sec-fetch-site", "cross-site")],
            false,
        ),
        (
            "same-site no-cors",
            vec![("sec-fetch-site", "same-site")],
            false,
        ),
        (
            "cross-site, other origin",
            vec![("sec-fetch-site", "cross-site"), ("origin", EVIL)],
            false,
        ),
        (
            "cross-site, allowed origin",
            vec![("sec-fetch-site", "cross-site"), ("origin", APP)],
            true,
        ),
        ("old browser, other origin", vec![("origin", EVIL)], false),
        ("old browser, allowed origin", vec![("origin", APP)], true),
        (
            "old browser, own origin",
            vec![("origin", own.as_str())],
            true,
        ),
        (
            "opaque origin",
            vec![("origin", "null"), ("sec-fetch-site", "cross-site")],
            false,
        ),
    ];
    for (case, headers, allowed) in &cases {
        let before = backend.state.calls.get();
        let web = web_unary(proxy.addr, UNARY, &echo("x"), headers).await;
        let connect = connect_unary(proxy.addr, Http::H1, UNARY, &echo("x"), headers).await;
        let (get_status, get_body) = connect_get(proxy.addr, headers).await;
        if *allowed {
            web.assert_ok();
            connect.ok();
            assert_eq!(get_status, StatusCode::OK, "{case}: {get_body}");
            assert_eq!(backend.state.calls.get(), before + 3, "{case}");
        } else {
            assert_eq!(
                (web.http_status, web.status()),
                (StatusCode::OK, Some(7)),
                "{case}: {web:?}"
            );
            assert_eq!(connect.status, StatusCode::FORBIDDEN, "{case}");
            assert_eq!(connect.code(), "permission_denied", "{case}");
            assert_eq!(get_status, StatusCode::FORBIDDEN, "{case}: {get_body}");
            assert_eq!(
                backend.state.calls.get(),
                before,
                "{case}: reached the backend"
            );
        }
    }
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn a_cross_site_navigation_to_a_page_is_not_a_call() {
    let backend = spawn_backend().await;
    let proxy = proxy(&backend).await;
    let navigation = [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-dest", "document"),
    ];
    // A link to a page is let through to what serves pages (here: nothing, so not 403) …
    let mut req = Request::get("/index.html").body(empty()).unwrap();
    for (n, v) in navigation {
        req.headers_mut().insert(n, HeaderValue::from_static(v));
    }
    let reply = Client::connect(proxy.addr, Http::H1).await.send(req).await;
    assert_ne!(reply.status, StatusCode::FORBIDDEN);
    // … but a link to a call is still refused.
    let (status, _) = connect_get(proxy.addr, &navigation).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(backend.state.calls.get(), 0);
    proxy.running.shutdown().await;
}
