//! Client-side adaptive throttling (Google SRE book, "Handling Overload").
//! A server that sheds still pays for every request it refuses: reading
//! it, answering it. When a node refuses much of what a client sends, the
//! client refuses the excess itself, at no cost to the node.
//!
//! The client counts, over a decaying window, the requests it made and
//! those the node accepted, and refuses a new request locally with
//! probability `max(0, (requests - ratio * accepts) / (requests + 1))`. In
//! steady state the node then sees about `ratio` times what it accepts, and
//! enough probes get through to notice when it recovers.

use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use tonic::Code;
use tonic::Status;

/// Counts lose half their weight over this long: recent behaviour counts.
const HALF_LIFE: Duration = Duration::from_secs(1);
/// Below this many recent requests a client never refuses one: too few to
/// judge the node by, and too few to load it. A command-line upload retried
/// after a shed or two is not refused by its own client.
const MIN_REQUESTS: f64 = 20.0;

/// The throttle of one node, as seen by one client.
#[derive(Debug)]
pub struct Throttle {
    ratio: f64,
    counts: Mutex<Counts>,
}

#[derive(Debug)]
struct Counts {
    requests: f64,
    accepts: f64,
    at: Instant,
}

impl Counts {
    fn decay_to(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let keep = 0.5f64.powf(elapsed.as_secs_f64() / HALF_LIFE.as_secs_f64());
        self.requests *= keep;
        self.accepts *= keep;
        self.at = now.max(self.at);
    }
}

impl Throttle {
    /// `ratio` is how many requests a client may send per accepted one
    /// before it starts refusing; the SRE book suggests 2, lower is stricter.
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio,
            counts: Mutex::new(Counts {
                requests: 0.0,
                accepts: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// Whether to send a new request now; `coin` is uniform in [0, 1). A
    /// refused request counts at once, a sent one when its [`Ticket`] is
    /// answered or dropped: requests still in flight do not count against
    /// the node, so a burst of new calls is not refused for want of answers.
    pub fn admit(&self, now: Instant, coin: f64) -> Option<Ticket<'_>> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.decay_to(now);
        let refuse = ((c.requests - self.ratio * c.accepts) / (c.requests + 1.0)).max(0.0);
        if c.requests >= MIN_REQUESTS && coin < refuse {
            c.requests += 1.0;
            return None;
        }
        Some(Ticket {
            throttle: self,
            counted: false,
        })
    }

    fn count(&self, now: Instant, accepted: bool) {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.decay_to(now);
        c.requests += 1.0;
        if accepted {
            c.accepts += 1.0;
        }
    }
}

/// A request sent through a [`Throttle`]. Dropped unanswered (the caller
/// gave up), it counts as not accepted.
pub struct Ticket<'a> {
    throttle: &'a Throttle,
    counted: bool,
}

impl Ticket<'_> {
    /// Records the node's answer.
    pub fn answered<T>(mut self, now: Instant, result: &Result<T, Status>) {
        let accepted = result
            .as_ref()
            .map_or_else(|s| accepted(s.code()), |_| true);
        self.throttle.count(now, accepted);
        self.counted = true;
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.counted {
            self.throttle.count(Instant::now(), false);
        }
    }
}

