//! Descriptors from gRPC server reflection (`grpc.reflection.v1.ServerReflection`, falling
//! back to `v1alpha`), for transcoding JSON callers when no descriptor set is configured.
//!
//! The reflection RPC is a bidi stream, but every exchange here is one short call per
//! *round*: all requests of the round are sent with the request body closed, and every
//! response is read until the trailers. Round 1 lists the services, round 2 asks for the file
//! defining each of them, and further rounds ask by name for imports still missing (servers
//! may skip files they believe the client already has).

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, TE};
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt as _;
use prost::Message as _;
use tokio::time::Instant;

use crate::protocol::grpc::frame::{self, HEADER_LEN};
use crate::protocol::grpc::timeout::encode_grpc_timeout;
use crate::protocol::grpc::{Code, Status};
use crate::protocol::json::{EncodedFile, Schema};
use crate::upstream::UpstreamClient;

const V1_PATH: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
const V1ALPHA_PATH: &str = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
/// Cap on the bytes of one round's responses.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Rounds of `file_by_filename` at most; each one must bring new files anyway.
const MAX_DEPENDENCY_ROUNDS: usize = 32;

/// `grpc.reflection.v1.ServerReflectionRequest`, the fields used here.
#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    host: String,
    #[prost(oneof = "MessageRequest", tags = "3, 4, 7")]
    message_request: Option<MessageRequest>,
}

/// The request kinds used here.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
enum MessageRequest {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

/// `grpc.reflection.v1.ServerReflectionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ServerReflectionResponse {
    #[prost(string, tag = "1")]
    valid_host: String,
    #[prost(message, optional, tag = "2")]
    original_request: Option<ServerReflectionRequest>,
    #[prost(oneof = "MessageResponse", tags = "4, 6, 7")]
    message_response: Option<MessageResponse>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
#[allow(clippy::enum_variant_names)] // The names of the proto fields.
enum MessageResponse {
    #[prost(message, tag = "4")]
    FileDescriptorResponse(FileDescriptorResponse),
    #[prost(message, tag = "6")]
    ListServicesResponse(ListServiceResponse),
    #[prost(message, tag = "7")]
    ErrorResponse(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
struct FileDescriptorResponse {
    /// Serialized `FileDescriptorProto`s.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    file_descriptor_proto: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ServiceResponse {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ErrorResponse {
    #[prost(int32, tag = "1")]
    error_code: i32,
    #[prost(string, tag = "2")]
    error_message: String,
}

/// Why descriptors could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// The upstream answered that it has no reflection service (neither version).
    NoReflection(String),
    /// Anything else (unreachable, timed out, a broken answer).
    Failed(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NoReflection(e) | FetchError::Failed(e) => f.write_str(e),
        }
    }
}

/// Fetches every service's file descriptors (with transitive dependencies) from an
/// upstream's server reflection: `grpc.reflection.v1.ServerReflection/ServerReflectionInfo`,
/// falling back to `grpc.reflection.v1alpha` when v1 is unimplemented. `timeout` bounds the
/// whole exchange. Files are kept as the server sent them, options included.
pub(crate) async fn fetch_schema(
    upstream: &UpstreamClient,
    timeout: Duration,
) -> Result<Schema, FetchError> {
    let name = &upstream.config.name;
    let mut transport = HttpTransport {
        upstream,
        path: V1_PATH,
        version_known: false,
        unimplemented: false,
        deadline: Instant::now() + timeout,
    };
    let files = match tokio::time::timeout(timeout, resolve(&mut transport)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no complete answer within {timeout:?}")),
    };
    let files = files.map_err(|e| {
        let e = format!("server reflection of upstream {name:?}: {e}");
        if transport.unimplemented {
            FetchError::NoReflection(e)
        } else {
            FetchError::Failed(e)
        }
    })?;
    Schema::from_encoded_files(files)
        .map_err(|e| FetchError::Failed(format!("server reflection of upstream {name:?}: {e}")))
}

/// One round: sends `requests` on a new reflection stream and returns the responses in order.
trait Transport {
    async fn round(
        &mut self,
        requests: &[MessageRequest],
    ) -> Result<Vec<ServerReflectionResponse>, String>;
}

/// Lists the services, then collects the files that define them and everything they import.
async fn resolve<T: Transport>(transport: &mut T) -> Result<Vec<EncodedFile>, String> {
    // Round 1: the services.
    let responses = transport
        .round(&[MessageRequest::ListServices(String::new())])
        .await?;
    let mut services = Vec::new();
    for response in responses {
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                services.extend(list.service.into_iter().map(|s| s.name));
            }
            Some(MessageResponse::ErrorResponse(e)) => {
                return Err(format!("list_services failed: {}", describe(&e)));
            }
            _ => return Err("unexpected answer to list_services".to_owned()),
        }
    }
    services.retain(|s| !s.starts_with("grpc.reflection."));
    services.sort();
    services.dedup();
    if services.is_empty() {
        return Err("it lists no services besides reflection".to_owned());
    }

    // Round 2: the file of each service.
    let mut files = Files::default();
    let mut failures = Vec::new();
    let requests: Vec<_> = services
        .iter()
        .map(|s| MessageRequest::FileContainingSymbol(s.clone()))
        .collect();
    let responses = transport.round(&requests).await?;
    files.absorb(responses, &requests, &mut failures)?;
    if files.list.is_empty() {
        return Err(format!(
            "no descriptors for any service: {}",
            failures.join("; ")
        ));
    }
    for failure in &failures {
        tracing::warn!(%failure, "server reflection could not describe a service");
    }

    // Further rounds: imports still missing. A file asked for once is not asked for again;
    // well-known types the server does not have come from bundled copies later.
    let mut asked: HashSet<String> = HashSet::new();
    for _ in 0..MAX_DEPENDENCY_ROUNDS {
        let missing: Vec<String> = files
            .missing()
            .into_iter()
            .filter(|name| !asked.contains(name))
            .collect();
        if missing.is_empty() {
            break;
        }
        asked.extend(missing.iter().cloned());
        let requests: Vec<_> = missing
            .into_iter()
            .map(MessageRequest::FileByFilename)
            .collect();
        let responses = transport.round(&requests).await?;
        let mut failures = Vec::new();
        let added = files.absorb(responses, &requests, &mut failures)?;
        for failure in &failures {
            tracing::debug!(%failure, "server reflection could not send a file");
        }
        if added == 0 {
            break;
        }
    }
    Ok(files.list)
}

