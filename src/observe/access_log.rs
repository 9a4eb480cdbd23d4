//! The access log: one line per finished call on stderr, as `key=value` text or JSON.
//!
//! A call never waits for stderr: its record goes into a bounded queue, and one writer thread
//! takes the queue every 50 ms (sooner when a batch is full), formats the records and writes
//! them in one write. When the queue is full (stderr
//! is a slow pipe, a stuck terminal) the line is dropped and counted in
//! `switchboard_access_log_dropped_total`. Formatting happens on the writer thread, off the
//! call's path.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use prometheus::IntCounter;

use super::context::ConnInfo;
use super::methods::{code_name, split_path};
use crate::config::LogFormat;
use crate::protocol::grpc::Code;

/// Records waiting for the writer at most; more are dropped.
const QUEUE: usize = 16 * 1024;
/// Queued records that wake the writer before its next look.
const BATCH: usize = 1024;

/// What one line says, captured when the call finishes.
#[derive(Debug)]
pub(crate) struct Record {
    pub(crate) format: LogFormat,
    pub(crate) time: SystemTime,
    /// Text copied out of the request (request id, path, user agent): a record must not hold
    /// on to the caller connection's read buffer while it waits for the writer.
    pub(crate) request_id: Box<str>,
    /// The caller's connection (TCP peer, listener).
    pub(crate) conn: Arc<ConnInfo>,
    pub(crate) client_ip: IpAddr,
    pub(crate) protocol: &'static str,
    pub(crate) http_method: Method,
    pub(crate) path: Box<str>,
    /// The `/package.Service/Method` when it differs from the URI path.
    pub(crate) rpc_path: Option<Arc<str>>,
    pub(crate) code: Option<Code>,
    pub(crate) http_status: u16,
    pub(crate) duration: Duration,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) upstream: Option<Arc<str>>,
    pub(crate) endpoint: Option<Arc<str>>,
    pub(crate) user_agent: Option<Box<str>>,
}

/// The queue to the writer thread, started on first use and kept for the life of the process
/// (stderr is the process's; reloads change only the format, which each record carries).
///
/// A call only pushes its record under a short lock; it does not wake the writer, which
/// looks every [`FLUSH_EVERY`] (or when a batch is full). Waking a sleeping thread for every
/// line would cost more than everything else the access log does per call.
struct Sink {
    queue: Mutex<Vec<Record>>,
    full: Condvar,
}

/// How often the writer takes what is queued.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

static SINK: OnceLock<Option<Arc<Sink>>> = OnceLock::new();

fn sink() -> Option<&'static Arc<Sink>> {
    SINK.get_or_init(|| {
        let sink = Arc::new(Sink {
            queue: Mutex::new(Vec::with_capacity(BATCH)),
            full: Condvar::new(),
        });
        let writer = sink.clone();
        match std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(&writer))
        {
            Ok(_) => Some(sink),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the access log writer; access logging is off");
                None
            }
        }
    })
    .as_ref()
}

/// Queues a record; counts it in `dropped` when the queue is full.
pub(crate) fn log(record: Record, dropped: &IntCounter) {
    let Some(sink) = sink() else {
        dropped.inc();
        return;
    };
    let mut queue = sink.queue.lock().unwrap_or_else(|p| p.into_inner());
    if queue.len() >= QUEUE {
        drop(queue);
        dropped.inc();
        return;
    }
    queue.push(record);
    let wake = queue.len() == BATCH;
    drop(queue);
    if wake {
        sink.full.notify_one();
    }
}

fn write_loop(sink: &Sink) {
    let mut taken: Vec<Record> = Vec::with_capacity(BATCH);
    let mut out: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut line = String::with_capacity(512);
    let mut clock = Clock::default();
    loop {
        {
            let queue = sink.queue.lock().unwrap_or_else(|p| p.into_inner());
            let (mut queue, _) = sink
                .full
                .wait_timeout_while(queue, FLUSH_EVERY, |q| q.len() < BATCH)
                .unwrap_or_else(|p| p.into_inner());
            std::mem::swap(&mut *queue, &mut taken);
        }
        if taken.is_empty() {
            continue;
        }
        for r in taken.drain(..) {
            format_with(&r, &mut line, &mut clock);
            out.extend_from_slice(line.as_bytes());
        }
        // The lock keeps our lines whole among other stderr writers (the tracing logs).
        let stderr = std::io::stderr();
        let mut lock = stderr.lock();
        let _ = lock.write_all(&out);
        let _ = lock.flush();
        drop(lock);
        out.clear();
    }
}

/// The date and time of the last second formatted, reused while the second lasts.
#[derive(Default)]
struct Clock {
    secs: u64,
    prefix: String,
}

