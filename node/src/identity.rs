//! Stale-identity fencing: the data directory is stamped with the node id it
//! was created for and the cluster it joined, and the node refuses to run
//! with another id or to take part in another cluster.

use std::fs;
use std::io;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::sync::RwLock;

use serde::Deserialize;
use serde::Serialize;

use crate::recovery::Forced;

const STAMP_FILE: &str = "identity.json";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "data directory {dir} belongs to node {stamped}, but this process was started as node {configured}; \
         point --data-dir at node {configured}'s own directory"
    )]
    WrongNode {
        dir: PathBuf,
        stamped: u64,
        configured: u64,
    },
    #[error(
        "data directory {dir} belongs to cluster {stamped}, but this process was started for cluster {expected}; \
         refusing to join another cluster with existing data"
    )]
    WrongCluster {
        dir: PathBuf,
        stamped: String,
        expected: String,
    },
    #[error("node belongs to cluster {ours}; refusing traffic from cluster {theirs}")]
    ForeignCluster { ours: String, theirs: String },
    #[error(
        "this node holds no data of any cluster, so it does not vote: a member whose data \
         is lost must not elect a leader; it joins cluster {theirs} when a leader replicates to it \
         (as to a learner being added) or when the cluster is initialized with it"
    )]
    NoVoteWithoutData { theirs: String },
    #[error("failed to read or write the identity stamp {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    node_id: u64,
    cluster_id: Option<String>,
    /// Set once `--force-new-cluster` made this node its cluster's only
    /// voter (see `recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    forced_new_cluster: Option<Forced>,
}

/// A new cluster's id.
pub fn new_cluster_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether `id` has the form of the ids [`new_cluster_id`] makes.
pub fn is_cluster_id(id: &str) -> bool {
    uuid::Uuid::try_parse(id).is_ok()
}

/// This node's identity, persisted in its data directory.
#[derive(Debug)]
pub struct Identity {
    path: PathBuf,
    node_id: u64,
    stamp: RwLock<Stamp>,
}

impl Identity {
    /// Where `data_dir` keeps its stamp.
    pub fn stamp_path(data_dir: &Path) -> PathBuf {
        data_dir.join(STAMP_FILE)
    }

    /// Whether `data_dir` holds a node's stamp (it was ever started, or
    /// restored into).
    pub fn is_stamped(data_dir: &Path) -> bool {
        Self::stamp_path(data_dir).exists()
    }

