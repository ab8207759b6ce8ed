//! RecipeStore: a Raft-replicated, persistent key-value store for recipes.
//!
//! The crate holds the node (consensus, storage, gRPC services, HTTP
//! endpoints), the client library used by `recipectl`, and the shared
//! configuration. `recipestore-node` and `recipectl` are thin binaries on top.

pub mod cache;
pub mod client;
pub mod codec;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod local_cluster;
pub mod metrics;
pub mod name;
pub mod node;
pub mod overload;
pub mod raft;
pub mod server;
pub mod throttle;

/// Code generated from `proto/recipestore/v1/*.proto`.
pub mod pb {
    tonic::include_proto!("recipestore.v1");
}
