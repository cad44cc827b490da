//! The ledger's domain: entries, their canonical form and hash, and chain verification.
//!
//! Nothing here does I/O, so the format and the verifier can be tested exhaustively and reused by
//! `keelson audit verify --file` on an export. The format is specified in `docs/audit.md`.

use std::fmt;

use keelson_manifest::canonical::to_canonical_string;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::{Error, Result};

/// `prev_hash` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `action` of an intent entry.
pub const INTENT_ACTION: &str = "intent";

/// The commit trailer that anchors a ledger entry on the status branch.
pub const AUDIT_TRAILER: &str = "Keelson-Audit";

/// Which rollout an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutRef {
    /// The entry starts a rollout: its own seq becomes the rollout id.
    StartsHere,
    /// The entry belongs to the rollout started by the entry with this seq.
    Seq(i64),
}

/// An entry to append; the ledger assigns `seq`, `at`, `prev_hash` and `hash`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEntry {
    /// The app the transition is about (empty for daemon-wide events).
    pub app: String,
    /// The full desired commit id.
    pub desired_commit: String,
    /// The app's desired-state digest.
    pub desired_digest: String,
    /// The rollout this entry belongs to, if any.
    pub rollout: Option<RolloutRef>,
    /// State before the transition.
    pub from_state: String,
    /// State after the transition.
    pub to_state: String,
    /// What happened (`intent` for an intent, see [`INTENT_ACTION`]).
    pub action: String,
    /// Who caused it (`daemon`, a user, a CI job).
    pub actor: String,
    /// Free-form details; must not contain non-integer numbers (they have no portable canonical form).
    pub detail: Value,
}

/// One row of the ledger, exactly as hashed and stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// Position in the chain, from 1, contiguous.
    pub seq: i64,
    /// RFC 3339 UTC time with exactly 6 fractional digits and `Z`.
    pub at: String,
    /// The app the transition is about.
    pub app: String,
    /// The full desired commit id.
    pub desired_commit: String,
    /// The app's desired-state digest.
    pub desired_digest: String,
    /// The seq of the entry that started this entry's rollout.
    pub rollout: Option<i64>,
    /// State before the transition.
    pub from_state: String,
    /// State after the transition.
    pub to_state: String,
    /// What happened.
    pub action: String,
    /// Who caused it.
    pub actor: String,
    /// The canonical JSON text of the detail (a string in the hashed object, not a nested object).
    pub detail: String,
    /// `hash` of the previous entry, or [`GENESIS_HASH`].
    pub prev_hash: String,
    /// `hex(sha256(JCS(this entry without hash)))`.
    pub hash: String,
}

impl LedgerEntry {
    /// The detail as JSON; a detail that is not JSON (only possible after tampering) comes back as a string.
    pub fn detail_json(&self) -> Value {
        serde_json::from_str(&self.detail).unwrap_or_else(|_| Value::String(self.detail.clone()))
    }

    /// The object that is hashed: every field except `hash`.
    pub fn hashed_object(&self) -> Value {
        let mut map = Map::with_capacity(12);
        let mut put = |key: &str, value: Value| map.insert(key.to_owned(), value);
        put("seq", self.seq.into());
        put("at", self.at.as_str().into());
        put("app", self.app.as_str().into());
        put("desired_commit", self.desired_commit.as_str().into());
        put("desired_digest", self.desired_digest.as_str().into());
        put("rollout", self.rollout.map_or(Value::Null, Value::from));
        put("from_state", self.from_state.as_str().into());
        put("to_state", self.to_state.as_str().into());
        put("action", self.action.as_str().into());
        put("actor", self.actor.as_str().into());
        put("detail", self.detail.as_str().into());
        put("prev_hash", self.prev_hash.as_str().into());
        Value::Object(map)
    }

    /// The RFC 8785 text whose SHA-256 is the hash.
    pub fn canonical_form(&self) -> String {
        to_canonical_string(&self.hashed_object())
            .expect("an object of strings, integers and null always has a canonical form")
    }

    /// Recomputes the hash from the other fields (lowercase hex SHA-256).
    pub fn compute_hash(&self) -> String {
        hex(&Sha256::digest(self.canonical_form().as_bytes()))
    }

    /// The idempotency key if this entry is an intent.
    pub fn intent_key(&self) -> Option<String> {
        if self.action != INTENT_ACTION {
            return None;
        }
        match self.detail_json().get("key") {
            Some(Value::String(key)) => Some(key.clone()),
            _ => None,
        }
    }