    /// Loads the stamp in `data_dir`, or creates it for `node_id`. Refuses a
    /// directory stamped for another node or, when `expected_cluster` is
    /// given, another cluster.
    pub fn open(
        data_dir: &Path,
        node_id: u64,
        expected_cluster: Option<&str>,
    ) -> Result<Self, IdentityError> {
        let path = Self::stamp_path(data_dir);
        let io_err = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        let stamp = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Stamp>(&bytes)
                .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let stamp = Stamp {
                    node_id,
                    cluster_id: None,
                    forced_new_cluster: None,
                };
                write_stamp(&path, &stamp).map_err(io_err)?;
                stamp
            }
            Err(e) => return Err(io_err(e)),
        };
        if stamp.node_id != node_id {
            return Err(IdentityError::WrongNode {
                dir: data_dir.to_path_buf(),
                stamped: stamp.node_id,
                configured: node_id,
            });
        }
        if let (Some(stamped), Some(expected)) = (&stamp.cluster_id, expected_cluster)
            && stamped != expected
        {
            return Err(IdentityError::WrongCluster {
                dir: data_dir.to_path_buf(),
                stamped: stamped.clone(),
                expected: expected.to_string(),
            });
        }
        Ok(Self {
            path,
            node_id,
            stamp: RwLock::new(stamp),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The cluster this node belongs to, once initialized or joined.
    pub fn cluster_id(&self) -> Option<String> {
        self.stamp
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_id
            .clone()
    }

    /// The membership entry of a forced start (`--force-new-cluster`), if
    /// one was made.
    pub fn forced_new_cluster(&self) -> Option<Forced> {
        self.stamp
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .forced_new_cluster
    }

    /// Records that a forced start appended the entry at `forced`.
    pub fn record_forced_new_cluster(&self, forced: Forced) -> Result<(), IdentityError> {
        self.update(|stamp| {
            stamp.forced_new_cluster = Some(forced);
            Ok(())
        })
    }

    /// Changes the stamp, durably, then in memory; nothing when `change`
    /// fails or leaves it as it was.
    fn update(
        &self,
        change: impl FnOnce(&mut Stamp) -> Result<(), IdentityError>,
    ) -> Result<(), IdentityError> {
        let mut current = self.stamp.write().unwrap_or_else(|e| e.into_inner());
        let mut stamp = current.clone();
        change(&mut stamp)?;
        if stamp == *current {
            return Ok(());
        }
        write_stamp(&self.path, &stamp).map_err(|source| IdentityError::Io {
            path: self.path.clone(),
            source,
        })?;
        *current = stamp;
        Ok(())
    }

    /// Accepts Raft traffic from cluster `theirs`: a node that belongs to no
    /// cluster yet joins it (durably, before answering); a node of another
    /// cluster refuses.
    pub fn admit(&self, theirs: &str) -> Result<(), IdentityError> {
        if theirs.is_empty() {
            return Ok(());
        }
        if let Some(ours) = self.cluster_id() {
            return if ours == theirs {
                Ok(())
            } else {
                Err(IdentityError::ForeignCluster {
                    ours,
                    theirs: theirs.to_string(),
                })
            };
        }
        self.join(theirs)
    }

    /// Admits a vote request from cluster `theirs`: only a node that holds
    /// that cluster's data votes. A node with a new data directory may be a
    /// voter whose disk was lost: voting again, it could elect a second
    /// leader in a term it already voted in, or a candidate that lacks
    /// entries it had acknowledged.
    pub fn admit_vote(&self, theirs: &str) -> Result<(), IdentityError> {
        match self.cluster_id() {
            None => Err(IdentityError::NoVoteWithoutData {
                theirs: theirs.to_string(),
            }),
            Some(ours) if !theirs.is_empty() && ours != theirs => {
                Err(IdentityError::ForeignCluster {
                    ours,
                    theirs: theirs.to_string(),
                })
            }
            Some(_) => Ok(()),
        }
    }

    /// Stamps a node that has taken no part in any cluster yet as a member
    /// of `cluster_id`, replacing an earlier such stamp: for a cluster being
    /// initialized with it, which a retried initialization names anew.
    pub fn join_before_taking_part(&self, cluster_id: &str) -> Result<(), IdentityError> {
        self.update(|stamp| {
            stamp.cluster_id = Some(cluster_id.to_string());
            Ok(())
        })
    }

    /// Stamps this node as a member of `cluster_id`.
    pub fn join(&self, cluster_id: &str) -> Result<(), IdentityError> {
        self.update(|stamp| match &stamp.cluster_id {
            Some(ours) if ours == cluster_id => Ok(()),
            Some(ours) => Err(IdentityError::ForeignCluster {
                ours: ours.clone(),
                theirs: cluster_id.to_string(),
            }),
            None => {
                stamp.cluster_id = Some(cluster_id.to_string());
                Ok(())
            }
        })
    }
}

/// Writes the stamp atomically and durably (temporary file, fsync, rename).
fn write_stamp(path: &Path, stamp: &Stamp) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(stamp).map_err(io::Error::other)?)?;
    file.sync_all()?;
    crate::durable::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_bound_to_its_first_node_id() {
        let dir = tempfile::tempdir().unwrap();
        Identity::open(dir.path(), 1, None).unwrap();
        let err = Identity::open(dir.path(), 2, None).unwrap_err().to_string();
        assert!(err.contains("belongs to node 1"), "{err}");
        assert!(err.contains("started as node 2"), "{err}");
    }

    #[test]
    fn a_node_joins_one_cluster_and_refuses_others() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(dir.path(), 1, None).unwrap();
        assert_eq!(identity.cluster_id(), None);
        identity.admit("").unwrap();
        identity.admit("alpha").unwrap();
        identity.admit("alpha").unwrap();
        let err = identity.admit("beta").unwrap_err().to_string();
        assert!(err.contains("belongs to cluster alpha"), "{err}");

        // The membership survives a restart, and an explicit expectation is checked.
        let reopened = Identity::open(dir.path(), 1, None).unwrap();
        assert_eq!(reopened.cluster_id().as_deref(), Some("alpha"));
        Identity::open(dir.path(), 1, Some("alpha")).unwrap();
        let err = Identity::open(dir.path(), 1, Some("beta"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to cluster alpha"), "{err}");
    }

    #[test]
    fn a_forced_start_is_recorded_beside_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        // A stamp written before the record existed reads as not forced.
        fs::write(
            dir.path().join(STAMP_FILE),
            r#"{"node_id": 1, "cluster_id": "alpha"}"#,
        )
        .unwrap();
        let identity = Identity::open(dir.path(), 1, None).unwrap();
        assert_eq!(identity.forced_new_cluster(), None);
        let forced = Forced { term: 7, index: 42 };
        identity.record_forced_new_cluster(forced).unwrap();
        let reopened = Identity::open(dir.path(), 1, Some("alpha")).unwrap();
        assert_eq!(reopened.forced_new_cluster(), Some(forced));
        assert_eq!(reopened.cluster_id().as_deref(), Some("alpha"));
    }

    #[test]
    fn only_a_node_with_its_clusters_data_votes() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity::open(dir.path(), 1, None).unwrap();
        let err = identity.admit_vote("alpha").unwrap_err().to_string();
        assert!(err.contains("does not vote"), "{err}");
        // Stamped for a cluster being initialized, then again when a retry
        // of the initialization names it anew.
        identity.join_before_taking_part("alpha").unwrap();
        identity.join_before_taking_part("beta").unwrap();
        identity.admit_vote("beta").unwrap();
        let err = identity.admit_vote("alpha").unwrap_err().to_string();
        assert!(err.contains("belongs to cluster beta"), "{err}");
    }

    proptest::proptest! {
        /// A stamp file is read at every start: a damaged one is refused
        /// with its path, never a panic, and never rewritten.
        #[test]
        fn any_stamp_bytes_open_or_are_refused(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(Identity::stamp_path(dir.path()), &bytes).unwrap();
            if let Err(error) = Identity::open(dir.path(), 1, None) {
                proptest::prop_assert!(error.to_string().contains("identity.json"), "{}", error);
                proptest::prop_assert_eq!(std::fs::read(Identity::stamp_path(dir.path())).unwrap(), bytes);
            }
        }
    }
}
