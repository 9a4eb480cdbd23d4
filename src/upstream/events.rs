//! The log of an upstream's changes: endpoints added, removed, ejected, restored, changing
//! health; panic mode; connections that failed or went silent. Rate-limited per upstream, in
//! two budgets, so a flood of connect failures cannot hide an ejection.

use std::time::Duration;

use tokio::time::Instant;

use super::connect::ConnectError;
use super::endpoint::Endpoint;
use super::shared::Shared;

/// Lines per upstream and budget per window before lines are suppressed.
const LOG_LINES: u32 = 20;
const LOG_WINDOW: Duration = Duration::from_secs(10);

/// Rate limits of the two kinds of log lines, so a flood of connect failures cannot hide
/// an ejection.
#[derive(Default)]
pub(crate) struct Logs {
    state: LogLimit,
    connections: LogLimit,
}

#[derive(Default)]
struct LogLimit {
    window: Option<Instant>,
    lines: u32,
    suppressed: u32,
}

impl LogLimit {
    /// Whether a line may be written now; and how many were suppressed before it.
    fn admit(&mut self) -> Option<u32> {
        let now = Instant::now();
        if self.window.is_none_or(|w| now - w >= LOG_WINDOW) {
            self.window = Some(now);
            self.lines = 0;
        }
        if self.lines >= LOG_LINES {
            self.suppressed += 1;
            return None;
        }
        self.lines += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// How loud a state change is.
#[derive(Clone, Copy)]
pub(crate) enum Level {
    Info,
    Warn,
}

impl Shared {
    /// Logs a change of `endpoint` (or `*` for the upstream), within the rate limit.
    pub(crate) fn note(&self, level: Level, endpoint: &str, what: std::fmt::Arguments<'_>) {
        let admitted = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .state
            .admit();
        self.write(admitted, level, endpoint, what);
    }

    fn write(
        &self,
        admitted: Option<u32>,
        level: Level,
        endpoint: &str,
        what: std::fmt::Arguments<'_>,
    ) {
        let Some(suppressed) = admitted else {
            return;
        };
        let upstream = &*self.name;
        match level {
            Level::Info => {
                tracing::info!(
                    upstream,
                    endpoint,
                    suppressed,
                    "upstream {upstream:?}: {what}"
                )
            }
            Level::Warn => {
                tracing::warn!(
                    upstream,
                    endpoint,
                    suppressed,
                    "upstream {upstream:?}: {what}"
                )
            }
        }
    }

    /// Logs why a connect failed (callers only learn the kind of failure).
    pub(crate) fn log_connect_failure(&self, ep: &Endpoint, e: &ConnectError) {
        let admitted = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connections
            .admit();
        self.write(
            admitted,
            Level::Warn,
            &ep.label,
            format_args!("connect failed: {}", e.detail),
        );
    }

    /// Logs a connection closed because a PING went unanswered.
    pub(crate) fn log_unanswered_ping(&self, ep: &Endpoint, timeout: Duration) {
        let admitted = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .connections
            .admit();
        self.write(
            admitted,
            Level::Warn,
            &ep.label,
            format_args!("connection closed: no answer to a PING within {timeout:?}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_beyond_the_budget_are_counted_not_written() {
        let mut limit = LogLimit::default();
        for _ in 0..LOG_LINES {
            assert_eq!(limit.admit(), Some(0));
        }
        assert_eq!(limit.admit(), None);
        assert_eq!(limit.admit(), None);
        // A new window writes again and says how many were left out.
        limit.window = Some(Instant::now() - LOG_WINDOW);
        assert_eq!(limit.admit(), Some(2));
        assert_eq!(limit.admit(), Some(0));
    }
}
