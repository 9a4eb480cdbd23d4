//! The state of one upstream, shared by its client, its endpoints and its background task:
//! the endpoint lists the balancer reads, membership (DNS), ejections and health, counters,
//! and the log of every change (rate-limited).
//!
//! Every change is made under one lock and then published as a fresh [`EndpointSet`]; calls
//! never take that lock.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use http::uri::{Authority, Scheme};
use rustls::pki_types::ServerName;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::balancer::EndpointSet;
use super::dns::Resolver;
use super::endpoint::{Endpoint, Failure, Health};
use super::events::{Level, Logs};
use super::health;
use super::retry::RetryBudget;
use super::stats::{EndpointStats, UpstreamStats};
use crate::config;

pub(crate) struct Shared {
    pub(crate) config: Arc<config::Upstream>,
    /// The configured name.
    pub(crate) name: Arc<str>,
    /// What the balancer picks from.
    pub(crate) set: ArcSwap<EndpointSet>,
    /// Round robin's position.
    pub(crate) next: AtomicUsize,
    members: Mutex<Members>,
    tls: ArcSwapOption<TlsConnector>,
    pub(crate) ejections: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) transparent_retries: AtomicU64,
    pub(crate) budget: RetryBudget,
    /// Wakes the background task: an ejection to end, an endpoint to prune.
    pub(crate) wake: Notify,
    /// True once every DNS name was looked up once (answered or not).
    pub(crate) resolved: watch::Sender<bool>,
    resolver: Resolver,
    pub(super) logs: Mutex<Logs>,
}

/// The endpoints, by the configured entry they come from.
struct Members {
    entries: Vec<Entry>,
    /// Endpoints that left (DNS) and still have connections.
    draining: Vec<Arc<Endpoint>>,
    /// No endpoint is usable: calls go to all.
    panic: bool,
}

/// One configured endpoint: a literal address, or a name that becomes one endpoint per
/// address.
struct Entry {
    scheme: Scheme,
    authority: Authority,
    /// The name to resolve; `None` for a literal address.
    host: Option<String>,
    port: u16,
    tls_name: Option<ServerName<'static>>,
    endpoints: Vec<Arc<Endpoint>>,
}

