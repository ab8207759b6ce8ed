//! Prometheus metrics of a node, all prefixed `recipestore_`, updated through
//! the small functions below rather than scattered registry calls.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::Encoder;
use prometheus::Gauge;
use prometheus::Histogram;
use prometheus::HistogramOpts;
use prometheus::HistogramVec;
use prometheus::IntCounter;
use prometheus::IntCounterVec;
use prometheus::IntGauge;
use prometheus::IntGaugeVec;
use prometheus::Opts;
use prometheus::Registry;
use prometheus::TextEncoder;

use crate::raft::typ::RaftMetrics;

const NAMESPACE: &str = "recipestore";

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    raft_term: IntGauge,
    raft_is_leader: IntGauge,
    raft_role: IntGaugeVec,
    raft_leader_id: IntGauge,
    raft_leader_changes: IntCounter,
    raft_index: IntGaugeVec,
    raft_members: IntGaugeVec,
    raft_proposal_failures: IntCounterVec,
    raft_proposal_batch: Histogram,
    fsync_seconds: HistogramVec,
    fsync_batch_entries: HistogramVec,
    snapshot_build_seconds: HistogramVec,
    backups: IntCounterVec,
    backup_last_bytes: IntGauge,
    backup_last_seconds: Gauge,
    shed: IntCounterVec,
    queue_depth: IntGaugeVec,
    queue_workers: IntGaugeVec,
    queue_wait_seconds: HistogramVec,
    cpu_usage: Gauge,
    memory_available: IntGauge,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_evictions: IntCounter,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    tls_expiry: IntGauge,
    tls_reloads: IntCounterVec,
    tls_refused: IntCounterVec,
    shard_info: IntGaugeVec,
    shard_epoch: IntGauge,
    shard_slots: IntGauge,
    shard_passed_on: IntCounterVec,
    shard_moved: IntCounter,
    shard_waited_for_move: IntCounter,
}

fn opts(subsystem: &str, name: &str, help: &str) -> Opts {
    Opts::new(name, help)
        .namespace(NAMESPACE)
        .subsystem(subsystem)
}

fn histogram(subsystem: &str, name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NAMESPACE)
        .subsystem(subsystem)
        .buckets(buckets)
}

fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let m = Metrics {
        requests: IntCounterVec::new(
            opts(
                "",
                "requests_total",
                "Client requests served, by operation and gRPC code.",
            ),
            &["op", "code"],
        )
        .expect("valid metric"),
        request_seconds: HistogramVec::new(
            histogram(
                "",
                "request_duration_seconds",
                "Client request latency, by operation and gRPC code.",
                latency_buckets(),
            ),
            &["op", "code"],
        )
        .expect("valid metric"),
        shard_info: IntGaugeVec::new(
            opts(
                "shard",
                "info",
                "1, labelled with the shard this node's group is (0 in an unsharded store): \
                 join on it for per-shard views.",
            ),
            &["shard"],
        )
        .expect("valid metric"),
        shard_epoch: IntGauge::with_opts(opts(
            "shard",
            "placement_epoch",
            "Epoch of the placement this node has applied; 0 in an unsharded store.",
        ))
        .expect("valid metric"),
        shard_slots: IntGauge::with_opts(opts(
            "shard",
            "slots",
            "Hash slots this node's shard owns, as applied here.",
        ))
        .expect("valid metric"),
        shard_passed_on: IntCounterVec::new(
            opts(
                "shard",
                "passed_on_total",
                "Client calls passed on to the shard owning their recipe, by operation.",
            ),
            &["op"],
        )
        .expect("valid metric"),
        shard_moved: IntCounter::with_opts(opts(
            "shard",
            "moved_total",
            "Calls refused because another shard owns their recipe.",
        ))
        .expect("valid metric"),
        shard_waited_for_move: IntCounter::with_opts(opts(
            "shard",
            "waited_for_move_total",
            "Calls that waited for their slot's move between shards to end.",
        ))
        .expect("valid metric"),
        raft_term: IntGauge::with_opts(opts("raft", "term", "Current Raft term."))
            .expect("valid metric"),
        raft_is_leader: IntGauge::with_opts(opts(
            "raft",
            "is_leader",
            "1 if this node is the leader.",
        ))
        .expect("valid metric"),
        raft_role: IntGaugeVec::new(
            opts("raft", "role", "1 for this node's current Raft role."),
            &["role"],
        )
        .expect("valid metric"),
        raft_leader_id: IntGauge::with_opts(opts(
            "raft",
            "leader_id",
            "Node id of the known leader, -1 when none.",
        ))
        .expect("valid metric"),
        raft_leader_changes: IntCounter::with_opts(opts(
            "raft",
            "leader_changes_total",
            "Times this node saw the leader change.",
        ))
        .expect("valid metric"),
        raft_index: IntGaugeVec::new(
            opts(
                "raft",
                "log_index",
                "Raft log positions: last_log, committed, applied, snapshot, purged.",
            ),
            &["position"],
        )
        .expect("valid metric"),
        raft_members: IntGaugeVec::new(
            opts(
                "raft",
                "members",
                "Cluster members by kind (voter, learner).",
            ),
            &["kind"],
        )
        .expect("valid metric"),
        raft_proposal_failures: IntCounterVec::new(
            opts(
                "raft",
                "proposal_failures_total",
                "Client writes that failed to commit, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric"),
        raft_proposal_batch: Histogram::with_opts(histogram(
            "raft",
            "proposal_batch_writes",
            "Client writes handed to Raft together in one batch.",
            prometheus::exponential_buckets(1.0, 2.0, 13).unwrap_or_default(),
        ))
        .expect("valid metric"),
        fsync_seconds: HistogramVec::new(
            histogram(
                "storage",
                "fsync_duration_seconds",
                "Duration of Raft log fsyncs.",
                latency_buckets(),
            ),
            &[],
        )
        .expect("valid metric"),
        fsync_batch_entries: HistogramVec::new(
            histogram(
                "storage",
                "fsync_batch_appends",
                "Log appends made durable by one fsync (group commit).",
                prometheus::exponential_buckets(1.0, 2.0, 12).unwrap_or_default(),
            ),
            &[],
        )
        .expect("valid metric"),
        snapshot_build_seconds: HistogramVec::new(
            histogram(
                "storage",
                "snapshot_build_duration_seconds",
                "Duration of snapshot builds.",
                prometheus::exponential_buckets(0.001, 4.0, 10).unwrap_or_default(),
            ),
            &[],
        )
        .expect("valid metric"),
        backups: IntCounterVec::new(
            opts(
                "backup",
                "streams_total",
                "Backups this node streamed (admin SaveSnapshot), by outcome: sent whole, or failed (the reader left or a read failed).",
            ),
            &["outcome"],
        )
        .expect("valid metric"),
        backup_last_bytes: IntGauge::with_opts(opts(
            "backup",
            "last_bytes",
            "Size of the last backup this node sent whole.",
        ))
        .expect("valid metric"),
        backup_last_seconds: Gauge::with_opts(opts(
            "backup",
            "last_duration_seconds",
            "Time from the request to the last byte of the last backup this node sent whole.",
        ))
        .expect("valid metric"),
        shed: IntCounterVec::new(
            opts(
                "",
                "shed_requests_total",
                "Requests shed, by operation and reason.",
            ),
            &["op", "reason"],
        )
        .expect("valid metric"),
        queue_depth: IntGaugeVec::new(
            opts("queue", "depth", "Requests waiting for a worker."),
            &["queue"],
        )
        .expect("valid metric"),
        queue_workers: IntGaugeVec::new(
            opts("queue", "workers", "Workers serving the queue."),
            &["queue"],
        )
        .expect("valid metric"),
        queue_wait_seconds: HistogramVec::new(
            histogram(
                "queue",
                "wait_seconds",
                "Time requests waited for a worker.",
                latency_buckets(),
            ),
            &["queue"],
        )
        .expect("valid metric"),
        cpu_usage: Gauge::with_opts(opts(
            "",
            "cpu_usage_ratio",
            "Smoothed CPU usage of the node's container as the shedder sees it (0..1).",
        ))
        .expect("valid metric"),
        memory_available: IntGauge::with_opts(opts(
            "",
            "memory_available_bytes",
            "Memory still available to the node's container.",
        ))
        .expect("valid metric"),
        cache_hits: IntCounter::with_opts(opts(
            "cache",
            "hits_total",
            "Reads served from the cache.",
        ))
        .expect("valid metric"),
        cache_misses: IntCounter::with_opts(opts(
            "cache",
            "misses_total",
            "Reads that went to storage.",
        ))
        .expect("valid metric"),
        cache_evictions: IntCounter::with_opts(opts(
            "cache",
            "evictions_total",
            "Entries evicted for space.",
        ))
        .expect("valid metric"),
        cache_bytes: IntGauge::with_opts(opts("cache", "size_bytes", "Bytes held by the cache."))
            .expect("valid metric"),
        cache_entries: IntGauge::with_opts(opts("cache", "entries", "Recipes held by the cache."))
            .expect("valid metric"),
        tls_expiry: IntGauge::with_opts(opts(
            "tls",
            "certificate_expiry_timestamp_seconds",
            "When the node's certificate expires (Unix time); 0 without TLS.",
        ))
        .expect("valid metric"),
        tls_reloads: IntCounterVec::new(
            opts(
                "tls",
                "reloads_total",
                "Changed certificate files read again, by outcome (loaded, refused).",
            ),
            &["outcome"],
        )
        .expect("valid metric"),
        tls_refused: IntCounterVec::new(
            opts(
                "tls",
                "handshake_failures_total",
                "Connections refused during the TLS handshake, by port.",
            ),
            &["port"],
        )
        .expect("valid metric"),
        registry,
    };
    let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
        Box::new(m.requests.clone()),
        Box::new(m.request_seconds.clone()),
        Box::new(m.raft_term.clone()),
        Box::new(m.raft_is_leader.clone()),
        Box::new(m.raft_role.clone()),
        Box::new(m.raft_leader_id.clone()),
        Box::new(m.raft_leader_changes.clone()),
        Box::new(m.raft_index.clone()),
        Box::new(m.raft_members.clone()),
        Box::new(m.raft_proposal_failures.clone()),
        Box::new(m.raft_proposal_batch.clone()),
        Box::new(m.fsync_seconds.clone()),
        Box::new(m.fsync_batch_entries.clone()),
        Box::new(m.snapshot_build_seconds.clone()),
        Box::new(m.backups.clone()),
        Box::new(m.backup_last_bytes.clone()),
        Box::new(m.backup_last_seconds.clone()),
        Box::new(m.shed.clone()),
        Box::new(m.queue_depth.clone()),
        Box::new(m.queue_workers.clone()),
        Box::new(m.queue_wait_seconds.clone()),
        Box::new(m.cpu_usage.clone()),
        Box::new(m.memory_available.clone()),
        Box::new(m.cache_hits.clone()),
        Box::new(m.cache_misses.clone()),
        Box::new(m.cache_evictions.clone()),
        Box::new(m.cache_bytes.clone()),
        Box::new(m.cache_entries.clone()),
        Box::new(m.tls_expiry.clone()),
        Box::new(m.tls_reloads.clone()),
        Box::new(m.tls_refused.clone()),
        Box::new(m.shard_info.clone()),
        Box::new(m.shard_epoch.clone()),
        Box::new(m.shard_slots.clone()),
        Box::new(m.shard_passed_on.clone()),
        Box::new(m.shard_moved.clone()),
        Box::new(m.shard_waited_for_move.clone()),
        Box::new(prometheus::process_collector::ProcessCollector::new(
            std::process::id() as i32,
            NAMESPACE,
        )),
    ];
    for c in collectors {
        m.registry.register(c).expect("metric registered once");
    }
    m
});

