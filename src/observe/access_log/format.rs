//! One access log line: byte-level formatting, where each key with its punctuation is one
//! constant, and values are copied whole after a word-at-a-time check that they need no
//! escaping (see [`clean`]).

use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::LogFormat;
use crate::observe::context::ConnInfo;
use crate::observe::methods::code_name;
use crate::protocol::grpc::Code;

/// What one line says, borrowed from the call's context when the call is over.
#[derive(Debug)]
pub(crate) struct Line<'a> {
    pub(crate) format: LogFormat,
    pub(crate) time: SystemTime,
    /// The `x-request-id` (header bytes).
    pub(crate) request_id: &'a [u8],
    /// The caller's connection (TCP peer, listener).
    pub(crate) conn: &'a ConnInfo,
    pub(crate) client_ip: IpAddr,
    pub(crate) protocol: &'static str,
    pub(crate) http_method: &'a str,
    pub(crate) path: &'a str,
    /// The service and method, when the call's path is a method's (`/package.Service/Method`).
    pub(crate) names: Option<(&'a str, &'a str)>,
    pub(crate) code: Option<Code>,
    pub(crate) http_status: u16,
    pub(crate) duration: Duration,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
    pub(crate) upstream: Option<&'a str>,
    pub(crate) endpoint: Option<&'a str>,
    /// The `user-agent` (header bytes).
    pub(crate) user_agent: Option<&'a [u8]>,
}

/// The date and time of the last second formatted, reused while the second lasts.
#[derive(Default)]
pub(super) struct Clock {
    pub(super) secs: u64,
    pub(super) prefix: String,
}

impl Clock {
    /// Appends `2024-05-01T12:34:56.789Z` for `t`.
    fn write(&mut self, t: SystemTime, out: &mut Vec<u8>) {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.prefix.is_empty() || self.secs != since.as_secs() {
            self.secs = since.as_secs();
            self.prefix = seconds(self.secs);
        }
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        push_thousandths(out, since.subsec_millis());
        out.push(b'Z');
    }
}

/// Formats `r` as one line (with its newline) into `out`.
#[cfg(test)]
pub(crate) fn format(r: &Line<'_>, out: &mut Vec<u8>) {
    format_with(r, out, &mut Clock::default());
}

/// The keys after the first, each with the punctuation before its value: JSON, then text.
mod key {
    macro_rules! keys {
        ($($name:ident = $key:literal),* $(,)?) => {
            $(pub(super) const $name: [&str; 2] = [concat!(",\"", $key, "\":"), concat!(" ", $key, "=")];)*
        };
    }
    keys!(
        REQUEST_ID = "request_id",
        PEER = "peer",
        LISTENER = "listener",
        PROTOCOL = "protocol",
        HTTP_METHOD = "http_method",
        PATH = "path",
        GRPC_SERVICE = "grpc_service",
        GRPC_METHOD = "grpc_method",
        GRPC_CODE = "grpc_code",
        HTTP_STATUS = "http_status",
        DURATION_MS = "duration_ms",
        BYTES_IN = "bytes_in",
        BYTES_OUT = "bytes_out",
        UPSTREAM = "upstream",
        ENDPOINT = "endpoint",
        USER_AGENT = "user_agent",
    );
}

pub(super) fn format_with(r: &Line<'_>, out: &mut Vec<u8>, clock: &mut Clock) {
    match r.format {
        LogFormat::Json => fields(&mut Fields::<true> { out }, r, clock),
        LogFormat::Text => fields(&mut Fields::<false> { out }, r, clock),
    }
}

