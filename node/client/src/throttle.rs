//! Client-side adaptive throttling. A node that sheds still pays for every
//! request it refuses: reading it, answering it. When a node refuses much of
//! what a client sends, the client refuses the excess itself, at no cost to
//! the node (the idea of the SRE book's "Handling Overload").
//!
//! Per node, the client keeps the fraction of new requests it sends and a
//! running average of the share of sent requests the node accepted. Each
//! answer multiplies the fraction by `(ratio * accepted share) ^ GAIN`, so
//! it settles where the node accepts `1 / ratio` of what it is sent: an
//! overloaded node sees about `ratio` times what it can serve. Steering by
//! the averaged share rather than by each answer keeps a node's random
//! refusals (a probabilistic CPU tier) from throttling a client by chance.
//! Between answers the fraction recovers towards 1 with a half-life, so a
//! quiet spell forgets old refusals.
//!
//! The SRE book's formula also counts the requests the client refused
//! itself; when a node sheds a fixed share whatever its load (a CPU tier
//! while a neighbour holds the CPU), that feedback can run away until the
//! client refuses nearly everything. Counting only the requests the node
//! saw, a node that sheds less than `1 - 1 / ratio` is never throttled.

use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use tonic::Code;
use tonic::Status;

/// Exponent of the per-answer correction of the sent fraction.
const GAIN: f64 = 0.05;
/// Weight of each answer in the accepted share.
const SHARE_WEIGHT: f64 = 0.05;
/// The refused fraction halves over this long without answers.
const HALF_LIFE: Duration = Duration::from_secs(1);
/// Always send at least this fraction, so recovery is noticed.
const FLOOR: f64 = 0.02;

/// The throttle of one node, as seen by one client.
#[derive(Debug)]
pub struct Throttle {
    ratio: f64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The fraction of new requests sent.
    send: f64,
    /// Running average of the sent requests the node accepted.
    accepted: f64,
    at: Instant,
}

impl State {
    fn recover_to(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        let keep = 0.5f64.powf(elapsed.as_secs_f64() / HALF_LIFE.as_secs_f64());
        self.send = 1.0 - (1.0 - self.send) * keep;
        self.at = now.max(self.at);
    }
}

impl Throttle {
    /// `ratio` is how many requests a client may send per accepted one
    /// before it refuses some itself (at least 1; lower is stricter).
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio,
            state: Mutex::new(State {
                send: 1.0,
                accepted: 1.0,
                at: Instant::now(),
            }),
        }
    }

    /// Whether to send a new request now (`coin` is uniform in [0, 1)),
    /// with the ticket to record its answer on.
    pub fn admit(&self, now: Instant, coin: f64) -> Option<Ticket<'_>> {
        let send = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.recover_to(now);
            coin < state.send
        };
        // Lazily: a ticket dropped unused would count as a refusal.
        send.then(|| Ticket {
            throttle: self,
            counted: false,
        })
    }

    fn count(&self, now: Instant, accepted: bool) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.recover_to(now);
        state.accepted += SHARE_WEIGHT * (f64::from(u8::from(accepted)) - state.accepted);
        let step = (self.ratio * state.accepted).powf(GAIN);
        state.send = (state.send * step).clamp(FLOOR, 1.0);
    }
}

