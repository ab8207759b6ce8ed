//! What the benchmark sends: the seed workload's recipes, mix and spiky
//! schedule, and the fixed-size `write` / `read` workloads. Everything here
//! is pure (a seeded RNG in, operations out) so it is unit-tested.

use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;

/// The kind of a request, used to split every statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    Upload,
    Download,
}

impl OpKind {
    pub fn index(self) -> usize {
        match self {
            OpKind::Upload => 0,
            OpKind::Download => 1,
        }
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Op {
    pub kind: OpKind,
    pub key: String,
    /// The content of an upload (empty for a download).
    pub value: Vec<u8>,
}

/// A burst of correlated requests: from `start` for `length` seconds the
/// offered rate is multiplied by `factor`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spike {
    pub start: f64,
    pub length: f64,
    pub factor: f64,
}

/// The offered request rate over time: a base rate with spikes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Schedule {
    /// Requests per second outside spikes.
    pub base_rate: f64,
    pub spikes: Vec<Spike>,
}

impl Schedule {
    pub fn constant(rate: f64) -> Self {
        Self {
            base_rate: rate,
            spikes: Vec::new(),
        }
    }

    /// The seed's schedule: spikes around 15 s, 25 s, 45 s and 50 s, each
    /// starting one half-length before its centre.
    pub fn seed(base_rate: f64, centres: &[f64], length: f64, factor: f64) -> Self {
        Self {
            base_rate,
            spikes: centres
                .iter()
                .map(|c| Spike {
                    start: (c - length / 2.0).max(0.0),
                    length,
                    factor,
                })
                .collect(),
        }
    }

    /// Offered requests per second at `t` seconds into the run. Overlapping
    /// spikes do not compound: the largest factor wins.
    pub fn rate_at(&self, t: f64) -> f64 {
        let factor = self
            .spikes
            .iter()
            .filter(|s| t >= s.start && t < s.start + s.length)
            .map(|s| s.factor)
            .fold(1.0, f64::max);
        self.base_rate * factor
    }

    /// Send times (seconds from the start) of every request in `[0, duration)`:
    /// evenly spaced at the rate in force at each send.
    pub fn send_times(&self, duration: f64) -> impl Iterator<Item = f64> + '_ {
        let mut next = 0.0;
        std::iter::from_fn(move || {
            while next < duration {
                let rate = self.rate_at(next);
                let t = next;
                if rate <= 0.0 {
                    // Nothing offered now: look again a millisecond later.
                    next += 0.001;
                    continue;
                }
                next += 1.0 / rate;
                return Some(t);
            }
            None
        })
    }

    /// Requests offered in `[0, duration)`, in expectation.
    #[cfg(test)]
    pub fn expected_requests(&self, duration: f64) -> f64 {
        let mut total = self.base_rate * duration;
        for s in &self.spikes {
            let covered = (s.start + s.length).min(duration) - s.start.min(duration);
            total += self.base_rate * (s.factor - 1.0) * covered.max(0.0);
        }
        total
    }

    /// Whether `t` falls inside a spike.
    #[cfg(test)]
    pub fn in_spike(&self, t: f64) -> bool {
        self.spikes
            .iter()
            .any(|s| t >= s.start && t < s.start + s.length)
    }
}

/// Download or upload, with uploads at `upload_fraction` (0.005 in the seed).
pub fn pick_kind(rng: &mut StdRng, upload_fraction: f64) -> OpKind {
    if rng.random::<f64>() < upload_fraction {
        OpKind::Upload
    } else {
        OpKind::Download
    }
}

const INGREDIENTS: [&str; 12] = [
    "rice", "egg", "beef", "tofu", "salmon", "cheese", "mushroom", "beans", "chicken", "spinach",
    "quinoa", "tomato",
];
const DISHES: [&str; 7] = [
    "burger", "pasta", "sandwich", "pizza", "soup", "salad", "curry",
];
const STEPS: [&str; 8] = [
    "bake",
    "cook",
    "stir",
    "simmer",
    "chop",
    "season",
    "until golden brown",
    "serve",
];

