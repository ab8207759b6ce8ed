//! `recipectl`'s library part: [`local_cluster`], the loopback cluster of
//! node processes that `recipectl local up` runs and the integration tests,
//! the fault suite and the benchmarks drive.

pub mod local_cluster;
pub mod local_tls;
