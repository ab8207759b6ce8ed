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

/// Status of every member, keyed by node id, with why a member did not
/// answer. The addresses in `peers` are used as given (a port-forward or a
/// load balancer works); members not reached through them are dialled at
/// the address they advertise.
pub async fn cluster_status(
    peers: &[String],
    dial: &Dial,
) -> anyhow::Result<BTreeMap<u64, Result<Reached, String>>> {
    let mut out = BTreeMap::new();
    let mut last_error = None;
    for addr in peers {
        match status_at(addr, dial).await {
            Ok(status) => {
                out.insert(
                    status.id,
                    Ok(Reached {
                        addr: addr.clone(),
                        status,
                    }),
                );
            }
            Err(e) => last_error = Some(format!("{addr}: {e}")),
        }
    }
    let members: BTreeMap<u64, String> = out
        .values()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|r| r.status.voters.iter().chain(&r.status.learners))
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    if members.is_empty() && out.is_empty() {
        anyhow::bail!(
            "no peer answered: {}",
            last_error.unwrap_or_else(|| "no peers given".into())
        );
    }
    for (id, addr) in members {
        if out.contains_key(&id) {
            continue;
        }
        let reached = match status_at(&addr, dial).await {
            Ok(status) => Ok(Reached { addr, status }),
            Err(e) => Err(unreachable(&addr, e).await),
        };
        out.insert(id, reached);
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
    if output == Output::Json {
        let rows: Vec<_> = statuses
            .iter()
            .map(|(id, s)| match s.as_ref().map(|r| &r.status) {
                Ok(s) => serde_json::json!({
                    "id": id, "role": role_name(s.role), "term": s.term, "leader": s.leader_id,
                    "last_log_index": s.last_log_index, "committed_index": s.committed_index,
                    "applied_index": s.applied_index, "snapshot_index": s.snapshot.as_ref().map(|s| s.last_index),
                    "purged_index": s.purged_index, "cluster_id": s.cluster_id,
                    "peer_addr": s.peer_addr, "client_addr": s.client_addr,
                    "voters": s.voters.iter().map(|m| m.id).collect::<Vec<_>>(),
                    "learners": s.learners.iter().map(|m| m.id).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({"id": id, "error": e}),
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<4} {:<10} {:>6} {:>7} {:>10} {:>10} {:>10} {:>10}  ADDRESS",
        "ID", "ROLE", "TERM", "LEADER", "LAST_LOG", "COMMITTED", "APPLIED", "SNAPSHOT"
    );
    for (id, s) in &statuses {
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
