//! The admin API: status, cluster formation, membership, leadership and
//! snapshots. Leader-only calls made on a follower run on the leader
//! through the router (`routing`).

use openraft::async_runtime::watch::WatchReceiver;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::collections::HashSet;
use std::io::Read;
use std::io::Seek;
use std::io::SeekFrom;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::BoxStream;
use openraft::ChangeMembers;
use openraft::ServerState;
use openraft::error::ClientWriteError;
use openraft::error::RaftError;
use openraft::raft::ClientWriteResponse;
use recipestore_protocol::pb;
use recipestore_protocol::pb::admin_client::AdminClient;
use recipestore_protocol::slots::slot_of;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::transport::Channel;

use super::time_left;
use crate::backup::BackupHeader;
use crate::error::NodeError;
use crate::metrics;
use crate::name;
use crate::node::Node;
use crate::overload::recent;
use crate::placement;
use crate::placement::MoveStep;
use crate::placement::Placement;
use crate::raft::Command;
use crate::raft::Member;
use crate::raft::Outcome;
use crate::raft::TypeConfig;
use crate::raft::state_machine::Recipe;
use crate::raft::typ;
use crate::routing;
use crate::routing::Attempt;

pub struct Admin {
    node: Arc<Node>,
}

/// Most recipes an export reads per page before it looks at their sizes.
const EXPORT_ROWS: usize = 4096;

/// Slot numbers from the wire.
fn slots_of(raw: &[u32]) -> Result<Vec<u16>, Status> {
    raw.iter()
        .map(|&s| placement::narrow_slot(s))
        .collect::<Result<_, _>>()
        .map_err(Status::invalid_argument)
}

/// Whether the group took `what` (a placement, an import, a move step):
/// FAILED_PRECONDITION with its reason when it refused.
fn taken(outcome: Outcome, what: &str) -> Result<(), Status> {
    match outcome {
        Outcome::Applied => Ok(()),
        Outcome::Refused { reason } => Err(Status::failed_precondition(reason)),
        other => Err(Status::internal(format!("{what} was applied as {other:?}"))),
    }
}

fn storage_failed(e: std::io::Error) -> Status {
    Status::internal(format!("storage read failed: {e}"))
}

fn to_pb(id: u64, m: &Member) -> pb::Member {
    pb::Member {
        id,
        peer_addr: m.peer_addr.clone(),
        client_addr: m.client_addr.clone(),
    }
}

fn validate_member(m: &pb::Member) -> Result<Member, Status> {
    for (flag, addr) in [("peer_addr", &m.peer_addr), ("client_addr", &m.client_addr)] {
        let valid = addr.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !valid {
            return Err(Status::invalid_argument(format!(
                "member {}: {flag} {addr:?} is not host:port",
                m.id
            )));
        }
    }
    Ok(Member {
        peer_addr: m.peer_addr.clone(),
        client_addr: m.client_addr.clone(),
    })
}

/// Voters and learners of a membership, as protobuf members.
fn members_of(
    membership: &openraft::Membership<u64, Member>,
) -> (Vec<pb::Member>, Vec<pb::Member>) {
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let (mut v, mut l) = (Vec::new(), Vec::new());
    for (id, node) in membership.nodes() {
        if voters.contains(id) {
            v.push(to_pb(*id, node));
        } else {
            l.push(to_pb(*id, node));
        }
    }
    (v, l)
}

/// The reply to a committed membership change.
fn membership_reply(response: ClientWriteResponse<TypeConfig>) -> pb::MembershipResponse {
    let (voters, learners) = members_of(&response.membership.unwrap_or_default());
    pb::MembershipResponse {
        log_index: response.log_id.index(),
        voters,
        learners,
        changed: true,
    }
}

/// The reply to a membership call that found nothing to change: the
/// membership in effect on this node (the leader), unchanged.
fn unchanged_reply(node: &Node) -> pb::MembershipResponse {
    let metrics = node.raft.metrics();
    let m = metrics.borrow_watched();
    let (voters, learners) = members_of(m.membership_config.membership());
    pb::MembershipResponse {
        log_index: m
            .membership_config
            .log_id()
            .as_ref()
            .map_or(0, |l| l.index()),
        voters,
        learners,
        changed: false,
    }
}

