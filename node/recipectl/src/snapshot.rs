//! `recipectl snapshot`: snapshots on the members, and backups (save one
//! from a running cluster, check one, restore one into a new local
//! cluster's data directories).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::IsTerminal;
use std::io::Write;
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;
use std::time::UNIX_EPOCH;

use anyhow::Context;
use clap::Subcommand;
use indicatif::ProgressBar;
use indicatif::ProgressDrawTarget;
use indicatif::ProgressStyle;
use recipectl::local_cluster::loopback_members;
use recipectl::local_cluster::node_data_dir;
use recipestore::backup::Backup;
use recipestore::backup::BackupHeader;
use recipestore::identity::Identity;
use recipestore::identity::is_cluster_id;
use recipestore::identity::new_cluster_id;
use recipestore::raft::Member;

use crate::Output;
use crate::admin::Dial;
use crate::admin::admin_client;
use crate::admin::call;
use crate::admin::cluster_status;
use crate::admin::described;
use crate::fail;
use crate::s3::{self, Location, S3Options};

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Build a snapshot on every reachable member now.
    Trigger,
    /// Save a backup of the cluster's state in FILE: every recipe and
    /// version, with every write acknowledged before the command started.
    Save {
        #[arg(required_unless_present = "into", conflicts_with = "into")]
        file: Option<PathBuf>,
        /// Save into this directory, or S3 prefix (`s3://BUCKET/PREFIX`),
        /// as `backup-<UTC time>.rsback`, instead of FILE (what scheduled
        /// backups do). An S3 backup is saved and checked in the temporary
        /// directory first.
        #[arg(long)]
        into: Option<String>,
        /// With --into: once saved, delete the oldest backups there beyond
        /// this many.
        #[arg(long, requires = "into", value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
        #[command(flatten)]
        s3: S3Options,
    },
    /// Check a backup from end to end and show what it holds.
    Status { file: PathBuf },
    /// Make the data directories of a new local cluster that starts with a
    /// backup's state; then `recipectl local up` starts it.
    Restore {
        file: PathBuf,
        /// Where `recipectl local up` will find the nodes' data; no node's
        /// directory may exist there yet.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Number of nodes of the new cluster.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// The base port the cluster will run on (`local up --base-port`).
        #[arg(long, default_value_t = 7070)]
        base_port: u16,
        /// The new cluster's id; a new one by default. Giving the backup's
        /// own lets clients and tools that know the old cluster go on.
        #[arg(long)]
        cluster_id: Option<String>,
    },
    /// Make one member's data directory of a new cluster from a backup, in
    /// place (a volume's mount point): what a RecipeStore's pods run before
    /// their node when the store is created from a backup. Does nothing for
    /// a directory that already holds a node's data, or for a node that is
    /// not one of the members (it joins later as a new one).
    RestoreMember {
        /// The backup: a file, or `s3://BUCKET/KEY` (downloaded into
        /// --data-dir first).
        file: String,
        #[arg(long)]
        data_dir: PathBuf,
        /// This node's id, from the ordinal at the end of its pod's name.
        #[arg(long, env = "POD_NAME")]
        pod_name: String,
        /// The new cluster's id, the same for every member.
        #[arg(long)]
        cluster_id: String,
        /// A voter of the new cluster, as `ID=PEER_ADDR,CLIENT_ADDR`; one
        /// flag per member.
        #[arg(long = "member", value_parser = parse_member, required = true)]
        members: Vec<(u64, Member)>,
        #[command(flatten)]
        s3: S3Options,
    },
}

/// `ID=PEER_ADDR,CLIENT_ADDR`.
fn parse_member(text: &str) -> Result<(u64, Member), String> {
    let shape = || format!("{text:?} is not ID=PEER_ADDR,CLIENT_ADDR");
    let (id, addrs) = text.split_once('=').ok_or_else(shape)?;
    let (peer, client) = addrs.split_once(',').ok_or_else(shape)?;
    let id = id.parse().map_err(|_| shape())?;
    if peer.is_empty() || client.is_empty() {
        return Err(shape());
    }
    Ok((
        id,
        Member {
            peer_addr: peer.to_owned(),
            client_addr: client.to_owned(),
        },
    ))
}

