//! Shared helpers of the end-to-end suites.

pub mod docker;

use std::path::PathBuf;

/// The directory holding the workspace's built binaries: `RECIPESTORE_BIN_DIR`,
/// or the `target/debug` (or `target/release`) directory of this workspace.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RECIPESTORE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let debug = target.join("debug");
    if debug.join("recipestore-node").exists() {
        debug
    } else {
        target.join("release")
    }
}

/// A workspace binary; panics with the command that builds it when missing.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first (or set RECIPESTORE_BIN_DIR)",
        path.display()
    );
    path
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}
