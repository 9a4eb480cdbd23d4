//! Route auth: JWTs (RS256, ES256, EdDSA from a JWKS file; bearer, header or cookie) and API
//! keys, answered in the caller's protocol with CORS headers; claims reach the backend as
//! headers callers cannot forge; preflights need no credentials.

use serde_json::{json, Value};

use super::*;
use crate::support::jwt::{self, SigningKey};

const ISSUER: &str = "https://issuer.test";

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": "greeter", "sub": "alice", "roles": ["admin", "dev"],
           "exp": jwt::now() + 600, "iat": jwt::now()})
}

/// A proxy whose Unary route needs a JWT (`jwt_extra` adds settings), Lookup is open.
async fn jwt_proxy(backend: &Backend, jwks: &std::path::Path, jwt_extra: &str) -> Proxy {
    spawn_proxy_yaml(&format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
cors: {{ allow_origins: ["{APP}"], allow_credentials: true }}
upstreams: [{{ name: backend, endpoints: ["{url}"] }}]
routes:
  - match: {{ method: {UNARY} }}
    upstream: backend
    auth:
      jwt:
        jwks: "{jwks}"
        issuer: "{ISSUER}"
        audience: [greeter, billing]
        claims_to_headers: [{{ claim: sub, header: x-user }}, {{ claim: roles, header: x-roles }}]
        {jwt_extra}
  - match: {{ prefix: / }}
    upstream: backend
"#,
        url = backend.url,
        jwks = jwks.display(),
    ))
    .await
}

/// Asserts the call was refused as unauthenticated in both protocols, with CORS headers,
/// without reaching the backend.
async fn assert_refused(proxy: &Proxy, backend: &Backend, headers: &[(&str, &str)], case: &str) {
    let before = backend.state.calls.get();
    let mut with_origin = headers.to_vec();
    with_origin.push(("origin", APP));
    let web = web_unary(proxy.addr, UNARY, &echo("x"), &with_origin).await;
    assert_eq!(
        web.http_status,
        StatusCode::OK,
        "{case}: gRPC-Web is HTTP 200"
    );
    assert_eq!(web.status(), Some(16), "{case}: {web:?}");
    assert_eq!(
        web.header("access-control-allow-origin"),
        Some(APP),
        "{case}"
    );
    let c = connect_unary(proxy.addr, Http::H2, UNARY, &echo("x"), &with_origin).await;
    assert_eq!(c.status, StatusCode::UNAUTHORIZED, "{case}: {c:?}");
    assert_eq!(c.code(), "unauthenticated", "{case}");
    assert_eq!(c.header("access-control-allow-origin"), Some(APP), "{case}");
    assert_eq!(
        backend.state.calls.get(),
        before,
        "{case}: reached the backend"
    );
}

