//! `recipectl status`, `member` and `snapshot`: the admin API on peer ports.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use recipestore_client::RetryPolicy;
use recipestore_client::admin::AdminClient;
use recipestore_client::admin::AdminError;
use recipestore_client::admin::Timeouts;
use recipestore_client::is_retryable;
use recipestore_protocol::pb;
use recipestore_protocol::slots::rebalance;
use tonic::transport::ClientTlsConfig;

use crate::Output;
use crate::fail;

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Create the cluster on the first peer with the given members (that peer alone when none).
    Init {
        /// Members as ID=PEER_ADDR/CLIENT_ADDR, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
    },
    /// Add a non-voting member and wait until it has caught up.
    AddLearner {
        id: u64,
        #[arg(long)]
        peer_addr: String,
        #[arg(long)]
        client_addr: String,
        /// Return once the membership change commits, without waiting for catch-up.
        #[arg(long)]
        no_wait: bool,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a member: a voter leaves the voters, a learner leaves the cluster.
    Remove { id: u64 },
}

/// How peer ports are called: each call's deadline and, with TLS, the
/// certificates.
pub struct Dial {
    pub timeout: Duration,
    pub tls: Option<ClientTlsConfig>,
}

pub fn admin_client(addr: &str, dial: &Dial) -> anyhow::Result<AdminClient> {
    let timeouts = Timeouts {
        request: dial.timeout,
        ..Timeouts::default()
    };
    Ok(AdminClient::with_tls(addr, timeouts, dial.tls.as_ref())?)
}

/// Calls the first peer that answers, retrying UNAVAILABLE with backoff.
pub async fn call<T, F, Fut>(peers: &[String], dial: &Dial, f: F) -> anyhow::Result<T>
where
    F: FnMut(AdminClient) -> Fut,
    Fut: Future<Output = Result<T, AdminError>>,
{
    call_with_retry(peers, dial, is_retryable, f).await
}

/// Calls an idempotent membership RPC: one whose repetition after an
/// unknown outcome (a lost reply, a broken connection) is safe and answers
/// what the first call did, so UNKNOWN is retried too.
async fn call_idempotent<T, F, Fut>(peers: &[String], dial: &Dial, f: F) -> anyhow::Result<T>
where
    F: FnMut(AdminClient) -> Fut,
    Fut: Future<Output = Result<T, AdminError>>,
{
    let retryable = |s: &tonic::Status| is_retryable(s) || s.code() == tonic::Code::Unknown;
    call_with_retry(peers, dial, retryable, f).await
}

async fn call_with_retry<T, F, Fut>(
    peers: &[String],
    dial: &Dial,
    retryable: impl Fn(&tonic::Status) -> bool,
    mut f: F,
) -> anyhow::Result<T>
where
    F: FnMut(AdminClient) -> Fut,
    Fut: Future<Output = Result<T, AdminError>>,
{
    let policy = RetryPolicy::default();
    let mut last = None;
    for attempt in 0..policy.max_attempts {
        let peer = &peers[attempt as usize % peers.len()];
        match f(admin_client(peer, dial)?).await {
            Ok(v) => return Ok(v),
            Err(AdminError::Call { source, .. }) if retryable(&source) => {
                last = Some(source);
                tokio::time::sleep(policy.backoff(attempt)).await;
            }
            Err(AdminError::Call { source, .. }) => return Err(fail(source)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(fail(last.unwrap_or_else(|| {
        tonic::Status::unavailable("no peer answered")
    })))
}

/// A failed call as `recipectl` prints it: the code and the node's message.
pub fn described(error: AdminError) -> String {
    match error {
        AdminError::Call { source, .. } => format!("{:?}: {}", source.code(), source.message()),
        e => e.to_string(),
    }
}

/// A member's status and the address it answered at.
pub struct Reached {
    pub addr: String,
    pub status: pb::StatusResponse,
}

async fn status_at(addr: &str, dial: &Dial) -> Result<pb::StatusResponse, String> {
    let client = admin_client(addr, dial).map_err(|e| e.to_string())?;
    client.status().await.map_err(described)
}

/// Why a member could not be reached at its advertised address: a name
/// that does not resolve from here (an in-cluster DNS name seen through a
/// port-forward, say) is told apart from a member that is down.
async fn unreachable(addr: &str, error: String) -> String {
    match tokio::net::lookup_host(addr).await {
        Ok(_) => error,
        Err(_) => format!(
            "its advertised address {addr} does not resolve from here; pass an address that reaches it in --peers"
        ),
    }
}

/// A member of a store: its shard (0 in an unsharded store) and its id
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeKey {
    pub shard: u32,
    pub id: u64,
}

impl std::fmt::Display for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.shard, self.id)
    }
}

