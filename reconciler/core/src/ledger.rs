//! The ledger's domain: entries, their canonical form and hash, and chain verification.
//!
//! Nothing here does I/O, so the format and the verifier can be tested exhaustively and reused by
//! `keelson audit verify --file` on an export. The format is specified in `docs/audit.md`; the
//! stores (SQLite, PostgreSQL) only serialize appends on the head and move rows.

use std::fmt;

use keelson_manifest::canonical::{is_canonical, to_canonical_string, write_string as write_json_string};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::event::{Event, EventError};
use crate::phase::{Phase, UnknownPhase};

/// Why an entry or a query was refused before anything was written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// An entry was refused before anything was written.
    #[error("ledger entry for app `{app}` refused: {reason}")]
    InvalidEntry {
        /// The entry's app.
        app: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// An audit query was malformed.
    #[error("invalid audit query: {0}")]
    InvalidQuery(String),
}

type Result<T, E = LedgerError> = std::result::Result<T, E>;
use LedgerError as Error;

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

/// Who and what a transition is about, before its event: with the event, it is a [`NewEntry`].
#[derive(Clone, Debug, PartialEq)]
pub struct Transition<'a> {
    /// The app.
    pub app: &'a str,
    /// The full desired commit id.
    pub desired_commit: &'a str,
    /// The app's desired-state digest.
    pub desired_digest: &'a str,
    /// The rollout the entry belongs to, if any.
    pub rollout: Option<RolloutRef>,
    /// Phase before.
    pub from: Phase,
    /// Phase after.
    pub to: Phase,
}

impl Transition<'_> {
    /// The entry recording `event` for this transition, caused by `actor`.
    pub fn record(&self, actor: &str, event: &Event) -> NewEntry {
        NewEntry {
            app: self.app.to_owned(),
            desired_commit: self.desired_commit.to_owned(),
            desired_digest: self.desired_digest.to_owned(),
            rollout: self.rollout,
            from_state: self.from.to_string(),
            to_state: self.to.to_string(),
            action: event.action().to_owned(),
            actor: actor.to_owned(),
            detail: event.detail(),
        }
    }
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
        let mut out = String::with_capacity(CANONICAL_CAPACITY);
        self.write_canonical_form(&mut out);
        out
    }

    /// Writes [`LedgerEntry::canonical_form`] into `out` (cleared first).
    pub fn write_canonical_form(&self, out: &mut String) {
        self.fields().write_canonical_form(out);
    }

    /// The entry's fields, borrowed.
    pub fn fields(&self) -> EntryFields<'_> {
        EntryFields {
            seq: self.seq,
            at: &self.at,
            app: &self.app,
            desired_commit: &self.desired_commit,
            desired_digest: &self.desired_digest,
            rollout: self.rollout,
            from_state: &self.from_state,
            to_state: &self.to_state,
            action: &self.action,
            actor: &self.actor,
            detail: &self.detail,
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
    }

    /// Recomputes the hash from the other fields (lowercase hex SHA-256).
    pub fn compute_hash(&self) -> String {
        let digest = self.fields().digest_with(&mut String::with_capacity(CANONICAL_CAPACITY));
        hex_text(&hex_digits(&digest))
    }

    /// The typed event this entry records; an action this release does not know, or a detail not
    /// of its action's shape, is an error naming the entry.
    pub fn event(&self) -> Result<Event, EventError> {
        Event::parse(self.seq, &self.action, &self.detail)
    }

    /// `from_state` and `to_state` as phases.
    pub fn phases(&self) -> Result<(Phase, Phase), UnknownPhase> {
        Ok((self.from_state.parse()?, self.to_state.parse()?))
    }

    /// The idempotency key if this entry is an intent.
    pub fn intent_key(&self) -> Option<String> {
        if self.action != INTENT_ACTION {
            return None;
        }
        match self.format_fields().key {
            Some(Value::String(key)) => Some(key),
            _ => None,
        }
    }

    /// The seq of the intent this entry is the outcome of.
    pub fn outcome_of(&self) -> Option<i64> {
        self.format_fields().intent_seq.and_then(|v| v.as_i64())
    }

    fn format_fields(&self) -> FormatFields {
        serde_json::from_str(&self.detail).unwrap_or_default()
    }

    /// The status-branch trailer that anchors this entry, `Keelson-Audit: <seq> <hash>`.
    pub fn audit_trailer(&self) -> String {
        format!("{AUDIT_TRAILER}: {} {}", self.seq, self.hash)
    }
}

