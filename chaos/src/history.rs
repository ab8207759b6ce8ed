//! Recorded client histories of RecipeStore operations.
//!
//! A fault-injection run records every operation a client issued: when it was
//! invoked, when (if ever) the client saw it complete, what it asked for and what
//! came back. The checkers in [`crate::linearizability`] and
//! [`crate::local_reads`] consume these records; [`write_jsonl`] and
//! [`read_jsonl`] keep them on disk, one JSON object per line, so a failing run
//! can be re-checked and inspected later.
//!
//! Versions are Raft log indexes: global across keys, starting at 1, and assigned
//! to every successful put or delete. In conditions, version `0` means "absent".

use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

/// One operation as seen by one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client that issued the operation; a client issues one operation at a time.
    pub client: u32,
    /// When the request was sent, in nanoseconds on a clock shared by all clients.
    pub invoke_ns: u64,
    /// When the reply arrived; `None` if it never did (the operation's effect window
    /// then extends to infinity, exactly as for [`Outcome::Unknown`]).
    pub complete_ns: Option<u64>,
    pub call: Call,
    pub outcome: Outcome,
}

/// What the client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Call {
    /// Write `value`; with `if_version: Some(v)` only if the current version is `v`
    /// (`0`: only if absent).
    Put {
        key: String,
        value: String,
        if_version: Option<u64>,
    },
    /// Remove the key; with `if_version: Some(v)` only if the current version is `v`.
    Delete {
        key: String,
        if_version: Option<u64>,
    },
    /// Linearizable read of one key.
    Get { key: String },
    /// Present keys starting with `prefix`, each with its version. Not an atomic
    /// snapshot: each key's entry (or absence) is observed at its own instant.
    List { prefix: String },
    /// Follower-served read that promises only a state at least as new as
    /// `min_version`; checked by [`crate::local_reads`], ignored by
    /// [`crate::linearizability`].
    LocalRead { key: String, min_version: u64 },
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outcome {
    /// A put took effect at `version`.
    Written { version: u64 },
    /// A delete took effect at `version`; the key is now absent.
    Deleted { version: u64 },
    /// A delete found the key absent and did nothing.
    NotFound,
    /// A conditional write did nothing because the key's version was `current`
    /// (`None`: absent).
    VersionMismatch { current: Option<u64> },
    /// A read found `value` written at `version`.
    Found { value: String, version: u64 },
    /// A read found the key absent.
    Absent,
    /// A list's present keys.
    Listed { entries: Vec<ListEntry> },
    /// Definite failure: the operation certainly had no effect.
    Failed { reason: String },
    /// Indeterminate: the operation may take effect at any time after its
    /// invocation, including long after the client gave up, or never.
    Unknown { reason: String },
}

/// One key returned by a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    pub key: String,
    pub version: u64,
}

/// Whether a write condition `if_version` holds when the key's version is
/// `current` (`None`: absent).
pub fn condition_holds(if_version: u64, current: Option<u64>) -> bool {
    match current {
        None => if_version == 0,
        Some(version) => version == if_version,
    }
}

impl Call {
    /// The single key this call touches; `None` for a list.
    pub fn key(&self) -> Option<&str> {
        match self {
            Call::Put { key, .. }
            | Call::Delete { key, .. }
            | Call::Get { key }
            | Call::LocalRead { key, .. } => Some(key),
            Call::List { .. } => None,
        }
    }
}

