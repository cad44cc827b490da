//! The sim's own SQLite file: the simulated fleet and the traffic weights of each app.
//!
//! Kept apart from the daemon's database on purpose: an intent in the ledger and its effect here
//! must never share a transaction, or crash recovery would never be exercised for real.

use std::path::Path;
use std::time::Duration;

use keelson_provider_api::{ResourceId, Weight};
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqliteConnection};

/// Cluster-scoped objects are stored under this namespace, which no namespaced id can have (ids
/// with an empty namespace are refused).
const NO_NAMESPACE: &str = "";

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
    "CREATE TABLE IF NOT EXISTS routes (
        instance TEXT NOT NULL,
        app      TEXT NOT NULL,
        weights  TEXT NOT NULL,
        PRIMARY KEY (instance, app)
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

fn namespace(id: &ResourceId) -> &str {
    id.namespace.as_deref().unwrap_or(NO_NAMESPACE)
}

/// The object named by `id`, if it exists.
pub(crate) async fn get(conn: &mut SqliteConnection, id: &ResourceId) -> sqlx::Result<Option<StoredResource>> {
    let row = sqlx::query(
        "SELECT owner, digest, spec, rollout_from FROM resources
         WHERE instance = ? AND api_version = ? AND kind = ? AND namespace = ? AND name = ?",
    )
    .bind(id.instance.as_str())
    .bind(&id.api_version)
    .bind(&id.kind)
    .bind(namespace(id))
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
    .bind(id.instance.as_str())
    .bind(&id.api_version)
    .bind(&id.kind)
    .bind(namespace(id))
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
    .bind(id.instance.as_str())
    .bind(&id.api_version)
    .bind(&id.kind)
    .bind(namespace(id))
    .bind(&id.name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The live weights of `app`; empty when it has no route yet.
pub(crate) async fn weights(conn: &mut SqliteConnection, instance: &str, app: &str) -> sqlx::Result<Vec<Weight>> {
    let text: Option<String> = sqlx::query_scalar("SELECT weights FROM routes WHERE instance = ? AND app = ?")
        .bind(instance)
        .bind(app)
        .fetch_optional(conn)
        .await?;
    match text {
        Some(text) => serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(e.into())),
        None => Ok(Vec::new()),
    }
}

/// Replaces the weights of `app`.
pub(crate) async fn put_weights(
    conn: &mut SqliteConnection,
    instance: &str,
    app: &str,
    weights: &[Weight],
) -> sqlx::Result<()> {
    let text = serde_json::to_string(weights).map_err(|e| sqlx::Error::Encode(e.into()))?;
    sqlx::query(
        "INSERT INTO routes (instance, app, weights) VALUES (?, ?, ?)
         ON CONFLICT (instance, app) DO UPDATE SET weights = excluded.weights",
    )
    .bind(instance)
    .bind(app)
    .bind(text)
    .execute(conn)
    .await?;
    Ok(())
}