fn fields<const JSON: bool>(w: &mut Fields<'_, JSON>, r: &Line<'_>, clock: &mut Clock) {
    let (service, method) = match r.names {
        Some((s, m)) if r.protocol != "http" => (Some(s), Some(m)),
        _ => (None, None),
    };
    // Milliseconds with three decimals, from whole microseconds (rounded): no float formatting.
    let micros = (r.duration.as_nanos() + 500) / 1000;
    w.raw(if JSON { "{\"time\":\"" } else { "time=" });
    clock.write(r.time, w.out);
    w.close_quote();
    w.str(key::REQUEST_ID, Some(r.request_id));
    // The caller's address: the TCP peer, or the client named by trusted proxies.
    w.key(key::PEER);
    w.open_quote();
    if r.client_ip == r.conn.peer.ip() {
        w.raw(r.conn.peer_text());
    } else {
        let _ = write!(w.out, "{}", r.client_ip);
    }
    w.close_quote();
    w.str(key::LISTENER, Some(r.conn.listener.as_bytes()));
    w.known(key::PROTOCOL, Some(r.protocol));
    // A method is an HTTP token: nothing in it needs escaping or quoting.
    w.known(key::HTTP_METHOD, Some(r.http_method));
    w.str(key::PATH, Some(r.path.as_bytes()));
    // Names of letters, digits, `_` and `.` (see `split_path`).
    w.known(key::GRPC_SERVICE, service);
    w.known(key::GRPC_METHOD, method);
    w.known(key::GRPC_CODE, r.code.map(code_name));
    w.num(key::HTTP_STATUS, u64::from(r.http_status));
    w.key(key::DURATION_MS);
    let millis = u64::try_from(micros / 1000).unwrap_or(u64::MAX);
    w.raw(itoa::Buffer::new().format(millis));
    w.out.push(b'.');
    push_thousandths(w.out, (micros % 1000) as u32);
    w.num(key::BYTES_IN, r.bytes_in);
    w.num(key::BYTES_OUT, r.bytes_out);
    w.str(key::UPSTREAM, r.upstream.map(str::as_bytes));
    w.str(key::ENDPOINT, r.endpoint.map(str::as_bytes));
    w.str(key::USER_AGENT, r.user_agent);
    w.raw(if JSON { "}\n" } else { "\n" });
}

/// Writes the members of a JSON object (`null` when absent) or `key=value` pairs (logfmt:
/// values quoted when they need it, `-` when absent). The format is a constant, so each key
/// is copied as a constant.
struct Fields<'a, const JSON: bool> {
    out: &'a mut Vec<u8>,
}

impl<const JSON: bool> Fields<'_, JSON> {
    fn raw(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    fn key(&mut self, key: [&str; 2]) {
        self.raw(if JSON { key[0] } else { key[1] });
    }

    /// Around a value that never needs escaping or quoting (a time, an address): quoted in
    /// JSON, bare in text.
    fn open_quote(&mut self) {
        if JSON {
            self.out.push(b'"');
        }
    }

    fn close_quote(&mut self) {
        self.open_quote();
    }

    fn absent(&mut self) {
        self.raw(if JSON { "null" } else { "-" });
    }

    fn str(&mut self, key: [&str; 2], value: Option<&[u8]>) {
        self.key(key);
        match value {
            None => self.absent(),
            Some(v) if JSON => json_string(self.out, v),
            // logfmt: bare when nothing in it needs quoting.
            Some(v) if !v.is_empty() && clean::<true>(v) => self.out.extend_from_slice(v),
            Some(v) => json_string(self.out, v),
        }
    }

    /// A value known to need no escaping or quoting (a label, a token, a name).
    fn known(&mut self, key: [&str; 2], value: Option<&str>) {
        self.key(key);
        match value {
            None => self.absent(),
            Some(v) => {
                self.open_quote();
                self.raw(v);
                self.close_quote();
            }
        }
    }

    fn num(&mut self, key: [&str; 2], value: u64) {
        self.key(key);
        self.raw(itoa::Buffer::new().format(value));
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is below `n` (`n` at most 0x80), and possibly of
/// bytes above such a byte: exact as to whether there is any.
fn below(x: u64, n: u8) -> u64 {
    x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS
}

fn equal(x: u64, b: u8) -> u64 {
    below(x ^ (ONES * u64::from(b)), 1)
}

/// Whether `v` can be copied as it is: printable ASCII without `"` or `\` (and, for a bare
/// logfmt value, without space or `=`). Checked eight bytes at a time.
fn clean<const TEXT: bool>(v: &[u8]) -> bool {
    let word = |x: u64| {
        // A byte of 0x7f or more has its high bit set, or sets it when one is added.
        let high = (x | x.wrapping_add(ONES)) & HIGHS;
        let control = below(x, if TEXT { 0x21 } else { 0x20 });
        let mut bad = high | control | equal(x, b'"') | equal(x, b'\\');
        if TEXT {
            bad |= equal(x, b'=');
        }
        bad == 0
    };
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0; 8];
        w.copy_from_slice(c);
        if !word(u64::from_le_bytes(w)) {
            return false;
        }
    }
    // The tail, padded with a letter.
    let rest = chunks.remainder();
    let mut w = [b'a'; 8];
    w[..rest.len()].copy_from_slice(rest);
    word(u64::from_le_bytes(w))
}

