//! TLS for listeners: certificate chain and key from PEM files, ALPN h2 and http/1.1, and
//! client certificates (mTLS) verified against `client_ca`, required or optional.
//!
//! Every file is read again by each call of [`load_server_config`], which a reload makes: new
//! certificates and CAs apply to connections accepted from then on.

use std::fmt::Write as _;
use std::sync::Arc;

use http::HeaderValue;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::config::{ClientAuth, ServerTls};
use crate::upstream::tls::{provider, read_certs, read_key};

/// Loads a listener's TLS config.
pub(crate) fn load_server_config(files: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&files.cert)?;
    let key: PrivateKeyDer<'static> = read_key(&files.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (&files.client_ca, files.client_auth) {
        (Some(ca), ClientAuth::Required | ClientAuth::Optional) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate in {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            // Optional: a client without a certificate is served (without an identity); one
            // that sends a certificate must still send a valid one.
            let verifier = match files.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("client_ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not work together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verified identity of a client certificate (mTLS), as sent upstream in the listener's
/// `identity_header`; none without a client certificate. rustls only completes a handshake
/// with a certificate that chains to `client_ca` and is valid now, so the certificate read
/// here is a verified one.
pub(crate) fn client_identity(session: &rustls::ServerConnection) -> Option<HeaderValue> {
    let cert = session.peer_certificates()?.first()?;
    identity_of(cert)
}

/// `Hash=<sha256 of the DER, hex>;Subject="<DN>";DNS=…;URI=…;IP=…;Email=…`, in the shape of
/// Envoy's `x-forwarded-client-cert` so backends that parse one can parse the other. Values
/// with separators are quoted; characters a header cannot carry become `?`.
fn identity_of(cert: &CertificateDer<'_>) -> Option<HeaderValue> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let mut out = String::with_capacity(128);
    out.push_str("Hash=");
    for b in ring::digest::digest(&ring::digest::SHA256, cert.as_ref()).as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    push_field(&mut out, "Subject", &parsed.subject().to_string(), true);
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => push_field(&mut out, "DNS", d, false),
                GeneralName::URI(u) => push_field(&mut out, "URI", u, false),
                GeneralName::RFC822Name(e) => push_field(&mut out, "Email", e, false),
                GeneralName::IPAddress(bytes) => {
                    if let Some(ip) = ip_from_bytes(bytes) {
                        push_field(&mut out, "IP", &ip.to_string(), false);
                    }
                }
                _ => {}
            }
        }
    }
    HeaderValue::from_str(&out).ok()
}

fn ip_from_bytes(b: &[u8]) -> Option<std::net::IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Appends `;key=value`, quoting the value when asked or when it holds a separator.
fn push_field(out: &mut String, key: &str, value: &str, quote: bool) {
    let quote = quote || value.contains([';', ',', '=', '"', '\\', ' ']);
    out.push(';');
    out.push_str(key);
    out.push('=');
    if quote {
        out.push('"');
    }
    for c in value.chars() {
        match c {
            '"' | '\\' if quote => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn identity_names_subject_and_sans() {
        let mut params = rcgen::CertificateParams::new(vec!["alice.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice \"the\" client");
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://acme/alice".try_into().unwrap(),
        ));
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress("10.1.2.3".parse().unwrap()));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let value = identity_of(cert.der()).unwrap();
        let text = value.to_str().unwrap();
        assert!(text.starts_with("Hash="), "{text}");
        assert!(
            text.contains(r#";Subject="CN=alice \"the\" client""#),
            "{text}"
        );
        assert!(text.contains(";DNS=alice.example"), "{text}");
        assert!(text.contains(";URI=spiffe://acme/alice"), "{text}");
        assert!(text.contains(";IP=10.1.2.3"), "{text}");
    }
}
