//! Tests of the audit ledger. The engine suite runs on SQLite (a temp dir) and on PostgreSQL (a
//! fresh database per test, from `KEELSON_TEST_POSTGRES_URL`; skipped when it is not set).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};
use time::OffsetDateTime;

use super::chain::{ChainHead, Head, chain_onto, prepare};
use super::*;
use keelson_manifest::canonical::is_canonical as is_canonical_json;

/// Every test body is bounded so a deadlock fails instead of hanging CI.
const BOUND: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// Builders

/// A plain transition of `app`.
fn transition(app: &str, from: &str, to: &str) -> NewEntry {
    NewEntry {
        app: app.to_owned(),
        desired_commit: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        desired_digest: "sha256:2f1c".to_owned(),
        rollout: None,
        from_state: from.to_owned(),
        to_state: to.to_owned(),
        action: to.to_lowercase(),
        actor: "daemon".to_owned(),
        detail: json!({}),
    }
}

/// An intent with an idempotency key.
fn intent(app: &str, key: &str) -> NewEntry {
    NewEntry {
        action: INTENT_ACTION.to_owned(),
        detail: json!({"key": key, "op": "apply"}),
        ..transition(app, "Progressing", "Progressing")
    }
}

/// The outcome of the intent at `seq`.
fn outcome(app: &str, seq: i64) -> NewEntry {
    NewEntry {
        action: "applied".to_owned(),
        detail: json!({"intentSeq": seq}),
        ..transition(app, "Progressing", "Progressing")
    }
}

/// `n` transitions spread over two apps.
fn transitions(n: usize) -> Vec<NewEntry> {
    (0..n).map(|i| transition(if i % 2 == 0 { "web" } else { "api" }, "Pending", "Planned")).collect()
}

/// The anchors a status branch would carry for these entries.
fn anchors_for(entries: &[LedgerEntry]) -> Vec<Anchor> {
    entries
        .iter()
        .map(|e| Anchor { seq: e.seq, hash: e.hash.clone(), commit: format!("c0ffee{:034}", e.seq) })
        .collect()
}

fn bad_seq(report: &VerifyReport) -> Option<i64> {
    report.first_bad.as_ref().map(|b| b.seq)
}

