//! Cache hit ratio on the seed workload: ARC (the seed's choice) against
//! W-TinyLFU (moka, what the node uses), with plain LRU for reference.
//!
//! ARC is written out below from Megiddo and Modha's paper: the one crate
//! offering it (`caches` 0.3) panics inside `put` on this stream, which
//! also counts against depending on it.
//!
//! The stream follows seed 000: every client first uploads 10 recipes, then
//! 99.5 % of requests are downloads and 0.5 % uploads of new recipes. Download
//! popularity is Zipf-distributed over the recipes; uploads fill the cache as
//! the node does. Run: `cargo bench -p recipestore --bench cache_hit_ratio`.

use std::collections::BTreeMap;
use std::collections::HashMap;

use caches::Cache;
use caches::RawLRU;
use rand::Rng;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

const CLIENTS: usize = 200;
const REQUESTS: usize = 2_000_000;

/// A request of the replayed stream.
enum Request {
    Download(usize),
    Upload(usize),
}

/// The seed stream with Zipf exponent `s` over the initial recipes.
fn seed_stream(s: f64, seed: u64) -> Vec<Request> {
    let mut rng = StdRng::seed_from_u64(seed);
    let initial = CLIENTS * 10;
    // Popularity ranks are independent of upload order.
    let mut by_rank: Vec<usize> = (0..initial).collect();
    by_rank.shuffle(&mut rng);
    let weights: Vec<f64> = (1..=initial)
        .map(|rank| 1.0 / (rank as f64).powf(s))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(initial);
    let mut acc = 0.0;
    for w in weights {
        acc += w / total;
        cdf.push(acc);
    }
    let mut stream: Vec<Request> = (0..initial).map(Request::Upload).collect();
    let mut next_new = initial;
    for _ in 0..REQUESTS {
        if rng.random::<f64>() < 0.005 {
            stream.push(Request::Upload(next_new));
            next_new += 1;
        } else {
            let u: f64 = rng.random();
            let rank = cdf.partition_point(|c| *c < u).min(initial - 1);
            stream.push(Request::Download(by_rank[rank]));
        }
    }
    stream
}

/// The operations a cache offers the replay.
trait Replayable {
    fn hit(&mut self, key: usize) -> bool;
    fn fill(&mut self, key: usize);
}

/// A list in recency order: oldest first.
#[derive(Default)]
struct Recency {
    by_tick: BTreeMap<u64, usize>,
    tick_of: HashMap<usize, u64>,
}

impl Recency {
    fn len(&self) -> usize {
        self.tick_of.len()
    }
    fn contains(&self, key: usize) -> bool {
        self.tick_of.contains_key(&key)
    }
    fn push(&mut self, key: usize, tick: u64) {
        self.by_tick.insert(tick, key);
        self.tick_of.insert(key, tick);
    }
    fn remove(&mut self, key: usize) -> bool {
        match self.tick_of.remove(&key) {
            Some(tick) => self.by_tick.remove(&tick).is_some(),
            None => false,
        }
    }
    fn pop_oldest(&mut self) -> Option<usize> {
        let (_, key) = self.by_tick.pop_first()?;
        self.tick_of.remove(&key);
        Some(key)
    }
}

/// Adaptive Replacement Cache: recent (t1) and frequent (t2) entries, their
/// ghosts (b1, b2), and the adaptive target size `p` of t1.
struct Arc {
    capacity: usize,
    p: usize,
    tick: u64,
    t1: Recency,
    t2: Recency,
    b1: Recency,
    b2: Recency,
}

impl Arc {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            p: 0,
            tick: 0,
            t1: Recency::default(),
            t2: Recency::default(),
            b1: Recency::default(),
            b2: Recency::default(),
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Evicts from t1 or t2 into its ghost list.
    fn replace(&mut self, in_b2: bool) {
        let from_t1 =
            self.t1.len() > 0 && (self.t1.len() > self.p || (in_b2 && self.t1.len() == self.p));
        let tick = self.next_tick();
        if from_t1 {
            if let Some(k) = self.t1.pop_oldest() {
                self.b1.push(k, tick);
            }
        } else if let Some(k) = self.t2.pop_oldest() {
            self.b2.push(k, tick);
        }
    }
}

