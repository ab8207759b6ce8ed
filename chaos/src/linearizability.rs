//! Linearizability checking of recorded RecipeStore histories.
//!
//! The store is modelled as one versioned register per key: absent, or a value
//! with the version (Raft log index) of the write that produced it. Because
//! linearizability is compositional, each key is checked on its own; a `List` is
//! not an atomic snapshot, so it is split into one version-only read per key of
//! the history whose name has the list's prefix (present at a version, or absent).
//! Splitting makes the per-key check a necessary condition only: cross-key facts
//! are checked separately where cheap (no two writes share a version; a write that
//! starts after another completed gets a higher version).
//!
//! # Model
//! A key's state is absent or `(value, version)`, plus `next_min`: the least
//! version the next write may have (one past the last write's). A write with
//! version `v` needs `v >= next_min` and its `if_version` to hold (`0`: absent);
//! a successful delete also needs the key present (deleting an absent key is
//! `NotFound`). A mismatch needs the condition to fail and `current` to be the
//! key's version; `NotFound`, an absent read and a list without the key need the
//! key absent; a get needs the exact value and version, a list entry the version.
//!
//! # Search
//! Wing & Gong's search with Lowe's improvements: operations are linearized "just
//! in time" (the candidates are those invoked before the earliest pending
//! completion) and explored configurations are memoized. Definite failures and
//! failed or unknown reads are dropped; unknown-outcome writes are optional: they
//! have no completion, may take effect at any point after their invocation, and
//! may be left out.
//!
//! # Unknown versions
//! An unknown-outcome put whose value some get returned has that version (values
//! are unique). Otherwise, if it takes effect, its version is symbolic: some
//! integer `>= next_min` that no known write has. For bounding later writes it
//! counts as `next_min`, its least possible value, which allows the most. When an
//! observation (a list entry, an `if_version`, a mismatch's `current`) meets the
//! symbolic version while it is still current, it is unified with the observed
//! number if that number is possible, and `next_min` moves past it. Once a later
//! write overwrites it, the symbolic version can never be observed again, so
//! nothing is lost by not remembering more about it.
//!
//! # Pruning unknown writes
//! Unknown writes that nothing can observe multiply the search space without ever
//! changing the verdict, so they are removed before searching when that is
//! provably sound:
//! - an unobserved unknown put is kept only if some operation that could complete
//!   after its invocation needs the key present without naming a version any known
//!   write had (a successful delete; a list entry, mismatch `current` or
//!   `if_version` naming an otherwise unexplained version). Otherwise, in any
//!   linearization the next operation after it can only be an unconditional write
//!   or an unknown write that no longer matters, so removing it keeps the
//!   linearization valid;
//! - an unknown delete is kept only if some operation that could complete after
//!   its invocation needs the key absent (an absent read, `NotFound`, a mismatch
//!   with `current: None`, an `if_version: Some(0)` write), by the same argument.
//!
//! # Keeping the search small
//! Each of these preserves completeness; the randomized tests compare the search
//! with exhaustive enumeration.
//! - Memoization with dominance: a configuration is the set of linearized
//!   required operations and the current value and version; a visit is skipped if
//!   an earlier visit (which failed) had a `next_min` no higher and used a subset
//!   of the optional writes, since both only leave more choices.
//! - Required candidates are tried before optional ones, so the configurations
//!   that dominate are the ones explored first.
//! - Unobserved unknown puts share one anonymous value, and of several unused
//!   optional writes with identical effect only the earliest invoked is offered.
//! - A required observation that holds without changing the state is linearized
//!   at once, without trying alternatives (see `Search::narrow`).

use crate::history::{Call, Op, Outcome};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::{self, Write as _};

/// Search limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// Configurations explored per key before giving up with
    /// [`Verdict::Inconclusive`]; bounds both time and memory.
    pub max_states_per_key: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_states_per_key: 1_000_000,
        }
    }
}

/// Result of checking a whole history.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Verdict per key, for every key any checked operation touched.
    pub keys: BTreeMap<String, KeyReport>,
    /// Violations of store-wide version rules, which involve several keys.
    pub cross_key: Vec<Violation>,
    /// Records skipped because they cannot describe a real reply, or repeat a
    /// value already written: `(op index, why)`.
    pub malformed: Vec<(usize, String)>,
}

/// Result for one key.
#[derive(Debug, Clone)]
pub struct KeyReport {
    pub verdict: Verdict,
    pub stats: KeyStats,
}

/// Whether one key's operations can be linearized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    Violation(Violation),
    /// The search budget ran out; nothing is known. Says how far it got.
    Inconclusive(String),
}

/// A proof that the history is not linearizable, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub explanation: String,
    /// Indexes (into the checked history) of the operations the explanation names.
    pub ops: Vec<usize>,
}

/// How much work checking a key took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyStats {
    /// Operations searched (after dropping definite failures, failed reads and
    /// pruned unknown writes; each list contributes one per key).
    pub ops_checked: usize,
    /// Unknown-outcome writes, before pruning.
    pub unknown_writes: usize,
    /// Unknown-outcome writes removed as provably irrelevant.
    pub unknown_writes_pruned: usize,
    /// Distinct configurations the search visited (0 if a read was refuted
    /// before searching).
    pub states_explored: usize,
}

impl Report {
    /// True when every key is linearizable and nothing was malformed or violated.
    pub fn is_ok(&self) -> bool {
        self.cross_key.is_empty()
            && self.malformed.is_empty()
            && self
                .keys
                .values()
                .all(|k| k.verdict == Verdict::Linearizable)
    }

    /// Keys whose history is not linearizable.
    pub fn violations(&self) -> impl Iterator<Item = (&str, &Violation)> {
        self.keys.iter().filter_map(|(key, r)| match &r.verdict {
            Verdict::Violation(v) => Some((key.as_str(), v)),
            _ => None,
        })
    }

    /// Statistics summed over all keys.
    pub fn totals(&self) -> KeyStats {
        self.keys
            .values()
            .fold(KeyStats::default(), |t, k| KeyStats {
                ops_checked: t.ops_checked + k.stats.ops_checked,
                unknown_writes: t.unknown_writes + k.stats.unknown_writes,
                unknown_writes_pruned: t.unknown_writes_pruned + k.stats.unknown_writes_pruned,
                states_explored: t.states_explored + k.stats.states_explored,
            })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.totals();
        writeln!(
            f,
            "{} keys, {} operations checked, {} unknown writes ({} pruned), {} states explored",
            self.keys.len(),
            t.ops_checked,
            t.unknown_writes,
            t.unknown_writes_pruned,
            t.states_explored
        )?;
        for (index, why) in &self.malformed {
            writeln!(f, "malformed record #{index}: {why}")?;
        }
        for v in &self.cross_key {
            writeln!(f, "VIOLATION (across keys): {}", v.explanation)?;
        }
        for (key, r) in &self.keys {
            match &r.verdict {
                Verdict::Linearizable => {}
                Verdict::Violation(v) => writeln!(f, "VIOLATION on {key:?}: {}", v.explanation)?,
                Verdict::Inconclusive(why) => writeln!(f, "INCONCLUSIVE on {key:?}: {why}")?,
            }
        }
        Ok(())
    }
}

/// Checks `history` with the default [`Config`].
pub fn check(history: &[Op]) -> Report {
    check_with(history, &Config::default())
}

/// Which log a version of a key comes from: versions are unique, and grow
/// with time, among the writes of one log only (see [`check_spaced`]).
pub type Space = dyn Fn(&str, u64) -> u64;

/// Checks the linearizable operations of `history` (local reads are
/// ignored), of a store whose versions all come from one log.
pub fn check_with(history: &[Op], config: &Config) -> Report {
    check_spaced(history, config, &|_, _| 0)
}