/// Records one client request.
pub fn observe_request(op: &str, code: tonic::Code, elapsed: Duration) {
    let code = format!("{code:?}");
    let labels = [op, code.as_str()];
    METRICS.requests.with_label_values(&labels).inc();
    METRICS
        .request_seconds
        .with_label_values(&labels)
        .observe(elapsed.as_secs_f64());
}

/// Records a backup stream that ended: `sent` whole (`bytes` of it, over
/// `elapsed`), or not.
pub fn observe_backup(sent: bool, bytes: u64, elapsed: Duration) {
    let outcome = if sent { "sent" } else { "failed" };
    METRICS.backups.with_label_values(&[outcome]).inc();
    if sent {
        METRICS.backup_last_bytes.set(bytes as i64);
        METRICS.backup_last_seconds.set(elapsed.as_secs_f64());
    }
}

/// Counts a shed request.
pub fn observe_shed(op: &str, reason: &str) {
    METRICS.shed.with_label_values(&[op, reason]).inc();
}

pub fn observe_queue_depth(queue: &str, depth: usize) {
    METRICS
        .queue_depth
        .with_label_values(&[queue])
        .set(depth as i64);
}

pub fn observe_queue_workers(queue: &str, workers: usize) {
    METRICS
        .queue_workers
        .with_label_values(&[queue])
        .set(workers as i64);
}

