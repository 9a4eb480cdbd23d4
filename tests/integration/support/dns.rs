//! A DNS server on loopback (hickory-server, UDP and TCP) that serves the zone `test.` from
//! memory; a test changes its A/AAAA records while the proxy runs, to drive re-resolution.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

/// Answers expire at once: every lookup asks the server.
const TTL: u32 = 0;

/// A running DNS server for the zone `test.`.
pub(crate) struct DnsServer {
    /// Where it listens (UDP and TCP).
    pub(crate) addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler<TokioRuntimeProvider>>,
    server: Option<Server<Catalog>>,
    serial: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl DnsServer {
    /// Starts the server on an ephemeral loopback port, with an empty zone.
    pub(crate) async fn start() -> DnsServer {
        let origin = Name::from_str("test.").unwrap();
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        let soa = SOA::new(
            Name::from_str("ns.test.").unwrap(),
            Name::from_str("admin.test.").unwrap(),
            1,
            60,
            60,
            60,
            TTL,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![zone.clone()]);
        // UDP and TCP on the same port: bind TCP first, then UDP on its port.
        let (tcp, udp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = tcp.local_addr().unwrap().port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)).await {
                break (tcp, udp);
            }
        };
        let addr = tcp.local_addr().unwrap();
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        DnsServer {
            addr,
            zone,
            server: Some(server),
            serial: std::sync::atomic::AtomicU32::new(2),
        }
    }

    /// Makes `name` (in `test.`, e.g. `svc.test.`) resolve to exactly `ips` (none: no
    /// address).
    pub(crate) async fn set(&self, name: &str, ips: &[IpAddr]) {
        let name = Name::from_str(name).unwrap();
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut v4 = RecordSet::new(name.clone(), RecordType::A, serial);
        let mut v6 = RecordSet::new(name.clone(), RecordType::AAAA, serial);
        for ip in ips {
            match ip {
                IpAddr::V4(ip) => {
                    v4.insert(
                        Record::from_rdata(name.clone(), TTL, RData::A(A(*ip))),
                        serial,
                    );
                }
                IpAddr::V6(ip) => {
                    v6.insert(
                        Record::from_rdata(name.clone(), TTL, RData::AAAA(AAAA(*ip))),
                        serial,
                    );
                }
            }
        }
        let mut records = self.zone.records_mut().await;
        let lower = LowerName::new(&name);
        for set in [v4, v6] {
            let key = RrKey::new(lower.clone(), set.record_type());
            if set.is_empty() {
                records.remove(&key);
            } else {
                records.insert(key, Arc::new(set));
            }
        }
    }

    /// Stops answering (queries then time out).
    pub(crate) async fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = server.shutdown_gracefully().await;
        }
    }
}
