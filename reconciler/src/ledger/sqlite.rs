//! The SQLite store: WAL mode, appends serialized by `BEGIN IMMEDIATE` on the database file.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use time::OffsetDateTime;

use super::chain::{self, Head, LedgerEntry, PreparedEntry};
use super::guard::{Continuity, continuity, looked_up};
use super::page::{PAGE_ENTRIES, PackedPage, packed_page_select};
use super::{AuditQuery, EntryStream, Error, Migration, Result, db, ledger_columns};

/// Schema migrations, applied in order at open; never edit one that has shipped, add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "ledger", sql: include_str!("../../migrations/sqlite/0001_ledger.sql") },
    Migration { version: 2, name: "intents", sql: include_str!("../../migrations/sqlite/0002_intents.sql") },
];

/// Rows per INSERT statement of a batch append.
const INSERT_ROWS: usize = 200;

/// Generous, because every appender (thread or process) queues on the one write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// True for SQLITE_BUSY and its extended codes (the database is locked by another connection).
fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

/// Intents without an outcome. The subquery's expression matches the `ledger_outcome_of` index,
/// so this is one index probe per intent, not a scan. The `+` strips `seq`'s INTEGER affinity:
/// without it SQLite would convert the JSON value before comparing and could not use the index.
pub(super) const OPEN_INTENTS: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM ledger i WHERE action = 'intent' AND NOT EXISTS (",
    "SELECT 1 FROM ledger o WHERE json_extract(o.detail, '$.intentSeq') = +i.seq) ORDER BY seq"
);

/// A SQLite ledger database.
#[derive(Clone, Debug)]
pub(super) struct SqliteStore {
    pool: SqlitePool,
    /// The database file, for a file database (not in memory).
    path: Option<std::path::PathBuf>,
}

impl SqliteStore {
    /// Opens a database file, creating it and its parent directories.
    pub(super) async fn open_path(path: &Path) -> Result<SqliteStore> {
        Self::open_with(SqliteConnectOptions::new().filename(path), &path.display().to_string(), false).await
    }

