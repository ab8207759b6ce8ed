//! `recipectl bench`: an open-loop (or closed-loop) load generator with the
//! seed workload, fixed-size write/read workloads, etcd as a second target,
//! an overload sweep and the replicas x clients grid; tables, JSON and PNG
//! plots.

mod compare;
mod etcd;
mod grid;
mod load;
mod plot;
mod report;
mod sweep;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use clap::ValueEnum;
use rand::SeedableRng;
use rand::rngs::StdRng;
use recipestore_client::RetryPolicy;
use recipestore_protocol::pb::Consistency;
use serde::Serialize;

use self::load::Pacing;
use self::load::Run;
use self::load::Target;
use self::report::KindReport;
use self::report::RunReport;
use self::workload::Mix;
use self::workload::Op;
use self::workload::OpKind;
use self::workload::Schedule;
use crate::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// The seed workload: 10 uploads per client, then ~99.5 % downloads and
    /// ~0.5 % uploads with request spikes around 15, 25, 45 and 50 s.
    Seed,
    /// Uploads of fixed-size values over the key space.
    Write,
    /// Downloads of keys uploaded first.
    Read,
    /// write and read on RecipeStore (--endpoints) and etcd
    /// (--etcd-endpoints) in one run, with the ratios.
    Compare,
    /// Overload sweep: capacity on the seed mix, then 0.5x..3x of it offered.
    Sweep,
    /// The replicas x nodes x clients grid on local clusters it starts.
    Grid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    Recipestore,
    Etcd,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to run.
    #[arg(long, visible_alias = "workload", value_enum, default_value = "write")]
    profile: Profile,
    /// The system under test (etcd: `write` and `read` only; endpoints from --endpoints).
    #[arg(long, value_enum, default_value = "recipestore")]
    target: TargetKind,
    /// Concurrent clients (closed loop: requests in flight; open loop: the
    /// clients requests are spread over).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of measured load (after any setup).
    #[arg(long, visible_alias = "duration-secs", default_value_t = 10.0)]
    duration: f64,
    /// Offered requests per second (open loop; the base rate for `seed`).
    /// 0 runs closed loop: each client waits for its reply.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Size of each `write` value, in bytes.
    #[arg(long, default_value_t = 1024)]
    value_size: usize,
    /// Distinct keys of `write` and `read`.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Consistency of downloads (etcd: linearizable or serializable).
    #[arg(long, value_enum, default_value = "linearizable")]
    consistency: crate::ConsistencyArg,
    /// A request is good only if it succeeds within this many milliseconds
    /// of its scheduled send time.
    #[arg(long, default_value_t = 1000)]
    deadline_ms: u64,
    /// Retries of a shed or unavailable request (0 makes every shed visible).
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Client-side adaptive throttling: requests sent to a node per request
    /// it accepts before a client refuses some itself (0 turns it off).
    #[arg(long, default_value_t = recipestore_client::DEFAULT_THROTTLE_RATIO)]
    throttle_ratio: f64,
    /// Client connections (at most one per client; default: min(clients, 64)).
    #[arg(long)]
    connections: Option<usize>,
    /// Open loop: requests in flight beyond this are counted as dropped.
    #[arg(long, default_value_t = 20_000)]
    max_in_flight: usize,
    /// Seed of the request generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write a PNG plot of the run here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Also write the JSON report here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Never draw the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// TLS towards RecipeStore, from recipectl's --cacert, --cert and --key.
    #[arg(skip)]
    pub tls: Option<tonic::transport::ClientTlsConfig>,

    /// seed: recipes each client uploads first.
    #[arg(long, default_value_t = 10)]
    recipes_per_client: usize,
    /// seed: fraction of uploads after the setup.
    #[arg(long, default_value_t = 0.005)]
    upload_fraction: f64,
    /// seed: centres of the request spikes, in seconds.
    #[arg(long, value_delimiter = ',', default_value = "15,25,45,50")]
    spikes: Vec<f64>,
    /// seed: length of each spike, in seconds.
    #[arg(long, default_value_t = 2.0)]
    spike_secs: f64,
    /// seed: how many times the base rate a spike offers.
    #[arg(long, default_value_t = 3.5)]
    spike_factor: f64,

    /// compare: etcd client endpoints.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    etcd_endpoints: Vec<String>,

    /// sweep: offered load as multiples of the measured capacity.
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5,2,2.5,3")]
    factors: Vec<f64>,
    /// sweep: use this capacity (good requests/s) instead of measuring it.
    #[arg(long)]
    capacity: Option<f64>,
    /// sweep: closed-loop clients of the capacity measurement.
    #[arg(long, default_value_t = 64)]
    capacity_clients: usize,
    /// sweep: name of the cluster at --endpoints.
    #[arg(long, default_value = "shedding on")]
    label: String,
    /// sweep: a second cluster given the same offered loads (the control).
    #[arg(long, value_delimiter = ',')]
    baseline_endpoints: Vec<String>,
    /// sweep: name of the second cluster.
    #[arg(long, default_value = "shedding off")]
    baseline_label: String,
    /// sweep: --throttle-ratio of the second cluster's clients.
    #[arg(long, default_value_t = recipestore_client::DEFAULT_THROTTLE_RATIO)]
    baseline_throttle_ratio: f64,

    /// grid: voters of each cluster.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    grid_replicas: Vec<u64>,
    /// grid: total nodes of each cluster (extra nodes join as learners and
    /// serve local reads); default: the replicas.
    #[arg(long, value_delimiter = ',')]
    grid_nodes: Vec<u64>,
    /// grid: client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    grid_clients: Vec<usize>,
    /// grid: first port of the clusters it starts.
    #[arg(long, default_value_t = 27_000)]
    base_port: u16,
    /// grid: the recipestore-node binary; by default the one beside recipectl.
    #[arg(long)]
    node_binary: Option<PathBuf>,
}

