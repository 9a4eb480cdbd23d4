//! Unit tests of the rules of proto/switchboard/testing/v1/library.proto: matching, the
//! request messages made from path, query and body, response bodies and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use http::Method as Http;
use prost::Message as _;
use prost_reflect::DynamicMessage;
use serde_json::{json, Value};

use super::message;
use super::router::Lookup;
use crate::protocol::grpc::Code;
use crate::protocol::json::Schema;

const TESTING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/testing_descriptor.bin"));
const SVC: &str = "/switchboard.testing.v1.LibraryService/";

fn schema() -> Schema {
    Schema::from_descriptor_set(TESTING).unwrap()
}

/// The method a request maps to, and the request message as canonical JSON.
fn call(s: &Schema, method: Http, path_and_query: &str, body: &str) -> (String, Value) {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let Lookup::Found(binding, segments) = s.rest().lookup(&method, path) else {
        panic!("{method} {path_and_query}: no binding");
    };
    let proto = message::request(&binding, &segments, query, body.as_bytes(), false)
        .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e:?}"));
    let json = binding.method.request_to_json(&proto).unwrap();
    let name = binding.method.path().strip_prefix(SVC).unwrap().to_owned();
    (name, serde_json::from_slice(&json).unwrap())
}

fn fails(s: &Schema, method: Http, path_and_query: &str, body: &str) -> String {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let Lookup::Found(binding, segments) = s.rest().lookup(&method, path) else {
        panic!("{method} {path_and_query}: no binding");
    };
    let e = message::request(&binding, &segments, query, body.as_bytes(), false).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument, "{}", e.message);
    e.message
}

#[test]
fn every_rule_is_compiled() {
    let s = schema();
    let patterns: Vec<String> = s
        .rest()
        .bindings()
        .iter()
        .map(|b| format!("{:?} {}", b.verb, b.pattern))
        .collect();
    // 11 annotated methods, ListBooks with two additional bindings; Ping has no rule.
    assert_eq!(patterns.len(), 13, "{patterns:#?}");
    assert!(s
        .rest()
        .bindings()
        .iter()
        .all(|b| !b.method.path().ends_with("/Ping")));
}

#[test]
fn matching_prefers_literals_and_splits_verbs() {
    let s = schema();
    let m = |method: Http, path: &str| match s.rest().lookup(&method, path) {
        Lookup::Found(b, _) => b.method.path().strip_prefix(SVC).unwrap().to_owned(),
        Lookup::WrongMethod(allow) => format!("405 {allow:?}"),
        Lookup::NotFound => "404".to_owned(),
    };
    assert_eq!(m(Http::GET, "/v1/shelves/1"), "GetShelf");
    assert_eq!(m(Http::GET, "/v1/shelves/1:watch"), "WatchShelf");
    assert_eq!(m(Http::GET, "/v1/shelves/1/books"), "ListBooks");
    assert_eq!(m(Http::GET, "/v1/books"), "ListBooks");
    assert_eq!(m(Http::GET, "/v1/shelves/1/titles"), "ListBooks");
    assert_eq!(m(Http::POST, "/v1/shelves/1/books"), "CreateBook");
    assert_eq!(m(Http::PATCH, "/v1/shelves/1/books/2"), "UpdateBook");
    assert_eq!(m(Http::PUT, "/v1/shelves/1/books/2"), "ReplaceBook");
    assert_eq!(m(Http::DELETE, "/v1/shelves/1/books/2"), "DeleteBook");
    assert_eq!(m(Http::POST, "/v1/shelves/1/books/2:move"), "MoveBook");
    assert_eq!(m(Http::GET, "/v1/files/a/b/c.txt"), "GetFile");
    assert_eq!(m(Http::GET, "/v1/files"), "GetFile");
    assert_eq!(m(Http::GET, "/v1/authors/x%20y"), "GetAuthor");
    let search = Http::from_bytes(b"SEARCH").unwrap();
    assert_eq!(m(search, "/v1/books"), "SearchBooks");
    assert_eq!(
        m(Http::GET, "/v1/shelves/1/books/2"),
        r#"405 [DELETE, PATCH, PUT]"#
    );
    assert_eq!(m(Http::POST, "/v1/books"), "405 [GET, SEARCH]");
    assert_eq!(m(Http::GET, "/v1/shelves/1/books/2/3"), "404");
    assert_eq!(m(Http::GET, "/v2/shelves/1"), "404");
    assert_eq!(m(Http::GET, "/v1/shelves/"), "404");
    // An unknown verb is part of the segment, which may hold a ':'.
    assert_eq!(m(Http::GET, "/v1/shelves/1:nope"), "GetShelf");
    assert_eq!(m(Http::GET, "relative"), "404");
}