pub async fn run(
    peers: &[String],
    dial: &Dial,
    command: SnapshotCommand,
    output: Output,
) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Trigger => trigger(peers, dial, output).await,
        SnapshotCommand::Save {
            file,
            into,
            keep,
            s3,
        } => match (file, into) {
            (Some(file), _) => save(peers, dial, &file, output).await,
            (None, Some(into)) => save_into(peers, dial, &into, keep, &s3, output).await,
            (None, None) => unreachable!("clap requires FILE or --into"),
        },
        SnapshotCommand::Status { file } => {
            let backup = check(&file, output).await?;
            print_header(&backup.header, output);
            Ok(())
        }
        SnapshotCommand::Restore {
            file,
            data_dir,
            nodes,
            base_port,
            cluster_id,
        } => restore(&file, &data_dir, nodes, base_port, cluster_id, output).await,
        SnapshotCommand::RestoreMember {
            file,
            data_dir,
            pod_name,
            cluster_id,
            members,
            s3,
        } => {
            let id = recipestore::config::ordinal_of(&pod_name)?;
            let members: BTreeMap<u64, Member> = members.into_iter().collect();
            let member = NewMember {
                data_dir: &data_dir,
                id,
                members: &members,
                cluster_id: &cluster_id,
            };
            restore_member(&file, &member, &s3, output).await
        }
    }
}

async fn trigger(peers: &[String], dial: &Dial, output: Output) -> anyhow::Result<()> {
    for (key, status) in cluster_status(peers, dial).await? {
        let (shard, id) = (key.shard, key.id);
        // Shard 0's nodes keep the names of an unsharded store's.
        let node = match shard {
            0 => id.to_string(),
            _ => key.to_string(),
        };
        let result = match status {
            Ok(reached) => match admin_client(&reached.addr, dial) {
                Ok(c) => c
                    .trigger_snapshot()
                    .await
                    .map(|r| r.last_index)
                    .map_err(described),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e),
        };
        match (output, result) {
            (Output::Json, Ok(index)) => {
                let row = serde_json::json!({"shard": shard, "id": id, "snapshot_index": index});
                println!("{row}")
            }
            (Output::Json, Err(e)) => {
                let row = serde_json::json!({"shard": shard, "id": id, "error": e});
                println!("{row}")
            }
            (Output::Text, Ok(index)) => println!("node {node}: snapshot at index {index}"),
            (Output::Text, Err(e)) => println!("node {node}: failed: {e}"),
        }
    }
    Ok(())
}

/// A progress bar of bytes on a terminal, for text output; hidden otherwise.
fn progress(label: &str, output: Output) -> ProgressBar {
    if output == Output::Json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Streams a backup from the first peer that answers into `file`, through
/// `<file>.part`, which becomes `file` only once synced and checked.
async fn save(peers: &[String], dial: &Dial, file: &Path, output: Output) -> anyhow::Result<()> {
    let started = Instant::now();
    let (addr, mut stream) = call(peers, dial, |client| async move {
        let stream = client.save_snapshot().await?;
        Ok((client.addr().to_string(), stream))
    })
    .await?;
    let part = with_suffix(file, ".part");
    let mut out =
        File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let bar = progress("receiving", output);
    let received = async {
        loop {
            let chunk = tokio::time::timeout(dial.timeout, stream.message())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{addr} sent nothing for {} ms; the backup is incomplete",
                        dial.timeout.as_millis()
                    )
                })?
                .map_err(fail)?;
            let Some(chunk) = chunk else {
                break;
            };
            if chunk.total_bytes > 0 {
                bar.set_length(chunk.total_bytes);
            }
            out.write_all(&chunk.data)
                .with_context(|| format!("cannot write {}", part.display()))?;
            bar.inc(chunk.data.len() as u64);
        }
        // The file is renamed into place only once its bytes are durable.
        out.sync_all()
            .with_context(|| format!("cannot sync {}", part.display()))?;
        anyhow::Ok(())
    };
    let checked = match received.await {
        Ok(()) => {
            bar.finish_and_clear();
            check(&part, output).await
        }
        Err(e) => Err(e),
    };
    let backup = match checked {
        Ok(backup) => backup,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(e.context(format!("no backup was saved in {}", file.display())));
        }
    };
    recipestore::durable::rename(&part, file)
        .with_context(|| format!("cannot rename {} to {}", part.display(), file.display()))?;
    let header = &backup.header;
    match output {
        Output::Json => print_header(header, output),
        Output::Text => println!(
            "saved {}: {} recipes at index {} (term {}) of cluster {}, {} bytes from node {} in {:.1} s",
            file.display(),
            header.recipes,
            header.last_index,
            header.last_term,
            header.cluster_id,
            header.snapshot_bytes,
            header.node_id,
            started.elapsed().as_secs_f64()
        ),
    }
    Ok(())
}