/// Checks the linearizable operations of `history`, of a store whose
/// versions come from several logs: `space(key, version)` names the log
/// the write of `key` at `version` was appended to. The cross-key rules
/// (versions unique, later writes higher) hold within one space, and an
/// unknown write's version may coincide with another key's in another one.
pub fn check_spaced(history: &[Op], config: &Config, space: &Space) -> Report {
    let mut report = Report::default();
    let mut valid = Vec::new();
    // Reads identify writes by value, so a repeated value makes a record unusable.
    let mut writer_of: HashMap<&str, usize> = HashMap::new();
    for (index, op) in history.iter().enumerate() {
        let repeated = match &op.call {
            Call::LocalRead { .. } => continue,
            Call::Put { value, .. } => writer_of.insert(value, index),
            _ => None,
        };
        match (op.validate(), repeated) {
            (Err(why), _) => report.malformed.push((index, why)),
            (Ok(()), Some(first)) => report.malformed.push((
                index,
                format!("writes the value #{first} wrote; values must be unique"),
            )),
            (Ok(()), None) => valid.push(index),
        }
    }
    let mut keys = split_by_key(history, &valid);
    report.cross_key = cross_key_violations(history, &valid, space);

    // Versions fixed by reads must be known before any key is searched, since a
    // symbolic version may never take a version that another write holds.
    let mut prechecked = BTreeMap::new();
    for (key, kh) in keys.iter_mut() {
        if let Err(v) = kh.derive_versions(history) {
            prechecked.insert(key.clone(), v);
        }
    }
    let mut known_in: HashSet<(u64, u64)> = HashSet::new();
    for (key, kh) in &keys {
        known_in.extend(kh.ops.iter().filter_map(|o| match o.action {
            Action::Put { version, .. } | Action::Delete { version, .. } => {
                version.map(|v| (space(key, v), v))
            }
            _ => None,
        }));
    }

    for (key, kh) in keys {
        // The versions another write holds in the log this key's write
        // at that version would be appended to.
        let known: HashSet<u64> = known_in
            .iter()
            .filter(|&&(s, v)| space(&key, v) == s)
            .map(|&(_, v)| v)
            .collect();
        let unknown_writes = kh.ops.iter().filter(|o| !o.required).count();
        let mut stats = KeyStats {
            unknown_writes,
            ..KeyStats::default()
        };
        let verdict = if let Some(v) = prechecked.remove(&key) {
            stats.ops_checked = kh.ops.len();
            Verdict::Violation(v)
        } else {
            let ops = prune(kh.ops, &known);
            stats.ops_checked = ops.len();
            stats.unknown_writes_pruned =
                unknown_writes - ops.iter().filter(|o| !o.required).count();
            let mut search = Search::new(&ops, &known);
            let verdict = search.run(config.max_states_per_key, history, &key, &kh.values);
            stats.states_explored = search.states;
            verdict
        };
        report.keys.insert(key, KeyReport { verdict, stats });
    }
    report
}

/// Index into a key's interned values.
type ValueId = usize;

/// The value of every unknown put whose value no get returned. No read can match
/// such a value, so they are interchangeable, and sharing one id lets the
/// memoization treat states that differ only in which of them is current as one.
const ANONYMOUS: ValueId = ValueId::MAX;

/// What one operation does or observes on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Action {
    /// A put that took effect, or (if optional) may have. `version: None` means
    /// unknown; `cond` is its `if_version`.
    Put {
        value: ValueId,
        version: Option<u64>,
        cond: Option<u64>,
    },
    Delete {
        version: Option<u64>,
        cond: Option<u64>,
    },
    Found {
        value: ValueId,
        version: u64,
    },
    /// A list saw the key present at this version.
    HasVersion(u64),
    /// A read, list or `NotFound` delete saw the key absent.
    Absent,
    /// A conditional write failed because the version was `current`.
    Mismatch {
        cond: u64,
        current: Option<u64>,
    },
}

#[derive(Debug, Clone)]
struct KeyOp {
    /// Index into the checked history.
    index: usize,
    invoke: u64,
    /// `None`: never completes (optional writes, or replies without a time).
    complete: Option<u64>,
    action: Action,
    /// Required operations certainly happened; optional ones (unknown-outcome
    /// writes) may be left out.
    required: bool,
}

#[derive(Default)]
struct KeyHistory {
    ops: Vec<KeyOp>,
    /// Value names by id, for explanations.
    values: Vec<String>,
    value_ids: HashMap<String, ValueId>,
}

impl KeyHistory {
    fn value_id(&mut self, value: &str) -> ValueId {
        if let Some(&id) = self.value_ids.get(value) {
            return id;
        }
        let id = self.values.len();
        self.values.push(value.to_string());
        self.value_ids.insert(value.to_string(), id);
        id
    }

    fn push(&mut self, index: usize, op: &Op, action: Action, required: bool) {
        self.ops.push(KeyOp {
            index,
            invoke: op.invoke_ns,
            complete: if required { op.complete_ns } else { None },
            action,
            required,
        });
    }

    /// Gives each unknown put whose value a get returned that get's version, and
    /// rejects gets that no put can explain, with a direct explanation.
    fn derive_versions(&mut self, history: &[Op]) -> Result<(), Violation> {
        let mut writer: HashMap<ValueId, usize> = HashMap::new();
        for (i, o) in self.ops.iter().enumerate() {
            if let Action::Put { value, .. } = o.action {
                writer.insert(value, i);
            }
        }
        // Version fixed for each unknown put, and the read that fixed it.
        let mut derived: HashMap<usize, (u64, usize)> = HashMap::new();
        for read in &self.ops {
            let Action::Found { value, version } = read.action else {
                continue;
            };
            let fail = |why: String, ops: Vec<usize>| Violation {
                explanation: format!("#{} {} — {why}", read.index, history[read.index]),
                ops,
            };
            let Some(&w) = writer.get(&value) else {
                return Err(fail(
                    "no put ever wrote that value to this key".into(),
                    vec![read.index],
                ));
            };
            let write = &self.ops[w];
            let both = vec![write.index, read.index];
            if read.complete.is_some_and(|c| c < write.invoke) {
                let why = format!(
                    "its write #{} was invoked only after the read completed",
                    write.index
                );
                return Err(fail(why, both));
            }
            match write.action {
                Action::Put {
                    version: Some(v), ..
                } if v != version => {
                    let why = format!("#{} wrote that value at v{v}", write.index);
                    return Err(fail(why, both));
                }
                Action::Put { version: None, .. } => match derived.get(&w) {
                    Some(&(v, other)) if v != version => {
                        let why = format!(
                            "#{other} read the same value (from unknown-outcome put #{}) at v{v}",
                            write.index
                        );
                        return Err(fail(why, vec![write.index, other, read.index]));
                    }
                    _ => {
                        derived.insert(w, (version, read.index));
                    }
                },
                _ => {}
            }
        }
        for (w, (v, _)) in derived {
            if let Action::Put { version, .. } = &mut self.ops[w].action {
                *version = Some(v);
            }
        }
        Ok(())
    }
}

/// Splits the valid operations into per-key operation lists.
fn split_by_key(history: &[Op], valid: &[usize]) -> BTreeMap<String, KeyHistory> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for &i in valid {
        match (&history[i].call, &history[i].outcome) {
            (Call::List { .. }, Outcome::Listed { entries }) => {
                names.extend(entries.iter().map(|e| e.key.as_str()));
            }
            (call, _) => names.extend(call.key()),
        }
    }
    let mut keys: BTreeMap<String, KeyHistory> = names
        .iter()
        .map(|k| (k.to_string(), KeyHistory::default()))
        .collect();
    for &i in valid {
        let op = &history[i];
        if let Call::List { prefix } = &op.call {
            let Outcome::Listed { entries } = &op.outcome else {
                continue;
            };
            let seen: HashMap<&str, u64> = entries
                .iter()
                .map(|e| (e.key.as_str(), e.version))
                .collect();
            for name in names
                .range(prefix.as_str()..)
                .take_while(|k| k.starts_with(prefix.as_str()))
            {
                let action = seen
                    .get(name)
                    .map_or(Action::Absent, |&v| Action::HasVersion(v));
                if let Some(kh) = keys.get_mut(*name) {
                    kh.push(i, op, action, true);
                }
            }
            continue;
        }
        let Some(kh) = op.call.key().and_then(|k| keys.get_mut(k)) else {
            continue;
        };
        let unknown = matches!(op.outcome, Outcome::Unknown { .. });
        let action = match (&op.call, &op.outcome) {
            (_, Outcome::Failed { .. }) => continue,
            (
                Call::Put {
                    value, if_version, ..
                },
                Outcome::Written { .. } | Outcome::Unknown { .. },
            ) => {
                let version = match op.outcome {
                    Outcome::Written { version } => Some(version),
                    _ => None,
                };
                let value = kh.value_id(value);
                Action::Put {
                    value,
                    version,
                    cond: *if_version,
                }
            }
            (Call::Delete { if_version, .. }, Outcome::Deleted { version }) => Action::Delete {
                version: Some(*version),
                cond: *if_version,
            },
            (Call::Delete { if_version, .. }, Outcome::Unknown { .. }) => Action::Delete {
                version: None,
                cond: *if_version,
            },
            (Call::Delete { .. }, Outcome::NotFound) | (Call::Get { .. }, Outcome::Absent) => {
                Action::Absent
            }
            (
                Call::Put { if_version, .. } | Call::Delete { if_version, .. },
                Outcome::VersionMismatch { current },
            ) => Action::Mismatch {
                cond: if_version.unwrap_or_default(),
                current: *current,
            },
            (Call::Get { .. }, Outcome::Found { value, version }) => Action::Found {
                value: kh.value_id(value),
                version: *version,
            },
            // Unknown reads, and anything `validate` rejected, tell nothing.
            _ => continue,
        };
        kh.push(i, op, action, !unknown);
    }
    keys
}

