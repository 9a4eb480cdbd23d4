//! Compiles the .proto files of the test and demo services.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // A protoc shipped inside a crate, so a fresh machine needs nothing installed.
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("testing_descriptor.bin"))
        .compile_protos(
            &[
                "proto/switchboard/testing/v1/testing.proto",
                "proto/switchboard/testing/v1/library.proto",
            ],
            &["proto"],
        )?;
    // The demo service is part of the binary (`switchboard demo`): server only, since the
    // library has no tonic transport; its descriptor set drives the proxy's JSON transcoding.
    tonic_prost_build::configure()
        .build_client(false)
        .file_descriptor_set_path(out.join("demo_descriptor.bin"))
        .compile_protos(&["proto/switchboard/demo/v1/demo.proto"], &["proto"])?;
    // google/api/{http,annotations}.proto, bundled with the proxy: they fill in a schema whose
    // files import them without including them, so `google.api.http` rules are still read.
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        .file_descriptor_set_path(out.join("google_api_descriptor.bin"))
        .compile_protos(&["proto/google/api/annotations.proto"], &["proto"])?;
    Ok(())
}
