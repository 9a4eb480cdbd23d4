//! Tests of the reflection client: encoding, dependency rounds, and errors.

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