/// A recipe name in the seed's style (`rice_eggburger`), made unique by the
/// client and its recipe number.
pub fn recipe_name(client: usize, index: usize, rng: &mut StdRng) -> String {
    let a = INGREDIENTS[rng.random_range(0..INGREDIENTS.len())];
    let b = INGREDIENTS[rng.random_range(0..INGREDIENTS.len())];
    let dish = DISHES[rng.random_range(0..DISHES.len())];
    format!("{a}_{b}{dish}-c{client}-{index}")
}

/// A recipe's content: a dozen ingredients and steps, like the seed's.
pub fn recipe_content(rng: &mut StdRng) -> Vec<u8> {
    let words: Vec<&str> = (0..12)
        .map(|_| {
            if rng.random_bool(0.7) {
                INGREDIENTS[rng.random_range(0..INGREDIENTS.len())]
            } else {
                STEPS[rng.random_range(0..STEPS.len())]
            }
        })
        .collect();
    words.join(" ").into_bytes()
}

/// The key of entry `k` of the fixed-size workloads' key space.
pub fn bench_key(k: usize) -> String {
    format!("bench-{k}")
}

/// What each request is: the mix of operations and their keys.
#[derive(Debug, Clone)]
pub enum Mix {
    /// Uploads of `value` over `keys` keys.
    Write { keys: usize, value: Arc<Vec<u8>> },
    /// Downloads over `keys` keys (uploaded first).
    Read { keys: usize },
    /// The seed: downloads of any client's recipe, and at `upload_fraction`
    /// new content for one of the sending client's own recipes.
    Seed {
        /// Recipe names by client.
        names: Arc<Vec<Vec<String>>>,
        upload_fraction: f64,
    },
}

