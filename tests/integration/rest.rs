//! REST from `google.api.http` rules, curl-style over HTTP/1.1 and HTTP/2: the proxy in quick
//! mode (no schema flags) in front of backends serving the annotated LibraryService with
//! server reflection (tonic in-process; grpcio as a child process, v1alpha only): every rule
//! feature, errors and streams in their REST shapes, deadlines. `rest_setup` has the rest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};

use crate::support::backend::{spawn_backend_with_reflection, ReflectionVersion};
use crate::support::client::{empty, full, ReqBody};
use crate::support::library::UNLISTED_DETAIL;
use crate::support::{self, guard, spawn_proxy, spawn_proxy_yaml, Client, Http, HTTP_VERSIONS};

/// A finished REST exchange.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// 200 with a JSON body.
    pub(crate) fn ok(&self, case: &str) -> Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "{case}: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{case}"
        );
        self.json()
    }

    /// An error with this HTTP status and gRPC code, in REST's shape.
    pub(crate) fn error(&self, http: u16, code: i64, case: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            http,
            "{case}: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{case}"
        );
        let v = self.json();
        assert_eq!(v["code"], code, "{case}: {v}");
        assert!(v["message"].is_string(), "{case}: {v}");
        assert!(v["details"].is_array(), "{case}: {v}");
        v
    }
}

pub(crate) async fn send(addr: SocketAddr, http: Http, req: Request<ReqBody>) -> Answer {
    let mut client = Client::connect(addr, http).await;
    let reply = client.send(req).await;
    let status = reply.status;
    let headers = reply.headers.clone();
    let body = reply.bytes().await;
    Answer {
        status,
        headers,
        body,
    }
}

/// `curl -X METHOD [-H …] [-d BODY] URL`.
pub(crate) async fn curl(
    addr: SocketAddr,
    http: Http,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = match body {
        Some(body) => b
            .header("content-type", "application/json")
            .body(full(body.to_owned()))
            .unwrap(),
        None => b.body(empty()).unwrap(),
    };
    send(addr, http, req).await
}

pub(crate) async fn get(addr: SocketAddr, http: Http, path: &str) -> Answer {
    curl(addr, http, "GET", path, &[], None).await
}

