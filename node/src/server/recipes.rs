//! The client API `recipestore.v1.Recipes`: validation, overload admission,
//! consistency levels, forwarding of writes, and precise status codes.
//!
//! Validation happens before admission, so bad input never takes a queue
//! slot; everything else runs as a job in the upload or download queue.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use recipestore_protocol::metadata;
use recipestore_protocol::pb;
use recipestore_protocol::pb::Consistency;
use recipestore_protocol::slots::SLOTS;
use recipestore_protocol::slots::slot_of;
use tonic::Code;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::metadata::MetadataValue;

use super::caller_deadline;
use super::time_left;
use crate::error::NodeError;
use crate::metrics;
use crate::name;
use crate::node::Node;
use crate::overload::shed::Op;
use crate::placement::Placement;
use crate::placement::Route;
use crate::raft::Command;
use crate::raft::Outcome;
use crate::sharding;

/// Names returned per List page when the request does not say.
const DEFAULT_LIST_LIMIT: usize = 100;
/// Most names returned per List page.
const MAX_LIST_LIMIT: usize = 1000;

pub struct RecipesService {
    node: Arc<Node>,
}

impl RecipesService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Attaches the leader hint to an error so smart clients can redirect.
fn with_leader(node: &Node, mut status: Status) -> Status {
    if let Ok(value) = MetadataValue::try_from(node.leader_hint()) {
        status.metadata_mut().insert(metadata::LEADER, value);
    }
    status
}

fn consistency(value: i32) -> Result<Consistency, Status> {
    Consistency::try_from(value)
        .map_err(|_| Status::invalid_argument(format!("unknown consistency level {value}")))
}

/// Waits for the state a read at `consistency` must observe.
async fn prepare_read(
    node: &Node,
    consistency: Consistency,
    min_version: Option<u64>,
    wait: Duration,
) -> Result<(), NodeError> {
    let started = Instant::now();
    if let Some(version) = min_version {
        node.await_applied(version, wait).await?;
    }
    if consistency != Consistency::Local {
        let index = node
            .read_index(wait.saturating_sub(started.elapsed()))
            .await?;
        node.await_applied(index, wait.saturating_sub(started.elapsed()))
            .await?;
    }
    Ok(())
}

fn storage_failed(e: std::io::Error) -> NodeError {
    NodeError::Internal(format!("storage read failed: {e}"))
}

/// Times a call and records it under `op` with its status code.
async fn observed<T>(op: &str, call: impl Future<Output = Result<T, Status>>) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    let code = result.as_ref().map_or_else(|s| s.code(), |_| Code::Ok);
    metrics::observe_request(op, code, started.elapsed());
    result
}

/// The version a write's outcome gives the recipe; `None` when the write
/// did not run because the shard no longer serves its slot (it moved, or
/// is moving), so the caller routes it again.
fn outcome_status(outcome: Outcome, name: &str) -> Result<Option<u64>, Status> {
    match outcome {
        Outcome::Written { version } | Outcome::Deleted { version } => Ok(Some(version)),
        Outcome::VersionMismatch { expected, current } => {
            let mut status = Status::failed_precondition(match current {
                Some(current) => format!("recipe {name:?} is at version {current}, not {expected}"),
                None => {
                    format!("recipe {name:?} does not exist, so it is not at version {expected}")
                }
            });
            status.metadata_mut().insert(
                metadata::CURRENT_VERSION,
                MetadataValue::from(current.unwrap_or(0)),
            );
            Err(status)
        }
        Outcome::NotFound => Err(Status::not_found(format!("recipe {name:?} does not exist"))),
        Outcome::Moved { .. } | Outcome::Moving { .. } => Ok(None),
        Outcome::Applied | Outcome::Refused { .. } => {
            Err(Status::internal("write produced no recipe outcome"))
        }
    }
}

/// How many times a write is routed again after the shard it reached gave
/// its slot away: once per move, which each takes a new epoch.
const REROUTES: usize = 3;

