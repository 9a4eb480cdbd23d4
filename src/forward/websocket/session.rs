//! One WebSocket call from upgrade to close. The session owns the socket and runs three
//! things at once until the first of them ends:
//!
//! - the reader hands the client's request messages to the call's body, one at a time: the
//!   next socket message is read only once the body has taken the last, and the body is read
//!   only as fast as the upstream stream's flow control allows, so a backend that does not read
//!   stops the client (its TCP window fills), nothing piles up here;
//! - the writer waits for the call's response and writes it: the header frame, each chunk of
//!   gRPC-Web frames as it comes, the trailer frame. It waits for the socket to take each
//!   write before it reads more of the response, so a client that does not read stops the
//!   upstream stream instead. A PING goes out when nothing was written for `ping_interval`;
//! - the idle watch closes a socket on which no message went either way for `idle_timeout`.
//!
//! When the client closes the socket before the response is over, the session ends and drops
//! the call: the response body resets the upstream stream, and a request body still open
//! fails (an upload cut short is cancelled upstream, never completed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt as _;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::super::call::Reply;
use super::super::{error_response, grpc_web, ready, Proxy, Responding};
use super::{call_request, reply_mode, SocketBody, Up};
use crate::observe::CallContext;
use crate::protocol::grpc::frame::HEADER_LEN;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::grpc_web::trailer_frame;
use crate::protocol::websocket::{header_frame, parse_metadata, ClientMessage};
use crate::protocol::Protocol;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Room in a socket message beyond one request frame: the control byte and the frame header.
const ENVELOPE: usize = 1 + HEADER_LEN;
/// Bytes of response messages gathered before they are written (they are flushed at once when
/// nothing more is ready, so this only batches what is already there).
const WRITE_BUFFER: usize = 64 << 10;
/// How long a closing socket waits for the client's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Runs the call on the upgraded socket. `limit` is the route's message size limit.
pub(super) async fn run(
    proxy: Arc<Proxy>,
    parts: http::request::Parts,
    on_upgrade: OnUpgrade,
    ctx: Arc<CallContext>,
    limit: usize,
) {
    let settings = proxy.websocket;
    let header_timeout = proxy.limits.header_timeout;
    let upgraded = match tokio::time::timeout(header_timeout, on_upgrade).await {
        Ok(Ok(upgraded)) => upgraded,
        Ok(Err(e)) => return tracing::debug!(error = %e, "WebSocket upgrade failed"),
        Err(_) => return tracing::debug!("WebSocket upgrade did not complete in time"),
    };
    let message_limit = limit.saturating_add(ENVELOPE);
    let config = WebSocketConfig::default()
        .max_message_size(Some(message_limit))
        .max_frame_size(Some(message_limit))
        .write_buffer_size(WRITE_BUFFER)
        // One response chunk (at most a message, as the upstream stream delivers it) beyond
        // the batch; a writer never queues more before the socket took it.
        .max_write_buffer_size(WRITE_BUFFER + message_limit.max(16 << 10) + 64);
    let socket =
        WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (sink, stream) = socket.split();
    let mut reader = Reader {
        stream,
        tx: None,
        limit,
    };
    let mut writer = Writer::new(sink, settings.ping_interval);
    let activity = Activity::new();

    // The call's metadata comes first, within the header timeout.
    let responding: Responding = match tokio::time::timeout(header_timeout, reader.metadata()).await
    {
        Ok(Ok(metadata)) => {
            let (tx, rx) = mpsc::channel(1);
            reader.tx = Some(tx);
            let body = SocketBody { rx, done: false };
            let req = call_request(parts, metadata, ctx.conn.identity_header.as_ref(), body);
            proxy.admit(Protocol::WebSocket, req, &ctx)
        }
        Ok(Err(Some(status))) => {
            ctx.set_code(status.code);
            ready(error_response(&Protocol::WebSocket, status, None))
        }
        Ok(Err(None)) => return ctx.set_code(Code::Cancelled),
        Err(_) => {
            let status = Status::new(
                Code::DeadlineExceeded,
                format!("no grpc-websockets metadata within {header_timeout:?}"),
            );
            ctx.set_code(status.code);
            ready(error_response(&Protocol::WebSocket, status, None))
        }
    };

    let outcome = tokio::select! {
        () = reader.forward(&activity) => Outcome::ClientGone,
        r = writer.respond(responding, &proxy, &ctx, &activity) => match r {
            Ok(()) => Outcome::Responded,
            Err(_) => Outcome::ClientGone,
        },
        () = activity.idle(settings.idle_timeout) => Outcome::Idle,
    };
    // The call (its response body, its request body) is dropped by now: an unfinished one has
    // reset its upstream stream.
    match outcome {
        Outcome::Responded => {}
        Outcome::ClientGone => {
            ctx.set_code(Code::Cancelled);
            return;
        }
        Outcome::Idle => {
            let status = Status::new(
                Code::Unavailable,
                format!(
                    "closed: no message either way for {:?} (websocket.idle_timeout)",
                    settings.idle_timeout
                ),
            );
            ctx.set_code(status.code);
            if writer.end(&status, &ctx).await.is_err() {
                return;
            }
        }
    }
    close(writer, reader).await;
}

