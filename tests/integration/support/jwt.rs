//! JWTs signed in the test (ring): ES256 and EdDSA keys made per test, an RS256 key from a
//! PEM file in tests/data (ring cannot generate RSA keys); JWKS documents of their public
//! halves; and an https server that serves a JWKS the test can change (key rotation).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::backend::Counter;
use super::tls::TestCert;
use super::AbortOnDrop;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// Seconds since the epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

enum Pair {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A signing key with its `kid`.
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pair: Pair,
}

impl SigningKey {
    pub(crate) fn es256(kid: &str) -> SigningKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        SigningKey {
            kid: kid.to_owned(),
            pair: Pair::Ec(pair),
        }
    }

    pub(crate) fn eddsa(kid: &str) -> SigningKey {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        SigningKey {
            kid: kid.to_owned(),
            pair: Pair::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()),
        }
    }

    /// The RSA test key of tests/data (2048 bits).
    pub(crate) fn rs256(kid: &str) -> SigningKey {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/jwt-rs256-test-key.pem"
        );
        let pem = std::fs::read(path).unwrap();
        let der = match rustls_pemfile::private_key(&mut pem.as_slice())
            .unwrap()
            .unwrap()
        {
            rustls::pki_types::PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("expected a PKCS#8 key, got {other:?}"),
        };
        SigningKey {
            kid: kid.to_owned(),
            pair: Pair::Rsa(RsaKeyPair::from_pkcs8(&der).unwrap()),
        }
    }

    /// The `alg` of this key's tokens.
    pub(crate) fn alg(&self) -> &'static str {
        match self.pair {
            Pair::Ec(_) => "ES256",
            Pair::Ed(_) => "EdDSA",
            Pair::Rsa(_) => "RS256",
        }
    }

    /// The public JWK.
    pub(crate) fn jwk(&self) -> Value {
        match &self.pair {
            Pair::Ec(p) => {
                let pt = p.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                       "x": b64(&pt[1..33]), "y": b64(&pt[33..])})
            }
            Pair::Ed(p) => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid,
                                  "x": b64(p.public_key().as_ref())}),
            Pair::Rsa(p) => {
                let public = p.public();
                let c: ring::rsa::PublicKeyComponents<Vec<u8>> = public.into();
                json!({"kty": "RSA", "kid": self.kid, "alg": "RS256",
                       "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }

    /// A token with this key's `alg` and `kid`.
    pub(crate) fn sign(&self, claims: &Value) -> String {
        self.sign_with(
            &json!({"alg": self.alg(), "kid": self.kid, "typ": "JWT"}),
            claims,
        )
    }

    /// A token with the given JOSE header, signed by this key.
    pub(crate) fn sign_with(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let sig = match &self.pair {
            Pair::Ec(p) => p.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Pair::Ed(p) => p.sign(input.as_bytes()).as_ref().to_vec(),
            Pair::Rsa(p) => {
                let mut sig = vec![0u8; p.public().modulus_len()];
                p.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(&sig))
    }
}

/// A JWKS document of `keys`.
pub(crate) fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// A token with `alg: none` and no signature.
pub(crate) fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// A token "signed" with HS256 using `secret` (e.g. the public JWKS) as the HMAC key.
pub(crate) fn hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let header = json!({"alg": "HS256", "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", b64(tag.as_ref()))
}

/// `token` with its payload replaced by `claims` (the signature kept).
pub(crate) fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        b64(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// An https server answering every GET with the current JWKS document.
pub(crate) struct JwksServer {
    /// `https://localhost:PORT/keys.json`.
    pub(crate) url: String,
    document: Arc<Mutex<String>>,
    /// GETs served.
    pub(crate) fetches: Arc<Counter>,
    _task: AbortOnDrop,
}

impl JwksServer {
    /// Serves `document` with the certificate `cert` (for `localhost`).
    pub(crate) async fn start(cert: &TestCert, document: String) -> JwksServer {
        let acceptor = super::tls::acceptor(cert, &[b"http/1.1"]);
        let listener = TcpListener::bind(super::loopback()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(Counter::default());
        let (doc, count) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, doc, count) = (acceptor.clone(), doc.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |_req| {
                        count.incr();
                        let body = doc.lock().unwrap().clone();
                        let res = Response::builder()
                            .status(StatusCode::OK)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        async move { Ok::<_, Infallible>(res) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        JwksServer {
            url: format!("https://localhost:{port}/keys.json"),
            document,
            fetches,
            _task: AbortOnDrop(task),
        }
    }

    /// Serves `document` from now on.
    pub(crate) fn set(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }
}

/// An API key as the config lists it: the hex SHA-256 of the key.
pub(crate) fn api_key_hash(key: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, key.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
