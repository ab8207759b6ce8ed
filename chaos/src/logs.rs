//! Raft logs compared across nodes, read from their disks after a run.
//!
//! Raft's log matching property: two entries with the same log id (term,
//! leader, index) are the same entry. A node that reused a log id for
//! another entry breaks it, and with it everything built on the log: the
//! checker may or may not see the consequence in a short run, the disks
//! always do.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::entry::RaftEntry;
use recipestore::codec;
use recipestore::raft::log_store;
use recipestore::raft::typ::Entry;
use recipestore::raft::typ::LogId;

/// A log id held with different payloads by different nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub log_id: String,
    /// (node, payload summary) for every node holding the id.
    pub holders: Vec<(u64, String)>,
}

/// Every log id that two nodes hold with different payloads, given each
/// node's entries.
pub fn divergent_log_ids(logs: &BTreeMap<u64, Vec<Entry>>) -> anyhow::Result<Vec<Divergence>> {
    let mut by_id: BTreeMap<LogId, Vec<(u64, Vec<u8>, String)>> = BTreeMap::new();
    for (node, entries) in logs {
        for entry in entries {
            let payload = codec::encode(&entry.payload)?;
            by_id.entry(entry.log_id()).or_default().push((
                *node,
                payload,
                entry.payload.to_string(),
            ));
        }
    }
    Ok(by_id
        .into_iter()
        .filter(|(_, holders)| holders.iter().any(|(_, p, _)| *p != holders[0].1))
        .map(|(log_id, holders)| Divergence {
            log_id: log_id.to_string(),
            holders: holders
                .into_iter()
                .map(|(node, _, summary)| (node, summary))
                .collect(),
        })
        .collect())
}

/// Reads the logs of stopped nodes: `(node id, raft log directory)`.
pub fn read_logs<'a>(
    nodes: impl IntoIterator<Item = (u64, &'a Path)>,
) -> anyhow::Result<BTreeMap<u64, Vec<Entry>>> {
    nodes
        .into_iter()
        .filter(|(_, dir)| dir.exists())
        .map(|(id, dir)| {
            let entries = log_store::read_entries(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the raft log of node {id} in {}: {e}",
                    dir.display()
                )
            })?;
            Ok((id, entries))
        })
        .collect()
}
