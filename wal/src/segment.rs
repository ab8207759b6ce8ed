//! One segment file as the log sees it in memory: where each record sits,
//! the scan that rebuilds this at open, and the writes that add or cut
//! records.

use std::io;
use std::sync::Arc;

use crate::Context;
use crate::format::{
    FRAME_HEADER_LEN, FrameHeader, MAX_PAYLOAD_LEN, SEGMENT_HEADER_LEN, SegmentHeader,
    encode_frame, segment_name,
};
use crate::fs::FsFile;

/// How much of a segment the open-time scan reads per call.
const SCAN_WINDOW: u64 = 1 << 20;

const ZERO_FRAME_HEADER: [u8; FRAME_HEADER_LEN as usize] = [0; FRAME_HEADER_LEN as usize];

/// Where one record's frame sits in its segment.
#[derive(Debug, Clone, Copy)]
struct RecordPos {
    offset: u64,
    len: u32,
}

pub(crate) struct Segment {
    pub seq: u64,
    pub first_index: u64,
    pub file: Arc<dyn FsFile>,
    /// `records[i]` holds index `first_index + i`.
    records: Vec<RecordPos>,
    /// Offset just past the last record.
    end: u64,
    /// Size of the file, preallocated.
    capacity: u64,
}

/// How the scan of a segment ended.
pub(crate) enum ScanEnd {
    /// At a zeroed frame header or with no room left for another frame.
    Clean,
    /// At bytes that are neither a valid next record nor the end marker.
    Torn { offset: u64, reason: String },
}

impl Segment {
    /// A segment that has just been given its header and holds no record.
    pub fn new(header: SegmentHeader, file: Arc<dyn FsFile>, capacity: u64) -> Self {
        Self {
            seq: header.seq,
            first_index: header.first_index,
            file,
            records: Vec::new(),
            end: SEGMENT_HEADER_LEN,
            capacity,
        }
    }

    pub fn name(&self) -> String {
        segment_name(self.seq)
    }

    pub fn record_count(&self) -> u64 {
        self.records.len() as u64
    }

    pub fn last_index(&self) -> Option<u64> {
        self.record_count()
            .checked_sub(1)
            .map(|n| self.first_index + n)
    }

    /// Rebuilds the record positions of an existing segment, stopping at the
    /// first frame that is not the valid record with the next index.
    pub fn scan(header: SegmentHeader, file: Arc<dyn FsFile>) -> io::Result<(Self, ScanEnd)> {
        let capacity = file.size()?;
        let mut segment = Self::new(header, file, capacity);
        let mut window = Window {
            file: &*segment.file,
            len: capacity,
            start: 0,
            buf: Vec::new(),
        };
        let outcome = loop {
            let offset = segment.end;
            let expected = header.first_index.saturating_add(segment.record_count());
            if capacity - offset < FRAME_HEADER_LEN {
                break ScanEnd::Clean;
            }
            let mut head = ZERO_FRAME_HEADER;
            head.copy_from_slice(window.get(offset, FRAME_HEADER_LEN)?);
            let frame = FrameHeader::decode(&head);
            let room = capacity - offset - FRAME_HEADER_LEN;
            if u64::from(frame.len) > room.min(MAX_PAYLOAD_LEN as u64) {
                break ScanEnd::Torn {
                    offset,
                    reason: format!("frame length {} runs past the segment end", frame.len),
                };
            }
            let payload = window.get(offset + FRAME_HEADER_LEN, u64::from(frame.len))?;
            let verifies = frame.verifies(header.seq, payload);
            if verifies && frame.index == expected {
                segment.records.push(RecordPos {
                    offset,
                    len: frame.len,
                });
                segment.end = offset + FRAME_HEADER_LEN + u64::from(frame.len);
                continue;
            }
            // Checked after the checksum so that a genuine record whose
            // header happens to be all zeroes is still read as a record.
            if head == ZERO_FRAME_HEADER {
                break ScanEnd::Clean;
            }
            let reason = if verifies {
                format!(
                    "record has index {} where {expected} was expected",
                    frame.index
                )
            } else {
                "checksum mismatch".to_string()
            };
            break ScanEnd::Torn { offset, reason };
        };
        Ok((segment, outcome))
    }

    /// Whether a record with a payload of `len` bytes fits after the last
    /// record.
    pub fn fits(&self, len: usize) -> bool {
        self.end + FRAME_HEADER_LEN + len as u64 <= self.capacity
    }

    /// How many of `records`, from the first, fit after the last record.
    pub fn fitting(&self, records: &[(u64, &[u8])]) -> usize {
        let mut end = self.end;
        records
            .iter()
            .take_while(|(_, payload)| {
                end += FRAME_HEADER_LEN + payload.len() as u64;
                end <= self.capacity
            })
            .count()
    }

