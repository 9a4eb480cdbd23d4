//! Third-party clients (connect-node, Google's grpc-web) sending tokens through their own
//! interceptors to a JWT route (tests/interop/auth.mjs).

use serde_json::json;

use super::*;
use crate::support::jwt::{self, SigningKey};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_send_tokens_through_interceptors() {
    if !crate::interop::prerequisites_present() {
        return;
    }
    let dir = temp_dir("auth-interop");
    let key = SigningKey::es256("interop");
    let jwks = write_file(&dir, "jwks.json", &jwt::jwks(&[&key]));
    let backend = spawn_backend().await;
    let proxy = spawn_proxy_yaml(&format!(
        r#"
listeners: [{{ address: 127.0.0.1:0 }}]
upstreams: [{{ name: backend, endpoints: ["{url}"] }}]
routes:
  - match: {{ service: switchboard.testing.v1.TestService }}
    upstream: backend
    auth:
      jwt:
        jwks: "{jwks}"
        issuer: https://issuer.test
        audience: greeter
        claims_to_headers: [{{ claim: sub, header: x-user }}]
"#,
        url = backend.url,
        jwks = jwks.display(),
    ))
    .await;
    let claims = |exp: i64| json!({"iss": "https://issuer.test", "aud": "greeter", "sub": "alice", "exp": exp});
    let good = key.sign(&claims(jwt::now() + 600));
    let expired = key.sign(&claims(jwt::now() - 3600));
    crate::interop::run_script(
        "auth.mjs",
        &proxy.url,
        &["--token", &good, "--bad-token", &expired],
    )
    .await;
    proxy.running.shutdown().await;
}
