//! The snapshot file format: a magic, the snapshot's metadata, the recipes,
//! and an end that makes a cut or damaged file an error rather than a
//! smaller state.
//!
//! ```text
//! "RSSNAP03"
//! record: metadata and the shard's placement, if any (MessagePack)
//! record: name, record: value        (once per recipe, in name order)
//! u32 END, u64 recipe count, u32 CRC-32 (IEEE) of every byte from the
//! metadata's record to END
//! ```
//!
//! A record is a big-endian `u32` length and that many bytes; `END` is a
//! length no record has. The two formats before this one had no end: a file
//! cut at a record boundary read as complete. They are still read (a leader
//! of an older release sends them during an upgrade) without that check; a
//! node of an older release cannot read this one, so during an upgrade it
//! catches up by snapshot only once it runs the new release.

use std::fs::File;
use std::io;
use std::io::BufWriter;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::io::Write;
use std::path::Path;

use serde::Deserialize;
use serde::Serialize;

use super::typ::SnapshotMeta;
use crate::codec::decode_io;
use crate::codec::encode_io;
use crate::placement::Placement;

const MAGIC: &[u8; 8] = b"RSSNAP03";
/// Metadata, then recipes to the end of the file.
const MAGIC_V2: &[u8; 8] = b"RSSNAP02";
/// Recipes only.
const MAGIC_V1: &[u8; 8] = b"RSSNAP01";
/// Where a record's length would be: the end of the recipes.
const END: u32 = u32::MAX;

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The first record: openraft's metadata, and the shard's placement beside
/// its fields. A snapshot of an unsharded store, or one written before
/// sharding, has no placement, so either release reads the other's.
#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(flatten)]
    meta: SnapshotMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    placement: Option<Placement>,
}

/// What the end of a snapshot file in the current format records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotEnd {
    pub recipes: u64,
    /// CRC-32 (IEEE) of every byte from the metadata's record to the end.
    pub crc32: u32,
}

/// Writes a snapshot file in the current format.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    crc: crc32fast::Hasher,
    recipes: u64,
}

impl SnapshotWriter {
    /// Creates `path` and writes the magic, `meta` and `placement`.
    pub fn create(
        path: &Path,
        meta: &SnapshotMeta,
        placement: Option<&Placement>,
    ) -> io::Result<Self> {
        Self::new(File::create(path)?, meta, placement)
    }

    /// Writes the magic, `meta` and `placement` to `file`, from its current
    /// position.
    pub fn new(file: File, meta: &SnapshotMeta, placement: Option<&Placement>) -> io::Result<Self> {
        let mut out = BufWriter::new(file);
        out.write_all(MAGIC)?;
        let mut writer = Self {
            out,
            crc: crc32fast::Hasher::new(),
            recipes: 0,
        };
        let header = Header {
            meta: meta.clone(),
            placement: placement.cloned(),
        };
        writer.record(&encode_io(&header)?)?;
        Ok(writer)
    }

    pub fn recipe(&mut self, name: &[u8], value: &[u8]) -> io::Result<()> {
        self.record(name)?;
        self.record(value)?;
        self.recipes += 1;
        Ok(())
    }

    fn record(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&len| len != END)
            .ok_or_else(|| invalid(format!("a record of {} bytes is too long", bytes.len())))?;
        self.write(&len.to_be_bytes())?;
        self.write(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    /// Writes the end; the file is not synced yet.
    pub fn finish(mut self) -> io::Result<(BufWriter<File>, SnapshotEnd)> {
        let end = SnapshotEnd {
            recipes: self.recipes,
            crc32: self.crc.finalize(),
        };
        self.out.write_all(&END.to_be_bytes())?;
        self.out.write_all(&end.recipes.to_be_bytes())?;
        self.out.write_all(&end.crc32.to_be_bytes())?;
        Ok((self.out, end))
    }
}

/// Makes a snapshot file written at `tmp` durable under its final name `path`.
pub fn persist(out: BufWriter<File>, tmp: &Path, path: &Path) -> io::Result<()> {
    let file = out.into_inner().map_err(|e| e.into_error())?;
    // A snapshot replaces the log entries it covers, which openraft purges
    // as soon as it is built or installed: its bytes must be on stable
    // storage first...
    file.sync_all()?;
    // ...and so must its name, or a power loss would leave the purged log
    // with no snapshot to stand for it.
    crate::durable::rename(tmp, path)
}

/// The end a snapshot file in the current format says it has, without
/// reading or checking the rest; `None` for the formats without an end. A
/// hint (the size of a state) for what may be wrong, never for a state.
pub fn read_end(path: &Path) -> io::Result<Option<SnapshotEnd>> {
    let mut file = File::open(path)?;
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Ok(None);
    }
    let mut end = [0u8; END_BYTES];
    file.seek(SeekFrom::End(-(END_BYTES as i64)))?;
    file.read_exact(&mut end)?;
    Ok(Some(SnapshotEnd::decode(&end)))
}

