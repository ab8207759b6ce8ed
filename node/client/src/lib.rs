//! The client library of RecipeStore, used by `recipectl`, the operator and
//! the tests: [`Client`] for recipes, [`admin::AdminClient`] for a node's
//! admin API.
//!
//! Calls go round-robin over the endpoints. UNAVAILABLE and
//! RESOURCE_EXHAUSTED are retried with exponential backoff and full jitter,
//! within a retry budget so a struggling cluster is not hit by a retry storm,
//! and never sooner than a server's retry-after hint. When a node refuses
//! much of what this client sends, the client refuses the excess itself
//! (adaptive throttling, see the `throttle` module). The server answers
//! UNAVAILABLE only when a write was not proposed, so retrying is safe; an
//! unconditional upload repeated after a lost reply stores the same content.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use rand::Rng;
use tonic::Code;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;

use recipestore_protocol::metadata;
use recipestore_protocol::pb;
use recipestore_protocol::pb::recipes_client::RecipesClient;
use recipestore_protocol::slots;

use crate::throttle::Throttle;

pub mod admin;
pub mod reshard;
mod throttle;

/// Metadata key set on a RESOURCE_EXHAUSTED this client made itself: it
/// never leaves the client.
pub const THROTTLED_METADATA: &str = "x-recipestore-throttled";

/// How calls are retried and throttled.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Retries allowed beyond those earned by successes (a token bucket).
    pub budget: f64,
    /// Tokens earned back per successful call.
    pub earn_per_success: f64,
    /// Adaptive throttling: requests sent to a node per request it accepts
    /// before this client refuses some itself; `None` never throttles.
    pub throttle_ratio: Option<f64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            budget: 20.0,
            earn_per_success: 0.2,
            throttle_ratio: Some(DEFAULT_THROTTLE_RATIO),
        }
    }
}

impl RetryPolicy {
    /// Full jitter: uniformly random in [0, min(max, base * 2^attempt)].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
            .min(self.max_delay);
        ceiling.mul_f64(rand::rng().random::<f64>())
    }
}

/// Stricter than the SRE book's 2, because a node refusing half of what it
/// is sent spends much of its time refusing; above 1 / (1 - 0.25), so a node
/// shedding by the seed's top probabilistic tier (25 %) is never throttled.
pub const DEFAULT_THROTTLE_RATIO: f64 = 1.4;

/// Whether a failed call may be retried: the server did not run it
/// (UNAVAILABLE) or shed it (RESOURCE_EXHAUSTED), or it was never sent (see
/// [`never_sent`]).
pub fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted => true,
        Code::Cancelled => never_sent(status),
        _ => false,
    }
}

/// Whether the transport cancelled the call because its connection closed
/// before the call was sent on it: hyper hands such a request back unsent
/// ("operation was canceled: connection closed"), as when a node shutting
/// down gracefully closes its connections. A call cut off after it was
/// sent fails otherwise (UNKNOWN), and is not retried.
fn never_sent(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        let text = error.to_string();
        if text.starts_with("operation was canceled") && text.ends_with("connection closed") {
            return true;
        }
        source = error.source();
    }
    false
}

/// On a version mismatch (FAILED_PRECONDITION), the version the recipe was
/// found at; `Some(0)` when it was absent.
pub fn current_version(status: &Status) -> Option<u64> {
    status
        .metadata()
        .get(metadata::CURRENT_VERSION)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Whether this client refused the call itself (adaptive throttling).
pub fn is_throttled(status: &Status) -> bool {
    status.metadata().contains_key(THROTTLED_METADATA)
}

/// The server's retry-after hint on a status, if any.
pub fn retry_after(status: &Status) -> Option<Duration> {
    status
        .metadata()
        .get(metadata::RETRY_AFTER_MS)?
        .to_str()
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// The answer to a call this client refused itself.
fn throttled(endpoint: &str) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "not sent: {endpoint} has been refusing many requests, so this client throttles itself"
    ));
    status.metadata_mut().insert(
        THROTTLED_METADATA,
        tonic::metadata::MetadataValue::from_static("client"),
    );
    status
}

/// A client for a RecipeStore cluster.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// One per endpoint, when throttling.
    throttles: Vec<Throttle>,
    next: AtomicUsize,
    policy: RetryPolicy,
    tokens: Mutex<f64>,
    timeout: Duration,
    /// Where writes go: the endpoint last named leader of each hash
    /// slot's shard, learnt from replies (every slot's is the same in an
    /// unsharded store), and the last named leader of any, for slots not
    /// seen yet.
    leaders: Mutex<Leaders>,
}

