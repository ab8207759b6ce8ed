//! The end-to-end suites: the chart, the dashboards against a real
//! Prometheus, the container image, and a real Kubernetes cluster.

mod chart;
mod dashboards;
mod docker;
mod kube;
mod prometheus;

/// Held by each suite that runs a cluster: the docker and dashboard suites
/// each load both CPUs and time what they see, so they run one at a time
/// (the chart suite runs beside them).
pub static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