/// Proposes `command` through the upload queue; returns the new version,
/// or `None` when the shard no longer serves the recipe's slot.
async fn write(
    node: &Arc<Node>,
    command: Command,
    metadata: &tonic::metadata::MetadataMap,
) -> Result<Option<u64>, Status> {
    let wait = time_left(metadata);
    let name = match &command {
        Command::Put { name, .. } | Command::Delete { name, .. } => name.clone(),
        _ => return Err(Status::internal("not a recipe write")),
    };
    let job_node = node.clone();
    let job = async move {
        let outcome = job_node
            .write(command, wait)
            .await
            .map_err(|e| with_leader(&job_node, e.into()))?;
        outcome_status(outcome, &name).map_err(NodeError::from)
    };
    node.overload
        .run(Op::Upload, caller_deadline(metadata), job)
        .await
        .map_err(Status::from)
}

#[tonic::async_trait]
impl pb::recipes_server::Recipes for RecipesService {
    async fn upload(
        &self,
        request: Request<pb::UploadRequest>,
    ) -> Result<Response<pb::UploadResponse>, Status> {
        observed("upload", async {
            let (metadata, _, req) = request.into_parts();
            name::validate(&req.name)?;
            name::validate_content(&req.content, self.node.config.max_content_bytes)?;
            let command = Command::Put {
                name: req.name.clone(),
                content: req.content.clone().into(),
                if_version: req.if_version,
            };
            for _ in 0..REROUTES {
                let wait = time_left(&metadata);
                if let Some(owner) = sharding::route(&self.node, &req.name, &metadata, wait).await?
                {
                    return sharding::pass_on(
                        &self.node,
                        "upload",
                        &owner.addrs,
                        req,
                        wait,
                        |mut c, r| async move { c.upload(r).await },
                    )
                    .await;
                }
                if let Some(version) = write(&self.node, command.clone(), &metadata).await? {
                    return Ok(Response::new(pb::UploadResponse {
                        version,
                        leader: self.node.leader_hint(),
                    }));
                }
            }
            Err(rerouted_too_often(&req.name))
        })
        .await
    }

