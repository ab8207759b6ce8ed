//! Failover time, measured the same way on RecipeStore and on etcd: SIGKILL
//! the leader of a 3-member cluster on loopback, then write through the two
//! survivors as fast as they answer; the failover time is from the kill to
//! the first acknowledged write. The killed member is restarted and caught
//! up before the next repetition.

use std::path::Path;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use rand::Rng;
use recipectl::local_cluster::LocalCluster;
use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use serde::Serialize;

use crate::run::free_base_port;

/// Deadline of each probing write: short, so a write stuck on a dead
/// leader does not hide the moment a new one takes over.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// One system's failover times over the repetitions, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Failovers {
    pub system: &'static str,
    pub millis: Vec<u64>,
}

impl Failovers {
    pub fn median(&self) -> u64 {
        let mut sorted = self.millis.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or(0)
    }
}

/// Writes until one succeeds; returns the time since `killed`.
async fn first_write<F, Fut>(killed: Instant, mut write: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    while killed.elapsed() < Duration::from_secs(60) {
        if write().await {
            return Ok(killed.elapsed());
        }
    }
    anyhow::bail!("no write succeeded within 60 s of the kill")
}

/// RecipeStore: `reps` leader kills on one cluster with default settings.
pub async fn recipestore(binary: &Path, dir: &Path, reps: usize) -> anyhow::Result<Failovers> {
    let base = free_base_port(&mut rand::rng(), 3);
    let mut cluster = LocalCluster::new(binary, dir, base, 3, &["--shed-enabled=false"])?;
    cluster.start_all()?;
    cluster.initialize(Duration::from_secs(30)).await?;
    let policy = RetryPolicy {
        max_attempts: 1,
        throttle_ratio: None,
        ..RetryPolicy::default()
    };
    let mut millis = Vec::new();
    for rep in 0..reps {
        let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
        let survivors: Vec<String> = cluster
            .nodes
            .iter()
            .filter(|n| n.id != leader)
            .map(|n| n.client_addr())
            .collect();
        let client = Client::with_policy(&survivors, policy.clone(), PROBE_TIMEOUT)?;
        cluster.node(leader).kill();
        let killed = Instant::now();
        let took = first_write(killed, || async {
            client
                .upload(&format!("failover-{rep}"), b"x".to_vec(), None)
                .await
                .is_ok()
        })
        .await?;
        millis.push(took.as_millis() as u64);
        cluster.node(leader).start()?;
        await_caught_up(&cluster, Duration::from_secs(30)).await?;
    }
    cluster.stop_all(Duration::from_secs(10));
    Ok(Failovers {
        system: "recipestore",
        millis,
    })
}

/// Polls until every node has applied what the leader committed.
async fn await_caught_up(cluster: &LocalCluster, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let mut statuses = Vec::new();
        for node in &cluster.nodes {
            if let Ok(status) = node.status().await {
                statuses.push(status);
            }
        }
        let committed = statuses
            .iter()
            .find(|s| s.leader_id == Some(s.id))
            .map(|s| s.committed_index);
        if statuses.len() == cluster.nodes.len()
            && committed.is_some_and(|c| statuses.iter().all(|s| s.applied_index >= c))
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "the cluster did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An etcd member process.
struct EtcdMember {
    command: Vec<String>,
    client_url: String,
    child: Option<Child>,
}

impl EtcdMember {
    fn start(&mut self) -> anyhow::Result<()> {
        self.child = Some(
            Command::new("etcd")
                .args(&self.command)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| anyhow::anyhow!("cannot start etcd (install etcd-server): {e}"))?,
        );
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// etcd: `reps` leader kills on one 3-member cluster with etcd's defaults
/// (heartbeat 100 ms, election timeout 1000 ms).
pub async fn etcd(dir: &Path, reps: usize) -> anyhow::Result<Failovers> {
    let base = rand::rng().random_range(240..300u16) * 100;
    let peers: Vec<String> = (0..3)
        .map(|i| format!("etcd-{i}=http://127.0.0.1:{}", base + 10 * i + 1))
        .collect();
    let mut members: Vec<EtcdMember> = (0..3u16)
        .map(|i| {
            let client_url = format!("http://127.0.0.1:{}", base + 10 * i);
            let peer_url = format!("http://127.0.0.1:{}", base + 10 * i + 1);
            let command = [
                "--name",
                &format!("etcd-{i}"),
                "--data-dir",
                &dir.join(format!("etcd-{i}")).to_string_lossy(),
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
                "--initial-cluster",
                &peers.join(","),
                "--initial-cluster-state",
                "new",
            ]
            .map(str::to_owned)
            .to_vec();
            EtcdMember {
                command,
                client_url,
                child: None,
            }
        })
        .collect();
    for member in &mut members {
        member.start()?;
    }
    let mut millis = Vec::new();
    for rep in 0..reps {
        let leader = etcd_leader(&members, Duration::from_secs(30)).await?;
        let survivors: Vec<String> = members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, m)| m.client_url.clone())
            .collect();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(PROBE_TIMEOUT)
            .with_timeout(PROBE_TIMEOUT);
        let client = etcd_client::Client::connect(&survivors, Some(options)).await?;
        members[leader].kill();
        let killed = Instant::now();
        let key = format!("failover-{rep}");
        let took = first_write(killed, || {
            let mut kv = client.kv_client();
            let key = key.clone();
            async move { kv.put(key, "x", None).await.is_ok() }
        })
        .await?;
        millis.push(took.as_millis() as u64);
        members[leader].start()?;
        // Healthy again: a leader known to every member.
        etcd_leader(&members, Duration::from_secs(30)).await?;
    }
    Ok(Failovers {
        system: "etcd",
        millis,
    })
}

/// The index of the member every member names as leader.
async fn etcd_leader(members: &[EtcdMember], wait: Duration) -> anyhow::Result<usize> {
    let deadline = Instant::now() + wait;
    loop {
        let mut ids = Vec::new();
        let mut leaders = Vec::new();
        for member in members {
            let options = etcd_client::ConnectOptions::new()
                .with_connect_timeout(Duration::from_millis(500))
                .with_timeout(Duration::from_millis(500));
            if let Ok(mut client) =
                etcd_client::Client::connect([member.client_url.as_str()], Some(options)).await
                && let Ok(status) = client.status().await
            {
                ids.push(status.header().map_or(0, |h| h.member_id()));
                leaders.push(status.leader());
            }
        }
        if ids.len() == members.len()
            && leaders.iter().all(|l| *l == leaders[0])
            && let Some(index) = ids.iter().position(|id| *id == leaders[0])
        {
            return Ok(index);
        }
        anyhow::ensure!(Instant::now() < deadline, "etcd has no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
