//! Checks of follower-served ("local") reads.
//!
//! A local read is not linearizable: a follower answers from whatever prefix of
//! the Raft log it has applied. Its promise is weaker, and this module checks
//! exactly that promise:
//!
//! 1. **Fresh enough**: a `Found` version is at least the read's `min_version`.
//! 2. **Really written**: the returned `(value, version)` was produced by a put
//!    of that value to that key, invoked before the read completed. For a put
//!    with a known outcome the versions must be equal; for an unknown-outcome put
//!    the first observation (a linearizable get first, then local reads in
//!    invocation order) fixes its version and later ones must agree.
//! 3. **Absent only if possible**: with `floor` the larger of `min_version` and
//!    the version the client last saw, `Absent` is accepted if the key could be
//!    absent at some log index `>= floor`: either some delete of the key
//!    (successful at a version `>= floor`, or of unknown outcome) was invoked
//!    before the read completed, or the last write of the key with a known
//!    version `<= floor` is a delete, or there is none. Unknown puts whose version
//!    is unknown are assumed not to have happened, which only accepts more.
//! 4. **Monotonic per client**: a client's local read of a key never returns a
//!    lower version than any of its earlier local reads of that key that had
//!    completed when it was invoked (`Absent` carries no version and so is only
//!    held to rule 3 with the raised floor).
//!
//! Failed and unknown local reads promise nothing and are skipped.

use crate::history::{Call, Op, Outcome};
use std::collections::HashMap;

/// Result of checking the local reads of a history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalReadReport {
    /// Local reads with a `Found` or `Absent` reply.
    pub reads_checked: usize,
    pub violations: Vec<LocalReadViolation>,
    /// Records that cannot describe a real reply and were skipped: `(op index, why)`.
    pub malformed: Vec<(usize, String)>,
}

/// A local read that broke its promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReadViolation {
    /// Index of the offending local read in the checked history.
    pub op: usize,
    pub explanation: String,
}

impl LocalReadReport {
    /// True when no read broke its promise and no record was malformed.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty() && self.malformed.is_empty()
    }
}

/// A write to one key that took, or may have taken, effect.
struct Write<'a> {
    index: usize,
    invoke: u64,
    version: Option<u64>,
    /// `None` for a delete.
    value: Option<&'a str>,
}

/// A local read already checked, as later reads of the same client see it.
struct Earlier {
    complete: Option<u64>,
    /// `None` for `Absent`.
    version: Option<u64>,
}

