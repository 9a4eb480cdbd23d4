#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use serde_json::json;

use super::*;
use crate::config::{ClaimHeader, JwksSource};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

struct Signer {
    ec: EcdsaKeyPair,
    ed: Ed25519KeyPair,
    rng: SystemRandom,
}

impl Signer {
    fn new() -> Signer {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Signer { ec, ed, rng }
    }

    fn jwks(&self) -> serde_json::Value {
        let p = self.ec.public_key().as_ref();
        json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "ec1", "x": b64(&p[1..33]), "y": b64(&p[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed1", "x": b64(self.ed.public_key().as_ref())},
        ]})
    }

    fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match header["alg"].as_str() {
            Some("EdDSA") => self.ed.sign(input.as_bytes()).as_ref().to_vec(),
            _ => self
                .ec
                .sign(&self.rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }
}

fn auth(signer: &Signer, edit: impl FnOnce(&mut Jwt)) -> JwtAuth {
    let dir = std::env::temp_dir().join(format!(
        "sb-jwt-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, signer.jwks().to_string()).unwrap();
    let mut config = Jwt {
        jwks: JwksSource::File(path),
        issuer: Some("https://issuer.test".into()),
        audiences: vec!["greeter".into()],
        token: TokenSource::Bearer,
        leeway: Duration::from_secs(60),
        forward_token: false,
        claims_to_headers: vec![ClaimHeader {
            claim: "sub".into(),
            header: HeaderName::from_static("x-user"),
        }],
        jwks_cache: Duration::from_secs(300),
        jwks_timeout: Duration::from_secs(5),
        jwks_ca: None,
    };
    edit(&mut config);
    JwtAuth::new(&config, Some("tenant"), None).unwrap()
}

fn good_claims() -> serde_json::Value {
    let now = unix_now();
    json!({"iss": "https://issuer.test", "aud": ["other", "greeter"], "sub": "alice",
           "tenant": "acme", "exp": now + 600, "nbf": now - 10})
}

fn bearer_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

async fn run(a: &JwtAuth, token: &str) -> Result<(HeaderMap, Option<Bytes>), Status> {
    let mut h = bearer_headers(token);
    a.authenticate(&mut h).await.map(|k| (h, k))
}

#[tokio::test]
async fn valid_tokens_pass_and_grant_claims() {
    let s = Signer::new();
    let a = auth(&s, |_| {});
    for alg in [
        json!({"alg": "ES256", "kid": "ec1", "typ": "JWT"}),
        json!({"alg": "EdDSA", "kid": "ed1"}),
        json!({"alg": "ES256"}),
    ] {
        let token = s.sign(alg.clone(), good_claims());
        let (h, key) = run(&a, &token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e:?}"));
        assert_eq!(h["x-user"], "alice");
        assert!(
            !h.contains_key("authorization"),
            "the token is not forwarded"
        );
        assert_eq!(key.as_deref(), Some(&b"acme"[..]));
        // Again, from the cache.
        assert!(run(&a, &token).await.is_ok());
    }
    let a = auth(&s, |c| c.forward_token = true);
    let (h, _) = run(&a, &s.sign(json!({"alg": "ES256"}), good_claims()))
        .await
        .unwrap();
    assert!(h.contains_key("authorization"));
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let s = Signer::new();
    let other = Signer::new();
    let a = auth(&s, |_| {});
    let now = unix_now();
    let es = json!({"alg": "ES256", "kid": "ec1"});
    let mut cases: Vec<(&str, String)> = vec![
        (
            "expired beyond the leeway",
            s.sign(
                es.clone(),
                json!({"iss": "https://issuer.test", "aud": "greeter", "exp": now - 61}),
            ),
        ),
        (
            "not valid yet",
            s.sign(
                es.clone(),
                json!({"iss": "https://issuer.test", "aud": "greeter", "nbf": now + 120}),
            ),
        ),
        (
            "wrong issuer",
            s.sign(
                es.clone(),
                json!({"iss": "https://evil.test", "aud": "greeter"}),
            ),
        ),
        ("no issuer", s.sign(es.clone(), json!({"aud": "greeter"}))),
        (
            "wrong audience",
            s.sign(
                es.clone(),
                json!({"iss": "https://issuer.test", "aud": "billing"}),
            ),
        ),
        ("wrong key", other.sign(es.clone(), good_claims())),
        (
            "unknown kid",
            s.sign(json!({"alg": "ES256", "kid": "nope"}), good_claims()),
        ),
        (
            "key of another algorithm",
            s.sign(json!({"alg": "ES256", "kid": "ed1"}), good_claims()),
        ),
        (
            "exp not a number",
            s.sign(
                es.clone(),
                json!({"iss": "https://issuer.test", "aud": "greeter", "exp": "soon"}),
            ),
        ),
        (
            "crit",
            s.sign(json!({"alg": "ES256", "crit": ["x"]}), good_claims()),
        ),
        ("garbage", "a.b.c".into()),
        ("two parts", "abc.def".into()),
    ];
    // alg none: no signature at all.
    let unsigned = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(good_claims().to_string().as_bytes())
    );
    cases.push(("alg none", unsigned));
    // HS256 "signed" with the public key as the HMAC secret (the classic confusion attack).
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"ec1"}"#),
        b64(good_claims().to_string().as_bytes())
    );
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.jwks().to_string().as_bytes());
    let mac = ring::hmac::sign(&secret, input.as_bytes());
    cases.push((
        "HMAC with the public key",
        format!("{input}.{}", b64(mac.as_ref())),
    ));
    // Tampered: a valid token whose payload is swapped.
    let good = s.sign(es.clone(), good_claims());
    let mut claims = good_claims();
    claims["sub"] = json!("admin");
    let fake_payload = b64(claims.to_string().as_bytes());
    let pieces: Vec<&str> = good.split('.').collect();
    cases.push((
        "tampered",
        format!("{}.{fake_payload}.{}", pieces[0], pieces[2]),
    ));
    for (what, token) in cases {
        let err = run(&a, &token).await.expect_err(what);
        assert_eq!(err.code, Code::Unauthenticated, "{what}: {err:?}");
        assert!(
            err.message.starts_with("invalid token"),
            "{what}: {}",
            err.message
        );
    }
    // Within the leeway.
    let token = s.sign(
        es,
        json!({"iss": "https://issuer.test", "aud": "greeter", "exp": now - 30}),
    );
    assert!(run(&a, &token).await.is_ok());
}