pub fn observe_queue_wait(queue: &str, waited: Duration) {
    METRICS
        .queue_wait_seconds
        .with_label_values(&[queue])
        .observe(waited.as_secs_f64());
}

/// Publishes the sampled CPU (percent) and available memory.
pub fn observe_resources(cpu_percent: f64, memory_available: u64) {
    METRICS.cpu_usage.set(cpu_percent / 100.0);
    METRICS
        .memory_available
        .set(memory_available.min(i64::MAX as u64) as i64);
}

pub fn cache_hit() {
    METRICS.cache_hits.inc();
}

pub fn cache_miss() {
    METRICS.cache_misses.inc();
}

pub fn cache_evicted() {
    METRICS.cache_evictions.inc();
}

pub fn observe_cache_size(bytes: u64, entries: u64) {
    METRICS.cache_bytes.set(bytes as i64);
    METRICS.cache_entries.set(entries as i64);
}

/// Records the expiry of the certificate the node now presents.
pub fn observe_certificate(not_after_unix: i64) {
    METRICS.tls_expiry.set(not_after_unix);
}

/// Counts changed certificate files read again: `loaded`, or refused
/// (the node keeps the ones it had).
pub fn observe_tls_reload(loaded: bool) {
    let outcome = if loaded { "loaded" } else { "refused" };
    METRICS.tls_reloads.with_label_values(&[outcome]).inc();
}

/// Counts a connection refused during its TLS handshake on `port`.
pub fn observe_tls_refused(port: &str) {
    METRICS.tls_refused.with_label_values(&[port]).inc();
}

/// Makes every labelled family visible from the start, so dashboards and
/// alerts see zeros rather than "no data" on a quiet node.
pub fn initialize_labels() {
    for outcome in ["sent", "failed"] {
        METRICS.backups.with_label_values(&[outcome]);
    }
    for outcome in ["loaded", "refused"] {
        METRICS.tls_reloads.with_label_values(&[outcome]);
    }
    for port in ["client", "peer"] {
        METRICS.tls_refused.with_label_values(&[port]);
    }
    for op in ["upload", "download", "delete", "list"] {
        METRICS.shard_passed_on.with_label_values(&[op]);
    }
    for op in ["upload", "download"] {
        for reason in crate::overload::shed::ShedReason::ALL {
            METRICS.shed.with_label_values(&[op, reason.label()]);
        }
        METRICS.queue_depth.with_label_values(&[op]);
        METRICS.queue_workers.with_label_values(&[op]);
        METRICS.queue_wait_seconds.with_label_values(&[op]);
    }
}

