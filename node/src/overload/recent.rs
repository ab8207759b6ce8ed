//! Client requests admitted and shed over the last few seconds, for the
//! admin `Status`: the operator holds a rolling upgrade while a member
//! sheds, and a cumulative counter cannot say "now" without the caller
//! remembering an earlier sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Seconds the window spans.
pub const WINDOW_SECONDS: u64 = 10;
const BUCKETS: usize = WINDOW_SECONDS as usize;

/// One second of counts: `second` says which second the counts belong to,
/// so a bucket left over from an earlier turn of the ring is not counted.
#[derive(Default)]
struct Bucket {
    second: AtomicU64,
    admitted: AtomicU64,
    shed: AtomicU64,
}

/// Counts per second in a ring of [`WINDOW_SECONDS`] buckets. Lock-free:
/// a count that races with the turn of its bucket may land in the old
/// second or be lost, which a gate on a ratio of hundreds does not notice.
pub struct RecentRequests {
    started: Instant,
    buckets: [Bucket; BUCKETS],
}

/// Requests over the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub admitted: u64,
    pub shed: u64,
}

impl Default for RecentRequests {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            buckets: Default::default(),
        }
    }
}

impl RecentRequests {
    pub fn record(&self, shed: bool) {
        self.record_at(self.now(), shed);
    }

    pub fn counts(&self) -> Counts {
        self.counts_at(self.now())
    }

    /// Seconds since start, counted from 1 so that 0 marks an unused bucket.
    fn now(&self) -> u64 {
        self.started.elapsed().as_secs() + 1
    }

    fn record_at(&self, second: u64, shed: bool) {
        let bucket = &self.buckets[(second % WINDOW_SECONDS) as usize];
        let held = bucket.second.load(Ordering::Acquire);
        if held != second
            && bucket
                .second
                .compare_exchange(held, second, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            bucket.admitted.store(0, Ordering::Release);
            bucket.shed.store(0, Ordering::Release);
        }
        let counter = if shed { &bucket.shed } else { &bucket.admitted };
        counter.fetch_add(1, Ordering::AcqRel);
    }

    fn counts_at(&self, second: u64) -> Counts {
        let oldest = second.saturating_sub(WINDOW_SECONDS - 1).max(1);
        self.buckets
            .iter()
            .filter(|b| (oldest..=second).contains(&b.second.load(Ordering::Acquire)))
            .fold(Counts::default(), |sum, b| Counts {
                admitted: sum.admitted + b.admitted.load(Ordering::Acquire),
                shed: sum.shed + b.shed.load(Ordering::Acquire),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cover_the_last_window_and_forget_older_seconds() {
        let recent = RecentRequests::default();
        recent.record_at(1, false);
        recent.record_at(1, true);
        recent.record_at(5, false);
        assert_eq!(
            recent.counts_at(5),
            Counts {
                admitted: 2,
                shed: 1
            }
        );
        // Second 1 has left the window by second 11; second 5 has not.
        assert_eq!(
            recent.counts_at(11),
            Counts {
                admitted: 1,
                shed: 0
            }
        );
        // Second 11 reuses second 1's bucket and starts it from zero.
        recent.record_at(11, true);
        assert_eq!(
            recent.counts_at(11),
            Counts {
                admitted: 1,
                shed: 1
            }
        );
        assert_eq!(recent.counts_at(30), Counts::default());
    }
}