/// Files received so far, first copy of each name kept.
#[derive(Default)]
struct Files {
    list: Vec<EncodedFile>,
    names: HashSet<String>,
}

impl Files {
    /// Adds the files of `responses` and returns how many were new. Error responses are
    /// described in `failures`; undecodable descriptors fail the whole fetch.
    fn absorb(
        &mut self,
        responses: Vec<ServerReflectionResponse>,
        requests: &[MessageRequest],
        failures: &mut Vec<String>,
    ) -> Result<usize, String> {
        let mut added = 0;
        for (i, response) in responses.into_iter().enumerate() {
            let request = response
                .original_request
                .and_then(|r| r.message_request)
                .or_else(|| requests.get(i).cloned());
            match response.message_response {
                Some(MessageResponse::FileDescriptorResponse(fds)) => {
                    for raw in fds.file_descriptor_proto {
                        let file = EncodedFile::decode(raw)
                            .map_err(|e| format!("{e} for {}", what(&request)))?;
                        if self.names.insert(file.name.clone()) {
                            self.list.push(file);
                            added += 1;
                        }
                    }
                }
                Some(MessageResponse::ErrorResponse(e)) => {
                    failures.push(format!("{}: {}", what(&request), describe(&e)));
                }
                _ => failures.push(format!("{}: unexpected answer", what(&request))),
            }
        }
        Ok(added)
    }

    /// Imports of received files that have not been received, in a stable order.
    fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for file in &self.list {
            for dep in &file.dependency {
                if !self.names.contains(dep) && seen.insert(dep.as_str()) {
                    missing.push(dep.clone());
                }
            }
        }
        missing
    }
}

fn what(request: &Option<MessageRequest>) -> String {
    match request {
        Some(MessageRequest::FileByFilename(name)) => format!("file {name:?}"),
        Some(MessageRequest::FileContainingSymbol(name)) => format!("symbol {name:?}"),
        Some(MessageRequest::ListServices(_)) => "list_services".to_owned(),
        None => "a request".to_owned(),
    }
}

fn describe(e: &ErrorResponse) -> String {
    format!(
        "{:?}: {}",
        Code::from_i32(e.error_code),
        if e.error_message.is_empty() {
            "(no message)"
        } else {
            &e.error_message
        }
    )
}

/// Reflection calls over the upstream's connection pool.
struct HttpTransport<'a> {
    upstream: &'a UpstreamClient,
    path: &'static str,
    /// Set once a call to `path` got a gRPC answer: no more falling back.
    version_known: bool,
    /// Set when neither version is implemented.
    unimplemented: bool,
    deadline: Instant,
}

