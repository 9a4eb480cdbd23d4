//! The JWT variants' key and token: an ES256 key made for the run, its JWKS document (the
//! proxy reads it from a file, so the key is cached from the first call), and one token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

/// A JWKS document with a fresh ES256 key, and a token it signed (valid for a day).
pub fn es256_key_and_token() -> Result<(String, String), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|e| e.to_string())?;
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
        .map_err(|e| e.to_string())?;
    let point = pair.public_key().as_ref();
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"bench","alg":"ES256","x":"{}","y":"{}"}}]}}"#,
        b64(&point[1..33]),
        b64(&point[33..])
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        + 86_400;
    let header = b64(br#"{"alg":"ES256","kid":"bench","typ":"JWT"}"#);
    let claims = b64(format!(
        r#"{{"iss":"https://issuer.bench","aud":"bench","sub":"load","exp":{exp}}}"#
    )
    .as_bytes());
    let input = format!("{header}.{claims}");
    let sig = pair
        .sign(&rng, input.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok((jwks, format!("{input}.{}", b64(sig.as_ref()))))
}

/// The lines that put JWT auth on the bench config's one route.
pub fn route_auth(jwks: &std::path::Path) -> String {
    format!(
        "    auth:\n      jwt:\n        jwks: {}\n        issuer: https://issuer.bench\n        audience: bench\n        claims_to_headers: [{{ claim: sub, header: x-user }}]\n",
        jwks.display()
    )
}