/// Checks every local read in `history` against the rules in the module docs.
pub fn check(history: &[Op]) -> LocalReadReport {
    let mut report = LocalReadReport::default();
    let mut writes: HashMap<&str, Vec<Write>> = HashMap::new();
    let mut reads = Vec::new();
    for (index, op) in history.iter().enumerate() {
        if let Err(why) = op.validate() {
            report.malformed.push((index, why));
            continue;
        }
        let version = match op.outcome {
            Outcome::Written { version } | Outcome::Deleted { version } => Some(version),
            Outcome::Unknown { .. } => None,
            _ => {
                if let Call::LocalRead { .. } = op.call
                    && matches!(op.outcome, Outcome::Found { .. } | Outcome::Absent)
                {
                    reads.push(index);
                }
                continue;
            }
        };
        let (key, value) = match &op.call {
            Call::Put { key, value, .. } => (key, Some(value.as_str())),
            Call::Delete { key, .. } => (key, None),
            _ => continue,
        };
        writes.entry(key).or_default().push(Write {
            index,
            invoke: op.invoke_ns,
            version,
            value,
        });
    }

    // Versions of unknown-outcome puts, fixed by their first observation; keyed by
    // (key, index into that key's writes). Linearizable gets come first because
    // they are the stronger evidence.
    let mut fixed: HashMap<(&str, usize), (u64, usize)> = HashMap::new();
    for (index, op) in history.iter().enumerate() {
        if let (Call::Get { key }, Outcome::Found { value, version }) = (&op.call, &op.outcome)
            && let Some(w) = unknown_writer(&writes, key, value)
        {
            fixed.entry((key.as_str(), w)).or_insert((*version, index));
        }
    }

    reads.sort_by_key(|&i| history[i].invoke_ns);
    report.reads_checked = reads.len();
    // Earlier local reads per (client, key).
    let mut seen: HashMap<(u32, &str), Vec<Earlier>> = HashMap::new();
    for i in reads {
        let op = &history[i];
        let Call::LocalRead { key, min_version } = &op.call else {
            continue;
        };
        let earlier = seen.entry((op.client, key.as_str())).or_default();
        let last_seen = earlier
            .iter()
            .filter(|e| e.complete.is_some_and(|c| c < op.invoke_ns))
            .filter_map(|e| e.version)
            .max()
            .unwrap_or(0);
        let floor = last_seen.max(*min_version);
        let key_writes = writes.get(key.as_str()).map_or(&[][..], |w| w.as_slice());
        let complete = op.complete_ns.unwrap_or(u64::MAX);
        let problem = match &op.outcome {
            Outcome::Found { version, .. } if version < min_version => {
                Some(format!("returned v{version}, below its min_version"))
            }
            Outcome::Found { version, .. } if *version < last_seen => Some(format!(
                "returned v{version}, but this client had already read v{last_seen} of this key"
            )),
            Outcome::Found { value, version } => {
                found_problem(key_writes, &mut fixed, key, value, *version, complete, i)
            }
            _ if absent_possible(key_writes, &fixed, key, floor, complete) => None,
            _ => Some(format!(
                "returned absent, but the key is present at every version from v{floor} on"
            )),
        };
        if let Some(why) = problem {
            report.violations.push(LocalReadViolation {
                op: i,
                explanation: format!("#{i} {op}: {why}"),
            });
        }
        let version = match op.outcome {
            Outcome::Found { version, .. } => Some(version),
            _ => None,
        };
        earlier.push(Earlier {
            complete: op.complete_ns,
            version,
        });
    }
    report
}

/// Rule 2 of the module docs for a read of `key` that found `(value, version)`
/// and completed at `complete`; fixes the version of an unknown put it reveals.
fn found_problem<'a>(
    writes: &[Write],
    fixed: &mut HashMap<(&'a str, usize), (u64, usize)>,
    key: &'a str,
    value: &str,
    version: u64,
    complete: u64,
    read: usize,
) -> Option<String> {
    let Some(w) = writes.iter().position(|w| w.value == Some(value)) else {
        return Some("returned a value never written to this key".to_string());
    };
    let write = &writes[w];
    if write.invoke > complete {
        return Some(format!(
            "returned the value of #{}, invoked only after the read completed",
            write.index
        ));
    }
    let (expected, source) = match (write.version, fixed.get(&(key, w))) {
        (Some(v), _) => (v, write.index),
        (None, Some(&(v, by))) => (v, by),
        (None, None) => {
            fixed.insert((key, w), (version, read));
            return None;
        }
    };
    (expected != version)
        .then(|| format!("returned v{version}, but #{source} shows that value at v{expected}"))
}

/// Index into `writes[key]` of the unknown-outcome put that wrote `value`
/// (values are unique).
fn unknown_writer(writes: &HashMap<&str, Vec<Write>>, key: &str, value: &str) -> Option<usize> {
    writes
        .get(key)?
        .iter()
        .position(|w| w.value == Some(value) && w.version.is_none())
}

