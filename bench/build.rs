//! Compiles the test service's .proto (shared with the root crate) for the bench programs, and
//! a descriptor set of it with `google.api.http` rules added, for Switchboard's REST variant.

use std::path::PathBuf;

/// The rules the bench adds (the root crate's tests use their own annotated service).
const RULES: [(&str, &str); 2] = [
    (
        "rpc Lookup(EchoRequest) returns (EchoResponse) {",
        "option (google.api.http) = { get: \"/v1/lookup/{message}\" };",
    ),
    (
        "rpc ServerStream(EchoRequest) returns (stream EchoResponse);",
        "option (google.api.http) = { get: \"/v1/stream/{message}\" };",
    ),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=../proto/switchboard/testing/v1/testing.proto");
    println!("cargo:rerun-if-changed=../proto/google/api");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .bytes(".")
        .file_descriptor_set_path(out.join("testing_descriptor.bin"))
        .compile_protos(
            &["../proto/switchboard/testing/v1/testing.proto"],
            &["../proto"],
        )?;

    // testing.proto with the rules, written under OUT_DIR/rest/ and compiled from there (with
    // ../proto for google/api): descriptors only, no code.
    let source = std::fs::read_to_string("../proto/switchboard/testing/v1/testing.proto")?;
    let mut annotated = source.replacen(
        "package switchboard.testing.v1;",
        "package switchboard.testing.v1;\n\nimport \"google/api/annotations.proto\";",
        1,
    );
    for (method, rule) in RULES {
        if !annotated.contains(method) {
            return Err(format!("testing.proto has no `{method}` to annotate").into());
        }
        let with_rule = match method.strip_suffix(';') {
            Some(open) => format!("{open} {{\n    {rule}\n  }}"),
            None => format!("{method}\n    {rule}"),
        };
        annotated = annotated.replacen(method, &with_rule, 1);
    }
    let dir = out.join("rest/switchboard/testing/v1");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("testing.proto"), annotated)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .out_dir(out.join("rest"))
        .file_descriptor_set_path(out.join("testing_rest_descriptor.bin"))
        .compile_protos(
            &[out.join("rest/switchboard/testing/v1/testing.proto")],
            &[out.join("rest"), PathBuf::from("../proto")],
        )?;
    Ok(())
}