/// Records the placement this node has applied (`None`: unsharded).
pub fn observe_placement(placement: Option<&crate::placement::Placement>) {
    let shard = placement.map_or(0, |p| p.shard).to_string();
    METRICS.shard_info.reset();
    METRICS
        .shard_info
        .with_label_values(&[shard.as_str()])
        .set(1);
    METRICS
        .shard_epoch
        .set(placement.map_or(0, |p| p.epoch as i64));
    let slots = placement.map_or(usize::from(recipestore_protocol::slots::SLOTS), |p| {
        p.owned_slots()
    });
    METRICS.shard_slots.set(slots as i64);
}

/// Counts a client call passed on to the shard that owns its recipe.
pub fn shard_passed_on(op: &str) {
    METRICS.shard_passed_on.with_label_values(&[op]).inc();
}

/// Counts a call refused because another shard owns its recipe.
pub fn shard_moved() {
    METRICS.shard_moved.inc();
}

pub fn shard_waited_for_move() {
    METRICS.shard_waited_for_move.inc();
}

/// Records one fsync of the Raft log covering `appends` log appends.
pub fn observe_fsync(elapsed: Duration, appends: usize) {
    METRICS
        .fsync_seconds
        .with_label_values(&[] as &[&str])
        .observe(elapsed.as_secs_f64());
    METRICS
        .fsync_batch_entries
        .with_label_values(&[] as &[&str])
        .observe(appends as f64);
}

pub fn observe_snapshot_build(elapsed: Duration) {
    METRICS
        .snapshot_build_seconds
        .with_label_values(&[] as &[&str])
        .observe(elapsed.as_secs_f64());
}

/// Counts a client write that did not commit.
pub fn observe_proposal_batch(writes: usize) {
    METRICS.raft_proposal_batch.observe(writes as f64);
}

pub fn proposal_failed(reason: &str) {
    METRICS
        .raft_proposal_failures
        .with_label_values(&[reason])
        .inc();
}

/// Publishes openraft's metrics; `previous_leader` detects leader changes.
pub fn observe_raft(m: &RaftMetrics, previous_leader: Option<u64>) {
    METRICS.raft_term.set(m.current_term as i64);
    METRICS
        .raft_is_leader
        .set(i64::from(m.current_leader == Some(m.id)));
    METRICS
        .raft_leader_id
        .set(m.current_leader.map_or(-1, |id| id as i64));
    if m.current_leader.is_some() && m.current_leader != previous_leader {
        METRICS.raft_leader_changes.inc();
    }
    for role in ["leader", "follower", "candidate", "learner", "shutdown"] {
        METRICS.raft_role.with_label_values(&[role]).set(0);
    }
    METRICS.raft_role.with_label_values(&[role_name(m)]).set(1);
    let index =
        |id: &Option<crate::raft::typ::LogId>| id.as_ref().map_or(0, |id| id.index() as i64);
    let positions = [
        ("last_log", m.last_log_index.unwrap_or(0) as i64),
        ("committed", index(&m.local_committed)),
        ("applied", index(&m.last_applied)),
        ("snapshot", index(&m.snapshot)),
        ("purged", index(&m.purged)),
    ];
    for (position, value) in positions {
        METRICS.raft_index.with_label_values(&[position]).set(value);
    }
    let membership = m.membership_config.membership();
    METRICS
        .raft_members
        .with_label_values(&["voter"])
        .set(membership.voter_ids().count() as i64);
    METRICS
        .raft_members
        .with_label_values(&["learner"])
        .set(membership.learner_ids().count() as i64);
}

/// The Prometheus name of this node's role.
pub fn role_name(m: &RaftMetrics) -> &'static str {
    use openraft::ServerState;
    match m.state {
        ServerState::Leader => "leader",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
        ServerState::Follower => "follower",
    }
}

/// All metrics in the Prometheus text format.
pub fn render() -> String {
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metrics.
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}
