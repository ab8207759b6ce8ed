//! The log itself: recovery at open, appends, group-commit syncs,
//! truncation, purging and the meta blob.
//!
//! # Durability protocol
//!
//! 1. **Only the last segment holds unsynced records.** Before a new segment
//!    is created, the one it follows is fdatasynced. So
//!    [`SyncHandle::sync`] needs to flush only one file, and at open a bad
//!    record followed by a later segment cannot be an interrupted append: it
//!    is corruption, and open refuses rather than drop acknowledged records.
//! 2. **Segments appear whole.** A new segment gets its header written and
//!    synced under a `.tmp` or `.spare` name, is renamed to `.seg`, and the
//!    directory is synced, all before its first record is written.
//! 3. **Appends go only to a segment this `Log` created.** After open and
//!    after a truncation the last segment is sealed, and the next append
//!    starts a new segment. Beyond the last valid record of an inherited
//!    segment may lie bytes that a crash left behind, such as a complete
//!    record whose predecessor never reached the disk. Appending at the cut
//!    point could place a new record exactly in front of it (a same-length
//!    re-append is enough), and the stale record would pass both its checksum
//!    and its index check. A new segment has a new sequence number, which
//!    every frame checksum covers, so nothing written under another number
//!    (including the stale contents of a recycled file) verifies in it.
//! 4. **The written part of a segment ends in a marker.** Each append also
//!    writes a zeroed frame header after its record. A scan that ends anywhere
//!    else found a torn write: in the last segment it is cut (its frame
//!    header zeroed, then synced), anywhere else it is corruption.
//! 5. **Truncation shortens the log one step at a time.** Whole segments are
//!    retired from the highest down with a directory sync after each, then
//!    the frame header at the cut is zeroed and synced; at every instant the
//!    disk holds a prefix of the old log.
//! 6. **Purging records the purge point first.** The new purge point is
//!    written to the meta file (atomically replaced) before any segment is
//!    retired, and recovery hides every record at or below it, so a purged
//!    record never comes back.
//! 7. **Open makes what it found durable.** It syncs the last segment and the
//!    directory, because a process that crashed may have left appended
//!    records, or truncation renames, only in the page cache; new records must
//!    not build on state that a later power cut could take away.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::Context;
use crate::format::{
    FRAME_HEADER_LEN, FileKind, MAX_PAYLOAD_LEN, META_NAME, META_TMP_NAME, MetaFile,
    SEGMENT_HEADER_LEN, SegmentHeader, parse_file_name, segment_name, spare_name, tmp_name,
};
use crate::fs::{Fs, FsFile, StdFs};
use crate::segment::{ScanEnd, Segment};

/// Smallest accepted [`Options::segment_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest meta blob [`Log::set_meta`] accepts.
pub const MAX_META_LEN: usize = 1 << 20;
/// Retired segments kept for reuse; beyond this they are deleted. One is
/// enough when snapshots purge the log as fast as it grows: the segment
/// retired by a purge is the one the next rotation reuses, and every spare
/// held beyond that is a full segment of disk that carries no data.
const MAX_SPARES: usize = 1;

/// Settings for [`Log::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Size each segment file is preallocated to. A record too large for an
    /// empty segment of this size gets a segment of its own, sized to fit.
    /// At least [`MIN_SEGMENT_BYTES`]. The default, 16 MiB, holds about 14,000
    /// uploads of 1 KiB, a little more than the node's snapshot interval:
    /// a purge after each snapshot frees a segment, and the active segment,
    /// its spare and the one with the kept tail stay a small part of a
    /// node's disk.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            segment_bytes: 16 << 20,
        }
    }
}

/// What [`Log::open`] found and repaired, for a log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Live segments after open.
    pub segments: usize,
    pub first_index: Option<u64>,
    pub last_index: Option<u64>,
    /// Segments retired because every record in them was purged or they
    /// held none (left by a crash between purging and retiring, or right
    /// after a segment was created).
    pub retired_segments: usize,
    /// The torn write cut from the end of the log, if there was one.
    pub torn_tail: Option<TornTail>,
}