/// The endpoints (indexes) known to lead: per hash slot, and the latest.
struct Leaders {
    by_slot: Vec<Option<usize>>,
    latest: Option<usize>,
}

impl Leaders {
    /// The leader learnt for `slot`, else for the nearest slot learnt:
    /// shards own ranges of slots, so a neighbour's is most likely right.
    fn nearest(&self, slot: u16) -> Option<usize> {
        let slot = usize::from(slot);
        (0..self.by_slot.len()).find_map(|d| {
            let below = slot.checked_sub(d).and_then(|s| self.by_slot[s]);
            below.or_else(|| self.by_slot.get(slot + d).copied().flatten())
        })
    }
}

/// Which endpoint a call prefers.
#[derive(Clone, Copy)]
enum Target {
    /// Any: reads, spread round-robin.
    Any,
    /// The leader of the shard owning this slot: writes, which it would
    /// otherwise have to pass on.
    LeaderOf(u16),
}

impl Client {
    /// Connects lazily to `endpoints` (host:port of client ports).
    pub fn new(endpoints: &[String]) -> anyhow::Result<Self> {
        Self::with_policy(endpoints, RetryPolicy::default(), Duration::from_secs(10))
    }

    pub fn with_policy(
        endpoints: &[String],
        policy: RetryPolicy,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Self::with_tls(endpoints, policy, timeout, None)
    }