/// The bytes after `END`: the recipe count and the CRC-32.
const END_BYTES: usize = 12;

impl SnapshotEnd {
    fn decode(bytes: &[u8; END_BYTES]) -> Self {
        Self {
            recipes: u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            crc32: u32::from_be_bytes(bytes[8..].try_into().expect("4 bytes")),
        }
    }
}

/// Reads a snapshot file of any format, checking the end of the current one.
pub struct SnapshotReader<R> {
    input: R,
    /// `None` for the formats without an end.
    crc: Option<crc32fast::Hasher>,
    recipes: u64,
    /// The end, once read and found to match the contents.
    end: Option<SnapshotEnd>,
    placement: Option<Placement>,
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the magic and the metadata (`None` in the first format).
    pub fn open(mut input: R) -> io::Result<(Option<SnapshotMeta>, Self)> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        let crc = match &magic {
            MAGIC => Some(crc32fast::Hasher::new()),
            MAGIC_V2 | MAGIC_V1 => None,
            _ => return Err(invalid("not a RecipeStore snapshot".into())),
        };
        let mut reader = Self {
            input,
            crc,
            recipes: 0,
            end: None,
            placement: None,
        };
        if &magic == MAGIC_V1 {
            return Ok((None, reader));
        }
        let header = reader
            .record()?
            .ok_or_else(|| invalid("the snapshot ends before its metadata".into()))?;
        let Header { meta, placement } = decode_io(&header)?;
        reader.placement = placement;
        Ok((Some(meta), reader))
    }

    /// The placement of the shard whose state this is; `None` in an
    /// unsharded store.
    pub fn placement(&self) -> Option<&Placement> {
        self.placement.as_ref()
    }

    /// The next recipe's name and value; `None` after the last, once the
    /// end checks out.
    pub fn next_recipe(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(name) = self.record()? else {
            return Ok(None);
        };
        let value = self
            .record()?
            .ok_or_else(|| invalid("the snapshot ends between a name and its value".into()))?;
        self.recipes += 1;
        Ok(Some((name, value)))
    }

    /// The end of a file in the current format, once [`Self::next_recipe`]
    /// has read it and found it to match the contents.
    pub fn end(&self) -> Option<SnapshotEnd> {
        self.end
    }

    /// One record; `None` at the end of the recipes.
    fn record(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        let read = read_full(&mut self.input, &mut len)?;
        if read == 0 && self.crc.is_none() {
            return Ok(None);
        }
        if read < len.len() {
            return Err(invalid("the snapshot is cut short".into()));
        }
        let len = u32::from_be_bytes(len);
        if len == END && self.crc.is_some() {
            self.check_end()?;
            return Ok(None);
        }
        self.hash(&len.to_be_bytes());
        // Read through `take`, so that a damaged length costs no more
        // memory than the bytes the file really has.
        let mut bytes = Vec::new();
        (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut bytes)?;
        if bytes.len() < len as usize {
            return Err(invalid("the snapshot is cut short".into()));
        }
        self.hash(&bytes);
        Ok(Some(bytes))
    }

    fn hash(&mut self, bytes: &[u8]) {
        if let Some(crc) = &mut self.crc {
            crc.update(bytes);
        }
    }

    fn check_end(&mut self) -> io::Result<()> {
        let mut bytes = [0u8; END_BYTES];
        if read_full(&mut self.input, &mut bytes)? < END_BYTES {
            return Err(invalid("the snapshot is cut short".into()));
        }
        let end = SnapshotEnd::decode(&bytes);
        let computed = self.crc.take().expect("checked by the caller").finalize();
        if read_full(&mut self.input, &mut [0u8; 1])? != 0 {
            return Err(invalid("the snapshot has bytes after its end".into()));
        }
        if end.recipes != self.recipes || end.crc32 != computed {
            return Err(invalid(format!(
                "the snapshot is damaged: its end names {} recipes and checksum {:08x}, \
                 the file holds {} recipes with checksum {computed:08x}",
                end.recipes, end.crc32, self.recipes
            )));
        }
        self.end = Some(end);
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Handover;

    const RECIPES: [(&[u8], &[u8]); 3] = [(b"a", b"one"), (b"bb", b""), (b"c", b"three")];

    fn meta() -> SnapshotMeta {
        SnapshotMeta::default()
    }

    /// A file of [`RECIPES`] in the current format.
    fn written() -> Vec<u8> {
        written_with(None)
    }

    fn written_with(placement: Option<&Placement>) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut out = SnapshotWriter::create(&path, &meta(), placement).unwrap();
        for (name, value) in RECIPES {
            out.recipe(name, value).unwrap();
        }
        let (mut out, end) = out.finish().unwrap();
        out.flush().unwrap();
        assert_eq!(end.recipes, 3);
        std::fs::read(&path).unwrap()
    }

    /// Every recipe of `file`, or the first error.
    fn read_all(file: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (_, mut reader) = SnapshotReader::open(file)?;
        let mut recipes = Vec::new();
        while let Some(recipe) = reader.next_recipe()? {
            recipes.push(recipe);
        }
        Ok(recipes)
    }

    fn expected() -> Vec<(Vec<u8>, Vec<u8>)> {
        RECIPES
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_written_snapshot_reads_back_with_its_metadata() {
        let file = written();
        let (read_meta, _) = SnapshotReader::open(file.as_slice()).unwrap();
        assert_eq!(read_meta, Some(meta()));
        assert_eq!(read_all(&file).unwrap(), expected());
    }

    #[test]
    fn a_shard_s_snapshot_carries_its_placement_where_older_releases_ignore_it() {
        let placement = Placement {
            shard: 1,
            epoch: 3,
            owners: vec![1; 1024],
            shards: [(1, vec!["10.0.0.1:7070".to_string()])].into(),
            released: [(5, Handover { to: 0, epoch: 3 })].into(),
            acquired: [(900, 2)].into(),
        };
        let file = written_with(Some(&placement));
        let (read_meta, reader) = SnapshotReader::open(file.as_slice()).unwrap();
        assert_eq!(read_meta, Some(meta()));
        assert_eq!(reader.placement(), Some(&placement));
        assert_eq!(read_all(&file).unwrap(), expected());
        // An older release reads the same record as its metadata alone.
        let header_len = u32::from_be_bytes(file[8..12].try_into().unwrap()) as usize;
        let header = &file[12..12 + header_len];
        assert_eq!(decode_io::<SnapshotMeta>(header).unwrap(), meta());
        // And a record it wrote reads as an unsharded store's.
        let unsharded = written();
        let (_, reader) = SnapshotReader::open(unsharded.as_slice()).unwrap();
        assert_eq!(reader.placement(), None);
    }

    /// The format before this one read a file cut at a record boundary as a
    /// complete, smaller state.
    #[test]
    fn a_snapshot_cut_anywhere_is_an_error() {
        let file = written();
        for len in 0..file.len() {
            let error = read_all(&file[..len]).expect_err("a cut file must not read");
            assert!(
                matches!(
                    error.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ),
                "cut at {len}: {error}"
            );
        }
    }

    #[test]
    fn a_snapshot_with_any_byte_damaged_is_an_error() {
        let file = written();
        for at in 0..file.len() {
            let mut damaged = file.clone();
            damaged[at] ^= 0x20;
            assert!(
                read_all(&damaged).is_err(),
                "byte {at} damaged went unnoticed"
            );
        }
        let mut longer = file.clone();
        longer.push(0);
        assert!(read_all(&longer).is_err(), "bytes after the end");
    }

    /// A leader of the previous release sends snapshots without an end.
    #[test]
    fn the_previous_format_still_reads() {
        let mut file = MAGIC_V2.to_vec();
        let meta = encode_io(&meta()).unwrap();
        for record in [meta.as_slice(), b"a", b"one", b"bb", b"", b"c", b"three"] {
            file.extend_from_slice(&(record.len() as u32).to_be_bytes());
            file.extend_from_slice(record);
        }
        assert_eq!(read_all(&file).unwrap(), expected());
    }

    proptest::proptest! {
        /// Bytes from a peer or a disk: whatever they are, reading them
        /// ends in the recipes or an error, never a panic, and never holds
        /// more memory than the bytes given (lengths are read through
        /// `take`).
        #[test]
        fn any_damage_reads_as_the_recipes_or_an_error(
            flips in proptest::collection::vec((0usize..4096, 0u8..8), 0..4),
            cut in proptest::option::of(0usize..4096),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let mut file = written();
            for (at, bit) in flips {
                let at = at % file.len();
                file[at] ^= 1 << bit;
            }
            if let Some(cut) = cut {
                file.truncate(cut % (file.len() + 1));
            }
            file.extend(tail);
            if let Ok(recipes) = read_all(&file) {
                proptest::prop_assert!(recipes.len() <= file.len());
            }
        }

        #[test]
        fn arbitrary_bytes_are_refused_or_read(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            magic in proptest::bool::ANY,
        ) {
            let file = if magic { [MAGIC.as_slice(), &bytes].concat() } else { bytes };
            let _ = read_all(&file);
        }
    }
}
