//! A durable, append-only log built to hold a Raft log.
//!
//! Records carry consecutive `u64` indexes and opaque payloads. They are
//! stored in preallocated segment files, and a small atomically replaced
//! meta file holds the caller's meta blob (Raft vote, last purged log id)
//! together with the log's purge point. The `log` module documents the
//! durability protocol and the `format` module the bytes on disk.
//!
//! All file access goes through the [`fs::Fs`] trait, so the same code runs
//! on the real file system ([`fs::StdFs`]) and, with the `sim` feature, on
//! an in-memory file system that simulates power loss (`sim::SimFs`).

mod format;
pub mod fs;
mod log;
mod segment;
#[cfg(any(test, feature = "sim"))]
pub mod sim;

#[cfg(test)]
mod tests;

pub use format::MAX_PAYLOAD_LEN;
pub use fs::{Fs, FsFile, StdFs};
pub use log::{Log, MAX_META_LEN, MIN_SEGMENT_BYTES, Options, Recovery, SyncHandle, TornTail};

use std::fmt::Display;
use std::io;

/// Adds a description of the failed operation to an I/O error, keeping its
/// kind so that callers can still match on it.
pub(crate) trait Context<T> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> io::Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context<D: Display>(self, what: impl FnOnce() -> D) -> io::Result<T> {
        self.map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", what())))
    }
}
