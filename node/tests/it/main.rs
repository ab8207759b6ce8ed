//! Integration tests: real node processes, real sockets, real disks.

mod bad_input;
mod cache;
mod cluster;
mod crash;
mod fencing;
mod forwarding;
mod membership;
mod overload;
mod recovery;
mod replication;
mod resharding;
mod sharding;
mod snapshot;
mod storage;
mod tls;