/// `n` (below 1000) as three digits, zeros kept: `007`.
fn push_thousandths(out: &mut Vec<u8>, n: u32) {
    // The digits of 1000 + n without the leading 1.
    out.extend_from_slice(&itoa::Buffer::new().format(1000 + n % 1000).as_bytes()[1..]);
}

/// A JSON string literal of `v` (invalid UTF-8 replaced).
fn json_string(out: &mut Vec<u8>, v: &[u8]) {
    out.push(b'"');
    if clean::<false>(v) {
        out.extend_from_slice(v);
    } else {
        escaped(out, v);
    }
    out.push(b'"');
}

/// The inside of a JSON string literal of `v`: invalid UTF-8 replaced with U+FFFD, and `"`,
/// `\` and control characters escaped.
fn escaped(out: &mut Vec<u8>, v: &[u8]) {
    let v = String::from_utf8_lossy(v);
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
        out.extend_from_slice(&v.as_bytes()[run..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape.as_bytes());
        }
        run = i + 1;
    }
    out.extend_from_slice(&v.as_bytes()[run..]);
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
    let mut s = Vec::new();
    Clock::default().write(t, &mut s);
    String::from_utf8(s).unwrap_or_default()
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
            "exactly8",
            "sixteen bytes ok",
            "a long value that goes on past several words\"",
        ] {
            let mut line = Vec::new();
            json_string(&mut line, v.as_bytes());
            assert!(!line.iter().any(|b| *b < 0x20 || *b == 0x7f), "{line:?}");
            let back: String = serde_json::from_slice(&line).unwrap();
            assert_eq!(back, v);
        }
        // Bytes that are not UTF-8 (a header may carry them) become U+FFFD.
        let mut line = Vec::new();
        json_string(&mut line, b"ab\xffcd");
        let back: String = serde_json::from_slice(&line).unwrap();
        assert_eq!(back, "ab\u{fffd}cd");
    }

    #[test]
    fn the_word_check_finds_each_byte_that_needs_escaping_at_every_position() {
        for len in 1..=20 {
            for at in 0..len {
                for bad in [0u8, 0x1f, b'"', b'\\', 0x7f, 0x80, 0xff] {
                    let mut v = vec![b'x'; len];
                    v[at] = bad;
                    assert!(!clean::<false>(&v), "{v:?}");
                    assert!(!clean::<true>(&v), "{v:?}");
                }
                for bad in [b' ', b'='] {
                    let mut v = vec![b'x'; len];
                    v[at] = bad;
                    assert!(clean::<false>(&v), "{v:?}");
                    assert!(!clean::<true>(&v), "{v:?}");
                }
            }
            let ok: Vec<u8> = (0x20u8..0x7f)
                .filter(|b| !matches!(b, b'"' | b'\\' | b' ' | b'='))
                .cycle()
                .take(len)
                .collect();
            assert!(clean::<false>(&ok) && clean::<true>(&ok), "{ok:?}");
        }
    }

    fn conn() -> ConnInfo {
        ConnInfo::new(
            "127.0.0.1:5000".parse().unwrap(),
            std::sync::Arc::from("main"),
            false,
            None,
            None,
        )
    }

    fn record(format: LogFormat, conn: &ConnInfo) -> Line<'_> {
        Line {
            format,
            time: UNIX_EPOCH + Duration::from_millis(1_714_566_896_789),
            request_id: b"abc-1",
            conn,
            client_ip: "127.0.0.1".parse().unwrap(),
            protocol: "grpc_web",
            http_method: "POST",
            path: "/a.b.Svc/Do",
            names: Some(("a.b.Svc", "Do")),
            code: Some(Code::Unavailable),
            http_status: 200,
            duration: Duration::from_micros(1500),
            bytes_in: 12,
            bytes_out: 34,
            upstream: Some("backend"),
            endpoint: None,
            user_agent: Some(b"grpc-web-javascript/0.1 \"x\""),
        }
    }

    /// The test record's line in `format`.
    fn line_of(format: LogFormat) -> String {
        let conn = conn();
        let mut line = Vec::new();
        super::format(&record(format, &conn), &mut line);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn json_lines_have_every_key() {
        let line = line_of(LogFormat::Json);
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
        let line = line_of(LogFormat::Text);
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
