//! TLS for listeners: certificate chain and key from PEM files, ALPN h2 and http/1.1.

use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;

use crate::config::ServerTls;

/// Loads a listener's TLS config.
pub(crate) fn load_server_config(files: &ServerTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = crate::upstream::tls::read_certs(&files.cert)?;
    let key: PrivateKeyDer<'static> = crate::upstream::tls::read_key(&files.key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::upstream::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key do not work together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The verified identity of a client certificate (mTLS), as sent upstream in the listener's
/// `identity_header`; none without a client certificate.
pub(crate) fn client_identity(_session: &rustls::ServerConnection) -> Option<http::HeaderValue> {
    None
}