    /// The seq of the intent this entry is the outcome of.
    pub fn outcome_of(&self) -> Option<i64> {
        self.detail_json().get("intentSeq").and_then(Value::as_i64)
    }

    /// The status-branch trailer that anchors this entry, `Keelson-Audit: <seq> <hash>`.
    pub fn audit_trailer(&self) -> String {
        format!("{AUDIT_TRAILER}: {} {}", self.seq, self.hash)
    }
}

/// A `Keelson-Audit: <seq> <hash>` trailer found on the status branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The anchored entry's seq.
    pub seq: i64,
    /// The hash the status branch recorded for it.
    pub hash: String,
    /// The status commit carrying the trailer (for the report).
    pub commit: String,
}

impl Anchor {
    /// Parses a trailer value `<seq> <hash>` (the part after `Keelson-Audit:`).
    pub fn from_trailer(value: &str, commit: &str) -> Option<Anchor> {
        let mut parts = value.split_whitespace();
        let seq = parts.next()?.parse().ok()?;
        let hash = parts.next()?.to_owned();
        parts.next().is_none().then(|| Anchor { seq, hash, commit: commit.to_owned() })
    }
}

/// The first entry at which verification failed, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BadEntry {
    /// The seq of the first entry whose recomputed chain disagrees.
    pub seq: i64,
    /// What disagreed, in words.
    pub reason: String,
}

/// The outcome of verifying a chain (and its status-branch anchors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// True when every entry and every anchor checked out.
    pub ok: bool,
    /// Entries that verified (all of them when `ok`; those before `first_bad` otherwise).
    pub entries: u64,
    /// The last entry that verified, `(seq, hash)`.
    pub head: Option<(i64, String)>,
    /// Anchors that matched their entry.
    pub anchors_checked: u64,
    /// The first entry whose recomputed chain disagrees.
    pub first_bad: Option<BadEntry>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let anchors = match self.anchors_checked {
            1 => "1 anchor checked".to_owned(),
            n => format!("{n} anchors checked"),
        };
        match (&self.first_bad, &self.head) {
            (Some(bad), _) => write!(
                f,
                "BAD seq {}: {} ({} entries verified before it, {anchors})",
                bad.seq, bad.reason, self.entries
            ),
            (None, Some((seq, hash))) => {
                write!(f, "OK {} entries, head seq {seq} {hash}, {anchors}", self.entries)
            }
            (None, None) => write!(f, "OK 0 entries (the ledger is empty), {anchors}"),
        }
    }
}

/// Verifies entries one at a time in seq order, in constant memory (apart from the anchors).
///
/// Feed entries with [`Verifier::push`] until it returns false, then call [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    /// Sorted by seq so they can be matched while the entries stream past.
    anchors: Vec<Anchor>,
    next_anchor: usize,
    last: Option<(i64, String)>,
    entries: u64,
    anchors_checked: u64,
    first_bad: Option<BadEntry>,
}

impl Verifier {
    /// A verifier that also checks these status-branch anchors.
    pub fn new(anchors: &[Anchor]) -> Verifier {
        let mut anchors = anchors.to_vec();
        anchors.sort_by_key(|a| a.seq);
        Verifier { anchors, next_anchor: 0, last: None, entries: 0, anchors_checked: 0, first_bad: None }
    }

    /// True once a bad entry was found; further entries are ignored.
    pub fn is_bad(&self) -> bool {
        self.first_bad.is_some()
    }

    fn expected(&self) -> (i64, &str) {
        match &self.last {
            None => (1, GENESIS_HASH),
            Some((seq, hash)) => (seq + 1, hash),
        }
    }

    fn fail(&mut self, seq: i64, reason: String) -> bool {
        self.first_bad = Some(BadEntry { seq, reason });
        false
    }

    /// Records that the next record could not be read as an entry at all (e.g. a mangled export line).
    pub fn push_unreadable(&mut self, reason: String) {
        if !self.is_bad() {
            let (seq, _) = self.expected();
            self.fail(seq, reason);
        }
    }

