//! `switchboard healthcheck`: one plain HTTP/1.1 GET to the admin port, for container health
//! checks where the image has no curl (distroless). Blocking std I/O under one deadline: it
//! runs as a short-lived process, so a runtime would only slow its start.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

/// The URL probed when none is given: readiness on the default admin address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9901/readyz";

/// The longest status line read; an answer without one within this is not HTTP.
const MAX_STATUS_LINE: usize = 1024;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http://host[:port][/path]`.
    #[error("invalid URL {0:?}: expected http://host[:port][/path]")]
    Url(String),
    /// The whole probe took longer than its timeout.
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// Resolving, connecting, writing or reading failed.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// The answer does not start with an HTTP/1.x status line.
    #[error("{0} did not answer with an HTTP status line: {1:?}")]
    NotHttp(String, String),
    /// The server answered with a status outside 2xx.
    #[error("{0} answered {1}")]
    Status(String, String),
}

/// GETs `url` within `timeout` (resolution, connection, request and status line together);
/// Ok with the status line on a 2xx answer.
pub fn probe(url: &str, timeout: Duration) -> Result<String, ProbeError> {
    let deadline = Instant::now() + timeout;
    let uri: http::Uri = url.parse().map_err(|_| ProbeError::Url(url.to_owned()))?;
    let (Some("http"), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(ProbeError::Url(url.to_owned()));
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| ProbeError::Timeout(url.to_owned(), timeout))
    };
    let io = |e: std::io::Error| ProbeError::Io(url.to_owned(), e);

    let mut last_error = None;
    let mut stream = None;
    for addr in (host, port).to_socket_addrs().map_err(io)? {
        match TcpStream::connect_timeout(&addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let Some(mut stream) = stream else {
        return Err(io(last_error.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address")
        })));
    };
    stream.set_write_timeout(Some(remaining()?)).map_err(io)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: switchboard-healthcheck\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;

    // Only the status line matters; read until its end, within bounds and the deadline.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    let line_end = loop {
        if let Some(i) = head.windows(2).position(|w| w == b"\r\n") {
            break i;
        }
        if head.len() > MAX_STATUS_LINE {
            return Err(not_http(url, &head));
        }
        stream.set_read_timeout(Some(remaining()?)).map_err(io)?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err(not_http(url, &head)),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ProbeError::Timeout(url.to_owned(), timeout))
            }
            Err(e) => return Err(io(e)),
        };
        head.extend_from_slice(&buf[..n]);
    };
    let line = String::from_utf8_lossy(&head[..line_end]).into_owned();
    let mut parts = line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(not_http(url, &head));
    };
    if !version.starts_with("HTTP/1.")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(not_http(url, &head));
    }
    if code.starts_with('2') {
        Ok(line)
    } else {
        Err(ProbeError::Status(url.to_owned(), line))
    }
}

fn not_http(url: &str, head: &[u8]) -> ProbeError {
    let shown = &head[..head.len().min(80)];
    ProbeError::NotHttp(url.to_owned(), String::from_utf8_lossy(shown).into_owned())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader};
    use std::net::TcpListener;

    use super::*;

    /// A one-connection HTTP server on a loopback port that answers `reply` (raw bytes) after
    /// reading the request head; returns its address and the request it read.
    fn serve_once(reply: &'static [u8]) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let handle = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return String::new();
            };
            let mut reader = BufReader::new(stream);
            let mut request = String::new();
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
                line.clear();
            }
            let _ = reader.get_mut().write_all(reply);
            request
        });
        (addr.to_string(), handle)
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn two_hundred_is_healthy_and_the_request_is_plain_http() {
        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n");
        let url = format!("http://{addr}/readyz");
        assert_eq!(probe(&url, T).ok().as_deref(), Some("HTTP/1.1 200 OK"));
        let request = server.join().unwrap_or_default();
        assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
        assert!(request.contains(&format!("Host: {addr}\r\n")), "{request}");
    }

    #[test]
    fn other_statuses_and_non_http_answers_are_unhealthy() {
        for (reply, want) in [
            (
                &b"HTTP/1.1 503 Service Unavailable\r\n\r\ndraining"[..],
                "503",
            ),
            (&b"HTTP/1.1 301 Moved\r\nlocation: /\r\n\r\n"[..], "301"),
            (&b"SSH-2.0-OpenSSH\r\n"[..], "status line"),
            (&b""[..], "status line"),
        ] {
            let (addr, server) = serve_once(reply);
            let err = probe(&format!("http://{addr}/healthz"), T).err();
            assert!(
                err.as_ref().is_some_and(|e| e.to_string().contains(want)),
                "{want}: {err:?}"
            );
            let _ = server.join();
        }
    }

    #[test]
    fn a_silent_server_fails_at_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        // Accepted by the kernel's backlog, never answered.
        let started = Instant::now();
        let err = probe(&format!("http://{addr}/"), Duration::from_millis(300)).err();
        assert!(matches!(err, Some(ProbeError::Timeout(..))), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(listener);
    }

    #[test]
    fn refused_connections_and_bad_urls_are_errors() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let err = probe(&format!("http://127.0.0.1:{port}/readyz"), T).err();
        assert!(matches!(err, Some(ProbeError::Io(..))), "{err:?}");
        for url in [
            "https://127.0.0.1:9901/",
            "127.0.0.1:9901",
            "http:///x",
            "ftp://a/",
        ] {
            assert!(
                matches!(probe(url, T), Err(ProbeError::Url(_))),
                "{url} should be refused"
            );
        }
    }
}