/// Rule 3 of the module docs.
fn absent_possible(
    writes: &[Write],
    fixed: &HashMap<(&str, usize), (u64, usize)>,
    key: &str,
    floor: u64,
    complete: u64,
) -> bool {
    let late_delete = writes
        .iter()
        .any(|w| w.value.is_none() && w.invoke <= complete && w.version.is_none_or(|v| v >= floor));
    let version = |(i, w): (usize, &Write)| w.version.or_else(|| fixed.get(&(key, i)).map(|f| f.0));
    let last_before = writes
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((version((i, w))?, w.value.is_none())))
        .filter(|&(v, _)| v <= floor)
        .max();
    late_delete || last_before.is_none_or(|(_, is_delete)| is_delete)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::build::*;

    fn local(client: u32, t0: u64, t1: u64, min_version: u64, outcome: Outcome) -> Op {
        let call = Call::LocalRead {
            key: "k".into(),
            min_version,
        };
        op(client, t0, t1, call, outcome)
    }

    /// Indexes of the local reads reported as violations.
    fn violations(history: &[Op]) -> Vec<usize> {
        let report = check(history);
        assert!(report.malformed.is_empty(), "{report:?}");
        report.violations.iter().map(|v| v.op).collect()
    }

    #[test]
    fn found_must_be_fresh_enough_and_really_written() {
        let mut history = vec![
            op(1, 0, 10, put("k", "a", None), written(3)),
            op(1, 20, 30, put("k", "b", None), written(6)),
            local(2, 40, 50, 3, found("a", 3)),
            local(3, 40, 50, 6, found("b", 6)),
            local(4, 40, 50, 4, found("a", 3)),
            local(5, 40, 50, 0, found("ghost", 6)),
            local(6, 40, 50, 0, found("a", 6)),
        ];
        assert_eq!(violations(&history), vec![4, 5, 6]);
        // A follower cannot know a write that was not even proposed yet.
        history.push(op(1, 100, 110, put("k", "c", None), written(9)));
        history.push(local(7, 60, 70, 0, found("c", 9)));
        assert_eq!(violations(&history), vec![4, 5, 6, 8]);
    }

    #[test]
    fn unknown_puts_get_their_version_from_the_first_observation() {
        let history = [
            op(1, 0, 10, put("k", "a", None), unknown()),
            op(1, 5, 15, put("k", "b", None), unknown()),
            local(2, 20, 30, 0, found("a", 4)),
            local(3, 40, 50, 0, found("a", 5)),
            op(4, 20, 30, get("k"), found("b", 7)),
            local(5, 40, 50, 0, found("b", 8)),
        ];
        assert_eq!(violations(&history), vec![3, 5]);
    }

    #[test]
    fn absent_only_where_the_key_can_be_absent() {
        let history = [
            local(9, 0, 5, 0, Outcome::Absent),
            op(1, 10, 20, put("k", "a", None), written(3)),
            op(1, 30, 40, del("k", None), deleted(5)),
            op(1, 50, 60, put("k", "b", None), written(7)),
            local(2, 70, 80, 3, Outcome::Absent),
            local(3, 70, 80, 6, Outcome::Absent),
            local(4, 70, 80, 7, Outcome::Absent),
        ];
        assert_eq!(violations(&history), vec![6]);
        let mut with_unknown_delete = history.to_vec();
        with_unknown_delete.push(op(1, 65, 75, del("k", None), unknown()));
        assert_eq!(violations(&with_unknown_delete), Vec::<usize>::new());
    }

    #[test]
    fn a_client_never_goes_back_in_time() {
        let history = [
            op(1, 0, 10, put("k", "a", None), written(3)),
            op(1, 20, 30, del("k", None), deleted(4)),
            op(1, 40, 50, put("k", "b", None), written(6)),
            local(2, 60, 70, 0, found("b", 6)),
            local(2, 80, 90, 0, found("a", 3)),
            // Absent is possible at v4 or v5, but this client already saw v6.
            local(2, 100, 110, 0, Outcome::Absent),
            // Another client may still lag behind.
            local(3, 100, 110, 0, found("a", 3)),
            local(3, 120, 130, 0, Outcome::Absent),
            // Overlapping reads of one client are not ordered.
            local(4, 60, 100, 0, found("b", 6)),
            local(4, 90, 95, 0, found("a", 3)),
        ];
        assert_eq!(violations(&history), vec![4, 5]);
    }

    #[test]
    fn failed_and_unknown_reads_are_skipped() {
        let report = check(&[
            local(1, 0, 10, 5, failed()),
            local(1, 20, 30, 5, unknown()),
            local(1, 40, 50, 0, Outcome::Absent),
            op(1, 60, 70, get("k"), written(1)),
        ]);
        assert_eq!(report.reads_checked, 1);
        assert!(report.violations.is_empty());
        assert_eq!(report.malformed.len(), 1);
        assert!(!report.is_ok());
    }
}
