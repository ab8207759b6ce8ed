//! Reaching the shard that owns a recipe. Any node accepts any call: one
//! for a recipe in a slot its shard does not own goes, marked
//! [`metadata::SHARD_FORWARDED`] and with the caller's deadline, to the
//! client port of a member of the owning shard, which serves it like any
//! call (forwarding a write to its own leader). A marked call for a slot
//! the receiver does not own is refused as moved, with the owner as the
//! receiver knows it, and never passed on: a placement change cannot loop
//! a call between shards.

use std::time::Duration;
use std::time::Instant;

use recipestore_protocol::metadata;
use recipestore_protocol::pb::recipes_client::RecipesClient;
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
pub fn route(node: &Node, name: &str, metadata: &MetadataMap) -> Result<Option<Owner>, Status> {
    match Placement::route(node.recipes.placement().as_deref(), name) {
        Route::Here => Ok(None),
        Route::Elsewhere(owner) if is_shard_forwarded(metadata) => Err(moved(name, &owner)),
        Route::Elsewhere(owner) => Ok(Some(owner)),
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