impl Clock {
    /// Appends `2024-05-01T12:34:56.789Z` for `t`.
    fn write(&mut self, t: SystemTime, out: &mut String) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.prefix.is_empty() || self.secs != since.as_secs() {
            self.secs = since.as_secs();
            self.prefix = seconds(self.secs);
        }
        out.push_str(&self.prefix);
        out.push('.');
        push_thousandths(out, since.subsec_millis());
        out.push('Z');
    }
}

/// Formats `r` as one line (with its newline) into `line`.
#[cfg(test)]
pub(crate) fn format(r: &Record, line: &mut String) {
    format_with(r, line, &mut Clock::default());
}

fn format_with(r: &Record, line: &mut String, clock: &mut Clock) {
    line.clear();
    let path = &*r.path;
    let rpc = r.rpc_path.as_deref().unwrap_or(path);
    let (service, method) = if r.protocol == "http" {
        (None, None)
    } else {
        match split_path(rpc) {
            Some((s, m)) => (Some(s), Some(m)),
            None => (None, None),
        }
    };
    // Milliseconds with three decimals, from whole microseconds (rounded): no float formatting.
    let micros = (r.duration.as_nanos() + 500) / 1000;
    let code = r.code.map(code_name);
    let mut w = match r.format {
        LogFormat::Json => Fields::Json { first: true },
        LogFormat::Text => Fields::Text { first: true },
    };
    w.open(line);
    w.key(line, "time");
    w.quoted(line, |line| clock.write(r.time, line));
    w.str(line, "request_id", Some(&r.request_id));
    // The caller's address: the TCP peer, or the client named by trusted proxies.
    w.key(line, "peer");
    w.quoted(line, |line| {
        if r.client_ip == r.conn.peer.ip() {
            line.push_str(r.conn.peer_text());
        } else {
            let _ = write!(line, "{}", r.client_ip);
        }
    });
    w.str(line, "listener", Some(&r.conn.listener));
    w.str(line, "protocol", Some(r.protocol));
    w.str(line, "http_method", Some(r.http_method.as_str()));
    w.str(line, "path", Some(path));
    w.str(line, "grpc_service", service);
    w.str(line, "grpc_method", method);
    w.str(line, "grpc_code", code);
    w.num(line, "http_status", u64::from(r.http_status));
    w.key(line, "duration_ms");
    let millis = u64::try_from(micros / 1000).unwrap_or(u64::MAX);
    line.push_str(itoa::Buffer::new().format(millis));
    line.push('.');
    push_thousandths(line, (micros % 1000) as u32);
    w.num(line, "bytes_in", r.bytes_in);
    w.num(line, "bytes_out", r.bytes_out);
    w.str(line, "upstream", r.upstream.as_deref());
    w.str(line, "endpoint", r.endpoint.as_deref());
    w.str(line, "user_agent", r.user_agent.as_deref());
    w.close(line);
}

/// Writes `key=value` pairs (logfmt: values quoted when they need it, `-` when absent) or
/// the members of a JSON object (`null` when absent).
enum Fields {
    Text { first: bool },
    Json { first: bool },
}

impl Fields {
    fn open(&mut self, line: &mut String) {
        if let Fields::Json { .. } = self {
            line.push('{');
        }
    }

    fn close(&mut self, line: &mut String) {
        if let Fields::Json { .. } = self {
            line.push('}');
        }
        line.push('\n');
    }

    fn key(&mut self, line: &mut String, key: &str) {
        match self {
            Fields::Text { first } => {
                if !*first {
                    line.push(' ');
                }
                *first = false;
                line.push_str(key);
                line.push('=');
            }
            Fields::Json { first } => {
                if !*first {
                    line.push(',');
                }
                *first = false;
                line.push('"');
                line.push_str(key);
                line.push_str("\":");
            }
        }
    }

    fn str(&mut self, line: &mut String, key: &str, value: Option<&str>) {
        self.key(line, key);
        match (self, value) {
            (Fields::Text { .. }, None) => line.push('-'),
            (Fields::Json { .. }, None) => line.push_str("null"),
            (Fields::Text { .. }, Some(v)) => text_value(line, v),
            (Fields::Json { .. }, Some(v)) => json_string(line, v),
        }
    }

    /// A value that never needs escaping or quoting in logfmt (a time, an address), written
    /// straight into the line: quoted in JSON, bare in text.
    fn quoted(&self, line: &mut String, write: impl FnOnce(&mut String)) {
        let json = matches!(self, Fields::Json { .. });
        if json {
            line.push('"');
        }
        write(line);
        if json {
            line.push('"');
        }
    }

    fn num(&mut self, line: &mut String, key: &str, value: u64) {
        self.key(line, key);
        line.push_str(itoa::Buffer::new().format(value));
    }
}