impl BenchArgs {
    fn consistency(&self) -> Consistency {
        self.consistency.into()
    }

    fn consistency_name(&self) -> &'static str {
        match (self.target, self.consistency) {
            (_, crate::ConsistencyArg::Linearizable) => "linearizable",
            (TargetKind::Etcd, crate::ConsistencyArg::Local) => "serializable",
            (TargetKind::Recipestore, crate::ConsistencyArg::Local) => "local",
        }
    }

    /// The client policy of a run whose clients throttle at `ratio`.
    fn policy(&self, ratio: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retries + 1,
            throttle_ratio: (ratio > 0.0).then_some(ratio),
            ..RetryPolicy::default()
        }
    }

    fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    fn connections(&self, clients: usize) -> usize {
        self.connections
            .unwrap_or(clients.min(64))
            .clamp(1, clients)
    }

    fn progress(&self, output: Output) -> bool {
        !self.no_progress && output == Output::Text
    }

    fn schedule(&self) -> Schedule {
        Schedule::seed(self.rate, &self.spikes, self.spike_secs, self.spike_factor)
    }
}

/// A single run's JSON: its setup (uploads before measuring) and the run.
#[derive(Debug, Serialize)]
struct SingleReport {
    setup: Option<KindReport>,
    run: RunReport,
}