fn role(state: ServerState, is_voter: bool) -> pb::Role {
    match state {
        ServerState::Leader => pb::Role::Leader,
        ServerState::Candidate => pb::Role::Candidate,
        ServerState::Shutdown => pb::Role::Shutdown,
        ServerState::Learner => pb::Role::Learner,
        ServerState::Follower if is_voter => pb::Role::Follower,
        ServerState::Follower => pb::Role::Learner,
    }
}

/// Maps a failed membership write to a status a caller can act on.
fn membership_failed(
    e: RaftError<crate::raft::TypeConfig, ClientWriteError<crate::raft::TypeConfig>>,
) -> Status {
    match e {
        // Nothing was proposed: the router may run it on the next leader.
        RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => NodeError::NotLeader {
            leader: to.leader_node.map(|m| m.peer_addr),
        }
        .into(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(e.to_string())
        }
        e => Status::unavailable(e.to_string()),
    }
}

impl Admin {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Runs a leader-only call through the router: `here` when this node
    /// leads; else, unless the call was itself forwarded, `there` on the
    /// leader's admin API with the call marked as forwarded.
    async fn on_leader<Req, Resp, Here, There>(
        &self,
        request: Request<Req>,
        here: impl Fn(Req) -> Here,
        there: impl Fn(AdminClient<Channel>, Request<Req>) -> There,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Clone,
        Here: Future<Output = Result<Resp, Status>>,
        There: Future<Output = Result<Response<Resp>, Status>>,
    {
        let wait = time_left(request.metadata());
        let forwarded = routing::is_forwarded(request.metadata());
        let message = request.into_inner();
        let attempt = |leader_id, leader: Member, deadline| {
            let message = message.clone();
            let (here, there) = (&here, &there);
            async move {
                let result = if leader_id == self.node.id {
                    here(message).await
                } else if forwarded {
                    return Attempt::Ran(Err(self.node.not_leader()));
                } else {
                    let client = match self.node.peer_channel(&leader.peer_addr) {
                        Ok(channel) => AdminClient::new(channel),
                        Err(e) => return Attempt::Ran(Err(e)),
                    };
                    let request = routing::forwarded(message, deadline);
                    there(client, request).await.map(Response::into_inner)
                };
                match result {
                    Err(status) if routing::did_not_run(&status) => {
                        Attempt::NotRun(NodeError::from(status))
                    }
                    result => Attempt::Ran(result.map_err(NodeError::from)),
                }
            }
        };
        let reply = self.node.on_leader(wait, attempt, |error| error).await?;
        Ok(Response::new(reply))
    }

    /// Commits a membership change on this node, the leader.
    async fn commit_membership(
        &self,
        change: impl Into<ChangeMembers<u64, Member>>,
        retain_removed_as_learners: bool,
    ) -> Result<pb::MembershipResponse, Status> {
        let response = self
            .node
            .raft
            .change_membership(change, retain_removed_as_learners)
            .await
            .map_err(membership_failed)?;
        Ok(membership_reply(response))
    }

    /// Stamps initial member `id` at `member` with `cluster_id` (see `Join`).
    async fn join_member(&self, id: u64, member: &Member, cluster_id: &str) -> Result<(), Status> {
        let mut client = AdminClient::new(self.node.peer_channel(&member.peer_addr)?);
        let mut request = Request::new(pb::JoinRequest {
            cluster_id: cluster_id.to_owned(),
            id,
        });
        request.set_timeout(Duration::from_secs(2));
        match client.join(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                Err(Status::failed_precondition(format!(
                    "member {id} at {}: {}",
                    member.peer_addr,
                    status.message()
                )))
            }
            Err(status) => Err(Status::unavailable(format!(
                "member {id} at {} did not answer ({}); initialize again once every member runs",
                member.peer_addr,
                status.message()
            ))),
        }
    }