/// A torn write found at the end of the last segment. Everything from
/// `offset` on was dropped; how many records it held cannot be known, as the
/// framing is lost at the first bad byte. Only records that no sync had
/// covered can be there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// File name of the segment.
    pub segment: String,
    /// Offset of the first bad frame in the segment.
    pub offset: u64,
    /// What was wrong with the frame.
    pub reason: String,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first_index, self.last_index) {
            (Some(first), Some(last)) => write!(
                f,
                "recovered log indexes {first}..={last} from {} segment(s)",
                self.segments
            )?,
            _ => write!(f, "recovered an empty log")?,
        }
        if self.retired_segments > 0 {
            write!(f, "; retired {} segment(s)", self.retired_segments)?;
        }
        if let Some(torn) = &self.torn_tail {
            write!(
                f,
                "; cut a torn tail from segment {} at offset {} ({})",
                torn.segment, torn.offset, torn.reason
            )?;
        }
        Ok(())
    }
}

/// Flushes appended records to stable storage from any thread, for group
/// commit: appends happen under the caller's lock on the [`Log`], and a
/// flusher thread calls [`SyncHandle::sync`] once for a whole batch of them.
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<SyncShared>,
}

struct SyncShared {
    active: Mutex<Option<ActiveSegment>>,
    /// Held across every fdatasync of a segment that a flusher may be
    /// syncing too. The kernel reports a writeback error once, to one caller;
    /// with the calls serialized and `failed` checked under the lock, no
    /// later caller can take a success for durability after such an error.
    flushing: Mutex<()>,
    /// Set after any failed write or sync; see [`Log`] on failures.
    failed: AtomicBool,
}

#[derive(Clone)]
struct ActiveSegment {
    file: Arc<dyn FsFile>,
    seq: u64,
    last_index: Option<u64>,
}

impl SyncHandle {
    fn new() -> Self {
        Self {
            shared: Arc::new(SyncShared {
                active: Mutex::new(None),
                flushing: Mutex::new(()),
                failed: AtomicBool::new(false),
            }),
        }
    }

    /// Makes durable every record whose [`Log::append`] returned before this
    /// call started, except records a truncation has removed since.
    ///
    /// Records appended while the sync runs may or may not be covered. Only
    /// the active segment is synced: earlier segments were synced before the
    /// active one was created, and truncation leaves every record it keeps
    /// synced. An error here means records may be lost; the log refuses all
    /// further writes and syncs and must be reopened.
    pub fn sync(&self) -> io::Result<()> {
        self.check_healthy()?;
        // The file is cloned out so the lock is not held during the sync,
        // which would stall appends that update `last_index`.
        let Some(active) = self.lock().clone() else {
            return Ok(());
        };
        // Invariant: an appended record counts only once its bytes are on
        // stable storage.
        self.sync_segment(&*active.file).context(|| {
            let through = active
                .last_index
                .map_or_else(String::new, |last| format!(" through index {last}"));
            format!(
                "failed to fdatasync log segment {}{through}",
                segment_name(active.seq)
            )
        })
    }

    /// Fdatasyncs a segment, serialized with other such calls, and marks the
    /// log failed if that fails.
    fn sync_segment(&self, file: &dyn FsFile) -> io::Result<()> {
        let _flushing = self
            .shared
            .flushing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.check_healthy()?;
        file.sync_data()
            .inspect_err(|_| self.shared.failed.store(true, Ordering::Release))
    }