// ---------------------------------------------------------------------------------------------
// Engines

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// A database for one test, with a back door for playing the attacker.
#[derive(Clone)]
struct TestDb {
    engine: Engine,
    url: String,
    /// Keeps the SQLite temp dir alive for the test.
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestDb {
    async fn open(&self) -> Ledger {
        Ledger::open(&self.url).await.expect("opening the test ledger")
    }

    /// Runs SQL on a separate connection, as someone with write access to the database would.
    async fn try_exec(&self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = AssertSqlSafe(sql.to_owned());
        match self.engine {
            Engine::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.url)).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
                conn.close().await
            }
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                sqlx::raw_sql(sql).execute(&mut conn).await?;
                conn.close().await
            }
        }
    }

    async fn exec(&self, sql: &str) {
        self.try_exec(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// What an attacker does first.
    async fn drop_triggers(&self) {
        match self.engine {
            Engine::Sqlite => self.exec("DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete;").await,
            Engine::Postgres => {
                self.exec("DROP TRIGGER ledger_no_update_delete ON ledger; DROP TRIGGER ledger_no_truncate ON ledger;")
                    .await
            }
        }
    }

    /// Inserts a row verbatim, as an attacker forging an entry would.
    async fn insert_raw(&self, e: &LedgerEntry) {
        let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let rollout = e.rollout.map_or("NULL".to_owned(), |r| r.to_string());
        self.exec(&format!(
            "INSERT INTO ledger ({}) VALUES ({}, {}, {}, {}, {}, {rollout}, {}, {}, {}, {}, {}, {}, {})",
            ledger_columns!(),
            e.seq,
            q(&e.at),
            q(&e.app),
            q(&e.desired_commit),
            q(&e.desired_digest),
            q(&e.from_state),
            q(&e.to_state),
            q(&e.action),
            q(&e.actor),
            q(&e.detail),
            q(&e.prev_hash),
            q(&e.hash),
        ))
        .await;
    }

    async fn schema_versions(&self) -> Vec<i64> {
        match self.engine {
            Engine::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", self.url)).await.unwrap();
                sqlx::query_scalar("SELECT version FROM keelson_schema ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
            Engine::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
                sqlx::query_scalar("SELECT version FROM keelson_schema ORDER BY version")
                    .fetch_all(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// A ledger whose schema stops at `version`, as an older Keelson left it.
    async fn open_old(&self, version: i64) -> Ledger {
        let store = match self.engine {
            Engine::Sqlite => {
                Store::Sqlite(sqlite::SqliteStore::open_at_version(self.url.as_ref(), version).await.unwrap())
            }
            Engine::Postgres => Store::Postgres(postgres::PgStore::open_at_version(&self.url, version).await.unwrap()),
        };
        Ledger { store, guard: Default::default() }
    }
}

async fn run_sqlite<F, Fut>(body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ledger.db").display().to_string();
    let db = TestDb { engine: Engine::Sqlite, url, _dir: Some(Arc::new(dir)) };
    tokio::time::timeout(BOUND, body(db)).await.expect("the test finished within its bound");
}

async fn run_postgres<F, Fut>(body: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(admin_url) = std::env::var("KEELSON_TEST_POSTGRES_URL") else {
        // CI must never be green with part of the suite skipped.
        assert!(std::env::var_os("CI").is_none(), "KEELSON_TEST_POSTGRES_URL must be set when CI is set");
        println!("SKIP: KEELSON_TEST_POSTGRES_URL not set");
        return;
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000_000;
    let name = format!("keelson_t_{}_{nanos}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.expect("connecting to KEELSON_TEST_POSTGRES_URL");
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
    let db = TestDb { engine: Engine::Postgres, url: with_database(&admin_url, &name), _dir: None };
    // Run the body as its own task so that a failing assertion still lets us drop the database.
    let outcome = tokio::time::timeout(BOUND, tokio::spawn(body(db))).await;
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut admin)
        .await
        .unwrap();
    match outcome.expect("the test finished within its bound") {
        Ok(()) => {}
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Runs each named `async fn(TestDb)` on both engines, as `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::run_sqlite(super::$name).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::run_postgres(super::$name).await
            }
        }
    )*};
}

on_both_engines!(
    appends_make_a_contiguous_chain,
    pages_read_exactly_what_rows_read,
    detail_round_trips_exactly,
    invalid_entries_write_nothing,
    triggers_reject_update_and_delete,
    tamper_edited_row,
    tamper_edited_row_with_recomputed_hash,
    tamper_deleted_row,
    tamper_inserted_row,
    tamper_reordered_rows,
    tamper_truncated_tail,
    tamper_rewritten_chain_and_status_branch,
    concurrent_appenders_make_one_chain,
    concurrent_first_opens_migrate_once,
    open_intents_are_intents_without_outcome,
    open_intents_probe_indexes,
    queries_filter_and_page,
    export_round_trips_through_verify_export,
    python_verifier_agrees,
    older_schema_is_upgraded_at_open,
    newer_schema_is_refused,
);

// ---------------------------------------------------------------------------------------------
// The suite

async fn appends_make_a_contiguous_chain(db: TestDb) {
    let ledger = db.open().await;
    assert_eq!(ledger.head().await.unwrap(), None);
    assert!(verify_entries([], &[]).ok);

    let first = ledger
        .append(NewEntry { rollout: Some(RolloutRef::StartsHere), ..transition("web", "Pending", "Planned") })
        .await
        .unwrap();
    assert_eq!((first.seq, first.rollout, first.prev_hash.as_str()), (1, Some(1), GENESIS_HASH));
    let batch = ledger
        .append_batch(vec![
            NewEntry { rollout: Some(RolloutRef::Seq(1)), ..transition("web", "Planned", "Progressing") },
            NewEntry { rollout: Some(RolloutRef::StartsHere), ..transition("api", "Pending", "Planned") },
            transition("web", "Progressing", "Healthy"),
        ])
        .await
        .unwrap();
    assert_eq!(batch.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(batch[0].rollout, Some(1));
    assert_eq!(batch[1].rollout, Some(3), "StartsHere takes the entry's own seq");
    assert_eq!(batch[0].prev_hash, first.hash);
    assert_eq!(batch[2].prev_hash, batch[1].hash);
    assert!(ledger.append_batch(vec![]).await.unwrap().is_empty());

    let stored = ledger.entries(&AuditQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[0], first);
    assert_eq!(&stored[1..], &batch[..]);
    for e in &stored {
        assert_eq!(e.hash, e.compute_hash());
        // RFC 3339 UTC, exactly 6 fractional digits, Z.
        assert_eq!(e.at.len(), 27, "{}", e.at);
        assert_eq!((&e.at[10..11], &e.at[19..20], &e.at[26..]), ("T", ".", "Z"));
        assert_eq!(normalize_at(&e.at).unwrap(), e.at);
    }
    assert!(stored.windows(2).all(|w| w[0].at <= w[1].at), "at never runs backwards");
    assert_eq!(ledger.head().await.unwrap(), Some((4, batch[2].hash.clone())));
    assert_eq!(ledger.count().await.unwrap(), 4);

    let report = ledger.verify(&anchors_for(&stored)).await.unwrap();
    assert!(report.ok, "{report}");
    assert_eq!((report.entries, report.anchors_checked), (4, 4));
    assert_eq!(report.head, Some(ChainHead { seq: 4, hash: batch[2].hash.clone() }));

    // A second pool on the same database continues the same chain.
    let again = db.open().await;
    assert_eq!(again.append(transition("web", "Healthy", "Drifted")).await.unwrap().prev_hash, batch[2].hash);
}

async fn detail_round_trips_exactly(db: TestDb) {
    let ledger = db.open().await;
    let detail = json!({
        "z": 1, "a": "é \u{2028} \"quoted\" \\ \n\t\u{1}", "\u{1F600}": true, "\u{FF61}": [1, -2],
        "big": i64::MAX, "huge": u64::MAX, "nested": {"b": null, "a": [{"y": 2, "x": 1}]},
    });
    let entry =
        ledger.append(NewEntry { detail: detail.clone(), ..transition("wéb ✓", "Pending", "Planned") }).await.unwrap();
    assert_eq!(entry.detail_json(), detail);
    assert_eq!(entry.detail, keelson_manifest::canonical::to_canonical_string(&detail).unwrap());
    let stored = ledger.entries(&AuditQuery::default()).await.unwrap();
    assert_eq!(stored, std::slice::from_ref(&entry), "the database returns exactly what was hashed");
    assert!(ledger.verify(&anchors_for(&stored)).await.unwrap().ok);
}

async fn invalid_entries_write_nothing(db: TestDb) {
    let ledger = db.open().await;
    let refused = [
        NewEntry { detail: json!({"ratio": 0.5}), ..transition("web", "a", "b") },
        NewEntry { action: INTENT_ACTION.into(), detail: json!({"op": "apply"}), ..transition("web", "a", "b") },
        NewEntry { rollout: Some(RolloutRef::Seq(7)), ..transition("web", "a", "b") },
        NewEntry { rollout: Some(RolloutRef::Seq(0)), ..transition("web", "a", "b") },
        outcome("web", 9),
        NewEntry { detail: json!({"intentSeq": "1"}), ..transition("web", "a", "b") },
        NewEntry { actor: "nul\0byte".into(), ..transition("web", "a", "b") },
    ];
    for bad in refused {
        // A bad entry in a batch refuses the whole batch.
        let err = ledger.append_batch(vec![transition("web", "a", "b"), bad.clone()]).await.unwrap_err();
        assert_eq!(err.kind(), "invalid_entry", "{bad:?}: {err}");
        assert!(err.to_string().contains("web"), "{err}");
    }
    assert_eq!(ledger.count().await.unwrap(), 0);
    assert_eq!(
        ledger.entries(&AuditQuery { limit: Some(-1), ..AuditQuery::default() }).await.unwrap_err().kind(),
        "invalid_query"
    );
    let err = ledger
        .entries(&AuditQuery { since_time: Some("yesterday".into()), ..AuditQuery::default() })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("RFC 3339"), "{err}");
}

async fn triggers_reject_update_and_delete(db: TestDb) {
    let ledger = db.open().await;
    ledger.append_batch(transitions(3)).await.unwrap();
    let mut attempts = vec!["UPDATE ledger SET to_state = 'Healthy' WHERE seq = 2", "DELETE FROM ledger WHERE seq = 3"];
    if db.engine == Engine::Postgres {
        attempts.push("TRUNCATE ledger");
    }
    for sql in attempts {
        let err = db.try_exec(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(ledger.count().await.unwrap(), 3);
    assert!(ledger.verify(&[]).await.unwrap().ok);
}

/// Five entries, and the attacker has dropped the triggers.
async fn tamper_setup(db: &TestDb) -> (Ledger, Vec<LedgerEntry>) {
    let ledger = db.open().await;
    let entries = ledger.append_batch(transitions(5)).await.unwrap();
    assert!(ledger.verify(&anchors_for(&entries)).await.unwrap().ok);
    db.drop_triggers().await;
    (ledger, entries)
}

async fn tamper_edited_row(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    db.exec("UPDATE ledger SET to_state = 'Healthy' WHERE seq = 3").await;
    let report = ledger.verify(&anchors_for(&entries)).await.unwrap();
    assert_eq!(bad_seq(&report), Some(3), "{report}");
    assert!(report.first_bad.as_ref().unwrap().reason.contains("edited"), "{report}");
    assert_eq!((report.entries, report.head), (2, Some(ChainHead { seq: 2, hash: entries[1].hash.clone() })));
}

async fn tamper_edited_row_with_recomputed_hash(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    let mut forged = entries[2].clone();
    forged.to_state = "Healthy".into();
    forged.hash = forged.compute_hash();
    db.exec(&format!("UPDATE ledger SET to_state = 'Healthy', hash = '{}' WHERE seq = 3", forged.hash)).await;
    let report = ledger.verify(&[]).await.unwrap();
    assert_eq!(bad_seq(&report), Some(4), "the next entry's prev_hash gives it away: {report}");
    assert!(report.first_bad.unwrap().reason.contains("prev_hash"));
}

async fn tamper_deleted_row(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    db.exec("DELETE FROM ledger WHERE seq = 3").await;
    let report = ledger.verify(&anchors_for(&entries)).await.unwrap();
    assert_eq!(bad_seq(&report), Some(4), "the entry after the gap: {report}");
    assert!(report.first_bad.unwrap().reason.contains("entry 3 is missing"));

    db.exec("DELETE FROM ledger WHERE seq IN (1, 2)").await;
    let report = ledger.verify(&[]).await.unwrap();
    assert_eq!(bad_seq(&report), Some(4), "{report}");
    assert_eq!(report.entries, 0);
}

/// Text that a delimiter-based packing would get wrong: commas, digits, lengths, non-ASCII, controls.
fn awkward(i: usize) -> String {
    ["", "1,2", "3,", ",", "12,ab", "é,😀", "a\u{1}b\tc", "\u{7f}\u{2028}", "0"][i % 9].to_owned()
}

async fn pages_read_exactly_what_rows_read(db: TestDb) {
    let ledger = db.open().await;
    let n = 2 * page::PAGE_ENTRIES as usize + 17;
    let batch: Vec<NewEntry> = (0..n)
        .map(|i| NewEntry {
            app: awkward(i),
            from_state: awkward(i + 1),
            to_state: awkward(i + 2),
            actor: awkward(i + 3),
            rollout: (i % 3 == 0).then_some(RolloutRef::StartsHere),
            detail: json!({"note": awkward(i + 4), "n": i}),
            ..transition("web", "a", "b")
        })
        .collect();
    let appended = ledger.append_batch(batch).await.unwrap();
    let report = ledger.verify(&anchors_for(&appended)).await.unwrap();
    assert!(report.ok && report.entries == n as u64, "{report}");
    let (packed, rows) = match &ledger.store {
        Store::Sqlite(s) => (s.packed_page(page::PAGE_ENTRIES + 1).await, s.page_rows(page::PAGE_ENTRIES + 1).await),
        // PostgreSQL verifies from rows; only the page boundaries are exercised there.
        Store::Postgres(_) => return,
    };
    let (packed, rows) = (packed.unwrap(), rows.unwrap());
    let unpacked = page::unpack(packed.text.as_deref().unwrap(), packed.rows).unwrap();
    let rows: Vec<LedgerEntry> = rows.into_iter().map(Result::unwrap).collect();
    assert_eq!(unpacked.len(), page::PAGE_ENTRIES as usize);
    assert_eq!(unpacked, rows.iter().map(LedgerEntry::fields).collect::<Vec<_>>());
    assert_eq!(rows[..], appended[page::PAGE_ENTRIES as usize..2 * page::PAGE_ENTRIES as usize]);
}

async fn tamper_inserted_row(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    // A row tacked on at the end by someone who cannot hash is caught at once.
    db.insert_raw(&LedgerEntry {
        seq: 6,
        hash: "f".repeat(64),
        prev_hash: entries[4].hash.clone(),
        ..entries[4].clone()
    })
    .await;
    assert_eq!(bad_seq(&ledger.verify(&[]).await.unwrap()), Some(6));
    db.exec("DELETE FROM ledger WHERE seq = 6").await;

    // One who can: make room at seq 3 and forge a well-formed entry there, chained onto entry 2.
    db.exec("UPDATE ledger SET seq = seq + 1000 WHERE seq >= 3").await;
    db.exec("UPDATE ledger SET seq = seq - 999 WHERE seq >= 1000").await;
    let mut forged = LedgerEntry { seq: 3, prev_hash: entries[1].hash.clone(), ..entries[2].clone() };
    forged.action = "forged".into();
    forged.hash = forged.compute_hash();
    db.insert_raw(&forged).await;
    assert_eq!(ledger.count().await.unwrap(), 6);
    let report = ledger.verify(&[]).await.unwrap();
    assert_eq!(bad_seq(&report), Some(4), "{report}");
    assert_eq!(report.entries, 3, "the forged row itself is well-formed");
}

async fn tamper_reordered_rows(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    db.exec("UPDATE ledger SET seq = -3 WHERE seq = 3").await;
    db.exec("UPDATE ledger SET seq = 3 WHERE seq = 4").await;
    db.exec("UPDATE ledger SET seq = 4 WHERE seq = -3").await;
    let report = ledger.verify(&anchors_for(&entries)).await.unwrap();
    assert_eq!(bad_seq(&report), Some(3), "{report}");
}

async fn tamper_truncated_tail(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    db.exec("DELETE FROM ledger WHERE seq >= 4").await;
    // The chain alone cannot see a clean cut at the end; that is what the anchors are for.
    assert!(ledger.verify(&[]).await.unwrap().ok);
    let report = ledger.verify(&anchors_for(&entries)).await.unwrap();
    assert_eq!(bad_seq(&report), Some(4), "{report}");
    assert!(report.first_bad.as_ref().unwrap().reason.contains("truncated"), "{report}");
    assert_eq!((report.entries, report.anchors_checked), (3, 3));

    // An anchor whose hash differs from the surviving row is bad too.
    let mut anchors = anchors_for(&entries[..3]);
    anchors[2].hash = "e".repeat(64);
    assert_eq!(bad_seq(&ledger.verify(&anchors).await.unwrap()), Some(3));

    db.exec("DELETE FROM ledger").await;
    let report = ledger.verify(&anchors_for(&entries)).await.unwrap();
    assert_eq!(bad_seq(&report), Some(1), "{report}");
}

async fn tamper_rewritten_chain_and_status_branch(db: TestDb) {
    let (ledger, entries) = tamper_setup(&db).await;
    // A thorough attacker rewrites entry 3 and re-hashes everything after it.
    let mut prev = entries[1].hash.clone();
    for e in &entries[2..] {
        let mut forged = LedgerEntry { prev_hash: prev.clone(), ..e.clone() };
        if forged.seq == 3 {
            forged.to_state = "Healthy".into();
        }
        forged.hash = forged.compute_hash();
        db.exec(&format!(
            "UPDATE ledger SET to_state = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            forged.to_state, forged.prev_hash, forged.hash, forged.seq
        ))
        .await;
        prev = forged.hash;
    }
    assert!(ledger.verify(&[]).await.unwrap().ok, "a consistent rewrite passes the chain alone");
    let report = ledger.verify(&anchors_for(&entries)).await.unwrap();
    assert_eq!(bad_seq(&report), Some(3), "{report}");
    assert!(report.first_bad.as_ref().unwrap().reason.contains("status commit"), "{report}");

    // The other way round: an intact ledger, a status branch rewritten after the fact.
    let honest = db.open().await;
    let fresh = honest.entries(&AuditQuery::default()).await.unwrap();
    let mut anchors = anchors_for(&fresh);
    anchors[3].hash = entries[3].hash.clone();
    let report = honest.verify(&anchors).await.unwrap();
    assert_eq!(bad_seq(&report), Some(4), "{report}");
    assert_eq!(report.anchors_checked, 3);
}

async fn concurrent_appenders_make_one_chain(db: TestDb) {
    // Two pools stand in for two processes (or two daemons on one PostgreSQL).
    let (a, b) = tokio::join!(db.open(), db.open());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4 {
        let ledger = a.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50 {
                seqs.push(ledger.append(transition(&format!("a{t}"), "Pending", &format!("S{i}"))).await.unwrap().seq);
            }
            seqs
        });
    }
    for t in 0..2 {
        let ledger = b.clone();
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for _ in 0..10 {
                let batch = ledger.append_batch(transitions(5)).await.unwrap();
                assert!(batch.windows(2).all(|w| w[1].seq == w[0].seq + 1), "task b{t}: a batch is contiguous");
                seqs.extend(batch.iter().map(|e| e.seq));
            }
            seqs
        });
    }
    let mut all: Vec<i64> = tasks.join_all().await.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=300).collect::<Vec<_>>(), "every append got its own seq, with no gaps");
    let report = b.verify(&[]).await.unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.entries, 300);
    assert_eq!(a.count().await.unwrap(), 300);
}

async fn concurrent_first_opens_migrate_once(db: TestDb) {
    let (a, b, c) = tokio::join!(Ledger::open(&db.url), Ledger::open(&db.url), Ledger::open(&db.url));
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(db.schema_versions().await, [1, 2]);
    a.append(transition("web", "a", "b")).await.unwrap();
    b.append(transition("web", "b", "c")).await.unwrap();
    assert!(c.verify(&[]).await.unwrap().ok);
}

async fn open_intents_are_intents_without_outcome(db: TestDb) {
    let ledger = db.open().await;
    let one = ledger.append(intent("web", "web/1/1")).await.unwrap();
    let two = ledger.append(intent("api", "api/2/1")).await.unwrap();
    ledger.append(transition("web", "Progressing", "Progressing")).await.unwrap();
    assert_eq!(ledger.open_intents().await.unwrap(), [one.clone(), two.clone()]);
    assert_eq!(one.intent_key().as_deref(), Some("web/1/1"));

    let done = ledger.append(outcome("web", one.seq)).await.unwrap();
    assert_eq!(done.outcome_of(), Some(one.seq));
    let three = ledger.append(intent("web", "web/1/2")).await.unwrap();
    assert_eq!(ledger.open_intents().await.unwrap(), [two.clone(), three.clone()]);
    ledger.append_batch(vec![outcome("api", two.seq), outcome("web", three.seq)]).await.unwrap();
    assert!(ledger.open_intents().await.unwrap().is_empty());
}

async fn open_intents_probe_indexes(db: TestDb) {
    // A plan, not a timing: a million-row ledger must not be scanned once per open intent.
    let ledger = db.open().await;
    let plan: Vec<String> = match &ledger.store {
        Store::Sqlite(s) => {
            let sql = AssertSqlSafe(format!("EXPLAIN QUERY PLAN {}", sqlite::OPEN_INTENTS));
            let rows = sqlx::query(sql).fetch_all(s.pool()).await.unwrap();
            rows.iter().map(|r| sqlx::Row::get::<String, _>(r, "detail")).collect()
        }
        Store::Postgres(s) => {
            let mut tx = s.pool().begin().await.unwrap();
            // An empty table is cheapest to scan; ask what the plan would be once it is not.
            sqlx::query("SET LOCAL enable_seqscan = off").execute(&mut *tx).await.unwrap();
            let sql = AssertSqlSafe(format!("EXPLAIN {}", postgres::OPEN_INTENTS));
            sqlx::query_scalar(sql).fetch_all(&mut *tx).await.unwrap()
        }
    };
    let plan = plan.join("\n");
    assert!(plan.contains("ledger_intents"), "{plan}");
    assert!(plan.contains("ledger_outcome_of"), "{plan}");
}

async fn queries_filter_and_page(db: TestDb) {
    let ledger = db.open().await;
    let entries = ledger.append_batch(transitions(10)).await.unwrap();
    let all = AuditQuery::default();
    assert_eq!(ledger.entries(&all).await.unwrap(), entries);

    let web = ledger.entries(&AuditQuery { app: Some("web".into()), ..all.clone() }).await.unwrap();
    assert_eq!(web.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3, 5, 7, 9]);
    let page = ledger
        .entries(&AuditQuery { since_seq: Some(3), app: Some("api".into()), limit: Some(2), ..all.clone() })
        .await
        .unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 6]);
    assert_eq!(ledger.entries_after(8, 100).await.unwrap(), &entries[8..]);
    assert_eq!(ledger.entries_after(2, 3).await.unwrap(), &entries[2..5]);
    assert!(ledger.entries_after(10, 100).await.unwrap().is_empty());
    assert!(ledger.entries(&AuditQuery { limit: Some(0), ..all.clone() }).await.unwrap().is_empty());

    // since_time is inclusive and accepts any RFC 3339 offset.
    let at = OffsetDateTime::parse(&entries[0].at, &time::format_description::well_known::Rfc3339).unwrap();
    let in_plus_two =
        at.to_offset(time::macros::offset!(+2)).format(&time::format_description::well_known::Rfc3339).unwrap();
    let since = ledger.entries(&AuditQuery { since_time: Some(in_plus_two), ..all.clone() }).await.unwrap();
    assert_eq!(since, entries);
    let later = ledger.entries(&AuditQuery { since_time: Some("2999-01-01T00:00:00Z".into()), ..all }).await.unwrap();
    assert!(later.is_empty());
}

async fn export_round_trips_through_verify_export(db: TestDb) {
    let ledger = db.open().await;
    ledger.append(intent("web", "web/1/1")).await.unwrap();
    ledger.append_batch(transitions(6)).await.unwrap();
    let entries = ledger.entries(&AuditQuery::default()).await.unwrap();

    let mut out = Vec::new();
    assert_eq!(ledger.export(&mut out).await.unwrap(), 7);
    let text = String::from_utf8(out.clone()).unwrap();
    let parsed: Vec<LedgerEntry> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(parsed, entries);
    let report = verify_export(out.as_slice(), &anchors_for(&entries)).unwrap();
    assert!(report.ok && report.entries == 7 && report.anchors_checked == 7, "{report}");

    let tampered = text.replacen("\"to_state\":\"Planned\"", "\"to_state\":\"Healthy\"", 1);
    let report = verify_export(tampered.as_bytes(), &[]).unwrap();
    assert_eq!(bad_seq(&report), Some(2), "{report}");
    let mangled = text.replacen("{\"seq\":3,", "{\"seq\":3,,", 1);
    let report = verify_export(mangled.as_bytes(), &[]).unwrap();
    assert_eq!(bad_seq(&report), Some(3), "{report}");
    assert!(report.first_bad.unwrap().reason.contains("line 3"));
    let truncated: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
    let report = verify_export(truncated.as_bytes(), &anchors_for(&entries)).unwrap();
    assert_eq!(bad_seq(&report), Some(6), "{report}");
}

async fn python_verifier_agrees(db: TestDb) {
    let ledger = db.open().await;
    ledger
        .append(NewEntry {
            detail: json!({"key": "k", "z": "é😀\u{FF61}", "\u{FF61}": 1, "\u{1F600}": [true, null]}),
            ..intent("wéb", "k")
        })
        .await
        .unwrap();
    ledger.append_batch(transitions(4)).await.unwrap();
    let mut out = Vec::new();
    ledger.export(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let Some(ok) = run_python(&dir.path().join("good.jsonl"), &text, None).await else { return };
    assert_eq!(ok, (0, "OK 5 entries".to_owned()));

    let tampered = text.replacen("\"to_state\":\"Planned\"", "\"to_state\":\"Healthy\"", 1);
    let (code, stdout) = run_python(&dir.path().join("bad.jsonl"), &tampered, None).await.unwrap();
    assert_eq!(code, 1);
    assert!(stdout.starts_with("BAD seq 2: "), "{stdout}");

    let entries: Vec<LedgerEntry> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let anchors: String = entries.iter().map(|e| format!("{} {}\n", e.seq, e.hash)).collect();
    let truncated: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let (code, stdout) = run_python(&dir.path().join("cut.jsonl"), &truncated, Some(&anchors)).await.unwrap();
    assert_eq!((code, stdout.get(..10)), (1, Some("BAD seq 4:")), "{stdout}");
}

/// Runs `python3 docs/verify_audit.py` on `export`; None (after a SKIP line) without python3.
async fn run_python(path: &std::path::Path, export: &str, anchors: Option<&str>) -> Option<(i32, String)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/verify_audit.py");
    tokio::fs::write(path, export).await.unwrap();
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&script).arg(path).kill_on_drop(true);
    if let Some(anchors) = anchors {
        let anchors_path = path.with_extension("anchors");
        tokio::fs::write(&anchors_path, anchors).await.unwrap();
        cmd.arg("--anchors").arg(anchors_path);
    }
    let output = match tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("python3 finished") {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(std::env::var_os("CI").is_none(), "python3 must be on PATH when CI is set");
            println!("SKIP: python3 not on PATH");
            return None;
        }
        Err(e) => panic!("running python3: {e}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.is_empty(), "verify_audit.py wrote to stderr: {stderr}");
    Some((output.status.code().unwrap_or(-1), String::from_utf8(output.stdout).unwrap().trim_end().to_owned()))
}

async fn older_schema_is_upgraded_at_open(db: TestDb) {
    let old = db.open_old(1).await;
    let written = old.append_batch(vec![intent("web", "k1"), transition("web", "a", "b")]).await.unwrap();
    assert_eq!(db.schema_versions().await, [1]);
    drop(old);

    let ledger = db.open().await;
    assert_eq!(db.schema_versions().await, [1, 2]);
    assert_eq!(ledger.entries(&AuditQuery::default()).await.unwrap(), written);
    assert_eq!(ledger.open_intents().await.unwrap(), &written[..1], "the index added by migration 2 covers old rows");
    assert!(ledger.verify(&[]).await.unwrap().ok);
}

async fn newer_schema_is_refused(db: TestDb) {
    drop(db.open().await);
    db.exec(
        "INSERT INTO keelson_schema (version, name, applied_at) VALUES (99, 'future', '2030-01-01T00:00:00.000000Z')",
    )
    .await;
    let err = Ledger::open(&db.url).await.unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { found: 99, known: 2 }), "{err}");
    assert!(err.to_string().contains("upgrade keelson"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// The pure chain and the format

/// The pinned entry of the known-answer test; docs/audit.md walks through the same one.
fn known_entry() -> LedgerEntry {
    let detail = json!({"b": 1, "a": "é\n", "\u{1F600}": true, "\u{FF61}": [1, -2]});
    LedgerEntry {
        seq: 1,
        at: "2026-11-02T10:00:00.000000Z".into(),
        app: "web".into(),
        desired_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        desired_digest: "sha256:2f1c".into(),
        rollout: Some(1),
        from_state: "Pending".into(),
        to_state: "Planned".into(),
        action: "planned".into(),
        actor: "daemon".into(),
        detail: keelson_manifest::canonical::to_canonical_string(&detail).unwrap(),
        prev_hash: GENESIS_HASH.into(),
        hash: String::new(),
    }
}

#[test]
fn known_answer_pins_the_format() {
    let entry = known_entry();
    assert_eq!(entry.detail, "{\"a\":\"é\\n\",\"b\":1,\"😀\":true,\"｡\":[1,-2]}");
    assert_eq!(
        entry.canonical_form(),
        concat!(
            r#"{"action":"planned","actor":"daemon","app":"web","at":"2026-11-02T10:00:00.000000Z","#,
            r#""desired_commit":"0123456789abcdef0123456789abcdef01234567","desired_digest":"sha256:2f1c","#,
            r#""detail":"{\"a\":\"é\\n\",\"b\":1,\"😀\":true,\"｡\":[1,-2]}","from_state":"Pending","#,
            r#""prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","rollout":1,"#,
            r#""seq":1,"to_state":"Planned"}"#
        )
    );
    // Computed independently with docs/verify_audit.py; if this changes, every ledger breaks.
    assert_eq!(entry.compute_hash(), "02b4e61bb43edcd6b14f4a979b54aa2fa6d9086cdbf5e393fc8d8d2a27848aef");
}

#[test]
fn chaining_is_pure_and_time_never_runs_backwards() {
    let at = |s: &str| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    let batch = vec![prepare(transition("web", "a", "b")).unwrap(), prepare(transition("web", "b", "c")).unwrap()];
    let head = Head { seq: 41, hash: "a".repeat(64), at: "2026-11-02T10:00:00.500000Z".into() };
    let entries = chain_onto(Some(head.clone()), batch.clone(), at("2026-11-02T09:59:59.25Z")).unwrap();
    assert_eq!(
        entries.iter().map(|e| (e.seq, e.at.as_str())).collect::<Vec<_>>(),
        [(42, head.at.as_str()), (43, head.at.as_str())]
    );
    assert_eq!(entries[0].prev_hash, head.hash);
    let entries = chain_onto(None, batch, at("2026-11-02T11:00:00.1234567+01:00")).unwrap();
    assert_eq!(entries[0].at, "2026-11-02T10:00:00.123456Z");
    assert_eq!(entries[1].at, entries[0].at);
    assert!(verify_entries(entries, &[]).ok);
}

#[test]
fn verify_report_reads_well_and_serializes_camel_case() {
    let mut entries =
        chain_onto(None, transitions(3).into_iter().map(|e| prepare(e).unwrap()).collect(), OffsetDateTime::now_utc())
            .unwrap();
    let ok = verify_entries(entries.clone(), &anchors_for(&entries));
    assert!(ok.to_string().starts_with("OK 3 entries, head seq 3 "), "{ok}");
    let json = serde_json::to_value(&ok).unwrap();
    assert_eq!(json["anchorsChecked"], 3);
    assert_eq!(json["firstBad"], Value::Null);
    assert_eq!(json["head"]["seq"], 3, "the head is an object, not a positional pair: {json}");

    entries[1].actor = "mallory".into();
    let bad = verify_entries(entries, &[]);
    assert!(bad.to_string().starts_with("BAD seq 2: stored hash "), "{bad}");
    assert_eq!(serde_json::to_value(&bad).unwrap()["firstBad"]["seq"], 2);
    assert_eq!(format!("{}", verify_entries([], &[])), "OK 0 entries (the ledger is empty), 0 anchors checked");
}

#[test]
fn odd_anchors_are_bad() {
    let entries =
        chain_onto(None, transitions(2).into_iter().map(|e| prepare(e).unwrap()).collect(), OffsetDateTime::now_utc())
            .unwrap();
    let zero = Anchor { seq: 0, hash: entries[0].hash.clone(), commit: "abc".into() };
    assert_eq!(bad_seq(&verify_entries(entries.clone(), &[zero])), Some(0));
    let beyond = Anchor { seq: 9, hash: "0".repeat(64), commit: "abc".into() };
    let report = verify_entries(entries.clone(), std::slice::from_ref(&beyond));
    assert_eq!((bad_seq(&report), report.entries), (Some(3), 2));
    assert_eq!(bad_seq(&verify_entries([], &[beyond])), Some(1));
    assert_eq!(
        Anchor::from_trailer(&format!("2 {}", entries[1].hash), "c1"),
        Some(Anchor { seq: 2, hash: entries[1].hash.clone(), commit: "c1".into() })
    );
    assert_eq!(entries[1].audit_trailer(), format!("Keelson-Audit: 2 {}", entries[1].hash));
    assert_eq!(Anchor::from_trailer("two abc", "c1"), None);
    assert_eq!(Anchor::from_trailer("2 abc extra", "c1"), None);
}

#[test]
fn non_canonical_detail_is_bad_even_when_hashed() {
    let mut entries =
        chain_onto(None, transitions(1).into_iter().map(|e| prepare(e).unwrap()).collect(), OffsetDateTime::now_utc())
            .unwrap();
    entries[0].detail = "{ }".into();
    entries[0].hash = entries[0].compute_hash();
    let report = verify_entries(entries, &[]);
    assert!(report.first_bad.unwrap().reason.contains("canonical"));
}

/// A small deterministic generator (xorshift64*), so these tests need no extra crate and never flake.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A string of characters that stress escaping and UTF-16 ordering.
    fn text(&mut self) -> String {
        const CHARS: &str =
            "abZ0- \"\\/\n\r\t\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}é\u{2028}\u{e000}\u{ff61}\u{fffd}😀\u{10ffff}";
        let chars: Vec<char> = CHARS.chars().collect();
        (0..self.below(8)).map(|_| chars[self.below(chars.len())]).collect()
    }

    fn integer(&mut self) -> Value {
        match self.below(6) {
            0 => json!(0),
            1 => json!(-(self.below(1000) as i64)),
            2 => json!(i64::MIN),
            3 => json!(u64::MAX),
            4 => json!(self.next() >> self.below(64)),
            _ => json!(self.below(100)),
        }
    }

    fn value(&mut self, depth: usize) -> Value {
        match self.below(if depth > 3 { 4 } else { 7 }) {
            0 => Value::Null,
            1 => Value::Bool(self.below(2) == 0),
            2 => self.integer(),
            3 => Value::String(self.text()),
            4 | 5 => Value::Object((0..self.below(5)).map(|_| (self.text(), self.value(depth + 1))).collect()),
            _ => Value::Array((0..self.below(4)).map(|_| self.value(depth + 1)).collect()),
        }
    }
}

/// The generic (Value tree) answer to "is this text canonical JSON?".
fn generically_canonical(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| keelson_manifest::canonical::to_canonical_string(&v).ok())
        .is_some_and(|c| c == text)
}

#[test]
fn canonical_form_matches_the_generic_canonicalization() {
    let generic = |e: &LedgerEntry| keelson_manifest::canonical::to_canonical_string(&e.hashed_object()).unwrap();
    let mut rng = Rng(0x5eed);
    let mut scratch = String::new();
    for i in 0..2000 {
        let mut entry = known_entry();
        entry.seq = [1, 42, i64::MAX, i64::MIN, -7][i % 5];
        entry.rollout = [None, Some(0), Some(-3), Some(i64::MAX)][i % 4];
        for field in [
            &mut entry.at,
            &mut entry.app,
            &mut entry.desired_commit,
            &mut entry.desired_digest,
            &mut entry.from_state,
            &mut entry.to_state,
            &mut entry.action,
            &mut entry.actor,
            &mut entry.prev_hash,
        ] {
            *field = rng.text();
        }
        entry.detail = keelson_manifest::canonical::to_canonical_string(&rng.value(0)).unwrap();
        let want = generic(&entry);
        assert_eq!(entry.canonical_form(), want, "{entry:?}");
        entry.write_canonical_form(&mut scratch);
        assert_eq!(scratch, want);
    }
    assert_eq!(known_entry().canonical_form(), generic(&known_entry()));
}

#[test]
fn fast_canonical_check_never_accepts_what_the_generic_one_refuses() {
    let mut rng = Rng(0xdecaf);
    let mut accepted = 0;
    for _ in 0..3000 {
        let canonical = keelson_manifest::canonical::to_canonical_string(&rng.value(0)).unwrap();
        assert_eq!(is_canonical_json(&canonical), generically_canonical(&canonical) && is_simple(&canonical));
        // Mutations at character boundaries: most make the text non-canonical or not JSON at all.
        let mut chars: Vec<char> = canonical.chars().collect();
        for _ in 0..=rng.below(3) {
            const INSERTS: &[char] = &[' ', ',', ':', '"', '\\', '0', '1', '-', '.', 'e', '{', '}', '[', ']', 'u', '/'];
            let at = rng.below(chars.len() + 1);
            match rng.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 if at + 1 < chars.len() => chars.swap(at, at + 1),
                _ => chars.insert(at, INSERTS[rng.below(INSERTS.len())]),
            }
        }
        let mutated: String = chars.into_iter().collect();
        if is_canonical_json(&mutated) {
            assert!(generically_canonical(&mutated), "accepted non-canonical {mutated:?}");
            accepted += 1;
        }
    }
    assert!(accepted > 0, "some mutations stay canonical (e.g. a changed digit)");
    for bad in [
        "",
        " {}",
        "{} ",
        "{ }",
        "[1 ]",
        "-0",
        "01",
        "1.0",
        "1e5",
        "1E5",
        "+1",
        "tru",
        "nul",
        "[1,]",
        "{\"a\":1,}",
        "{\"b\":1,\"a\":2}",
        "{\"a\":1,\"a\":1}",
        "\"\\/\"",
        "\"\\u0041\"",
        "\"\\u001F\"",
        "\"\\u000a\"",
        "\"\\u0008\"",
        "\"\u{1}\"",
        "\"\\x\"",
        "\"abc",
        "{\"a\"}",
        "{\"a\":}",
        "{1:2}",
        "[",
        "]",
        "123456789012345678901234",
    ] {
        assert!(!is_canonical_json(bad), "{bad:?}");
    }
    for good in ["{}", "[]", "null", "0", "-1", "\"\\u001f\\u0000\\\"\\\\\\n\"", "{\"Z\":[1,-2],\"a\":{\"\":null}}"] {
        assert!(is_canonical_json(good) && generically_canonical(good), "{good:?}");
    }
    // UTF-16 order, not code point order: U+1F600 (first unit 0xD83D) sorts before U+FF61.
    assert!(is_canonical_json("{\"😀\":1,\"｡\":2}"));
    assert!(!is_canonical_json("{\"｡\":2,\"😀\":1}"));
}

/// Canonical text the fast check is allowed to pass to the generic path: an escaped key, or an
/// integer of 19 or more digits.
fn is_simple(canonical: &str) -> bool {
    let value: Value = serde_json::from_str(canonical).unwrap();
    fn simple(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.to_string().trim_start_matches('-').len() <= 18,
            Value::Array(items) => items.iter().all(simple),
            Value::Object(map) => {
                map.iter().all(|(k, v)| !k.chars().any(|c| c < ' ' || c == '"' || c == '\\') && simple(v))
            }
            _ => true,
        }
    }
    simple(&value)
}

#[test]
fn verifier_reports_the_same_reasons_as_before() {
    let mut entries =
        chain_onto(None, transitions(2).into_iter().map(|e| prepare(e).unwrap()).collect(), OffsetDateTime::now_utc())
            .unwrap();
    let recomputed = entries[1].hash.clone();
    entries[1].hash = "f".repeat(64);
    let reason = verify_entries(entries.clone(), &[]).first_bad.unwrap().reason;
    assert_eq!(
        reason,
        format!(
            "stored hash ffffffffffff does not match the recomputed hash {} (this row was edited)",
            &recomputed[..12]
        )
    );
    // A detail the fast check hands on (an escaped key) is still judged by the generic path.
    entries[1].detail = "{\"a\\nb\":1}".into();
    entries[1].hash = entries[1].compute_hash();
    assert!(verify_entries(entries.clone(), &[]).ok);
    entries[1].detail = "{\"b\\n\":1,\"a\\n\":1}".into();
    entries[1].hash = entries[1].compute_hash();
    let reason = verify_entries(entries, &[]).first_bad.unwrap().reason;
    assert_eq!(reason, "detail is not in canonical (RFC 8785) form");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_does_not_unpack_is_read_row_by_row() {
    run_sqlite(|db| async move {
        let ledger = db.open().await;
        ledger.append_batch(transitions(1500)).await.unwrap();
        db.drop_triggers().await;
        // Text that is not UTF-8 cannot be packed into a string; the row path names the row.
        db.exec("UPDATE ledger SET actor = CAST(x'ff' AS TEXT) WHERE seq = 1200").await;
        let report = ledger.verify(&[]).await.unwrap();
        assert_eq!((bad_seq(&report), report.entries), (Some(1200), 1199), "{report}");
        assert!(report.first_bad.unwrap().reason.contains("does not read as a ledger entry"));
    })
    .await
}

#[test]
fn unpack_refuses_what_is_not_a_whole_page() {
    let entry = known_entry();
    let packed = |e: &LedgerEntry| {
        let text = |t: &str| format!("{},{t}", t.len());
        let mut out = format!("{},{},", e.seq, e.rollout.map(|r| r.to_string()).unwrap_or_default());
        for t in [&e.at, &e.app, &e.desired_commit, &e.desired_digest, &e.from_state, &e.to_state, &e.action, &e.actor]
        {
            out.push_str(&text(t));
        }
        for t in [&e.detail, &e.prev_hash, &e.hash] {
            out.push_str(&text(t));
        }
        out
    };
    let one = packed(&entry);
    assert_eq!(page::unpack(&one, 1), Some(vec![entry.fields()]));
    assert_eq!(page::unpack(&format!("{one}{one}"), 2).map(|v| v.len()), Some(2));
    assert_eq!(page::unpack(&one, 2), None, "fewer rows than counted");
    assert_eq!(page::unpack(&one[..one.len() - 1], 1), None, "truncated");
    assert_eq!(page::unpack(&format!("{one}x"), 1), None, "trailing text");
    assert_eq!(page::unpack(&one.replacen("1,", "x,", 1), 1), None, "seq not a number");
    // A length that ends inside a multi-byte character is refused, not sliced.
    let mut split = entry.clone();
    split.app = "é".into();
    assert_eq!(page::unpack(&packed(&split).replacen("2,é", "1,é", 1), 1), None);
}

#[tokio::test]
async fn open_explains_unsupported_databases_without_leaking_passwords() {
    for given in ["mysql://keelson:hunter2@db/keelson", "http://example.com/ledger", "", "   "] {
        let err = Ledger::open(given).await.unwrap_err();
        assert_eq!(err.kind(), "unsupported_database", "{given}: {err}");
        let message = err.to_string();
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("sqlite://") && message.contains("postgres://"), "{message}");
    }
    assert_eq!(
        redact("postgres://keelson:hunter2@db:5432/k?sslmode=require"),
        "postgres://keelson:***@db:5432/k?sslmode=require"
    );
    assert_eq!(redact("postgres://keelson@db/k"), "postgres://keelson@db/k");
}

#[tokio::test]
async fn sqlite_paths_urls_and_memory_all_open() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c/ledger.db");
    let ledger = Ledger::open(nested.to_str().unwrap()).await.unwrap();
    ledger.append(transition("web", "a", "b")).await.unwrap();
    assert!(nested.exists(), "parent directories are created");

    let url = format!("sqlite://{}", dir.path().join("d/url.db").display());
    let ledger = Ledger::open(&url).await.unwrap();
    ledger.append(transition("web", "a", "b")).await.unwrap();
    assert_eq!(ledger.count().await.unwrap(), 1);

    let memory = Ledger::open("sqlite::memory:").await.unwrap();
    memory.append_batch(transitions(3)).await.unwrap();
    let clone = memory.clone();
    assert!(clone.verify(&[]).await.unwrap().ok);
    assert_eq!(clone.count().await.unwrap(), 3);
}

#[test]
fn ledger_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<Ledger>();
}

/// A refused PostgreSQL connection fails at once with its cause (not a pool timeout), and no form
/// of the password is printed.
#[tokio::test]
async fn a_refused_postgres_connection_names_its_cause_without_the_password() {
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for url in [
        format!("postgres://keelson:hunter2@127.0.0.1:{port}/k"),
        format!("postgres://keelson@127.0.0.1:{port}/k?password=hunter2"),
        format!("postgresql://127.0.0.1:{port}/k?user=keelson&password=hunter2&sslmode=disable"),
    ] {
        let err = Ledger::open(&url).await.unwrap_err();
        let message = format!("{:#}", anyhow::Error::from(err));
        assert!(!message.contains("hunter2"), "{message}");
        assert!(!message.contains("pool timed out"), "{message}");
        assert!(message.to_lowercase().contains("refused"), "the cause is named: {message}");
    }
}

/// An entry whose hash matches can still break the format: U+0000 in a field, or an `at` that is
/// not RFC 3339 UTC with six digits. Both verifiers (Rust and docs/verify_audit.py) refuse it.
#[tokio::test]
async fn both_verifiers_refuse_nul_and_malformed_times_even_with_matching_hashes() {
    let dir = tempfile::tempdir().unwrap();
    type Break = fn(&mut LedgerEntry);
    let cases: [(&str, Break); 5] = [
        ("app contains U+0000", |e| e.app = "we\u{0}b".into()),
        ("actor contains U+0000", |e| e.actor = "\u{0}".into()),
        ("is not RFC 3339", |e| e.at = "2026-11-02 10:00:00".into()),
        ("is not RFC 3339", |e| e.at = "2026-11-02T10:00:00Z".into()),
        ("is not RFC 3339", |e| e.at = "2026-13-45T10:00:00.000000Z".into()),
    ];
    for (expected, break_it) in cases {
        let mut entry = known_entry();
        break_it(&mut entry);
        entry.hash = entry.compute_hash();
        let report = verify_entries([entry.clone()], &[]);
        let bad = report.first_bad.as_ref().unwrap_or_else(|| panic!("{expected}: accepted"));
        assert!(bad.reason.contains(expected.split(' ').next_back().unwrap()), "{expected}: {}", bad.reason);
        let line = format!("{}\n", serde_json::to_string(&entry).unwrap());
        if let Some((code, stdout)) = run_python(&dir.path().join("bad.jsonl"), &line, None).await {
            assert_eq!(code, 1, "verify_audit.py accepted it ({expected}): {stdout}");
            assert!(stdout.starts_with("BAD seq 1:"), "{stdout}");
        }
    }
    // The known entry itself still verifies.
    let mut entry = known_entry();
    entry.hash = entry.compute_hash();
    assert!(verify_entries([entry], &[]).ok);
}
