//! Recovery from the permanent loss of a majority of the voters.
//!
//! Without a quorum nothing commits, and the lost members are not coming
//! back (their disks are gone). A surviving member started with
//! `--force-new-cluster` first appends to its own log, as a leader of a new
//! term would, a membership entry that makes it the only voter (keeping its
//! data and its cluster id); it then elects itself and commits everything
//! its log holds, and the others rejoin as new members (learners, then
//! voters). Like etcd's flag of the same name, it trusts the survivor's log
//! whole: a write acknowledged by a quorum that did not include this member
//! is lost, so the member to start this way is the most up-to-date
//! survivor.
//!
//! The data directory's stamp records the recovery, and a later start with
//! the flag still set changes nothing: applied again, it would drop the
//! members added back since.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;

use openraft::Membership;
use openraft::RaftLogReader;
use openraft::entry::RaftEntry;
use openraft::storage::RaftLogStorage;
use openraft::vote::RaftLeaderId;
use serde::Deserialize;
use serde::Serialize;

use crate::identity::Identity;
use crate::raft::Member;
use crate::raft::log_store::LogStore;
use crate::raft::typ::CommittedLeaderId;
use crate::raft::typ::Entry;
use crate::raft::typ::LogId;
use crate::raft::typ::Vote;

/// The membership entry a forced start appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forced {
    pub term: u64,
    pub index: u64,
}

/// What `--force-new-cluster` did at this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// This node is now its cluster's only voter, by the entry at `Forced`.
    Forced(Forced),
    /// An earlier start did it, by the entry at `Forced`; nothing changed.
    AlreadyForced(Forced),
}

/// Makes node `id`, reached at `member`, the only voter of its cluster,
/// before Raft starts on `log_store` (see the module's comment).
pub async fn force_new_cluster(
    identity: &Identity,
    log_store: &mut LogStore,
    member: Member,
) -> io::Result<Outcome> {
    if let Some(forced) = identity.forced_new_cluster() {
        return Ok(Outcome::AlreadyForced(forced));
    }
    let id = identity.node_id();
    let Some(last) = log_store.get_log_state().await?.last_log_id else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "this node holds no log, so it has nothing to recover; \
             start it without the flag",
        ));
    };
    let voted_term = log_store
        .read_vote()
        .await?
        .map_or(0, |vote| vote.leader_id().term());
    // A term no member has used: the entry's log id is new everywhere, and
    // the election that follows is in a later one still.
    let term = voted_term.max(last.committed_leader_id().term) + 1;
    let log_id = LogId::new(CommittedLeaderId::new(term, id), last.index() + 1);
    let membership = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, member)]))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    // The vote first, as a leader of `term` has one before it appends.
    log_store.save_vote(&Vote::new_committed(term, id)).await?;
    log_store.append_before_start(&Entry::new_membership(log_id, membership))?;
    // A crash before this is durable only means that the next start with
    // the flag appends such an entry again, in a later term.
    let forced = Forced {
        term,
        index: log_id.index(),
    };
    identity
        .record_forced_new_cluster(forced)
        .map_err(io::Error::other)?;
    Ok(Outcome::Forced(forced))
}
