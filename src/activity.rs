//! Whether calls were made or connections closed since the last look: the binary collects
//! freed memory only after activity (see `collect_after_calls` in main.rs).

use std::sync::atomic::{AtomicBool, Ordering};

static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Notes that a call was made or a connection closed. A load first: while the flag is set,
/// calls only read the shared cache line and do not bounce it between cores.
pub(crate) fn mark() {
    if !ACTIVE.load(Ordering::Relaxed) {
        ACTIVE.store(true, Ordering::Relaxed);
    }
}

/// Whether anything was noted since the last `take`; clears the flag.
pub fn take() -> bool {
    ACTIVE.swap(false, Ordering::Relaxed)
}
