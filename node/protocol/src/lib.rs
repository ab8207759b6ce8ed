//! RecipeStore's wire protocol: the code generated from
//! `proto/recipestore/v1/*.proto`, and the gRPC metadata keys that carry what
//! the messages do not. The node, the client library, `recipectl` and the
//! operator all speak through this crate, so a key is spelled in one place.

/// Code generated from `proto/recipestore/v1/*.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("recipestore.v1");
}

pub mod slots;

/// gRPC metadata keys.
pub mod metadata {
    /// On an error from a node that does not lead: the leader's client
    /// address, so a client can go there directly.
    pub const LEADER: &str = "x-recipestore-leader";
    /// On a version mismatch: the version the recipe was found at (0:
    /// absent), so a client can retry its conditional write.
    pub const CURRENT_VERSION: &str = "x-recipestore-current-version";
    /// On RESOURCE_EXHAUSTED: the node's suggested wait before a retry, in
    /// milliseconds.
    pub const RETRY_AFTER_MS: &str = "x-recipestore-retry-after-ms";
    /// On a call one member sends to the leader on behalf of its caller: the
    /// call is not forwarded again, so a leadership change cannot loop it.
    pub const FORWARDED: &str = "x-recipestore-forwarded";
    /// On UNAVAILABLE from a member asked for what only the leader does:
    /// it does not lead, and the call did not run.
    pub const NOT_LEADER: &str = "x-recipestore-not-leader";
    /// On a recipe call one shard passes to the shard that owns the
    /// recipe: the receiver serves it or refuses it as moved, and never
    /// passes it on, so a placement change cannot loop it.
    pub const SHARD_FORWARDED: &str = "x-recipestore-shard-forwarded";
    /// On UNAVAILABLE from a shard that does not own the recipe: the shard
    /// that does, as the refusing shard knows it; with [`MOVED_EPOCH`] and
    /// [`MOVED_TO`]. The call did not run.
    pub const MOVED_SHARD: &str = "x-recipestore-moved-shard";
    /// The epoch of the placement [`MOVED_SHARD`] comes from.
    pub const MOVED_EPOCH: &str = "x-recipestore-moved-epoch";
    /// The owning shard's members' client addresses, comma-separated.
    pub const MOVED_TO: &str = "x-recipestore-moved-to";
}