    /// Refuses to add a node whose data belongs to another cluster.
    async fn check_not_fenced(&self, member: &pb::Member) -> Result<(), Status> {
        let ours = self.node.identity.cluster_id().unwrap_or_default();
        let mut client = AdminClient::new(self.node.peer_channel(&member.peer_addr)?);
        let mut request = Request::new(pb::StatusRequest {});
        request.set_timeout(Duration::from_secs(2));
        // An unreachable node may still be starting; openraft retries it.
        if let Ok(status) = client.status(request).await {
            let status = status.into_inner();
            if !status.cluster_id.is_empty() && status.cluster_id != ours {
                return Err(Status::failed_precondition(format!(
                    "node {} at {} belongs to cluster {}, not {ours}; it must be wiped before it can join",
                    member.id, member.peer_addr, status.cluster_id
                )));
            }
            if status.id != member.id {
                return Err(Status::failed_precondition(format!(
                    "the node at {} reports id {}, not {}",
                    member.peer_addr, status.id, member.id
                )));
            }
        }
        Ok(())
    }

    async fn add_learner_here(
        &self,
        message: pb::AddLearnerRequest,
        wait: Duration,
    ) -> Result<pb::MembershipResponse, Status> {
        let req = message;
        let member = req
            .member
            .ok_or_else(|| Status::invalid_argument("member is required"))?;
        let node = validate_member(&member)?;
        self.check_not_fenced(&member).await?;
        if let Some(existing) = self
            .node
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&member.id)
        {
            if *existing != node {
                return Err(Status::failed_precondition(format!(
                    "node {} is already a member at {existing}, not {node}; remove it first to move it",
                    member.id
                )));
            }
            if !req.blocking {
                return Ok(unchanged_reply(&self.node));
            }
        }
        let response = self
            .node
            .raft
            .add_learner(member.id, node, false)
            .await
            .map_err(membership_failed)?;
        if req.blocking {
            // openraft's own blocking mode accepts a lag of thousands of
            // entries; "caught up" here means holding the membership entry.
            let id = member.id;
            let index = response.log_id.index();
            self.node
                .raft
                .wait(Some(wait))
                .metrics(
                    |m| {
                        let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten());
                        matched.is_some_and(|l| l.index() >= index)
                    },
                    "learner caught up",
                )
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "node {id} was added as a learner but had not caught up to index {index} within the deadline"
                    ))
                })?;
        }
        Ok(membership_reply(response))
    }

    async fn change_membership_here(
        &self,
        message: pb::ChangeMembershipRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let req = message;
        let voters: BTreeSet<u64> = req.voters.iter().copied().collect();
        if voters.is_empty() {
            return Err(Status::invalid_argument("voters must not be empty"));
        }
        if voters.len() != req.voters.len() {
            return Err(Status::invalid_argument("voters must not repeat an id"));
        }
        self.commit_membership(voters, req.retain_removed_as_learners)
            .await
    }

    async fn remove_learner_here(
        &self,
        message: pb::RemoveLearnerRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let id = message.id;
        if self.node.raft.voter_ids().any(|v| v == id) {
            return Err(Status::failed_precondition(format!(
                "node {id} is a voter; remove it from the voters with ChangeMembership first"
            )));
        }
        if !self.node.raft.learner_ids().any(|l| l == id) {
            return Err(Status::not_found(format!("node {id} is not a member")));
        }
        let change = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
        self.commit_membership(change, false).await
    }

    async fn promote_here(
        &self,
        message: pb::PromoteRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let id = message.id;
        if self.node.raft.voter_ids().any(|v| v == id) {
            return Ok(unchanged_reply(&self.node));
        }
        if !self.node.raft.learner_ids().any(|l| l == id) {
            return Err(Status::not_found(format!(
                "node {id} is not a learner; add it as a learner first"
            )));
        }
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        self.commit_membership(change, false).await
    }

    async fn remove_member_here(
        &self,
        message: pb::RemoveMemberRequest,
    ) -> Result<pb::MembershipResponse, Status> {
        let id = message.id;
        let voters: BTreeSet<u64> = self.node.raft.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the last voter; a cluster cannot remove it"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if self.node.raft.learner_ids().any(|l| l == id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Ok(unchanged_reply(&self.node));
        };
        self.commit_membership(change, false).await
    }

    async fn transfer_leadership_here(
        &self,
        message: pb::TransferLeadershipRequest,
        wait: Duration,
    ) -> Result<pb::TransferLeadershipResponse, Status> {
        let to = message.to;
        let is_voter = self.node.raft.voter_ids().any(|id| id == to);
        if !is_voter {
            return Err(Status::invalid_argument(format!(
                "node {to} is not a voter"
            )));
        }
        if to != self.node.id {
            self.node
                .raft
                .trigger()
                .transfer_leader(to)
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            self.node
                .raft
                .wait(Some(wait))
                .current_leader(to, "leadership transferred")
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "node {to} did not take over within the deadline"
                    ))
                })?;
        }
        Ok(pb::TransferLeadershipResponse { leader_id: to })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for Admin {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let m: typ::RaftMetrics = self.node.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let (voters, learners) = members_of(membership);
        let is_voter = voters.iter().any(|v| v.id == self.node.id);
        let leader_client_addr = m
            .current_leader
            .and_then(|id| membership.get_node(&id))
            .map(|n| n.client_addr.clone())
            .unwrap_or_default();
        let matched_index: BTreeMap<u64, u64> = m
            .replication
            .iter()
            .flatten()
            .map(|(id, log_id)| (*id, log_id.as_ref().map_or(0, |l| l.index())))
            .collect();
        let index = |l: &Option<typ::LogId>| l.as_ref().map_or(0, |l| l.index());
        let recent = self.node.overload.recent.counts();
        Ok(Response::new(pb::StatusResponse {
            id: self.node.id,
            cluster_id: self.node.identity.cluster_id().unwrap_or_default(),
            role: role(m.state, is_voter).into(),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_client_addr,
            voters,
            learners,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: index(&m.local_committed),
            applied_index: index(&m.last_applied),
            snapshot: m.snapshot.as_ref().map(|s| pb::SnapshotInfo {
                last_index: s.index(),
                last_term: s.committed_leader_id().term,
            }),
            purged_index: index(&m.purged),
            matched_index: matched_index.into_iter().collect(),
            peer_addr: self.node.member.peer_addr.clone(),
            client_addr: self.node.member.client_addr.clone(),
            millis_since_quorum_ack: m
                .last_quorum_acked
                .as_ref()
                .map(|acked| openraft::Instant::elapsed(&**acked).as_millis() as u64),
            recent_admitted: recent.admitted,
            recent_shed: recent.shed,
            recent_seconds: recent::WINDOW_SECONDS,
            shedding_json: serde_json::to_string(&self.node.overload.shedding())
                .map_err(|e| Status::internal(e.to_string()))?,
            placement: self.node.recipes.placement().map(|p| p.to_pb()),
        }))
    }

    async fn place(
        &self,
        request: Request<pb::PlaceRequest>,
    ) -> Result<Response<pb::PlaceResponse>, Status> {
        let wait = time_left(request.metadata());
        let placement = request
            .into_inner()
            .placement
            .ok_or_else(|| Status::invalid_argument("the request carries no placement"))?;
        let placement = Placement::from_pb(placement).map_err(Status::invalid_argument)?;
        let epoch = placement.epoch;
        let outcome = self
            .node
            .write(Command::Place(Box::new(placement)), wait)
            .await?;
        taken(outcome, "a placement")?;
        Ok(Response::new(pb::PlaceResponse { epoch }))
    }

    async fn export_slots(
        &self,
        request: Request<pb::ExportSlotsRequest>,
    ) -> Result<Response<pb::ExportSlotsResponse>, Status> {
        let wait = time_left(request.metadata());
        let req = request.into_inner();
        let slots: HashSet<u16> = slots_of(&req.slots)?.into_iter().collect();
        if slots.is_empty() {
            return Err(Status::invalid_argument("the request names no slot"));
        }
        // Every write acknowledged before the call, the last before a
        // release included, is in the state read below.
        let started = Instant::now();
        let index = self.node.read_index(wait).await?;
        self.node
            .await_applied(index, wait.saturating_sub(started.elapsed()))
            .await?;
        let in_slots = |name: &str| slots.contains(&slot_of(name));
        let whole_slots = req.names.is_empty();
        let names: Vec<String> = if whole_slots {
            let after = (!req.after.is_empty()).then_some(req.after.as_str());
            self.node
                .recipes
                .list_where("", after, EXPORT_ROWS, in_slots)
                .map_err(storage_failed)?
                .into_iter()
                .map(|r| r.name)
                .collect()
        } else {
            req.names.into_iter().filter(|n| in_slots(n)).collect()
        };
        let full_page = whole_slots && names.len() == EXPORT_ROWS;
        let max_bytes = (req.max_bytes as usize).max(1);
        let mut recipes = Vec::new();
        let mut bytes = 0;
        let mut next = String::new();
        for (i, name) in names.iter().enumerate() {
            if bytes >= max_bytes {
                next = names[i - 1].clone();
                break;
            }
            let Some(recipe) = self.node.recipes.peek(name).map_err(storage_failed)? else {
                continue;
            };
            if !req.versions_only {
                bytes += recipe.content.len();
            }
            recipes.push(pb::ExportedRecipe {
                name: name.clone(),
                version: recipe.version,
                content: if req.versions_only {
                    Vec::new()
                } else {
                    recipe.content.to_vec()
                },
            });
        }
        if next.is_empty() && full_page {
            next = names.last().cloned().unwrap_or_default();
        }
        Ok(Response::new(pb::ExportSlotsResponse { recipes, next }))
    }

    async fn import_recipes(
        &self,
        request: Request<pb::ImportRecipesRequest>,
    ) -> Result<Response<pb::ImportRecipesResponse>, Status> {
        let wait = time_left(request.metadata());
        let req = request.into_inner();
        let mut recipes = Vec::with_capacity(req.recipes.len() + req.removed.len());
        for r in req.recipes {
            name::validate(&r.name)?;
            let recipe = Recipe {
                version: r.version,
                content: r.content.into(),
            };
            recipes.push((r.name, Some(recipe)));
        }
        for removed in req.removed {
            name::validate(&removed)?;
            recipes.push((removed, None));
        }
        if recipes.is_empty() {
            return Ok(Response::new(pb::ImportRecipesResponse {}));
        }
        let outcome = self.node.write(Command::Import(recipes), wait).await?;
        taken(outcome, "an import")?;
        Ok(Response::new(pb::ImportRecipesResponse {}))
    }

    async fn move_slots(
        &self,
        request: Request<pb::MoveSlotsRequest>,
    ) -> Result<Response<pb::MoveSlotsResponse>, Status> {
        let wait = time_left(request.metadata());
        let req = request.into_inner();
        let slots = slots_of(&req.slots)?;
        let shard = u16::try_from(req.shard)
            .map_err(|_| Status::invalid_argument(format!("{} is not a shard", req.shard)))?;
        let epoch = req.epoch;
        let step = match pb::MoveStep::try_from(req.step) {
            Ok(pb::MoveStep::Release) => MoveStep::Release {
                slots,
                to: shard,
                epoch,
            },
            Ok(pb::MoveStep::Acquire) => MoveStep::Acquire {
                slots,
                from: shard,
                epoch,
            },
            Ok(pb::MoveStep::Cede) => MoveStep::Cede {
                slots,
                to: shard,
                epoch,
            },
            Ok(pb::MoveStep::Reclaim) => MoveStep::Reclaim { slots },
            Ok(pb::MoveStep::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "{} is not a move step",
                    req.step
                )));
            }
        };
        let outcome = self.node.write(Command::Move(step), wait).await?;
        taken(outcome, "a move step")?;
        Ok(Response::new(pb::MoveSlotsResponse {}))
    }

    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::InitializeResponse>, Status> {
        let req = request.into_inner();
        let mut members = BTreeMap::new();
        if req.members.is_empty() {
            members.insert(self.node.id, self.node.member.clone());
        }
        for m in &req.members {
            if members.insert(m.id, validate_member(m)?).is_some() {
                return Err(Status::invalid_argument(format!(
                    "member {} is listed twice",
                    m.id
                )));
            }
        }
        if !members.contains_key(&self.node.id) {
            return Err(Status::invalid_argument(format!(
                "the members must include this node ({})",
                self.node.id
            )));
        }
        let initialized = self
            .node
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        if initialized || self.node.identity.cluster_id().is_some() {
            let cluster_id = self.node.identity.cluster_id().unwrap_or_default();
            let current: BTreeSet<u64> = self.node.raft.voter_ids().collect();
            let requested: BTreeSet<u64> = members.keys().copied().collect();
            if initialized && current == requested {
                return Ok(Response::new(pb::InitializeResponse {
                    cluster_id,
                    already_initialized: true,
                }));
            }
            return Err(Status::failed_precondition(format!(
                "node {} already belongs to cluster {cluster_id} with voters {current:?}; refusing to initialize it with {requested:?}",
                self.node.id
            )));
        }
        let cluster_id = crate::identity::new_cluster_id();
        // The others vote in the first election only once stamped; this
        // node is stamped last, so that a retry after a member did not
        // answer starts over, under a new id the members take instead.
        for (id, member) in members.iter().filter(|(id, _)| **id != self.node.id) {
            self.join_member(*id, member, &cluster_id).await?;
        }
        self.node
            .identity
            .join(&cluster_id)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.node
            .raft
            .initialize(members)
            .await
            .map_err(|e| Status::failed_precondition(format!("initialize failed: {e}")))?;
        tracing::info!(%cluster_id, "cluster initialized");
        Ok(Response::new(pb::InitializeResponse {
            cluster_id,
            already_initialized: false,
        }))
    }

    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let req = request.into_inner();
        if !crate::identity::is_cluster_id(&req.cluster_id) {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a cluster id",
                req.cluster_id
            )));
        }
        if req.id != self.node.id {
            return Err(Status::failed_precondition(format!(
                "this node is node {}, not {}",
                self.node.id, req.id
            )));
        }
        let taking_part = self
            .node
            .raft
            .is_initialized()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let identity = &self.node.identity;
        let joined = match identity.cluster_id() {
            Some(ours) if ours == req.cluster_id => Ok(()),
            Some(ours) if taking_part => Err(Status::failed_precondition(format!(
                "node {} belongs to cluster {ours}",
                self.node.id
            ))),
            _ if taking_part => Err(Status::failed_precondition(format!(
                "node {} already takes part in a cluster",
                self.node.id
            ))),
            _ => identity
                .join_before_taking_part(&req.cluster_id)
                .map_err(|e| Status::internal(e.to_string())),
        };
        joined.map(|()| Response::new(pb::JoinResponse {}))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let wait = time_left(request.metadata());
        self.on_leader(
            request,
            |message| self.add_learner_here(message, wait),
            |mut leader, request| async move { leader.add_learner(request).await },
        )
        .await
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.on_leader(
            request,
            |message| self.change_membership_here(message),
            |mut leader, request| async move { leader.change_membership(request).await },
        )
        .await
    }

    async fn remove_learner(
        &self,
        request: Request<pb::RemoveLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.on_leader(
            request,
            |message| self.remove_learner_here(message),
            |mut leader, request| async move { leader.remove_learner(request).await },
        )
        .await
    }

    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.on_leader(
            request,
            |message| self.promote_here(message),
            |mut leader, request| async move { leader.promote(request).await },
        )
        .await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        self.on_leader(
            request,
            |message| self.remove_member_here(message),
            |mut leader, request| async move { leader.remove_member(request).await },
        )
        .await
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Result<Response<pb::TransferLeadershipResponse>, Status> {
        let wait = time_left(request.metadata());
        self.on_leader(
            request,
            |message| self.transfer_leadership_here(message, wait),
            |mut leader, request| async move { leader.transfer_leadership(request).await },
        )
        .await
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        let wait = time_left(request.metadata());
        let applied = self.node.raft.metrics().borrow_watched().last_applied;
        self.node
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let m = self
            .node
            .raft
            .wait(Some(wait))
            .metrics(
                |m| m.snapshot.as_ref().map(|s| s.index()) >= applied.as_ref().map(|a| a.index()),
                "snapshot built",
            )
            .await
            .map_err(|_| {
                Status::deadline_exceeded("the snapshot was not built within the deadline")
            })?;
        Ok(Response::new(pb::TriggerSnapshotResponse {
            last_index: m.snapshot.map_or(0, |s| s.index()),
        }))
    }

    type SaveSnapshotStream = BoxStream<'static, Result<pb::BackupChunk, Status>>;

    async fn reconfigure(
        &self,
        request: Request<pb::ReconfigureRequest>,
    ) -> Result<Response<pb::ReconfigureResponse>, Status> {
        let json = request.into_inner().shedding_json;
        let shedding: recipestore_settings::Shedding = serde_json::from_str(&json)
            .map_err(|e| Status::invalid_argument(format!("shedding settings: {e}")))?;
        // The same rules the node applies to its flags at start.
        recipestore_settings::NodeSettings {
            shedding: shedding.clone(),
            ..self.node.config.settings.clone()
        }
        .validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let changed = self.node.overload.reconfigure(&shedding);
        if changed {
            tracing::info!(shedding = %json, "shedding settings reloaded");
        }
        Ok(Response::new(pb::ReconfigureResponse { changed }))
    }

    async fn save_snapshot(
        &self,
        request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let wait = time_left(request.metadata());
        let started = Instant::now();
        let node = &self.node;
        let cluster_id = node.identity.cluster_id().ok_or_else(|| {
            Status::failed_precondition(format!(
                "node {} belongs to no cluster yet: there is nothing to back up",
                node.id
            ))
        })?;
        // Every write acknowledged before this call is at or below the read
        // index: the dump holds at least what this node applied up to it.
        let index = node.read_index(wait).await?;
        node.await_applied(index, wait.saturating_sub(started.elapsed()))
            .await?;
        // Dumped to a file without a name first, then sent: sled is held
        // still only for as long as the dump takes, not for as long as the
        // caller takes to receive it.
        let internal = |e: std::io::Error| Status::internal(format!("backup failed: {e}"));
        let file = tempfile::tempfile_in(&node.config.data_dir).map_err(internal)?;
        let (meta, end) = node
            .recipes
            .dump(file.try_clone().map_err(internal)?)
            .await
            .map_err(internal)?;
        let snapshot_bytes = file.metadata().map_err(internal)?.len();
        let header = BackupHeader::new(cluster_id, node.id, &meta, end, snapshot_bytes);
        tracing::info!(
            index = header.last_index,
            recipes = header.recipes,
            bytes = snapshot_bytes,
            "sending a backup"
        );
        let head = header.encode().map_err(internal)?;
        let (chunks, stream) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let total = head.len() as u64 + snapshot_bytes;
            let sent = send_backup(head, file, snapshot_bytes, &chunks);
            metrics::observe_backup(sent, total, started.elapsed());
        });
        Ok(Response::new(ReceiverStream::new(stream).boxed()))
    }
}

