//! `watch: true`: reload when the config file changes. The file's directory is watched, not
//! the file: editors replace files by renaming, and a Kubernetes ConfigMap volume swaps a
//! `..data` symlink to a new directory, so the file itself never sees an event. Events are
//! debounced (a burst of them is one change), and a reload happens only when the content
//! differs from what was last seen.

use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Control;

/// Quiet time after the last event before the file is read.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// A running watch; dropping it stops watching.
pub(crate) struct FileWatch {
    path: PathBuf,
    _watcher: notify::RecommendedWatcher,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("path", &self.path)
            .finish()
    }
}

impl FileWatch {
    /// Watches `path` and reloads `control` when it changes; none (logged) when the system
    /// refuses the watch.
    pub(crate) fn start(path: &Path, control: Weak<Control>) -> Option<FileWatch> {
        let (tx, rx) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                // Full means a wake-up is already pending: that is enough.
                let _ = tx.try_send(());
            }
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "watch: cannot watch the config file; reload with SIGHUP or POST /reload");
                return None;
            }
        };
        for dir in dirs(path) {
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                tracing::error!(dir = %dir.display(), error = %e, "watch: cannot watch the config directory");
                return None;
            }
        }
        tracing::info!(file = %path.display(), "watching the config file for changes");
        let task = tokio::spawn(run(path.to_owned(), rx, control));
        Some(FileWatch {
            path: path.to_owned(),
            _watcher: watcher,
            task,
        })
    }

    /// Whether this watches `path`.
    pub(crate) fn watches(&self, path: &Path) -> bool {
        self.path == path
    }

    /// Stops watching.
    pub(crate) fn stop(self) {}
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The directory of the path as given, and that of the file it resolves to when that is
/// elsewhere (a symlink).
fn dirs(path: &Path) -> Vec<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut dirs = vec![parent(path)];
    if let Ok(real) = std::fs::canonicalize(path) {
        let d = parent(&real);
        let same = std::fs::canonicalize(&dirs[0]).is_ok_and(|first| first == d);
        if !same {
            dirs.push(d);
        }
    }
    dirs
}

/// The content's hash; none when the file cannot be read (mid-swap, removed).
fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

async fn run(path: PathBuf, mut events: mpsc::Receiver<()>, control: Weak<Control>) {
    let mut seen = fingerprint(&path);
    while events.recv().await.is_some() {
        // Debounce: wait until the directory has been quiet for a while.
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let now = fingerprint(&path);
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        let Some(control) = control.upgrade() else {
            return;
        };
        tracing::info!(file = %path.display(), "config file changed: reloading");
        // Counted, and logged when refused, by the reload itself.
        let _ = control.reload().await;
    }
}