    async fn download(
        &self,
        request: Request<pb::DownloadRequest>,
    ) -> Result<Response<pb::DownloadResponse>, Status> {
        observed("download", async {
            let (metadata, _, req) = request.into_parts();
            name::validate(&req.name)?;
            let consistency = consistency(req.consistency)?;
            let wait = time_left(&metadata);
            if let Some(owner) = sharding::route(&self.node, &req.name, &metadata, wait).await? {
                return sharding::pass_on(
                    &self.node,
                    "download",
                    &owner.addrs,
                    req,
                    wait,
                    |mut c, r| async move { c.download(r).await },
                )
                .await;
            }
            let node = self.node.clone();
            let job = async move {
                prepare_read(&node, consistency, req.min_version, wait)
                    .await
                    .map_err(|e| with_leader(&node, e.into()))?;
                // Refused as moved if, once it waited for the state it
                // must see, the shard no longer owns the recipe.
                let read =
                    |placement: Option<&Placement>| match Placement::route(placement, &req.name) {
                        Route::Elsewhere(owner) => Err(sharding::moved(&req.name, &owner)),
                        Route::Here | Route::Moving(_) => node
                            .recipes
                            .get(&req.name)
                            .map_err(|e| Status::from(storage_failed(e))),
                    };
                let recipe = sharding::read_placed(&node, Some(slot_of(&req.name)), wait, read)
                    .await?
                    .ok_or_else(|| {
                        Status::not_found(format!("recipe {:?} does not exist", req.name))
                    })?;
                Ok(pb::DownloadResponse {
                    content: recipe.content.to_vec(),
                    version: recipe.version,
                    leader: node.leader_hint(),
                })
            };
            let reply = self
                .node
                .overload
                .run(Op::Download, caller_deadline(&metadata), job)
                .await?;
            Ok(Response::new(reply))
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        observed("delete", async {
            let (metadata, _, req) = request.into_parts();
            name::validate(&req.name)?;
            let command = Command::Delete {
                name: req.name.clone(),
                if_version: req.if_version,
            };
            for _ in 0..REROUTES {
                let wait = time_left(&metadata);
                if let Some(owner) = sharding::route(&self.node, &req.name, &metadata, wait).await?
                {
                    return sharding::pass_on(
                        &self.node,
                        "delete",
                        &owner.addrs,
                        req,
                        wait,
                        |mut c, r| async move { c.delete(r).await },
                    )
                    .await;
                }
                if let Some(version) = write(&self.node, command.clone(), &metadata).await? {
                    return Ok(Response::new(pb::DeleteResponse {
                        version,
                        leader: self.node.leader_hint(),
                    }));
                }
            }
            Err(rerouted_too_often(&req.name))
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        observed("list", async {
            let (metadata, _, req) = request.into_parts();
            let limit = match req.limit as usize {
                0 => DEFAULT_LIST_LIMIT,
                n if n > MAX_LIST_LIMIT => {
                    return Err(Status::invalid_argument(format!(
                        "limit {n} is over the maximum of {MAX_LIST_LIMIT}"
                    )));
                }
                n => n,
            };
            if !req.page_token.is_empty() && !req.page_token.starts_with(&req.prefix) {
                return Err(Status::invalid_argument(
                    "page_token does not belong to this prefix",
                ));
            }
            let consistency = consistency(req.consistency)?;
            let wait = time_left(&metadata);
            let here = || {
                let node = self.node.clone();
                let job = list_here(node, req.clone(), limit, consistency, wait);
                self.node
                    .overload
                    .run(Op::Download, caller_deadline(&metadata), job)
            };
            // A page for another shard's listing: that shard assembles them.
            if sharding::is_shard_forwarded(&metadata) {
                return Ok(Response::new(here().await?));
            }
            // Each other shard's page from the same cursor: the names
            // after it, whichever shard holds them.
            let mut shard_req = req.clone();
            shard_req.limit = limit as u32;
            for attempt in 0..LIST_ATTEMPTS {
                // The shards as this node knows them now: a node that has
                // just joined learns the placement with its first read.
                let others: Vec<Vec<String>> = match self.node.recipes.placement() {
                    Some(placement) => placement
                        .other_shards()
                        .map(|(_, addrs)| addrs.to_vec())
                        .collect(),
                    None => Vec::new(),
                };
                let there = others.iter().map(|addrs| {
                    sharding::pass_on(
                        &self.node,
                        "list",
                        addrs,
                        shard_req.clone(),
                        wait,
                        |mut c, r| async move { c.list(r).await },
                    )
                });
                let (here, there) = tokio::join!(here(), futures::future::try_join_all(there));
                let mut pages = vec![here?];
                pages.extend(there?.into_iter().map(Response::into_inner));
                if covers_each_slot_once(&pages) {
                    return Ok(Response::new(merge_pages(
                        pages,
                        limit,
                        self.node.leader_hint(),
                    )));
                }
                // A slot moved between the reads of two shards, or this
                // node learnt of other shards meanwhile: list again.
                tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
            }
            Err(Status::unavailable(
                "slots kept moving between shards while the listing was assembled; retry it",
            ))
        })
        .await
    }
}

/// How many times a listing of several shards is assembled before it gives
/// up on slots that keep moving.
const LIST_ATTEMPTS: u32 = 5;

/// This shard's page of a listing: the recipes of the slots it serves (not
/// the copies it holds of slots moving to it), and, in a sharded store,
/// which slots those are. A slot it is handing over waits for its move to
/// end.
async fn list_here(
    node: Arc<Node>,
    req: pb::ListRequest,
    limit: usize,
    consistency: Consistency,
    wait: Duration,
) -> Result<pb::ListResponse, NodeError> {
    prepare_read(&node, consistency, None, wait)
        .await
        .map_err(|e| with_leader(&node, e.into()))?;
    let after = (!req.page_token.is_empty()).then_some(req.page_token.as_str());
    let read = |placement: Option<&Placement>| {
        let serves = |name: &str| placement.is_none_or(|p| p.owns(slot_of(name)));
        // One extra row tells whether another page follows.
        let rows = node
            .recipes
            .list_where(&req.prefix, after, limit + 1, serves)
            .map_err(|e| Status::from(storage_failed(e)))?;
        Ok((rows, placement.cloned()))
    };
    let (mut rows, placement) = sharding::read_placed(&node, None, wait, read).await?;
    let next_page_token = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| r.name.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    let mut slots = Vec::new();
    if let Some(placement) = &placement {
        slots = vec![0u8; usize::from(SLOTS) / 8];
        for slot in (0..SLOTS).filter(|&s| placement.owns(s)) {
            slots[usize::from(slot / 8)] |= 1 << (slot % 8);
        }
    }
    Ok(pb::ListResponse {
        recipes: rows
            .into_iter()
            .map(|r| pb::RecipeSummary {
                name: r.name,
                version: r.version,
                size_bytes: r.size_bytes,
            })
            .collect(),
        next_page_token,
        leader: node.leader_hint(),
        slots,
    })
}

/// Whether `pages`, one per shard, cover every slot exactly once. Pages
/// from nodes of a release that does not say which slots they cover are
/// taken as covering theirs.
fn covers_each_slot_once(pages: &[pb::ListResponse]) -> bool {
    let bitmaps = usize::from(SLOTS) / 8;
    if pages.iter().any(|p| p.slots.len() != bitmaps) {
        return true;
    }
    (0..bitmaps).all(|byte| {
        let mut seen = 0u8;
        for page in pages {
            if seen & page.slots[byte] != 0 {
                return false;
            }
            seen |= page.slots[byte];
        }
        seen == u8::MAX
    })
}

/// The refusal of a write whose slot kept moving while it was routed.
fn rerouted_too_often(name: &str) -> Status {
    Status::unavailable(format!(
        "recipe {name:?} moved between shards {REROUTES} times while its write was routed; \
         the write did not run, retry it"
    ))
}

/// One page of at most `limit` names from the same page of every shard:
/// the first `limit` names of them all, and a cursor after the last when
/// any shard has more.
fn merge_pages(pages: Vec<pb::ListResponse>, limit: usize, leader: String) -> pb::ListResponse {
    let mut more = pages.iter().any(|p| !p.next_page_token.is_empty());
    let mut recipes: Vec<pb::RecipeSummary> = pages.into_iter().flat_map(|p| p.recipes).collect();
    recipes.sort_by(|a, b| a.name.cmp(&b.name));
    if recipes.len() > limit {
        recipes.truncate(limit);
        more = true;
    }
    let next_page_token = match recipes.last() {
        Some(last) if more => last.name.clone(),
        _ => String::new(),
    };
    pb::ListResponse {
        recipes,
        next_page_token,
        leader,
        slots: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(names: &[&str], next: &str) -> pb::ListResponse {
        pb::ListResponse {
            recipes: names
                .iter()
                .map(|n| pb::RecipeSummary {
                    name: n.to_string(),
                    version: 1,
                    size_bytes: 1,
                })
                .collect(),
            next_page_token: next.into(),
            leader: String::new(),
            slots: Vec::new(),
        }
    }

    fn names(page: &pb::ListResponse) -> Vec<&str> {
        page.recipes.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn shards_pages_merge_in_name_order_and_resume_after_the_last_name() {
        // Two shards, three names per page.
        let merged = merge_pages(
            vec![page(&["a", "d", "e"], "e"), page(&["b", "c"], "")],
            3,
            String::new(),
        );
        assert_eq!(names(&merged), ["a", "b", "c"]);
        assert_eq!(merged.next_page_token, "c");
        // A shard with more, though the merged page is not full.
        let merged = merge_pages(vec![page(&["a"], "a"), page(&[], "")], 3, String::new());
        assert_eq!(
            (names(&merged), merged.next_page_token.as_str()),
            (vec!["a"], "a")
        );
        // The last page.
        let merged = merge_pages(vec![page(&["f"], ""), page(&["g"], "")], 3, String::new());
        assert_eq!(
            (names(&merged), merged.next_page_token.as_str()),
            (vec!["f", "g"], "")
        );
    }

    #[test]
    fn a_listing_is_whole_when_its_pages_cover_every_slot_once() {
        let covering = |slots: std::ops::Range<u16>| {
            let mut bitmap = vec![0u8; 128];
            for s in slots {
                bitmap[usize::from(s / 8)] |= 1 << (s % 8);
            }
            pb::ListResponse {
                slots: bitmap,
                ..page(&[], "")
            }
        };
        let whole = [covering(0..500), covering(500..1024)];
        assert!(covers_each_slot_once(&whole));
        // Slot 500 moved between the two reads: listed twice, or by neither.
        assert!(!covers_each_slot_once(&[
            covering(0..501),
            covering(500..1024)
        ]));
        assert!(!covers_each_slot_once(&[
            covering(0..500),
            covering(501..1024)
        ]));
        // A page of an older node says nothing: taken as whole.
        assert!(covers_each_slot_once(&[covering(0..500), page(&[], "")]));
    }
}
