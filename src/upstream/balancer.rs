//! Picking an endpoint for a call. The endpoint lists are rebuilt and published (`arc-swap`)
//! only when something changes (DNS, ejection, health); a pick reads the published lists
//! without a lock: round robin is one shared counter, least request two random draws.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::endpoint::Endpoint;
use crate::config::Balance;

/// The endpoints a pick chooses from.
#[derive(Debug, Default)]
pub(crate) struct EndpointSet {
    /// Every current endpoint (not draining).
    pub(crate) all: Vec<Arc<Endpoint>>,
    /// Those neither ejected nor unhealthy.
    pub(crate) usable: Vec<Arc<Endpoint>>,
}

impl EndpointSet {
    /// An endpoint for a call: among the usable ones, or among all when none is usable
    /// (panic mode: better to try them than to fail every call). `avoid` (where a previous
    /// attempt went) is skipped when another endpoint is there.
    pub(crate) fn pick(
        &self,
        balance: Balance,
        next: &AtomicUsize,
        avoid: Option<&Endpoint>,
    ) -> Option<&Arc<Endpoint>> {
        let list = if self.usable.is_empty() {
            &self.all
        } else {
            &self.usable
        };
        if let Some(ep) = pick_from(list, balance, next, avoid) {
            return Some(ep);
        }
        // Only the avoided endpoint is usable: any other one, even if ejected, else it again.
        avoid?;
        pick_from(&self.all, balance, next, avoid).or_else(|| list.first())
    }
}

fn is(ep: &Arc<Endpoint>, avoid: Option<&Endpoint>) -> bool {
    avoid.is_some_and(|a| std::ptr::eq(Arc::as_ptr(ep), a))
}

fn pick_from<'a>(
    list: &'a [Arc<Endpoint>],
    balance: Balance,
    next: &AtomicUsize,
    avoid: Option<&Endpoint>,
) -> Option<&'a Arc<Endpoint>> {
    let n = list.len();
    match n {
        0 => None,
        1 => Some(&list[0]).filter(|ep| !is(ep, avoid)),
        _ => match balance {
            Balance::RoundRobin => {
                let i = next.fetch_add(1, Ordering::Relaxed) % n;
                if is(&list[i], avoid) {
                    Some(&list[(i + 1) % n])
                } else {
                    Some(&list[i])
                }
            }
            Balance::LeastRequest => {
                // Power of two choices: two distinct endpoints at random, the less busy wins.
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                let (a, b) = (&list[a], &list[b]);
                if is(a, avoid) {
                    Some(b)
                } else if is(b, avoid) || a.in_flight() <= b.in_flight() {
                    Some(a)
                } else {
                    Some(b)
                }
            }
        },
    }
}