/// Rules that a per-key check cannot see: within one log (a space), versions
/// are log indexes, so two successful writes never share one, and a write
/// invoked after another completed is appended after it.
fn cross_key_violations(history: &[Op], valid: &[usize], space: &Space) -> Vec<Violation> {
    let mut by_space: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    for &i in valid {
        if let Outcome::Written { version } | Outcome::Deleted { version } = history[i].outcome {
            let key = match &history[i].call {
                Call::Put { key, .. } | Call::Delete { key, .. } => key.as_str(),
                _ => continue,
            };
            by_space
                .entry(space(key, version))
                .or_default()
                .push((i, version));
        }
    }
    by_space
        .into_values()
        .flat_map(|writes| one_log_violations(history, writes))
        .collect()
}

/// [`cross_key_violations`] among the writes of one log.
fn one_log_violations(history: &[Op], mut writes: Vec<(usize, u64)>) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut by_version: HashMap<u64, usize> = HashMap::new();
    for &(i, v) in &writes {
        if let Some(&first) = by_version.get(&v) {
            found.push(Violation {
                explanation: format!(
                    "writes #{first} {} and #{i} {} were both given v{v}",
                    history[first], history[i]
                ),
                ops: vec![first, i],
            });
        } else {
            by_version.insert(v, i);
        }
    }
    // Sweep in invocation order, tracking the highest version among writes
    // completed strictly before the current invocation.
    let mut by_completion: Vec<(u64, usize, u64)> = writes
        .iter()
        .filter_map(|&(i, v)| history[i].complete_ns.map(|c| (c, i, v)))
        .collect();
    by_completion.sort_unstable();
    writes.sort_by_key(|&(i, _)| history[i].invoke_ns);
    let mut done = 0;
    let mut highest: Option<(u64, usize)> = None;
    for &(i, v) in &writes {
        while done < by_completion.len() && by_completion[done].0 < history[i].invoke_ns {
            let (_, j, w) = by_completion[done];
            if highest.is_none_or(|(h, _)| w > h) {
                highest = Some((w, j));
            }
            done += 1;
        }
        if let Some((h, j)) = highest.filter(|&(h, _)| h >= v) {
            found.push(Violation {
                explanation: format!(
                    "#{i} {} was invoked after #{j} {} completed, but got v{v}, not above v{h}",
                    history[i], history[j]
                ),
                ops: vec![j, i],
            });
        }
    }
    found
}

/// Removes unknown writes that cannot affect the verdict (see the module docs).
fn prune(ops: Vec<KeyOp>, known: &HashSet<u64>) -> Vec<KeyOp> {
    let unexplained = |v: u64| v != 0 && !known.contains(&v);
    // Latest completion (u64::MAX: never completes) of the operations that need
    // an anonymous present state, and of those that need an absent state.
    let mut presence: Option<u64> = None;
    let mut absence: Option<u64> = None;
    let later = |acc: &mut Option<u64>, c: Option<u64>| {
        *acc = (*acc).max(Some(c.unwrap_or(u64::MAX)));
    };
    for o in &ops {
        match o.action {
            Action::HasVersion(v)
            | Action::Mismatch {
                current: Some(v), ..
            } if unexplained(v) => later(&mut presence, o.complete),
            Action::Put { cond: Some(c), .. } | Action::Delete { cond: Some(c), .. }
                if unexplained(c) =>
            {
                later(&mut presence, o.complete)
            }
            Action::Delete { .. } if o.required => later(&mut presence, o.complete),
            Action::Absent | Action::Mismatch { current: None, .. } => {
                later(&mut absence, o.complete)
            }
            Action::Put { cond: Some(0), .. } | Action::Delete { cond: Some(0), .. } => {
                later(&mut absence, o.complete)
            }
            _ => {}
        }
    }
    let matters = |need: Option<u64>, invoke: u64| need.is_some_and(|c| c >= invoke);
    ops.into_iter()
        .filter(|o| match o.action {
            _ if o.required => true,
            Action::Put {
                version: Some(_), ..
            } => true,
            Action::Put { .. } => matters(presence, o.invoke),
            Action::Delete { .. } => matters(absence, o.invoke),
            _ => true,
        })
        .map(|mut o| {
            if let Action::Put {
                value,
                version: None,
                ..
            } = &mut o.action
            {
                *value = ANONYMOUS;
            }
            o
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Ver {
    Known(u64),
    /// Symbolic: not yet observed, at least `next_min - 1` (see module docs).
    Unknown,
}

/// Model state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    current: Option<(ValueId, Ver)>,
    /// Least version the next write may have: one past the last write's.
    next_min: u64,
}

const INITIAL: State = State {
    current: None,
    next_min: 1,
};

/// Why an operation cannot be linearized in a state.
#[derive(Debug, Clone, Copy)]
enum Reject {
    NeedsPresent,
    NeedsAbsent,
    WrongValue,
    WrongVersion,
    VersionUnavailable,
    ConditionFails,
    ConditionHolds,
    StaleVersion,
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reject::NeedsPresent => "the key is absent",
            Reject::NeedsAbsent => "the key is present",
            Reject::WrongValue => "the key holds another value",
            Reject::WrongVersion => "the key is at another version",
            Reject::VersionUnavailable => {
                "the unobserved version cannot be that one (too low, or another write's)"
            }
            Reject::ConditionFails => "its if_version condition does not hold",
            Reject::ConditionHolds => "its if_version condition holds, so it cannot be a mismatch",
            Reject::StaleVersion => "its version is not above the previous write's",
        })
    }
}

/// Makes the current version equal `v`, unifying a symbolic one if allowed.
fn fix_version(s: State, v: u64, known: &HashSet<u64>) -> Result<State, Reject> {
    match s.current {
        None => Err(Reject::NeedsPresent),
        Some((_, Ver::Known(w))) if w == v => Ok(s),
        Some((_, Ver::Known(_))) => Err(Reject::WrongVersion),
        Some((value, Ver::Unknown)) => {
            if v + 1 < s.next_min || known.contains(&v) {
                return Err(Reject::VersionUnavailable);
            }
            Ok(State {
                current: Some((value, Ver::Known(v))),
                next_min: v + 1,
            })
        }
    }
}

fn require_condition(s: State, cond: Option<u64>, known: &HashSet<u64>) -> Result<State, Reject> {
    match cond {
        None => Ok(s),
        Some(0) if s.current.is_none() => Ok(s),
        Some(0) => Err(Reject::ConditionFails),
        Some(c) => fix_version(s, c, known).map_err(|r| match r {
            Reject::VersionUnavailable => r,
            _ => Reject::ConditionFails,
        }),
    }
}

