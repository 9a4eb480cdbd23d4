//! `switchboard demo`: the embedded service, the proxy and the page on one port.
//!
//! - the demo serves its page and answers calls in every protocol (in-process, raw clients);
//! - the `demo` command prints its URL and stops on Ctrl-C (SIGINT);
//! - the committed page (web-demo/dist, web-demo/src/gen) is not stale against its sources;
//! - headless Chromium clicks through every panel in every protocol (tests/browser/demo.mjs),
//!   saving screenshots under test-artifacts/.
//!
//! The last two need `npm ci` in web-demo/ and tests/browser/ (scripts/test.sh does it) and
//! the Debian `chromium` package; without them they fail, unless `SWITCHBOARD_SKIP_INTEROP=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use prost::Message as _;
use serde_json::{json, Value};
use tonic::Code;

use crate::support::client::{empty, full};
use crate::support::process::{may_run, node_missing, run, Spawned};
use crate::support::wire::frame_with_flag;
use crate::support::*;

/// The demo's messages (the generated server code is unused here).
#[allow(dead_code, unreachable_pub, clippy::all)]
mod pb {
    tonic::include_proto!("switchboard.demo.v1");
}

const GREET: &str = "/switchboard.demo.v1.DemoService/Greet";
const COUNTDOWN: &str = "/switchboard.demo.v1.DemoService/Countdown";
const SLOW: &str = "/switchboard.demo.v1.DemoService/Slow";
/// A whole browser or build script; every step inside has its own, shorter limit.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(240);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

async fn spawn_demo() -> switchboard::demo::Demo {
    guard("demo spawn", switchboard::demo::spawn(loopback()))
        .await
        .unwrap_or_else(|e| panic!("demo spawn: {e:#}"))
}

fn post(path: &str, content_type: &str, body: impl Into<Bytes>) -> Request<client::ReqBody> {
    request(
        Method::POST,
        path,
        Some(content_type),
        &[],
        full(body.into()),
    )
}