/// Bytes of a backup per message: well under gRPC's default limit of 4 MiB.
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

/// Sends `head` and then the `snapshot_bytes` of `snapshot` as a backup
/// stream, until done or the caller goes away. Answers whether it was all
/// handed to the stream.
fn send_backup(
    head: Vec<u8>,
    mut snapshot: std::fs::File,
    snapshot_bytes: u64,
    chunks: &tokio::sync::mpsc::Sender<Result<pb::BackupChunk, Status>>,
) -> bool {
    let first = pb::BackupChunk {
        total_bytes: head.len() as u64 + snapshot_bytes,
        data: head,
    };
    if chunks.blocking_send(Ok(first)).is_err() {
        return false;
    }
    if let Err(e) = snapshot.seek(SeekFrom::Start(0)) {
        let _ = chunks.blocking_send(Err(Status::internal(format!("backup failed: {e}"))));
        return false;
    }
    loop {
        let mut data = Vec::with_capacity(BACKUP_CHUNK_BYTES);
        let chunk = match (&mut snapshot)
            .take(BACKUP_CHUNK_BYTES as u64)
            .read_to_end(&mut data)
        {
            Ok(0) => return true,
            Ok(_) => Ok(pb::BackupChunk {
                data,
                total_bytes: 0,
            }),
            Err(e) => Err(Status::internal(format!("backup failed: {e}"))),
        };
        let failed = chunk.is_err();
        if chunks.blocking_send(chunk).is_err() || failed {
            return false;
        }
    }
}
