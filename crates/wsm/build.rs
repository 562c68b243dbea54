//! Compiles `schemas/websocketmanager.proto` with protox (pure Rust: no `protoc` to install) into the
//! tonic server and client, and keeps the encoded descriptor set for gRPC reflection and for the
//! proto3-JSON transcoding of `/v1/invoke`.

use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schemas = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
    let proto = schemas.join("websocketmanager.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&schemas])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set served by reflection and used by /v1/invoke carries the imported
    // well-known files too (google/protobuf/struct.proto): a reflecting client such as the
    // WorkManager gateway must be able to resolve every type the service's messages name.
    let mut with_imports = protox::Compiler::new([&schemas])?;
    with_imports.include_imports(true).open_file(&proto)?;
    std::fs::write(
        out.join("websocketmanager.bin"),
        with_imports.file_descriptor_set().encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The RPC `Connect` would clash with the generated `Client::connect`; clients are built
        // from a `Channel` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
