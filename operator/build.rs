//! Generates gRPC clients from the node's protocol definitions: `Admin`
//! (cluster.proto), which the operator drives, and `Recipes` (recipes.proto,
//! same package), which the integration tests write through.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    // SAFETY: build scripts are single-threaded; nothing reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    let protos = [
        "../node/proto/recipestore/v1/cluster.proto",
        "../node/proto/recipestore/v1/recipes.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&protos, &["../node/proto"])?;
    Ok(())
}