/// Whether an answer with `code` means the node took the request on:
/// anything but a refusal or a request it could not finish in time.
fn accepted(code: Code) -> bool {
    !matches!(
        code,
        Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `n` requests at `now` the throttle lets through, with
    /// evenly spread coins.
    fn admitted(t: &Throttle, now: Instant, n: usize) -> usize {
        (0..n)
            .filter(|i| t.admit(now, (*i as f64 + 0.5) / n as f64).is_some())
            .count()
    }

    /// Sends one request at `now` with `coin`, if admitted, and answers it.
    fn send<T>(t: &Throttle, now: Instant, coin: f64, answer: &Result<T, Status>) -> bool {
        match t.admit(now, coin) {
            Some(ticket) => {
                ticket.answered(now, answer);
                true
            }
            None => false,
        }
    }

    #[test]
    fn a_node_that_accepts_everything_is_never_throttled() {
        let t = Throttle::new(1.2);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(send(&t, now, 0.0, &Ok::<(), Status>(())));
        }
        // Errors the node produced after doing the work count as accepted.
        for _ in 0..1000 {
            assert!(send(
                &t,
                now,
                0.0,
                &Err::<(), _>(Status::not_found("no such recipe"))
            ));
        }
    }

    /// A node that accepts `capacity` requests per 10 ms tick and refuses
    /// the rest, offered `offered` per tick for `secs`; returns the requests
    /// it was sent and accepted over the last quarter of the run.
    fn simulate(
        t: &Throttle,
        start: Instant,
        secs: u64,
        offered: usize,
        capacity: usize,
    ) -> (usize, usize) {
        let ticks = secs * 100;
        let (mut sent, mut accepted) = (0, 0);
        let mut coin = 0.0f64;
        for tick in 0..ticks {
            let now = start + Duration::from_millis(tick * 10);
            let mut sent_this_tick = 0;
            for _ in 0..offered {
                coin = (coin + 0.618_033_988_7).fract();
                let Some(ticket) = t.admit(now, coin) else {
                    continue;
                };
                sent_this_tick += 1;
                let answer = if sent_this_tick <= capacity {
                    Ok(())
                } else {
                    Err(Status::resource_exhausted("shed"))
                };
                if tick >= ticks * 3 / 4 {
                    sent += 1;
                    accepted += usize::from(answer.is_ok());
                }
                ticket.answered(now, &answer);
            }
        }
        (sent, accepted)
    }

    #[test]
    fn a_client_making_few_requests_is_never_refused() {
        let t = Throttle::new(1.2);
        let now = Instant::now();
        for _ in 0..10 {
            assert!(send(
                &t,
                now,
                0.0,
                &Err::<(), _>(Status::resource_exhausted("shed"))
            ));
        }
        // Many more, and it is.
        for _ in 0..100 {
            send(
                &t,
                now,
                0.0,
                &Err::<(), _>(Status::resource_exhausted("shed")),
            );
        }
        assert!(t.admit(now, 0.0).is_none());
    }

    #[test]
    fn a_burst_of_new_calls_is_not_refused_for_want_of_answers() {
        let t = Throttle::new(1.2);
        let now = Instant::now();
        let in_flight: Vec<_> = (0..300).map(|_| t.admit(now, 0.0)).collect();
        assert!(in_flight.iter().all(Option::is_some));
    }

    #[test]
    fn an_overloaded_node_sees_about_ratio_times_what_it_accepts() {
        let t = Throttle::new(1.2);
        let (sent, accepted) = simulate(&t, Instant::now(), 60, 20, 10);
        let seen = sent as f64 / accepted as f64;
        assert!((seen - 1.2).abs() < 0.1, "node saw {seen:.3} per accept");
        // It still accepts nearly its capacity.
        assert!(accepted > 15 * 100 * 10 * 9 / 10, "accepted {accepted}");
    }

    #[test]
    fn at_the_default_ratio_a_node_shedding_a_quarter_is_not_starved() {
        let t = Throttle::new(crate::client::DEFAULT_THROTTLE_RATIO);
        let start = Instant::now();
        let mut sent = 0;
        let mut coin = 0.0f64;
        for i in 0..10_000u64 {
            let now = start + Duration::from_millis(i);
            coin = (coin + 0.618_033_988_7).fract();
            if let Some(ticket) = t.admit(now, coin) {
                sent += 1;
                // The seed's top tier: a quarter shed, whatever the load.
                let answer = if sent % 4 == 0 {
                    Err(Status::resource_exhausted("shed"))
                } else {
                    Ok(())
                };
                ticket.answered(now, &answer);
            }
        }
        assert!(sent > 9_500, "only {sent} of 10000 sent");
    }

    #[test]
    fn timeouts_and_unavailability_are_not_accepts() {
        let t = Throttle::new(1.0);
        let now = Instant::now();
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
        ] {
            for _ in 0..100 {
                send(&t, now, 0.99, &Err::<(), _>(Status::new(code, "")));
            }
        }
        // So is a request its caller gave up on.
        for _ in 0..100 {
            drop(t.admit(now, 0.99));
        }
        assert_eq!(admitted(&t, now, 100), 0, "a node that accepts nothing");
    }

    #[test]
    fn the_throttle_lets_everything_through_once_the_node_recovers() {
        let t = Throttle::new(1.2);
        let start = Instant::now();
        for _ in 0..1000 {
            send(
                &t,
                start,
                0.99,
                &Err::<(), _>(Status::resource_exhausted("shed")),
            );
        }
        assert!(admitted(&t, start, 100) < 5);
        // The node recovers: probes get through, are accepted, and the
        // refusals fade.
        let (sent, accepted) = simulate(&t, start, 60, 10, 10);
        assert_eq!(sent, accepted);
        assert!(sent > 15 * 100 * 10 * 95 / 100, "sent {sent}");
    }
}
