//! The sim's own SQLite file: the simulated fleet and the idempotency keys it has carried out.
//!
//! Kept apart from the daemon's database on purpose: an intent in the ledger and its effect here
//! must never share a transaction, or crash recovery would never be exercised for real.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

use crate::{Outcome, ResourceId};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS resources (
        instance     TEXT NOT NULL,
        api_version  TEXT NOT NULL,
        kind         TEXT NOT NULL,
        namespace    TEXT NOT NULL,
        name         TEXT NOT NULL,
        owner        TEXT NOT NULL,
        digest       TEXT NOT NULL,
        spec         TEXT NOT NULL,
        rollout_from INTEGER NOT NULL,
        PRIMARY KEY (instance, api_version, kind, namespace, name)
    )",
    "CREATE INDEX IF NOT EXISTS resources_by_owner ON resources (instance, owner)",
    "CREATE TABLE IF NOT EXISTS idempotency_keys (
        instance  TEXT NOT NULL,
        key       TEXT NOT NULL,
        operation TEXT NOT NULL,
        outcome   TEXT NOT NULL,
        at        INTEGER NOT NULL,
        PRIMARY KEY (instance, key)
    )",
];

/// One simulated live object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StoredResource {
    pub owner: String,
    pub digest: String,
    pub spec: Value,
    /// When the current rollout of this object started, in unix microseconds of the sim's clock.
    pub rollout_from: i64,
}

/// Opens (creating if needed) the database at `path` in WAL mode and creates the tables.
pub(crate) async fn open(path: &Path) -> sqlx::Result<SqlitePool> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode survives a killed process, which is the crash the tests simulate.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
    for statement in SCHEMA {
        sqlx::query(*statement).execute(&pool).await?;
    }
    Ok(pool)
}

/// The outcome recorded for `key`, if it was carried out before.
pub(crate) async fn recorded_outcome(
    conn: &mut SqliteConnection,
    instance: &str,
    key: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT outcome FROM idempotency_keys WHERE instance = ? AND key = ?")
        .bind(instance)
        .bind(key)
        .fetch_optional(conn)
        .await
}

/// Remembers that `key` was carried out, so a replay does nothing.
pub(crate) async fn record_key(
    conn: &mut SqliteConnection,
    instance: &str,
    key: &str,
    operation: &str,
    outcome: Outcome,
    at: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO idempotency_keys (instance, key, operation, outcome, at) VALUES (?, ?, ?, ?, ?)")
        .bind(instance)
        .bind(key)
        .bind(operation)
        .bind(outcome_label(outcome))
        .bind(at)
        .execute(conn)
        .await?;
    Ok(())
}

/// The object named by `id`, if it exists.
pub(crate) async fn get(conn: &mut SqliteConnection, id: &ResourceId) -> sqlx::Result<Option<StoredResource>> {
    let row = sqlx::query(
        "SELECT owner, digest, spec, rollout_from FROM resources
         WHERE instance = ? AND api_version = ? AND kind = ? AND namespace = ? AND name = ?",
    )
    .bind(&id.instance)
    .bind(&id.api_version)
    .bind(&id.kind)
    .bind(&id.namespace)
    .bind(&id.name)
    .fetch_optional(conn)
    .await?;
    row.map(|row| {
        let spec: String = row.try_get("spec")?;
        Ok(StoredResource {
            owner: row.try_get("owner")?,
            digest: row.try_get("digest")?,
            spec: serde_json::from_str(&spec).map_err(|e| sqlx::Error::Decode(e.into()))?,
            rollout_from: row.try_get("rollout_from")?,
        })
    })
    .transpose()
}

/// Creates or replaces the object named by `id`.
pub(crate) async fn put(conn: &mut SqliteConnection, id: &ResourceId, resource: &StoredResource) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO resources (instance, api_version, kind, namespace, name, owner, digest, spec,
                                rollout_from)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (instance, api_version, kind, namespace, name) DO UPDATE SET
            owner = excluded.owner, digest = excluded.digest, spec = excluded.spec,
            rollout_from = excluded.rollout_from",
    )
    .bind(&id.instance)
    .bind(&id.api_version)
    .bind(&id.kind)
    .bind(&id.namespace)
    .bind(&id.name)
    .bind(&resource.owner)
    .bind(&resource.digest)
    .bind(resource.spec.to_string())
    .bind(resource.rollout_from)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the object named by `id`; false if there was none.
pub(crate) async fn remove(conn: &mut SqliteConnection, id: &ResourceId) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "DELETE FROM resources
         WHERE instance = ? AND api_version = ? AND kind = ? AND namespace = ? AND name = ?",
    )
    .bind(&id.instance)
    .bind(&id.api_version)
    .bind(&id.kind)
    .bind(&id.namespace)
    .bind(&id.name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Every object of `instance` owned by `owner`, in a stable order.
pub(crate) async fn list(conn: &mut SqliteConnection, instance: &str, owner: &str) -> sqlx::Result<Vec<ResourceId>> {
    let rows = sqlx::query(
        "SELECT api_version, kind, namespace, name FROM resources WHERE instance = ? AND owner = ?
         ORDER BY api_version, kind, namespace, name",
    )
    .bind(instance)
    .bind(owner)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(ResourceId {
                instance: instance.to_owned(),
                api_version: row.try_get("api_version")?,
                kind: row.try_get("kind")?,
                namespace: row.try_get("namespace")?,
                name: row.try_get("name")?,
            })
        })
        .collect()
}

fn outcome_label(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Created => "created",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "unchanged",
        Outcome::Deleted => "deleted",
        Outcome::NotFound => "notFound",
        Outcome::Replayed => "replayed",
    }
}