    /// Checks the next entry; returns false once the chain is known to be bad.
    pub fn push(&mut self, entry: &LedgerEntry) -> bool {
        if self.is_bad() {
            return false;
        }
        let (want_seq, want_prev) = self.expected();
        if entry.seq != want_seq {
            let reason = if entry.seq > want_seq {
                let missing = if entry.seq - 1 == want_seq {
                    format!("entry {want_seq} is missing")
                } else {
                    format!("entries {want_seq} to {} are missing", entry.seq - 1)
                };
                format!("{missing} (deleted rows): the chain has a gap just before this entry")
            } else {
                format!(
                    "seq {} follows seq {} (an inserted, duplicated or reordered row); expected seq {want_seq}",
                    entry.seq,
                    want_seq - 1
                )
            };
            return self.fail(entry.seq, reason);
        }
        if entry.prev_hash != want_prev {
            let reason = if want_seq == 1 {
                format!("prev_hash {} of the first entry is not 64 zeros", short(&entry.prev_hash))
            } else {
                format!(
                    "prev_hash {} does not match the hash {} of entry {} (a row was inserted, removed, \
                     reordered or rewritten before this one)",
                    short(&entry.prev_hash),
                    short(want_prev),
                    want_seq - 1
                )
            };
            return self.fail(entry.seq, reason);
        }
        let recomputed = entry.compute_hash();
        if recomputed != entry.hash {
            let reason = format!(
                "stored hash {} does not match the recomputed hash {} (this row was edited)",
                short(&entry.hash),
                short(&recomputed)
            );
            return self.fail(entry.seq, reason);
        }
        if let Some(reason) = detail_problem(&entry.detail) {
            return self.fail(entry.seq, reason);
        }
        while let Some(anchor) = self.anchors.get(self.next_anchor) {
            if anchor.seq > entry.seq {
                break;
            }
            if anchor.seq < entry.seq {
                // Only possible for seq < 1: every other seq below this one was an entry already.
                let reason = format!(
                    "status commit {} anchors seq {}, which no ledger entry can have",
                    short(&anchor.commit),
                    anchor.seq
                );
                let seq = anchor.seq;
                return self.fail(seq, reason);
            }
            if anchor.hash != entry.hash {
                let reason = format!(
                    "status commit {} anchors this entry with hash {}, but the ledger has {} \
                     (the ledger from here on or the status branch was rewritten)",
                    short(&anchor.commit),
                    short(&anchor.hash),
                    short(&entry.hash)
                );
                return self.fail(entry.seq, reason);
            }
            self.anchors_checked += 1;
            self.next_anchor += 1;
        }
        self.last = Some((entry.seq, entry.hash.clone()));
        self.entries += 1;
        true
    }

    /// Checks the anchors past the last entry and returns the report.
    pub fn finish(mut self) -> VerifyReport {
        if !self.is_bad()
            && let Some(anchor) = self.anchors.get(self.next_anchor)
        {
            let (want_seq, _) = self.expected();
            let highest = self.anchors.last().map_or(anchor.seq, |a| a.seq);
            let reason = match &self.last {
                None => format!(
                    "the ledger is empty, but status commit {} anchors seq {} (the ledger was truncated; \
                     the status branch anchors up to seq {highest})",
                    short(&anchor.commit),
                    anchor.seq
                ),
                Some((last, _)) => format!(
                    "the ledger ends at seq {last}, but status commit {} anchors seq {} (the tail was \
                     truncated; the status branch anchors up to seq {highest})",
                    short(&anchor.commit),
                    anchor.seq
                ),
            };
            self.fail(want_seq, reason);
        }
        VerifyReport {
            ok: self.first_bad.is_none(),
            entries: self.entries,
            head: self.last,
            anchors_checked: self.anchors_checked,
            first_bad: self.first_bad,
        }
    }
}

/// Verifies a whole chain held in memory or read from anywhere, against status-branch anchors.
pub fn verify_entries(entries: impl IntoIterator<Item = LedgerEntry>, anchors: &[Anchor]) -> VerifyReport {
    let mut verifier = Verifier::new(anchors);
    for entry in entries {
        if !verifier.push(&entry) {
            break;
        }
    }
    verifier.finish()
}

/// Why a stored detail is not what the appender would have written, if it is not.
fn detail_problem(detail: &str) -> Option<String> {
    match serde_json::from_str::<Value>(detail) {
        Err(e) => Some(format!("detail is not JSON ({e})")),
        Ok(value) => match to_canonical_string(&value) {
            Ok(canonical) if canonical == detail => None,
            Ok(_) => Some("detail is not in canonical (RFC 8785) form".to_owned()),
            Err(e) => Some(format!("detail has no canonical form ({e})")),
        },
    }
}