/// The fields of a [`LedgerEntry`] borrowed from wherever they were read (an entry, or a page of
/// rows packed by the database), so verification need not allocate per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryFields<'a> {
    pub seq: i64,
    pub at: &'a str,
    pub app: &'a str,
    pub desired_commit: &'a str,
    pub desired_digest: &'a str,
    pub rollout: Option<i64>,
    pub from_state: &'a str,
    pub to_state: &'a str,
    pub action: &'a str,
    pub actor: &'a str,
    pub detail: &'a str,
    pub prev_hash: &'a str,
    pub hash: &'a str,
}

impl EntryFields<'_> {
    /// Writes the RFC 8785 form of the hashed object into `out` (cleared first).
    ///
    /// The hashed object has fixed keys whose values are strings, integers or null, so its RFC 8785
    /// form needs no `Value` tree: the keys are written in their sorted order and each string is
    /// escaped in place. Verification does this for every entry, into one reused buffer.
    /// `canonical_form_matches_the_generic_canonicalization` in the tests holds it to
    /// `to_canonical_string(&entry.hashed_object())`.
    pub fn write_canonical_form(&self, out: &mut String) {
        out.clear();
        // Sorted by UTF-16 code units, as RFC 8785 requires (all keys are ASCII).
        let fields: [(&str, &str); 7] = [
            ("{\"action\":", self.action),
            (",\"actor\":", self.actor),
            (",\"app\":", self.app),
            (",\"at\":", self.at),
            (",\"desired_commit\":", self.desired_commit),
            (",\"desired_digest\":", self.desired_digest),
            (",\"detail\":", self.detail),
        ];
        for (key, value) in fields {
            out.push_str(key);
            write_json_string(value, out);
        }
        out.push_str(",\"from_state\":");
        write_json_string(self.from_state, out);
        out.push_str(",\"prev_hash\":");
        write_json_string(self.prev_hash, out);
        out.push_str(",\"rollout\":");
        match self.rollout {
            Some(rollout) => push_int(rollout, out),
            None => out.push_str("null"),
        }
        out.push_str(",\"seq\":");
        push_int(self.seq, out);
        out.push_str(",\"to_state\":");
        write_json_string(self.to_state, out);
        out.push('}');
    }

    /// SHA-256 of the canonical form, written into `scratch` on the way.
    pub fn digest_with(&self, scratch: &mut String) -> [u8; 32] {
        self.write_canonical_form(scratch);
        Sha256::digest(scratch.as_bytes()).into()
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

/// The newest entry of a chain that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    /// Its seq.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// The outcome of verifying a chain (and its status-branch anchors).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// True when every entry and every anchor checked out.
    pub ok: bool,
    /// Entries that verified (all of them when `ok`; those before `first_bad` otherwise).
    pub entries: u64,
    /// The last entry that verified.
    pub head: Option<ChainHead>,
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
            (None, Some(ChainHead { seq, hash })) => {
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
    /// The canonical form of the entry being checked, reused so a long chain allocates nothing per entry.
    scratch: String,
}

impl Verifier {
    /// A verifier that also checks these status-branch anchors.
    pub fn new(anchors: &[Anchor]) -> Verifier {
        let mut anchors = anchors.to_vec();
        anchors.sort_by_key(|a| a.seq);
        Verifier {
            anchors,
            next_anchor: 0,
            last: None,
            entries: 0,
            anchors_checked: 0,
            first_bad: None,
            scratch: String::with_capacity(CANONICAL_CAPACITY),
        }
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
        self.push_fields(entry.fields())
    }

    /// [`Verifier::push`] of borrowed fields.
    pub fn push_fields(&mut self, entry: EntryFields<'_>) -> bool {
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
                format!("prev_hash {} of the first entry is not 64 zeros", short(entry.prev_hash))
            } else {
                format!(
                    "prev_hash {} does not match the hash {} of entry {} (a row was inserted, removed, \
                     reordered or rewritten before this one)",
                    short(entry.prev_hash),
                    short(want_prev),
                    want_seq - 1
                )
            };
            return self.fail(entry.seq, reason);
        }
        let recomputed = hex_digits(&entry.digest_with(&mut self.scratch));
        if recomputed[..] != *entry.hash.as_bytes() {
            let reason = format!(
                "stored hash {} does not match the recomputed hash {} (this row was edited)",
                short(entry.hash),
                short(&hex_text(&recomputed))
            );
            return self.fail(entry.seq, reason);
        }
        if let Some(reason) = detail_problem(entry.detail).or_else(|| format_problem(&entry)) {
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
                    short(entry.hash)
                );
                return self.fail(entry.seq, reason);
            }
            self.anchors_checked += 1;
            self.next_anchor += 1;
        }
        match &mut self.last {
            Some((seq, hash)) => {
                *seq = entry.seq;
                hash.clear();
                hash.push_str(entry.hash);
            }
            None => self.last = Some((entry.seq, entry.hash.to_owned())),
        }
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
            head: self.last.map(|(seq, hash)| ChainHead { seq, hash }),
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