pub async fn run(
    endpoints: &[String],
    _timeout: Duration,
    args: Box<BenchArgs>,
    output: Output,
) -> anyhow::Result<()> {
    anyhow::ensure!(args.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(args.keys >= 1, "--keys must be at least 1");
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    anyhow::ensure!(
        args.target == TargetKind::Recipestore
            || matches!(args.profile, Profile::Write | Profile::Read),
        "--target etcd runs the write and read profiles only"
    );
    let json = match args.profile {
        Profile::Seed | Profile::Write | Profile::Read => {
            let target = connect(
                &args,
                endpoints,
                args.target,
                args.clients,
                args.consistency(),
                args.throttle_ratio,
            )
            .await?;
            let report = single(&args, target, args.profile, args.clients, output).await?;
            if output == Output::Text {
                if let Some(setup) = &report.setup {
                    println!(
                        "setup: {} uploads, p50 {:.2} ms, p99 {:.2} ms",
                        setup.good, setup.latency.p50_ms, setup.latency.p99_ms
                    );
                }
                print!("{}", report.run.table());
            }
            if let Some(path) = &args.plot {
                plot::run(path, &report.run)?;
            }
            serde_json::to_value(&report)?
        }
        Profile::Compare => compare::run(&args, endpoints, output).await?,
        Profile::Sweep => sweep::run(&args, endpoints, output).await?,
        Profile::Grid => grid::run(&args, output).await?,
    };
    if output == Output::Json {
        println!("{json}");
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")?;
    }
    Ok(())
}

/// Connections to the system under test; RecipeStore clients throttle at
/// `throttle_ratio` (0: never).
async fn connect(
    args: &BenchArgs,
    endpoints: &[String],
    kind: TargetKind,
    clients: usize,
    consistency: Consistency,
    throttle_ratio: f64,
) -> anyhow::Result<Arc<Target>> {
    let connections = args.connections(clients);
    Ok(Arc::new(match kind {
        TargetKind::Recipestore => Target::store(
            endpoints,
            connections,
            args.policy(throttle_ratio),
            args.deadline(),
            consistency,
            args.tls.as_ref(),
        )?,
        TargetKind::Etcd => Target::Etcd(
            etcd::EtcdTarget::connect(endpoints, connections, args.deadline(), consistency).await?,
        ),
    }))
}

/// Uploads what `profile` reads, then runs it once.
async fn single(
    args: &BenchArgs,
    target: Arc<Target>,
    profile: Profile,
    clients: usize,
    output: Output,
) -> anyhow::Result<SingleReport> {
    let (setup, mix) = prepare(args, &target, profile, clients).await?;
    let pacing = if args.rate > 0.0 {
        Pacing::Open(if profile == Profile::Seed {
            args.schedule()
        } else {
            Schedule::constant(args.rate)
        })
    } else {
        Pacing::Closed
    };
    let name = format!("{profile:?}").to_lowercase();
    let run = measure(
        args,
        &target,
        &name,
        pacing,
        mix,
        clients,
        args.consistency_name(),
        output,
    )
    .await;
    Ok(SingleReport { setup, run })
}

/// One measured run of `mix`.
#[allow(clippy::too_many_arguments)]
async fn measure(
    args: &BenchArgs,
    target: &Arc<Target>,
    name: &str,
    pacing: Pacing,
    mix: Mix,
    clients: usize,
    consistency: &str,
    output: Output,
) -> RunReport {
    let (pacing_name, rate, spikes) = match &pacing {
        Pacing::Open(s) => ("open", s.base_rate, s.spikes.clone()),
        Pacing::Closed => ("closed", 0.0, Vec::new()),
    };
    let run = Run {
        pacing,
        mix,
        clients,
        duration: Duration::from_secs_f64(args.duration),
        deadline: args.deadline(),
        max_in_flight: args.max_in_flight,
        seed: args.seed,
        progress: args.progress(output),
        label: format!("{name} {}", target.name()),
    };
    let recorder = run.execute(target.clone()).await;
    RunReport::new(
        name,
        target.name(),
        pacing_name,
        clients,
        rate,
        args.duration,
        &recorder,
        consistency,
        &spikes,
    )
}

/// Uploads what a profile needs before it is measured, and its mix.
async fn prepare(
    args: &BenchArgs,
    target: &Arc<Target>,
    profile: Profile,
    clients: usize,
) -> anyhow::Result<(Option<KindReport>, Mix)> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let value = Arc::new(vec![b'r'; args.value_size]);
    let setup_deadline = args.deadline().max(Duration::from_secs(5));
    Ok(match profile {
        Profile::Write => (
            None,
            Mix::Write {
                keys: args.keys,
                value,
            },
        ),
        Profile::Read => {
            let ops = (0..args.keys)
                .map(|k| {
                    let op = Op {
                        kind: OpKind::Upload,
                        key: workload::bench_key(k),
                        value: value.as_ref().clone(),
                    };
                    (k, op)
                })
                .collect();
            let started = std::time::Instant::now();
            let recorder = load::preload(target, ops, clients.min(64), setup_deadline).await?;
            let setup =
                KindReport::new("setup", &recorder.total(), started.elapsed().as_secs_f64());
            (Some(setup), Mix::Read { keys: args.keys })
        }
        Profile::Seed | Profile::Sweep => {
            anyhow::ensure!(
                args.recipes_per_client >= 1,
                "--recipes-per-client must be at least 1"
            );
            let names: Vec<Vec<String>> = (0..clients)
                .map(|c| {
                    (0..args.recipes_per_client)
                        .map(|i| workload::recipe_name(c, i, &mut rng))
                        .collect()
                })
                .collect();
            // Each client uploads its own recipes, one after the other.
            let ops = names
                .iter()
                .enumerate()
                .flat_map(|(c, own)| own.iter().map(move |name| (c, name.clone())))
                .map(|(c, name)| {
                    let op = Op {
                        kind: OpKind::Upload,
                        key: name,
                        value: workload::recipe_content(&mut rng),
                    };
                    (c, op)
                })
                .collect();
            let started = std::time::Instant::now();
            let recorder = load::preload(target, ops, clients.min(64), setup_deadline).await?;
            let setup =
                KindReport::new("setup", &recorder.total(), started.elapsed().as_secs_f64());
            (
                Some(setup),
                Mix::Seed {
                    names: Arc::new(names),
                    upload_fraction: args.upload_fraction,
                },
            )
        }
        Profile::Compare | Profile::Grid => unreachable!("not a single run"),
    })
}