impl Shared {
    /// The shared state of `config`: literal endpoints at once, names once resolved.
    pub(crate) fn new(config: Arc<config::Upstream>) -> Result<Arc<Shared>, String> {
        let tls = if config.endpoints.iter().any(|e| e.scheme == Scheme::HTTPS) {
            Some(Arc::new(TlsConnector::from(super::tls::client_config(
                &config.tls,
            )?)))
        } else {
            None
        };
        let mut entries = Vec::new();
        for e in &config.endpoints {
            let host = e.authority.host().trim_matches(['[', ']']).to_owned();
            let tls_name = if e.scheme == Scheme::HTTPS {
                let name = config
                    .tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host.clone());
                Some(
                    ServerName::try_from(name.clone())
                        .map_err(|_| format!("invalid TLS server name {name:?}"))?,
                )
            } else {
                None
            };
            let literal = host.parse::<IpAddr>().is_ok();
            entries.push(Entry {
                scheme: e.scheme.clone(),
                authority: e.authority.clone(),
                host: (!literal).then_some(host),
                port: e.authority.port_u16().unwrap_or(80),
                tls_name,
                endpoints: Vec::new(),
            });
        }
        let dynamic = entries.iter().any(|e| e.host.is_some());
        let resolver = Resolver::new(&config.dns_servers)?;
        let shared = Arc::new(Shared {
            name: Arc::from(config.name.as_str()),
            set: ArcSwap::from_pointee(EndpointSet::default()),
            next: AtomicUsize::new(0),
            members: Mutex::new(Members {
                entries,
                draining: Vec::new(),
                panic: false,
            }),
            tls: ArcSwapOption::new(tls),
            ejections: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            transparent_retries: AtomicU64::new(0),
            budget: RetryBudget::default(),
            wake: Notify::new(),
            resolved: watch::Sender::new(!dynamic),
            resolver,
            logs: Mutex::new(Logs::default()),
            config,
        });
        {
            let mut m = shared.members();
            for i in 0..m.entries.len() {
                let e = &m.entries[i];
                if e.host.is_none() {
                    let ip = e.authority.host().trim_matches(['[', ']']);
                    if let Ok(ip) = ip.parse::<IpAddr>() {
                        let addr = SocketAddr::new(ip, e.port);
                        shared.change_entry(&mut m, i, vec![addr], false);
                    }
                }
            }
            shared.publish(&mut m);
        }
        Ok(shared)
    }

    fn members(&self) -> MutexGuard<'_, Members> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connector for `https` endpoints, as last (re)loaded.
    pub(crate) fn tls_connector(&self) -> Option<TlsConnector> {
        self.tls.load_full().map(|c| (*c).clone())
    }

    /// Reads the TLS files again; new connections use them.
    pub(crate) fn reload_tls(&self) -> Result<(), String> {
        if self.tls.load().is_some() {
            let config = super::tls::client_config(&self.config.tls)?;
            self.tls.store(Some(Arc::new(TlsConnector::from(config))));
        }
        Ok(())
    }

    /// Makes entry `i`'s endpoints these addresses: new ones are added, missing ones drain.
    fn change_entry(
        self: &Arc<Self>,
        m: &mut Members,
        i: usize,
        addrs: Vec<SocketAddr>,
        log: bool,
    ) -> bool {
        let Some(entry) = m.entries.get_mut(i) else {
            return false;
        };
        let mut changed = false;
        let mut gone = Vec::new();
        entry.endpoints.retain(|ep| {
            let keep = addrs.contains(&ep.addr);
            if !keep {
                gone.push(ep.clone());
            }
            keep
        });
        let initial = if self.config.health_check.is_some() {
            Health::Unknown
        } else {
            Health::Serving
        };
        let mut added = Vec::new();
        for addr in addrs {
            if entry.endpoints.iter().any(|ep| ep.addr == addr) {
                continue;
            }
            let ep = Arc::new(Endpoint::new(
                addr,
                entry.scheme.clone(),
                entry.authority.clone(),
                entry.tls_name.clone(),
                Arc::downgrade(self),
                initial,
            ));
            entry.endpoints.push(ep.clone());
            added.push(ep);
        }
        let from = entry.host.clone();
        for ep in added {
            changed = true;
            if log {
                self.note(
                    Level::Info,
                    &ep.label,
                    format_args!("endpoint added (from {})", from.as_deref().unwrap_or("")),
                );
            }
            if let Some(check) = &self.config.health_check {
                if tokio::runtime::Handle::try_current().is_ok() {
                    health::spawn(ep, Arc::downgrade(self), check.clone());
                }
            }
        }
        for ep in gone {
            changed = true;
            retire(&ep);
            self.note(
                Level::Info,
                &ep.label,
                format_args!("endpoint removed (no longer in DNS): it takes no new calls"),
            );
            m.draining.push(ep);
        }
        changed
    }

    /// Publishes the endpoint lists after a change; logs entering and leaving panic mode.
    fn publish(&self, m: &mut Members) {
        let all: Vec<Arc<Endpoint>> = m
            .entries
            .iter()
            .flat_map(|e| e.endpoints.iter().cloned())
            .collect();
        let mut usable = Vec::new();
        let mut unknown = false;
        for ep in &all {
            let st = ep.status();
            unknown |= st.health == Health::Unknown;
            if st.usable() {
                usable.push(ep.clone());
            }
        }
        // Before the first health checks answered, no endpoint is known bad.
        let panic = usable.is_empty() && !all.is_empty() && !unknown;
        if panic != m.panic {
            m.panic = panic;
            if panic {
                self.note(
                    Level::Warn,
                    "*",
                    format_args!(
                        "every endpoint is ejected or unhealthy: sending calls to all {} of them",
                        all.len()
                    ),
                );
            } else {
                self.note(
                    Level::Info,
                    "*",
                    format_args!("endpoints usable again: {} of {}", usable.len(), all.len()),
                );
            }
        }
        self.set.store(Arc::new(EndpointSet { all, usable }));
    }

    /// Ejects `ep` after `n` failures in a row, for an exponentially growing period.
    pub(crate) fn eject(&self, ep: &Arc<Endpoint>, why: Failure, n: u32) {
        let Some(o) = self.config.outlier else {
            return;
        };
        let mut m = self.members();
        if ep.is_removed() {
            return;
        }
        let now = Instant::now();
        let period = {
            let mut st = ep.status();
            if st.ejected_until.is_some() || st.draining {
                return;
            }
            // A long healthy spell forgets earlier ejections.
            if st.restored_at.is_some_and(|t| now - t >= o.max_ejection) {
                st.ejections = 0;
            }
            st.ejections = st.ejections.saturating_add(1);
            let period = o
                .base_ejection
                .saturating_mul(1u32 << (st.ejections - 1).min(16))
                .min(o.max_ejection);
            st.ejected_until = Some(now + period);
            period
        };
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.note(
            Level::Warn,
            &ep.label,
            format_args!(
                "endpoint ejected for {period:?} after {n} {} in a row",
                why.as_str()
            ),
        );
        self.publish(&mut m);
        self.wake.notify_one();
    }

    /// Ends the ejections that are due; the time the next one is due.
    fn restore_due(&self) -> Option<Instant> {
        let mut m = self.members();
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut changed = false;
        let all: Vec<Arc<Endpoint>> = m
            .entries
            .iter()
            .flat_map(|e| e.endpoints.iter().cloned())
            .collect();
        for ep in all {
            let mut st = ep.status();
            match st.ejected_until {
                Some(t) if t <= now => {
                    st.ejected_until = None;
                    st.restored_at = Some(now);
                    changed = true;
                    drop(st);
                    self.note(Level::Info, &ep.label, format_args!("endpoint restored"));
                }
                Some(t) => next = Some(next.map_or(t, |n| n.min(t))),
                None => {}
            }
        }
        if changed {
            self.publish(&mut m);
        }
        next
    }

    /// Records what a health check said about `ep`.
    pub(crate) fn set_health(&self, ep: &Arc<Endpoint>, health: Health) {
        let mut m = self.members();
        if ep.is_removed() {
            return;
        }
        let before = {
            let mut st = ep.status();
            std::mem::replace(&mut st.health, health)
        };
        if before == health {
            return;
        }
        match health {
            Health::Serving => self.note(
                Level::Info,
                &ep.label,
                format_args!("endpoint is SERVING: back in the balancer"),
            ),
            _ => self.note(
                Level::Warn,
                &ep.label,
                format_args!(
                    "endpoint is not serving (health check answered otherwise or not within {:?}): out of the balancer",
                    self.config.health_check.as_ref().map(|h| h.timeout).unwrap_or_default()
                ),
            ),
        }
        self.publish(&mut m);
    }

    /// Looks up every name again and applies the answers; a failed lookup keeps the last
    /// good answer.
    async fn refresh_dns(self: &Arc<Self>) {
        let names: Vec<(usize, String, u16)> = self
            .members()
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.host.clone().map(|h| (i, h, e.port)))
            .collect();
        for (i, host, port) in names {
            match self.resolver.resolve(&host, port).await {
                Ok(addrs) => {
                    let mut m = self.members();
                    if self.change_entry(&mut m, i, addrs, true) {
                        self.publish(&mut m);
                    }
                }
                Err(e) => {
                    let kept = self
                        .members()
                        .entries
                        .get(i)
                        .map_or(0, |e| e.endpoints.len());
                    self.note(
                        Level::Warn,
                        &host,
                        format_args!(
                            "DNS lookup failed ({e}); keeping the last answer ({kept} endpoints)"
                        ),
                    );
                }
            }
        }
    }

    /// Forgets draining endpoints whose connections all closed.
    fn prune_draining(&self) -> bool {
        let mut m = self.members();
        m.draining.retain(|ep| ep.pool.open_connections() > 0);
        !m.draining.is_empty()
    }

    /// Takes every endpoint out (the upstream is being dropped): connections close as their
    /// streams end, health checks stop.
    pub(crate) fn retire_all(&self) {
        let mut m = self.members();
        for e in &mut m.entries {
            for ep in e.endpoints.drain(..) {
                retire(&ep);
            }
        }
        for ep in m.draining.drain(..) {
            ep.pool.clear();
        }
        self.set.store(Arc::new(EndpointSet::default()));
    }

    /// Resolves names, ends ejections and prunes draining endpoints, until aborted.
    pub(crate) async fn run(self: Arc<Self>) {
        let dynamic = self.members().entries.iter().any(|e| e.host.is_some());
        let mut next_dns = Instant::now();
        loop {
            if dynamic && Instant::now() >= next_dns {
                self.refresh_dns().await;
                self.resolved.send_replace(true);
                next_dns = Instant::now() + self.config.dns_refresh;
            }
            let mut wake_at = Instant::now() + Duration::from_secs(3600);
            if dynamic {
                wake_at = wake_at.min(next_dns);
            }
            if let Some(t) = self.restore_due() {
                wake_at = wake_at.min(t);
            }
            if self.prune_draining() {
                wake_at = wake_at.min(Instant::now() + Duration::from_secs(1));
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// A snapshot for metrics.
    pub(crate) fn stats(&self) -> UpstreamStats {
        let m = self.members();
        let current = m.entries.iter().flat_map(|e| e.endpoints.iter());
        let endpoints: Vec<EndpointStats> = current
            .chain(m.draining.iter())
            .map(|ep| EndpointStats {
                address: ep.label.clone(),
                state: ep.status().state(),
                in_flight: ep.in_flight(),
                connections: ep.pool.open_connections(),
            })
            .collect();
        UpstreamStats {
            upstream: self.name.clone(),
            connections_open: endpoints.iter().map(|e| e.connections).sum(),
            endpoints,
            ejections_total: self.ejections.load(Ordering::Relaxed),
            retries_total: self.retries.load(Ordering::Relaxed),
            transparent_retries_total: self.transparent_retries.load(Ordering::Relaxed),
            panic: m.panic,
        }
    }
}

/// Takes an endpoint out for good: no new calls, its connections close once their streams
/// end, its health checks stop.
fn retire(ep: &Arc<Endpoint>) {
    ep.mark_removed();
    ep.status().draining = true;
    ep.pool.clear();
}