/// What the ledger format forbids that a hash alone does not catch (an entry with a matching hash
/// can still be one Keelson never writes): U+0000 in any field, and an `at` that is not RFC 3339
/// UTC with exactly six fractional digits.
fn format_problem(entry: &EntryFields<'_>) -> Option<String> {
    let fields = [
        ("at", entry.at),
        ("app", entry.app),
        ("desired_commit", entry.desired_commit),
        ("desired_digest", entry.desired_digest),
        ("from_state", entry.from_state),
        ("to_state", entry.to_state),
        ("action", entry.action),
        ("actor", entry.actor),
        ("detail", entry.detail),
        ("prev_hash", entry.prev_hash),
        ("hash", entry.hash),
    ];
    if let Some((field, _)) = fields.iter().find(|(_, v)| v.contains('\0')) {
        return Some(format!("{field} contains U+0000, which the ledger format forbids"));
    }
    (!is_ledger_time(entry.at)).then(|| {
        format!("at {:?} is not RFC 3339 UTC with six fractional digits (2026-11-02T10:00:00.000000Z)", entry.at)
    })
}

/// True for `YYYY-MM-DDTHH:MM:SS.ffffffZ` naming a real instant.
pub fn is_ledger_time(at: &str) -> bool {
    let b = at.as_bytes();
    let shape = b.len() == 27
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            26 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    shape && time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok()
}

/// Why a stored detail is not what the appender would have written, if it is not.
fn detail_problem(detail: &str) -> Option<String> {
    if is_canonical(detail) {
        return None;
    }
    match serde_json::from_str::<Value>(detail) {
        Err(e) => Some(format!("detail is not JSON ({e})")),
        Ok(value) => match to_canonical_string(&value) {
            Ok(canonical) if canonical == detail => None,
            Ok(_) => Some("detail is not in canonical (RFC 8785) form".to_owned()),
            Err(e) => Some(format!("detail has no canonical form ({e})")),
        },
    }
}

/// The detail fields the ledger format constrains, whatever the event.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FormatFields {
    #[serde(default)]
    key: Option<Value>,
    #[serde(default)]
    intent_seq: Option<Value>,
}

/// A new entry checked and canonicalized, ready to be chained once the head is known.
#[derive(Clone, Debug)]
pub struct PreparedEntry {
    new: NewEntry,
    detail: String,
    intent_seq: Option<i64>,
}

/// Validates a new entry before any lock is taken, so a bad entry costs no database round trip.
pub fn prepare(new: NewEntry) -> Result<PreparedEntry> {
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
    // The ledger format itself constrains two detail fields (docs/audit.md); the rest is the
    // event's, which the fold reads back typed.
    let format: FormatFields = serde_json::from_value(new.detail.clone()).unwrap_or_default();
    if new.action == INTENT_ACTION && !matches!(&format.key, Some(Value::String(k)) if !k.is_empty()) {
        return Err(invalid("an intent needs detail.key, a non-empty idempotency key string".to_owned()));
    }
    let intent_seq = match format.intent_seq {
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
pub struct Head {
    pub seq: i64,
    pub hash: String,
    pub at: String,
}

/// Chains prepared entries onto `head` (read under the append lock), assigning seq, time and hashes.
pub fn chain_onto(head: Option<Head>, batch: Vec<PreparedEntry>, now: OffsetDateTime) -> Result<Vec<LedgerEntry>> {
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
            return Err(invalid(format!("intentSeq {intent} must name an earlier entry than this one (seq {seq})")));
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

/// A time as the ledger writes it (any RFC 3339 time is accepted); `None` if it is not one.
pub fn parse_at(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
}

/// Parses any RFC 3339 time and returns it in the ledger's `at` form, so text comparison is time order.
pub fn normalize_at(text: &str) -> Result<String> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
        Error::InvalidQuery(format!("`{text}` is not an RFC 3339 time ({e}); write it like 2026-11-02T10:00:00Z"))
    })?;
    Ok(format_at(t))
}

/// Room for a typical entry's canonical form, so the buffer rarely grows.
const CANONICAL_CAPACITY: usize = 1024;

/// Lowercase hex of a SHA-256 digest, without allocating.
fn hex_digits(digest: &[u8; 32]) -> [u8; 64] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 64];
    for (pair, b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
    out
}

fn hex_text(digits: &[u8; 64]) -> String {
    digits.iter().map(|&d| char::from(d)).collect()
}

/// The first 12 characters of a hash, enough to tell hashes apart in a message.
fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// Appends an integer in decimal (as RFC 8785 writes integers that fit an `i64`).
fn push_int(n: i64, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(out, "{n}");
}