impl Mix {
    /// The request a client sends next.
    pub fn op(&self, client: usize, rng: &mut StdRng) -> Op {
        match self {
            Mix::Write { keys, value } => Op {
                kind: OpKind::Upload,
                key: bench_key(rng.random_range(0..*keys)),
                value: value.as_ref().clone(),
            },
            Mix::Read { keys } => Op {
                kind: OpKind::Download,
                key: bench_key(rng.random_range(0..*keys)),
                value: Vec::new(),
            },
            Mix::Seed {
                names,
                upload_fraction,
            } => match pick_kind(rng, *upload_fraction) {
                OpKind::Upload => {
                    let own = &names[client % names.len()];
                    Op {
                        kind: OpKind::Upload,
                        key: own[rng.random_range(0..own.len())].clone(),
                        value: recipe_content(rng),
                    }
                }
                OpKind::Download => {
                    let owner = &names[rng.random_range(0..names.len())];
                    Op {
                        kind: OpKind::Download,
                        key: owner[rng.random_range(0..owner.len())].clone(),
                        value: Vec::new(),
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn seed_schedule() -> Schedule {
        Schedule::seed(100.0, &[15.0, 25.0, 45.0, 50.0], 2.0, 3.5)
    }

    #[test]
    fn the_seed_schedule_spikes_at_15_25_45_and_50_seconds() {
        let s = seed_schedule();
        for centre in [15.0, 25.0, 45.0, 50.0] {
            assert_eq!(s.rate_at(centre), 350.0, "spike at {centre}");
            assert_eq!(s.rate_at(centre - 0.9), 350.0);
            assert_eq!(s.rate_at(centre + 0.9), 350.0);
            assert_eq!(s.rate_at(centre - 1.5), 100.0);
            assert!(s.in_spike(centre));
        }
        for quiet in [
            0.0, 5.0, 10.0, 13.9, 16.0, 20.0, 30.0, 40.0, 47.5, 55.0, 59.9,
        ] {
            assert_eq!(s.rate_at(quiet), 100.0, "no spike at {quiet}");
            assert!(!s.in_spike(quiet));
        }
    }

    #[test]
    fn send_times_follow_the_rate_including_spikes() {
        let s = seed_schedule();
        let times: Vec<f64> = s.send_times(60.0).collect();
        let expected = s.expected_requests(60.0);
        // 100/s for 60 s plus 4 spikes of 2 s at +250/s.
        assert_eq!(expected, 6000.0 + 4.0 * 2.0 * 250.0);
        assert!(
            (times.len() as f64 - expected).abs() <= 5.0,
            "{}",
            times.len()
        );
        assert!(times.windows(2).all(|w| w[0] < w[1]));
        let in_second = |a: f64| times.iter().filter(|t| **t >= a && **t < a + 1.0).count();
        assert!((in_second(15.0) as i64 - 350).abs() <= 1);
        assert!((in_second(20.0) as i64 - 100).abs() <= 1);
        assert!(times.iter().all(|t| *t < 60.0));
    }

    #[test]
    fn a_short_run_only_counts_the_spikes_it_reaches() {
        let s = seed_schedule();
        assert_eq!(s.expected_requests(10.0), 1000.0);
        assert_eq!(s.expected_requests(15.0), 1500.0 + 250.0);
        assert_eq!(Schedule::constant(0.0).send_times(1.0).count(), 0);
    }

    #[test]
    fn the_seed_mix_is_about_half_a_percent_uploads() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 200_000;
        let uploads = (0..n)
            .filter(|_| pick_kind(&mut rng, 0.005) == OpKind::Upload)
            .count();
        let fraction = uploads as f64 / n as f64;
        assert!((0.004..0.006).contains(&fraction), "{fraction}");
    }

    #[test]
    fn seed_uploads_touch_only_the_clients_own_recipes() {
        let mut rng = StdRng::seed_from_u64(1);
        let names: Vec<Vec<String>> = (0..4)
            .map(|c| (0..10).map(|i| recipe_name(c, i, &mut rng)).collect())
            .collect();
        let mix = Mix::Seed {
            names: Arc::new(names.clone()),
            upload_fraction: 0.5,
        };
        let mut downloads_from_others = 0;
        for _ in 0..2000 {
            let op = mix.op(2, &mut rng);
            match op.kind {
                OpKind::Upload => {
                    assert!(names[2].contains(&op.key));
                    assert!(!op.value.is_empty());
                }
                OpKind::Download => {
                    assert!(op.value.is_empty());
                    if !names[2].contains(&op.key) {
                        downloads_from_others += 1;
                    }
                }
            }
        }
        assert!(downloads_from_others > 0);
    }

    #[test]
    fn recipe_names_look_like_the_seeds_and_are_unique_per_client() {
        let mut rng = StdRng::seed_from_u64(3);
        let name = recipe_name(12, 3, &mut rng);
        let (head, tail) = name.split_once('_').unwrap();
        assert!(INGREDIENTS.contains(&head), "{name}");
        assert!(tail.ends_with("-c12-3"), "{name}");
        let content = String::from_utf8(recipe_content(&mut rng)).unwrap();
        assert!(content.split(' ').count() >= 12, "{content}");
    }

    #[test]
    fn write_and_read_stay_in_the_key_space() {
        let mut rng = StdRng::seed_from_u64(5);
        let write = Mix::Write {
            keys: 10,
            value: Arc::new(vec![b'x'; 1024]),
        };
        let read = Mix::Read { keys: 10 };
        for _ in 0..500 {
            let w = write.op(0, &mut rng);
            assert_eq!(w.kind, OpKind::Upload);
            assert_eq!(w.value.len(), 1024);
            let k: usize = w.key.strip_prefix("bench-").unwrap().parse().unwrap();
            assert!(k < 10);
            let r = read.op(0, &mut rng);
            assert_eq!(r.kind, OpKind::Download);
            assert!(r.key.starts_with("bench-"));
        }
    }
}
