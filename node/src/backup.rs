//! Backups: a snapshot of a cluster's state in a file that says where and
//! when it was taken. A node writes one on request (`recipectl snapshot
//! save`), [`Backup::open`] checks one (`snapshot status`), and
//! [`Backup::restore`] turns one into the data directory of a member of a
//! new cluster (`snapshot restore`).
//!
//! ```text
//! "RSBACK01"
//! u32 header length (big-endian), the header (JSON, a `BackupHeader`),
//! u32 CRC-32 (IEEE) of the header
//! a snapshot file (see `raft::snapshot_file`), byte for byte, to the end
//! ```
//!
//! The snapshot checks itself: it ends with its recipe count and a CRC-32
//! of its contents. The header repeats them, with the snapshot's length and
//! last log id, so that a header and a snapshot that were not written
//! together do not pass for a backup either.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::io::BufReader;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::path::Path;
use std::path::PathBuf;

use openraft::Membership;
use serde::Deserialize;
use serde::Serialize;

use crate::identity::Identity;
use crate::lifecycle;
use crate::raft::Member;
use crate::raft::log_store::LogStore;
use crate::raft::snapshot_file::SnapshotEnd;
use crate::raft::snapshot_file::SnapshotReader;
use crate::raft::state_machine::seed_snapshot;
use crate::raft::typ::LogId;
use crate::raft::typ::SnapshotMeta;
use crate::raft::typ::StoredMembership;
use crate::raft::typ::Vote;

const MAGIC: &[u8; 8] = b"RSBACK01";
/// The longest header read: a damaged length must not size an allocation.
const MAX_HEADER_BYTES: u32 = 64 << 10;

/// Where and when a backup was taken and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub cluster_id: String,
    /// The member whose state was written.
    pub node_id: u64,
    /// The log id of the last entry the state holds.
    pub last_index: u64,
    pub last_term: u64,
    pub recipes: u64,
    /// The length of the snapshot after the header.
    pub snapshot_bytes: u64,
    /// The CRC-32 the snapshot ends with.
    pub snapshot_crc32: u32,
    /// When the state was written, in milliseconds since the Unix epoch.
    pub taken_at_unix_ms: u64,
}

impl BackupHeader {
    /// The header of a backup of a state whose snapshot, `snapshot_bytes`
    /// long, is described by `meta` and `end`.
    pub fn new(
        cluster_id: String,
        node_id: u64,
        meta: &SnapshotMeta,
        end: SnapshotEnd,
        snapshot_bytes: u64,
    ) -> Self {
        let last = meta.last_log_id.as_ref();
        Self {
            cluster_id,
            node_id,
            last_index: last.map_or(0, |id| id.index()),
            last_term: last.map_or(0, |id| id.committed_leader_id().term),
            recipes: end.recipes,
            snapshot_bytes,
            snapshot_crc32: end.crc32,
            taken_at_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// The bytes a backup file starts with, before its snapshot.
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(io::Error::other)?;
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&crc32fast::hash(&json).to_be_bytes());
        Ok(out)
    }

    fn read(input: &mut impl Read) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        input
            .read_exact(&mut magic)
            .map_err(|_| invalid("it is too short to be a RecipeStore backup".into()))?;
        if &magic != MAGIC {
            return Err(invalid(format!(
                "it is not a RecipeStore backup (it starts with {:?}, a backup with {:?})",
                String::from_utf8_lossy(&magic),
                String::from_utf8_lossy(MAGIC)
            )));
        }
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| invalid("the backup is cut short in its header".into()))?;
        let len = u32::from_be_bytes(len);
        if len > MAX_HEADER_BYTES {
            return Err(invalid(format!(
                "the backup's header is damaged: it claims {len} bytes, at most {MAX_HEADER_BYTES} are allowed"
            )));
        }
        let mut json = vec![0u8; len as usize + 4];
        input
            .read_exact(&mut json)
            .map_err(|_| invalid("the backup is cut short in its header".into()))?;
        let crc = json.split_off(len as usize);
        if crc32fast::hash(&json).to_be_bytes() != crc.as_slice() {
            return Err(invalid(
                "the backup's header is damaged: its checksum does not match".into(),
            ));
        }
        serde_json::from_slice(&json)
            .map_err(|e| invalid(format!("the backup's header is damaged: {e}")))
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A backup file, checked from end to end.
#[derive(Debug)]
pub struct Backup {
    path: PathBuf,
    pub header: BackupHeader,
    /// Where the snapshot starts in the file.
    snapshot_start: u64,
    last_log_id: LogId,
}

