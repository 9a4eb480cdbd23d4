//! The running proxy: listeners bound from the config, the runtime snapshot every request
//! reads, reload (a new snapshot swapped in, listeners added and removed), readiness and
//! drain.
//!
//! A reload builds a complete new [`Proxy`] beside the old one and swaps one pointer: new
//! requests read the new one, calls in flight keep the one they started with (they hold an
//! `Arc` of it). Upstreams whose settings did not change carry their connection pools over.

mod file_watch;
mod listener;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::forward::Proxy;
use crate::observe::Metrics;

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
    /// The metrics registry (the same in every snapshot).
    pub(crate) metrics: Arc<Metrics>,
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
    /// Ready: config loaded, listeners bound, not draining. False from the start of a drain.
    ready: watch::Sender<bool>,
    /// Set when a drain is asked for (signal or admin).
    drain_requested: watch::Sender<bool>,
    /// Watches the config file (`watch: true`), while it is wanted.
    watcher: Mutex<Option<file_watch::FileWatch>>,
    /// Itself, for the file watcher's reloads (weak: the watcher must not keep it alive).
    this: std::sync::OnceLock<std::sync::Weak<Control>>,
}

impl Control {
    /// The config in use.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Ready: config loaded, listeners bound, not draining.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Whether a drain has started.
    pub fn is_draining(&self) -> bool {
        *self.drain_requested.borrow()
    }

    /// Resolves once the proxy stops being ready (a drain started).
    pub async fn until_not_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| !*ready).await;
    }

    /// The Prometheus text of every metric, upstream state included.
    pub fn metrics_text(&self) -> String {
        let current = self.shared.current.load();
        self.shared.metrics.render(current.scrape_families())
    }

    /// The bound addresses of the current listeners, in config order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        listeners.iter().map(|l| l.local).collect()
    }

    /// Loads the config file again and swaps it in when it is valid (exactly what `check`
    /// accepts); the old config stays otherwise. Quick mode has no file: nothing is reloaded.
    /// Reloads are counted by result, and a refused one is logged with its file, line and key.
    pub async fn reload(&self) -> Result<ReloadOutcome, String> {
        let Some(path) = self.config().source.clone() else {
            tracing::info!(
                "reload: the config comes from the command line (quick mode); nothing to reload"
            );
            return Ok(ReloadOutcome::NoFile);
        };
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                self.refused(&e);
                return Err(e.to_string());
            }
        };
        self.apply(config).await.map(|()| ReloadOutcome::Applied)
    }

    /// Counts and logs a config that was refused.
    fn refused(&self, e: &ConfigError) {
        self.shared.metrics.reload(false);
        tracing::error!(
            file = %e.origin,
            line = e.line,
            column = e.column,
            key = %e.key,
            "reload refused, the old config stays: {e}"
        );
    }

    /// Swaps in `config` (validated by building its runtime first); counted and logged like
    /// [`Control::reload`].
    pub async fn apply(&self, config: Config) -> Result<(), String> {
        let result = self.swap_in(config).await;
        match &result {
            Ok(()) => self.shared.metrics.reload(true),
            Err(e) => {
                self.shared.metrics.reload(false);
                tracing::error!("reload refused, the old config stays: {e}");
            }
        }
        result
    }

    async fn swap_in(&self, mut config: Config) -> Result<(), String> {
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
        if config.admin != old.admin {
            tracing::warn!(
                "admin.address changed: the admin listener keeps its address until a restart"
            );
        }
        let config = Arc::new(config);
        self.shared.current.store(Arc::new(proxy));
        self.config.store(config.clone());
        self.watch_if_wanted(&config);
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
        if self.drain_requested.send_replace(true) {
            // Already draining: wait for the same end.
            let mut rx = self.shared.drain.subscribe();
            let _ = until_set(&mut rx).await;
            self.shared.connections.wait().await;
            return;
        }
        self.ready.send_replace(false);
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
        self.ready.send_replace(false);
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            w.stop();
        }
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
        // Spans and log lines still queued go out before the process exits.
        let current = self.shared.current.load_full();
        let _ = tokio::task::spawn_blocking(move || current.observer().flush()).await;
    }

    /// Starts watching the config file when the config asks for it and nothing watches yet;
    /// stops a watcher the config no longer wants.
    fn watch_if_wanted(self: &Control, config: &Config) {
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        match (&config.source, config.watch) {
            (Some(path), true) => {
                if watcher.as_ref().is_none_or(|w| !w.watches(path)) {
                    if let Some(w) = watcher.take() {
                        w.stop();
                    }
                    *watcher = self
                        .this
                        .get()
                        .and_then(|c| file_watch::FileWatch::start(path, c.clone()));
                }
            }
            _ => {
                if let Some(w) = watcher.take() {
                    w.stop();
                }
            }
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
    admin: Option<crate::admin::Admin>,
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

    /// The admin listener's bound address, when `admin` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local)
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
        metrics: proxy.observer().metrics().clone(),
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
    let admin_address = config.admin.as_ref().map(|a| a.address);
    let config = Arc::new(config);
    let control = Arc::new(Control {
        shared,
        config: ArcSwap::new(config.clone()),
        listeners: Mutex::new(handles),
        reloading: tokio::sync::Mutex::new(()),
        ready: watch::Sender::new(true),
        drain_requested: watch::Sender::new(false),
        watcher: Mutex::new(None),
        this: std::sync::OnceLock::new(),
    });
    let _ = control.this.set(Arc::downgrade(&control));
    control.watch_if_wanted(&config);
    // The admin listener comes last: once it answers, the proxy is ready.
    let admin = match admin_address {
        Some(address) => Some(crate::admin::spawn(address, control.clone()).await?),
        None => None,
    };
    Ok(Running {
        control,
        addrs,
        admin,
    })
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
