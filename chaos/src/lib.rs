//! Fault injection for RecipeStore: real node processes on loopback, a
//! workload of concurrent clients whose every operation is recorded, faults
//! (SIGKILL, SIGSTOP, membership changes, network partitions between
//! namespaces) while it runs, and after each run
//! a linearizability check of the history and a comparison of the nodes'
//! Raft logs on disk; and failover time beside etcd.

pub mod failover;
pub mod faults;
pub mod history;
pub mod linearizability;
pub mod local_reads;
pub mod logs;
pub mod network;
pub mod run;
pub mod workload;