    /// Opens a `sqlite:` URL, creating the file and its parent directories.
    pub(super) async fn open_url(url: &str) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::from_str(url).map_err(|source| Error::open(url, source))?;
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::open_with(options, url, in_memory).await
    }

    async fn open_with(options: SqliteConnectOptions, database: &str, in_memory: bool) -> Result<SqliteStore> {
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
            && !in_memory
        {
            tokio::fs::create_dir_all(dir).await.map_err(|source| Error::CreateDir { path: dir.to_owned(), source })?;
        }
        let path = (!in_memory).then(|| options.get_filename().to_path_buf());
        let mut pool_options = SqlitePoolOptions::new()
            .max_connections(8)
            // One connection always stays open: SQLite deletes the WAL when its last connection
            // closes, and the write guard must be able to take a WAL that vanished or changed
            // identity for what it is (someone else's doing).
            .min_connections(1)
            .max_lifetime(None)
            .after_release(|conn, _| {
                Box::pin(async move {
                    // A COMMIT that failed on an I/O error is rolled back by SQLite itself, so the
                    // ROLLBACK sqlx queues when the transaction is dropped fails too and leaves
                    // the connection's transaction depth at 1: every later BEGIN on it would fail
                    // ("non-zero transaction depth"). A ping flushes a queued ROLLBACK (only
                    // needed, and only paid, after a failure); a connection still inside a
                    // transaction after it is closed, not reused.
                    if !sqlx::Connection::is_in_transaction(conn) {
                        return Ok(true);
                    }
                    sqlx::Connection::ping(conn).await?;
                    Ok(!sqlx::Connection::is_in_transaction(conn))
                })
            });
        if in_memory {
            // An in-memory database lives in a shared cache, where a second connection would get
            // table-lock errors that busy_timeout does not wait out; and it vanishes with its last
            // connection, so that one must never be closed as idle.
            pool_options = pool_options.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let started = std::time::Instant::now();
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                // Several openers of one new database at once: switching it to WAL takes a lock
                // that SQLite's busy handler does not wait for, so the opener waits here instead.
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(source) => return Err(Error::open(database, source)),
            }
        };
        let store = SqliteStore { pool, path };
        store.migrate(MIGRATIONS).await?;
        Ok(store)
    }

    /// The database file, whose identity the write guard watches (none in memory). Not its WAL:
    /// SQLite itself deletes the WAL when the last connection closes and makes a new one with the
    /// next, which happens legitimately (a connection left in a failed transaction is closed and
    /// replaced), so a new WAL inode does not mean a new ledger.
    pub(super) fn files(&self) -> Vec<std::path::PathBuf> {
        self.path.iter().cloned().collect()
    }

    /// Applies the migrations this database lacks, in one transaction that holds the write lock.
    async fn migrate(&self, migrations: &[Migration]) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db("locking the schema"))?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS keelson_schema (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db("creating the schema version table"))?;
        let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM keelson_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(db("reading the schema version"))?;
        let known = MIGRATIONS.last().map_or(0, |m| m.version);
        if current > known {
            return Err(Error::SchemaTooNew { found: current, known });
        }
        for m in migrations.iter().filter(|m| m.version > current) {
            let failed = |source| Error::Migration { version: m.version, name: m.name, source };
            sqlx::raw_sql(m.sql).execute(&mut *tx).await.map_err(failed)?;
            sqlx::query("INSERT INTO keelson_schema (version, name, applied_at) VALUES (?, ?, ?)")
                .bind(m.version)
                .bind(m.name)
                .bind(chain::format_at(OffsetDateTime::now_utc()))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(db("committing the schema migration"))
    }

    pub(super) async fn append(
        &self,
        batch: Vec<PreparedEntry>,
        last_written: Option<&(i64, String)>,
    ) -> Result<Vec<LedgerEntry>> {
        // IMMEDIATE takes the database's write lock before reading the head, so no other
        // connection or process can chain onto the same head.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db("locking the ledger head"))?;
        let head = sqlx::query("SELECT seq, hash, at FROM ledger ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the ledger head"))?
            .map(|row| head_from_row(&row))
            .transpose()
            .map_err(db("reading the ledger head"))?;
        // The chain must still hold the entry this process appended last (see `guard`).
        match continuity(last_written, head.as_ref()) {
            Continuity::Continues => {}
            Continuity::Broken(reason) => return Err(Error::LedgerReplaced { reason }),
            Continuity::Lookup(seq, ours) => {
                let found: Option<String> = sqlx::query_scalar("SELECT hash FROM ledger WHERE seq = ?")
                    .bind(seq)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(db("checking the chain under the append lock"))?;
                looked_up(seq, &ours, found.as_deref())?;
            }
        }
        let entries = chain::chain_onto(head, batch, OffsetDateTime::now_utc())?;
        // Multi-row INSERTs: one statement per chunk instead of one round trip to the SQLite
        // worker per entry (13 parameters a row, well under SQLite's 32,766).
        for chunk in entries.chunks(INSERT_ROWS) {
            let mut insert = QueryBuilder::<Sqlite>::new(concat!("INSERT INTO ledger (", ledger_columns!(), ") "));
            insert.push_values(chunk, |mut row, e| {
                row.push_bind(e.seq)
                    .push_bind(&e.at)
                    .push_bind(&e.app)
                    .push_bind(&e.desired_commit)
                    .push_bind(&e.desired_digest)
                    .push_bind(e.rollout)
                    .push_bind(&e.from_state)
                    .push_bind(&e.to_state)
                    .push_bind(&e.action)
                    .push_bind(&e.actor)
                    .push_bind(&e.detail)
                    .push_bind(&e.prev_hash)
                    .push_bind(&e.hash);
            });
            insert.build().execute(&mut *tx).await.map_err(db("appending to the ledger"))?;
        }
        tx.commit().await.map_err(db("committing an append"))?;
        Ok(entries)
    }

    pub(super) async fn head(&self) -> Result<Option<Head>> {
        sqlx::query("SELECT seq, hash, at FROM ledger ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the ledger head"))?
            .map(|row| head_from_row(&row))
            .transpose()
            .map_err(db("reading the ledger head"))
    }

    pub(super) async fn count(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
            .fetch_one(&self.pool)
            .await
            .map_err(db("counting ledger entries"))
    }

    pub(super) async fn entries(&self, q: &AuditQuery, since_time: Option<String>) -> Result<Vec<LedgerEntry>> {
        let mut sql = QueryBuilder::<Sqlite>::new(concat!("SELECT ", ledger_columns!(), " FROM ledger WHERE 1=1"));
        if let Some(seq) = q.since_seq {
            sql.push(" AND seq > ").push_bind(seq);
        }
        if let Some(app) = &q.app {
            sql.push(" AND app = ").push_bind(app.clone());
        }
        if let Some(at) = since_time {
            sql.push(" AND at >= ").push_bind(at);
        }
        sql.push(" ORDER BY seq");
        if let Some(limit) = q.limit {
            sql.push(" LIMIT ").push_bind(limit);
        }
        let rows = sql.build().fetch_all(&self.pool).await.map_err(db("querying the ledger"))?;
        rows.iter().map(entry_from_row).collect::<Result<_, _>>().map_err(db("reading ledger entries"))
    }

    pub(super) async fn latest_per_app(&self, upto: i64) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(super::latest_per_app_sql!("?"))
            .bind(upto)
            .fetch_all(&self.pool)
            .await
            .map_err(db("reading the newest entry of each app"))?;
        rows.iter().map(entry_from_row).collect::<Result<_, _>>().map_err(db("reading ledger entries"))
    }

    pub(super) async fn open_intents(&self) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(OPEN_INTENTS).fetch_all(&self.pool).await.map_err(db("finding open intents"))?;
        rows.iter().map(entry_from_row).collect::<Result<_, _>>().map_err(db("reading open intents"))
    }

    /// Up to [`PAGE_ENTRIES`] entries from seq `from` on, packed into one value (see `page`).
    pub(super) async fn packed_page(&self, from: i64) -> Result<PackedPage, sqlx::Error> {
        let row = sqlx::query(concat!(
            packed_page_select!(),
            " FROM (SELECT ",
            ledger_columns!(),
            " FROM ledger WHERE seq >= ? ORDER BY seq LIMIT ?) AS page"
        ))
        .bind(from)
        .bind(PAGE_ENTRIES)
        .fetch_one(&self.pool)
        .await?;
        let rows: i64 = row.try_get(0)?;
        // Text that is not UTF-8 leaves the page to be read row by row, which names the row.
        let text = row.try_get::<Option<String>, _>(2).ok().flatten();
        Ok(PackedPage { rows: usize::try_from(rows).unwrap_or(0), last: row.try_get(1)?, text })
    }

    /// The rows [`Self::packed_page`] packs, one by one, each decoded on its own.
    pub(super) async fn page_rows(&self, from: i64) -> Result<Vec<Result<LedgerEntry, sqlx::Error>>, sqlx::Error> {
        let rows =
            sqlx::query(concat!("SELECT ", ledger_columns!(), " FROM ledger WHERE seq >= ? ORDER BY seq LIMIT ?"))
                .bind(from)
                .bind(PAGE_ENTRIES)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(entry_from_row).collect())
    }

    pub(super) fn all_entries(&self) -> EntryStream<'_> {
        sqlx::query(concat!("SELECT ", ledger_columns!(), " FROM ledger ORDER BY seq"))
            .fetch(&self.pool)
            .map(|row| row.and_then(|row| entry_from_row(&row)))
            .boxed()
    }

    /// A store on an existing pool with only some migrations applied, to test upgrades.
    #[cfg(test)]
    pub(super) async fn open_at_version(path: &Path, version: i64) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new().filename(path).create_if_missing(true);
        let pool = SqlitePool::connect_with(options).await.map_err(db("opening a test database"))?;
        let store = SqliteStore { pool, path: Some(path.to_owned()) };
        let upto = MIGRATIONS.iter().filter(|m| m.version <= version).count();
        store.migrate(&MIGRATIONS[..upto]).await?;
        Ok(store)
    }

    /// The pool (tests play the attacker through it; `Ledger::close` closes it).
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn head_from_row(row: &SqliteRow) -> Result<Head, sqlx::Error> {
    Ok(Head { seq: row.try_get("seq")?, hash: row.try_get("hash")?, at: row.try_get("at")? })
}

fn entry_from_row(row: &SqliteRow) -> Result<LedgerEntry, sqlx::Error> {
    Ok(LedgerEntry {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        app: row.try_get("app")?,
        desired_commit: row.try_get("desired_commit")?,
        desired_digest: row.try_get("desired_digest")?,
        rollout: row.try_get("rollout")?,
        from_state: row.try_get("from_state")?,
        to_state: row.try_get("to_state")?,
        action: row.try_get("action")?,
        actor: row.try_get("actor")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}
