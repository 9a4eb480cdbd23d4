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
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use prost_types::FileDescriptorProto;

    #[test]
    fn request_encoding() {
        let list = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        // Field 7, length 0: a oneof member is written even when empty.
        assert_eq!(list.encode_to_vec(), vec![0x3a, 0x00]);
        let by_name = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileByFilename("a.proto".into())),
        };
        let mut want = vec![0x1a, 0x07];
        want.extend_from_slice(b"a.proto");
        assert_eq!(by_name.encode_to_vec(), want);
        let symbol = ServerReflectionRequest {
            host: "h".into(),
            message_request: Some(MessageRequest::FileContainingSymbol("p.S".into())),
        };
        assert_eq!(
            symbol.encode_to_vec(),
            vec![0x0a, 0x01, b'h', 0x22, 0x03, b'p', b'.', b'S']
        );

        let req = build_request(
            V1_PATH,
            &[
                MessageRequest::ListServices(String::new()),
                MessageRequest::FileByFilename("a.proto".into()),
            ],
            Duration::from_secs(5),
        );
        assert_eq!(req.uri().path(), V1_PATH);
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(req.headers()[TE], "trailers");
        assert!(req.headers().contains_key("grpc-timeout"));
    }

    #[test]
    fn response_decoding() {
        // ServerReflectionResponse{list_services_response: {service: [{name: "p.S"}]}}
        let list = [0x32, 0x07, 0x0a, 0x05, 0x0a, 0x03, b'p', b'.', b'S'];
        // ServerReflectionResponse{error_response: {error_code: 5, error_message: "x"}}
        let error = [0x3a, 0x05, 0x08, 0x05, 0x12, 0x01, b'x'];
        let mut body = Vec::new();
        body.extend_from_slice(&frame::encode(0, &list));
        body.extend_from_slice(&frame::encode(0, &error));
        let responses = decode_responses(Bytes::from(body.clone())).unwrap();
        assert_eq!(responses.len(), 2);
        assert_eq!(
            responses[0].message_response,
            Some(MessageResponse::ListServicesResponse(ListServiceResponse {
                service: vec![ServiceResponse { name: "p.S".into() }]
            }))
        );
        let Some(MessageResponse::ErrorResponse(e)) = &responses[1].message_response else {
            panic!("{:?}", responses[1]);
        };
        assert_eq!(describe(e), "NotFound: x");

        // A file descriptor response round-trips the bytes.
        let file = FileDescriptorProto {
            name: Some("a.proto".into()),
            ..Default::default()
        };
        let fdr = ServerReflectionResponse {
            valid_host: String::new(),
            original_request: None,
            message_response: Some(MessageResponse::FileDescriptorResponse(
                FileDescriptorResponse {
                    file_descriptor_proto: vec![Bytes::from(file.encode_to_vec())],
                },
            )),
        };
        let decoded = decode_responses(frame::encode(0, &fdr.encode_to_vec())).unwrap();
        assert_eq!(decoded, vec![fdr]);

        assert!(decode_responses(Bytes::from(body[..body.len() - 1].to_vec())).is_err());
        assert!(decode_responses(Bytes::from_static(&[0, 0, 0])).is_err());
        assert!(decode_responses(frame::encode(1, &list)).is_err());
        assert!(decode_responses(frame::encode(0, &[0xff])).is_err());
        assert_eq!(decode_responses(Bytes::new()).unwrap(), vec![]);
    }

    fn file(name: &str, package: &str, deps: &[&str]) -> FileDescriptorProto {
        FileDescriptorProto {
            name: Some(name.into()),
            package: Some(package.into()),
            dependency: deps.iter().map(|d| (*d).to_owned()).collect(),
            syntax: Some("proto3".into()),
            ..Default::default()
        }
    }

    /// A reflection server in memory. `closure` sends the file and all its imports for
    /// `file_containing_symbol`, like servers do on a fresh stream; otherwise only the file.
    struct Fake {
        files: HashMap<String, FileDescriptorProto>,
        symbols: HashMap<String, String>,
        services: Vec<String>,
        closure: bool,
        rounds: Vec<Vec<MessageRequest>>,
        fail_list: bool,
    }

    impl Fake {
        fn new(closure: bool) -> Fake {
            use prost_types::{DescriptorProto, MethodDescriptorProto, ServiceDescriptorProto};
            let mut a = file(
                "a.proto",
                "pkg",
                &["b.proto", "google/protobuf/empty.proto"],
            );
            a.service = vec![ServiceDescriptorProto {
                name: Some("S".into()),
                method: vec![MethodDescriptorProto {
                    name: Some("M".into()),
                    input_type: Some(".pkg.B".into()),
                    output_type: Some(".google.protobuf.Empty".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }];
            let mut b = file("b.proto", "pkg", &["c.proto"]);
            b.message_type = vec![DescriptorProto {
                name: Some("B".into()),
                ..Default::default()
            }];
            let c = file("c.proto", "pkg", &[]);
            let mut t = file("t.proto", "other", &["c.proto"]);
            t.service = vec![ServiceDescriptorProto {
                name: Some("T".into()),
                ..Default::default()
            }];
            let files = [a, b, c, t]
                .into_iter()
                .map(|f| (f.name().to_owned(), f))
                .collect();
            let symbols = [("pkg.S", "a.proto"), ("other.T", "t.proto")]
                .into_iter()
                .map(|(s, f)| (s.to_owned(), f.to_owned()))
                .collect();
            Fake {
                files,
                symbols,
                services: vec![
                    "pkg.S".into(),
                    "grpc.reflection.v1.ServerReflection".into(),
                    "other.T".into(),
                ],
                closure,
                rounds: Vec::new(),
                fail_list: false,
            }
        }

        fn with_closure(&self, name: &str, out: &mut Vec<Bytes>, seen: &mut HashSet<String>) {
            if !seen.insert(name.to_owned()) {
                return;
            }
            if let Some(f) = self.files.get(name) {
                out.push(Bytes::from(f.encode_to_vec()));
                for d in &f.dependency {
                    self.with_closure(d, out, seen);
                }
            }
        }

        fn files_response(&self, name: &str, closure: bool) -> MessageResponse {
            if !self.files.contains_key(name) {
                return MessageResponse::ErrorResponse(ErrorResponse {
                    error_code: 5,
                    error_message: format!("{name} not found"),
                });
            }
            let mut out = Vec::new();
            if closure {
                self.with_closure(name, &mut out, &mut HashSet::new());
            } else {
                out.push(Bytes::from(self.files[name].encode_to_vec()));
            }
            MessageResponse::FileDescriptorResponse(FileDescriptorResponse {
                file_descriptor_proto: out,
            })
        }
    }

    impl Fake {
        fn answer(&mut self, requests: &[MessageRequest]) -> Vec<ServerReflectionResponse> {
            self.rounds.push(requests.to_vec());
            requests
                .iter()
                .map(|r| {
                    let message_response = match r {
                        MessageRequest::ListServices(_) if self.fail_list => {
                            MessageResponse::ErrorResponse(ErrorResponse {
                                error_code: 13,
                                error_message: "boom".into(),
                            })
                        }
                        MessageRequest::ListServices(_) => {
                            MessageResponse::ListServicesResponse(ListServiceResponse {
                                service: self
                                    .services
                                    .iter()
                                    .map(|name| ServiceResponse { name: name.clone() })
                                    .collect(),
                            })
                        }
                        MessageRequest::FileContainingSymbol(s) => match self.symbols.get(s) {
                            Some(f) => self.files_response(f, self.closure),
                            None => MessageResponse::ErrorResponse(ErrorResponse {
                                error_code: 5,
                                error_message: "unknown symbol".into(),
                            }),
                        },
                        MessageRequest::FileByFilename(f) => self.files_response(f, false),
                    };
                    ServerReflectionResponse {
                        valid_host: String::new(),
                        original_request: Some(ServerReflectionRequest {
                            host: String::new(),
                            message_request: Some(r.clone()),
                        }),
                        message_response: Some(message_response),
                    }
                })
                .collect()
        }
    }

    impl Transport for Fake {
        async fn round(
            &mut self,
            requests: &[MessageRequest],
        ) -> Result<Vec<ServerReflectionResponse>, String> {
            Ok(self.answer(requests))
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn names(files: &[EncodedFile]) -> Vec<&str> {
        let mut v: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn resolves_dependencies_round_by_round() {
        let mut fake = Fake::new(false);
        let files = block_on(resolve(&mut fake)).unwrap();
        assert_eq!(names(&files), ["a.proto", "b.proto", "c.proto", "t.proto"]);
        assert_eq!(
            fake.rounds,
            vec![
                vec![MessageRequest::ListServices(String::new())],
                vec![
                    MessageRequest::FileContainingSymbol("other.T".into()),
                    MessageRequest::FileContainingSymbol("pkg.S".into()),
                ],
                // Imports in the order the files arrived (t.proto first).
                vec![
                    MessageRequest::FileByFilename("c.proto".into()),
                    MessageRequest::FileByFilename("b.proto".into()),
                    MessageRequest::FileByFilename("google/protobuf/empty.proto".into()),
                ],
            ]
        );
        // The server lacks empty.proto: the bundled copy fills in.
        let schema = Schema::from_encoded_files(files).unwrap();
        let mut services = schema.services();
        services.sort();
        assert_eq!(services, vec!["other.T", "pkg.S"]);
        let m = schema.method("/pkg.S/M").unwrap();
        assert_eq!(&m.response_to_json(&[]).unwrap()[..], b"{}");
    }

    #[test]
    fn transitive_answers_need_two_rounds() {
        let mut fake = Fake::new(true);
        let files = block_on(resolve(&mut fake)).unwrap();
        assert_eq!(names(&files), ["a.proto", "b.proto", "c.proto", "t.proto"]);
        // Only the well-known import is asked for, once.
        assert_eq!(fake.rounds.len(), 3);
        assert_eq!(
            fake.rounds[2],
            vec![MessageRequest::FileByFilename(
                "google/protobuf/empty.proto".into()
            )]
        );
    }

    #[test]
    fn failures() {
        let mut fake = Fake::new(true);
        fake.fail_list = true;
        let e = block_on(resolve(&mut fake)).unwrap_err();
        assert_eq!(e, "list_services failed: Internal: boom");

        let mut fake = Fake::new(true);
        fake.services = vec!["grpc.reflection.v1alpha.ServerReflection".into()];
        let e = block_on(resolve(&mut fake)).unwrap_err();
        assert!(e.contains("no services"), "{e}");

        // One service without descriptors is skipped; none at all is an error.
        let mut fake = Fake::new(true);
        fake.services.push("ghost.G".into());
        let files = block_on(resolve(&mut fake)).unwrap();
        assert_eq!(files.len(), 4);
        let mut fake = Fake::new(true);
        fake.services = vec!["ghost.G".into()];
        let e = block_on(resolve(&mut fake)).unwrap_err();
        assert!(
            e.contains(r#"symbol "ghost.G": NotFound: unknown symbol"#),
            "{e}"
        );

        // A missing import that is not bundled and whose types are not used (as with files
        // imported for their options) gets a stand-in: the schema still builds.
        let mut fake = Fake::new(false);
        fake.files.remove("c.proto");
        let files = block_on(resolve(&mut fake)).unwrap();
        assert_eq!(fake.rounds.len(), 3, "c.proto is asked for once");
        let schema = Schema::from_encoded_files(files).unwrap();
        assert!(schema.method("/pkg.S/M").is_some());
        // One whose types are used fails, naming it.
        let mut fake = Fake::new(false);
        fake.files.remove("b.proto");
        let files = block_on(resolve(&mut fake)).unwrap();
        let e = Schema::from_encoded_files(files).unwrap_err();
        assert!(e.contains("b.proto") && e.contains("a.proto"), "{e}");

        // Undecodable descriptors fail the fetch.
        let mut files = Files::default();
        let bad = ServerReflectionResponse {
            valid_host: String::new(),
            original_request: None,
            message_response: Some(MessageResponse::FileDescriptorResponse(
                FileDescriptorResponse {
                    file_descriptor_proto: vec![Bytes::from_static(&[0xff])],
                },
            )),
        };
        let e = files
            .absorb(
                vec![bad],
                &[MessageRequest::FileByFilename("x.proto".into())],
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(e.contains(r#"file "x.proto""#), "{e}");
    }

    #[test]
    fn status_mapping() {
        assert!(matches!(
            check_status(Status::new(Code::Unimplemented, "nope")),
            Err(CallError::Unimplemented(_))
        ));
        assert!(matches!(
            check_status(Status::new(Code::Unavailable, "down")),
            Err(CallError::Failed(m)) if m == "Unavailable: down"
        ));
        assert!(check_status(Status::ok()).is_ok());
    }

    /// How the in-process HTTP/2 reflection server behaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// Serves v1 and v1alpha.
        Both,
        /// Answers v1 with UNIMPLEMENTED (Trailers-Only) and serves v1alpha.
        AlphaOnly,
        /// Answers v1 with HTTP 404 and v1alpha with UNIMPLEMENTED.
        Neither,
        /// Never answers.
        Hang,
    }

    /// Serves `fake` over h2c on a local port, like a gRPC server with reflection.
    async fn serve(
        fake: Arc<Mutex<Fake>>,
        mode: Mode,
    ) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let fake = fake.clone();
                let seen = seen.clone();
                let service = hyper::service::service_fn(move |req| {
                    handle(req, fake.clone(), seen.clone(), mode)
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (addr, paths)
    }

    async fn handle(
        req: Request<hyper::body::Incoming>,
        fake: Arc<Mutex<Fake>>,
        seen: Arc<Mutex<Vec<String>>>,
        mode: Mode,
    ) -> Result<http::Response<crate::body::BoxBody>, std::convert::Infallible> {
        use http_body::Frame;
        let path = req.uri().path().to_owned();
        seen.lock().unwrap().push(path.clone());
        assert_eq!(req.headers()[CONTENT_TYPE], "application/grpc");
        assert_eq!(req.headers()[TE], "trailers");
        assert!(req.headers().contains_key("grpc-timeout"));
        if mode == Mode::Hang {
            std::future::pending::<()>().await;
        }
        let trailers_only = |code: &str| {
            http::Response::builder()
                .header(CONTENT_TYPE, "application/grpc")
                .header("grpc-status", code)
                .header("grpc-message", "unknown service")
                .body(crate::body::empty())
                .unwrap()
        };
        match (mode, path.as_str()) {
            (Mode::Both, _) | (Mode::AlphaOnly, V1ALPHA_PATH) => {}
            (Mode::AlphaOnly, _) | (Mode::Neither, V1ALPHA_PATH) => return Ok(trailers_only("12")),
            _ => {
                return Ok(http::Response::builder()
                    .status(404)
                    .body(crate::body::empty())
                    .unwrap())
            }
        }
        let mut body = req.into_body().collect().await.unwrap().to_bytes();
        let mut requests = Vec::new();
        while !body.is_empty() {
            let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
            body.advance(HEADER_LEN);
            let r = ServerReflectionRequest::decode(body.split_to(len)).unwrap();
            requests.push(r.message_request.unwrap());
        }
        let responses = fake.lock().unwrap().answer(&requests);
        let mut out = BytesMut::new();
        for r in responses {
            out.extend_from_slice(&frame::encode(0, &r.encode_to_vec()));
        }
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let frames: Vec<Result<Frame<Bytes>, crate::body::BoxError>> =
            vec![Ok(Frame::data(out.freeze())), Ok(Frame::trailers(trailers))];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        Ok(http::Response::builder()
            .header(CONTENT_TYPE, "application/grpc")
            .body(crate::body::BoxBody::new(body))
            .unwrap())
    }

    fn client(addr: std::net::SocketAddr) -> UpstreamClient {
        let config = crate::config::Config::quick(
            "127.0.0.1:0".parse().unwrap(),
            &format!("http://{addr}"),
            Vec::new(),
        )
        .unwrap();
        UpstreamClient::new(config.upstreams[0].clone()).unwrap()
    }

    #[tokio::test]
    async fn fetches_over_http2_and_falls_back_to_v1alpha() {
        for (mode, want_paths) in [
            (Mode::Both, vec![V1_PATH; 3]),
            (
                Mode::AlphaOnly,
                vec![V1_PATH, V1ALPHA_PATH, V1ALPHA_PATH, V1ALPHA_PATH],
            ),
        ] {
            let fake = Arc::new(Mutex::new(Fake::new(false)));
            let (addr, paths) = serve(fake.clone(), mode).await;
            let schema = fetch_schema(&client(addr), Duration::from_secs(10))
                .await
                .unwrap();
            assert!(schema.method("/pkg.S/M").is_some());
            assert_eq!(*paths.lock().unwrap(), want_paths);
            assert_eq!(fake.lock().unwrap().rounds.len(), 3);
        }
    }

    #[tokio::test]
    async fn reports_missing_reflection_unreachable_and_slow_upstreams() {
        let fake = Arc::new(Mutex::new(Fake::new(false)));
        let (addr, _) = serve(fake.clone(), Mode::Neither).await;
        let e = fetch_schema(&client(addr), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::NoReflection(_)), "{e:?}");
        let e = e.to_string();
        assert!(
            e.starts_with(r#"server reflection of upstream "default": the upstream does not offer server reflection"#),
            "{e}"
        );
        assert!(e.contains("404") && e.contains("Unimplemented"), "{e}");

        let (addr, _) = serve(fake, Mode::Hang).await;
        let e = fetch_schema(&client(addr), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Failed(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains("no complete answer within"), "{e}");

        // Nothing listens on a port just freed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let e = fetch_schema(&client(port), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Failed(_)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains(r#"upstream "default""#), "{e}");
    }

    /// `fetch_schema` can run on a multi-threaded runtime.
    #[allow(dead_code)]
    fn fetch_schema_is_send(upstream: &UpstreamClient) {
        fn assert_send<T: Send>(_: T) {}
        assert_send(fetch_schema(upstream, Duration::from_secs(1)));
    }
}
