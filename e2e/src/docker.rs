//! A RecipeStore cluster of containers on private Docker networks, driven
//! through the `docker` CLI.
//!
//! Each node joins two networks: `raft`, where peers reach it by its alias
//! `peer-<id>`, and `client`, where the test reaches it. Disconnecting a node
//! from `raft` partitions it from its peers while the test can still talk to
//! it; aliases are per network, so peers cannot route around the partition.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use anyhow::bail;

use recipestore_testkit::workspace_root;

pub const IMAGE: &str = "recipestore-node:e2e";

/// Runs `docker args...`; returns trimmed stdout or the error with stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("cannot run docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds the node image from the repository's Dockerfile, packaging the
/// debug binaries the test build produced. Creates the base image first
/// when it is missing (no registry here).
pub fn build_node_image() -> anyhow::Result<()> {
    let root = workspace_root();
    let status = Command::new("bash")
        .arg(root.join("scripts/base-image.sh"))
        .status()
        .context("cannot run scripts/base-image.sh")?;
    anyhow::ensure!(status.success(), "scripts/base-image.sh failed");
    let root = root.to_string_lossy().into_owned();
    docker(&[
        "build",
        "--quiet",
        "--target",
        "node",
        "--build-arg",
        "PROFILE=debug",
        "-t",
        IMAGE,
        &root,
    ])?;
    Ok(())
}

/// A cluster of node containers; everything it created is removed on drop.
pub struct DockerCluster {
    prefix: String,
    pub size: u64,
}

impl DockerCluster {
    /// Creates the networks, volumes and containers of `size` nodes and starts them.
    pub fn start(size: u64) -> anyhow::Result<Self> {
        let prefix = format!("rs-e2e-{}", std::process::id());
        let cluster = Self { prefix, size };
        docker(&["network", "create", &cluster.raft_network()])?;
        docker(&["network", "create", &cluster.client_network()])?;
        for id in 0..size {
            let name = cluster.container(id);
            let volume = format!("{name}-data");
            docker(&["volume", "create", &volume])?;
            let alias = format!("peer-{id}");
            let id_env = format!("RECIPESTORE_ID={id}");
            let advertise = format!("RECIPESTORE_ADVERTISE_ADDR={alias}");
            let mount = format!("{volume}:/var/lib/recipestore");
            docker(&[
                "create",
                "--name",
                &name,
                "--network",
                &cluster.raft_network(),
                "--network-alias",
                &alias,
                "-v",
                &mount,
                "-e",
                &id_env,
                "-e",
                &advertise,
                "-e",
                "RECIPESTORE_HEARTBEAT_MS=100",
                "-e",
                "RECIPESTORE_ELECTION_TIMEOUT_MIN_MS=600",
                "-e",
                "RECIPESTORE_ELECTION_TIMEOUT_MAX_MS=1200",
                // The test machine's CPU is busy with builds; this suite is
                // about failures, not shedding.
                "-e",
                "RECIPESTORE_SHED_UPLOAD_PRIORITY_CPU=100",
                "-e",
                "RECIPESTORE_SHED_DOWNLOAD_TIERS=",
                "-e",
                "RECIPESTORE_SHED_UPLOAD_TIERS=",
                IMAGE,
            ])?;
            docker(&["network", "connect", &cluster.client_network(), &name])?;
            docker(&["start", &name])?;
        }
        Ok(cluster)
    }

    pub fn container(&self, id: u64) -> String {
        format!("{}-{id}", self.prefix)
    }

    pub fn raft_network(&self) -> String {
        format!("{}-raft", self.prefix)
    }

    pub fn client_network(&self) -> String {
        format!("{}-client", self.prefix)
    }

    /// The node's IP address on the client network.
    pub fn client_ip(&self, id: u64) -> anyhow::Result<String> {
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.client_network()
        );
        let ip = docker(&["inspect", "-f", &format, &self.container(id)])?;
        anyhow::ensure!(!ip.is_empty(), "container {id} has no client address");
        Ok(ip)
    }

    pub fn client_endpoint(&self, id: u64) -> anyhow::Result<String> {
        Ok(format!("{}:7070", self.client_ip(id)?))
    }

    pub fn admin_endpoint(&self, id: u64) -> anyhow::Result<String> {
        Ok(format!("{}:7071", self.client_ip(id)?))
    }

    /// SIGKILL, as `docker kill` sends.
    pub fn kill(&self, id: u64) -> anyhow::Result<()> {
        docker(&["kill", &self.container(id)]).map(|_| ())
    }

    pub fn start_node(&self, id: u64) -> anyhow::Result<()> {
        docker(&["start", &self.container(id)]).map(|_| ())
    }

    /// Cuts the node off from its peers (it stays reachable for the test).
    pub fn partition(&self, id: u64) -> anyhow::Result<()> {
        docker(&[
            "network",
            "disconnect",
            &self.raft_network(),
            &self.container(id),
        ])
        .map(|_| ())
    }

    pub fn heal(&self, id: u64) -> anyhow::Result<()> {
        let alias = format!("peer-{id}");
        docker(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.raft_network(),
            &self.container(id),
        ])
        .map(|_| ())
    }

    /// `docker restart` of every node, with a grace period for SIGTERM.
    pub fn restart_all(&self) -> anyhow::Result<()> {
        let names: Vec<String> = (0..self.size).map(|id| self.container(id)).collect();
        let mut args = vec!["restart", "--time", "10"];
        args.extend(names.iter().map(String::as_str));
        docker(&args).map(|_| ())
    }

    pub fn logs(&self, id: u64) -> String {
        docker(&["logs", "--tail", "40", &self.container(id)]).unwrap_or_else(|e| e.to_string())
    }

    /// Waits for a node's Docker health: running, per `docker inspect`.
    pub fn is_running(&self, id: u64) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.container(id)])
            .is_ok_and(|s| s == "true")
    }
}

impl Drop for DockerCluster {
    fn drop(&mut self) {
        for id in 0..self.size {
            let name = self.container(id);
            let _ = docker(&["rm", "-f", "-v", &name]);
            let _ = docker(&["volume", "rm", "-f", &format!("{name}-data")]);
        }
        let _ = docker(&["network", "rm", &self.raft_network()]);
        let _ = docker(&["network", "rm", &self.client_network()]);
    }
}

/// How long to wait between polls of a cluster converging.
pub const POLL: Duration = Duration::from_millis(100);
