//! Reaching the shard that owns a recipe. Any node accepts any call: one
//! for a recipe in a slot its shard does not own goes, marked
//! [`metadata::SHARD_FORWARDED`] and with the caller's deadline, to the
//! client port of a member of the owning shard, which serves it like any
//! call (forwarding a write to its own leader). A marked call for a slot
//! the receiver does not own is refused as moved, with the owner as the
//! receiver knows it, and never passed on: a placement change cannot loop
//! a call between shards.

use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use recipestore_protocol::metadata;
use recipestore_protocol::pb::recipes_client::RecipesClient;
use recipestore_protocol::slots::slot_of;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::metrics;
use crate::node::Node;
use crate::placement::Owner;
use crate::placement::Placement;
use crate::placement::Route;
use crate::raft::network::MAX_PEER_MESSAGE_BYTES;
use crate::routing;

/// Whether another shard passed this call on, so it must not go further.
pub fn is_shard_forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(metadata::SHARD_FORWARDED)
}

/// The refusal of a call for a recipe another shard owns: UNAVAILABLE (it
/// did not run, a retry elsewhere is safe), marked with the owner.
pub fn moved(name: &str, owner: &Owner) -> Status {
    metrics::shard_moved();
    let mut status = Status::unavailable(format!(
        "recipe {name:?} is in slot {}, which shard {} owns (placement epoch {})",
        owner.slot, owner.shard, owner.epoch
    ));
    let metadata = status.metadata_mut();
    metadata.insert(metadata::MOVED_SHARD, MetadataValue::from(owner.shard));
    metadata.insert(metadata::MOVED_EPOCH, MetadataValue::from(owner.epoch));
    if let Ok(addrs) = MetadataValue::try_from(owner.addrs.join(",")) {
        metadata.insert(metadata::MOVED_TO, addrs);
    }
    status
}

/// Where the call for `name` is served: here (`None`), or the owning
/// shard's, to pass it to; refused as moved when it was passed on already.
/// A call for a slot on its way to another shard waits, within `wait`, for
/// the move to end.
pub async fn route(
    node: &Node,
    name: &str,
    metadata: &MetadataMap,
    wait: Duration,
) -> Result<Option<Owner>, Status> {
    match settled_route(node, name, wait).await? {
        Route::Here | Route::Moving(_) => Ok(None),
        Route::Elsewhere(owner) if is_shard_forwarded(metadata) => Err(moved(name, &owner)),
        Route::Elsewhere(owner) => Ok(Some(owner)),
    }
}

/// Where `name` is served once its slot, if moving, has moved (or stayed),
/// within `wait`: never [`Route::Moving`].
pub async fn settled_route(node: &Node, name: &str, wait: Duration) -> Result<Route, Status> {
    let settled = settled_placement(node, Some(slot_of(name)), wait).await?;
    Ok(Placement::route(settled.as_deref(), name))
}

/// The applied placement once it hands over `slot` (any slot: `None`) no
/// more, waiting within `wait`: while a slot moves, its source no longer
/// serves it and its destination may not yet, so a call for it waits for
/// one of them rather than fail.
pub async fn settled_placement(
    node: &Node,
    slot: Option<u16>,
    wait: Duration,
) -> Result<Option<Arc<Placement>>, Status> {
    let moving = |p: &Option<Arc<Placement>>| {
        p.as_ref().is_some_and(|p| match slot {
            Some(slot) => p.released.contains_key(&slot),
            None => !p.released.is_empty(),
        })
    };
    let mut changes = node.recipes.placement_changes();
    let now = changes.borrow_and_update().clone();
    if !moving(&now) {
        return Ok(now);
    }
    metrics::shard_waited_for_move();
    match tokio::time::timeout(wait, changes.wait_for(|p| !moving(p))).await {
        Ok(Ok(placement)) => Ok(placement.clone()),
        Ok(Err(_)) => Err(Status::unavailable("the node is stopping")),
        Err(_) => Err(Status::unavailable(format!(
            "{} moving between shards and the move did not end within the deadline; \
                 the call did not run, retry it",
            match slot {
                Some(slot) => format!("slot {slot} is"),
                None => "slots are".to_owned(),
            }
        ))),
    }
}

/// Runs `call` (a client call `op`) on a member of the shard at `addrs`, marked as passed on by
/// a shard, within `wait`: on the first member reached, or the next when a
/// member cannot be connected to (the call did not run there).
pub async fn pass_on<Req, Resp, Fut>(
    node: &Node,
    op: &str,
    addrs: &[String],
    message: Req,
    wait: Duration,
    call: impl Fn(RecipesClient<Channel>, Request<Req>) -> Fut,
) -> Result<Response<Resp>, Status>
where
    Req: Clone,
    Fut: Future<Output = Result<Response<Resp>, Status>>,
{
    metrics::shard_passed_on(op);
    let deadline = Instant::now() + wait;
    let mut last = Status::unavailable("the shard has no client address");
    // Start at a different member per node, so that passed-on calls spread.
    let start = node.id as usize;
    for i in 0..addrs.len() {
        let addr = &addrs[(start + i) % addrs.len()];
        let channel = node.peer_channel(addr).map_err(Status::from)?;
        let client = RecipesClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let request = routing::marked(message.clone(), metadata::SHARD_FORWARDED, deadline);
        match call(client, request).await {
            Err(status) if routing::did_not_run(&status) && Instant::now() < deadline => {
                last = status;
            }
            result => return result,
        }
    }
    Err(last)
}

/// Runs `read` on this node's applied state with the placement it was
/// read under: the placement once `slot` (any slot: `None`) is not moving,
/// and unchanged until `read` returned, or `read` runs again. A move step
/// changes the placement before the data it changes (the copies a cede
/// drops) is visible, so a read that raced one sees another placement
/// afterwards; other writes to a slot the placement gives this shard are
/// its own to serve.
pub async fn read_placed<T>(
    node: &Node,
    slot: Option<u16>,
    wait: Duration,
    read: impl Fn(Option<&Placement>) -> Result<T, Status>,
) -> Result<T, Status> {
    loop {
        let before = settled_placement(node, slot, wait).await?;
        let value = read(before.as_deref())?;
        let after = node.recipes.placement();
        let unchanged = match (&before, &after) {
            (None, None) => true,
            (Some(b), Some(a)) => Arc::ptr_eq(b, a),
            _ => false,
        };
        if unchanged {
            return Ok(value);
        }
    }
}