impl Op {
    /// Checks that the record itself makes sense (the outcome is one this call can
    /// have, times are ordered, a list's entries are distinct keys under its prefix).
    /// Checkers skip malformed records and report them, because nothing sound can be
    /// concluded from a record that cannot describe a real reply.
    pub fn validate(&self) -> Result<(), String> {
        if self.complete_ns.is_some_and(|c| c < self.invoke_ns) {
            return Err("completes before it is invoked".to_string());
        }
        let fits = match (&self.call, &self.outcome) {
            (_, Outcome::Failed { .. } | Outcome::Unknown { .. }) => true,
            (Call::Put { .. }, Outcome::Written { .. }) => true,
            (Call::Delete { .. }, Outcome::Deleted { .. } | Outcome::NotFound) => true,
            (
                Call::Put { if_version, .. } | Call::Delete { if_version, .. },
                Outcome::VersionMismatch { .. },
            ) => if_version.is_some(),
            (
                Call::Get { .. } | Call::LocalRead { .. },
                Outcome::Found { .. } | Outcome::Absent,
            ) => true,
            (Call::List { prefix }, Outcome::Listed { entries }) => {
                let mut keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
                if let Some(outside) = keys.iter().find(|k| !k.starts_with(prefix.as_str())) {
                    return Err(format!("list returned key {outside:?} outside its prefix"));
                }
                keys.sort_unstable();
                if let Some(pair) = keys.windows(2).find(|w| w[0] == w[1]) {
                    return Err(format!("list returned key {:?} twice", pair[0]));
                }
                true
            }
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err("outcome does not fit the call".to_string())
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cond = |c: &Option<u64>| c.map(|v| format!(", if_version={v}")).unwrap_or_default();
        match self {
            Call::Put {
                key,
                value,
                if_version,
            } => write!(f, "put({key:?}, {value:?}{})", cond(if_version)),
            Call::Delete { key, if_version } => write!(f, "delete({key:?}{})", cond(if_version)),
            Call::Get { key } => write!(f, "get({key:?})"),
            Call::List { prefix } => write!(f, "list({prefix:?})"),
            Call::LocalRead { key, min_version } => {
                write!(f, "local_read({key:?}, min_version={min_version})")
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Written { version } => write!(f, "written v{version}"),
            Outcome::Deleted { version } => write!(f, "deleted v{version}"),
            Outcome::NotFound => write!(f, "not found"),
            Outcome::VersionMismatch { current: Some(v) } => write!(f, "mismatch, current v{v}"),
            Outcome::VersionMismatch { current: None } => write!(f, "mismatch, current absent"),
            Outcome::Found { value, version } => write!(f, "found {value:?} v{version}"),
            Outcome::Absent => write!(f, "absent"),
            Outcome::Listed { entries } => {
                let shown: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{}@v{}", e.key, e.version))
                    .collect();
                write!(f, "listed [{}]", shown.join(", "))
            }
            Outcome::Failed { reason } => write!(f, "failed ({reason})"),
            Outcome::Unknown { reason } => write!(f, "unknown ({reason})"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .complete_ns
            .map_or_else(|| "never".to_string(), |c| c.to_string());
        write!(
            f,
            "client {} [{}..{} ns] {} -> {}",
            self.client, self.invoke_ns, end, self.call, self.outcome
        )
    }
}

/// Error reading a JSON-lines history.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// Line `line` (1-based) is not a valid operation record.
    Parse {
        line: usize,
        error: serde_json::Error,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "reading history: {e}"),
            ReadError::Parse { line, error } => write!(f, "history line {line}: {error}"),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io(e) => Some(e),
            ReadError::Parse { error, .. } => Some(error),
        }
    }
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

/// Writes one JSON object per operation, one per line.
pub fn write_jsonl<W: Write>(mut out: W, ops: &[Op]) -> io::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads operations written by [`write_jsonl`]; blank lines are skipped.
pub fn read_jsonl<R: BufRead>(input: R) -> Result<Vec<Op>, ReadError> {
    let mut ops = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op =
            serde_json::from_str(&line).map_err(|error| ReadError::Parse { line: i + 1, error })?;
        ops.push(op);
    }
    Ok(ops)
}

/// Saves a history to `path` as JSON lines.
pub fn save_jsonl(path: &Path, ops: &[Op]) -> io::Result<()> {
    write_jsonl(BufWriter::new(File::create(path)?), ops)
}

/// Loads a history saved by [`save_jsonl`].
pub fn load_jsonl(path: &Path) -> Result<Vec<Op>, ReadError> {
    read_jsonl(BufReader::new(File::open(path)?))
}

/// Terse constructors for hand-written test histories.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    pub fn op(client: u32, invoke: u64, complete: u64, call: Call, outcome: Outcome) -> Op {
        Op {
            client,
            invoke_ns: invoke,
            complete_ns: Some(complete),
            call,
            outcome,
        }
    }
    pub fn put(key: &str, value: &str, if_version: Option<u64>) -> Call {
        Call::Put {
            key: key.into(),
            value: value.into(),
            if_version,
        }
    }
    pub fn del(key: &str, if_version: Option<u64>) -> Call {
        Call::Delete {
            key: key.into(),
            if_version,
        }
    }
    pub fn get(key: &str) -> Call {
        Call::Get { key: key.into() }
    }
    pub fn written(version: u64) -> Outcome {
        Outcome::Written { version }
    }
    pub fn deleted(version: u64) -> Outcome {
        Outcome::Deleted { version }
    }
    pub fn found(value: &str, version: u64) -> Outcome {
        Outcome::Found {
            value: value.into(),
            version,
        }
    }
    pub fn mismatch(current: Option<u64>) -> Outcome {
        Outcome::VersionMismatch { current }
    }
    pub fn unknown() -> Outcome {
        Outcome::Unknown {
            reason: "deadline exceeded".into(),
        }
    }
    pub fn failed() -> Outcome {
        Outcome::Failed {
            reason: "unavailable".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    #[test]
    fn jsonl_round_trip() {
        let ops = vec![
            op(1, 10, 20, put("soup", "s1", Some(0)), written(3)),
            op(2, 15, 40, get("soup"), found("s1", 3)),
            Op {
                client: 3,
                invoke_ns: 50,
                complete_ns: None,
                call: Call::List { prefix: "s".into() },
                outcome: Outcome::Listed {
                    entries: vec![ListEntry {
                        key: "soup".into(),
                        version: 3,
                    }],
                },
            },
            op(4, 60, 70, del("soup", None), unknown()),
        ];
        let mut buf = Vec::new();
        write_jsonl(&mut buf, &ops).unwrap();
        assert_eq!(String::from_utf8_lossy(&buf).lines().count(), 4);
        assert_eq!(read_jsonl(buf.as_slice()).unwrap(), ops);
    }

    #[test]
    fn bad_line_is_reported_with_its_number() {
        let text = "\n{\"client\":1}\n";
        match read_jsonl(text.as_bytes()) {
            Err(ReadError::Parse { line, .. }) => assert_eq!(line, 2),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn validation_rejects_impossible_records() {
        assert!(op(1, 5, 4, get("a"), Outcome::Absent).validate().is_err());
        assert!(op(1, 1, 2, get("a"), written(1)).validate().is_err());
        assert!(
            op(1, 1, 2, put("a", "x", None), mismatch(None))
                .validate()
                .is_err()
        );
        let list = |keys: &[&str]| Outcome::Listed {
            entries: keys
                .iter()
                .map(|k| ListEntry {
                    key: k.to_string(),
                    version: 1,
                })
                .collect(),
        };
        let call = Call::List { prefix: "p".into() };
        assert!(
            op(1, 1, 2, call.clone(), list(&["pa", "pb"]))
                .validate()
                .is_ok()
        );
        assert!(
            op(1, 1, 2, call.clone(), list(&["pa", "q"]))
                .validate()
                .is_err()
        );
        assert!(op(1, 1, 2, call, list(&["pa", "pa"])).validate().is_err());
    }
}
