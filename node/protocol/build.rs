fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages.
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure().compile_protos(
        &[
            "proto/recipestore/v1/recipes.proto",
            "proto/recipestore/v1/cluster.proto",
        ],
        &["proto"],
    )?;
    Ok(())
}
