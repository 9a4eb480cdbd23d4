//! Unit tests of the JSON transcoding.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const TESTING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/testing_descriptor.bin"));
const TYPES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/types.binpb"
));

fn testing() -> Schema {
    Schema::from_descriptor_set(TESTING).unwrap()
}

fn types() -> Schema {
    Schema::from_descriptor_set(TYPES).unwrap()
}

fn echo() -> Method {
    types()
        .method("/switchboard.testing.v1.TypesService/Echo")
        .unwrap()
}

fn unary() -> Method {
    testing()
        .method("/switchboard.testing.v1.TestService/Unary")
        .unwrap()
}

/// JSON → proto → canonical JSON.
fn canonical(m: &Method, json: &str) -> String {
    let proto = m.request_to_proto(json.as_bytes(), false).unwrap();
    String::from_utf8(m.request_to_json(&proto).unwrap().to_vec()).unwrap()
}

fn parse_error(m: &Method, json: &str) -> Status {
    m.request_to_proto(json.as_bytes(), false).unwrap_err()
}

#[test]
fn methods_and_services() {
    let s = testing();
    let mut services = s.services();
    services.sort();
    assert_eq!(
        services,
        vec![
            "switchboard.testing.v1.LibraryService",
            "switchboard.testing.v1.TestService"
        ]
    );
    let u = s
        .method("/switchboard.testing.v1.TestService/Unary")
        .unwrap();
    assert!(!u.client_streaming() && !u.server_streaming() && !u.no_side_effects());
    let l = s
        .method("/switchboard.testing.v1.TestService/Lookup")
        .unwrap();
    assert!(l.no_side_effects());
    let ss = s
        .method("/switchboard.testing.v1.TestService/ServerStream")
        .unwrap();
    assert!(!ss.client_streaming() && ss.server_streaming());
    let cs = s
        .method("/switchboard.testing.v1.TestService/ClientStream")
        .unwrap();
    assert!(cs.client_streaming() && !cs.server_streaming());
    let b = s
        .method("/switchboard.testing.v1.TestService/Bidi")
        .unwrap();
    assert!(b.client_streaming() && b.server_streaming());
    assert!(s
        .method("/switchboard.testing.v1.TestService/Nope")
        .is_none());
    assert!(s
        .method("switchboard.testing.v1.TestService/Unary")
        .is_none());
    assert!(s.method("/other.Service/Unary").is_none());
    assert!(format!("{s:?}").contains("TestService"));
    assert!(format!("{u:?}").contains("EchoRequest"));

    let t = types();
    assert_eq!(t.services(), vec!["switchboard.testing.v1.TypesService"]);
    let w = t
        .method("/switchboard.testing.v1.TypesService/Watch")
        .unwrap();
    assert!(w.server_streaming() && w.no_side_effects());
    let up = t
        .method("/switchboard.testing.v1.TypesService/Upload")
        .unwrap();
    assert!(up.client_streaming());
    assert_eq!(
        &up.request_to_proto(b"{}", false).unwrap()[..],
        b"",
        "Empty"
    );
}