/// The calls every backend must answer the same way.
async fn library_calls(addr: SocketAddr, http: Http, backend: &str) {
    let case = |what: &str| format!("{backend} {http:?} {what}");
    // A variable with a template, and metadata both ways.
    let a = curl(
        addr,
        http,
        "GET",
        "/v1/shelves/s1",
        &[("x-team", "blue")],
        None,
    )
    .await;
    let v = a.ok(&case("get shelf"));
    assert_eq!(v["name"], "shelves/s1", "{v}");
    assert_eq!(v["theme"], "fiction", "{v}");
    assert_eq!(v["metadata"]["x-team"], "blue", "{v}");

    // Query parameters of every kind.
    let a = get(
        addr,
        http,
        "/v1/shelves/s1/books?pageSize=5&page_token=t+1&tags=a&tags=b%20c&filter.author=Ann\
         &filter.pages.min=10&publishedAfter=2024-01-02T03:04:05Z&maxAge=90s&readMask=title,writer\
         &minPages=7&format=FORMAT_EBOOK&ids=1&ids=2&language=fr",
    )
    .await;
    let v = a.ok(&case("list books"));
    assert_eq!(
        v["request"],
        json!({
            "parent": "shelves/s1",
            "pageSize": 5,
            "pageToken": "t 1",
            "tags": ["a", "b c"],
            "filter": {"author": "Ann", "pages": {"min": 10}},
            "publishedAfter": "2024-01-02T03:04:05Z",
            "maxAge": "90s",
            "readMask": "title,writer",
            "minPages": 7,
            "format": "FORMAT_EBOOK",
            "ids": ["1", "2"],
            "language": "fr",
        }),
        "{}",
        case("list books")
    );
    assert_eq!(v["books"][0]["name"], "shelves/s1/books/1");
    // An additional binding, and one answering a single field.
    let v = get(addr, http, "/v1/books?parent=shelves/q")
        .await
        .ok(&case("list, query parent"));
    assert_eq!(v["request"]["parent"], "shelves/q");
    let a = get(addr, http, "/v1/shelves/s1/titles").await;
    assert_eq!(a.ok(&case("response_body")), json!(["One", "Two"]));

    // A body field; JSON names and proto names both read, JSON names written.
    let a = curl(
        addr,
        http,
        "POST",
        "/v1/shelves/s1/books?bookId=b7",
        &[],
        Some(r#"{"title":"Dune","author_name":"Herbert","pages":"412","cover":"AQID"}"#),
    )
    .await;
    let v = a.ok(&case("create"));
    assert_eq!(
        v,
        json!({"name": "shelves/s1/books/b7", "title": "Dune", "writer": "Herbert", "pages": "412", "cover": "AQID"})
    );
    // A nested path variable inside the body field.
    let a = curl(
        addr,
        http,
        "PATCH",
        "/v1/shelves/s1/books/b7?updateMask=title",
        &[],
        Some(r#"{"title":"Dune Messiah"}"#),
    )
    .await;
    let v = a.ok(&case("update"));
    assert_eq!(
        v,
        json!({"name": "shelves/s1/books/b7", "title": "Dune Messiah", "note": "update_mask=title"})
    );
    // body "*".
    let a = curl(
        addr,
        http,
        "PUT",
        "/v1/shelves/s1/books/b7",
        &[],
        Some(r#"{"title":"T","format":"FORMAT_PAPER","published":"2020-05-06T07:08:09Z"}"#),
    )
    .await;
    assert_eq!(
        a.ok(&case("replace")),
        json!({"name": "shelves/s1/books/b7", "title": "T", "format": "FORMAT_PAPER", "published": "2020-05-06T07:08:09Z"})
    );
    // DELETE answering Empty; a missing one is 404.
    let a = curl(addr, http, "DELETE", "/v1/shelves/s1/books/b7", &[], None).await;
    assert_eq!(a.ok(&case("delete")), json!({}));
    let a = curl(
        addr,
        http,
        "DELETE",
        "/v1/shelves/s1/books/missing",
        &[],
        None,
    )
    .await;
    a.error(404, 5, &case("delete missing"));
    // A custom verb.
    let a = curl(
        addr,
        http,
        "POST",
        "/v1/shelves/s1/books/b7:move",
        &[],
        Some(r#"{"destination":"shelves/s2"}"#),
    )
    .await;
    assert_eq!(a.ok(&case("move"))["name"], "shelves/s2/books/b7");
    // `**` keeps %2F; a single segment is fully decoded.
    let a = get(addr, http, "/v1/files/dir%2Fsub/a%20b/c.txt").await;
    assert_eq!(a.ok(&case("file"))["path"], "dir%2Fsub/a b/c.txt");
    let a = get(addr, http, "/v1/authors/J%2FR%20R").await;
    assert_eq!(a.ok(&case("author"))["authorId"], "J/R R");
    // A custom HTTP method.
    let a = curl(
        addr,
        http,
        "SEARCH",
        "/v1/books",
        &[],
        Some(r#"{"query":"dune","limit":2}"#),
    )
    .await;
    assert_eq!(a.ok(&case("search"))["titles"], json!(["dune", "dune"]));

    // Errors: the backend's, with details; the proxy's own.
    get(addr, http, "/v1/shelves/missing")
        .await
        .error(404, 5, &case("not found"));
    let v = get(addr, http, "/v1/shelves/invalid")
        .await
        .error(400, 3, &case("details"));
    assert_eq!(v["message"], "invalid shelf");
    assert_eq!(
        v["details"],
        json!([
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "name", "description": "shelf names are shelves/<id>"}]},
            {"@type": "type.googleapis.com/switchboard.testing.v1.Shelf", "name": "shelves/invalid"},
            {"@type": UNLISTED_DETAIL, "value": "AQID"},
        ]),
        "{}",
        case("details")
    );
    let v = get(addr, http, "/v1/shelves/s1/books?bogus=1").await.error(
        400,
        3,
        &case("unknown query parameter"),
    );
    assert!(v["message"].as_str().unwrap().contains("\"bogus\""), "{v}");
    let v = curl(
        addr,
        http,
        "POST",
        "/v1/shelves/s1/books",
        &[],
        Some(r#"{"title":"#),
    )
    .await
    .error(400, 3, &case("malformed body"));
    assert!(
        v["message"].as_str().unwrap().contains("invalid JSON"),
        "{v}"
    );
    let a = get(addr, http, "/v1/shelves/s1/books/b7").await;
    a.error(405, 12, &case("wrong verb"));
    assert_eq!(
        a.header("allow"),
        Some("DELETE, PATCH, PUT"),
        "{}",
        case("allow")
    );
    let a = curl(addr, http, "PATCH", "/v1/nothing/here", &[], Some("{}")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", case("no rule"));
    let a = get(addr, http, "/v1/nothing/here").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", case("no rule, GET"));
}

/// Quick mode, no schema flags: everything comes from the backend's server reflection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_in_quick_mode_from_tonic_reflection() {
    let (backend, reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        guard("library calls", library_calls(proxy.addr, http, "tonic")).await;
    }
    // Response metadata and trailers come back as headers; request headers go as metadata.
    for http in HTTP_VERSIONS {
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/authors/a1",
            &[("x-header-color", "red"), ("x-trailer-cost", "7")],
            None,
        )
        .await;
        a.ok("metadata");
        assert_eq!(a.header("x-header-color"), Some("red"), "{http:?}");
        assert_eq!(a.header("x-trailer-cost"), Some("7"), "{http:?}");
        // An error's trailers too.
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/shelves/missing",
            &[("x-trailer-cost", "8")],
            None,
        )
        .await;
        a.error(404, 5, "error metadata");
        assert_eq!(a.header("x-trailer-cost"), Some("8"), "{http:?}");
    }
    let fetched = reflection.calls.get();
    assert!(fetched > 0, "no reflection call");
    // Cached: more calls ask nothing.
    get(proxy.addr, Http::H1, "/v1/shelves/s2")
        .await
        .ok("again");
    assert_eq!(reflection.calls.get(), fetched, "{:?}", reflection.paths());
}

/// The grpcio backend (Python, reflection v1alpha only), started as a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_in_quick_mode_from_grpcio_reflection() {
    if !crate::support::grpcio::available() {
        return;
    }
    let grpcio = crate::support::grpcio::GrpcioBackend::spawn(&[]).await;
    let proxy = spawn_proxy(&grpcio.url).await;
    for http in HTTP_VERSIONS {
        guard("library calls", library_calls(proxy.addr, http, "grpcio")).await;
    }
    // Its streams too.
    let a = get(proxy.addr, Http::H2, "/v1/shelves/s1:watch?count=2").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        lines(&a),
        vec![
            json!({"name": "shelves/s1"}),
            json!({"name": "shelves/s1", "index": 1}),
        ]
    );
    drop(proxy);
    drop(grpcio);
}

