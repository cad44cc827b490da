//! The audit ledger: a hash-chained, append-only record of every transition, in SQLite or PostgreSQL.
//!
//! The chain itself (entries, canonical form, hash, verification) is pure code in [`chain`]; the
//! stores in `sqlite` and `postgres` only serialize appends on the head and move rows. The format a
//! third party needs to verify an export is in `docs/audit.md`.

mod chain;
mod export;
mod guard;
mod page;
mod postgres;
mod redact;
mod sqlite;

pub use redact::{redact, redact_text};
#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub use chain::{
    AUDIT_TRAILER, Anchor, BadEntry, GENESIS_HASH, INTENT_ACTION, LedgerEntry, NewEntry, RolloutRef, Verifier,
    VerifyReport, format_at, normalize_at, verify_entries,
};
pub use export::verify_export;
pub use guard::WriteState;

/// Errors of the audit ledger.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database string is not a path, a `sqlite:` URL or a `postgres://` URL.
    #[error(
        "ledger database `{given}` is neither a file path, a sqlite:// URL nor a postgres:// URL; \
         use e.g. `/var/lib/keelson/ledger.db`, `sqlite://ledger.db` or `postgres://keelson@db/keelson`"
    )]
    UnsupportedDatabase {
        /// The database string, with any password removed.
        given: String,
    },
    /// The SQLite file's directory could not be created.
    #[error("cannot create {path} for the ledger database: {source}; check the path and its permissions")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The database could not be opened or connected to.
    #[error("cannot open the ledger database `{database}`: {reason}; check that it exists and is reachable")]
    Open {
        /// The database string, with any password removed.
        database: String,
        /// Why, as the driver said it, with any password removed (the driver's error itself is
        /// not kept: printing its chain could show what was masked here).
        reason: String,
    },
    /// A database operation failed.
    #[error("ledger database error while {doing}: {source}")]
    Database {
        /// What the ledger was doing.
        doing: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The database was written by a newer Keelson.
    #[error(
        "the ledger database has schema version {found}, but this keelson knows only up to {known}; \
         upgrade keelson (never downgrade a ledger database)"
    )]
    SchemaTooNew {
        /// The database's version.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// A schema migration failed; its transaction was rolled back.
    #[error(
        "ledger schema migration {version} ({name}) failed: {source}; the database is unchanged, \
         fix the cause and restart"
    )]
    Migration {
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// An entry was refused before anything was written.
    #[error("ledger entry for app `{app}` refused: {reason}")]
    InvalidEntry {
        /// The entry's app.
        app: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The ledger is not the one this process has been writing (deleted, replaced, truncated).
    #[error(
        "the audit ledger was replaced under the running daemon: {reason}; nothing more is appended \
         (and no provider is called) until the daemon is restarted on the right ledger (see \
         docs/operations.md, \"A deleted or replaced ledger\")"
    )]
    LedgerReplaced {
        /// What was noticed.
        reason: String,
    },
    /// An audit query was malformed.
    #[error("invalid audit query: {0}")]
    InvalidQuery(String),
    /// Reading or writing an export failed.
    #[error("audit export I/O failed: {0}")]
    Io(#[from] io::Error),
}

impl From<keelson_core::ledger::LedgerError> for Error {
    fn from(e: keelson_core::ledger::LedgerError) -> Self {
        match e {
            keelson_core::ledger::LedgerError::InvalidEntry { app, reason } => Error::InvalidEntry { app, reason },
            keelson_core::ledger::LedgerError::InvalidQuery(q) => Error::InvalidQuery(q),
        }
    }
}

impl Error {
    /// [`Error::Open`] for `database`, with every credential masked in both the string and the cause.
    pub(crate) fn open(database: &str, source: sqlx::Error) -> Self {
        Error::Open { database: redact(database), reason: redact_text(&source.to_string(), database) }
    }

    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnsupportedDatabase { .. } => "unsupported_database",
            Error::CreateDir { .. } => "create_dir",
            Error::Open { .. } => "open",
            Error::Database { .. } => "database",
            Error::SchemaTooNew { .. } => "schema_too_new",
            Error::Migration { .. } => "migration",
            Error::InvalidEntry { .. } => "invalid_entry",
            Error::LedgerReplaced { .. } => "ledger_replaced",
            Error::InvalidQuery(_) => "invalid_query",
            Error::Io(_) => "io",
        }
    }
}

