//! `recipectl`: the command-line client of RecipeStore.

mod admin;
mod bench;
mod local;
mod s3;
mod snapshot;

use std::io::Read;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::Subcommand;
use clap::ValueEnum;
use recipestore_client::Client;
use recipestore_client::RetryPolicy;
use recipestore_protocol::pb;
use tonic::transport::ClientTlsConfig;

#[derive(Debug, Parser)]
#[command(
    name = "recipectl",
    version,
    about = "Upload, download and administer RecipeStore recipes"
)]
struct Cli {
    /// Client endpoints (host:port), tried round-robin.
    #[arg(
        long,
        global = true,
        env = "RECIPESTORE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7070"
    )]
    endpoints: Vec<String>,

    /// Peer endpoints (host:port) for status, member and snapshot commands;
    /// one reachable node is enough, the others are discovered.
    #[arg(
        long,
        global = true,
        env = "RECIPESTORE_PEERS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7071"
    )]
    peers: Vec<String>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    output: Output,

    /// The CA (PEM) that signed the nodes' certificates: connect over TLS.
    #[arg(long, global = true, env = "RECIPESTORE_CACERT")]
    cacert: Option<PathBuf>,

    /// This client's certificate (PEM): for nodes that require client
    /// certificates, and for status, member and snapshot commands (the peer
    /// port takes `recipestore-admin` certificates).
    #[arg(long, global = true, env = "RECIPESTORE_CERT", requires_all = ["key", "cacert"])]
    cert: Option<PathBuf>,

    /// The private key of --cert (PEM).
    #[arg(long, global = true, env = "RECIPESTORE_KEY", requires = "cert")]
    key: Option<PathBuf>,

    /// Deadline of each call, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000)]
    timeout_ms: u64,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ConsistencyArg {
    Linearizable,
    Local,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Store a recipe from a file or standard input.
    Upload {
        name: String,
        /// Read the content from this file; `-` (the default) reads standard input.
        #[arg(long, short, default_value = "-")]
        file: String,
        /// Only upload if the recipe is at this version (0: only if absent).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Print a recipe's content.
    Download {
        name: String,
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ConsistencyArg,
        /// Wait until the serving node has applied this version.
        #[arg(long)]
        min_version: Option<u64>,
    },
    /// Remove a recipe.
    Delete {
        name: String,
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List recipe names.
    List {
        #[arg(long, default_value = "")]
        prefix: String,
        /// Page size; every page is fetched.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, value_enum, default_value = "linearizable")]
        consistency: ConsistencyArg,
    },
    /// Show every member: id, role, term, leader and log indices.
    Status,
    /// Show the shards: each one's placement epoch, the hash slots it
    /// owns, its leader and members, and any slot owned twice or not at all.
    Shards {
        /// Instead, show which slots would move, and between which shards,
        /// to take the store to this many shards (a plan: `local up
        /// --shards N` or the operator's `spec.shards` moves them).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
        plan: Option<u16>,
    },
    /// Change the cluster's membership.
    Member {
        #[command(subcommand)]
        command: admin::MemberCommand,
    },
    /// Snapshots, and backups: save, check, restore.
    Snapshot {
        #[command(subcommand)]
        command: snapshot::SnapshotCommand,
    },
    /// Run a local cluster of node processes on loopback.
    Local {
        #[command(subcommand)]
        command: local::LocalCommand,
    },
    /// Measure latency and throughput against a running cluster.
    Bench(Box<bench::BenchArgs>),
}

impl From<ConsistencyArg> for pb::Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => pb::Consistency::Linearizable,
            ConsistencyArg::Local => pb::Consistency::Local,
        }
    }
}

fn read_content(file: &str) -> anyhow::Result<Vec<u8>> {
    let mut content = Vec::new();
    if file == "-" {
        std::io::stdin().read_to_end(&mut content)?;
    } else {
        content = std::fs::read(PathBuf::from(file))
            .map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    }
    Ok(content)
}

/// Prints a gRPC error the way a person reads it, and exits non-zero. A
/// call refused in the TLS handshake says which usual mistake it was.
fn fail(status: tonic::Status) -> anyhow::Error {
    match recipestore_tls::explain(&status) {
        Some(hint) => anyhow::anyhow!("{:?}: {}: {hint}", status.code(), status.message()),
        None => anyhow::anyhow!("{:?}: {}", status.code(), status.message()),
    }
}

