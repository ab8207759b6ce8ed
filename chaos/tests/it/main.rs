//! The fault-injection suite, short enough for CI: every fault once with a
//! fresh seed, and the leader crash that once made logs diverge.

mod lost_tail;
mod short_runs;