/// The shard a member says it belongs to.
fn shard_of(status: &pb::StatusResponse) -> u32 {
    status.placement.as_ref().map_or(0, |p| p.shard)
}

/// Status of every member of every shard reached, keyed by shard and node
/// id, with why a member did not answer. The addresses in `peers` are used
/// as given (a port-forward or a load balancer works); members not reached
/// through them are dialled at the address they advertise.
pub async fn cluster_status(
    peers: &[String],
    dial: &Dial,
) -> anyhow::Result<BTreeMap<NodeKey, Result<Reached, String>>> {
    let mut out = BTreeMap::new();
    let mut last_error = None;
    for addr in peers {
        match status_at(addr, dial).await {
            Ok(status) => {
                let key = NodeKey {
                    shard: shard_of(&status),
                    id: status.id,
                };
                out.insert(
                    key,
                    Ok(Reached {
                        addr: addr.clone(),
                        status,
                    }),
                );
            }
            Err(e) => last_error = Some(format!("{addr}: {e}")),
        }
    }
    let members: BTreeMap<NodeKey, String> = out
        .values()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| {
            let shard = shard_of(&r.status);
            let members = r.status.voters.iter().chain(&r.status.learners);
            members.map(move |m| (NodeKey { shard, id: m.id }, m.peer_addr.clone()))
        })
        .collect();
    if members.is_empty() && out.is_empty() {
        anyhow::bail!(
            "no peer answered: {}",
            last_error.unwrap_or_else(|| "no peers given".into())
        );
    }
    for (key, addr) in members {
        if out.contains_key(&key) {
            continue;
        }
        let reached = match status_at(&addr, dial).await {
            Ok(status) => Ok(Reached { addr, status }),
            Err(e) => Err(unreachable(&addr, e).await),
        };
        out.insert(key, reached);
    }
    Ok(out)
}

fn role_name(role: i32) -> &'static str {
    match pb::Role::try_from(role).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Leader => "leader",
        pb::Role::Follower => "follower",
        pb::Role::Candidate => "candidate",
        pb::Role::Learner => "learner",
        pb::Role::Shutdown => "shutdown",
        pb::Role::Unspecified => "unknown",
    }
}

