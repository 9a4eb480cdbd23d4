//! `switchboard.testing.v1.TestService` for benchmarks: the same wire contract as the
//! integration tests' backend, minus the bookkeeping.
//!
//! - `Unary` / `Lookup`: echo `message` and `payload` (or `response_size` bytes of 'x').
//! - `ServerStream`: `count` messages of `response_size` bytes, as fast as the transport takes
//!   them; with `delay_ms`, the first message goes at once and each later one waits that long
//!   (so `count = 2, delay_ms = 600000` is a stream that sends one message and then idles).

use std::pin::Pin;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::test_service_server::{TestService, TestServiceServer};
use crate::pb::{EchoRequest, EchoResponse};

/// `n` bytes of 'x', shared (no allocation per message up to 1 MiB).
fn filler(n: usize) -> Bytes {
    static X: OnceLock<Bytes> = OnceLock::new();
    let x = X.get_or_init(|| Bytes::from(vec![b'x'; 1 << 20]));
    if n <= x.len() {
        x.slice(..n)
    } else {
        Bytes::from(vec![b'x'; n])
    }
}

fn echo(req: &EchoRequest, index: u32) -> EchoResponse {
    EchoResponse {
        message: req.message.clone(),
        payload: if req.response_size > 0 {
            filler(req.response_size as usize)
        } else {
            req.payload.clone()
        },
        index,
        ..EchoResponse::default()
    }
}

fn error(req: &EchoRequest) -> Option<Status> {
    req.error
        .as_ref()
        .map(|e| Status::new(tonic::Code::from_i32(e.code), e.message.clone()))
}

/// The service.
#[derive(Debug, Default, Clone, Copy)]
pub struct Bench;

/// The service wrapped for tonic, without message size limits.
pub fn server() -> TestServiceServer<Bench> {
    TestServiceServer::new(Bench)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX)
}

type EchoStream = Pin<Box<dyn Stream<Item = Result<EchoResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TestService for Bench {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoResponse>, Status> {
        let req = request.into_inner();
        if req.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
        }
        if let Some(status) = error(&req) {
            return Err(status);
        }
        Ok(Response::new(echo(&req, 0)))
    }

    async fn lookup(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoResponse>, Status> {
        self.unary(request).await
    }

    type ServerStreamStream = EchoStream;

    async fn server_stream(
        &self,
        request: Request<EchoRequest>,
    ) -> Result<Response<EchoStream>, Status> {
        let req = request.into_inner();
        let out = stream::unfold((req, 0u32), |(req, next)| async move {
            if next >= req.count {
                let end = error(&req)?;
                return Some((
                    Err(end),
                    (
                        EchoRequest {
                            count: 0,
                            error: None,
                            ..req
                        },
                        next,
                    ),
                ));
            }
            if req.delay_ms > 0 && next > 0 {
                tokio::time::sleep(Duration::from_millis(req.delay_ms.into())).await;
            }
            let msg = echo(&req, next);
            Some((Ok(msg), (req, next + 1)))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn client_stream(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoResponse>, Status> {
        let mut input = request.into_inner();
        let mut last = EchoRequest::default();
        let mut size = 0usize;
        while let Some(req) = input.message().await? {
            size += req.payload.len();
            last = req;
        }
        last.payload = filler(size);
        last.response_size = 0;
        Ok(Response::new(echo(&last, 0)))
    }

    type BidiStream = EchoStream;

    async fn bidi(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoStream>, Status> {
        let out = request
            .into_inner()
            .enumerate()
            .map(|(i, item)| item.map(|req| echo(&req, i as u32)));
        Ok(Response::new(Box::pin(out)))
    }
}
