//! `--profile grid`: the seed-003 experiment. For every number of replicas
//! (voters) and nodes (voters plus learners serving reads) it starts a local
//! cluster, and for every client count measures uploads (PUT) then downloads
//! (GET), reporting mean, median and p90 latency of each.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use recipectl::local_cluster::LocalCluster;
use recipestore_client::admin::AdminClient;
use recipestore_client::admin::Timeouts;
use serde::Serialize;

use super::BenchArgs;
use super::Profile;
use super::TargetKind;
use super::load::Pacing;
use super::report::Summary;
use crate::Output;

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub replicas: u64,
    pub nodes: u64,
    pub clients: usize,
    pub put: Summary,
    pub put_per_sec: f64,
    pub put_failed: u64,
    pub get: Summary,
    pub get_per_sec: f64,
    pub get_failed: u64,
}

/// The (replicas, nodes) clusters to start: every nodes value at least as
/// large as the replicas, or just the replicas when no nodes are given.
pub fn layouts(replicas: &[u64], nodes: &[u64]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &r in replicas {
        if nodes.is_empty() {
            out.push((r, r));
        }
        for &n in nodes.iter().filter(|n| **n >= r) {
            out.push((r, n));
        }
    }
    out
}

fn node_binary(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    if let Some(b) = &args.node_binary {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe().context("cannot locate recipectl")?;
    let binary = exe.with_file_name("recipestore-node");
    anyhow::ensure!(
        binary.exists(),
        "{} not found; pass --node-binary",
        binary.display()
    );
    Ok(binary)
}

/// Starts `replicas` voters, then adds learners up to `nodes`.
async fn start_cluster(
    args: &BenchArgs,
    dir: &std::path::Path,
    base_port: u16,
    replicas: u64,
    nodes: u64,
) -> anyhow::Result<LocalCluster> {
    let mut cluster = LocalCluster::new(&node_binary(args)?, dir, base_port, replicas, &[])?;
    cluster.start_all()?;
    cluster.initialize(Duration::from_secs(30)).await?;
    cluster.wait_for_leader(Duration::from_secs(30)).await?;
    for _ in replicas..nodes {
        let node = cluster.push_node();
        node.start()?;
        let member = node.member();
        // A blocking add answers once the learner has caught up.
        let timeouts = Timeouts {
            request: Duration::from_secs(30),
            ..Timeouts::default()
        };
        AdminClient::new(&cluster.nodes[0].peer_addr(), timeouts)?
            .add_learner(member, true)
            .await
            .context("cannot add a learner")?;
    }
    Ok(cluster)
}

pub async fn run(args: &BenchArgs, output: Output) -> anyhow::Result<serde_json::Value> {
    let mut cells = Vec::new();
    for (i, (replicas, nodes)) in layouts(&args.grid_replicas, &args.grid_nodes)
        .into_iter()
        .enumerate()
    {
        anyhow::ensure!(replicas >= 1, "replicas must be at least 1");
        let dir = tempfile::tempdir()?;
        let base_port = args.base_port + 100 * i as u16;
        let mut cluster = start_cluster(args, dir.path(), base_port, replicas, nodes)
            .await
            .with_context(|| format!("cluster of {replicas} replicas, {nodes} nodes"))?;
        let endpoints = cluster.client_endpoints();
        let measured = async {
            let mut cells = Vec::new();
            for &clients in &args.grid_clients {
                let mut runs = Vec::new();
                for profile in [Profile::Write, Profile::Read] {
                    let target = super::connect(
                        args,
                        &endpoints,
                        TargetKind::Recipestore,
                        clients,
                        args.consistency(),
                        args.throttle_ratio,
                    )
                    .await?;
                    let (_, mix) = super::prepare(args, &target, profile, clients).await?;
                    let name = format!(
                        "{} r={replicas} n={nodes} c={clients}",
                        if profile == Profile::Write {
                            "PUT"
                        } else {
                            "GET"
                        }
                    );
                    let report = super::measure(
                        args,
                        &target,
                        &name,
                        Pacing::Closed,
                        mix,
                        clients,
                        args.consistency_name(),
                        output,
                    )
                    .await;
                    runs.push(report);
                }
                let (put, get) = (&runs[0].total, &runs[1].total);
                let cell = Cell {
                    replicas,
                    nodes,
                    clients,
                    put: put.latency,
                    put_per_sec: put.goodput,
                    put_failed: put.sent - put.good,
                    get: get.latency,
                    get_per_sec: get.goodput,
                    get_failed: get.sent - get.good,
                };
                if output == Output::Text {
                    eprintln!(
                        "replicas {replicas} nodes {nodes} clients {clients}: PUT p50 {:.2} ms, GET p50 {:.2} ms",
                        cell.put.p50_ms, cell.get.p50_ms
                    );
                }
                cells.push(cell);
            }
            anyhow::Ok(cells)
        }
        .await;
        cluster.stop_all(Duration::from_secs(10));
        cells.extend(measured?);
    }
    if output == Output::Text {
        print!("{}", table(&cells));
    }
    Ok(serde_json::json!({ "cells": cells }))
}

pub fn table(cells: &[Cell]) -> String {
    let mut out = format!(
        "{:>8} {:>5} {:>7} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>8}\n",
        "replicas",
        "nodes",
        "clients",
        "PUT mean",
        "median",
        "p90",
        "PUT/s",
        "GET mean",
        "median",
        "p90",
        "GET/s"
    );
    for c in cells {
        out.push_str(&format!(
            "{:>8} {:>5} {:>7} | {:>8.2} {:>8.2} {:>8.2} {:>8.0} | {:>8.2} {:>8.2} {:>8.2} {:>8.0}\n",
            c.replicas,
            c.nodes,
            c.clients,
            c.put.mean_ms,
            c.put.p50_ms,
            c.put.p90_ms,
            c.put_per_sec,
            c.get.mean_ms,
            c.get.p50_ms,
            c.get.p90_ms,
            c.get_per_sec
        ));
    }
    out.push_str("(latencies in ms)\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_pair_replicas_with_enough_nodes() {
        assert_eq!(layouts(&[1, 3], &[]), [(1, 1), (3, 3)]);
        assert_eq!(layouts(&[1, 3], &[3, 5]), [(1, 3), (1, 5), (3, 3), (3, 5)]);
        assert!(layouts(&[5], &[3]).is_empty());
    }
}
