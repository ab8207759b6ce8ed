//! What the test suites of every crate share, in one place: free ports for
//! node processes, the workspace's built binaries, polling with a deadline,
//! and node flags fit for tests. A dev-dependency only.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Raft timings short enough for quick failover, long enough for a loaded
/// two-core machine running tests in parallel.
pub const FAST_RAFT: &[&str] = &[
    "--heartbeat-ms",
    "100",
    "--election-timeout-min-ms",
    "600",
    "--election-timeout-max-ms",
    "1200",
];

/// Ports come from below the kernel's range for outgoing connections
/// (32768 and up), so no client socket can take a port a node is about to
/// listen on; test processes start apart, by process id.
const NODE_RANGES: (u16, u16) = (10_000, 20_000);
const SINGLE_PORTS: (u16, u16) = (20_000, 32_000);

/// The first port of a free range for up to ten nodes laid out as
/// `LocalCluster` lays them out: node `n` listens on `base + 10n`, `+1`
/// and `+2`. Each range is handed out once per process.
pub fn free_node_ports() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let slots = (NODE_RANGES.1 - NODE_RANGES.0) / 100;
    let start = (std::process::id() % u32::from(slots)) as u16;
    loop {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(slot < slots, "no free range of node ports left");
        let base = NODE_RANGES.0 + (start + slot) % slots * 100;
        let free =
            (0..10u16).all(|node| (0..3u16).all(|offset| bindable(base + node * 10 + offset)));
        if free {
            return base;
        }
    }
}

/// A port that is free now, handed out once per process.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = SINGLE_PORTS.1 - SINGLE_PORTS.0;
    let start = (std::process::id() % 400) as u16 * 30;
    loop {
        let port = SINGLE_PORTS.0 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if bindable(port) {
            return port;
        }
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit lives in e2e/ of the workspace")
        .to_path_buf()
}

/// The directory of the workspace's built binaries: `RECIPESTORE_BIN_DIR`,
/// or `target/debug` (`target/release` when only that has the node).
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

/// A workspace binary, if it was built.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    Some(bin_dir().join(name)).filter(|path| path.is_file())
}

/// A workspace binary; panics with the command that builds it when missing.
pub fn binary(name: &str) -> PathBuf {
    find_binary(name).unwrap_or_else(|| {
        panic!(
            "{name} is missing from {}: run `cargo build --workspace` first (or set RECIPESTORE_BIN_DIR)",
            bin_dir().display()
        )
    })
}

/// Polls `check` every `every` until it returns `Some`, or `None` once
/// `wait` has passed.
pub async fn poll<T, F, Fut>(wait: Duration, every: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + wait;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`; fails the test after
/// `wait`, saying what it waited for.
pub async fn eventually<T, F, Fut>(wait: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll(wait, Duration::from_millis(50), check)
        .await
        .unwrap_or_else(|| panic!("timed out after {wait:?} waiting for {what}"))
}