impl Backup {
    /// Reads the backup at `path` whole and checks it: the header, the
    /// snapshot to its end, and that the two agree. `progress` is told the
    /// bytes read so far.
    pub fn open(path: &Path, progress: impl FnMut(u64)) -> io::Result<Self> {
        let mut input = Counted {
            inner: BufReader::new(File::open(path)?),
            read: 0,
            progress,
        };
        let header = BackupHeader::read(&mut input)?;
        let snapshot_start = input.read;
        let (meta, mut snapshot) = SnapshotReader::open(&mut input).map_err(in_snapshot)?;
        while snapshot.next_recipe().map_err(in_snapshot)?.is_some() {}
        let end = snapshot.end();
        let snapshot_bytes = input.read - snapshot_start;
        let (Some(meta), Some(end)) = (meta, end) else {
            return Err(invalid(
                "the backup's snapshot is in a format without an end to check it by".into(),
            ));
        };
        let Some(last_log_id) = meta.last_log_id else {
            return Err(invalid("the backup holds no applied entry".into()));
        };
        let found = BackupHeader {
            last_index: last_log_id.index(),
            last_term: last_log_id.committed_leader_id().term,
            recipes: end.recipes,
            snapshot_bytes,
            snapshot_crc32: end.crc32,
            ..header.clone()
        };
        if found != header {
            return Err(invalid(format!(
                "the backup's header does not describe its snapshot: the header says index {}, term {}, \
                 {} recipes, {} bytes, checksum {:08x}; the snapshot has index {}, term {}, {} recipes, \
                 {} bytes, checksum {:08x}",
                header.last_index,
                header.last_term,
                header.recipes,
                header.snapshot_bytes,
                header.snapshot_crc32,
                found.last_index,
                found.last_term,
                found.recipes,
                found.snapshot_bytes,
                found.snapshot_crc32
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            header,
            snapshot_start,
            last_log_id,
        })
    }

    /// Makes `data_dir` the data directory of member `node_id` of a new
    /// cluster `cluster_id` whose voters are `members`, holding this
    /// backup's state: the identity stamp, the state as the current
    /// snapshot (with the new membership), and a log that starts after it.
    /// The node installs the snapshot when it starts. `data_dir` must not
    /// exist: it is built beside and renamed into place once complete, so
    /// that an interrupted restore leaves no directory a node would start
    /// from.
    pub fn restore(
        &self,
        data_dir: &Path,
        node_id: u64,
        members: &BTreeMap<u64, Member>,
        cluster_id: &str,
    ) -> io::Result<()> {
        if data_dir.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} already exists; a restore creates new data directories",
                    data_dir.display()
                ),
            ));
        }
        let mut building = data_dir.as_os_str().to_owned();
        building.push(".restoring");
        let building = PathBuf::from(building);
        self.build(&building, node_id, members, cluster_id)?;
        crate::durable::rename(&building, data_dir)
    }

    /// [`Backup::restore`] into a directory that exists and must stay (a
    /// volume's mount point): the data is built in `<data_dir>/.restoring`
    /// and its entries are then renamed up into `data_dir`, the identity
    /// stamp last, once the others are durable: without the stamp the
    /// restore counts as not done and runs again (on Kubernetes, an init
    /// container that must succeed before the node starts). Answers
    /// `false`, changing nothing, when `data_dir` already holds a node's
    /// data (its stamp): restored before, or a live member.
    pub fn restore_in_place(
        &self,
        data_dir: &Path,
        node_id: u64,
        members: &BTreeMap<u64, Member>,
        cluster_id: &str,
    ) -> io::Result<bool> {
        if Identity::is_stamped(data_dir) {
            return Ok(false);
        }
        let building = data_dir.join(".restoring");
        self.build(&building, node_id, members, cluster_id)?;
        let stamp = Identity::stamp_path(&building);
        for entry in std::fs::read_dir(&building)? {
            let path = entry?.path();
            if path != stamp {
                let target = data_dir.join(path.file_name().expect("a directory entry"));
                remove_any(&target)?;
                std::fs::rename(&path, &target)?;
            }
        }
        crate::durable::sync_dir(data_dir)?;
        crate::durable::rename(&stamp, &Identity::stamp_path(data_dir))?;
        std::fs::remove_dir(&building)?;
        Ok(true)
    }

    /// Builds a restored data directory at `building`, from scratch.
    fn build(
        &self,
        building: &Path,
        node_id: u64,
        members: &BTreeMap<u64, Member>,
        cluster_id: &str,
    ) -> io::Result<()> {
        if !members.contains_key(&node_id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "node {node_id} is not one of the members {:?}",
                    members.keys()
                ),
            ));
        }
        remove_any(building)?;
        std::fs::create_dir_all(building)?;

        let voters: BTreeSet<u64> = members.keys().copied().collect();
        let membership = Membership::new(vec![voters], members.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let meta = SnapshotMeta {
            last_log_id: Some(self.last_log_id),
            last_membership: StoredMembership::new(Some(self.last_log_id), membership),
        };
        let mut input = BufReader::new(File::open(&self.path)?);
        input.seek(SeekFrom::Start(self.snapshot_start))?;
        let end = seed_snapshot(&lifecycle::snapshot_dir(building), &meta, input)?;
        if end.recipes != self.header.recipes {
            return Err(invalid(format!(
                "{} changed while it was restored: it held {} recipes, then {}",
                self.path.display(),
                self.header.recipes,
                end.recipes
            )));
        }
        // The vote's term is the last entry's: a leader of the new cluster
        // is elected in a later term, so its entries follow the backup's
        // in log order.
        let term = self.last_log_id.committed_leader_id().term;
        LogStore::seed(
            &lifecycle::raft_log_dir(building),
            self.last_log_id,
            Vote::new(term, node_id),
        )?;
        Identity::open(building, node_id, None)
            .and_then(|identity| identity.join(cluster_id))
            .map_err(io::Error::other)?;
        Ok(())
    }
}

