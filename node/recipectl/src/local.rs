//! `recipectl local up`: a cluster of node processes on loopback, stopped
//! together on Ctrl-C or SIGTERM; run again, it restarts with its data.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use recipectl::local_cluster::LocalStore;
use recipestore_client::reshard::Pace;
use tokio::signal::unix::SignalKind;
use tokio::signal::unix::signal;

#[derive(Debug, Subcommand)]
pub enum LocalCommand {
    /// Start (or restart) the cluster and run until interrupted.
    Up {
        /// Number of nodes (of each shard).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Number of shards: each a cluster of `--nodes` nodes, a Raft
        /// group of its own, owning an even share of the hash slots. Shard
        /// k keeps its data in `<data-dir>/shard-k` (shard 0 of a store
        /// that started with one shard, in `<data-dir>`) and its nodes
        /// listen from base+10*nodes*k. Another count than the data
        /// directory holds moves slots between the shards, online, until
        /// this many hold even shares, then stops and removes the shards
        /// beyond it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
        shards: u16,
        /// Where each node keeps its data and log.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Node i listens on base+10i (client), base+10i+1 (peer), base+10i+2 (HTTP).
        #[arg(long, default_value_t = 7070)]
        base_port: u16,
        /// The recipestore-node binary; by default the one beside recipectl.
        #[arg(long)]
        node_binary: Option<PathBuf>,
        /// Run with TLS: a throwaway CA and certificates under
        /// `<data-dir>/tls/` (the peer port mutual TLS, the client port TLS),
        /// with `client.crt`/`client.key`, an identity allowed to administer.
        #[arg(long)]
        tls: bool,
        /// Most megabytes of recipes per second copied between shards while
        /// slots move, so that the copy leaves the nodes to their clients.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        move_rate_mb: u64,
    },
}

fn default_node_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate recipectl")?;
    let binary = exe.with_file_name("recipestore-node");
    anyhow::ensure!(
        binary.exists(),
        "{} not found; build it with `cargo build --release` or pass --node-binary",
        binary.display()
    );
    Ok(binary)
}

pub async fn run(command: LocalCommand) -> anyhow::Result<()> {
    let LocalCommand::Up {
        nodes,
        shards,
        data_dir,
        base_port,
        node_binary,
        tls,
        move_rate_mb,
    } = command;
    let binary = match node_binary {
        Some(b) => b,
        None => default_node_binary()?,
    };
    // All nodes share this machine: each sheds for its own CPU use, not for
    // its siblings' or the rest of the machine's (an explicit
    // RECIPESTORE_CPU_FALLBACK in the environment still wins).
    let fallback = std::env::var("RECIPESTORE_CPU_FALLBACK").unwrap_or_else(|_| "process".into());
    let args = ["--cpu-fallback", fallback.as_str()];
    let mut store = LocalStore::new(&binary, &data_dir, base_port, shards, nodes, &args)?;
    let client_files = if tls {
        Some(store.use_tls(&data_dir)?.client_files())
    } else {
        None
    };
    let mut terminate = signal(SignalKind::terminate())?;
    store.start_all()?;
    let started = async {
        let init = store.initialize(Duration::from_secs(30)).await?;
        let mut leaders = Vec::new();
        for shard in &store.shards {
            leaders.push(shard.wait_for_leader(Duration::from_secs(30)).await?);
        }
        anyhow::Ok((init, leaders))
    };
    let (init, leaders) = match started.await {
        Ok(v) => v,
        Err(e) => {
            store.stop_all(Duration::from_secs(5));
            return Err(e.context(format!(
                "the store did not start; see the logs in {}",
                data_dir.display()
            )));
        }
    };
    // A store that held data is brought to `shards` shards, and a
    // resharding a previous run left half done is finished.
    let held = store.held();
    if held > 0 && (held != shards || held > 1) {
        let pace = Pace {
            bytes_per_second: move_rate_mb << 20,
            ..Pace::default()
        };
        let started = std::time::Instant::now();
        let moved = store
            .reshard(shards, pace, |p| {
                if p.slots_total > 0 {
                    println!(
                        "moving slots: {}/{} moved, {} recipes ({} bytes) copied",
                        p.slots_moved, p.slots_total, p.recipes_copied, p.bytes_copied
                    );
                }
            })
            .await;
        let moved = match moved {
            Ok(moved) => moved,
            Err(e) => {
                store.stop_all(Duration::from_secs(5));
                return Err(e.context(format!(
                    "moving slots to {shards} shard(s) failed; run again to resume it (see the logs in {})",
                    data_dir.display()
                )));
            }
        };
        if moved.slots_moved > 0 {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "moved {} slots in {seconds:.1} s: {:.0} recipes/s, {:.1} MB/s copied",
                moved.slots_moved,
                moved.recipes_copied as f64 / seconds,
                moved.bytes_copied as f64 / seconds / 1e6
            );
        }
        store.retire_shards(shards, Duration::from_secs(10))?;
    }
    let endpoints = store.client_endpoints().join(",");
    let peers = store.peer_endpoints().join(",");
    std::fs::write(data_dir.join("endpoints"), format!("{endpoints}\n"))?;
    std::fs::write(data_dir.join("peers"), format!("{peers}\n"))?;
    let verb = if init[0].already_initialized {
        "restarted"
    } else {
        "created"
    };
    if shards == 1 {
        println!(
            "RecipeStore cluster {} {verb}: {nodes} nodes, leader is node {}",
            init[0].cluster_id, leaders[0]
        );
    } else {
        println!("RecipeStore store {verb}: {shards} shards of {nodes} nodes");
        for (k, ((shard, init), leader)) in store.shards.iter().zip(&init).zip(&leaders).enumerate()
        {
            println!(
                "  shard {k}: cluster {}, leader is node {leader}, data in {}",
                init.cluster_id,
                shard.data_root().display()
            );
        }
    }
    println!();
    println!("  client endpoints: {endpoints}");
    println!("  peer endpoints:   {peers}");
    println!(
        "  metrics:          {}",
        store
            .nodes()
            .map(|n| format!("http://{}/metrics", n.http_addr()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("  data and logs:    {}", data_dir.display());
    println!();
    println!("In another shell:");
    println!(
        "  export RECIPESTORE_ENDPOINTS=$(cat {}/endpoints) RECIPESTORE_PEERS=$(cat {}/peers)",
        data_dir.display(),
        data_dir.display()
    );
    if let Some(files) = &client_files {
        println!(
            "  export RECIPESTORE_CACERT={} RECIPESTORE_CERT={} RECIPESTORE_KEY={}",
            files.ca.display(),
            files.cert.display(),
            files.key.display()
        );
    }
    println!("  echo 'rice, eggs, soy sauce' | recipectl upload fried-rice");
    println!("  recipectl download fried-rice");
    println!("  recipectl status");
    if shards > 1 {
        println!("  recipectl shards");
    }
    println!();
    println!("Press Ctrl-C to stop the cluster.");

    let mut exited = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = exited.tick() => {
                for node in store.nodes() {
                    if let Some(status) = node.exited() {
                        eprintln!("node {} exited ({status}); see {}.log", node.id, node.data_dir.display());
                    }
                }
            }
        }
    }
    println!("stopping {} nodes", nodes * u64::from(shards));
    store.stop_all(Duration::from_secs(10));
    Ok(())
}