#[test]
fn path_variables_are_decoded_as_the_spec_says() {
    let s = schema();
    let (m, req) = call(&s, Http::GET, "/v1/authors/J%2FR%20R%C3%A9", "");
    assert_eq!(m, "GetAuthor");
    assert_eq!(req, json!({"authorId": "J/R Ré"}));
    let (m, req) = call(&s, Http::GET, "/v1/files/dir%2Fsub/a%20b/c%2fd.txt", "");
    assert_eq!(m, "GetFile");
    assert_eq!(req, json!({"path": "dir%2Fsub/a b/c%2fd.txt"}));
    let (_, req) = call(&s, Http::GET, "/v1/files", "");
    assert_eq!(req, json!({}));
    let (_, req) = call(&s, Http::GET, "/v1/shelves/a%2Fb", "");
    assert_eq!(req, json!({"name": "shelves/a%2Fb"}));
    let e = fails(&s, Http::GET, "/v1/authors/%FF", "");
    assert!(e.contains("author_id") && e.contains("UTF-8"), "{e}");
}

#[test]
fn query_parameters_of_every_kind() {
    let s = schema();
    let q = "pageSize=5&page_token=t+1&tags=a&tags=b%20c&filter.author=Ann&filter.pages.min=10\
        &publishedAfter=2024-01-02T03:04:05Z&max_age=1.5s&readMask=title,writer&minPages=7\
        &format=FORMAT_EBOOK&includeDrafts=true&cursor=AQID&ids=1&ids=2&minRating=4.5\
        &language=fr&edition=3";
    let (m, req) = call(&s, Http::GET, &format!("/v1/shelves/s1/books?{q}"), "");
    assert_eq!(m, "ListBooks");
    assert_eq!(
        req,
        json!({
            "parent": "shelves/s1",
            "pageSize": 5,
            "pageToken": "t 1",
            "tags": ["a", "b c"],
            "filter": {"author": "Ann", "pages": {"min": 10}},
            "publishedAfter": "2024-01-02T03:04:05Z",
            "maxAge": "1.500s",
            "readMask": "title,writer",
            "minPages": 7,
            "format": "FORMAT_EBOOK",
            "includeDrafts": true,
            "cursor": "AQID",
            "ids": ["1", "2"],
            "minRating": 4.5,
            "language": "fr",
            "edition": 3,
        })
    );
    // Without a parent in the path, it may come from the query.
    let (_, req) = call(&s, Http::GET, "/v1/books?parent=shelves/x&format=2", "");
    assert_eq!(
        req,
        json!({"parent": "shelves/x", "format": "FORMAT_EBOOK"})
    );
    // URL-safe base64, unpadded.
    let (_, req) = call(&s, Http::GET, "/v1/books?cursor=-_8", "");
    assert_eq!(req, json!({"cursor": "+/8="}));
}