#[tokio::test]
async fn jwts_of_every_algorithm_pass_and_grant_their_claims() {
    let dir = temp_dir("auth-jwt");
    let keys = [
        SigningKey::es256("ec-1"),
        SigningKey::eddsa("ed-1"),
        SigningKey::rs256("rsa-1"),
    ];
    let path = write_file(
        &dir,
        "jwks.json",
        &jwt::jwks(&keys.iter().collect::<Vec<_>>()),
    );
    let backend = spawn_backend().await;
    let proxy = jwt_proxy(&backend, &path, "").await;
    for key in &keys {
        let token = key.sign(&claims());
        let bearer = format!("Bearer {token}");
        let headers = [
            ("authorization", bearer.as_str()),
            ("x-user", "mallory"),
            ("x-roles", "[\"root\"]"),
        ];
        let r = web_unary(proxy.addr, UNARY, &echo("hi"), &headers)
            .await
            .ok_response();
        assert_eq!(
            r.metadata.get("x-user").map(String::as_str),
            Some("alice"),
            "{}",
            key.alg()
        );
        assert_eq!(
            r.metadata.get("x-roles").map(String::as_str),
            Some(r#"["admin","dev"]"#)
        );
        let seen = backend.state.last_headers();
        assert!(
            !seen.contains_key("authorization"),
            "the token stays at the proxy"
        );
        assert_eq!(seen.get_all("x-user").iter().count(), 1);
        for http in HTTP_VERSIONS {
            let c = connect_unary(proxy.addr, http, UNARY, &echo("hi"), &headers).await;
            assert_eq!(c.ok().metadata["x-user"], "alice", "{} {http:?}", key.alg());
        }
    }
    // An open route: forged claim headers are removed there too.
    let r = web_unary(proxy.addr, LOOKUP, &echo("hi"), &[("x-user", "mallory")])
        .await
        .ok_response();
    assert!(!r.metadata.contains_key("x-user"), "{:?}", r.metadata);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated_in_the_callers_protocol() {
    let dir = temp_dir("auth-bad");
    let key = SigningKey::es256("ec-1");
    let ed = SigningKey::eddsa("ed-1");
    let jwks = jwt::jwks(&[&key, &ed]);
    let path = write_file(&dir, "jwks.json", &jwks);
    let backend = spawn_backend().await;
    let proxy = jwt_proxy(&backend, &path, "").await;
    let now = jwt::now();
    let mut c = claims();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims();
        edit(&mut c);
        c
    };
    let impostor = SigningKey::es256("ec-1");
    c["sub"] = json!("admin");
    let cases: Vec<(&str, String)> = vec![
        ("expired", key.sign(&with(&|c| c["exp"] = json!(now - 120)))),
        (
            "not yet valid",
            key.sign(&with(&|c| c["nbf"] = json!(now + 300))),
        ),
        (
            "wrong issuer",
            key.sign(&with(&|c| c["iss"] = json!("https://evil.test"))),
        ),
        (
            "wrong audience",
            key.sign(&with(&|c| c["aud"] = json!("payments"))),
        ),
        ("wrong key, same kid", impostor.sign(&claims())),
        ("alg none", jwt::unsigned(&claims())),
        (
            "HMAC keyed with the public JWKS",
            jwt::hs256("ec-1", jwks.as_bytes(), &claims()),
        ),
        ("tampered payload", jwt::tampered(&key.sign(&claims()), &c)),
        (
            "EdDSA header on the ES256 key",
            key.sign_with(&json!({"alg": "EdDSA", "kid": "ec-1"}), &claims()),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (case, token) in &cases {
        let bearer = format!("Bearer {token}");
        assert_refused(&proxy, &backend, &[("authorization", &bearer)], case).await;
    }
    assert_refused(&proxy, &backend, &[], "no token").await;
    let valid = format!("Basic {}", key.sign(&claims()));
    assert_refused(&proxy, &backend, &[("authorization", &valid)], "not bearer").await;
    // Within the 60 s default leeway.
    let token = key.sign(&with(&|c| c["exp"] = json!(now - 20)));
    let bearer = format!("Bearer {token}");
    web_unary(proxy.addr, UNARY, &echo("x"), &[("authorization", &bearer)])
        .await
        .assert_ok();
    // The message says what was wrong, and nothing about keys or addresses.
    let bearer = format!("Bearer {}", cases[0].1);
    let web = web_unary(proxy.addr, UNARY, &echo("x"), &[("authorization", &bearer)]).await;
    assert_eq!(web.message(), "invalid token: token expired");
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn preflights_need_no_credentials_and_name_the_auth_header() {
    let dir = temp_dir("auth-preflight");
    let path = write_file(&dir, "jwks.json", &jwt::jwks(&[&SigningKey::es256("k")]));
    let backend = spawn_backend().await;
    let proxy = jwt_proxy(&backend, &path, "").await;
    for http in HTTP_VERSIONS {
        let req = Request::builder()
            .method(Method::OPTIONS)
            .uri(UNARY)
            .header("origin", APP)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(crate::support::client::empty())
            .unwrap();
        let reply = Client::connect(proxy.addr, http).await.send(req).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{http:?}");
        let allowed = reply
            .header("access-control-allow-headers")
            .unwrap()
            .to_owned();
        let names: Vec<&str> = allowed.split(',').map(str::trim).collect();
        assert!(names.contains(&"authorization"), "{allowed}");
        assert!(!names.contains(&"*"), "{allowed}");
        assert_eq!(
            reply.header("access-control-allow-credentials"),
            Some("true")
        );
    }
    assert_eq!(backend.state.calls.get(), 0);
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn tokens_from_a_header_or_a_cookie() {
    let dir = temp_dir("auth-cookie");
    let key = SigningKey::eddsa("ed");
    let path = write_file(&dir, "jwks.json", &jwt::jwks(&[&key]));
    let backend = spawn_backend().await;
    let token = key.sign(&claims());

    let proxy = jwt_proxy(&backend, &path, "cookie: session").await;
    let cookie = format!("theme=dark; session={token}");
    let r = web_unary(proxy.addr, UNARY, &echo("x"), &[("cookie", &cookie)])
        .await
        .ok_response();
    assert_eq!(r.metadata["x-user"], "alice");
    let seen = backend.state.last_headers();
    assert_eq!(
        seen["cookie"], "theme=dark",
        "the token cookie is not forwarded"
    );
    let bearer = format!("Bearer {token}");
    assert_refused(
        &proxy,
        &backend,
        &[("authorization", &bearer)],
        "cookie route",
    )
    .await;
    proxy.running.shutdown().await;

    let proxy = jwt_proxy(
        &backend,
        &path,
        "header: x-token\n        forward_token: true",
    )
    .await;
    web_unary(proxy.addr, UNARY, &echo("x"), &[("x-token", &token)])
        .await
        .assert_ok();
    assert_eq!(
        backend.state.last_headers()["x-token"],
        token.as_str(),
        "forward_token"
    );
    proxy.running.shutdown().await;
}

#[tokio::test]
async fn api_keys_inline_and_from_a_file() {
    let dir = temp_dir("auth-apikey");
    let sha = crate::support::jwt::api_key_hash;
    let file = write_file(&dir, "keys.txt", &format!("# team b\n{}\n", sha("key-bob")));
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
cors: {{ allow_origins: ["{APP}"] }}
upstreams: [{{ name: backend, endpoints: ["{url}"] }}]
routes:
  - match: {{ service: switchboard.testing.v1.TestService }}
    upstream: backend
    auth: {{ api_key: {{ header: x-api-key, keys: ["{alice}"], keys_file: "{file}" }} }}
"#,
        url = backend.url,
        alice = sha("key-alice"),
        file = file.display(),
    ))
    .await;
    for key in ["key-alice", "key-bob"] {
        web_unary(proxy.addr, UNARY, &echo("x"), &[("x-api-key", key)])
            .await
            .assert_ok();
        assert!(!backend.state.last_headers().contains_key("x-api-key"));
        connect_unary(
            proxy.addr,
            Http::H1,
            UNARY,
            &echo("x"),
            &[("x-api-key", key)],
        )
        .await
        .ok();
    }
    let before = backend.state.calls.get();
    for headers in [
        vec![("x-api-key", "key-eve")],
        vec![],
        vec![("authorization", "Bearer key-alice")],
    ] {
        let web = web_unary(proxy.addr, UNARY, &echo("x"), &headers).await;
        assert_eq!(
            (web.http_status, web.status()),
            (StatusCode::OK, Some(16)),
            "{headers:?}"
        );
        let c = connect_unary(proxy.addr, Http::H1, UNARY, &echo("x"), &headers).await;
        assert_eq!(
            (c.status, c.code().as_str()),
            (StatusCode::UNAUTHORIZED, "unauthenticated")
        );
    }
    assert_eq!(backend.state.calls.get(), before);
    proxy.running.shutdown().await;
}