fn write(s: State, value: Option<ValueId>, version: Option<u64>) -> Result<State, Reject> {
    match version {
        Some(v) if v < s.next_min => Err(Reject::StaleVersion),
        Some(v) => Ok(State {
            current: value.map(|x| (x, Ver::Known(v))),
            next_min: v + 1,
        }),
        None => Ok(State {
            current: value.map(|x| (x, Ver::Unknown)),
            next_min: s.next_min + 1,
        }),
    }
}

/// The sequential specification of one key.
fn step(s: State, action: Action, known: &HashSet<u64>) -> Result<State, Reject> {
    match action {
        Action::Put {
            value,
            version,
            cond,
        } => write(require_condition(s, cond, known)?, Some(value), version),
        // A delete of an absent key is `NotFound`, not a write, so an unknown
        // delete of an absent key is the same as one that never took effect.
        Action::Delete { .. } if s.current.is_none() => Err(Reject::NeedsPresent),
        Action::Delete { version, cond } => {
            write(require_condition(s, cond, known)?, None, version)
        }
        Action::Found { value, version } => match s.current {
            None => Err(Reject::NeedsPresent),
            Some((v, _)) if v != value => Err(Reject::WrongValue),
            Some(_) => fix_version(s, version, known),
        },
        Action::HasVersion(v) => fix_version(s, v, known),
        Action::Absent if s.current.is_some() => Err(Reject::NeedsAbsent),
        Action::Absent => Ok(s),
        Action::Mismatch { current: None, .. } if s.current.is_some() => Err(Reject::NeedsAbsent),
        Action::Mismatch {
            cond,
            current: None,
        } => {
            if cond == 0 {
                Err(Reject::ConditionHolds)
            } else {
                Ok(s)
            }
        }
        Action::Mismatch {
            cond,
            current: Some(v),
        } => {
            let s = fix_version(s, v, known)?;
            if cond == v {
                Err(Reject::ConditionHolds)
            } else {
                Ok(s)
            }
        }
    }
}

fn describe(s: State, values: &[String]) -> String {
    let value = |id: ValueId| match values.get(id) {
        Some(v) => format!("{v:?}"),
        None => "the unread value of an unknown put".to_string(),
    };
    match s.current {
        None => format!("absent (next write must be >= v{})", s.next_min),
        Some((id, Ver::Known(v))) => format!("{} at v{v}", value(id)),
        Some((id, Ver::Unknown)) => {
            format!(
                "{} at an unobserved version >= v{}",
                value(id),
                s.next_min - 1
            )
        }
    }
}

/// A fixed-size set of small integers.
#[derive(Debug, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Self {
        Bits(vec![0; len.div_ceil(64)])
    }
    /// Flips bit `i` and returns its new value.
    fn flip(&mut self, i: usize) -> bool {
        self.0[i / 64] ^= 1 << (i % 64);
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    /// Required operations are numbered by invocation, so the linearized set is
    /// nearly a prefix: store the count of full leading words and the rest.
    fn compact(&self) -> (usize, Box<[u64]>) {
        let start = self.0.iter().take_while(|&&w| w == u64::MAX).count();
        let end = self
            .0
            .iter()
            .rposition(|&w| w != 0)
            .map_or(start, |e| e + 1)
            .max(start);
        (start, self.0[start..end].into())
    }
    fn is_subset_of(&self, other: &Bits) -> bool {
        self.0.iter().zip(&other.0).all(|(a, b)| a & !b == 0)
    }
}

/// Memoized part of a configuration: the linearized required operations (as
/// [`Bits::compact`] gives them) and the current value and version.
type MemoKey = (usize, Box<[u64]>, Option<(ValueId, Ver)>);

#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    is_return: bool,
}

struct Frame {
    /// The operation linearized to reach this frame (none for the root).
    op: Option<usize>,
    state: State,
    candidates: Vec<usize>,
    next: usize,
}

/// The deepest point the search reached, kept to explain a failure.
struct Deepest {
    linearized: usize,
    state: State,
    path: Vec<usize>,
    candidates: Vec<usize>,
    blocking: Option<usize>,
}