    fn check_healthy(&self) -> io::Result<()> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Err(io::Error::other(
                "the log is unusable after an earlier I/O failure; reopen it",
            ));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Option<ActiveSegment>> {
        // The guarded value is replaced whole, so a panic elsewhere cannot
        // have left it half-updated.
        self.shared
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A durable append-only log of indexed records in one directory.
///
/// Not meant to be shared between threads directly: wrap it in a mutex and
/// hand [`Log::sync_handle`] to a flusher thread.
///
/// Failures: after any I/O error in a method that changes the log, the log
/// refuses further changes and syncs, because what reached the disk is
/// unknown (a failed fdatasync may already have dropped the dirty pages, so a
/// retry could succeed without the data). Reopening rebuilds the state from
/// the files. Errors from bad arguments (`InvalidInput`) change nothing.
pub struct Log {
    fs: Arc<dyn Fs>,
    dir: PathBuf,
    segment_bytes: u64,
    /// Live segments in log order, each holding at least one record except
    /// transiently inside an operation.
    segments: Vec<Segment>,
    /// Whether the last segment was created by this instance and still
    /// accepts appends (rule 3 of the protocol).
    writable: bool,
    /// Sequence numbers of the `.spare` files ready for reuse.
    spares: Vec<u64>,
    next_seq: u64,
    meta: MetaFile,
    sync: SyncHandle,
}

impl Log {
    /// Opens (or creates) the log in `dir` on the real file system.
    pub fn open(dir: &Path, options: Options) -> io::Result<(Log, Recovery)> {
        Self::open_with_fs(Arc::new(StdFs), dir, options)
    }

    /// Opens (or creates) the log in `dir` on the given file system.
    ///
    /// Fails with `InvalidData` if records are missing or damaged anywhere
    /// but at the end of the log, or a header or the meta file is damaged.
    pub fn open_with_fs(
        fs: Arc<dyn Fs>,
        dir: &Path,
        options: Options,
    ) -> io::Result<(Log, Recovery)> {
        if options.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "segment size {} is below the minimum of {MIN_SEGMENT_BYTES} bytes",
                    options.segment_bytes
                ),
            ));
        }
        fs.create_dir_all(dir)
            .context(|| format!("failed to create log directory {}", dir.display()))?;
        let names = fs
            .list(dir)
            .context(|| format!("failed to list log directory {}", dir.display()))?;
        let mut live = Vec::new();
        let mut spares = Vec::new();
        let mut max_seq = 0;
        let mut has_meta = false;
        for name in names {
            let Some(kind) = parse_file_name(&name) else {
                continue;
            };
            match kind {
                FileKind::Segment(seq) => live.push(seq),
                FileKind::Spare(seq) => spares.push(seq),
                FileKind::Meta => has_meta = true,
                // Left by a crash before the rename that would have made it
                // count; never part of the log.
                FileKind::SegmentTmp(_) | FileKind::MetaTmp => {
                    fs.remove(&dir.join(&name)).context(|| {
                        format!("failed to remove leftover {name} in {}", dir.display())
                    })?;
                }
            }
            if let FileKind::Segment(seq) | FileKind::Spare(seq) | FileKind::SegmentTmp(seq) = kind
            {
                max_seq = max_seq.max(seq);
            }
        }
        live.sort_unstable();
        spares.sort_unstable();
        let meta = if has_meta {
            read_meta(&*fs, &dir.join(META_NAME))?
        } else {
            MetaFile::default()
        };
        let mut log = Log {
            fs,
            dir: dir.to_path_buf(),
            segment_bytes: options.segment_bytes,
            segments: Vec::new(),
            writable: false,
            spares,
            // Larger than every number in the directory, and so larger than
            // every number any stale frame was written under (see format).
            next_seq: max_seq.checked_add(1).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "segment numbers exhausted")
            })?,
            meta,
            sync: SyncHandle::new(),
        };
        let recovery = log.recover(&live)?;
        Ok((log, recovery))
    }

    fn recover(&mut self, live: &[u64]) -> io::Result<Recovery> {
        let mut found = Vec::with_capacity(live.len());
        for &seq in live {
            let name = segment_name(seq);
            let file = self
                .fs
                .open(&self.dir.join(&name))
                .context(|| format!("failed to open log segment {name}"))?;
            let mut raw = [0; SEGMENT_HEADER_LEN as usize];
            file.read_at(&mut raw, 0)
                .context(|| format!("failed to read the header of log segment {name}"))?;
            let header = SegmentHeader::decode(&raw).map_err(|reason| {
                invalid_data(format!("log segment {name} has a bad header: {reason}"))
            })?;
            if header.seq != seq {
                return Err(invalid_data(format!(
                    "log segment {name} has sequence number {} in its header",
                    header.seq
                )));
            }
            found.push((header, file));
        }

        // A segment whose successor starts at or below purge point + 1 holds
        // only purged records: retire it unread.
        let purged = self.meta.purged_through;
        let fully_purged = found
            .windows(2)
            .take_while(|pair| purged.is_some_and(|p| pair[1].0.first_index <= p.saturating_add(1)))
            .count();
        let mut retired = 0;
        for (header, _) in found.drain(..fully_purged) {
            self.retire(header.seq)?;
            retired += 1;
        }

        let mut torn_tail = None;
        let count = found.len();
        for (position, (header, file)) in found.into_iter().enumerate() {
            let name = segment_name(header.seq);
            if let Some(prev) = self.segments.last() {
                let expected = prev.first_index + prev.record_count();
                if header.first_index != expected {
                    return Err(invalid_data(format!(
                        "log segment {name} starts at index {} but segment {} ends before \
                         index {expected}: records are missing from the middle of the log",
                        header.first_index,
                        prev.name()
                    )));
                }
            }
            let (segment, end) = Segment::scan(header, file)
                .context(|| format!("failed to scan log segment {name}"))?;
            if let ScanEnd::Torn { offset, reason } = end {
                if position + 1 < count {
                    return Err(invalid_data(format!(
                        "log segment {name} is corrupt at offset {offset} after index {} \
                         ({reason}) and later segments follow; refusing to drop records from \
                         the middle of the log",
                        segment
                            .last_index()
                            .map_or_else(|| "none".to_string(), |i| i.to_string())
                    )));
                }
                // Rule 4: cut the torn write so the segment scans clean from
                // now on. Synced together with the rest below.
                segment.zero_end()?;
                torn_tail = Some(TornTail {
                    segment: name,
                    offset,
                    reason,
                });
            }
            self.segments.push(segment);
        }

        // Segments left without a visible record: empty ones (a crash right
        // after creating one) and, if every record is purged, all of them.
        let has_visible = |segment: &Segment| {
            segment
                .last_index()
                .is_some_and(|last| purged.is_none_or(|p| last > p))
        };
        for segment in std::mem::take(&mut self.segments) {
            if has_visible(&segment) {
                self.segments.push(segment);
            } else {
                self.retire(segment.seq)?;
                retired += 1;
            }
        }

        if let Some(last) = self.segments.last() {
            // Invariant (rule 7): records found at open may exist only in the
            // page cache of a crashed process, and so may the zeroed header of
            // a cut torn tail; they must be durable before anything builds on
            // them.
            last.file
                .sync_data()
                .context(|| format!("failed to fdatasync log segment {} at open", last.name()))?;
        }
        // Invariant (rule 7): renames and removals of a crashed process, and
        // those just made, must be durable before new segments build on them,
        // or a power cut could bring back a segment a truncation removed.
        self.sync_dir()?;

        Ok(Recovery {
            segments: self.segments.len(),
            first_index: self.first_index(),
            last_index: self.last_index(),
            retired_segments: retired,
            torn_tail,
        })
    }

    /// Index of the first readable record; above the purge point.
    pub fn first_index(&self) -> Option<u64> {
        let last = self.last_index()?;
        let first = self.segments.first()?.first_index;
        let first = match self.meta.purged_through {
            Some(purged) if purged >= first => purged.checked_add(1)?,
            _ => first,
        };
        (first <= last).then_some(first)
    }

    /// Index of the last appended record, synced or not.
    pub fn last_index(&self) -> Option<u64> {
        self.segments.last().and_then(Segment::last_index)
    }

    /// The highest index ever passed to [`Log::purge_through`], durably.
    pub fn purged_through(&self) -> Option<u64> {
        self.meta.purged_through
    }

    /// Appends a record. It is written to the page cache only: it is durable
    /// once a [`SyncHandle::sync`] that started after this returned succeeds.
    ///
    /// `index` must be `last_index() + 1`, or, when the log is empty, above
    /// the purge point; otherwise this fails with `InvalidInput`.
    pub fn append(&mut self, index: u64, payload: &[u8]) -> io::Result<()> {
        self.append_batch(&[(index, payload)])
    }

    /// Appends records with consecutive indexes, as [`Log::append`] does
    /// each, in one write per segment they fill: a Raft append of many
    /// entries costs one system call, not one per entry.
    pub fn append_batch(&mut self, records: &[(u64, &[u8])]) -> io::Result<()> {
        self.sync.check_healthy()?;
        let Some(&(first, _)) = records.first() else {
            return Ok(());
        };
        for &(index, payload) in records {
            if payload.len() > MAX_PAYLOAD_LEN {
                return Err(invalid_input(format!(
                    "payload of {} bytes for index {index} exceeds the maximum of {MAX_PAYLOAD_LEN}",
                    payload.len()
                )));
            }
        }
        match (self.last_index(), self.meta.purged_through) {
            (Some(last), _) if last.checked_add(1) != Some(first) => {
                return Err(invalid_input(format!(
                    "cannot append index {first}: the last index is {last}, so the next must be {}",
                    last.wrapping_add(1)
                )));
            }
            (None, Some(purged)) if first <= purged => {
                return Err(invalid_input(format!(
                    "cannot append index {first}: indexes through {purged} are purged"
                )));
            }
            _ => {}
        }
        if let Some(pair) = records
            .windows(2)
            .find(|p| p[0].0.checked_add(1) != Some(p[1].0))
        {
            return Err(invalid_input(format!(
                "cannot append index {} after index {} in one batch: indexes must follow on",
                pair[1].0, pair[0].0
            )));
        }
        self.fail_on_error(|log| log.append_unchecked(records))
    }

    fn append_unchecked(&mut self, mut records: &[(u64, &[u8])]) -> io::Result<()> {
        while let Some(&(first, payload)) = records.first() {
            let fits = self.writable && self.segments.last().is_some_and(|s| s.fits(payload.len()));
            if !fits {
                // Sized to hold at least this record.
                self.start_segment(first, payload.len())?;
            }
            let last = self.segments.len() - 1;
            let segment = &mut self.segments[last];
            let (here, rest) = records.split_at(segment.fitting(records));
            segment.append(here)?;
            if let (Some(active), Some(&(index, _))) = (self.sync.lock().as_mut(), here.last()) {
                active.last_index = Some(index);
            }
            records = rest;
        }
        Ok(())
    }

    /// Creates the segment that will hold `first_index` and the records after
    /// it, reusing a spare file when there is one.
    fn start_segment(&mut self, first_index: u64, payload_len: usize) -> io::Result<()> {
        if self.writable
            && let Some(previous) = self.segments.last()
        {
            // Invariant (rule 1): a later segment may exist only once every
            // record before it is durable. SyncHandle::sync relies on this to
            // sync only the active segment, and recovery to tell corruption
            // from a torn append.
            self.sync.sync_segment(&*previous.file).context(|| {
                format!(
                    "failed to fdatasync log segment {} before index {first_index}",
                    previous.name()
                )
            })?;
        }
        self.seal();

        let seq = self.next_seq;
        self.next_seq += 1;
        let name = segment_name(seq);
        let (staged, file) = match self.spares.pop() {
            Some(spare) => {
                let path = self.dir.join(spare_name(spare));
                let file = self.fs.open(&path).context(|| {
                    format!(
                        "failed to open spare {} to reuse as {name}",
                        spare_name(spare)
                    )
                })?;
                (path, file)
            }
            None => {
                let path = self.dir.join(tmp_name(seq));
                let file = self
                    .fs
                    .create(&path)
                    .context(|| format!("failed to create log segment {name}"))?;
                (path, file)
            }
        };
        // Room for the header, the record, and the end marker after it.
        let needed = SEGMENT_HEADER_LEN + 2 * FRAME_HEADER_LEN + payload_len as u64;
        file.allocate(self.segment_bytes.max(needed))
            .context(|| format!("failed to preallocate log segment {name}"))?;
        let capacity = file
            .size()
            .context(|| format!("failed to read the size of log segment {name}"))?;
        let header = SegmentHeader { seq, first_index };
        // The header is followed by an end marker so that the segment scans
        // as empty, not torn, even over the stale bytes of a recycled file.
        let mut head = header.encode().to_vec();
        head.resize((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as usize, 0);
        file.write_at(&head, 0)
            .context(|| format!("failed to write the header of log segment {name}"))?;
        // Invariant (rule 2): a file named *.seg always has a valid header, so
        // the header must be durable before the rename publishes the file.
        file.sync_data()
            .context(|| format!("failed to fdatasync the header of log segment {name}"))?;
        self.fs
            .rename(&staged, &self.dir.join(&name))
            .context(|| format!("failed to name log segment {name}"))?;
        // Invariant (rule 2): a rename is durable only once its directory is
        // synced, and records in a segment whose name can vanish are not
        // durable however often the file is synced.
        self.sync_dir()?;

        *self.sync.lock() = Some(ActiveSegment {
            file: Arc::clone(&file),
            seq,
            last_index: None,
        });
        self.segments.push(Segment::new(header, file, capacity));
        self.writable = true;
        Ok(())
    }

    /// Stops appends to the last segment (rule 3). Everything the sync handle
    /// would have synced is durable by the time this is called, or is being
    /// removed.
    fn seal(&mut self) {
        self.writable = false;
        *self.sync.lock() = None;
    }

    /// A handle that syncs appended records from another thread.
    pub fn sync_handle(&self) -> SyncHandle {
        self.sync.clone()
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.sync.sync()
    }

    /// Reads a record, synced or not. `None` if the log does not hold it.
    pub fn read(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
        if self.first_index().is_none_or(|first| index < first) {
            return Ok(None);
        }
        let after = self.segments.partition_point(|s| s.first_index <= index);
        match after.checked_sub(1).and_then(|at| self.segments.get(at)) {
            Some(segment) => segment.read(index),
            None => Ok(None),
        }
    }

    /// Removes the records above `index`, durably. A no-op if there are none;
    /// removes everything if `index` is below [`Log::first_index`].
    pub fn truncate_after(&mut self, index: u64) -> io::Result<()> {
        self.truncate(Some(index))
    }

    /// Removes every record, durably. The purge point stays.
    pub fn truncate_all(&mut self) -> io::Result<()> {
        self.truncate(None)
    }

    fn truncate(&mut self, keep_through: Option<u64>) -> io::Result<()> {
        self.sync.check_healthy()?;
        let Some(last) = self.last_index() else {
            return Ok(());
        };
        if keep_through.is_some_and(|keep| keep >= last) {
            return Ok(());
        }
        // Keeping only purged records means keeping nothing.
        let first = self.first_index();
        let keep_through = keep_through.filter(|keep| first.is_some_and(|first| *keep >= first));
        self.fail_on_error(|log| {
            log.seal();
            while let Some(segment) = log.segments.last() {
                if keep_through.is_some_and(|keep| keep >= segment.first_index) {
                    break;
                }
                let seq = segment.seq;
                log.segments.pop();
                log.retire(seq)?;
                // Invariant (rule 5): the disk holds a prefix of the old log
                // at every instant. Segments go from the highest down, and
                // each must be gone durably before the next, or a crash could
                // keep a higher segment while losing a lower one.
                log.sync_dir()?;
            }
            if let (Some(keep), Some(segment)) = (keep_through, log.segments.last_mut())
                && segment.cut_after(keep)?
            {
                // Invariant: truncation is durable on return. Until the zeroed
                // header is on stable storage a crash could bring back the
                // records after the cut.
                log.sync.sync_segment(&*segment.file).context(|| {
                    format!(
                        "failed to fdatasync log segment {} cut after index {keep}",
                        segment.name()
                    )
                })?;
            }
            Ok(())
        })
    }

    /// Durably drops the records at and below `index`; afterwards
    /// [`Log::first_index`] is above `index` (or `None`), also after a crash.
    /// `index` may lie beyond the last record, as after installing a
    /// snapshot; the next append must then be above it.
    pub fn purge_through(&mut self, index: u64) -> io::Result<()> {
        self.sync.check_healthy()?;
        if self
            .meta
            .purged_through
            .is_some_and(|purged| purged >= index)
        {
            return Ok(());
        }
        self.fail_on_error(|log| {
            let updated = MetaFile {
                purged_through: Some(index),
                meta: log.meta.meta.clone(),
            };
            // Rule 6: the purge point is durable before any segment goes.
            log.write_meta(&updated)?;
            log.meta = updated;
            let mut retired = false;
            while let Some(first) = log.segments.first() {
                let all_purged = match log.segments.get(1) {
                    Some(next) => next.first_index <= index.saturating_add(1),
                    None => first.last_index().is_none_or(|last| last <= index),
                };
                if !all_purged {
                    break;
                }
                let seq = first.seq;
                if log.segments.len() == 1 {
                    log.seal();
                }
                log.segments.remove(0);
                log.retire(seq)?;
                retired = true;
            }
            if retired {
                // Invariant: a spare's name is durable before the file is
                // reused. Losing the retirement alone would be harmless (the
                // segment would come back holding only purged records), but
                // reuse rewrites the header, and a crash could then leave the
                // rewritten file under its old live name.
                log.sync_dir()?;
            }
            Ok(())
        })
    }

    /// The caller's meta blob, if one was ever set.
    pub fn meta(&self) -> Option<&[u8]> {
        self.meta.meta.as_deref()
    }

    /// Replaces the caller's meta blob atomically and durably.
    pub fn set_meta(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sync.check_healthy()?;
        if bytes.len() > MAX_META_LEN {
            return Err(invalid_input(format!(
                "meta of {} bytes exceeds the maximum of {MAX_META_LEN}",
                bytes.len()
            )));
        }
        self.fail_on_error(|log| {
            let updated = MetaFile {
                purged_through: log.meta.purged_through,
                meta: Some(bytes.to_vec()),
            };
            log.write_meta(&updated)?;
            log.meta = updated;
            Ok(())
        })
    }

    /// Replaces the meta file: write a temporary file, sync it, rename it
    /// over the old one, sync the directory.
    fn write_meta(&self, contents: &MetaFile) -> io::Result<()> {
        let staged = self.dir.join(META_TMP_NAME);
        let file = self
            .fs
            .create(&staged)
            .context(|| format!("failed to create {}", staged.display()))?;
        file.write_at(&contents.encode(), 0)
            .context(|| format!("failed to write {}", staged.display()))?;
        // Invariant: the rename below publishes the new contents, so they
        // must be durable first, or a crash could leave the meta file
        // pointing at missing bytes.
        file.sync_data()
            .context(|| format!("failed to fdatasync {}", staged.display()))?;
        self.fs
            .rename(&staged, &self.dir.join(META_NAME))
            .context(|| format!("failed to replace the meta file in {}", self.dir.display()))?;
        // Invariant: set_meta and purge_through are durable on return, and a
        // rename is durable only once its directory is synced.
        self.sync_dir()
    }

    /// Takes a segment out of the log, keeping its file as a spare for
    /// reuse while there are few. The caller syncs the directory before the
    /// spare can be reused.
    fn retire(&mut self, seq: u64) -> io::Result<()> {
        let name = segment_name(seq);
        let path = self.dir.join(&name);
        if self.spares.len() < MAX_SPARES {
            // The spare keeps the segment's number in its name, so that the
            // number stays counted when choosing new ones (see format).
            self.fs
                .rename(&path, &self.dir.join(spare_name(seq)))
                .context(|| format!("failed to retire log segment {name} as a spare"))?;
            self.spares.push(seq);
        } else {
            self.fs
                .remove(&path)
                .context(|| format!("failed to remove log segment {name}"))?;
        }
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .context(|| format!("failed to fsync log directory {}", self.dir.display()))
    }

    /// Runs a change and marks the log failed if it hits an I/O error (see
    /// the failure notes on [`Log`]).
    fn fail_on_error<T>(&mut self, op: impl FnOnce(&mut Self) -> io::Result<T>) -> io::Result<T> {
        let result = op(self);
        if result.is_err() {
            self.sync.shared.failed.store(true, Ordering::Release);
        }
        result
    }
}

fn read_meta(fs: &dyn Fs, path: &Path) -> io::Result<MetaFile> {
    let file = fs
        .open(path)
        .context(|| format!("failed to open {}", path.display()))?;
    let len = file
        .size()
        .context(|| format!("failed to read the size of {}", path.display()))?;
    if len > (MAX_META_LEN + 64) as u64 {
        return Err(invalid_data(format!(
            "meta file {} is {len} bytes long, more than a meta file can be",
            path.display()
        )));
    }
    let mut bytes = vec![0; len as usize];
    file.read_at(&mut bytes, 0)
        .context(|| format!("failed to read {}", path.display()))?;
    MetaFile::decode(&bytes).map_err(|reason| {
        invalid_data(format!("meta file {} is corrupt: {reason}", path.display()))
    })
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
