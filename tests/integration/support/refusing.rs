//! An HTTP/2 server written frame by frame, for upstream behaviour no well-behaved library
//! server shows on demand: refusing every stream (RST_STREAM REFUSED_STREAM), announcing
//! GOAWAY before it processed the first stream, or answering every call with one gRPC
//! status in a Trailers-Only response, or never answering. It acknowledges SETTINGS and answers PINGs, so the
//! proxy's handshake succeeds.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::{AbortOnDrop, Counter};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const ACK: u8 = 1;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

/// What the server does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Misbehaviour {
    /// RST_STREAM(REFUSED_STREAM): the stream was not processed.
    RefuseStreams,
    /// GOAWAY with last-stream-id 0 on the first request, then close: nothing processed.
    GoAwayFirst,
    /// A Trailers-Only answer with this `grpc-status`.
    TrailersOnly(u8),
    /// No answer at all: the stream stays open (a backend that hangs every call).
    Hang,
}

/// A running server.
#[derive(Debug)]
pub(crate) struct Refusing {
    pub(crate) addr: SocketAddr,
    /// `http://address:port`.
    pub(crate) url: String,
    /// HEADERS frames received (requests).
    pub(crate) requests: Arc<Counter>,
    _task: AbortOnDrop,
}

/// Starts the server on an ephemeral loopback port.
pub(crate) async fn spawn_refusing(how: Misbehaviour) -> Refusing {
    let listener = TcpListener::bind(super::loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Counter::default());
    let seen = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve(tcp, how, seen.clone()));
        }
    });
    Refusing {
        addr,
        url: format!("http://{addr}"),
        requests,
        _task: AbortOnDrop(task),
    }
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK: a literal header field without indexing, with a literal name (no Huffman).
fn literal(block: &mut Vec<u8>, name: &str, value: &str) {
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

async fn serve(mut tcp: TcpStream, how: Misbehaviour, requests: Arc<Counter>) {
    let mut preface = [0u8; PREFACE.len()];
    if tcp.read_exact(&mut preface).await.is_err() || preface != PREFACE {
        return;
    }
    if tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match kind {
            SETTINGS if flags & ACK == 0 => frame(SETTINGS, ACK, 0, &[]),
            PING if flags & ACK == 0 => frame(PING, ACK, 0, &payload),
            HEADERS => {
                requests.incr();
                match how {
                    Misbehaviour::RefuseStreams => {
                        frame(RST_STREAM, 0, stream, &7u32.to_be_bytes())
                    }
                    Misbehaviour::GoAwayFirst => {
                        let mut p = 0u32.to_be_bytes().to_vec();
                        p.extend_from_slice(&0u32.to_be_bytes());
                        let _ = tcp.write_all(&frame(GOAWAY, 0, 0, &p)).await;
                        let _ = tcp.flush().await;
                        // Let the GOAWAY arrive before the connection ends.
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            tcp.read(&mut [0u8; 1024]),
                        )
                        .await;
                        return;
                    }
                    Misbehaviour::Hang => continue,
                    Misbehaviour::TrailersOnly(code) => {
                        let mut block = vec![0x88]; // :status 200 (static table index 8)
                        literal(&mut block, "content-type", "application/grpc");
                        literal(&mut block, "grpc-status", &code.to_string());
                        literal(&mut block, "grpc-message", "refused by the test server");
                        frame(HEADERS, END_HEADERS | END_STREAM, stream, &block)
                    }
                }
            }
            // Request bodies are dropped, and their window given back.
            DATA if len > 0 => frame(WINDOW_UPDATE, 0, 0, &(len as u32).to_be_bytes()),
            _ => continue,
        };
        if tcp.write_all(&reply).await.is_err() {
            return;
        }
    }
}