/// A logfmt value: bare when it has no space, quote, `=` or control character, else quoted
/// with `\"`, `\\` and control characters escaped.
fn text_value(line: &mut String, v: &str) {
    let bare = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if bare {
        line.push_str(v);
    } else {
        json_string(line, v);
    }
}

/// `n` (below 1000) as three digits, zeros kept: `007`.
fn push_thousandths(line: &mut String, n: u32) {
    // The digits of 1000 + n without the leading 1.
    line.push_str(&itoa::Buffer::new().format(1000 + n % 1000)[1..]);
}

/// A JSON string literal.
fn json_string(line: &mut String, v: &str) {
    line.push('"');
    // Nearly every value needs no escape: found by one pass without early exit (which the
    // compiler vectorizes), and copied whole.
    let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f;
    if !v.bytes().fold(false, |any, b| any | needs(b)) {
        line.push_str(v);
        line.push('"');
        return;
    }
    // Runs that need no escape are copied whole.
    let mut run = 0;
    for (i, b) in v.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f | 0x7f => "",
            _ => continue,
        };
        line.push_str(&v[run..i]);
        if escape.is_empty() {
            let _ = write!(line, "\\u{b:04x}");
        } else {
            line.push_str(escape);
        }
        run = i + 1;
    }
    line.push_str(&v[run..]);
    line.push('"');
}

/// `2024-05-01T12:34:56` for seconds since the epoch.
fn seconds(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `2024-05-01T12:34:56.789Z`.
#[cfg(test)]
fn rfc3339(t: SystemTime) -> String {
    let mut s = String::new();
    Clock::default().write(t, &mut s);
    s
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_what_json_requires_and_parse_back() {
        for v in [
            "",
            "plain/path",
            "quote \" and \\ back",
            "tab\tnew\nline\rcr",
            "\u{1}\u{1f}\u{7f} ctl",
            "ünïcødé ✓ \"mixed\"\n",
        ] {
            let mut line = String::new();
            json_string(&mut line, v);
            assert!(!line.bytes().any(|b| b < 0x20 || b == 0x7f), "{line:?}");
            let back: String = serde_json::from_str(&line).unwrap();
            assert_eq!(back, v);
        }
    }

    fn record(format: LogFormat) -> Record {
        Record {
            format,
            time: UNIX_EPOCH + Duration::from_millis(1_714_566_896_789),
            request_id: "abc-1".into(),
            conn: Arc::new(ConnInfo::new(
                "127.0.0.1:5000".parse().unwrap(),
                Arc::from("main"),
                false,
                None,
                None,
            )),
            client_ip: "127.0.0.1".parse().unwrap(),
            protocol: "grpc_web",
            http_method: Method::POST,
            path: "/a.b.Svc/Do".into(),
            rpc_path: None,
            code: Some(Code::Unavailable),
            http_status: 200,
            duration: Duration::from_micros(1500),
            bytes_in: 12,
            bytes_out: 34,
            upstream: Some(Arc::from("backend")),
            endpoint: None,
            user_agent: Some("grpc-web-javascript/0.1 \"x\"".into()),
        }
    }

    #[test]
    fn json_lines_have_every_key() {
        let mut line = String::new();
        format(&record(LogFormat::Json), &mut line);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "time",
                "request_id",
                "peer",
                "listener",
                "protocol",
                "http_method",
                "path",
                "grpc_service",
                "grpc_method",
                "grpc_code",
                "http_status",
                "duration_ms",
                "bytes_in",
                "bytes_out",
                "upstream",
                "endpoint",
                "user_agent"
            ]
        );
        assert_eq!(v["time"], "2024-05-01T12:34:56.789Z");
        assert_eq!(v["grpc_service"], "a.b.Svc");
        assert_eq!(v["grpc_method"], "Do");
        assert_eq!(v["grpc_code"], "UNAVAILABLE");
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["endpoint"], serde_json::Value::Null);
        assert_eq!(v["user_agent"], "grpc-web-javascript/0.1 \"x\"");
    }

    #[test]
    fn text_lines_quote_what_needs_it() {
        let mut line = String::new();
        format(&record(LogFormat::Text), &mut line);
        assert!(
            line.starts_with("time=2024-05-01T12:34:56.789Z request_id=abc-1 peer=127.0.0.1:5000 listener=main protocol=grpc_web http_method=POST path=/a.b.Svc/Do grpc_service=a.b.Svc grpc_method=Do grpc_code=UNAVAILABLE http_status=200 duration_ms=1.500 bytes_in=12 bytes_out=34 upstream=backend endpoint=- "),
            "{line}"
        );
        assert!(
            line.ends_with("user_agent=\"grpc-web-javascript/0.1 \\\"x\\\"\"\n"),
            "{line}"
        );
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