struct Search<'a> {
    ops: &'a [KeyOp],
    known: &'a HashSet<u64>,
    /// Calls and completions in time order, with a head sentinel at 0 and a tail
    /// sentinel at the end, doubly linked so operations can be unlinked and
    /// relinked in LIFO order as the search advances and backtracks.
    entries: Vec<Entry>,
    next: Vec<usize>,
    prev: Vec<usize>,
    call_entry: Vec<usize>,
    return_entry: Vec<Option<usize>>,
    /// Position of each operation in the required or the optional bit set.
    slot: Vec<usize>,
    states: usize,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [KeyOp], known: &'a HashSet<u64>) -> Self {
        // (time, completions after invocations at equal times so that touching
        // intervals count as concurrent, op)
        let mut events: Vec<(u64, bool, usize)> = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            events.push((o.invoke, false, i));
            if o.required {
                events.push((o.complete.unwrap_or(u64::MAX), true, i));
            }
        }
        events.sort_unstable();
        let sentinel = Entry {
            op: usize::MAX,
            is_return: false,
        };
        let mut entries = vec![sentinel];
        let mut call_entry = vec![0; ops.len()];
        let mut return_entry = vec![None; ops.len()];
        let (mut required, mut optional) = (0, 0);
        let mut slot = vec![0; ops.len()];
        for &(_, is_return, op) in &events {
            if is_return {
                return_entry[op] = Some(entries.len());
            } else {
                call_entry[op] = entries.len();
                let counter = if ops[op].required {
                    &mut required
                } else {
                    &mut optional
                };
                slot[op] = *counter;
                *counter += 1;
            }
            entries.push(Entry { op, is_return });
        }
        entries.push(sentinel);
        let n = entries.len();
        Search {
            ops,
            known,
            entries,
            next: (1..=n).collect(),
            prev: (0..n).map(|i| i.saturating_sub(1)).collect(),
            call_entry,
            return_entry,
            slot,
            states: 0,
        }
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        self.prev[n] = e;
    }

    fn lift(&mut self, op: usize) {
        self.unlink(self.call_entry[op]);
        if let Some(r) = self.return_entry[op] {
            self.unlink(r);
        }
    }

    fn unlift(&mut self, op: usize) {
        if let Some(r) = self.return_entry[op] {
            self.relink(r);
        }
        self.relink(self.call_entry[op]);
    }

    /// Operations that may be linearized next (those invoked before the earliest
    /// pending completion), required ones first; and the op of that completion.
    ///
    /// Of several unused optional writes with the same action only the earliest
    /// invoked is offered: any linearization using a later one can use the earlier
    /// one instead, so offering both would only explore the same states twice.
    fn candidates(&self) -> (Vec<usize>, Option<usize>) {
        let tail = self.entries.len() - 1;
        let (mut required, mut optional) = (Vec::new(), Vec::<usize>::new());
        let mut e = self.next[0];
        while e != tail {
            let entry = self.entries[e];
            if entry.is_return {
                required.append(&mut optional);
                return (required, Some(entry.op));
            }
            let op = &self.ops[entry.op];
            if op.required {
                required.push(entry.op);
            } else if !optional.iter().any(|&o| self.ops[o].action == op.action) {
                optional.push(entry.op);
            }
            e = self.next[e];
        }
        required.append(&mut optional);
        (required, None)
    }

    fn run(&mut self, budget: usize, history: &[Op], key: &str, values: &[String]) -> Verdict {
        let n_required = self.ops.iter().filter(|o| o.required).count();
        let mut remaining = n_required;
        if remaining == 0 {
            return Verdict::Linearizable;
        }
        let mut linearized = Bits::new(n_required);
        let mut used = Bits::new(self.ops.len() - n_required);
        // Explored configurations: (linearized required ops, current value and
        // version) -> (next_min, used optional ops) of each visit. A lower
        // `next_min` and fewer used optional writes only allow more, so a visit
        // dominated by an earlier (failed) one can be skipped.
        let mut seen: HashMap<MemoKey, Vec<(u64, Bits)>> = HashMap::new();
        let (candidates, blocking) = self.candidates();
        let mut deepest = Deepest {
            linearized: 0,
            state: INITIAL,
            path: Vec::new(),
            candidates: candidates.clone(),
            blocking,
        };
        let mut stack = vec![Frame {
            op: None,
            state: INITIAL,
            candidates: self.narrow(INITIAL, candidates),
            next: 0,
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(&op) = frame.candidates.get(frame.next) else {
                if let Some(op) = frame.op {
                    self.unlift(op);
                    self.toggle(op, &mut linearized, &mut used, &mut remaining);
                }
                stack.pop();
                continue;
            };
            frame.next += 1;
            let Ok(state) = step(frame.state, self.ops[op].action, self.known) else {
                continue;
            };
            self.toggle(op, &mut linearized, &mut used, &mut remaining);
            if remaining == 0 {
                return Verdict::Linearizable;
            }
            let (start, rest) = linearized.compact();
            let stored = seen.entry((start, rest, state.current)).or_default();
            if stored
                .iter()
                .any(|(m, u)| *m <= state.next_min && u.is_subset_of(&used))
            {
                self.toggle(op, &mut linearized, &mut used, &mut remaining);
                continue;
            }
            stored.push((state.next_min, used.clone()));
            self.states += 1;
            self.lift(op);
            let (candidates, blocking) = self.candidates();
            if n_required - remaining > deepest.linearized {
                let mut path: Vec<usize> = stack.iter().filter_map(|f| f.op).collect();
                path.push(op);
                deepest = Deepest {
                    linearized: n_required - remaining,
                    state,
                    path,
                    candidates: candidates.clone(),
                    blocking,
                };
            }
            if self.states >= budget {
                let why = format!(
                    "gave up after {} states; at most {} of {n_required} operations linearized",
                    self.states, deepest.linearized
                );
                return Verdict::Inconclusive(why);
            }
            stack.push(Frame {
                op: Some(op),
                state,
                candidates: self.narrow(state, candidates),
                next: 0,
            });
        }
        Verdict::Violation(self.explain(&deepest, n_required, history, key, values))
    }

    /// A required observation that holds in `state` without changing it can be
    /// linearized next without loss: moving it to the front of any valid
    /// continuation keeps that continuation valid (it is already invoked, no
    /// pending operation has to precede it, and it changes nothing). Committing to
    /// it spares the search every other order of concurrent reads.
    fn narrow(&self, state: State, candidates: Vec<usize>) -> Vec<usize> {
        let free = candidates.iter().find(|&&op| {
            let o = &self.ops[op];
            o.required
                && !matches!(o.action, Action::Put { .. } | Action::Delete { .. })
                && matches!(step(state, o.action, self.known), Ok(s) if s == state)
        });
        match free {
            Some(&op) => vec![op],
            None => candidates,
        }
    }

    fn toggle(&self, op: usize, linearized: &mut Bits, used: &mut Bits, remaining: &mut usize) {
        if !self.ops[op].required {
            used.flip(self.slot[op]);
        } else if linearized.flip(self.slot[op]) {
            *remaining -= 1;
        } else {
            *remaining += 1;
        }
    }

    fn explain(
        &self,
        d: &Deepest,
        n_required: usize,
        history: &[Op],
        key: &str,
        values: &[String],
    ) -> Violation {
        let show = |op: usize| {
            let o = &self.ops[op];
            let entry = match (&history[o.index].call, o.action) {
                (Call::List { .. }, Action::HasVersion(v)) => format!(" (entry {key:?}@v{v})"),
                (Call::List { .. }, _) => format!(" (no entry for {key:?})"),
                _ => String::new(),
            };
            format!("#{} {}{entry}", o.index, history[o.index])
        };
        let mut text = format!(
            "no linearization exists for key {key:?}: at most {} of the {n_required} operations \
             with a known outcome can be ordered consistently.",
            d.linearized
        );
        const SHOWN: usize = 6;
        let skipped = d.path.len().saturating_sub(SHOWN);
        if !d.path.is_empty() {
            if skipped > 0 {
                let _ = write!(
                    text,
                    "\nThe longest such order ends with ({skipped} earlier not shown)"
                );
            } else {
                let _ = write!(text, "\nThe longest such order is");
            }
            for &op in &d.path[skipped..] {
                let _ = write!(text, "\n    {}", show(op));
            }
        }
        let _ = write!(
            text,
            "\nleaving the key {}. None of the operations that could come next fits:",
            describe(d.state, values)
        );
        for &op in &d.candidates {
            let why = match step(d.state, self.ops[op].action, self.known) {
                Err(r) => r.to_string(),
                Ok(_) => "may take effect here, but no linearization follows".to_string(),
            };
            let _ = write!(text, "\n    {}: {why}", show(op));
        }
        if let Some(op) = d.blocking {
            let _ = write!(
                text,
                "\nand later operations cannot help: #{} completed before they were invoked.",
                self.ops[op].index
            );
        }
        let mut ops: Vec<usize> = d.path[skipped..]
            .iter()
            .chain(&d.candidates)
            .chain(&d.blocking)
            .map(|&op| self.ops[op].index)
            .collect();
        ops.sort_unstable();
        ops.dedup();
        Violation {
            explanation: text,
            ops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ListEntry;
    use crate::history::build::*;

    fn verdict(history: &[Op], key: &str) -> Verdict {
        let report = check(history);
        assert!(report.malformed.is_empty(), "{report}");
        report.keys[key].verdict.clone()
    }

    fn assert_ok(history: &[Op]) {
        let report = check(history);
        assert!(report.is_ok(), "expected linearizable:\n{report}");
    }

    fn assert_violation(history: &[Op], key: &str) -> Violation {
        match verdict(history, key) {
            Verdict::Violation(v) => v,
            other => panic!("expected a violation on {key:?}, got {other:?}"),
        }
    }

    fn list(client: u32, t0: u64, t1: u64, prefix: &str, entries: &[(&str, u64)]) -> Op {
        let entries = entries
            .iter()
            .map(|&(key, version)| ListEntry {
                key: key.into(),
                version,
            })
            .collect();
        op(
            client,
            t0,
            t1,
            Call::List {
                prefix: prefix.into(),
            },
            Outcome::Listed { entries },
        )
    }

    #[test]
    fn sequential_puts_and_gets() {
        assert_ok(&[
            op(1, 0, 10, get("k"), Outcome::Absent),
            op(1, 20, 30, put("k", "a", Some(0)), written(3)),
            op(1, 40, 50, get("k"), found("a", 3)),
            op(1, 60, 70, put("k", "b", Some(3)), written(7)),
            op(1, 80, 90, get("k"), found("b", 7)),
            op(1, 100, 110, del("k", Some(7)), deleted(9)),
            op(1, 120, 130, del("k", None), Outcome::NotFound),
            op(1, 140, 150, get("k"), Outcome::Absent),
        ]);
    }

    #[test]
    fn concurrent_puts_pass_in_the_one_order_reads_allow() {
        // Reads see b then a, so b must be linearized first even though a's
        // interval starts earlier; versions agree with that order.
        assert_ok(&[
            op(1, 0, 100, put("k", "a", None), written(5)),
            op(2, 10, 90, put("k", "b", None), written(4)),
            op(3, 20, 40, get("k"), found("b", 4)),
            op(3, 50, 95, get("k"), found("a", 5)),
            op(4, 110, 120, get("k"), found("a", 5)),
        ]);
    }

    #[test]
    fn stale_read_after_completed_write_fails() {
        let v = assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(1)),
                op(1, 20, 30, put("k", "b", None), written(2)),
                op(2, 40, 50, get("k"), found("a", 1)),
            ],
            "k",
        );
        assert_eq!(v.ops, vec![0, 1, 2]);
        assert!(v.explanation.contains("#2 client 2"), "{}", v.explanation);
    }

    #[test]
    fn read_of_a_value_never_written_fails() {
        let v = assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(1)),
                op(2, 5, 15, get("k"), found("ghost", 1)),
            ],
            "k",
        );
        assert!(
            v.explanation.contains("no put ever wrote"),
            "{}",
            v.explanation
        );
        // A definitely failed put wrote nothing either.
        assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), failed()),
                op(2, 20, 30, get("k"), found("a", 1)),
            ],
            "k",
        );
    }

    #[test]
    fn two_writes_with_the_same_version_fail() {
        let history = [
            op(1, 0, 10, put("a", "x", None), written(4)),
            op(2, 0, 10, put("b", "y", None), written(4)),
        ];
        let report = check(&history);
        assert_eq!(report.cross_key.len(), 1, "{report}");
        assert_eq!(report.cross_key[0].ops, vec![0, 1]);
        assert!(!report.is_ok());
        // On one key the search rejects it as well.
        assert_violation(
            &[
                op(1, 0, 10, put("k", "x", None), written(4)),
                op(2, 0, 10, put("k", "y", None), written(4)),
            ],
            "k",
        );
    }

    /// Keys in different logs may share versions, and a later write in one
    /// log may have a lower version than an earlier one in another; within
    /// a log, the rules hold as in one.
    #[test]
    fn the_cross_key_rules_hold_within_each_log() {
        let history = [
            op(1, 0, 10, put("a", "x", None), written(8)),
            op(2, 20, 30, put("b", "y", None), written(8)),
            op(3, 40, 50, put("c", "z", None), written(6)),
        ];
        let log_of_key = |key: &str, _: u64| u64::from(key != "a");
        let report = check_spaced(&history, &Config::default(), &log_of_key);
        assert_eq!(report.cross_key.len(), 1, "b and c share a log: {report}");
        assert_eq!(report.cross_key[0].ops, vec![1, 2]);
        let apart = |key: &str, _: u64| u64::from(key.as_bytes()[0]);
        assert!(check_spaced(&history, &Config::default(), &apart).is_ok());
        assert_eq!(
            check(&history).cross_key.len(),
            3,
            "one log: {}",
            check(&history)
        );
    }

    #[test]
    fn versions_decreasing_in_real_time_fail() {
        assert_violation(
            &[
                op(1, 0, 10, put("k", "x", None), written(8)),
                op(2, 20, 30, put("k", "y", None), written(6)),
            ],
            "k",
        );
        let report = check(&[
            op(1, 0, 10, put("a", "x", None), written(8)),
            op(2, 20, 30, put("b", "y", None), written(6)),
        ]);
        assert!(
            report
                .keys
                .values()
                .all(|k| k.verdict == Verdict::Linearizable)
        );
        assert_eq!(report.cross_key.len(), 1, "{report}");
        // Overlapping writes may be ordered either way.
        assert_ok(&[
            op(1, 0, 10, put("a", "x", None), written(8)),
            op(2, 5, 30, put("b", "y", None), written(6)),
        ]);
    }

    #[test]
    fn conditional_put_after_a_concurrent_write() {
        let base = |other: Op| {
            vec![
                op(1, 0, 10, put("k", "a", None), written(1)),
                other,
                op(2, 20, 40, put("k", "b", Some(1)), written(3)),
            ]
        };
        // c completed before b's if_version=1 was checked: b cannot succeed.
        assert_violation(&base(op(3, 12, 18, put("k", "c", None), written(2))), "k");
        // Overlapping but with a lower version, c must come first: still fails.
        assert_violation(&base(op(3, 15, 50, put("k", "c", None), written(2))), "k");
        // Overlapping and later in the log: b then c.
        assert_ok(&base(op(3, 15, 50, put("k", "c", None), written(4))));
    }

    #[test]
    fn mismatch_must_report_the_current_version() {
        let base = |current| {
            vec![
                op(1, 0, 10, put("k", "a", None), written(2)),
                op(2, 20, 30, put("k", "b", Some(1)), mismatch(current)),
            ]
        };
        assert_ok(&base(Some(2)));
        assert_violation(&base(Some(3)), "k");
        assert_violation(&base(None), "k");
        assert_ok(&[op(2, 20, 30, del("k", Some(5)), mismatch(None))]);
        // A mismatch whose condition would have held is impossible.
        assert_violation(
            &[op(2, 20, 30, put("k", "b", Some(0)), mismatch(None))],
            "k",
        );
    }

    #[test]
    fn stale_found_after_delete_fails() {
        assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(1)),
                op(1, 20, 30, del("k", None), deleted(2)),
                op(2, 40, 50, get("k"), found("a", 1)),
            ],
            "k",
        );
    }

    #[test]
    fn read_older_than_an_acknowledged_delete_fails() {
        // The bug the suite hunts: a leader serving a read from a state that
        // predates an acknowledged delete, even though the read overlaps a
        // re-creating put that has not been applied yet.
        let v = assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(10)),
                op(2, 20, 30, get("k"), found("a", 10)),
                op(1, 40, 50, del("k", Some(10)), deleted(11)),
                op(3, 45, 200, put("k", "b", Some(0)), written(14)),
                op(2, 60, 70, get("k"), found("a", 10)),
                op(2, 80, 90, get("k"), Outcome::Absent),
            ],
            "k",
        );
        assert!(v.ops.contains(&4), "{v:?}");
    }

    #[test]
    fn unknown_put_that_shows_up_later_passes() {
        assert_ok(&[
            op(1, 0, 10, put("k", "a", None), written(1)),
            op(2, 20, 30, put("k", "b", None), unknown()),
            op(3, 40, 50, get("k"), found("a", 1)),
            // Took effect long after its client gave up.
            op(3, 60, 70, get("k"), found("b", 5)),
            op(3, 80, 90, put("k", "c", Some(5)), written(6)),
        ]);
    }

    #[test]
    fn unknown_put_that_never_shows_up_passes() {
        let report = check(&[
            op(1, 0, 10, put("k", "a", None), written(1)),
            op(2, 20, 30, put("k", "b", None), unknown()),
            Op {
                complete_ns: None,
                ..op(4, 25, 0, put("k", "c", Some(1)), unknown())
            },
            op(3, 40, 50, get("k"), found("a", 1)),
            op(3, 60, 70, get("k"), found("a", 1)),
        ]);
        assert!(report.is_ok(), "{report}");
        let stats = report.keys["k"].stats;
        assert_eq!((stats.unknown_writes, stats.unknown_writes_pruned), (2, 2));
    }

    #[test]
    fn unknown_put_that_disappears_without_a_delete_fails() {
        assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(1)),
                op(2, 20, 30, put("k", "b", None), unknown()),
                op(3, 40, 50, get("k"), found("b", 2)),
                op(3, 60, 70, get("k"), found("a", 1)),
            ],
            "k",
        );
        assert_violation(
            &[
                op(2, 20, 30, put("k", "b", None), unknown()),
                op(3, 40, 50, get("k"), found("b", 2)),
                op(3, 60, 70, get("k"), Outcome::Absent),
            ],
            "k",
        );
    }

    #[test]
    fn unknown_delete_explains_an_absent_read() {
        let history = vec![
            op(1, 0, 10, put("k", "a", None), written(1)),
            op(2, 20, 30, del("k", None), unknown()),
            op(3, 100, 110, get("k"), Outcome::Absent),
        ];
        assert_ok(&history);
        // Without it the same read is stale.
        let mut without = history.clone();
        without.remove(1);
        assert_violation(&without, "k");
        // An unknown delete cannot take effect before it is invoked.
        let mut late = history;
        late[1] = op(2, 200, 210, del("k", None), unknown());
        assert_violation(&late, "k");
    }

    #[test]
    fn unobserved_unknown_puts_explain_versions_only_they_can_have() {
        // The list sees a version no known write has: the unknown put's.
        assert_ok(&[
            op(1, 0, 10, put("k", "a", None), written(1)),
            op(2, 20, 30, put("k", "b", None), unknown()),
            list(3, 40, 50, "", &[("k", 5)]),
            op(3, 60, 70, put("k", "c", Some(5)), written(6)),
        ]);
        // ... which then must stay its version, and above the previous write's.
        assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(1)),
                op(2, 20, 30, put("k", "b", None), unknown()),
                list(3, 40, 50, "", &[("k", 5)]),
                op(3, 60, 70, put("k", "c", Some(4)), mismatch(Some(6))),
            ],
            "k",
        );
        assert_violation(
            &[
                op(1, 0, 10, put("k", "a", None), written(7)),
                op(2, 20, 30, put("k", "b", None), unknown()),
                list(3, 40, 50, "", &[("k", 5)]),
            ],
            "k",
        );
        // An acknowledged delete of a key only an unknown put created.
        assert_ok(&[
            op(2, 20, 30, put("k", "b", None), unknown()),
            op(3, 40, 50, del("k", None), deleted(9)),
        ]);
    }

    #[test]
    fn lists_are_checked_per_key() {
        let writes = || {
            vec![
                op(1, 0, 10, put("pie", "p", None), written(1)),
                op(1, 20, 30, put("pizza", "z", None), written(2)),
                op(2, 25, 60, del("pie", None), deleted(3)),
            ]
        };
        // Not a snapshot: pie can be seen before its delete and pizza after.
        let mut ok = writes();
        ok.push(list(3, 22, 70, "pi", &[("pie", 1), ("pizza", 2)]));
        ok.push(list(3, 80, 90, "p", &[("pizza", 2)]));
        ok.push(list(3, 95, 99, "q", &[]));
        assert_ok(&ok);
        // After the delete completed, pie cannot be listed any more.
        let mut stale = writes();
        stale.push(list(3, 80, 90, "pi", &[("pie", 1), ("pizza", 2)]));
        let v = assert_violation(&stale, "pie");
        assert!(
            v.explanation.contains("entry \"pie\"@v1"),
            "{}",
            v.explanation
        );
        assert_eq!(verdict(&stale, "pizza"), Verdict::Linearizable);
        // Omitting a key that certainly exists is a violation too.
        let mut missing = writes();
        missing.push(list(3, 40, 50, "pi", &[("pie", 1)]));
        assert_violation(&missing, "pizza");
    }

    #[test]
    fn replies_without_completion_and_unknown_reads() {
        assert_ok(&[
            Op {
                complete_ns: None,
                ..op(1, 0, 0, put("k", "a", None), written(1))
            },
            op(2, 10, 20, get("k"), Outcome::Absent),
            op(2, 30, 40, get("k"), unknown()),
            op(2, 50, 60, get("k"), found("a", 1)),
        ]);
    }

    #[test]
    fn malformed_records_are_reported_and_skipped() {
        let report = check(&[
            op(1, 0, 10, get("k"), written(1)),
            op(1, 20, 30, get("k"), Outcome::Absent),
        ]);
        assert_eq!(report.malformed.len(), 1);
        assert_eq!(report.malformed[0].0, 0);
        assert_eq!(report.keys["k"].verdict, Verdict::Linearizable);
        assert!(!report.is_ok());
        // Values identify writes, so a repeated one is refused.
        let report = check(&[
            op(1, 0, 10, put("k", "a", None), written(1)),
            op(2, 20, 30, put("j", "a", None), written(2)),
        ]);
        assert_eq!(report.malformed.len(), 1);
        assert_eq!(report.malformed[0].0, 1);
        // Local reads are not linearizable and are left to `local_reads`.
        let report = check(&[
            op(1, 0, 10, put("k", "a", None), written(1)),
            op(1, 20, 30, put("k", "b", None), written(2)),
            op(
                2,
                40,
                50,
                Call::LocalRead {
                    key: "k".into(),
                    min_version: 0,
                },
                found("a", 1),
            ),
        ]);
        assert!(report.is_ok(), "{report}");
    }

    #[test]
    fn search_budget_gives_inconclusive() {
        let mut history = Vec::new();
        for c in 0..8 {
            history.push(op(
                c,
                0,
                100,
                put("k", &format!("v{c}"), None),
                written(u64::from(c) + 1),
            ));
        }
        history.push(op(9, 200, 210, get("k"), found("v0", 1)));
        let report = check_with(
            &history,
            &Config {
                max_states_per_key: 5,
            },
        );
        assert!(
            matches!(report.keys["k"].verdict, Verdict::Inconclusive(_)),
            "{report}"
        );
        assert_eq!(report.keys["k"].stats.states_explored, 5);
    }

    // ----- randomized testing against a real sequential execution -----

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::time::Instant;

    struct Workload {
        ops: usize,
        clients: u32,
        keys: &'static [&'static str],
        unknown: f64,
        failed: f64,
    }

    /// What happens to an issued operation.
    #[derive(Clone, Copy, PartialEq)]
    enum Fate {
        Normal,
        Failed,
        /// Unknown outcome; applied at the linearization point (possibly much
        /// later than its completion) if `applied`.
        Unknown {
            applied: bool,
        },
    }

    /// Runs clients against a sequential model of the store: each operation
    /// takes effect at a random instant inside its interval (unknown ones possibly
    /// far later, or never), so the recorded history is linearizable by
    /// construction.
    fn simulate(rng: &mut StdRng, w: &Workload) -> Vec<Op> {
        const INVOKE: u8 = 0;
        const APPLY: u8 = 1;
        const COMPLETE: u8 = 2;
        let mut events = BinaryHeap::new();
        for c in 0..w.clients {
            events.push(Reverse((rng.random_range(0..50u64), INVOKE, c as usize)));
        }
        let mut ops: Vec<Op> = Vec::new();
        let mut fates = Vec::new();
        let mut results: Vec<Option<Outcome>> = Vec::new();
        let mut store = BTreeMap::new();
        let mut log_index = 0;
        let mut last_seen: HashMap<(u32, String), u64> = HashMap::new();
        while let Some(Reverse((t, kind, id))) = events.pop() {
            match kind {
                INVOKE if ops.len() < w.ops => {
                    let client = id as u32;
                    let key = w.keys[rng.random_range(0..w.keys.len())];
                    let seen = last_seen
                        .get(&(client, key.to_string()))
                        .copied()
                        .unwrap_or(0);
                    let cond = match rng.random_range(0..4) {
                        0 => None,
                        1 => Some(rng.random_range(0..log_index + 2)),
                        _ => Some(seen),
                    };
                    let value = format!("v{}", ops.len());
                    let call = match rng.random_range(0..20) {
                        0..6 => put(key, &value, cond),
                        6..8 => del(key, cond),
                        8..17 => get(key),
                        _ => Call::List {
                            prefix: key[..rng.random_range(0..=key.len())].to_string(),
                        },
                    };
                    let is_write = matches!(call, Call::Put { .. } | Call::Delete { .. });
                    let fate = match rng.random::<f64>() {
                        x if x < w.unknown && is_write => Fate::Unknown {
                            applied: rng.random_bool(0.6),
                        },
                        x if x < w.unknown + w.failed => Fate::Failed,
                        _ => Fate::Normal,
                    };
                    let apply = t + rng.random_range(1..60);
                    let complete = apply + rng.random_range(1..60);
                    let id = ops.len();
                    match fate {
                        Fate::Normal => events.push(Reverse((apply, APPLY, id))),
                        Fate::Unknown { applied: true } => {
                            let late = if rng.random_bool(0.5) {
                                rng.random_range(0..5000)
                            } else {
                                0
                            };
                            events.push(Reverse((apply + late, APPLY, id)));
                        }
                        _ => {}
                    }
                    events.push(Reverse((complete, COMPLETE, id)));
                    ops.push(op(client, t, complete, call, Outcome::Absent));
                    fates.push(fate);
                    results.push(None);
                }
                APPLY => {
                    if matches!(ops[id].call, Call::Put { .. } | Call::Delete { .. }) {
                        log_index += 1;
                    }
                    results[id] = Some(apply(&mut store, log_index, &ops[id].call));
                }
                COMPLETE => {
                    let op = &mut ops[id];
                    op.outcome = match fates[id] {
                        Fate::Normal => results[id].take().expect("applied before completion"),
                        Fate::Failed => failed(),
                        Fate::Unknown { .. } => {
                            if rng.random_bool(0.5) {
                                op.complete_ns = None;
                            }
                            unknown()
                        }
                    };
                    let seen = match &op.outcome {
                        Outcome::Found { version, .. }
                        | Outcome::Written { version }
                        | Outcome::VersionMismatch {
                            current: Some(version),
                        } => Some(*version),
                        Outcome::Absent | Outcome::Deleted { .. } | Outcome::NotFound => Some(0),
                        _ => None,
                    };
                    if let (Some(key), Some(seen)) = (op.call.key(), seen) {
                        last_seen.insert((op.client, key.to_string()), seen);
                    }
                    events.push(Reverse((
                        t + rng.random_range(0..20),
                        INVOKE,
                        op.client as usize,
                    )));
                }
                _ => {}
            }
        }
        ops
    }

    /// Executes `call` on the sequential model; every write proposal uses a log
    /// index, so versions have gaps as in the real store.
    fn apply(store: &mut BTreeMap<String, (String, u64)>, log_index: u64, call: &Call) -> Outcome {
        use crate::history::{ListEntry, condition_holds};
        let current = call.key().and_then(|k| store.get(k)).map(|e| e.1);
        match call {
            Call::Put {
                if_version: Some(c),
                ..
            }
            | Call::Delete {
                if_version: Some(c),
                ..
            } if !condition_holds(*c, current) => Outcome::VersionMismatch { current },
            Call::Put { key, value, .. } => {
                store.insert(key.clone(), (value.clone(), log_index));
                Outcome::Written { version: log_index }
            }
            Call::Delete { key, .. } => match store.remove(key) {
                Some(_) => Outcome::Deleted { version: log_index },
                None => Outcome::NotFound,
            },
            Call::Get { key } | Call::LocalRead { key, .. } => match store.get(key) {
                Some((value, version)) => Outcome::Found {
                    value: value.clone(),
                    version: *version,
                },
                None => Outcome::Absent,
            },
            Call::List { prefix } => Outcome::Listed {
                entries: store
                    .iter()
                    .filter(|(k, _)| k.starts_with(prefix.as_str()))
                    .map(|(k, e)| ListEntry {
                        key: k.clone(),
                        version: e.1,
                    })
                    .collect(),
            },
        }
    }

    /// Replaces one get's result with a different one that some execution could
    /// have produced on its own; returns false if the history has no get to change.
    fn mutate(rng: &mut StdRng, history: &mut [Op]) -> bool {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| {
                matches!(history[i].call, Call::Get { .. })
                    && matches!(history[i].outcome, Outcome::Found { .. } | Outcome::Absent)
            })
            .collect();
        if reads.is_empty() {
            return false;
        }
        let target = reads[rng.random_range(0..reads.len())];
        let key = history[target].call.key().map(str::to_string);
        let others: Vec<Outcome> = history
            .iter()
            .filter_map(|o| match (&o.call, &o.outcome) {
                (Call::Put { key: k, value, .. }, Outcome::Written { version })
                    if Some(k) == key.as_ref() =>
                {
                    Some(found(value, *version))
                }
                _ => None,
            })
            .filter(|o| *o != history[target].outcome)
            .collect();
        let replacement = match (&history[target].outcome, rng.random_range(0..3)) {
            (Outcome::Found { value, version }, 0) => found(value, version + 1),
            (Outcome::Found { .. }, 1) => Outcome::Absent,
            _ if others.is_empty() => found("never-written", 1),
            _ => others[rng.random_range(0..others.len())].clone(),
        };
        history[target].outcome = replacement;
        true
    }

    /// Exhaustive search over all orders and subsets of unknown writes, with no
    /// pruning or memoization: the reference for the real search on small inputs.
    fn brute_force(history: &[Op]) -> BTreeMap<String, bool> {
        fn search(ops: &[KeyOp], known: &HashSet<u64>, done: &mut Vec<bool>, state: State) -> bool {
            let pending = |done: &[bool], j: usize| !done[j] && ops[j].required;
            if !(0..ops.len()).any(|j| pending(done, j)) {
                return true;
            }
            for i in 0..ops.len() {
                let blocked = (0..ops.len()).any(|j| {
                    pending(done, j) && ops[j].complete.is_some_and(|c| c < ops[i].invoke)
                });
                if done[i] || blocked {
                    continue;
                }
                if let Ok(next) = step(state, ops[i].action, known) {
                    done[i] = true;
                    let found = search(ops, known, done, next);
                    done[i] = false;
                    if found {
                        return true;
                    }
                }
            }
            false
        }
        let valid: Vec<usize> = (0..history.len())
            .filter(|&i| history[i].validate().is_ok())
            .collect();
        let mut keys = split_by_key(history, &valid);
        let derived: BTreeMap<String, bool> = keys
            .iter_mut()
            .map(|(k, kh)| (k.clone(), kh.derive_versions(history).is_ok()))
            .collect();
        let known: HashSet<u64> = keys
            .values()
            .flat_map(|kh| kh.ops.iter())
            .filter_map(|o| match o.action {
                Action::Put { version, .. } | Action::Delete { version, .. } => version,
                _ => None,
            })
            .collect();
        keys.iter()
            .map(|(k, kh)| {
                let ok =
                    derived[k] && search(&kh.ops, &known, &mut vec![false; kh.ops.len()], INITIAL);
                (k.clone(), ok)
            })
            .collect()
    }

    fn linearizable_keys(report: &Report) -> BTreeMap<String, bool> {
        report
            .keys
            .iter()
            .map(|(k, r)| (k.clone(), r.verdict == Verdict::Linearizable))
            .collect()
    }

    const SMALL: Workload = Workload {
        ops: 12,
        clients: 3,
        keys: &["pie", "pizza"],
        unknown: 0.15,
        failed: 0.05,
    };

    #[test]
    fn random_small_histories_agree_with_brute_force() {
        let mut rng = StdRng::seed_from_u64(7);
        let (mut mutated, mut caught) = (0, 0);
        for round in 0..400 {
            let mut history = simulate(&mut rng, &SMALL);
            let report = check(&history);
            assert!(
                report.is_ok(),
                "round {round}: generated history rejected:\n{report}\n{history:#?}"
            );
            if !mutate(&mut rng, &mut history) {
                continue;
            }
            let report = check(&history);
            assert_eq!(
                linearizable_keys(&report),
                brute_force(&history),
                "round {round}: search and brute force disagree:\n{report}\n{history:#?}"
            );
            mutated += 1;
            caught += usize::from(!report.is_ok());
        }
        // Most mutations break linearizability; the rest were confirmed above.
        assert!(
            caught * 10 >= mutated * 6,
            "{caught} of {mutated} mutations caught"
        );
    }

    #[test]
    fn random_medium_histories_pass_and_mutations_are_caught() {
        let mut rng = StdRng::seed_from_u64(11);
        let workload = Workload {
            ops: if cfg!(debug_assertions) { 150 } else { 600 },
            clients: 6,
            keys: &["pie", "pizza", "soup"],
            unknown: 0.05,
            failed: 0.05,
        };
        let (mut mutated, mut caught) = (0, 0);
        for round in 0..30 {
            let mut history = simulate(&mut rng, &workload);
            let report = check(&history);
            assert!(report.is_ok(), "round {round}:\n{report}");
            if mutate(&mut rng, &mut history) {
                mutated += 1;
                let report = check(&history);
                assert!(
                    report
                        .keys
                        .values()
                        .all(|k| !matches!(k.verdict, Verdict::Inconclusive(_)))
                );
                caught += usize::from(!report.is_ok());
            }
        }
        assert!(
            caught * 10 >= mutated * 7,
            "{caught} of {mutated} mutations caught"
        );
    }

    /// One hot key, ten clients, 5% unknown writes: the shape of a chaos run.
    #[test]
    fn performance_of_a_busy_key() {
        let ops = if cfg!(debug_assertions) { 500 } else { 2000 };
        let workload = Workload {
            ops,
            clients: 10,
            keys: &["pasta"],
            unknown: 0.05,
            failed: 0.02,
        };
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..3 {
            let mut history = simulate(&mut rng, &workload);
            let started = Instant::now();
            let report = check(&history);
            let valid_time = started.elapsed();
            assert!(report.is_ok(), "{report}");
            mutate(&mut rng, &mut history);
            let started = Instant::now();
            let mutated = check(&history);
            let mutated_time = started.elapsed();
            assert!(
                mutated
                    .keys
                    .values()
                    .all(|k| !matches!(k.verdict, Verdict::Inconclusive(_))),
                "{mutated}"
            );
            eprintln!(
                "{ops} ops: valid {valid_time:?} ({} states), mutated {mutated_time:?} ({} states, ok={})",
                report.totals().states_explored,
                mutated.totals().states_explored,
                mutated.is_ok()
            );
            assert!(valid_time.as_secs_f64() < 3.0 && mutated_time.as_secs_f64() < 3.0);
        }
    }
}