/// Why a call failed.
enum CallError {
    /// The server does not know the method (`UNIMPLEMENTED` or HTTP 404).
    Unimplemented(String),
    /// Anything else.
    Failed(String),
}

impl Transport for HttpTransport<'_> {
    async fn round(
        &mut self,
        requests: &[MessageRequest],
    ) -> Result<Vec<ServerReflectionResponse>, String> {
        match call(self.upstream, self.path, requests, self.deadline).await {
            Ok(responses) => {
                self.version_known = true;
                Ok(responses)
            }
            Err(CallError::Unimplemented(v1)) if !self.version_known && self.path == V1_PATH => {
                self.path = V1ALPHA_PATH;
                self.version_known = true;
                match call(self.upstream, self.path, requests, self.deadline).await {
                    Ok(responses) => Ok(responses),
                    Err(CallError::Unimplemented(alpha)) => {
                        self.unimplemented = true;
                        Err(format!(
                            "the upstream does not offer server reflection (grpc.reflection.v1: {v1}; v1alpha: {alpha})"
                        ))
                    }
                    Err(CallError::Failed(e)) => Err(format!("grpc.reflection.v1alpha: {e}")),
                }
            }
            Err(CallError::Unimplemented(e) | CallError::Failed(e)) => Err(e),
        }
    }
}

/// One reflection call: every request framed in the body, every response read to the end.
async fn call(
    upstream: &UpstreamClient,
    path: &'static str,
    requests: &[MessageRequest],
    deadline: Instant,
) -> Result<Vec<ServerReflectionResponse>, CallError> {
    let req = build_request(
        path,
        requests,
        deadline.saturating_duration_since(Instant::now()),
    );
    let response = upstream
        .send(req)
        .await
        .map_err(|e| CallError::Failed(e.into_status(&upstream.config.name).message))?;
    let (parts, body) = response.into_parts();
    if parts.status != StatusCode::OK {
        let msg = format!("HTTP status {}", parts.status);
        return Err(if parts.status == StatusCode::NOT_FOUND {
            CallError::Unimplemented(msg)
        } else {
            CallError::Failed(msg)
        });
    }
    let content_type = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/grpc") {
        return Err(CallError::Failed(format!(
            "not a gRPC response (content-type {content_type:?})"
        )));
    }
    // Trailers-Only.
    if let Some(status) = Status::from_headers(&parts.headers) {
        check_status(status)?;
        return Ok(Vec::new());
    }
    let collected = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| CallError::Failed(format!("reading the response failed: {e}")))?;
    let status = collected
        .trailers()
        .and_then(Status::from_headers)
        .ok_or_else(|| CallError::Failed("the response ended without grpc-status".to_owned()))?;
    check_status(status)?;
    decode_responses(collected.to_bytes()).map_err(CallError::Failed)
}

fn check_status(status: Status) -> Result<(), CallError> {
    match status.code {
        Code::Ok => Ok(()),
        Code::Unimplemented => Err(CallError::Unimplemented(format!(
            "Unimplemented: {}",
            status.message
        ))),
        code => Err(CallError::Failed(format!("{code:?}: {}", status.message))),
    }
}

fn build_request(
    path: &'static str,
    requests: &[MessageRequest],
    budget: Duration,
) -> Request<crate::body::BoxBody> {
    let mut body = BytesMut::new();
    for request in requests {
        let message = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request.clone()),
        };
        let len = message.encoded_len();
        body.reserve(HEADER_LEN + len);
        body.extend_from_slice(&frame::header(0, len));
        // Encoding into a BytesMut that has room cannot fail.
        let _ = message.encode(&mut body);
    }
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert("grpc-timeout", encode_grpc_timeout(budget));
    let mut req = Request::new(crate::body::full(body.freeze()));
    *req.method_mut() = http::Method::POST;
    *req.version_mut() = http::Version::HTTP_2;
    *req.uri_mut() = http::Uri::from_static(path);
    *req.headers_mut() = headers;
    req
}

/// Splits a response body into messages.
fn decode_responses(mut data: Bytes) -> Result<Vec<ServerReflectionResponse>, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < HEADER_LEN {
            return Err("the response ended inside a message".to_owned());
        }
        let flags = data[0];
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        if flags != 0 {
            return Err(format!("unexpected message flags 0x{flags:02x}"));
        }
        data.advance(HEADER_LEN);
        if data.len() < len {
            return Err("the response ended inside a message".to_owned());
        }
        let message = data.split_to(len);
        out.push(
            ServerReflectionResponse::decode(message)
                .map_err(|e| format!("invalid ServerReflectionResponse: {e}"))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
