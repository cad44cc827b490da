//! The PostgreSQL store: appends serialized by a transaction-scoped advisory lock.

use futures_util::StreamExt;
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};
use time::OffsetDateTime;

use super::chain::{self, Head, LedgerEntry, PreparedEntry};
use super::page::PAGE_ENTRIES;
use super::{AuditQuery, EntryStream, Error, Migration, Result, db, ledger_columns};

/// Schema migrations, applied in order at open; never edit one that has shipped, add a new one.
const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "ledger", sql: include_str!("../../migrations/postgres/0001_ledger.sql") },
    Migration { version: 2, name: "intents", sql: include_str!("../../migrations/postgres/0002_intents.sql") },
];

/// Advisory lock held while appending ("keelson" + 1). Advisory locks are per database, so
/// several ledgers on one server do not contend.
const APPEND_LOCK: i64 = 0x6b65_656c_736f_6e01;
/// Advisory lock held while migrating ("keelson" + 2).
const MIGRATE_LOCK: i64 = 0x6b65_656c_736f_6e02;

/// Intents without an outcome. The subquery's expression matches the `ledger_outcome_of` index;
/// the appender guarantees `intentSeq` is an integer, so comparing its text with seq's is exact.
pub(super) const OPEN_INTENTS: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM ledger i WHERE action = 'intent' AND NOT EXISTS (",
    "SELECT 1 FROM ledger o WHERE ((o.detail::jsonb) ->> 'intentSeq') = i.seq::text) ORDER BY seq"
);

/// Longest wait for the database to answer a connection attempt.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A PostgreSQL ledger database.
#[derive(Clone, Debug)]
pub(super) struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to a `postgres://` URL and brings its schema up to date.
    pub(super) async fn open(url: &str) -> Result<PgStore> {
        let store = Self::connect(url).await?;
        store.migrate(MIGRATIONS).await?;
        Ok(store)
    }

    async fn connect(url: &str) -> Result<PgStore> {
        let options: PgConnectOptions = url.parse().map_err(|source| Error::open(url, source))?;
        // One direct connection first: a pool retries a refused connection until its acquire
        // timeout and then says only "pool timed out"; a single attempt fails at once with the
        // cause (refused, unknown host, bad password), bounded for a host that never answers.
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(first)) => {
                let _ = first.close().await;
            }
            Ok(Err(source)) => return Err(Error::open(url, source)),
            Err(_) => {
                let source = sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
                ));
                return Err(Error::open(url, source));
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| Error::open(url, source))?;
        Ok(PgStore { pool })
    }

    /// Applies the migrations this database lacks, in one transaction under the migration lock,
    /// so daemons starting together neither race on DDL nor apply a migration twice.
    async fn migrate(&self, migrations: &[Migration]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db("starting the schema migration"))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db("locking the schema"))?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS keelson_schema (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
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
            sqlx::query("INSERT INTO keelson_schema (version, name, applied_at) VALUES ($1, $2, $3)")
                .bind(m.version)
                .bind(m.name)
                .bind(chain::format_at(OffsetDateTime::now_utc()))
                .execute(&mut *tx)
                .await
                .map_err(failed)?;
        }
        tx.commit().await.map_err(db("committing the schema migration"))
    }

    pub(super) async fn append(&self, batch: Vec<PreparedEntry>) -> Result<Vec<LedgerEntry>> {
        // Explicitly READ COMMITTED whatever the server's default: the head must be read with a
        // snapshot taken after the lock is granted, not when the transaction began.
        let mut tx =
            self.pool.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await.map_err(db("starting an append"))?;
        // Every appender, in this process or another daemon, queues here, so the next statement
        // sees the head the previous holder committed.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(APPEND_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db("locking the ledger head"))?;
        let head = sqlx::query("SELECT seq, hash, at FROM ledger ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("reading the ledger head"))?
            .map(|row| head_from_row(&row))
            .transpose()
            .map_err(db("reading the ledger head"))?;
        let entries = chain::chain_onto(head, batch, OffsetDateTime::now_utc())?;
        // One statement for the whole batch: a round trip per entry would cap a batch at the
        // server's latency. UNNEST zips the column arrays back into rows.
        let text = |field: fn(&LedgerEntry) -> &str| entries.iter().map(field).collect::<Vec<&str>>();
        sqlx::query(concat!(
            "INSERT INTO ledger (",
            ledger_columns!(),
            ") SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[])"
        ))
        .bind(entries.iter().map(|e| e.seq).collect::<Vec<i64>>())
        .bind(text(|e| &e.at))
        .bind(text(|e| &e.app))
        .bind(text(|e| &e.desired_commit))
        .bind(text(|e| &e.desired_digest))
        .bind(entries.iter().map(|e| e.rollout).collect::<Vec<Option<i64>>>())
        .bind(text(|e| &e.from_state))
        .bind(text(|e| &e.to_state))
        .bind(text(|e| &e.action))
        .bind(text(|e| &e.actor))
        .bind(text(|e| &e.detail))
        .bind(text(|e| &e.prev_hash))
        .bind(text(|e| &e.hash))
        .execute(&mut *tx)
        .await
        .map_err(db("appending to the ledger"))?;
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
        let mut sql = QueryBuilder::<Postgres>::new(concat!("SELECT ", ledger_columns!(), " FROM ledger WHERE TRUE"));
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

    pub(super) async fn open_intents(&self) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(OPEN_INTENTS).fetch_all(&self.pool).await.map_err(db("finding open intents"))?;
        rows.iter().map(entry_from_row).collect::<Result<_, _>>().map_err(db("reading open intents"))
    }

    /// Up to [`PAGE_ENTRIES`] entries from seq `from` on, each decoded on its own.
    pub(super) async fn page_rows(&self, from: i64) -> Result<Vec<Result<LedgerEntry, sqlx::Error>>, sqlx::Error> {
        let rows =
            sqlx::query(concat!("SELECT ", ledger_columns!(), " FROM ledger WHERE seq >= $1 ORDER BY seq LIMIT $2"))
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

    /// A store with only some migrations applied, to test upgrades.
    #[cfg(test)]
    pub(super) async fn open_at_version(url: &str, version: i64) -> Result<PgStore> {
        let store = Self::connect(url).await?;
        let upto = MIGRATIONS.iter().filter(|m| m.version <= version).count();
        store.migrate(&MIGRATIONS[..upto]).await?;
        Ok(store)
    }

    /// The pool (tests play the attacker through it; `Ledger::close` closes it).
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn head_from_row(row: &PgRow) -> Result<Head, sqlx::Error> {
    Ok(Head { seq: row.try_get("seq")?, hash: row.try_get("hash")?, at: row.try_get("at")? })
}

fn entry_from_row(row: &PgRow) -> Result<LedgerEntry, sqlx::Error> {
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