impl Replayable for Arc {
    fn hit(&mut self, key: usize) -> bool {
        if self.t1.remove(key) || self.t2.remove(key) {
            let tick = self.next_tick();
            self.t2.push(key, tick);
            return true;
        }
        false
    }

    fn fill(&mut self, key: usize) {
        let c = self.capacity;
        if self.t1.contains(key) || self.t2.contains(key) {
            self.hit(key);
            return;
        }
        if self.b1.contains(key) {
            let delta = (self.b2.len() / self.b1.len().max(1)).max(1);
            self.p = (self.p + delta).min(c);
            self.replace(false);
            self.b1.remove(key);
            let tick = self.next_tick();
            self.t2.push(key, tick);
            return;
        }
        if self.b2.contains(key) {
            let delta = (self.b1.len() / self.b2.len().max(1)).max(1);
            self.p = self.p.saturating_sub(delta);
            self.replace(true);
            self.b2.remove(key);
            let tick = self.next_tick();
            self.t2.push(key, tick);
            return;
        }
        let l1 = self.t1.len() + self.b1.len();
        let total = l1 + self.t2.len() + self.b2.len();
        if l1 == c {
            if self.t1.len() < c {
                self.b1.pop_oldest();
                self.replace(false);
            } else {
                self.t1.pop_oldest();
            }
        } else if l1 < c && total >= c {
            if total == 2 * c {
                self.b2.pop_oldest();
            }
            self.replace(false);
        }
        let tick = self.next_tick();
        self.t1.push(key, tick);
    }
}

impl Replayable for RawLRU<usize, ()> {
    fn hit(&mut self, key: usize) -> bool {
        self.get(&key).is_some()
    }
    fn fill(&mut self, key: usize) {
        self.put(key, ());
    }
}

impl Replayable for moka::sync::Cache<usize, ()> {
    fn hit(&mut self, key: usize) -> bool {
        self.get(&key).is_some()
    }
    fn fill(&mut self, key: usize) {
        self.insert(key, ());
    }
}

/// The hit ratio of downloads through `cache`.
fn replay(stream: &[Request], cache: &mut impl Replayable) -> f64 {
    let (mut hits, mut downloads) = (0u64, 0u64);
    for request in stream {
        match *request {
            Request::Upload(key) => cache.fill(key),
            Request::Download(key) => {
                downloads += 1;
                if cache.hit(key) {
                    hits += 1;
                } else {
                    // A miss reads storage and fills the cache.
                    cache.fill(key);
                }
            }
        }
    }
    hits as f64 / downloads as f64
}

fn main() {
    println!(
        "seed workload: {CLIENTS} clients x 10 recipes, {REQUESTS} requests (99.5 % downloads)"
    );
    println!(
        "{:>6} {:>9} {:>8} {:>11} {:>8}",
        "zipf_s", "capacity", "ARC", "W-TinyLFU", "LRU"
    );
    for s in [0.8, 1.0, 1.2] {
        let stream = seed_stream(s, 42);
        for fraction in [0.01, 0.05, 0.10] {
            let capacity = ((CLIENTS * 10) as f64 * fraction) as usize;
            let mut arc = Arc::new(capacity);
            let arc_ratio = replay(&stream, &mut arc);
            let mut tinylfu = moka::sync::Cache::<usize, ()>::new(capacity as u64);
            let tinylfu_ratio = replay(&stream, &mut tinylfu);
            let mut lru = RawLRU::<usize, ()>::new(capacity).expect("capacity > 0");
            let lru_ratio = replay(&stream, &mut lru);
            println!(
                "{s:>6.1} {:>8.0}% {:>7.1}% {:>10.1}% {:>7.1}%",
                fraction * 100.0,
                arc_ratio * 100.0,
                tinylfu_ratio * 100.0,
                lru_ratio * 100.0
            );
        }
    }
}