    /// Like [`Client::with_policy`], over TLS when `tls` is given.
    pub fn with_tls(
        endpoints: &[String],
        policy: RetryPolicy,
        timeout: Duration,
        tls: Option<ClientTlsConfig>,
    ) -> anyhow::Result<Self> {
        if endpoints.is_empty() {
            anyhow::bail!("at least one endpoint is required");
        }
        let channels = endpoints
            .iter()
            .map(|e| {
                Ok(recipestore_tls::endpoint(e, tls.as_ref())
                    .map_err(|err| anyhow::anyhow!("invalid endpoint {e:?}: {err}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true)
                    .connect_lazy())
            })
            .collect::<anyhow::Result<_>>()?;
        if let Some(ratio) = policy.throttle_ratio {
            anyhow::ensure!(
                ratio.is_finite() && ratio >= 1.0,
                "the throttle ratio must be at least 1, not {ratio}"
            );
        }
        let throttles = policy
            .throttle_ratio
            .map(|ratio| endpoints.iter().map(|_| Throttle::new(ratio)).collect())
            .unwrap_or_default();
        Ok(Self {
            endpoints: endpoints.to_vec(),
            channels,
            throttles,
            next: AtomicUsize::new(0),
            tokens: Mutex::new(policy.budget),
            policy,
            timeout,
            leaders: Mutex::new(Leaders {
                by_slot: vec![None; usize::from(slots::SLOTS)],
                latest: None,
            }),
        })
    }

    fn pick(&self, target: Target) -> usize {
        if let Target::LeaderOf(slot) = target {
            let leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(i) = leaders.nearest(slot).or(leaders.latest) {
                return i;
            }
        }
        self.next.fetch_add(1, Ordering::Relaxed) % self.channels.len()
    }

    /// Notes `addr` as the leader of the shard owning `slot`, when it is one
    /// of the endpoints. The endpoint known before as that shard's leader
    /// leads it no more: every slot it was known to lead, its shard's, goes
    /// to `addr` too, so that a new leader is learnt once per shard, not
    /// once per slot.
    fn note_leader(&self, slot: u16, addr: &str) {
        if let Some(i) = self.endpoints.iter().position(|e| e == addr) {
            let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
            let before = leaders.by_slot[usize::from(slot)].replace(i);
            if let Some(before) = before.filter(|&b| b != i) {
                for known in leaders.by_slot.iter_mut().filter(|k| **k == Some(before)) {
                    *known = Some(i);
                }
            }
            leaders.latest = Some(i);
        }
    }

    /// Forgets endpoint `i` as a leader: it did not answer as one, so it is
    /// not known to lead any shard.
    fn forget_leader(&self, i: usize) {
        let mut leaders = self.leaders.lock().unwrap_or_else(|e| e.into_inner());
        for known in leaders
            .by_slot
            .iter_mut()
            .filter(|known| **known == Some(i))
        {
            *known = None;
        }
        if leaders.latest == Some(i) {
            leaders.latest = None;
        }
    }

    fn take_retry_token(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn earn(&self) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        *tokens = (*tokens + self.policy.earn_per_success).min(self.policy.budget);
    }

    /// Runs `call` against endpoints until it succeeds, fails for good, or
    /// attempts or the retry budget run out.
    async fn run<T, F, Fut>(&self, target: Target, mut call: F) -> Result<T, Status>
    where
        F: FnMut(RecipesClient<Channel>, Duration) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut attempt = 0;
        loop {
            let i = self.pick(target);
            let client = RecipesClient::new(self.channels[i].clone())
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024);
            let result = match self.throttles.get(i) {
                Some(throttle) => match throttle.admit(Instant::now(), rand::random()) {
                    Some(ticket) => {
                        let result = call(client, self.timeout).await;
                        ticket.answered(Instant::now(), &result);
                        result
                    }
                    None => Err(throttled(&self.endpoints[i])),
                },
                None => call(client, self.timeout).await,
            };
            match result {
                Ok(v) => {
                    self.earn();
                    return Ok(v);
                }
                Err(status) => {
                    if let Target::LeaderOf(slot) = target {
                        // The owning shard's members, when the call went to
                        // a shard that no longer owns the slot; else the
                        // leader of the shard that answered.
                        let moved_to = status
                            .metadata()
                            .get(metadata::MOVED_TO)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|addrs| {
                                addrs
                                    .split(',')
                                    .find(|a| self.endpoints.iter().any(|e| e == a))
                            });
                        let leader = status
                            .metadata()
                            .get(metadata::LEADER)
                            .and_then(|v| v.to_str().ok());
                        match moved_to.or(leader) {
                            Some(addr) => self.note_leader(slot, addr),
                            None => self.forget_leader(i),
                        }
                    }
                    attempt += 1;
                    if !is_retryable(&status)
                        || attempt >= self.policy.max_attempts
                        || !self.take_retry_token()
                    {
                        return Err(status);
                    }
                    let delay = self
                        .policy
                        .backoff(attempt)
                        .max(retry_after(&status).unwrap_or_default());
                    tracing::debug!(endpoint = %self.endpoints[i], code = ?status.code(), ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    pub async fn upload(
        &self,
        name: &str,
        content: Vec<u8>,
        if_version: Option<u64>,
    ) -> Result<pb::UploadResponse, Status> {
        let slot = slots::slot_of(name);
        let reply = self
            .run(Target::LeaderOf(slot), |mut c, timeout| {
                let mut req = tonic::Request::new(pb::UploadRequest {
                    name: name.to_string(),
                    content: content.clone(),
                    if_version,
                });
                req.set_timeout(timeout);
                async move { c.upload(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.note_leader(slot, &reply.leader);
        Ok(reply)
    }

    pub async fn download(
        &self,
        name: &str,
        consistency: pb::Consistency,
        min_version: Option<u64>,
    ) -> Result<pb::DownloadResponse, Status> {
        self.run(Target::Any, |mut c, timeout| {
            let mut req = tonic::Request::new(pb::DownloadRequest {
                name: name.to_string(),
                consistency: consistency.into(),
                min_version,
            });
            req.set_timeout(timeout);
            async move { c.download(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    pub async fn delete(
        &self,
        name: &str,
        if_version: Option<u64>,
    ) -> Result<pb::DeleteResponse, Status> {
        let slot = slots::slot_of(name);
        let reply = self
            .run(Target::LeaderOf(slot), |mut c, timeout| {
                let mut req = tonic::Request::new(pb::DeleteRequest {
                    name: name.to_string(),
                    if_version,
                });
                req.set_timeout(timeout);
                async move { c.delete(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        self.note_leader(slot, &reply.leader);
        Ok(reply)
    }

    pub async fn list(
        &self,
        prefix: &str,
        limit: u32,
        page_token: &str,
        consistency: pb::Consistency,
    ) -> Result<pb::ListResponse, Status> {
        self.run(Target::Any, |mut c, timeout| {
            let mut req = tonic::Request::new(pb::ListRequest {
                prefix: prefix.to_string(),
                limit,
                page_token: page_token.to_string(),
                consistency: consistency.into(),
            });
            req.set_timeout(timeout);
            async move { c.list(req).await.map(|r| r.into_inner()) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_an_exponential_ceiling() {
        let policy = RetryPolicy::default();
        for attempt in 0..30 {
            let ceiling = policy
                .base_delay
                .saturating_mul(1 << attempt.min(20))
                .min(policy.max_delay);
            for _ in 0..50 {
                assert!(policy.backoff(attempt) <= ceiling);
            }
        }
        // Full jitter spreads retries: not all equal.
        let samples: Vec<_> = (0..20).map(|_| policy.backoff(5)).collect();
        assert!(samples.iter().any(|d| *d != samples[0]));
    }

    /// Writes go to the leader last seen for their slot's shard, so a
    /// sharded store need not pass them on; slots not seen yet go to the
    /// nearest seen slot's.
    #[tokio::test]
    async fn writes_go_to_the_leader_learnt_for_their_slot() {
        let endpoints = ["a:1", "b:1", "c:1"].map(String::from);
        let client = Client::new(&endpoints).unwrap();
        client.note_leader(5, "b:1");
        assert_eq!(client.pick(Target::LeaderOf(5)), 1);
        client.note_leader(900, "c:1");
        assert_eq!(client.pick(Target::LeaderOf(900)), 2);
        // Unseen slots go to the nearest seen slot's leader.
        assert_eq!(client.pick(Target::LeaderOf(6)), 1);
        assert_eq!(client.pick(Target::LeaderOf(400)), 1);
        assert_eq!(client.pick(Target::LeaderOf(1023)), 2);
        // A new leader of slot 900's shard leads every slot the old one did.
        client.note_leader(1000, "c:1");
        client.note_leader(900, "a:1");
        assert_eq!(client.pick(Target::LeaderOf(1000)), 0);
        assert_eq!(client.pick(Target::LeaderOf(5)), 1, "another shard's");
        client.note_leader(900, "c:1");
        client.note_leader(7, "elsewhere:1");
        assert_eq!(client.pick(Target::LeaderOf(7)), 1, "not an endpoint");
        // A leader that failed leads nothing known.
        client.forget_leader(1);
        assert_eq!(client.pick(Target::LeaderOf(5)), 2, "the nearest left");
        client.forget_leader(2);
        let spread: std::collections::BTreeSet<_> =
            (0..3).map(|_| client.pick(Target::LeaderOf(6))).collect();
        assert_eq!(spread.len(), 3, "all forgotten: round-robin");
    }

    #[test]
    fn only_unavailable_and_resource_exhausted_are_retried() {
        assert!(is_retryable(&Status::unavailable("")));
        assert!(is_retryable(&Status::resource_exhausted("")));
        // A call the transport handed back unsent as its connection closed.
        #[derive(Debug)]
        struct Hyper(&'static str);
        impl std::fmt::Display for Hyper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Hyper {}
        let mut unsent = Status::cancelled("operation was canceled");
        unsent.set_source(std::sync::Arc::new(Hyper(
            "operation was canceled: connection closed",
        )));
        assert!(is_retryable(&unsent));
        let mut cut = Status::cancelled("operation was canceled");
        cut.set_source(std::sync::Arc::new(Hyper("operation was canceled")));
        assert!(!is_retryable(&cut), "cancelled otherwise: it may have run");
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::DeadlineExceeded,
            Code::Unknown,
        ] {
            assert!(!is_retryable(&Status::new(code, "")));
        }
    }

    #[test]
    fn retry_after_hint_is_read_from_metadata() {
        let mut status = Status::resource_exhausted("shed");
        status
            .metadata_mut()
            .insert(metadata::RETRY_AFTER_MS, "250".parse().unwrap());
        assert_eq!(retry_after(&status), Some(Duration::from_millis(250)));
        assert_eq!(retry_after(&Status::unavailable("")), None);
    }

    #[tokio::test]
    async fn the_budget_stops_retries_and_successes_refill_it() {
        let policy = RetryPolicy {
            budget: 2.0,
            earn_per_success: 0.5,
            ..RetryPolicy::default()
        };
        let client =
            Client::with_policy(&["127.0.0.1:1".into()], policy, Duration::from_secs(1)).unwrap();
        assert!(client.take_retry_token());
        assert!(client.take_retry_token());
        assert!(!client.take_retry_token());
        client.earn();
        client.earn();
        assert!(client.take_retry_token());
    }
}