    /// Writes records after the last one, in one write. The caller has
    /// checked that they fit and that their indexes follow on.
    pub fn append(&mut self, records: &[(u64, &[u8])]) -> io::Result<()> {
        let frames_len: u64 = records
            .iter()
            .map(|(_, payload)| FRAME_HEADER_LEN + payload.len() as u64)
            .sum();
        // A zeroed frame header goes after the records (and is overwritten by
        // the next one), so the written part always ends in an end marker
        // even where the file still holds stale bytes from an earlier life.
        // Without it, a clean end in a recycled file would look torn.
        let marker = (self.capacity - self.end - frames_len).min(FRAME_HEADER_LEN);
        let mut buf = Vec::with_capacity((frames_len + marker) as usize);
        for (index, payload) in records {
            encode_frame(self.seq, *index, payload, &mut buf);
        }
        buf.resize((frames_len + marker) as usize, 0);
        self.file.write_at(&buf, self.end).context(|| {
            format!(
                "failed to write indexes {}..={} to log segment {} at offset {}",
                records.first().map_or(0, |r| r.0),
                records.last().map_or(0, |r| r.0),
                self.name(),
                self.end
            )
        })?;
        for (_, payload) in records {
            self.records.push(RecordPos {
                offset: self.end,
                len: payload.len() as u32,
            });
            self.end += FRAME_HEADER_LEN + payload.len() as u64;
        }
        Ok(())
    }

    /// Reads and verifies the record with `index`, if this segment holds it.
    pub fn read(&self, index: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(pos) = index
            .checked_sub(self.first_index)
            .and_then(|i| self.records.get(usize::try_from(i).ok()?))
        else {
            return Ok(None);
        };
        let mut buf = vec![0; FRAME_HEADER_LEN as usize + pos.len as usize];
        self.file.read_at(&mut buf, pos.offset).context(|| {
            format!(
                "failed to read index {index} from log segment {}",
                self.name()
            )
        })?;
        let mut head = ZERO_FRAME_HEADER;
        head.copy_from_slice(&buf[..FRAME_HEADER_LEN as usize]);
        let frame = FrameHeader::decode(&head);
        buf.drain(..FRAME_HEADER_LEN as usize);
        // Verified on every read so that bytes damaged after the open-time
        // scan are reported instead of handed to the state machine.
        if frame.index != index || !frame.verifies(self.seq, &buf) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record at index {index} in log segment {} at offset {} fails its checksum",
                    self.name(),
                    pos.offset
                ),
            ));
        }
        Ok(Some(buf))
    }

    /// Zeroes the frame header at the end of the valid records, so that the
    /// segment scans as ending there. Used at open on a torn tail; the caller
    /// syncs the file.
    pub fn zero_end(&self) -> io::Result<()> {
        self.file
            .write_at(&ZERO_FRAME_HEADER, self.end)
            .context(|| format!("failed to cut the torn tail of log segment {}", self.name()))
    }

    /// Drops the records above `index` by zeroing the frame header after it.
    /// Returns whether there was anything to drop; the caller then syncs.
    pub fn cut_after(&mut self, index: u64) -> io::Result<bool> {
        let keep = index
            .checked_sub(self.first_index)
            .map_or(0, |n| n.saturating_add(1));
        let Some(pos) = usize::try_from(keep)
            .ok()
            .and_then(|keep| self.records.get(keep))
        else {
            return Ok(false);
        };
        let offset = pos.offset;
        self.file.write_at(&ZERO_FRAME_HEADER, offset).context(|| {
            format!(
                "failed to cut log segment {} after index {index}",
                self.name()
            )
        })?;
        self.records.truncate(keep as usize);
        self.end = offset;
        Ok(true)
    }
}

/// A read-ahead buffer over a file, so that scanning many small records
/// costs a few large reads instead of two small reads per record.
struct Window<'a> {
    file: &'a dyn FsFile,
    len: u64,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// Returns `count` bytes at `offset`; the caller keeps them within the
    /// file.
    fn get(&mut self, offset: u64, count: u64) -> io::Result<&[u8]> {
        let buffered_end = self.start + self.buf.len() as u64;
        if offset < self.start || offset + count > buffered_end {
            let want = count.max(SCAN_WINDOW).min(self.len - offset);
            self.buf.resize(want as usize, 0);
            self.file.read_at(&mut self.buf, offset)?;
            self.start = offset;
        }
        let at = (offset - self.start) as usize;
        Ok(&self.buf[at..at + count as usize])
    }
}
