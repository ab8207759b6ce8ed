//! Consensus: the openraft type configuration, the commands replicated
//! through the log, storage on sled, and the gRPC network between peers.

pub mod log_store;
pub mod network;
pub mod proposer;
pub(crate) mod snapshot_file;
pub mod state_machine;
mod write_behind;

use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::Serialize;

use crate::placement::MoveStep;
use crate::placement::Placement;
use state_machine::Recipe;

/// How a member of the cluster is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// host:port of the peer gRPC server (Raft, admin, forwarding).
    pub peer_addr: String,
    /// host:port of the client gRPC server.
    pub client_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} client={}", self.peer_addr, self.client_addr)
    }
}

/// A change to the recipes, proposed by the leader and applied in log order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Put {
        name: String,
        /// Shared, not copied, by the log's tail, replication and the
        /// state machine, which each hold the entry.
        content: Bytes,
        /// Apply only if the current version equals this (0: absent).
        if_version: Option<u64>,
    },
    Delete {
        name: String,
        if_version: Option<u64>,
    },
    /// The store's placement, as this shard's group takes it (see
    /// [`crate::placement`]); boxed, as it is far larger than a write.
    Place(Box<Placement>),
    /// Copies of recipes in slots this group does not own, at their
    /// versions (`None`: removed at the source since an earlier copy),
    /// ahead of their slots' move here.
    Import(Vec<(String, Option<Recipe>)>),
    /// One step of moving slots between shards (see [`crate::placement`]).
    Move(MoveStep),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Put { name, content, .. } => write!(f, "put {name} ({} bytes)", content.len()),
            Command::Delete { name, .. } => write!(f, "delete {name}"),
            Command::Place(placement) => write!(
                f,
                "place shard {} at epoch {}",
                placement.shard, placement.epoch
            ),
            Command::Import(recipes) => write!(f, "import {} recipes", recipes.len()),
            Command::Move(step) => write!(f, "move {step:?}"),
        }
    }
}

/// The result of applying one log entry. Deterministic: every member computes
/// the same outcome for the same entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The recipe now has this version (the entry's log index).
    Written { version: u64 },
    /// The recipe was removed by the entry at this index.
    Deleted { version: u64 },
    /// A conditional write found another version (`None`: absent).
    VersionMismatch { expected: u64, current: Option<u64> },
    /// A delete found no recipe.
    NotFound,
    /// A blank or membership entry, which does not touch recipes; or a
    /// placement, import or move step taken.
    Applied,
    /// A write for a slot this shard does not own: the owner, as of the
    /// placement at `epoch`.
    Moved { slot: u16, shard: u16, epoch: u64 },
    /// A placement or move step the group cannot take, and why.
    Refused { reason: String },
    /// A write for a slot this shard is handing over: it did not run, and
    /// runs at the owner once the move ends.
    Moving { slot: u16 },
}

openraft::declare_raft_types!(
    /// The types RecipeStore instantiates openraft with.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = Member,
);

/// Short aliases for openraft types instantiated with [`TypeConfig`].
pub mod typ {
    use super::TypeConfig;

    pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
    pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
    /// The leader a log id names: its term and node.
    pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
    pub type Vote = openraft::alias::VoteOf<TypeConfig>;
    pub type Entry = openraft::alias::EntryOf<TypeConfig>;
    pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
    pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
    pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, std::fs::File>;
    pub type RaftMetrics = openraft::RaftMetrics<TypeConfig>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::decode;
    use crate::codec::encode;

    /// Content is MessagePack `bin`, as logs, snapshots and peers written by
    /// earlier releases hold it, not an array of integers.
    #[test]
    fn a_put_keeps_its_stored_encoding() {
        let put = Command::Put {
            name: "soup".into(),
            content: Bytes::from_static(b"hot"),
            if_version: Some(7),
        };
        let stored = [
            &[0x81, 0xa3][..],
            b"Put",
            &[0x83, 0xa4],
            b"name",
            &[0xa4],
            b"soup",
            &[0xa7],
            b"content",
            &[0xc4, 0x03],
            b"hot",
            &[0xaa],
            b"if_version",
            &[0x07],
        ]
        .concat();
        assert_eq!(encode(&put).unwrap(), stored);
        assert_eq!(decode::<Command>(&stored).unwrap(), put);
    }
}
