//! Generates the supervisor middleware gRPC service (the server for the test
//! middleware, a client for its own tests) from the same `.proto`
//! sluice-proxy uses, with a pure-Rust protobuf compiler (`protox`): no
//! `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("openshell/middleware/v1/supervisor_middleware.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
