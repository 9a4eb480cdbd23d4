//! The running proxy: listeners bound from the config, the runtime snapshot every request
//! reads, reload (a new snapshot swapped in, listeners added and removed), readiness and
//! drain.
//!
//! A reload builds a complete new [`Proxy`] beside the old one and swaps one pointer: new
//! requests read the new one, calls in flight keep the one they started with (they hold an
//! `Arc` of it). Upstreams whose settings did not change carry their connection pools over.

mod listener;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::forward::Proxy;

pub(crate) use listener::{until_set, ListenerHandle, ListenerTls};

/// What every connection shares: the current runtime snapshot and the drain signal.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The runtime snapshot new requests use.
    pub(crate) current: ArcSwap<Proxy>,
    /// Set once to make every connection finish gracefully (GOAWAY, or close after the
    /// current response).
    pub(crate) drain: watch::Sender<bool>,
    /// Every connection task, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
}

/// The control surface of a running proxy: reload, readiness, drain. The admin endpoints and
/// the signal handlers act through it.
#[derive(Debug)]
pub struct Control {
    shared: Arc<Shared>,
    config: ArcSwap<Config>,
    listeners: Mutex<Vec<ListenerHandle>>,
    /// Only one reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Readiness fails from the start of a drain.
    draining: AtomicBool,
    /// Bumped when a drain is asked for (signal or admin).
    drain_requested: watch::Sender<bool>,
}

impl Control {
    /// The config in use.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Ready: config loaded, listeners bound, not draining.
    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }

    /// The bound addresses of the current listeners, in config order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.iter().map(|l| l.local).collect()
    }

    /// Loads the config file again and swaps it in when it is valid (exactly what `check`
    /// accepts); the old config stays otherwise. Quick mode has no file: nothing is reloaded.
    pub async fn reload(&self) -> Result<ReloadOutcome, String> {
        let Some(path) = self.config().source.clone() else {
            return Ok(ReloadOutcome::NoFile);
        };
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => return Err(e.to_string()),
        };
        self.apply(config).await.map(|()| ReloadOutcome::Applied)
    }

    /// Swaps in `config` (validated by building its runtime first).
    pub async fn apply(&self, mut config: Config) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.config();
        // Never from YAML: the demo page's files stay.
        if config.assets.is_none() {
            config.assets = old.assets.clone();
        }
        let previous = self.shared.current.load_full();
        let proxy = Proxy::build(&config, Some(&previous)).map_err(|e| {
            let origin = config
                .source
                .as_ref()
                .map_or_else(|| "config".to_owned(), |p| p.display().to_string());
            format!("{origin}: {e}")
        })?;
        // TLS material is read again (certificates rotate without a restart).
        let mut acceptors = Vec::new();
        for l in &config.listeners {
            let acceptor = match &l.tls {
                Some(files) => Some(Arc::new(
                    ListenerTls::load(files).map_err(|e| format!("listener {}: {e}", l.name))?,
                )),
                None => None,
            };
            acceptors.push((l.clone(), acceptor));
        }
        // Listeners next: a new address that cannot be bound fails the reload as a whole.
        let added = self.bind_new(&config).await?;
        let config = Arc::new(config);
        self.shared.current.store(Arc::new(proxy));
        self.config.store(config.clone());
        let mut current = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        for l in current.iter() {
            if let Some((_, acceptor)) = acceptors.iter().find(|(c, _)| l.same(c)) {
                l.set_tls(acceptor.clone());
            }
        }
        current.extend(added);
        // Listeners no longer configured stop accepting; their connections finish gracefully.
        current.retain(|l| {
            let keep = config.listeners.iter().any(|c| l.same(c));
            if !keep {
                tracing::info!(addr = %l.local, "listener removed");
                l.stop();
            }
            keep
        });
        tracing::info!(listeners = current.len(), "config reloaded");
        Ok(())
    }

    /// Binds the listeners of `config` that are not bound yet.
    async fn bind_new(&self, config: &Config) -> Result<Vec<ListenerHandle>, String> {
        let wanted: Vec<_> = {
            let current = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            config
                .listeners
                .iter()
                .filter(|c| !current.iter().any(|l| l.same(c)))
                .cloned()
                .collect()
        };
        let mut added = Vec::new();
        for l in wanted {
            let handle = ListenerHandle::bind(&l, &self.shared, &config.limits)
                .await
                .map_err(|e| format!("{e:#}"))?;
            added.push(handle);
        }
        Ok(added)
    }

    /// Starts draining, as SIGTERM does: readiness fails at once; listeners keep accepting
    /// for `shutdown.delay`, then stop; connections finish gracefully; in-flight calls get up
    /// to `shutdown.drain_timeout`. Returns when the drain is over.
    pub async fn drain(&self) {
        if self.draining.swap(true, Ordering::AcqRel) {
            // Already draining: wait for the same end.
            let mut rx = self.shared.drain.subscribe();
            let _ = until_set(&mut rx).await;
            self.shared.connections.wait().await;
            return;
        }
        let _ = self.drain_requested.send(true);
        let shutdown = self.config().shutdown;
        tracing::info!(delay = ?shutdown.delay, drain_timeout = ?shutdown.drain_timeout, "draining");
        if !shutdown.delay.is_zero() {
            tokio::time::sleep(shutdown.delay).await;
        }
        self.stop(shutdown.drain_timeout).await;
    }

    /// Waits until a drain is asked for (by [`Control::drain`]).
    pub async fn drain_requested(&self) {
        let mut rx = self.drain_requested.subscribe();
        let _ = until_set(&mut rx).await;
    }

    /// Stops accepting, asks every connection to finish, and waits for them (up to `limit`).
    async fn stop(&self, limit: Duration) {
        self.draining.store(true, Ordering::Release);
        {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            for l in listeners.iter() {
                l.stop();
            }
        }
        let _ = self.shared.drain.send(true);
        self.shared.connections.close();
        if tokio::time::timeout(limit, self.shared.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.shared.connections.len(),
                "drain timeout: closing the connections still open"
            );
        }
        let handles: Vec<_> = {
            let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            listeners.drain(..).collect()
        };
        for h in handles {
            h.join().await;
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is in use.
    Applied,
    /// There is no config file to read (quick mode, the demo): nothing changed.
    NoFile,
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    control: Arc<Control>,
    addrs: Vec<SocketAddr>,
}