enum Outcome {
    /// The whole response was written.
    Responded,
    /// The client closed the socket (or it failed) first.
    ClientGone,
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Closes cleanly: a close frame, then the client's, for a little while.
async fn close(mut writer: Writer, mut reader: Reader) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if writer.sink.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = reader.stream.next().await {
            if m.is_close() {
                break;
            }
        }
    })
    .await;
}

/// When a message last went either way.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing moved for `timeout` (never when it is zero).
    async fn idle(&self, timeout: Duration) {
        if timeout.is_zero() {
            return std::future::pending().await;
        }
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let at = last + timeout;
            if Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }
}

/// The client-to-proxy half.
struct Reader {
    stream: SplitStream<Socket>,
    /// To the call's request body, until the client finished sending.
    tx: Option<mpsc::Sender<Up>>,
    limit: usize,
}

impl Reader {
    /// The first binary message, the call's metadata. `Err(None)`: the socket closed.
    async fn metadata(&mut self) -> Result<HeaderMap, Option<Status>> {
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Binary(block))) => return parse_metadata(&block).map_err(Some),
                Some(Ok(Message::Text(_))) => return Err(Some(text_message())),
                Some(Ok(Message::Close(_))) | None => return Err(None),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(self.read_error(e)),
            }
        }
    }

    /// Hands request messages to the call's body until the client finished sending, then
    /// watches the socket. Returns when the client closed it (or it failed).
    async fn forward(&mut self, activity: &Activity) {
        while let Some(tx) = &self.tx {
            // Backpressure: the next message is read only when the body took the last.
            let Ok(permit) = tx.reserve().await else {
                // The call no longer reads its request (it is answered already).
                self.tx = None;
                break;
            };
            let up = match self.stream.next().await {
                Some(Ok(Message::Binary(message))) => {
                    activity.touch();
                    match ClientMessage::parse(message) {
                        Ok(ClientMessage::Data(data)) => Up::Data(data),
                        Ok(ClientMessage::FinishSend) => Up::Finish,
                        Err(status) => Up::Fail(status),
                    }
                }
                Some(Ok(Message::Text(_))) => Up::Fail(text_message()),
                Some(Ok(Message::Close(_))) | None => return,
                Some(Ok(_)) => continue,
                Some(Err(e)) => match self.read_error(e) {
                    Some(status) => Up::Fail(status),
                    None => return,
                },
            };
            let failed = matches!(up, Up::Fail(_));
            let last = !matches!(up, Up::Data(_));
            permit.send(up);
            if failed {
                // The call ends with that status, which the writer delivers; the socket is
                // not read again (a broken message leaves nothing sensible to read).
                self.tx = None;
                return std::future::pending().await;
            }
            if last {
                self.tx = None;
            }
        }
        // Only a close is of interest now: before the response is over, it is a cancel.
        loop {
            match self.stream.next().await {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    }

    /// The status for a failed read that the call should end with; `None` when the socket is
    /// simply gone.
    fn read_error(&self, e: WsError) -> Option<Status> {
        match e {
            WsError::Capacity(c) => Some(Status::new(
                Code::ResourceExhausted,
                format!(
                    "request message exceeds the limit of {} bytes ({c})",
                    self.limit
                ),
            )),
            _ => None,
        }
    }
}

fn text_message() -> Status {
    Status::new(
        Code::InvalidArgument,
        "grpc-websockets carries binary messages only; got a text message",
    )
}

/// The proxy-to-client half.
struct Writer {
    sink: SplitSink<Socket, Message>,
    headers_sent: bool,
    ping_every: Duration,
    ping: std::pin::Pin<Box<Sleep>>,
}

impl Writer {
    fn new(sink: SplitSink<Socket, Message>, ping_every: Duration) -> Writer {
        let mut w = Writer {
            sink,
            headers_sent: false,
            ping_every,
            ping: Box::pin(tokio::time::sleep(Duration::ZERO)),
        };
        w.rearm();
        w
    }

    /// The next PING after `ping_every` without writes (never when it is zero).
    fn rearm(&mut self) {
        let after = if self.ping_every.is_zero() {
            Duration::from_secs(365 * 24 * 3600)
        } else {
            self.ping_every
        };
        self.ping.as_mut().reset(Instant::now() + after);
    }

    async fn ping(&mut self) -> Result<(), WsError> {
        self.rearm();
        self.sink.send(Message::Ping(bytes::Bytes::new())).await
    }

    /// Waits for the call's response and writes all of it.
    async fn respond(
        &mut self,
        mut responding: Responding,
        proxy: &Proxy,
        ctx: &Arc<CallContext>,
        activity: &Activity,
    ) -> Result<(), WsError> {
        let res = loop {
            tokio::select! {
                res = &mut responding => break res,
                () = &mut self.ping => self.ping().await?,
            }
        };
        let (mut parts, mut body) = res.into_parts();
        if parts.status != StatusCode::OK {
            // A stage answered in plain HTTP: the client reads statuses from trailers only.
            let status = Status::new(
                Code::from_http_status(parts.status),
                format!("HTTP {}", parts.status),
            );
            ctx.set_code(status.code);
            let (p, b) = grpc_web::respond(&reply_mode(), Reply::error(status)).into_parts();
            (parts, body) = (p, b);
        }
        let mut body = proxy.finish(&mut parts, body, ctx);
        self.send_now(header_frame(&parts.headers)).await?;
        self.headers_sent = true;
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = &mut self.ping => {
                    self.ping().await?;
                    continue;
                }
            };
            let data = match frame {
                None => return Ok(()),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    // Response bodies end with a status rather than fail; should one fail,
                    // the client still gets a status.
                    let status = Status::new(Code::Internal, format!("response failed: {e}"));
                    return self.end(&status, ctx).await;
                }
            };
            activity.touch();
            self.sink.feed(Message::Binary(data)).await?;
            // What is ready as well goes out in the same write.
            while let Some(Some(Ok(frame))) = body.frame().now_or_never() {
                if let Ok(data) = frame.into_data() {
                    self.sink.feed(Message::Binary(data)).await?;
                }
            }
            self.sink.flush().await?;
            self.rearm();
        }
    }

    /// Ends the call on the socket with `status` (after the header frame, if it is not out).
    async fn end(&mut self, status: &Status, ctx: &CallContext) -> Result<(), WsError> {
        if !self.headers_sent {
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                reply_mode().response_content_type,
            );
            headers.insert(
                crate::observe::request_id::X_REQUEST_ID,
                ctx.request_id.clone(),
            );
            self.sink
                .feed(Message::Binary(header_frame(&headers)))
                .await?;
            self.headers_sent = true;
        }
        self.send_now(trailer_frame(status, &HeaderMap::new()))
            .await
    }

    async fn send_now(&mut self, message: bytes::Bytes) -> Result<(), WsError> {
        self.rearm();
        self.sink.send(Message::Binary(message)).await
    }
}