pub async fn status(peers: &[String], dial: &Dial, output: Output) -> anyhow::Result<()> {
    let statuses = cluster_status(peers, dial).await?;
    let sharded = statuses.keys().any(|k| k.shard > 0);
    if output == Output::Json {
        let rows: Vec<_> = statuses
            .iter()
            .map(|(key, s)| match s.as_ref().map(|r| &r.status) {
                Ok(s) => serde_json::json!({
                    "shard": key.shard, "id": key.id, "role": role_name(s.role), "term": s.term, "leader": s.leader_id,
                    "last_log_index": s.last_log_index, "committed_index": s.committed_index,
                    "applied_index": s.applied_index, "snapshot_index": s.snapshot.as_ref().map(|s| s.last_index),
                    "purged_index": s.purged_index, "cluster_id": s.cluster_id,
                    "peer_addr": s.peer_addr, "client_addr": s.client_addr,
                    "voters": s.voters.iter().map(|m| m.id).collect::<Vec<_>>(),
                    "learners": s.learners.iter().map(|m| m.id).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({"shard": key.shard, "id": key.id, "error": e}),
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    // A sharded store's members are named shard/id.
    let name = |key: &NodeKey| match sharded {
        true => key.to_string(),
        false => key.id.to_string(),
    };
    println!(
        "{:<4} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>10}  ADDRESS",
        "ID", "ROLE", "TERM", "LEADER", "LAST_LOG", "COMMITTED", "APPLIED", "SNAPSHOT"
    );
    for (key, s) in &statuses {
        let id = name(key);
        match s.as_ref().map(|r| &r.status) {
            Ok(s) => println!(
                "{:<4} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>10}  {}",
                id,
                role_name(s.role),
                s.term,
                s.leader_id.map_or("-".to_string(), |l| l.to_string()),
                s.last_log_index,
                s.committed_index,
                s.applied_index,
                s.snapshot
                    .as_ref()
                    .map_or("-".to_string(), |s| s.last_index.to_string()),
                s.client_addr
            ),
            Err(e) => println!("{id:<4} unreachable: {e}"),
        }
    }
    Ok(())
}

/// Parses ID=PEER_ADDR/CLIENT_ADDR.
fn parse_member(spec: &str) -> anyhow::Result<pb::Member> {
    let parse = || -> Option<pb::Member> {
        let (id, addrs) = spec.split_once('=')?;
        let (peer, client) = addrs.split_once('/')?;
        Some(pb::Member {
            id: id.trim().parse().ok()?,
            peer_addr: peer.trim().to_string(),
            client_addr: client.trim().to_string(),
        })
    };
    parse().ok_or_else(|| anyhow::anyhow!("member {spec:?} is not ID=PEER_ADDR/CLIENT_ADDR"))
}

fn print_membership(reply: &pb::MembershipResponse, output: Output) {
    let voters: Vec<u64> = reply.voters.iter().map(|m| m.id).collect();
    let learners: Vec<u64> = reply.learners.iter().map(|m| m.id).collect();
    if output == Output::Json {
        println!(
            "{}",
            serde_json::json!({"log_index": reply.log_index, "voters": voters, "learners": learners, "changed": reply.changed})
        );
    } else if reply.changed {
        println!(
            "committed at index {}: voters {voters:?}, learners {learners:?}",
            reply.log_index
        );
    } else {
        println!(
            "nothing to change: voters {voters:?}, learners {learners:?} (membership of index {})",
            reply.log_index
        );
    }
}

pub async fn member(
    peers: &[String],
    dial: &Dial,
    command: MemberCommand,
    output: Output,
) -> anyhow::Result<()> {
    match command {
        MemberCommand::Init { members } => {
            let members = members
                .iter()
                .map(|m| parse_member(m))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let reply = call(&peers[..1], dial, |c| {
                let members = members.clone();
                async move { c.initialize(members).await }
            })
            .await?;
            if output == Output::Json {
                println!(
                    "{}",
                    serde_json::json!({"cluster_id": reply.cluster_id, "already_initialized": reply.already_initialized})
                );
            } else if reply.already_initialized {
                println!("already initialized: cluster {}", reply.cluster_id);
            } else {
                println!("initialized cluster {}", reply.cluster_id);
            }
        }
        MemberCommand::AddLearner {
            id,
            peer_addr,
            client_addr,
            no_wait,
        } => {
            let member = pb::Member {
                id,
                peer_addr,
                client_addr,
            };
            let reply = call_idempotent(peers, dial, |c| {
                let member = member.clone();
                async move { c.add_learner(member, !no_wait).await }
            })
            .await?;
            print_membership(&reply, output);
        }
        MemberCommand::Promote { id } => {
            let reply =
                call_idempotent(peers, dial, |c| async move { c.promote(id).await }).await?;
            print_membership(&reply, output);
        }
        MemberCommand::Remove { id } => {
            let reply =
                call_idempotent(peers, dial, |c| async move { c.remove_member(id).await }).await?;
            print_membership(&reply, output);
        }
    }
    Ok(())
}

/// The slots of `owners` that `shard` owns, as ranges: "0-341,700".
fn slot_ranges(owners: &[u32], shard: u32) -> String {
    ranges(
        owners
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == shard)
            .map(|(slot, _)| slot),
    )
}

/// Ascending slots as ranges: "0-341,700"; "-" for none.
fn ranges(slots: impl Iterator<Item = usize>) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for slot in slots {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == slot => *end = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    let ranges: Vec<String> = ranges
        .into_iter()
        .map(|(start, end)| match start == end {
            true => start.to_string(),
            false => format!("{start}-{end}"),
        })
        .collect();
    match ranges.is_empty() {
        true => "-".into(),
        false => ranges.join(","),
    }
}

/// One shard as `recipectl shards` shows it: from its leader's status
/// when reached, else from its most caught-up member's.
struct ShardView<'a> {
    shard: u32,
    status: &'a pb::StatusResponse,
    reached: usize,
}

impl ShardView<'_> {
    /// The slots' owners as this shard's group holds them; an unsharded
    /// store owns every slot.
    fn owners(&self) -> Vec<u32> {
        match &self.status.placement {
            Some(p) => p.owners.clone(),
            None => vec![self.shard; usize::from(recipestore_protocol::slots::SLOTS)],
        }
    }

    fn epoch(&self) -> u64 {
        self.status.placement.as_ref().map_or(0, |p| p.epoch)
    }
}

/// `recipectl shards`: each shard's placement, as its own group holds it,
/// and where the shards' claims overlap or leave a slot unowned; with
/// `plan`, the slot moves that would take the store to that many shards.
pub async fn shards(
    peers: &[String],
    dial: &Dial,
    plan: Option<u16>,
    output: Output,
) -> anyhow::Result<()> {
    let statuses = cluster_status(peers, dial).await?;
    let mut views: BTreeMap<u32, ShardView> = BTreeMap::new();
    for (key, reached) in &statuses {
        let Ok(reached) = reached else { continue };
        let status = &reached.status;
        let view = views.entry(key.shard).or_insert(ShardView {
            shard: key.shard,
            status,
            reached: 0,
        });
        view.reached += 1;
        let leads = |s: &pb::StatusResponse| s.role == pb::Role::Leader as i32;
        if !leads(view.status)
            && (leads(status) || status.applied_index > view.status.applied_index)
        {
            view.status = status;
        }
    }
    anyhow::ensure!(!views.is_empty(), "no member of any shard answered");
    // Every slot's claimants, by the shards' own placements.
    let mut claims: Vec<Vec<u32>> =
        vec![Vec::new(); usize::from(recipestore_protocol::slots::SLOTS)];
    for view in views.values() {
        for (slot, owner) in view.owners().into_iter().enumerate() {
            if owner == view.shard {
                claims[slot].push(view.shard);
            }
        }
    }
    let mut problems: Vec<String> = claims
        .iter()
        .enumerate()
        .filter(|(_, owners)| owners.len() > 1)
        .map(|(slot, owners)| format!("slot {slot} is claimed by shards {owners:?}"))
        .collect();
    let unowned = ranges(
        claims
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_empty())
            .map(|(s, _)| s),
    );
    if unowned != "-" {
        problems.push(format!(
            "no shard reached owns slots {unowned}: pass the peers of every shard"
        ));
    }
    if let Some(shards) = plan {
        anyhow::ensure!(
            problems.is_empty(),
            "cannot plan while the shards' claims disagree: {}",
            problems.join("; ")
        );
        let owners: Vec<u16> = claims.iter().map(|c| c[0] as u16).collect();
        return print_plan(&owners, shards, output);
    }
    if output == Output::Json {
        let rows: Vec<_> = views
            .values()
            .map(|v| {
                let owners = v.owners();
                serde_json::json!({
                    "shard": v.shard, "epoch": v.epoch(),
                    "slots": owners.iter().filter(|o| **o == v.shard).count(),
                    "ranges": slot_ranges(&owners, v.shard),
                    "leader": v.status.leader_id, "cluster_id": v.status.cluster_id,
                    "members": v.status.voters.len() + v.status.learners.len(),
                    "reached": v.reached, "applied_index": v.status.applied_index,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"shards": rows, "problems": problems})
        );
        return Ok(());
    }
    println!(
        "{:<6} {:>6} {:>6} {:>7} {:>8} {:>10}  SLOT RANGES",
        "SHARD", "EPOCH", "SLOTS", "LEADER", "MEMBERS", "APPLIED"
    );
    for v in views.values() {
        let owners = v.owners();
        println!(
            "{:<6} {:>6} {:>6} {:>7} {:>8} {:>10}  {}",
            v.shard,
            v.epoch(),
            owners.iter().filter(|o| **o == v.shard).count(),
            v.status
                .leader_id
                .map_or("-".to_string(), |l| l.to_string()),
            format!(
                "{}/{}",
                v.reached,
                v.status.voters.len() + v.status.learners.len()
            ),
            v.status.applied_index,
            slot_ranges(&owners, v.shard)
        );
    }
    for problem in &problems {
        println!("warning: {problem}");
    }
    Ok(())
}

/// The moves from `owners` to `shards` shards, as runs of consecutive slots
/// going from one shard to another.
fn print_plan(owners: &[u16], shards: u16, output: Output) -> anyhow::Result<()> {
    let moves = rebalance(owners, shards);
    let mut runs: Vec<(u16, u16, Vec<usize>)> = Vec::new();
    for m in &moves {
        match runs.last_mut() {
            Some((from, to, slots))
                if (*from, *to) == (m.from, m.to)
                    && slots.last() == Some(&(usize::from(m.slot) - 1)) =>
            {
                slots.push(usize::from(m.slot))
            }
            _ => runs.push((m.from, m.to, vec![usize::from(m.slot)])),
        }
    }
    if output == Output::Json {
        let rows: Vec<_> = runs
            .iter()
            .map(|(from, to, slots)| {
                serde_json::json!({"from": from, "to": to, "slots": ranges(slots.iter().copied()), "count": slots.len()})
            })
            .collect();
        let plan = serde_json::json!({"shards": shards, "moved": moves.len(), "moves": rows});
        println!("{plan}");
        return Ok(());
    }
    println!(
        "{shards} shard(s): {} of {} slots would move",
        moves.len(),
        owners.len()
    );
    for (from, to, slots) in &runs {
        println!(
            "  slots {} ({}): shard {from} -> shard {to}",
            ranges(slots.iter().copied()),
            slots.len()
        );
    }
    Ok(())
}