/// A request sent through a [`Throttle`]. Dropped unanswered (the caller
/// gave up), it counts as refused.
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

    fn shed() -> Result<(), Status> {
        Err(Status::resource_exhausted("shed"))
    }

    /// Sends one request at `now` with `coin`, if admitted, and answers it.
    fn send(t: &Throttle, now: Instant, coin: f64, answer: &Result<(), Status>) -> bool {
        match t.admit(now, coin) {
            Some(ticket) => {
                ticket.answered(now, answer);
                true
            }
            None => false,
        }
    }

    /// Offers `offered` requests per 10 ms tick for `secs` to a node that
    /// answers each one sent with `node(sent so far this tick)`; returns the
    /// requests sent and accepted over the last half of the run.
    fn simulate(
        t: &Throttle,
        start: Instant,
        secs: u64,
        offered: usize,
        mut node: impl FnMut(usize) -> Result<(), Status>,
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
                let answer = node(sent_this_tick);
                if tick >= ticks / 2 {
                    sent += 1;
                    accepted += usize::from(answer.is_ok());
                }
                ticket.answered(now, &answer);
            }
        }
        (sent, accepted)
    }

    /// A node that serves `capacity` requests per tick and sheds the rest.
    fn capacity(capacity: usize) -> impl FnMut(usize) -> Result<(), Status> {
        move |n| if n <= capacity { Ok(()) } else { shed() }
    }

    #[test]
    fn a_node_that_accepts_everything_is_never_throttled() {
        let t = Throttle::new(1.4);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(send(&t, now, 0.999, &Ok(())));
        }
        // Errors the node produced after doing the work count as accepted.
        for _ in 0..1000 {
            assert!(send(
                &t,
                now,
                0.999,
                &Err(Status::not_found("no such recipe"))
            ));
        }
    }

    #[test]
    fn a_burst_of_new_calls_is_not_refused_for_want_of_answers() {
        let t = Throttle::new(1.4);
        let now = Instant::now();
        let in_flight: Vec<_> = (0..300).map(|_| t.admit(now, 0.999)).collect();
        assert!(in_flight.iter().all(Option::is_some));
    }

    #[test]
    fn an_overloaded_node_sees_about_ratio_times_what_it_can_serve() {
        for offered in [20, 30, 60] {
            let t = Throttle::new(1.4);
            let (sent, accepted) = simulate(&t, Instant::now(), 30, offered, capacity(10));
            let seen = sent as f64 / accepted as f64;
            assert!(
                (1.3..1.6).contains(&seen),
                "offered {offered}/tick: node saw {seen:.3} per accept"
            );
            // It still serves its capacity.
            assert!(accepted >= 15 * 100 * 10 * 95 / 100, "accepted {accepted}");
        }
    }

    #[test]
    fn a_node_shedding_a_fixed_share_below_the_ratio_is_not_throttled() {
        // The seed's top CPU tier sheds a quarter whatever the load; at the
        // default ratio the client keeps sending nearly everything.
        let t = Throttle::new(crate::DEFAULT_THROTTLE_RATIO);
        let mut n = 0u64;
        let quarter = move |_| {
            n += 1;
            // Deterministic but irregular: shed when a hashed counter says so.
            if n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 62 == 0 {
                shed()
            } else {
                Ok(())
            }
        };
        let (sent, _) = simulate(&t, Instant::now(), 30, 10, quarter);
        assert!(sent >= 15 * 100 * 10 * 90 / 100, "only {sent} sent");
    }

    #[test]
    fn timeouts_unavailability_and_abandoned_calls_are_not_accepts() {
        let now = Instant::now();
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
        ] {
            let t = Throttle::new(1.4);
            for _ in 0..100 {
                send(&t, now, 0.0, &Err(Status::new(code, "")));
            }
            assert!(t.admit(now, 0.5).is_none(), "{code:?} counted as accepted");
        }
        let t = Throttle::new(1.4);
        for _ in 0..100 {
            drop(t.admit(now, 0.0));
        }
        assert!(
            t.admit(now, 0.5).is_none(),
            "an abandoned call counted as accepted"
        );
    }

    #[test]
    fn a_few_refusals_barely_throttle() {
        let t = Throttle::new(1.4);
        let now = Instant::now();
        send(&t, now, 0.0, &shed());
        send(&t, now, 0.0, &shed());
        assert!(t.admit(now, 0.75).is_some());
    }

    #[test]
    fn the_throttle_lets_everything_through_once_the_node_recovers() {
        let t = Throttle::new(1.4);
        let start = Instant::now();
        for _ in 0..1000 {
            send(&t, start, 0.0, &shed());
        }
        assert!(t.admit(start, 0.1).is_none());
        // Still probing at the floor.
        assert!(t.admit(start, 0.01).is_some());
        // The node recovers: within seconds every request is sent again.
        let (sent, accepted) = simulate(&t, start, 10, 10, |_| Ok(()));
        assert_eq!(sent, accepted);
        assert_eq!(sent, 5 * 100 * 10);
    }
}
