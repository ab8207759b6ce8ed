//! Renames that survive a power loss.
//!
//! A file written under a temporary name, synced, then renamed replaces
//! the old one atomically; the rename itself is only durable once the
//! directory holding the name is synced too, or a power loss can bring
//! back the old name (or none) after the caller went on.

use std::fs::File;
use std::io;
use std::path::Path;

/// Renames `from` to `to` and syncs the directory of `to`. `from` (a file
/// or a directory) must already be durable itself.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    sync_dir(dir)
}

/// Makes the names in `dir` (renames into it, say) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
