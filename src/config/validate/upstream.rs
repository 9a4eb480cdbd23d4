//! Validation of `upstreams[]`: endpoints, TLS, health checks, keepalive and ejection.

use std::time::Duration;

use super::*;
use crate::config::file;
use crate::config::model::*;

impl Validator<'_> {
    pub(super) fn upstream(&self, i: usize, u: file::Upstream) -> Result<Upstream> {
        let key = |k: &str| format!("upstreams[{i}].{k}");
        if u.name.is_empty() {
            return Err(self.error(key("name"), None, "must not be empty".into()));
        }
        if u.endpoints.is_empty() {
            return Err(self.error(
                key("endpoints"),
                Some(&u.name),
                "at least one endpoint is required".into(),
            ));
        }
        let mut endpoints = Vec::new();
        for (j, e) in u.endpoints.iter().enumerate() {
            endpoints.push(
                Endpoint::parse(e).map_err(|m| {
                    self.error(format!("upstreams[{i}].endpoints[{j}]"), Some(e), m)
                })?,
            );
        }
        let dns_refresh = u.dns_refresh.map_or(Duration::from_secs(10), |d| d.0);
        if dns_refresh < Duration::from_millis(100) {
            return Err(self.error(
                key("dns_refresh"),
                Some("dns_refresh"),
                "must be at least 100ms".into(),
            ));
        }
        let connect_timeout = u.connect_timeout.map_or(Duration::from_secs(5), |d| d.0);
        if connect_timeout.is_zero() {
            return Err(self.error(
                key("connect_timeout"),
                Some("connect_timeout"),
                "must be more than 0".into(),
            ));
        }
        let keepalive = {
            let d = Keepalive::default();
            let k = u.keepalive;
            Keepalive {
                interval: k
                    .as_ref()
                    .and_then(|k| k.interval)
                    .map_or(d.interval, |v| v.0),
                timeout: k
                    .as_ref()
                    .and_then(|k| k.timeout)
                    .map_or(d.timeout, |v| v.0),
            }
        };
        if keepalive.interval.is_zero() || keepalive.timeout.is_zero() {
            return Err(self.error(
                key("keepalive"),
                Some("keepalive"),
                "interval and timeout must be more than 0".into(),
            ));
        }
        let health_check = u.health_check.map(|h| HealthCheck {
            interval: h.interval.map_or(Duration::from_secs(5), |d| d.0),
            timeout: h.timeout.map_or(Duration::from_secs(1), |d| d.0),
            service: h.service,
        });
        if let Some(h) = &health_check {
            if h.interval.is_zero() || h.timeout.is_zero() {
                return Err(self.error(
                    key("health_check"),
                    Some("health_check"),
                    "interval and timeout must be more than 0".into(),
                ));
            }
        }
        let outlier = match u.outlier {
            None => Some(Outlier::default()),
            Some(o) if !o.enabled => None,
            Some(o) => {
                let d = Outlier::default();
                let o = Outlier {
                    consecutive_failures: o.consecutive_failures.unwrap_or(d.consecutive_failures),
                    base_ejection: o.base_ejection.map_or(d.base_ejection, |v| v.0),
                    max_ejection: o.max_ejection.map_or(d.max_ejection, |v| v.0),
                };
                if o.consecutive_failures == 0 || o.base_ejection.is_zero() {
                    return Err(self.error(
                        key("outlier"),
                        Some("outlier"),
                        "consecutive_failures and base_ejection must be more than 0".into(),
                    ));
                }
                Some(Outlier {
                    max_ejection: o.max_ejection.max(o.base_ejection),
                    ..o
                })
            }
        };
        let tls = match u.tls {
            None => ClientTls::default(),
            Some(t) => {
                if t.cert.is_some() != t.key.is_some() {
                    return Err(self.error(
                        key("tls"),
                        Some(if t.cert.is_some() { "cert" } else { "key" }),
                        "a client certificate needs both cert and key".into(),
                    ));
                }
                ClientTls {
                    ca: t.ca,
                    cert: t.cert,
                    key: t.key,
                    server_name: t.server_name,
                }
            }
        };
        let json = match u.json {
            None => JsonConfig::default(),
            Some(j) => {
                let reflection = match j.reflection {
                    None if j.passthrough => Reflection::Off,
                    None => Reflection::Auto,
                    Some(file::Reflection::Auto) => Reflection::Auto,
                    Some(file::Reflection::On) => Reflection::On,
                    Some(file::Reflection::Off) => Reflection::Off,
                };
                if j.passthrough && (j.descriptors.is_some() || reflection != Reflection::Off) {
                    return Err(self.error(
                        key("json"),
                        Some("passthrough"),
                        "passthrough sends JSON unchanged, so it cannot be combined with descriptors or reflection".into(),
                    ));
                }
                JsonConfig {
                    descriptors: j.descriptors,
                    reflection,
                    refresh: j.refresh.map_or(DEFAULT_REFLECTION_REFRESH, |d| d.0),
                    passthrough: j.passthrough,
                    ignore_unknown_fields: j.ignore_unknown_fields,
                }
            }
        };
        if let Some(p) = &u.openapi {
            if !p.starts_with('/') {
                return Err(self.error(
                    key("openapi"),
                    Some("openapi"),
                    format!("invalid path {p:?}: must start with /"),
                ));
            }
        }
        Ok(Upstream {
            name: u.name,
            endpoints,
            dns_refresh,
            balance: match u.balance {
                Some(file::Balance::LeastRequest) => Balance::LeastRequest,
                Some(file::Balance::RoundRobin) | None => Balance::RoundRobin,
            },
            connect_timeout,
            keepalive,
            health_check,
            outlier,
            timeout: u.timeout.map(|d| d.0),
            max_message_size: u.max_message_size.map_or(DEFAULT_MAX_MESSAGE_SIZE, |s| s.0),
            tls,
            json,
            rest: u.rest.unwrap_or(true),
            openapi: u.openapi,
            dns_servers: Vec::new(),
        })
    }
}
