//! The file-system layer: the small set of operations the log needs.
//!
//! Keeping every file access behind [`Fs`] and [`FsFile`] lets the crash test
//! swap the real file system for a simulated one that can lose unsynced
//! writes and directory changes, as a power cut does.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// Namespace operations. Creations, renames and removals count as durable
/// only after [`Fs::sync_dir`] on the directory that holds them.
pub trait Fs: Send + Sync {
    /// Creates `dir` and its parents if they do not exist yet.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries in `dir` (not full paths).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Creates a file for reading and writing, emptying it if it exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>>;
    /// Atomically renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes every earlier creation, rename and removal in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Methods take `&self` so that one thread can sync a file
/// while another appends to it.
pub trait FsFile: Send + Sync {
    /// Fills `buf` from `offset`; fails with `UnexpectedEof` past the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Grows the file to at least `len` bytes of reserved, zeroed space.
    fn allocate(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data, and the size needed to read it, durable
    /// (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
}

/// [`Fs`] on the real file system through `std::fs`.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // Names that are not UTF-8 cannot be ours; skip them.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

struct StdFile(File);

impl FsFile for StdFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.size()? >= len {
            return Ok(());
        }
        allocate(&self.0, len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

/// Reserves blocks with `fallocate` so that appends into the preallocated
/// range change neither the file size nor the block map much, and the
/// `fdatasync` after an append has little metadata to journal.
#[cfg(target_os = "linux")]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    use nix::errno::Errno;
    use nix::fcntl::{FallocateFlags, fallocate};

    let off_len =
        i64::try_from(len).map_err(|_| io::Error::other("allocation size overflows off_t"))?;
    match fallocate(file, FallocateFlags::empty(), 0, off_len) {
        Ok(()) => Ok(()),
        // Some file systems cannot preallocate; a sparse file is still
        // correct, only the first write into each block costs more.
        Err(Errno::EOPNOTSUPP) => file.set_len(len),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Without `fallocate` a sparse file is the best portable approximation.
#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}
