//! TLS material for tests: a self-signed certificate for `localhost` and 127.0.0.1, written
//! to PEM files, plus rustls client and server configs that trust it.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A self-signed certificate and its key.
#[derive(Debug)]
pub(crate) struct TestCert {
    pub(crate) cert_der: CertificateDer<'static>,
    pub(crate) key_der: Vec<u8>,
    /// PEM files in a fresh directory under the target's temp dir.
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
}

/// Generates a certificate for `localhost` and `127.0.0.1` and writes it out as PEM.
pub(crate) fn test_cert(name: &str) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = super::temp_dir(name);
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    TestCert {
        cert_der: ck.cert.der().clone(),
        key_der: ck.signing_key.serialize_der(),
        cert_path,
        key_path,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server acceptor for `cert` offering the given ALPN protocols.
pub(crate) fn acceptor(cert: &TestCert, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert_der.clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Connects with TLS to `addr`, trusting only `cert`, offering one ALPN protocol.
pub(crate) async fn connect(
    addr: std::net::SocketAddr,
    cert: &TestCert,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"))
}

/// A certificate authority with a server certificate (for `localhost` and 127.0.0.1) and a
/// client certificate it signed, all written out as PEM: mTLS material.
#[derive(Debug)]
pub(crate) struct TestPki {
    pub(crate) ca_der: CertificateDer<'static>,
    pub(crate) ca_path: PathBuf,
    pub(crate) server: TestCert,
    pub(crate) client: TestCert,
}

/// Generates a CA, a server certificate and a client certificate (`test-client`).
pub(crate) fn test_pki(name: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = super::temp_dir(name);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "switchboard test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let leaf = |sans: Vec<String>, cn: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let cert_path = dir.join(format!("{file}.pem"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestCert {
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_path,
            key_path,
        }
    };
    let server = leaf(
        vec!["localhost".to_owned(), "127.0.0.1".to_owned()],
        "localhost",
        "server",
    );
    let client = leaf(vec!["test-client".to_owned()], "test-client", "client");
    TestPki {
        ca_der: ca.der().clone(),
        ca_path,
        server,
        client,
    }
}

/// A server acceptor (ALPN h2) with the PKI's server certificate that requires a client
/// certificate signed by its CA.
pub(crate) fn mtls_acceptor(pki: &TestPki) -> tokio_rustls::TlsAcceptor {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server.key_der.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.cert_der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