/// Result type of the ledger.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a sqlx error to [`Error::Database`] with what the ledger was doing.
fn db(doing: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Database { doing, source }
}

/// Filters for [`Ledger::entries`]; every field is optional and they combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuditQuery {
    /// Only entries with a greater seq (exclusive).
    #[serde(alias = "since_seq")]
    pub since_seq: Option<i64>,
    /// Only entries of this app.
    pub app: Option<String>,
    /// At most this many entries (the oldest matching ones); no limit when absent.
    pub limit: Option<i64>,
    /// Only entries at or after this RFC 3339 time.
    #[serde(alias = "since_time")]
    pub since_time: Option<String>,
}

/// One embedded schema migration.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// The column list in table order, shared by both stores' queries.
macro_rules! ledger_columns {
    () => {
        "seq, at, app, desired_commit, desired_digest, rollout, from_state, to_state, action, actor, detail, \
         prev_hash, hash"
    };
}
use ledger_columns;

/// The newest entry of each app up to a seq (`ledger_app` index: one probe per app).
macro_rules! latest_per_app_sql {
    ($param:literal) => {
        concat!(
            "SELECT ",
            ledger_columns!(),
            " FROM ledger WHERE seq IN (SELECT MAX(seq) FROM ledger WHERE seq <= ",
            $param,
            " GROUP BY app) ORDER BY app"
        )
    };
}
use latest_per_app_sql;

/// Rows come back as entries, or as a decode error that verification reports as a bad row.
type EntryStream<'a> = BoxStream<'a, Result<LedgerEntry, sqlx::Error>>;

#[derive(Clone, Debug)]
enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The audit ledger; cheap to clone (it holds a connection pool), shareable across tasks.
#[derive(Clone, Debug)]
pub struct Ledger {
    store: Store,
    guard: std::sync::Arc<guard::WriteGuard>,
}

/// Pages read ahead of the hashing thread (bounds memory at a few pages).
const VERIFY_QUEUE: usize = 2;

/// A page of entries on its way to the hashing thread.
enum VerifyPage {
    /// Packed by the database (SQLite).
    Packed(page::PackedPage),
    /// Read as rows (PostgreSQL).
    Rows(Vec<LedgerEntry>),
    /// A row did not decode; the page is read again row by row to name it.
    Unreadable,
}

impl Ledger {
    /// Closes the connections; for SQLite this checkpoints the WAL into the database file, so the
    /// file alone is a complete copy once the daemon has stopped.
    pub async fn close(&self) {
        match &self.store {
            Store::Sqlite(s) => s.pool().close().await,
            Store::Postgres(s) => s.pool().close().await,
        }
    }

