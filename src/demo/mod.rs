//! `switchboard demo`: the demo gRPC service, the proxy in front of it and the web page that
//! calls it, on one port.
//!
//! ```text
//! browser ──(Connect JSON/proto, gRPC-Web binary/text,
//!           WebSocket grpc-websockets)──▶ proxy on --listen ──(gRPC, h2c)──▶
//!   demo service on 127.0.0.1:ephemeral
//! GET / (and /app.js, /app.css) ──▶ the page, embedded in the binary (web-demo/dist)
//! ```
//!
//! The service speaks protobuf only; the proxy transcodes JSON callers with the service's
//! descriptor set (compiled in by build.rs), as it would for any proto-only backend.

mod assets;
mod service;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::config::Config;
use crate::server::Running;

pub use self::assets::assets;

/// The demo service's `FileDescriptorSet` (proto/switchboard/demo/v1/demo.proto).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo_descriptor.bin"));

/// A running demo: the service and the proxy serving the page.
#[derive(Debug)]
pub struct Demo {
    url: String,
    proxy: Running,
    service: service::Backend,
}

impl Demo {
    /// The page's URL, e.g. `http://127.0.0.1:8080/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The proxy's bound address.
    pub fn addr(&self) -> SocketAddr {
        // `spawn` configures exactly one listener.
        self.proxy
            .addrs()
            .first()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The demo service's own address (plain gRPC, h2c), behind the proxy.
    pub fn service_addr(&self) -> SocketAddr {
        self.service.addr
    }

    /// Stops the proxy (letting open calls finish), then the service.
    pub async fn shutdown(self) {
        self.proxy.shutdown().await;
        drop(self.service);
    }
}

/// Starts the demo service on an ephemeral loopback port and the proxy on `listen`, serving
/// the page at `/`. Returns once both are bound.
pub async fn spawn(listen: SocketAddr) -> anyhow::Result<Demo> {
    let service = service::spawn()
        .await
        .context("cannot start the demo service")?;
    let mut config = Config::quick(
        listen,
        &format!("http://{}", service.addr),
        vec!["*".to_owned()],
    )?;
    config.assets = Some(assets());
    // JSON callers are transcoded by the proxy with the demo's descriptors. The proxy reads
    // the file while it starts, so it is gone again as soon as `spawn` returns.
    let descriptors = TempFile::write("switchboard-demo-descriptors", DESCRIPTOR_SET)?;
    for upstream in &mut config.upstreams {
        Arc::make_mut(upstream).json.descriptors = Some(descriptors.0.clone());
    }
    let proxy = crate::server::spawn(config).await?;
    drop(descriptors);
    let addr = proxy
        .addrs()
        .first()
        .copied()
        .context("the proxy has no listener")?;
    Ok(Demo {
        url: page_url(addr),
        proxy,
        service,
    })
}

/// The URL to open: an unspecified address (0.0.0.0, ::) is reached through loopback.
fn page_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if !ip.is_unspecified() => ip,
        std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
    };
    format!("http://{}/", SocketAddr::new(ip, addr.port()))
}

/// A file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn write(stem: &str, bytes: &[u8]) -> anyhow::Result<TempFile> {
        let dir = std::env::temp_dir();
        let mut last_error = None;
        for attempt in 0..16_u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = dir.join(format!(
                "{stem}-{}-{nanos}-{attempt}.binpb",
                std::process::id()
            ));
            // create_new: never follow or overwrite what is already there.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let file = TempFile(path);
                    f.write_all(bytes)
                        .with_context(|| format!("cannot write {}", file.0.display()))?;
                    return Ok(file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()))
                }
            }
        }
        Err(anyhow::anyhow!(
            "cannot create a temporary file in {}: {last_error:?}",
            dir.display()
        ))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn page_url_uses_loopback_for_unspecified_addresses() {
        assert_eq!(
            page_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(page_url("[::]:80".parse().unwrap()), "http://[::1]:80/");
        assert_eq!(
            page_url("192.168.1.2:9000".parse().unwrap()),
            "http://192.168.1.2:9000/"
        );
    }

    #[test]
    fn descriptor_set_describes_the_demo_service() {
        let schema = crate::protocol::json::Schema::from_descriptor_set(DESCRIPTOR_SET).unwrap();
        assert!(schema
            .method("/switchboard.demo.v1.DemoService/Greet")
            .is_some());
        for method in ["Countdown", "Chat", "Upload"] {
            assert!(schema
                .method(&format!("/switchboard.demo.v1.DemoService/{method}"))
                .is_some());
        }
    }
}
