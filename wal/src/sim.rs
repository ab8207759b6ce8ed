//! An in-memory [`Fs`] that simulates process crashes and power loss, for
//! crash tests of the log here and, through the `sim` feature, in crates
//! that build on it.
//!
//! Every file has volatile contents, which reads see and writes change, and
//! durable contents, which survive a power cut; `sync_data` copies the first
//! to the second. Likewise creations, renames and removals change the
//! visible directory at once, but wait in an ordered queue, as in a file
//! system journal, until a `sync_dir` makes them durable.
//!
//! [`SimFs::crash_after`] lets a number of operations succeed and fails the
//! next one and every later one, as if the process had died there.
//! [`SimFs::power_loss`] then leaves what a disk could hold after a power
//! cut: the durable directory plus a random prefix of the queued namespace
//! changes, and per file its durable contents overlaid with a random subset
//! of the unsynced 512-byte blocks, at either the old or the new size. The
//! randomness comes from the seed given to [`SimFs::new`], so a failing run
//! replays exactly.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::fs::{Fs, FsFile};

/// Granularity at which unsynced writes survive or vanish in a power cut.
/// Disks persist whole sectors, not whole writes.
const BLOCK: usize = 512;

/// A simulated file system; clones share the same files.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

struct State {
    /// Indexed by inode number. Never freed: power loss can undo a removal.
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, usize>,
    durable_names: BTreeMap<PathBuf, usize>,
    pending: Vec<NameOp>,
    /// Operations left before the simulated crash, if one is set.
    countdown: Option<u64>,
    crashed: bool,
    /// Bumped by every power loss; handles from before stop working.
    generation: u64,
    rng: SplitMix64,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

enum NameOp {
    Link(PathBuf, usize),
    Unlink(PathBuf),
    Rename(PathBuf, PathBuf),
}

impl SimFs {
    /// An empty file system whose power losses are drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                inodes: Vec::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                pending: Vec::new(),
                countdown: None,
                crashed: false,
                generation: 0,
                rng: SplitMix64(seed),
            })),
        }
    }

    /// Lets `ops` more operations succeed, then crashes: the next operation
    /// and all after it fail until [`SimFs::power_loss`].
    pub fn crash_after(&self, ops: u64) {
        self.lock().countdown = Some(ops);
    }

    /// Cancels a crash set with [`SimFs::crash_after`] that has not happened.
    pub fn cancel_crash(&self) {
        self.lock().countdown = None;
    }

    /// Whether the simulated crash has happened.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Cuts the power: every file and the directory fall back to their
    /// durable state plus a random part of what was not synced, and every
    /// open handle becomes unusable. Clears the crash.
    pub fn power_loss(&self) {
        let mut state = self.lock();
        let state = &mut *state;
        let queued = state.pending.len() as u64;
        let kept = state.rng.below(queued + 1) as usize;
        for op in state.pending.drain(..).take(kept) {
            op.apply(&mut state.durable_names);
        }
        state.names = state.durable_names.clone();
        for inode in &mut state.inodes {
            inode.settle(&mut state.rng);
        }
        state.countdown = None;
        state.crashed = false;
        state.generation += 1;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one operation, or fails it if the process has "died".
    fn op<T>(&self, f: impl FnOnce(&mut State) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.lock();
        state.tick()?;
        f(&mut state)
    }

    fn handle(&self, state: &State, inode: usize) -> Arc<dyn FsFile> {
        Arc::new(SimFile {
            fs: self.clone(),
            inode,
            generation: state.generation,
        })
    }
}

impl State {
    fn tick(&mut self) -> io::Result<()> {
        if self.countdown == Some(0) {
            self.crashed = true;
        }
        if self.crashed {
            return Err(io::Error::other("simulated crash: the process is dead"));
        }
        if let Some(left) = &mut self.countdown {
            *left -= 1;
        }
        Ok(())
    }

    fn lookup(&self, path: &Path) -> io::Result<usize> {
        self.names.get(path).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            )
        })
    }
}