/// Removes a file or a directory tree, if there is one.
fn remove_any(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Says that a snapshot's error is the backup's.
fn in_snapshot(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        invalid("the backup is cut short".into())
    } else {
        invalid(format!("in the backup's snapshot: {error}"))
    }
}

/// A reader that counts the bytes read and reports them.
struct Counted<R, F> {
    inner: R,
    read: u64,
    progress: F,
}

impl<R: Read, F: FnMut(u64)> Read for Counted<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use openraft::vote::RaftLeaderId;

    use super::*;
    use crate::raft::snapshot_file::SnapshotWriter;

    use crate::raft::typ::CommittedLeaderId as Leader;

    fn member(port: u16) -> Member {
        Member {
            peer_addr: format!("127.0.0.1:{}", port + 1),
            client_addr: format!("127.0.0.1:{port}"),
        }
    }

    /// A backup of three recipes at log id (term 3, index 41), as bytes.
    fn backup_bytes() -> Vec<u8> {
        let (header, snapshot) = backup_parts();
        [header.encode().unwrap(), snapshot].concat()
    }

    /// A backup's header and snapshot.
    fn backup_parts() -> (BackupHeader, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let last = LogId::new(Leader::new(3, 1), 41);
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::new(
                Some(LogId::new(Leader::new(1, 0), 1)),
                Membership::new(
                    vec![BTreeSet::from([0, 1])],
                    BTreeMap::from([(0, member(7070)), (1, member(7080))]),
                )
                .unwrap(),
            ),
        };
        let path = dir.path().join("s");
        let mut out = SnapshotWriter::create(&path, &meta, None).unwrap();
        for (name, value) in [("a", "one"), ("b", "two"), ("c", "three")] {
            out.recipe(name.as_bytes(), value.as_bytes()).unwrap();
        }
        let (out, end) = out.finish().unwrap();
        out.into_inner().unwrap();
        let snapshot = std::fs::read(&path).unwrap();
        let header = BackupHeader::new("c1".into(), 1, &meta, end, snapshot.len() as u64);
        (header, snapshot)
    }

    fn open_bytes(bytes: &[u8]) -> io::Result<Backup> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.rsb");
        std::fs::write(&path, bytes).unwrap();
        Backup::open(&path, |_| {})
    }

    #[test]
    fn a_backup_reads_back_with_its_header() {
        let mut reported = 0;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.rsb");
        let bytes = backup_bytes();
        std::fs::write(&path, &bytes).unwrap();
        let backup = Backup::open(&path, |read| reported = read).unwrap();
        assert_eq!(reported, bytes.len() as u64);
        let header = &backup.header;
        assert_eq!((header.last_index, header.last_term), (41, 3));
        assert_eq!(header.recipes, 3);
        assert_eq!(header.cluster_id, "c1");
    }

    #[test]
    fn a_backup_cut_anywhere_or_damaged_anywhere_is_refused() {
        let bytes = backup_bytes();
        for len in 0..bytes.len() {
            let error = open_bytes(&bytes[..len]).expect_err("a cut backup must not open");
            assert_eq!(
                error.kind(),
                io::ErrorKind::InvalidData,
                "cut at {len}: {error}"
            );
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x01;
            let error = match open_bytes(&damaged) {
                Ok(_) => panic!("byte {at} damaged went unnoticed"),
                Err(e) => e,
            };
            assert_eq!(
                error.kind(),
                io::ErrorKind::InvalidData,
                "byte {at}: {error}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(open_bytes(&longer).is_err(), "bytes after the end");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let bytes = backup_bytes();
        let message = |bytes: &[u8]| open_bytes(bytes).unwrap_err().to_string();
        assert!(message(b"RSSNAP03 a snapshot").contains("not a RecipeStore backup"));
        assert!(message(&bytes[..bytes.len() - 5]).contains("cut short"));
        // A header that claims more than it may: no allocation of that size.
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            message(&huge).contains("at most 65536"),
            "{}",
            message(&huge)
        );
        // A header that is whole but describes another snapshot.
        let (header, snapshot) = backup_parts();
        let other = BackupHeader {
            recipes: 4,
            ..header
        };
        let other = [other.encode().unwrap(), snapshot].concat();
        assert!(
            message(&other).contains("does not describe its snapshot"),
            "{}",
            message(&other)
        );
    }

    #[test]
    fn a_restore_makes_a_member_of_the_new_cluster_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.rsb");
        std::fs::write(&path, backup_bytes()).unwrap();
        let backup = Backup::open(&path, |_| {}).unwrap();
        let members = BTreeMap::from([(0, member(9000)), (1, member(9010)), (2, member(9020))]);
        let data = dir.path().join("node-1");
        backup.restore(&data, 1, &members, "c2").unwrap();

        let identity = Identity::open(&data, 1, Some("c2")).unwrap();
        assert_eq!(identity.cluster_id().as_deref(), Some("c2"));
        let snapshots: Vec<_> = std::fs::read_dir(lifecycle::snapshot_dir(&data))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(snapshots.len(), 1, "{snapshots:?}");
        let (meta, mut reader) =
            SnapshotReader::open(BufReader::new(File::open(&snapshots[0]).unwrap())).unwrap();
        let meta = meta.unwrap();
        assert_eq!(meta.last_log_id, Some(backup.last_log_id));
        let voters: Vec<u64> = meta.last_membership.membership().voter_ids().collect();
        assert_eq!(voters, vec![0, 1, 2]);
        assert_eq!(
            meta.last_membership.membership().get_node(&2),
            Some(&member(9020))
        );
        let mut names = Vec::new();
        while let Some((name, _)) = reader.next_recipe().unwrap() {
            names.push(String::from_utf8(name).unwrap());
        }
        assert_eq!(names, ["a", "b", "c"]);

        let error = backup.restore(&data, 1, &members, "c2").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
        let error = backup
            .restore(&dir.path().join("node-7"), 7, &members, "c2")
            .unwrap_err();
        assert!(
            error.to_string().contains("not one of the members"),
            "{error}"
        );
    }

    #[test]
    fn a_restore_in_place_keeps_the_mount_point_and_redoes_a_cut_restore() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.rsb");
        std::fs::write(&path, backup_bytes()).unwrap();
        let backup = Backup::open(&path, |_| {}).unwrap();
        let members = BTreeMap::from([(0, member(9000)), (1, member(9010))]);
        // A volume's root: it exists and holds the file system's own entry.
        let data = dir.path().join("volume");
        std::fs::create_dir_all(data.join("lost+found")).unwrap();
        // A restore cut short: data moved up, no stamp yet.
        std::fs::create_dir_all(lifecycle::raft_log_dir(&data).join("stale")).unwrap();
        std::fs::create_dir_all(data.join(".restoring/snapshots")).unwrap();

        assert!(backup.restore_in_place(&data, 0, &members, "c2").unwrap());
        let identity = Identity::open(&data, 0, Some("c2")).unwrap();
        assert_eq!(identity.cluster_id().as_deref(), Some("c2"));
        assert!(data.join("lost+found").is_dir());
        assert!(!data.join(".restoring").exists());
        assert!(!lifecycle::raft_log_dir(&data).join("stale").exists());
        assert_eq!(
            std::fs::read_dir(lifecycle::snapshot_dir(&data))
                .unwrap()
                .count(),
            1
        );
        // Stamped now: a second run (a restarted pod) changes nothing.
        let stamp = std::fs::read(Identity::stamp_path(&data)).unwrap();
        assert!(!backup.restore_in_place(&data, 0, &members, "c3").unwrap());
        assert_eq!(std::fs::read(Identity::stamp_path(&data)).unwrap(), stamp);
    }
}