    /// Opens (creating and migrating if needed) a ledger: a file path, `sqlite://…` or `postgres://…`.
    pub async fn open(database: &str) -> Result<Ledger> {
        let lower = database.trim_start().to_ascii_lowercase();
        let store = if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Store::Postgres(postgres::PgStore::open(database).await?)
        } else if lower.starts_with("sqlite:") {
            Store::Sqlite(sqlite::SqliteStore::open_url(database).await?)
        } else if database.trim().is_empty() || database.contains("://") {
            return Err(Error::UnsupportedDatabase { given: redact(database) });
        } else {
            Store::Sqlite(sqlite::SqliteStore::open_path(database.as_ref()).await?)
        };
        let files = match &store {
            Store::Sqlite(s) => s.files(),
            Store::Postgres(_) => Vec::new(),
        };
        Ok(Ledger { store, guard: std::sync::Arc::new(guard::WriteGuard::watching(&files)) })
    }

    /// Appends one entry and returns it as stored.
    pub async fn append(&self, entry: NewEntry) -> Result<LedgerEntry> {
        let mut stored = self.append_batch(vec![entry]).await?;
        Ok(stored.pop().expect("append_batch returns one entry per input"))
    }

    /// Appends several entries in one transaction: all of them, contiguous, or none.
    pub async fn append_batch(&self, entries: Vec<NewEntry>) -> Result<Vec<LedgerEntry>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let prepared = entries.into_iter().map(chain::prepare).collect::<Result<Vec<_>, _>>()?;
        self.guard.before_append()?;
        let last = self.guard.last_written();
        let result = match &self.store {
            Store::Sqlite(s) => s.append(prepared, last.as_ref()).await,
            Store::Postgres(s) => s.append(prepared, last.as_ref()).await,
        };
        self.guard.after_append(&result, |e: &LedgerEntry| (e.seq, e.hash.clone()));
        result
    }

    /// Whether appends succeed, fail, or are refused because the ledger was swapped.
    pub fn write_state(&self) -> WriteState {
        self.guard.write_state()
    }

    /// Looks for a swapped ledger without appending: the files' identity, and whether the entry
    /// this process appended last is still in the chain. Returns the write state after the check.
    pub async fn check_identity(&self) -> WriteState {
        self.guard.check_files();
        if let Some((seq, hash)) = self.guard.last_written() {
            match self.entries_after(seq - 1, 1).await {
                Ok(found) => {
                    let found = found.first().filter(|e| e.seq == seq).map(|e| e.hash.as_str());
                    if let Err(Error::LedgerReplaced { reason }) = guard::looked_up(seq, &hash, found) {
                        self.guard.mark_replaced(reason);
                    }
                }
                // An unreadable ledger is reported by the next append; a read is no proof of a swap.
                Err(e) => tracing::debug!(error = %e, "ledger identity check could not read the ledger"),
            }
        }
        self.write_state()
    }

    /// The newest entry's `(seq, hash)`.
    pub async fn head(&self) -> Result<Option<(i64, String)>> {
        let head = match &self.store {
            Store::Sqlite(s) => s.head().await?,
            Store::Postgres(s) => s.head().await?,
        };
        Ok(head.map(|h| (h.seq, h.hash)))
    }

    /// The number of entries.
    pub async fn count(&self) -> Result<i64> {
        match &self.store {
            Store::Sqlite(s) => s.count().await,
            Store::Postgres(s) => s.count().await,
        }
    }

    /// Entries matching `query`, ascending seq.
    pub async fn entries(&self, query: &AuditQuery) -> Result<Vec<LedgerEntry>> {
        if let Some(limit) = query.limit
            && limit < 0
        {
            return Err(Error::InvalidQuery(format!("limit must be 0 or more, not {limit}")));
        }
        let since_time = query.since_time.as_deref().map(normalize_at).transpose()?;
        match &self.store {
            Store::Sqlite(s) => s.entries(query, since_time).await,
            Store::Postgres(s) => s.entries(query, since_time).await,
        }
    }

    /// Up to `limit` entries with seq greater than `seq`, ascending (the status branch's outbox).
    pub async fn entries_after(&self, seq: i64, limit: i64) -> Result<Vec<LedgerEntry>> {
        self.entries(&AuditQuery { since_seq: Some(seq), limit: Some(limit), ..AuditQuery::default() }).await
    }

    /// The newest entry of each app with seq at most `upto` (what the status branch shows at
    /// `upto`), by app name.
    pub async fn latest_per_app(&self, upto: i64) -> Result<Vec<LedgerEntry>> {
        match &self.store {
            Store::Sqlite(s) => s.latest_per_app(upto).await,
            Store::Postgres(s) => s.latest_per_app(upto).await,
        }
    }

    /// Intents (`action == "intent"`) that no later entry names as `detail.intentSeq`, ascending seq.
    pub async fn open_intents(&self) -> Result<Vec<LedgerEntry>> {
        match &self.store {
            Store::Sqlite(s) => s.open_intents().await,
            Store::Postgres(s) => s.open_intents().await,
        }
    }

    /// Recomputes the whole chain and checks it against status-branch anchors, in constant memory.
    ///
    /// Read the anchors before calling this: the ledger only grows, so every anchor read earlier
    /// must have its entry by the time the table is read. The table is read a page at a time,
    /// each page in its own statement; since rows are only ever added after the head, the pages
    /// together are the chain as it stood when the last one was read.
    pub async fn verify(&self, anchors: &[Anchor]) -> Result<VerifyReport> {
        let mut verifier = Verifier::new(anchors);
        let mut from = Some(i64::MIN);
        while let Some(start) = from {
            let (returned, unpackable) = self.verify_packed(verifier, start).await?;
            verifier = returned;
            // A page that does not unpack (only after tampering) is read again row by row, so the
            // report names the row and says what is wrong with it.
            let Some(page_start) = unpackable else { break };
            let rows = match &self.store {
                Store::Sqlite(s) => s.page_rows(page_start).await,
                Store::Postgres(s) => s.page_rows(page_start).await,
            }
            .map_err(db("reading the ledger to verify it"))?;
            let full = rows.len() as i64 == page::PAGE_ENTRIES;
            let last = rows.iter().rev().find_map(|r| r.as_ref().ok()).map(|e| e.seq);
            verifier = tokio::task::spawn_blocking(move || {
                for row in rows {
                    match row {
                        Ok(entry) if verifier.push(&entry) => {}
                        Ok(_) => break,
                        Err(e) => {
                            // A row that no longer decodes (tampered types) is a bad entry, not an outage.
                            verifier.push_unreadable(format!("the row does not read as a ledger entry: {e}"));
                            break;
                        }
                    }
                }
                verifier
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
            from = if verifier.is_bad() || !full { None } else { last.and_then(|seq| seq.checked_add(1)) };
        }
        Ok(verifier.finish())
    }

    /// Verifies packed pages from seq `from` on until the end or a bad entry; returns the verifier
    /// and, if a page did not unpack, the seq that page starts from.
    async fn verify_packed(&self, mut verifier: Verifier, from: i64) -> Result<(Verifier, Option<i64>)> {
        // Hashing is CPU work, so it runs on a blocking thread fed through a short queue while
        // this task fetches the next page: the database and the hashing work at the same time.
        let (pages, mut queue) = tokio::sync::mpsc::channel::<(i64, VerifyPage)>(VERIFY_QUEUE);
        let hashing = tokio::task::spawn_blocking(move || {
            while let Some((start, page)) = queue.blocking_recv() {
                let more = match page {
                    VerifyPage::Packed(packed) => {
                        let Some(entries) = packed.text.as_deref().and_then(|text| page::unpack(text, packed.rows))
                        else {
                            return (verifier, Some(start));
                        };
                        entries.into_iter().all(|entry| verifier.push_fields(entry))
                    }
                    VerifyPage::Rows(entries) => entries.iter().all(|entry| verifier.push(entry)),
                    VerifyPage::Unreadable => return (verifier, Some(start)),
                };
                if !more {
                    // Dropping the queue tells the reader to stop.
                    return (verifier, None);
                }
            }
            (verifier, None)
        });
        let mut next = Some(from);
        let mut failed = None;
        while let Some(start) = next {
            // SQLite packs a page into one value (sqlx's per-value cost there is high); PostgreSQL
            // sends rows in one buffer each, cheaper than packing them on the server.
            let fetched = match &self.store {
                Store::Sqlite(s) => s.packed_page(start).await.map(|p| (p.rows, p.last, VerifyPage::Packed(p))),
                Store::Postgres(s) => s.page_rows(start).await.map(|rows| {
                    let count = rows.len();
                    let last = rows.last().and_then(|r| r.as_ref().ok()).map(|e| e.seq);
                    let entries: Option<Vec<LedgerEntry>> = rows.into_iter().map(Result::ok).collect();
                    (count, last, entries.map_or(VerifyPage::Unreadable, VerifyPage::Rows))
                }),
            };
            let (rows, last, page) = match fetched {
                Ok(fetched) => fetched,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            };
            next = match last {
                Some(last) if rows as i64 == page::PAGE_ENTRIES => last.checked_add(1),
                _ => None,
            };
            if rows == 0 || pages.send((start, page)).await.is_err() {
                break;
            }
        }
        drop(pages);
        let outcome = hashing.await.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        match failed {
            Some(e) => Err(db("reading the ledger to verify it")(e)),
            None => Ok(outcome),
        }
    }

    /// Writes every entry as JSON Lines (one [`LedgerEntry`] per line, ascending seq); returns the count.
    pub async fn export(&self, out: &mut (dyn io::Write + Send)) -> Result<u64> {
        export::write_jsonl(self.all_entries(), out).await
    }

    /// All entries, ascending seq, from one consistent snapshot.
    fn all_entries(&self) -> EntryStream<'_> {
        match &self.store {
            Store::Sqlite(s) => s.all_entries(),
            Store::Postgres(s) => s.all_entries(),
        }
    }
}

/// A database URL with its database name replaced by `name` (query parameters kept), e.g. to
/// point a PostgreSQL server URL at a scratch database.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority..].find('/') {
        Some(i) => &base[..authority + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}