async fn json_body(reply: client::Reply) -> Value {
    let bytes = reply.bytes().await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

// --- The demo in-process ------------------------------------------------------------------------

#[tokio::test]
async fn serves_the_page_and_its_assets() {
    let demo = spawn_demo().await;
    assert!(
        demo.url().starts_with("http://127.0.0.1:"),
        "{}",
        demo.url()
    );
    for http in HTTP_VERSIONS {
        let mut client = Client::connect(demo.addr(), http).await;
        for (path, file, content_type) in [
            ("/", "index.html", "text/html; charset=utf-8"),
            ("/index.html", "index.html", "text/html; charset=utf-8"),
            ("/app.js", "app.js", "text/javascript; charset=utf-8"),
            ("/app.css", "app.css", "text/css; charset=utf-8"),
        ] {
            let req = Request::get(path).body(empty()).unwrap();
            let reply = client.send(req).await;
            assert_eq!(reply.status, StatusCode::OK, "{http:?} GET {path}");
            assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
            let body = reply.bytes().await;
            let on_disk = std::fs::read(root().join("web-demo/dist").join(file)).unwrap();
            assert!(body == on_disk, "{path} differs from web-demo/dist/{file}");
        }
        let req = Request::get("/nope.js").body(empty()).unwrap();
        assert_ne!(
            client.send(req).await.status,
            StatusCode::OK,
            "GET /nope.js"
        );
    }
    demo.shutdown().await;
}

#[tokio::test]
async fn connect_json_is_transcoded_for_the_proto_only_service() {
    let demo = spawn_demo().await;
    let mut client = Client::connect(demo.addr(), Http::H1).await;

    let mut req = post(GREET, "application/json", r#"{"name":"Ada"}"#);
    req.headers_mut()
        .insert("x-demo-user", "ada".parse().unwrap());
    let reply = client.send(req).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-demo-user"), Some("ada"));
    assert_eq!(reply.header("trailer-x-demo-user"), Some("ada"));
    assert_eq!(
        json_body(reply).await,
        json!({"greeting": "Hello, Ada!", "metadata": {"x-demo-user": "ada"}})
    );

    // The error with details, as Connect JSON.
    let reply = client
        .send(post(GREET, "application/json", r#"{"name":""}"#))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let err = json_body(reply).await;
    assert_eq!(err["code"], "invalid_argument", "{err}");
    assert_eq!(err["message"], "name must not be empty", "{err}");
    assert_eq!(err["details"][0]["type"], "google.rpc.BadRequest", "{err}");

    // A deadline shorter than the sleep.
    let mut req = post(SLOW, "application/json", r#"{"sleepMs":5000}"#);
    req.headers_mut()
        .insert("connect-timeout-ms", "50".parse().unwrap());
    let reply = client.send(req).await;
    let err = json_body(reply).await;
    assert_eq!(err["code"], "deadline_exceeded", "{err}");

    // A stream, enveloped JSON.
    let body = frame_with_flag(0, br#"{"from":3,"intervalMs":1}"#);
    let reply = client
        .send(post(COUNTDOWN, "application/connect+json", body))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut rest = &reply.bytes().await[..];
    let mut messages = Vec::new();
    while let Some((flags, payload, tail)) = crate::support::wire::split_frame(rest) {
        messages.push((flags, serde_json::from_slice::<Value>(payload).unwrap()));
        rest = tail;
    }
    assert_eq!(
        messages,
        vec![
            (0, json!({"remaining": 3})),
            (0, json!({"remaining": 2, "index": 1})),
            (0, json!({"remaining": 1, "index": 2})),
            (2, json!({})),
        ]
    );
    demo.shutdown().await;
}

#[tokio::test]
async fn proto_protocols_reach_the_service() {
    let demo = spawn_demo().await;
    let greet = pb::GreetRequest { name: "Ada".into() };

    // Connect proto.
    let mut client = Client::connect(demo.addr(), Http::H2).await;
    let reply = client
        .send(post(GREET, "application/proto", greet.encode_to_vec()))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let res = pb::GreetResponse::decode(reply.bytes().await).unwrap();
    assert_eq!(res.greeting, "Hello, Ada!");

    // gRPC-Web, binary and text: a stream, an error with details, metadata both ways.
    for content_type in [GRPC_WEB_PROTO, GRPC_WEB_TEXT] {
        let countdown = pb::CountdownRequest {
            from: 4,
            interval_ms: 1,
        };
        let frame = frame_with_flag(0, &countdown.encode_to_vec());
        let mut client = Client::connect(demo.addr(), Http::H1).await;
        let reply = client
            .send(web_request(COUNTDOWN, content_type, &frame))
            .await
            .web()
            .await;
        assert_eq!(
            reply.code(),
            Code::Ok,
            "{content_type}: {}",
            reply.message()
        );
        let remaining: Vec<u32> = reply
            .messages
            .iter()
            .map(|m| pb::CountdownResponse::decode(m.clone()).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [4, 3, 2, 1], "{content_type}");

        let frame = frame_with_flag(0, &pb::GreetRequest::default().encode_to_vec());
        let mut req = web_request(GREET, content_type, &frame);
        req.headers_mut()
            .insert("x-demo-color", "teal".parse().unwrap());
        let reply = client.send(req).await.web().await;
        let status = reply.tonic_status();
        assert_eq!(status.code(), Code::InvalidArgument, "{content_type}");
        use tonic_types::StatusExt as _;
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert_eq!(violations[0].field, "name");
        assert_eq!(violations[0].description, "must not be empty");
        assert_eq!(
            reply.trailer("x-demo-color"),
            Some("teal"),
            "{content_type}"
        );
    }
    demo.shutdown().await;
}

// --- The command ------------------------------------------------------------------------------

#[test]
fn demo_command_prints_its_url_and_stops_on_ctrl_c() {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn");
    let mut child = Spawned::start("switchboard demo", command);
    let line = child.first_line(GUARD);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .to_owned();
    assert!(line.contains("Ctrl-C"), "{line:?}");

    // The page is there.
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let mut client = Client::connect(addr, Http::H1).await;
        let req = Request::get("/").body(empty()).unwrap();
        client.send(req).await.status
    });
    assert_eq!(status, StatusCode::OK, "GET {url}");

    // Ctrl-C (SIGINT) stops it cleanly.
    child.signal("INT");
    let (exit, stderr) = child.wait_exit(GUARD);
    assert!(exit.success(), "exit {exit}; stderr:\n{stderr}");
}

// --- Node: the page's build and the browser ----------------------------------------------------

/// True when node and every `needed` path are there (see [`may_run`]).
pub(crate) fn prerequisites(what: &str, needed: &[(&Path, &str)]) -> bool {
    may_run(what, node_missing(needed))
}

/// Every file under `dir`, as paths relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Names what differs between two directory trees.
fn differences(committed: &Path, fresh: &Path) -> Vec<String> {
    let (a, b) = (files(committed), files(fresh));
    let mut out = Vec::new();
    for f in &a {
        if !b.contains(f) {
            out.push(format!("{} is not built any more", f.display()));
        } else if std::fs::read(committed.join(f)).unwrap() != std::fs::read(fresh.join(f)).unwrap()
        {
            out.push(format!("{} differs", f.display()));
        }
    }
    for f in &b {
        if !a.contains(f) {
            out.push(format!("{} is missing", f.display()));
        }
    }
    out
}

#[test]
fn committed_page_is_not_stale() {
    let web = root().join("web-demo");
    if !prerequisites(
        "the web-demo staleness test",
        &[
            (
                &web.join("node_modules/esbuild/package.json"),
                "the web-demo build tools are not installed",
            ),
            (
                &web.join("node_modules/.bin/protoc-gen-es"),
                "the web-demo build tools are not installed",
            ),
        ],
    ) {
        return;
    }
    let out_dir = temp_dir("web-demo-build");

    // The page itself: sources → dist/.
    let dist = out_dir.join("dist");
    let out = run(
        "node",
        &["build.mjs", "--outdir", dist.to_str().unwrap()],
        &web,
        SCRIPT_TIMEOUT,
    );
    assert!(
        out.success,
        "node build.mjs failed ({}):\n{}{}",
        out.status, out.stdout, out.stderr
    );
    let stale = differences(&web.join("dist"), &dist);
    assert!(
        stale.is_empty(),
        "web-demo/dist is stale against web-demo/src: {}.\n\
         Run `npm --prefix web-demo run build` and commit web-demo/dist.",
        stale.join(", ")
    );

    // The generated TypeScript: proto → src/gen/.
    let buf = web.join("node_modules/.bin/buf");
    let out = run(
        buf.to_str().unwrap(),
        &["generate", "--output", out_dir.to_str().unwrap()],
        &web,
        SCRIPT_TIMEOUT,
    );
    assert!(
        out.success,
        "buf generate failed ({}):\n{}{}",
        out.status, out.stdout, out.stderr
    );
    let stale = differences(&web.join("src/gen"), &out_dir.join("src/gen"));
    assert!(
        stale.is_empty(),
        "web-demo/src/gen is stale against the .proto files: {}.\n\
         Run `npm --prefix web-demo run generate && npm --prefix web-demo run build`.",
        stale.join(", ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_clicks_through_every_panel_in_every_protocol() {
    let browser_dir = root().join("tests/browser");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !prerequisites(
        "the browser test",
        &[
            (
                &browser_dir.join("node_modules/playwright-core/package.json"),
                "playwright-core is not installed in tests/browser",
            ),
            (
                &chromium,
                "Chromium is not installed (Debian: apt-get install chromium; or set CHROMIUM)",
            ),
        ],
    ) {
        return;
    }
    let demo = spawn_demo().await;
    let artifacts = root().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let desktop = artifacts.join("demo.png");
    let phone = artifacts.join("demo-375.png");
    let args = [
        "demo.mjs".to_owned(),
        "--url".to_owned(),
        demo.url().to_owned(),
        "--screenshot".to_owned(),
        desktop.display().to_string(),
        "--mobile-screenshot".to_owned(),
        phone.display().to_string(),
    ];
    let dir = browser_dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("node", &args, &dir, SCRIPT_TIMEOUT)
    })
    .await
    .expect("runner thread panicked");
    out.show("browser tests/browser/demo.mjs", "demo.mjs");
    assert!(
        out.success,
        "demo.mjs failed ({}); its output is above",
        out.status
    );
    for shot in [&desktop, &phone] {
        assert!(shot.is_file(), "no screenshot at {}", shot.display());
        eprintln!("screenshot: {}", shot.display());
    }
    demo.shutdown().await;
}