/// A new entry checked and canonicalized, ready to be chained once the head is known.
#[derive(Clone, Debug)]
pub(crate) struct PreparedEntry {
    new: NewEntry,
    detail: String,
    intent_seq: Option<i64>,
}

/// Validates a new entry before any lock is taken, so a bad entry costs no database round trip.
pub(crate) fn prepare(new: NewEntry) -> Result<PreparedEntry> {
    let invalid = |reason: String| Error::InvalidEntry { app: new.app.clone(), reason };
    for (field, value) in [
        ("app", &new.app),
        ("desired_commit", &new.desired_commit),
        ("desired_digest", &new.desired_digest),
        ("from_state", &new.from_state),
        ("to_state", &new.to_state),
        ("action", &new.action),
        ("actor", &new.actor),
    ] {
        // PostgreSQL cannot store NUL in text; refusing it on both engines keeps them interchangeable.
        if value.contains('\0') {
            return Err(invalid(format!("{field} contains a NUL character; remove it")));
        }
    }
    let detail = to_canonical_string(&new.detail).map_err(|e| {
        invalid(format!("detail has no canonical JSON form ({e}); write non-integer numbers as strings"))
    })?;
    if new.action == INTENT_ACTION && !matches!(new.detail.get("key"), Some(Value::String(k)) if !k.is_empty()) {
        return Err(invalid("an intent needs detail.key, a non-empty idempotency key string".to_owned()));
    }
    let intent_seq = match new.detail.get("intentSeq") {
        None => None,
        Some(v) => match v.as_i64() {
            Some(seq) if seq >= 1 => Some(seq),
            _ => {
                return Err(invalid(format!("detail.intentSeq must be the integer seq of an earlier intent, not {v}")));
            }
        },
    };
    Ok(PreparedEntry { new, detail, intent_seq })
}

/// The newest entry, which the next append chains onto.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: i64,
    pub hash: String,
    pub at: String,
}

/// Chains prepared entries onto `head` (read under the append lock), assigning seq, time and hashes.
pub(crate) fn chain_onto(
    head: Option<Head>,
    batch: Vec<PreparedEntry>,
    now: OffsetDateTime,
) -> Result<Vec<LedgerEntry>> {
    let now = format_at(now);
    let (mut seq, mut prev_hash, mut prev_at) = match head {
        Some(h) => (h.seq, h.hash, h.at),
        None => (0, GENESIS_HASH.to_owned(), String::new()),
    };
    // Never let time run backwards along the chain (clock steps, several hosts), so that
    // `since_time` queries and readers can rely on `at` being non-decreasing in seq.
    let at = if prev_at > now { std::mem::take(&mut prev_at) } else { now };
    let mut out = Vec::with_capacity(batch.len());
    for p in batch {
        seq += 1;
        let invalid = |reason: String| Error::InvalidEntry { app: p.new.app.clone(), reason };
        let rollout = match p.new.rollout {
            None => None,
            Some(RolloutRef::StartsHere) => Some(seq),
            Some(RolloutRef::Seq(r)) if (1..seq).contains(&r) => Some(r),
            Some(RolloutRef::Seq(r)) => {
                return Err(invalid(format!(
                    "rollout Seq({r}) must name an earlier entry (1..{seq}); use StartsHere to start one"
                )));
            }
        };
        if let Some(intent) = p.intent_seq
            && intent >= seq
        {
            return Err(invalid(format!(
                "detail.intentSeq {intent} must name an earlier entry than this one (seq {seq})"
            )));
        }
        let mut entry = LedgerEntry {
            seq,
            at: at.clone(),
            app: p.new.app,
            desired_commit: p.new.desired_commit,
            desired_digest: p.new.desired_digest,
            rollout,
            from_state: p.new.from_state,
            to_state: p.new.to_state,
            action: p.new.action,
            actor: p.new.actor,
            detail: p.detail,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        prev_hash = entry.hash.clone();
        out.push(entry);
    }
    Ok(out)
}

/// Formats a time as the ledger writes it: UTC, 6 fractional digits, `Z`.
pub fn format_at(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"))
        .expect("a UTC time between years 0 and 9999 always formats")
}

/// Parses any RFC 3339 time and returns it in the ledger's `at` form, so text comparison is time order.
pub fn normalize_at(text: &str) -> Result<String> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        Error::InvalidQuery(format!("`{text}` is not an RFC 3339 time ({e}); write it like 2026-11-02T10:00:00Z"))
    })?;
    Ok(format_at(t))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The first 12 characters of a hash, enough to tell hashes apart in a message.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}