const BACKUP_PREFIX: &str = "backup-";
const BACKUP_SUFFIX: &str = ".rsback";

/// `backup-<UTC time>.rsback`: names that sort in the order taken.
fn backup_name(at: jiff::Timestamp) -> String {
    format!(
        "{BACKUP_PREFIX}{}{BACKUP_SUFFIX}",
        at.strftime("%Y%m%dT%H%M%S%.3fZ")
    )
}

/// Of `names`, the backups (as [`backup_name`] makes them) older than the
/// newest `keep`, oldest first. Other names are never chosen.
fn beyond(names: impl Iterator<Item = String>, keep: u32) -> Vec<String> {
    let mut backups: Vec<String> = names
        .filter(|n| n.starts_with(BACKUP_PREFIX) && n.ends_with(BACKUP_SUFFIX))
        .collect();
    backups.sort();
    let excess = backups.len().saturating_sub(keep as usize);
    backups.truncate(excess);
    backups
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Reads the backup at `file` whole and checks it, showing progress.
async fn check(file: &Path, output: Output) -> anyhow::Result<Backup> {
    let len = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let bar = progress("checking", output);
    bar.set_length(len);
    let path = file.to_path_buf();
    let reading = bar.clone();
    let backup =
        tokio::task::spawn_blocking(move || Backup::open(&path, |read| reading.set_position(read)))
            .await?
            .with_context(|| format!("{} is not a usable backup", file.display()));
    bar.finish_and_clear();
    backup
}

fn print_header(header: &BackupHeader, output: Output) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string(header).expect("a header serializes")
        ),
        Output::Text => {
            println!("cluster:     {}", header.cluster_id);
            println!("taken from:  node {}", header.node_id);
            let taken_at = UNIX_EPOCH + Duration::from_millis(header.taken_at_unix_ms);
            println!("taken at:    {}", httpdate::fmt_http_date(taken_at));
            println!(
                "last entry:  index {}, term {}",
                header.last_index, header.last_term
            );
            println!("recipes:     {}", header.recipes);
            println!(
                "snapshot:    {} bytes, CRC-32 {:08x}",
                header.snapshot_bytes, header.snapshot_crc32
            );
        }
    }
}

/// The member a `restore-member` makes.
struct NewMember<'a> {
    data_dir: &'a Path,
    id: u64,
    members: &'a BTreeMap<u64, Member>,
    cluster_id: &'a str,
}

async fn restore_member(
    file: &str,
    member: &NewMember<'_>,
    s3: &S3Options,
    output: Output,
) -> anyhow::Result<()> {
    let NewMember {
        data_dir,
        id,
        members,
        cluster_id,
    } = *member;
    anyhow::ensure!(
        is_cluster_id(cluster_id),
        "--cluster-id {cluster_id:?} is not a cluster id (a UUID)"
    );
    if !members.contains_key(&id) {
        println!(
            "node {id} is not one of the restored members {:?}: it starts empty and joins as a new member",
            members.keys()
        );
        return Ok(());
    }
    if Identity::is_stamped(data_dir) {
        println!(
            "{} already holds node {id}'s data: nothing restored",
            data_dir.display()
        );
        return Ok(());
    }
    // An S3 backup is downloaded onto the volume it is restored into, and
    // removed after.
    let downloaded = match Location::parse(file) {
        None => None,
        Some(location) => {
            let location = location?;
            let store = s3::Store::new(s3, &location.bucket)?;
            let path = data_dir.join(".restore-download.rsback");
            store.download(&location.key, &path).await?;
            Some(path)
        }
    };
    let path = downloaded.clone().unwrap_or_else(|| PathBuf::from(file));
    let restored = async {
        let backup = check(&path, output).await?;
        let restored = backup
            .restore_in_place(data_dir, id, members, cluster_id)
            .with_context(|| format!("cannot restore node {id} into {}", data_dir.display()))?;
        anyhow::Ok((backup, restored))
    }
    .await;
    if let Some(downloaded) = downloaded {
        let _ = std::fs::remove_file(downloaded);
    }
    let (backup, restored) = restored?;
    let header = &backup.header;
    if restored {
        println!(
            "restored {} recipes (index {} of cluster {}) into {} as node {id} of cluster {cluster_id}",
            header.recipes,
            header.last_index,
            header.cluster_id,
            data_dir.display()
        );
    } else {
        println!(
            "{} already holds node {id}'s data: nothing restored",
            data_dir.display()
        );
    }
    Ok(())
}