#[test]
fn echo_request_round_trip() {
    let m = unary();
    let json = r#"{"message":"hi","payload":"AAEC/w==","responseSize":3,"delayMs":4,"count":5,"error":{"code":3,"message":"bad","withDetails":true}}"#;
    assert_eq!(canonical(&m, json), json);
    // Response direction, with a map.
    let resp = r#"{"message":"m","index":2,"grpcTimeout":"1S","metadata":{"x-a":"1"}}"#;
    let proto = m.response_to_proto(resp.as_bytes(), false).unwrap();
    let back = m.response_to_json(&proto).unwrap();
    assert_eq!(std::str::from_utf8(&back).unwrap(), resp);
    // Default values are omitted.
    assert_eq!(canonical(&m, r#"{"message":"","count":0}"#), "{}");
    // The proto bytes are what a generated encoder writes.
    let proto = m.request_to_proto(br#"{"message":"Buf"}"#, false).unwrap();
    assert_eq!(&proto[..], &[0x0a, 0x03, b'B', b'u', b'f']);
}

#[test]
fn canonical_scalars() {
    let m = echo();
    assert_eq!(
        canonical(
            &m,
            r#"{"anInt64":123,"aUint64":"18446744073709551615","aSint64":-5,"aFixed64":"7","anInt32":-3}"#
        ),
        r#"{"anInt64":"123","aUint64":"18446744073709551615","aSint64":"-5","aFixed64":"7","anInt32":-3}"#
    );
    assert_eq!(canonical(&m, r#"{"anInt64":1e3}"#), r#"{"anInt64":"1000"}"#);
    assert_eq!(
        canonical(&m, r#"{"aDouble":"NaN","aBool":true,"aString":"é\"\n"}"#),
        r#"{"aDouble":"NaN","aBool":true,"aString":"é\"\n"}"#
    );
    assert_eq!(
        canonical(&m, r#"{"aDouble":"-Infinity"}"#),
        r#"{"aDouble":"-Infinity"}"#
    );
    assert_eq!(canonical(&m, r#"{"aDouble":1.5}"#), r#"{"aDouble":1.5}"#);
    // Enums by name, accepted as names or numbers.
    assert_eq!(
        canonical(&m, r#"{"color":"COLOR_RED","colors":[2,"COLOR_RED"]}"#),
        r#"{"color":"COLOR_RED","colors":["COLOR_GREEN","COLOR_RED"]}"#
    );
    assert_eq!(canonical(&m, r#"{"color":1}"#), r#"{"color":"COLOR_RED"}"#);
    // Bytes: padded standard base64 out; URL-safe and unpadded in.
    assert_eq!(
        canonical(&m, r#"{"blobs":["-_8","AQ==",""]}"#),
        r#"{"blobs":["+/8=","AQ==",""]}"#
    );
    // Maps with int64 values; oneofs; json_name; explicit presence.
    assert_eq!(
        canonical(
            &m,
            r#"{"counts":{"a":1,"b":"2"},"choiceText":"x","customName":"r","maybe":0}"#
        ),
        r#"{"counts":{"a":"1","b":"2"},"choiceText":"x","customName":"r","maybe":0}"#
    );
    assert_eq!(
        canonical(&m, r#"{"choiceNested":{"note":"n","values":[1,2]}}"#),
        r#"{"choiceNested":{"note":"n","values":[1,2]}}"#
    );
}

/// Found by the `json_transcoding` fuzz target: a double written as its shortest decimal
/// (here 1.0943814619208204e-303) read back one unit in the last place off, because
/// serde_json parses floats exactly only with its `float_roundtrip` feature. A JSON
/// caller's double must reach the backend as the same bits.
#[test]
fn doubles_survive_json_exactly() {
    // The fuzzer's input: method selector, flags (2: an upstream reply), then protobuf.
    let found: &[u8] = &[
        0x00, 0x02, 0x08, 0x96, 0x01, 0x42, 0x02, 0x68, 0x69, 0x5a, 0x05, 0x0a, 0x01, 0x6b, 0x10,
        0x05, 0x31, 0x40, 0x00, 0x00, 0xa2, 0x01, 0x04, 0x08, 0x01, 0x10, 0x02,
    ];
    let m = echo();
    let json = m.response_to_json(&found[2..]).unwrap();
    let proto = m.response_to_proto(&json, false).unwrap();
    assert_eq!(m.response_to_json(&proto).unwrap(), json);

    for text in [
        "1.0943814619208204e-303",
        "2.2250738585072014e-308",
        "5e-324",
        "0.1",
    ] {
        let want: f64 = text.parse().unwrap();
        let proto = m
            .request_to_proto(format!(r#"{{"aDouble":{text}}}"#).as_bytes(), false)
            .unwrap();
        // Field 6, fixed64: tag 0x31, then the little-endian bits.
        let at = proto.iter().position(|&b| b == 0x31).unwrap();
        let bits = u64::from_le_bytes(proto[at + 1..at + 9].try_into().unwrap());
        assert_eq!(f64::from_bits(bits), want, "{text}");
    }
}

#[test]
fn maps_are_written_sorted() {
    let m = echo();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    let input = format!(
        "{{\"counts\":{{{}}}}}",
        keys.iter()
            .rev()
            .map(|k| format!("\"{k}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let want = format!(
        "{{\"counts\":{{{}}}}}",
        keys.iter()
            .map(|k| format!("\"{k}\":\"1\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    assert_eq!(canonical(&m, &input), want);
    // Nested in a message, packed in an Any, and in responses.
    let nested = format!(
        r#"{{"anInt64":"1","nested":{{"note":"n"}},"packed":{{"@type":"type.googleapis.com/switchboard.testing.v1.AllTypes","counts":{}}}}}"#,
        &want[10..want.len() - 1]
    );
    assert_eq!(canonical(&m, &nested), nested);
    let proto = m.response_to_proto(nested.as_bytes(), false).unwrap();
    let out = m.response_to_json(&proto).unwrap();
    assert_eq!(std::str::from_utf8(&out).unwrap(), nested);

    let u = unary();
    let resp = r#"{"message":"m","metadata":{"x-a":"1","x-b":"2","x-c":"3","x-d":"4"}}"#;
    for _ in 0..8 {
        let proto = u.response_to_proto(resp.as_bytes(), false).unwrap();
        assert_eq!(&u.response_to_json(&proto).unwrap()[..], resp.as_bytes());
    }
}

#[test]
fn sorted_writer_keeps_floats_and_integer_key_order() {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let mut map = std::collections::HashMap::new();
    map.insert("10", 0.1f32);
    map.insert("9", 1e-30f32);
    map.insert("-1", 3.0f32);
    map.insert("100", 16_777_216f32);
    map.serialize(sorted::Sorted(&mut serde_json::Serializer::new(&mut out)))
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&out).unwrap(),
        r#"{"-1":3.0,"9":1e-30,"10":0.1,"100":16777216.0}"#
    );
}

#[test]
fn canonical_well_known_types() {
    let m = echo();
    let cases = [
        (
            r#"{"when":"2024-01-02T03:04:05.500Z"}"#,
            r#"{"when":"2024-01-02T03:04:05.500Z"}"#,
        ),
        (
            r#"{"when":"2024-01-02T04:04:05+01:00"}"#,
            r#"{"when":"2024-01-02T03:04:05Z"}"#,
        ),
        (r#"{"howLong":"1.5s"}"#, r#"{"howLong":"1.500s"}"#),
        (r#"{"howLong":"-0.000001s"}"#, r#"{"howLong":"-0.000001s"}"#),
        (r#"{"howLong":"3s"}"#, r#"{"howLong":"3s"}"#),
        (r#"{"mask":"fooBar,baz"}"#, r#"{"mask":"fooBar,baz"}"#),
        (
            r#"{"attributes":{"a":[1,"x",null,{"b":true}]}}"#,
            r#"{"attributes":{"a":[1.0,"x",null,{"b":true}]}}"#,
        ),
        (r#"{"anything":null}"#, r#"{"anything":null}"#),
        (r#"{"anything":"s"}"#, r#"{"anything":"s"}"#),
        (r#"{"list":[1,[]]}"#, r#"{"list":[1.0,[]]}"#),
        (
            r#"{"wrappedInt64":"5","wrappedString":"w"}"#,
            r#"{"wrappedInt64":"5","wrappedString":"w"}"#,
        ),
        (r#"{"wrappedInt64":0}"#, r#"{"wrappedInt64":"0"}"#),
        (r#"{"nothing":{}}"#, r#"{"nothing":{}}"#),
        (
            r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"}}"#,
            r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"2s"}}"#,
        ),
        (
            r#"{"packed":{"@type":"type.googleapis.com/switchboard.testing.v1.Nested","note":"n"}}"#,
            r#"{"packed":{"@type":"type.googleapis.com/switchboard.testing.v1.Nested","note":"n"}}"#,
        ),
        // Like Go's protojson (and unlike PROTOCOLS.md's note), Empty counts as special.
        (
            r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Empty","value":{}}}"#,
            r#"{"packed":{"@type":"type.googleapis.com/google.protobuf.Empty","value":{}}}"#,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(canonical(&m, input), want, "{input}");
    }
    // Null means unset.
    assert_eq!(canonical(&m, r#"{"when":null,"anInt64":null}"#), "{}");
}

#[test]
fn accepts_proto_names_and_camel_case() {
    let m = echo();
    assert_eq!(
        canonical(&m, r#"{"an_int64":"1","a_string":"s","renamed":"r"}"#),
        r#"{"anInt64":"1","aString":"s","customName":"r"}"#
    );
    let m = unary();
    assert_eq!(
        canonical(&m, r#"{"delay_ms":1,"responseSize":2}"#),
        r#"{"responseSize":2,"delayMs":1}"#
    );
}

#[test]
fn unknown_fields_are_rejected_unless_ignored() {
    let m = unary();
    let e = parse_error(&m, r#"{"message":"a","bogus":1}"#);
    assert_eq!(e.code, Code::InvalidArgument);
    assert!(e.message.contains("bogus"), "{}", e.message);
    assert!(
        e.message
            .starts_with("invalid JSON for switchboard.testing.v1.EchoRequest: "),
        "{}",
        e.message
    );
    let p = m
        .request_to_proto(br#"{"message":"a","bogus":{"x":[1]}}"#, true)
        .unwrap();
    assert_eq!(&p[..], &[0x0a, 0x01, b'a']);
    // Unknown enum names too.
    let t = echo();
    assert!(t
        .request_to_proto(br#"{"color":"COLOR_BLUE"}"#, false)
        .is_err());
    let p = t
        .request_to_proto(br#"{"color":"COLOR_BLUE"}"#, true)
        .unwrap();
    assert!(p.is_empty());
}

#[test]
fn errors_name_the_field() {
    let m = unary();
    let e = parse_error(&m, r#"{"count":"abc"}"#);
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        r#"invalid JSON for switchboard.testing.v1.EchoRequest: field "count": expected an integer"#
    );
    let e = parse_error(&m, r#"{"message":5}"#);
    assert_eq!(
        e.message,
        r#"invalid JSON for switchboard.testing.v1.EchoRequest: field "message": expected a string, found integer `5`"#
    );
    let e = parse_error(&m, r#"{"error":{"code":"x"}}"#);
    assert!(
        e.message
            .ends_with(r#"field "error.code": expected an integer"#),
        "{}",
        e.message
    );
    let e = parse_error(&m, r#"{"error":{"bogus":1}}"#);
    assert!(
        e.message.contains(r#"field "error": "#) && e.message.contains("'bogus'"),
        "{}",
        e.message
    );
    let t = echo();
    let cases = [
        (
            r#"{"nested":{"values":[1,"z"]}}"#,
            r#"field "nested.values[1]": expected an integer"#,
        ),
        (
            r#"{"anInt32":1.5}"#,
            r#"field "anInt32": expected an integer, found a fractional number"#,
        ),
        (
            r#"{"anInt32":4294967296}"#,
            r#"field "anInt32": integer out of range"#,
        ),
        (r#"{"aUint64":-1}"#, r#"field "aUint64": "#),
        (
            r#"{"anInt64":"9223372036854775808"}"#,
            r#"field "anInt64": integer out of range"#,
        ),
        (r#"{"when":"yesterday"}"#, r#"field "when": "#),
        (r#"{"howLong":"1.5"}"#, r#"field "howLong": "#),
        (
            r#"{"blobs":["%%%"]}"#,
            r#"field "blobs[0]": invalid base64"#,
        ),
        (
            r#"{"counts":{"a":"x"}}"#,
            r#"field "counts.a": expected an integer"#,
        ),
        (
            r#"{"colors":[null]}"#,
            r#"field "colors[0]": expected a string or integer, found null"#,
        ),
        (
            r#"{"packed":{"@type":"type.googleapis.com/no.Such","a":1}}"#,
            r#"field "packed": message 'no.Such' not found"#,
        ),
        (
            r#"{"choiceText":"a","choiceNested":{}}"#,
            "multiple fields provided for oneof 'choice'",
        ),
    ];
    for (input, want) in cases {
        let e = parse_error(&t, input);
        assert!(e.message.contains(want), "{input}: {}", e.message);
    }
}

#[test]
fn malformed_input() {
    let m = unary();
    let e = parse_error(&m, "");
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(
        e.message,
        "invalid JSON for switchboard.testing.v1.EchoRequest: empty body is not a JSON object"
    );
    for bad in [
        "{} x",
        "{}{}",
        "{",
        "  ",
        "[]",
        "null",
        "\"s\"",
        r#"{"message":"a",}"#,
        r#"{"message":"\ud800"}"#,
    ] {
        let e = parse_error(&m, bad);
        assert_eq!(e.code, Code::InvalidArgument, "{bad}");
    }
    // Whitespace around the object is fine.
    assert!(m.request_to_proto(b" {} \n", false).is_ok());
    let e = m.response_to_proto(b"{", false).unwrap_err();
    assert_eq!(e.code, Code::Internal);
    // Deep nesting is an error, not a stack overflow.
    let deep = format!(
        "{{\"attributes\":{}{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    assert!(echo().request_to_proto(deep.as_bytes(), false).is_err());
}

#[test]
fn invalid_protobuf() {
    let m = unary();
    let e = m.response_to_json(&[0x0a, 0x05, b'a']).unwrap_err();
    assert_eq!(e.code, Code::Internal);
    assert!(e.message.contains("EchoResponse"), "{}", e.message);
    let e = m.request_to_json(&[0xff]).unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    assert_eq!(&m.response_to_json(&[]).unwrap()[..], b"{}");
    // Unknown fields in responses are dropped.
    assert_eq!(
        &m.response_to_json(&[0x0a, 0x01, b'a', 0xf8, 0x01, 0x01])
            .unwrap()[..],
        br#"{"message":"a"}"#
    );
}

#[test]
fn any_with_unknown_type_fails_on_output() {
    let m = echo();
    // packed = Any{type_url: "type.googleapis.com/no.Such", value: ""}
    let url = b"type.googleapis.com/no.Such";
    let mut any = vec![0x0a, url.len() as u8];
    any.extend_from_slice(url);
    let mut msg = vec![0xca, 0x01, any.len() as u8];
    msg.extend_from_slice(&any);
    let e = m.response_to_json(&msg).unwrap_err();
    assert_eq!(e.code, Code::Internal);
}

#[test]
fn error_details_as_json() {
    let s = testing();
    // google.rpc.BadRequest{field_violations: [{field: "name", description: "must not be empty"}]}
    let mut v = vec![0x0a, 0x19, 0x0a, 0x04];
    v.extend_from_slice(b"name");
    v.extend_from_slice(&[0x12, 0x11]);
    v.extend_from_slice(b"must not be empty");
    let json = s
        .detail_json("type.googleapis.com/google.rpc.BadRequest", &v)
        .unwrap();
    assert_eq!(
        json.to_string(),
        r#"{"fieldViolations":[{"field":"name","description":"must not be empty"}]}"#
    );
    assert!(s.detail_json("type.googleapis.com/no.Such", &v).is_none());
    assert!(s
        .detail_json("type.googleapis.com/google.rpc.BadRequest", &[0xff])
        .is_none());
    let d = s
        .detail_json("google.protobuf.Duration", &[0x08, 0x02])
        .unwrap();
    assert_eq!(d, serde_json::json!("2s"));
    let e = s
        .detail_json(
            "type.googleapis.com/switchboard.testing.v1.ErrorSpec",
            &[0x08, 0x03],
        )
        .unwrap();
    assert_eq!(e, serde_json::json!({"code": 3}));
}

#[test]
fn schema_from_files_in_any_order_with_missing_wkt() {
    let set = prost_types::FileDescriptorSet::decode(TYPES).unwrap();
    // Drop the well-known types and reverse: they come from the bundled copies.
    let mut files: Vec<_> = set
        .file
        .into_iter()
        .filter(|f| !f.name().starts_with("google/"))
        .collect();
    assert_eq!(files.len(), 1);
    let dep = FileDescriptorProto {
        name: Some("dep.proto".into()),
        package: Some("dep".into()),
        message_type: vec![prost_types::DescriptorProto {
            name: Some("D".into()),
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let user = FileDescriptorProto {
        name: Some("user.proto".into()),
        package: Some("user".into()),
        dependency: vec!["dep.proto".into(), "google/protobuf/empty.proto".into()],
        service: vec![prost_types::ServiceDescriptorProto {
            name: Some("S".into()),
            method: vec![prost_types::MethodDescriptorProto {
                name: Some("M".into()),
                input_type: Some(".dep.D".into()),
                output_type: Some(".google.protobuf.Empty".into()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    files.insert(0, user.clone());
    files.push(dep.clone());
    let s = Schema::from_file_protos(files).unwrap();
    let mut services = s.services();
    services.sort();
    assert_eq!(
        services,
        vec!["switchboard.testing.v1.TypesService", "user.S"]
    );
    assert!(s.method("/user.S/M").is_some());
    let m = s
        .method("/switchboard.testing.v1.TypesService/Echo")
        .unwrap();
    assert_eq!(
        canonical(&m, r#"{"when":"1970-01-01T00:00:01Z"}"#),
        r#"{"when":"1970-01-01T00:00:01Z"}"#
    );

    // A missing import that is not bundled is named.
    let e = Schema::from_file_protos(vec![user]).unwrap_err();
    assert!(e.contains("dep.proto") && e.contains("user.proto"), "{e}");
    assert!(Schema::from_descriptor_set(b"\xff\xff").is_err());

    // A file that defines a bundled type under another name keeps its own definition.
    let own = FileDescriptorProto {
        name: Some("mine/status.proto".into()),
        package: Some("google.rpc".into()),
        message_type: vec![prost_types::DescriptorProto {
            name: Some("BadRequest".into()),
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    };
    let s = Schema::from_file_protos(vec![own]).unwrap();
    assert_eq!(
        s.detail_json("type.googleapis.com/google.rpc.BadRequest", &[]),
        Some(serde_json::json!({}))
    );
    assert!(s
        .detail_json(
            "type.googleapis.com/google.protobuf.Duration",
            &[0x08, 0x01]
        )
        .is_some());
    assert_eq!(
        Schema::from_file_protos(vec![dep])
            .unwrap()
            .services()
            .len(),
        0
    );
}

#[test]
fn writer_matches_prost_reflect() {
    // The same message through the fast writer and through prost-reflect's serializer.
    let m = echo();
    let inputs = [
        r#"{"blobs":["AAEC/v8=","","/w=="],"aString":"quote \" back \\ nl \n tab \t é ☃"}"#,
        r#"{"aDouble":"NaN","anInt32":-5,"aUint64":"18446744073709551615","aBool":true}"#,
        r#"{"aDouble":"-Infinity","colors":["COLOR_RED",7],"color":"COLOR_GREEN"}"#,
        r#"{"counts":{"b":"2","a":"1","10":"3","9":"4"},"nested":{"note":"n","values":[1,2]}}"#,
        r#"{"when":"2024-01-02T03:04:05.5Z","packed":{"@type":"type.googleapis.com/switchboard.testing.v1.Nested","note":"x"}}"#,
        r#"{"choiceText":"","maybe":0,"customName":"c","attributes":{"z":1,"a":[true,null]}}"#,
        r#"{"aDouble":1e-7,"aSint64":"-9","aFixed64":"3"}"#,
    ];
    for input in inputs {
        let proto = m.request_to_proto(input.as_bytes(), false).unwrap();
        let message = DynamicMessage::decode(m.input().clone(), &proto[..]).unwrap();
        let mut fast = Vec::new();
        write::message(&mut fast, &message).unwrap();
        let mut slow = Vec::new();
        message
            .serialize_with_options(
                sorted::Sorted(&mut serde_json::Serializer::new(&mut slow)),
                &serialize_options(),
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(fast).unwrap(),
            String::from_utf8(slow).unwrap(),
            "{input}"
        );
    }
}
