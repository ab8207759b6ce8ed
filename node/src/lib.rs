//! The RecipeStore node: a member of a Raft-replicated, persistent
//! key-value store for recipes (consensus, storage, the gRPC services and
//! the HTTP endpoints). `recipestore-node` is a thin binary on top; the wire
//! protocol, the client library and `recipectl` are crates of their own.

pub mod backup;
pub mod cache;
pub mod codec;
pub mod config;
pub mod durable;
pub mod error;
pub mod http;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod name;
pub mod node;
pub mod overload;
pub mod placement;
pub mod raft;
pub mod read_index;
pub mod recovery;
pub mod routing;
pub mod server;
pub mod sharding;
pub mod tls;
