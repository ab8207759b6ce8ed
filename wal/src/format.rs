//! The bytes on disk: file names, segment headers, record frames and the
//! meta file. Integers are little-endian.
//!
//! Files in the log directory:
//! - `00000007.seg`: a live segment with sequence number 7. Sequence numbers
//!   only grow, so they give the order of the segments in the log.
//! - `00000004.spare`: a retired segment kept for reuse, named after the
//!   sequence number it last had (which keeps every number ever used visible
//!   in the directory, so new numbers are always larger).
//! - `00000009.tmp`: a new segment not yet named live; removed at open.
//! - `meta`, `meta.tmp`: the meta file and a replacement being written.
//!
//! A segment is a 32-byte header, record frames back to back, then zeroes or
//! stale bytes of a recycled file up to its preallocated size:
//! ```text
//! header: magic "RWAL" | version u32 | seq u64 | first_index u64 | 0u32 | crc32(bytes 0..28)
//! frame:  crc32 u32 | payload_len u32 | index u64 | payload
//! ```
//! A frame's crc32 covers the segment's `seq`, `payload_len`, `index` and the
//! payload. `seq` is not stored in the frame; binding it into the checksum
//! means a frame written into an earlier life of a recycled file can never
//! verify in its current life.
//!
//! The meta file is written whole and replaced by rename:
//! ```text
//! magic "RWMT" | version u32 | flags u32 | purged_through u64 | meta_len u32 | meta | crc32(all before)
//! ```
//! with flag bit 0 set when `purged_through` is present and bit 1 when the
//! caller's meta is.

/// Size of the header at the start of every segment.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 32;
/// Size of the header in front of every record payload.
pub(crate) const FRAME_HEADER_LEN: u64 = 16;
/// Largest payload a record may carry.
pub const MAX_PAYLOAD_LEN: usize = 64 << 20;
/// Name of the meta file.
pub(crate) const META_NAME: &str = "meta";
/// Name under which a new meta file is written before it replaces the old.
pub(crate) const META_TMP_NAME: &str = "meta.tmp";

const SEGMENT_MAGIC: &[u8; 4] = b"RWAL";
const META_MAGIC: &[u8; 4] = b"RWMT";
const VERSION: u32 = 1;
const META_HAS_PURGED: u32 = 1;
const META_HAS_META: u32 = 2;

/// What a directory entry is, judged by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Segment(u64),
    Spare(u64),
    SegmentTmp(u64),
    Meta,
    MetaTmp,
}

pub(crate) fn parse_file_name(name: &str) -> Option<FileKind> {
    match name {
        META_NAME => return Some(FileKind::Meta),
        META_TMP_NAME => return Some(FileKind::MetaTmp),
        _ => {}
    }
    let (stem, ext) = name.split_once('.')?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seq = stem.parse().ok()?;
    match ext {
        "seg" => Some(FileKind::Segment(seq)),
        "spare" => Some(FileKind::Spare(seq)),
        "tmp" => Some(FileKind::SegmentTmp(seq)),
        _ => None,
    }
}

pub(crate) fn segment_name(seq: u64) -> String {
    format!("{seq:08}.seg")
}

pub(crate) fn spare_name(seq: u64) -> String {
    format!("{seq:08}.spare")
}

pub(crate) fn tmp_name(seq: u64) -> String {
    format!("{seq:08}.tmp")
}

/// The header at the start of every segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// Sequence number; equals the number in the segment's file name.
    pub seq: u64,
    /// Index of the first record the segment holds (or will hold).
    pub first_index: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut out = [0u8; SEGMENT_HEADER_LEN as usize];
        out[0..4].copy_from_slice(SEGMENT_MAGIC);
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.first_index.to_le_bytes());
        let crc = crc32fast::hash(&out[0..28]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a header, or says what is wrong with it.
    pub fn decode(bytes: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<Self, String> {
        if &bytes[0..4] != SEGMENT_MAGIC {
            return Err("bad magic".into());
        }
        let version = u32_at(bytes, 4);
        if version != VERSION {
            return Err(format!("unsupported format version {version}"));
        }
        if crc32fast::hash(&bytes[0..28]) != u32_at(bytes, 28) {
            return Err("header checksum mismatch".into());
        }
        Ok(Self {
            seq: u64_at(bytes, 8),
            first_index: u64_at(bytes, 16),
        })
    }
}

/// The fields in front of a record payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub checksum: u32,
    pub len: u32,
    pub index: u64,
}

impl FrameHeader {
    pub fn decode(bytes: &[u8; FRAME_HEADER_LEN as usize]) -> Self {
        Self {
            checksum: u32_at(bytes, 0),
            len: u32_at(bytes, 4),
            index: u64_at(bytes, 8),
        }
    }

    /// Whether `payload` is the intact payload of this frame in segment `seq`.
    pub fn verifies(&self, seq: u64, payload: &[u8]) -> bool {
        payload.len() == self.len as usize
            && frame_checksum(seq, self.index, payload) == self.checksum
    }
}

fn frame_checksum(seq: u64, index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&(payload.len() as u32).to_le_bytes());
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the frame of a record to `out`. The caller has checked that the
/// payload is at most [`MAX_PAYLOAD_LEN`] bytes.
pub(crate) fn encode_frame(seq: u64, index: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&frame_checksum(seq, index, payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Contents of the meta file. The purge point lives next to the caller's
/// meta so that both change in one atomic rename.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MetaFile {
    pub purged_through: Option<u64>,
    pub meta: Option<Vec<u8>>,
}

impl MetaFile {
    pub fn encode(&self) -> Vec<u8> {
        let meta = self.meta.as_deref().unwrap_or_default();
        let mut flags = 0;
        if self.purged_through.is_some() {
            flags |= META_HAS_PURGED;
        }
        if self.meta.is_some() {
            flags |= META_HAS_META;
        }
        let mut out = Vec::with_capacity(28 + meta.len());
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.purged_through.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(meta);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a meta file, or says what is wrong with it.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 28 {
            return Err(format!("only {} bytes long", bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if &body[0..4] != META_MAGIC {
            return Err("bad magic".into());
        }
        let version = u32_at(body, 4);
        if version != VERSION {
            return Err(format!("unsupported format version {version}"));
        }
        if crc32fast::hash(body) != u32_at(crc, 0) {
            return Err("checksum mismatch".into());
        }
        let flags = u32_at(body, 8);
        let meta_len = u32_at(body, 20) as usize;
        if body.len() != 24 + meta_len {
            return Err(format!("meta length {meta_len} does not match file size"));
        }
        Ok(Self {
            purged_through: (flags & META_HAS_PURGED != 0).then(|| u64_at(body, 12)),
            meta: (flags & META_HAS_META != 0).then(|| body[24..].to_vec()),
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(out)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(out)
}
