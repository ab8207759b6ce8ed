//! Integration tests of the operator crate, in one binary so the workspace links few test executables.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

mod api_server;
mod crd;
mod local_nodes;
mod running;

/// A port that is free now and stays free until a node binds it: taken below
/// the kernel's ephemeral range (32768 and up on Linux), so that the many
/// outgoing connections of the test cannot grab it first.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + u16::try_from(std::process::id() % 400).unwrap() * 30;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