impl Cli {
    /// The TLS config the flags ask for, with the files checked.
    fn tls(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let Some(ca) = &self.cacert else {
            return Ok(None);
        };
        Ok(Some(match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => recipestore_tls::Pem::read(&recipestore_tls::PemFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })?
            .client_config(),
            _ => recipestore_tls::client_config(&recipestore_tls::Pem::read_ca(ca)?, None),
        }))
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RECIPESTORE_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let plaintext = cli.cacert.is_none();
    if let Err(e) = run(cli).await {
        eprintln!("recipectl: {e:#}");
        // A node on TLS answers a plaintext HTTP/2 preface with a TLS
        // alert, which the client reports as a protocol error or a
        // dropped connection, never naming TLS.
        let said = format!("{e:#}");
        if plaintext
            && (said.contains("h2 protocol error") || said.contains("operation was canceled"))
        {
            eprintln!("recipectl: if the node runs TLS, pass its CA with --cacert");
        }
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let timeout = Duration::from_millis(cli.timeout_ms);
    let tls = cli.tls()?;
    let on_peer_port = matches!(
        cli.command,
        Command::Status
            | Command::Shards { .. }
            | Command::Member { .. }
            | Command::Snapshot { .. }
    );
    anyhow::ensure!(
        !(on_peer_port && cli.cacert.is_some() && cli.cert.is_none()),
        "over TLS, status, member and snapshot commands call the peer port, which takes \
         only certificates of administrators: pass --cert and --key (a certificate for \
         recipestore-admin, e.g. client.crt from `recipectl local up --tls`)"
    );
    let client = || Client::with_tls(&cli.endpoints, RetryPolicy::default(), timeout, tls.clone());
    let dial = admin::Dial {
        timeout,
        tls: tls.clone(),
    };
    let json = cli.output == Output::Json;
    match cli.command {
        Command::Upload {
            name,
            file,
            if_version,
        } => {
            let reply = client()?
                .upload(&name, read_content(&file)?, if_version)
                .await
                .map_err(fail)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "version": reply.version, "leader": reply.leader})
                );
            } else {
                println!("uploaded {name} at version {}", reply.version);
            }
        }
        Command::Download {
            name,
            consistency,
            min_version,
        } => {
            let reply = client()?
                .download(&name, consistency.into(), min_version)
                .await
                .map_err(fail)?;
            if json {
                let content = String::from_utf8_lossy(&reply.content);
                println!(
                    "{}",
                    serde_json::json!({"name": name, "version": reply.version, "content": content})
                );
            } else {
                std::io::stdout().write_all(&reply.content)?;
            }
        }
        Command::Delete { name, if_version } => {
            let reply = client()?.delete(&name, if_version).await.map_err(fail)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"name": name, "version": reply.version})
                );
            } else {
                println!("deleted {name} at version {}", reply.version);
            }
        }
        Command::List {
            prefix,
            limit,
            consistency,
        } => {
            let client = client()?;
            let mut token = String::new();
            let mut rows = Vec::new();
            loop {
                let page = client
                    .list(&prefix, limit, &token, consistency.into())
                    .await
                    .map_err(fail)?;
                rows.extend(page.recipes);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "version": r.version, "size_bytes": r.size_bytes}))
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for r in rows {
                    println!("{}\t{}\t{}", r.name, r.version, r.size_bytes);
                }
            }
        }
        Command::Status => admin::status(&cli.peers, &dial, cli.output).await?,
        Command::Shards { plan } => admin::shards(&cli.peers, &dial, plan, cli.output).await?,
        Command::Member { command } => {
            admin::member(&cli.peers, &dial, command, cli.output).await?
        }
        Command::Snapshot { command } => {
            snapshot::run(&cli.peers, &dial, command, cli.output).await?
        }
        Command::Local { command } => local::run(command).await?,
        Command::Bench(mut args) => {
            args.tls = tls;
            bench::run(&cli.endpoints, timeout, args, cli.output).await?
        }
    }
    Ok(())
}
