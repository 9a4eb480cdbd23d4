//! Compiles the test service's .proto (shared with the root crate) for the bench programs.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    println!("cargo:rerun-if-changed=../proto/switchboard/testing/v1/testing.proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(false)
        .bytes(".")
        .file_descriptor_set_path(out.join("testing_descriptor.bin"))
        .compile_protos(
            &["../proto/switchboard/testing/v1/testing.proto"],
            &["../proto"],
        )?;
    Ok(())
}
