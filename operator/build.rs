//! Generates the Admin gRPC client from the node's protocol definition.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    println!("cargo:rerun-if-changed=../node/proto/recipestore/v1/cluster.proto");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["../node/proto/recipestore/v1/cluster.proto"],
            &["../node/proto"],
        )?;
    Ok(())
}
