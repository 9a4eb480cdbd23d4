//! JSON Web Keys (RFC 7517) for the three accepted signature algorithms, verified with ring:
//! RS256 (RSA keys of 2048 to 8192 bits), ES256 (P-256) and EdDSA (Ed25519).
//!
//! A key is bound to one algorithm by its type and curve, so a token cannot choose how its
//! key is used: `alg: none`, HMAC (`HS256` "signed" with a public key as the secret) and
//! every other algorithm are refused before any key is looked at.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

/// The accepted signature algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl Alg {
    /// The algorithm a JOSE header names, if it is accepted.
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }
}

/// Base64url as JWK and JWS use it; padding tolerated in keys (some publishers add it).
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A verifying key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// The key id tokens name in their `kid`.
    pub(crate) kid: Option<String>,
    /// The one algorithm this key verifies.
    pub(crate) alg: Alg,
    material: Material,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`.
    P256(Vec<u8>),
    Ed25519(Vec<u8>),
}

impl Key {
    /// Whether `sig` is this key's signature of `msg`.
    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            Material::Rsa { n, e } => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, msg, sig)
                .is_ok(),
            Material::P256(point) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(msg, sig)
                    .is_ok()
            }
            Material::Ed25519(x) => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(msg, sig)
                .is_ok(),
        }
    }
}

#[derive(Deserialize)]
struct KeySetJson {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct JwkJson {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The usable keys of a JWKS document. Keys of other types, algorithms or uses are skipped
/// (a JWKS may publish encryption keys too); a document with no usable key is an error.
pub(crate) fn parse_set(json: &[u8]) -> Result<Vec<Key>, String> {
    let set: KeySetJson =
        serde_json::from_slice(json).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, value) in set.keys.into_iter().enumerate() {
        match serde_json::from_value::<JwkJson>(value)
            .map_err(|e| e.to_string())
            .and_then(parse_key)
        {
            Ok(k) => keys.push(k),
            Err(why) => skipped.push(format!("keys[{i}]: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable key (RS256, ES256 or EdDSA signing keys){}{}",
            if skipped.is_empty() { "" } else { ": " },
            skipped.join("; ")
        ));
    }
    Ok(keys)
}

fn field(v: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let text = v.as_deref().ok_or_else(|| format!("missing {name}"))?;
    B64URL
        .decode(text)
        .map_err(|e| format!("{name} is not base64url: {e}"))
}

fn parse_key(j: JwkJson) -> Result<Key, String> {
    if j.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("not a signing key (use)".into());
    }
    let (alg, material) = match (j.kty.as_str(), j.crv.as_deref()) {
        ("RSA", _) => {
            let mut n = field(&j.n, "n")?;
            let e = field(&j.e, "e")?;
            let zeros = n.iter().take_while(|b| **b == 0).count();
            n.drain(..zeros);
            let bits = n.len() * 8;
            if !(2048..=8192).contains(&bits) || e.is_empty() {
                return Err(format!("RSA key of {bits} bits (2048 to 8192 accepted)"));
            }
            (Alg::Rs256, Material::Rsa { n, e })
        }
        ("EC", Some("P-256")) => {
            let x = field(&j.x, "x")?;
            let y = field(&j.y, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            let mut point = Vec::with_capacity(65);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (Alg::Es256, Material::P256(point))
        }
        ("OKP", Some("Ed25519")) => {
            let x = field(&j.x, "x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
            (Alg::EdDsa, Material::Ed25519(x))
        }
        (kty, crv) => {
            return Err(format!(
                "unsupported key type {kty}{}",
                crv.map(|c| format!(" ({c})")).unwrap_or_default()
            ))
        }
    };
    // A key that names an algorithm must name the one its type implies.
    if let Some(named) = j.alg.as_deref() {
        if Alg::from_name(named) != Some(alg) {
            return Err(format!("alg {named} does not fit the key type"));
        }
    }
    Ok(Key {
        kid: j.kid,
        alg,
        material,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    #[test]
    fn ec_and_ed_keys_verify_their_own_signatures_only() {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let point = ec.public_key().as_ref();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let json = format!(
            r#"{{"keys":[
              {{"kty":"EC","crv":"P-256","kid":"e1","x":"{}","y":"{}","alg":"ES256","use":"sig"}},
              {{"kty":"OKP","crv":"Ed25519","kid":"d1","x":"{}"}},
              {{"kty":"oct","k":"c2VjcmV0","kid":"h1"}},
              {{"kty":"EC","crv":"P-256","kid":"enc","x":"{}","y":"{}","use":"enc"}}
            ]}}"#,
            b64(&point[1..33]),
            b64(&point[33..]),
            b64(ed.public_key().as_ref()),
            b64(&point[1..33]),
            b64(&point[33..]),
        );
        let keys = parse_set(json.as_bytes()).unwrap();
        assert_eq!(keys.len(), 2, "the HMAC and encryption keys are skipped");
        assert_eq!(keys[0].alg, Alg::Es256);
        assert_eq!(keys[1].alg, Alg::EdDsa);
        let msg = b"header.payload";
        let sig = ec.sign(&rng, msg).unwrap();
        assert!(keys[0].verify(msg, sig.as_ref()));
        assert!(!keys[0].verify(b"header.payloaD", sig.as_ref()));
        assert!(!keys[1].verify(msg, sig.as_ref()));
        let sig = ed.sign(msg);
        assert!(keys[1].verify(msg, sig.as_ref()));
        assert!(!keys[0].verify(msg, sig.as_ref()));
    }

    #[test]
    fn refused_documents_and_algorithms() {
        assert!(parse_set(b"{}").is_err());
        assert!(parse_set(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        for name in ["none", "HS256", "RS512", "PS256", "ES384", "rs256"] {
            assert_eq!(Alg::from_name(name), None, "{name}");
        }
    }
}