/// `snapshot save --into`: a new, timestamped backup in a directory or
/// under an S3 prefix, then the oldest beyond `keep` deleted.
async fn save_into(
    peers: &[String],
    dial: &Dial,
    into: &str,
    keep: Option<u32>,
    s3: &S3Options,
    output: Output,
) -> anyhow::Result<()> {
    let name = backup_name(jiff::Timestamp::now());
    let Some(location) = Location::parse(into) else {
        let dir = Path::new(into);
        save(peers, dial, &dir.join(&name), output).await?;
        if let Some(keep) = keep {
            let names = std::fs::read_dir(dir)
                .with_context(|| format!("cannot list {}", dir.display()))?
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok());
            for old in beyond(names, keep) {
                let path = dir.join(&old);
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot delete {}", path.display()))?;
                say_deleted(&path.display().to_string(), output);
            }
        }
        return Ok(());
    };
    let location = location?;
    // Credentials and endpoint are checked before the cluster is asked.
    let store = s3::Store::new(s3, &location.bucket)?;
    let scratch = tempfile::tempdir().context("cannot make a temporary directory")?;
    let file = scratch.path().join(&name);
    save(peers, dial, &file, output).await?;
    let key = location.child(&name);
    store.upload(&file, &key).await?;
    if output == Output::Text {
        println!("uploaded to s3://{}/{key}", location.bucket);
    }
    if let Some(keep) = keep {
        let prefix = location.child(BACKUP_PREFIX);
        let keys = store.list(&prefix).await?;
        // Only keys directly under the prefix, as files in a directory.
        let parent = location.child("");
        let names = keys
            .iter()
            .filter_map(|k| k.strip_prefix(&parent))
            .map(str::to_owned);
        for old in beyond(names, keep) {
            let key = location.child(&old);
            store.delete(&key).await?;
            say_deleted(&format!("s3://{}/{key}", location.bucket), output);
        }
    }
    Ok(())
}

fn say_deleted(what: &str, output: Output) {
    if output == Output::Text {
        println!("deleted {what}");
    }
}

async fn restore(
    file: &Path,
    data_dir: &Path,
    nodes: u64,
    base_port: u16,
    cluster_id: Option<String>,
    output: Output,
) -> anyhow::Result<()> {
    let members = loopback_members(base_port, nodes)?;
    for member in &members {
        let dir = node_data_dir(data_dir, member.id);
        anyhow::ensure!(
            !dir.exists(),
            "{} already exists: a restore makes the data directories of a new cluster; \
             choose another --data-dir or remove the old cluster's",
            dir.display()
        );
    }
    let cluster_id = match cluster_id {
        Some(id) => {
            anyhow::ensure!(
                is_cluster_id(&id),
                "--cluster-id {id:?} is not a cluster id (a UUID such as `recipectl snapshot status` shows)"
            );
            id
        }
        None => new_cluster_id(),
    };
    let backup = check(file, output).await?;
    let members: BTreeMap<u64, Member> = members
        .into_iter()
        .map(|m| {
            (
                m.id,
                Member {
                    peer_addr: m.peer_addr,
                    client_addr: m.client_addr,
                },
            )
        })
        .collect();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let bar = progress("restoring", output);
    bar.set_length(nodes);
    for &id in members.keys() {
        let dir = node_data_dir(data_dir, id);
        backup
            .restore(&dir, id, &members, &cluster_id)
            .with_context(|| format!("cannot restore node {id} into {}", dir.display()))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let header = &backup.header;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "cluster_id": cluster_id,
                "nodes": nodes,
                "data_dir": data_dir,
                "recipes": header.recipes,
                "last_index": header.last_index,
            })
        ),
        Output::Text => {
            println!(
                "restored {} recipes (index {} of cluster {}) into {} as cluster {cluster_id} of {nodes} nodes",
                header.recipes,
                header.last_index,
                header.cluster_id,
                data_dir.display()
            );
            println!("start it with:");
            println!(
                "  recipectl local up --data-dir {} --nodes {nodes} --base-port {base_port}",
                data_dir.display()
            );
        }
    }
    Ok(())
}