/// NDJSON lines as JSON values.
fn lines(a: &Answer) -> Vec<Value> {
    std::str::from_utf8(&a.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// SSE events as (event name, data).
fn events(a: &Answer) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(&a.body).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut name = "message".to_owned();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, serde_json::from_str(&data).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_as_ndjson_and_sse() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = spawn_proxy(&backend.url).await;
    for http in HTTP_VERSIONS {
        let a = get(
            proxy.addr,
            http,
            "/v1/shelves/s1:watch?count=3&payloadSize=2",
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), Some("application/x-ndjson"));
        let want: Vec<Value> = (0..3)
            .map(|i| {
                let mut v = json!({"name": "shelves/s1", "payload": "eHg="});
                if i > 0 {
                    v["index"] = json!(i);
                }
                v
            })
            .collect();
        assert_eq!(lines(&a), want, "{http:?}");

        // An error after two messages: the last line says so.
        let a = get(proxy.addr, http, "/v1/shelves/s1:watch?count=2&failCode=10").await;
        assert_eq!(a.status, StatusCode::OK);
        let l = lines(&a);
        assert_eq!(l.len(), 3, "{l:?}");
        assert_eq!(
            l[2],
            json!({"error": {"code": 10, "message": "watch failed", "details": []}})
        );

        // An error before the first message is an HTTP error.
        let a = get(proxy.addr, http, "/v1/shelves/s1:watch?count=0&failCode=9").await;
        a.error(400, 9, "error before the first message");

        // No messages, no error: an empty stream.
        let a = get(proxy.addr, http, "/v1/shelves/s1:watch?count=0").await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.body.is_empty());

        // Server-Sent Events when asked for.
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/shelves/s1:watch?count=2&failCode=14",
            &[("accept", "text/event-stream")],
            None,
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), Some("text/event-stream"));
        let e = events(&a);
        assert_eq!(
            e,
            vec![
                ("message".to_owned(), json!({"name": "shelves/s1"})),
                (
                    "message".to_owned(),
                    json!({"name": "shelves/s1", "index": 1})
                ),
                (
                    "error".to_owned(),
                    json!({"error": {"code": 14, "message": "watch failed", "details": []}})
                ),
            ],
            "{http:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_deliver_messages_as_they_come() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let proxy = spawn_proxy(&backend.url).await;
    // The first line is readable before the stream ends (a large count keeps it going).
    let mut client = Client::connect(proxy.addr, Http::H1).await;
    let req = Request::get("/v1/shelves/s1:watch?count=100000&payloadSize=1000")
        .body(empty())
        .unwrap();
    let reply = client.send(req).await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut body = reply.body;
    let mut seen = Vec::new();
    while !seen.contains(&b'\n') {
        let frame = guard("first line", body.frame()).await.unwrap().unwrap();
        if let Ok(d) = frame.into_data() {
            seen.extend_from_slice(&d);
        }
    }
    let first = seen.split(|b| *b == b'\n').next().unwrap();
    let v: Value = serde_json::from_slice(first).unwrap();
    assert_eq!(v["name"], "shelves/s1");
    // Dropping the body mid-stream cancels the call upstream.
    drop(body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_from_headers_capped_by_the_route() {
    let (backend, _reflection) = spawn_backend_with_reflection(ReflectionVersion::V1).await;
    let yaml = support::one_upstream_yaml(&backend.url, &[], &["timeout: 3s"]);
    let proxy = spawn_proxy_yaml(&yaml).await;
    let timeout_ms = |a: &Answer| -> u64 {
        let t = a.ok("timeout echo")["grpcTimeout"]
            .as_str()
            .unwrap()
            .to_owned();
        let (n, unit) = t.split_at(t.len() - 1);
        let n: u64 = n.parse().unwrap();
        match unit {
            "m" => n,
            "u" => n / 1000,
            "n" => n / 1_000_000,
            "S" => n * 1000,
            other => panic!("unit {other}"),
        }
    };
    for http in HTTP_VERSIONS {
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/shelves/s1",
            &[("connect-timeout-ms", "1500")],
            None,
        )
        .await;
        let ms = timeout_ms(&a);
        assert!(ms <= 1500 && ms > 1000, "{ms}");
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/shelves/s1",
            &[("grpc-timeout", "1M")],
            None,
        )
        .await;
        let ms = timeout_ms(&a);
        assert!(ms <= 3000 && ms > 2500, "route cap: {ms}");
        let a = get(proxy.addr, http, "/v1/shelves/s1").await;
        let ms = timeout_ms(&a);
        assert!(ms <= 3000 && ms > 2500, "route timeout: {ms}");
        let started = Instant::now();
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/shelves/slow",
            &[("connect-timeout-ms", "200")],
            None,
        )
        .await;
        a.error(504, 4, "deadline");
        assert!(started.elapsed() < Duration::from_millis(1500));
        let a = curl(
            proxy.addr,
            http,
            "GET",
            "/v1/shelves/s1",
            &[("connect-timeout-ms", "soon")],
            None,
        )
        .await;
        a.error(400, 3, "bad connect-timeout-ms");
    }
}