impl Inode {
    /// Replaces both contents with what a power cut could leave.
    fn settle(&mut self, rng: &mut SplitMix64) {
        if self.data == self.durable {
            return;
        }
        let len = if rng.coin() {
            self.data.len()
        } else {
            self.durable.len()
        };
        let mut out = vec![0; len];
        for start in (0..len).step_by(BLOCK) {
            let source = if rng.coin() {
                &self.data
            } else {
                &self.durable
            };
            let end = (start + BLOCK).min(len).min(source.len());
            if start < end {
                out[start..end].copy_from_slice(&source[start..end]);
            }
        }
        self.durable.clone_from(&out);
        self.data = out;
    }
}

impl NameOp {
    fn apply(&self, names: &mut BTreeMap<PathBuf, usize>) {
        match self {
            NameOp::Link(path, inode) => {
                names.insert(path.clone(), *inode);
            }
            NameOp::Unlink(path) => {
                names.remove(path);
            }
            NameOp::Rename(from, to) => {
                if let Some(inode) = names.remove(from) {
                    names.insert(to.clone(), inode);
                }
            }
        }
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        // Directories are implied by the paths of the files in them.
        self.op(|_| Ok(()))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.op(|state| {
            Ok(state
                .names
                .keys()
                .filter(|path| path.parent() == Some(dir))
                .filter_map(|path| Some(path.file_name()?.to_str()?.to_string()))
                .collect())
        })
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.op(|state| {
            let inode = state.lookup(path)?;
            Ok(self.handle(state, inode))
        })
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        self.op(|state| {
            let inode = match state.names.get(path) {
                Some(&inode) => {
                    state.inodes[inode].data.clear();
                    inode
                }
                None => {
                    state.inodes.push(Inode::default());
                    let inode = state.inodes.len() - 1;
                    state.names.insert(path.to_path_buf(), inode);
                    state.pending.push(NameOp::Link(path.to_path_buf(), inode));
                    inode
                }
            };
            Ok(self.handle(state, inode))
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.op(|state| {
            let inode = state.lookup(from)?;
            state.names.remove(from);
            state.names.insert(to.to_path_buf(), inode);
            state
                .pending
                .push(NameOp::Rename(from.to_path_buf(), to.to_path_buf()));
            Ok(())
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.op(|state| {
            state.lookup(path)?;
            state.names.remove(path);
            state.pending.push(NameOp::Unlink(path.to_path_buf()));
            Ok(())
        })
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        // One journal for the whole file system, as in ext4 or XFS: syncing
        // any directory commits every queued namespace change, in order.
        self.op(|state| {
            for op in std::mem::take(&mut state.pending) {
                op.apply(&mut state.durable_names);
            }
            Ok(())
        })
    }
}

struct SimFile {
    fs: SimFs,
    inode: usize,
    generation: u64,
}

impl SimFile {
    fn op<T>(&self, f: impl FnOnce(&mut Inode) -> io::Result<T>) -> io::Result<T> {
        self.fs.op(|state| {
            if state.generation != self.generation {
                return Err(io::Error::other("file handle opened before a power loss"));
            }
            f(&mut state.inodes[self.inode])
        })
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.op(|inode| {
            let start = offset as usize;
            let source = inode
                .data
                .get(start..start + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(source);
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.op(|inode| {
            let start = offset as usize;
            let end = start + buf.len();
            if inode.data.len() < end {
                inode.data.resize(end, 0);
            }
            inode.data[start..end].copy_from_slice(buf);
            Ok(())
        })
    }

    fn size(&self) -> io::Result<u64> {
        self.op(|inode| Ok(inode.data.len() as u64))
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        self.op(|inode| {
            if (inode.data.len() as u64) < len {
                inode.data.resize(len as usize, 0);
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.op(|inode| {
            inode.durable.clone_from(&inode.data);
            Ok(())
        })
    }
}

/// A small deterministic generator (SplitMix64), so that the simulator
/// needs no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}