#[tokio::test]
async fn token_locations() {
    let s = Signer::new();
    let token = s.sign(json!({"alg": "EdDSA"}), good_claims());
    let a = auth(&s, |_| {});
    assert_eq!(
        a.authenticate(&mut HeaderMap::new())
            .await
            .unwrap_err()
            .message,
        "missing token"
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
    );
    assert!(a.authenticate(&mut h).await.is_err(), "not a bearer token");
    let mut h = bearer_headers(&token);
    h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
    assert!(a.authenticate(&mut h).await.is_err(), "two tokens");
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer  {token} ")).unwrap(),
    );
    assert!(
        a.authenticate(&mut h).await.is_ok(),
        "scheme case and spaces"
    );

    let a = auth(&s, |c| {
        c.token = TokenSource::Header(HeaderName::from_static("x-token"))
    });
    let mut h = HeaderMap::new();
    h.insert("x-token", HeaderValue::from_str(&token).unwrap());
    assert!(a.authenticate(&mut h).await.is_ok());
    assert!(!h.contains_key("x-token"));

    let a = auth(&s, |c| c.token = TokenSource::Cookie("session".into()));
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!("theme=dark; session={token}; lang=en")).unwrap(),
    );
    assert!(a.authenticate(&mut h).await.is_ok());
    assert_eq!(h[header::COOKIE], "theme=dark; lang=en");
    let mut h = HeaderMap::new();
    h.insert(header::COOKIE, HeaderValue::from_static("xsession=abc"));
    assert!(a.authenticate(&mut h).await.is_err());
}

#[test]
fn cookie_parsing() {
    let find = |h: &str, n: &str| cookie(h.as_bytes(), n.as_bytes()).map(|r| h[r].to_owned());
    assert_eq!(find("a=1; b=2", "b").as_deref(), Some("2"));
    assert_eq!(find("a=1;b=\"q\"", "b").as_deref(), Some("q"));
    assert_eq!(find("ab=1", "b"), None);
    assert_eq!(find("a=1", "a").as_deref(), Some("1"));
}
