//! Fetching a JWKS document over https: one GET on a fresh HTTP/1.1 connection, bounded in
//! time (connect, TLS, answer and body together) and in size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

/// A JWKS larger than this is refused (real ones are a few KiB).
const MAX_BODY: usize = 1 << 20;

/// Where keys are fetched from, with the TLS settings to fetch them.
#[derive(Debug)]
pub(crate) struct Fetcher {
    uri: Uri,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

impl Fetcher {
    /// `url` must be `https://…` (validated by the config).
    pub(crate) fn new(
        url: &str,
        ca: Option<&std::path::Path>,
        timeout: Duration,
    ) -> Result<Fetcher, String> {
        let uri: Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            return Err("the JWKS URL must be https://host/…".into());
        }
        let files = crate::config::ClientTls {
            ca: ca.map(Into::into),
            ..Default::default()
        };
        let config = crate::upstream::tls::client_config(&files)?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            uri,
            tls: Arc::new(config),
            timeout,
        })
    }

    /// The URL, for logs.
    pub(crate) fn url(&self) -> &Uri {
        &self.uri
    }

    /// The document's bytes, or why not (for the log; never shown to callers).
    pub(crate) async fn fetch(&self) -> Result<Bytes, String> {
        match tokio::time::timeout(self.timeout, self.get()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn get(&self) -> Result<Bytes, String> {
        let host = self.uri.host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.uri.port_u16().unwrap_or(443);
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| format!("invalid server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake failed: {e}"))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = self
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let req = Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "switchboard")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let result = async {
            let res = sender
                .send_request(req)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if res.status() != StatusCode::OK {
                return Err(format!("HTTP {}", res.status()));
            }
            let body = Limited::new(res.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the body failed: {e}"))?;
            Ok(body.to_bytes())
        }
        .await;
        driver.abort();
        result
    }
}