#[test]
fn bad_query_parameters_are_named() {
    let s = schema();
    for (q, want) in [
        ("bogus=1", r#""bogus""#),
        ("pageSize=x", r#""pageSize""#),
        ("filter.nope=1", r#""filter.nope""#),
        ("filter=1", "is a message"),
        ("format=FORMAT_PURPLE", "FORMAT_PURPLE"),
        ("parent=shelves/2", "comes from the path"),
        ("publishedAfter=yesterday", "Timestamp"),
        ("includeDrafts=maybe", "boolean"),
        ("cursor=%%%", "base64"),
    ] {
        let e = fails(&s, Http::GET, &format!("/v1/shelves/1/books?{q}"), "");
        assert!(e.contains(want), "{q}: {e}");
    }
    // The body field cannot also come from the query.
    let e = fails(&s, Http::POST, "/v1/shelves/1/books?book.title=x", "{}");
    assert!(e.contains("request body"), "{e}");
    // With `body: "*"` nothing comes from the query.
    let e = fails(&s, Http::PUT, "/v1/shelves/1/books/2?title=x", "{}");
    assert!(e.contains(r#""title""#), "{e}");
    // Unless unknown fields are ignored.
    let Lookup::Found(b, segs) = s.rest().lookup(&Http::GET, "/v1/shelves/1/books") else {
        panic!()
    };
    let p = message::request(&b, &segs, Some("bogus=1&pageSize=2"), b"", true).unwrap();
    assert_eq!(
        &b.method.request_to_json(&p).unwrap()[..],
        br#"{"parent":"shelves/1","pageSize":2}"#
    );
}

#[test]
fn bodies_as_a_field_or_the_whole_message() {
    let s = schema();
    let body = r#"{"title":"Dune","writer":"Herbert","pages":"412","tags":["sf"]}"#;
    let (m, req) = call(&s, Http::POST, "/v1/shelves/1/books?bookId=b7", body);
    assert_eq!(m, "CreateBook");
    assert_eq!(
        req,
        json!({
            "parent": "shelves/1",
            "book": {"title": "Dune", "writer": "Herbert", "pages": "412", "tags": ["sf"]},
            "bookId": "b7",
        })
    );
    // Proto field names are accepted too.
    let (_, req) = call(
        &s,
        Http::POST,
        "/v1/shelves/1/books",
        r#"{"author_name":"A"}"#,
    );
    assert_eq!(req["book"], json!({"writer": "A"}));
    // A nested path variable inside the body field: the path wins.
    let (m, req) = call(
        &s,
        Http::PATCH,
        "/v1/shelves/1/books/2?updateMask=title",
        r#"{"name":"ignored","title":"New"}"#,
    );
    assert_eq!(m, "UpdateBook");
    assert_eq!(
        req,
        json!({"book": {"name": "shelves/1/books/2", "title": "New"}, "updateMask": "title"})
    );
    // body "*": the whole message, the path on top.
    let (m, req) = call(
        &s,
        Http::PUT,
        "/v1/shelves/1/books/2",
        r#"{"title":"T","format":"FORMAT_PAPER"}"#,
    );
    assert_eq!(m, "ReplaceBook");
    assert_eq!(
        req,
        json!({"name": "shelves/1/books/2", "title": "T", "format": "FORMAT_PAPER"})
    );
    let (m, req) = call(
        &s,
        Http::POST,
        "/v1/shelves/1/books/2:move",
        r#"{"destination":"shelves/9"}"#,
    );
    assert_eq!(m, "MoveBook");
    assert_eq!(
        req,
        json!({"name": "shelves/1/books/2", "destination": "shelves/9"})
    );
    // An empty body is an empty message.
    let (_, req) = call(&s, Http::POST, "/v1/shelves/1/books/2:move", "");
    assert_eq!(req, json!({"name": "shelves/1/books/2"}));
    // Malformed and unknown fields are named.
    let e = fails(&s, Http::POST, "/v1/shelves/1/books", r#"{"bogus":1}"#);
    assert!(e.contains("bogus"), "{e}");
    let e = fails(&s, Http::PUT, "/v1/shelves/1/books/2", r#"{"pages":"x"}"#);
    assert!(e.contains("pages"), "{e}");
    let e = fails(&s, Http::PUT, "/v1/shelves/1/books/2", "{");
    assert!(e.starts_with("invalid JSON"), "{e}");
}

#[test]
fn response_bodies() {
    let s = schema();
    let Lookup::Found(b, _) = s.rest().lookup(&Http::GET, "/v1/shelves/1/titles") else {
        panic!()
    };
    let output = b.method.output();
    let mut m = DynamicMessage::new(output.clone());
    m.set_field_by_name(
        "titles",
        prost_reflect::Value::List(vec![
            prost_reflect::Value::String("a".into()),
            prost_reflect::Value::String("b\"".into()),
        ]),
    );
    let proto = bytes::Bytes::from(m.encode_to_vec());
    let mut out = Vec::new();
    message::response_json(output, b.response_body.as_ref(), proto, &mut out).unwrap();
    assert_eq!(&out[..], br#"["a","b\""]"#);
    // Unset: the field's default.
    let mut out = Vec::new();
    message::response_json(
        output,
        b.response_body.as_ref(),
        bytes::Bytes::new(),
        &mut out,
    )
    .unwrap();
    assert_eq!(&out[..], b"[]");
    let mut out = Vec::new();
    let e = message::response_json(output, None, bytes::Bytes::from_static(&[0xff]), &mut out)
        .unwrap_err();
    assert_eq!(e.code, Code::Internal);
}

#[test]
fn openapi_document_lists_rest_paths_and_connect_endpoints() {
    let s = schema();
    let doc: Value = serde_json::from_slice(&s.openapi()).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let get = &paths["/v1/{name}"]["get"];
    assert_eq!(get["operationId"], "LibraryService_GetShelf");
    assert_eq!(get["parameters"][0]["name"], "name");
    assert_eq!(get["parameters"][0]["schema"]["pattern"], "^shelves/[^/]+$");
    let list = &paths["/v1/{parent}/books"]["get"];
    let names: Vec<&str> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"filter.pages.min"), "{names:?}");
    assert!(names.contains(&"publishedAfter"), "{names:?}");
    assert!(!names[1..].contains(&"parent"), "{names:?}");
    let patch = &paths["/v1/{book.name}"]["patch"];
    assert_eq!(
        patch["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/switchboard.testing.v1.Book"
    );
    assert!(
        paths["/v1/{name}:watch"]["get"]["responses"]["200"]["content"]
            .get("application/x-ndjson")
            .is_some()
    );
    assert!(paths["/v1/files/{path}"]["get"].is_object());
    assert!(paths["/switchboard.testing.v1.LibraryService/Ping"]["post"].is_object());
    assert!(paths["/switchboard.testing.v1.TestService/Unary"]["post"].is_object());
    let book = &doc["components"]["schemas"]["switchboard.testing.v1.Book"]["properties"];
    assert_eq!(book["writer"]["type"], "string");
    assert_eq!(book["pages"]["format"], "int64");
    assert_eq!(book["published"]["format"], "date-time");
    assert_eq!(book["format"]["enum"][1], "FORMAT_PAPER");
}