impl Running {
    /// Bound listener addresses at start, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The control surface (reload, readiness, drain).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Stops accepting and lets open calls finish (up to `shutdown.drain_timeout`), at once
    /// (no readiness delay).
    pub async fn shutdown(self) {
        let limit = self.control.config().shutdown.drain_timeout;
        self.control.stop(limit).await;
    }
}

/// Binds every listener and serves in the background. Returns once all sockets are bound.
pub async fn spawn(config: Config) -> anyhow::Result<Running> {
    let proxy = Proxy::build(&config, None).map_err(anyhow::Error::msg)?;
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(proxy),
        drain: watch::Sender::new(false),
        connections: TaskTracker::new(),
    });
    let mut handles = Vec::new();
    for l in &config.listeners {
        let handle = ListenerHandle::bind(l, &shared, &config.limits)
            .await
            .with_context(|| format!("listener {}", l.name))?;
        handles.push(handle);
    }
    let addrs = handles.iter().map(|h| h.local).collect();
    let control = Arc::new(Control {
        shared,
        config: ArcSwap::from_pointee(config),
        listeners: Mutex::new(handles),
        reloading: tokio::sync::Mutex::new(()),
        draining: AtomicBool::new(false),
        drain_requested: watch::Sender::new(false),
    });
    Ok(Running { control, addrs })
}

/// Builds the whole runtime of a config without serving it: what `switchboard check` and a
/// reload accept is exactly what starts.
pub fn check(config: &Config) -> Result<(), String> {
    for l in &config.listeners {
        if let Some(tls) = &l.tls {
            tls::load_server_config(tls).map_err(|e| format!("listener {}: {e}", l.name))?;
        }
    }
    Proxy::build(config, None).map(|_| ())
}
