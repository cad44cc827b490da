//! A ledger written by the first release still reads, folds and verifies (ledger format v1 does
//! not move). The fixture and how it was made: `tests/data/ledger-v1/README.md`.

use std::path::Path;
use std::process::Command;

use keelson::ledger::{AuditQuery, Ledger};
use keelson::record::StatusBranch;
use keelson::source::GitRepo;
use keelson_core::{Apps, Event, Phase};

fn fixture() -> (tempfile::TempDir, Ledger, StatusBranch) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ledger-v1");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keelson.db");
    std::fs::copy(data.join("keelson.db"), &db).unwrap();
    let repo = dir.path().join("state");
    let out = Command::new("git")
        .args(["clone", "-q", "--mirror"])
        .arg(data.join("state.bundle"))
        .arg(&repo)
        .output()
        .expect("git");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ledger = tokio::runtime::Runtime::new().unwrap().block_on(Ledger::open(db.to_str().unwrap())).unwrap();
    let branch = StatusBranch::new(GitRepo::open(&repo).unwrap(), "keelson/status");
    (dir, ledger, branch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_releases_ledger_reads_as_typed_events_folds_and_verifies() {
    let (_dir, ledger, branch) = tokio::task::spawn_blocking(fixture).await.unwrap();
    let entries = ledger.entries(&AuditQuery { limit: Some(10_000), ..AuditQuery::default() }).await.unwrap();
    assert_eq!(entries.len(), 43);
    for e in &entries {
        e.event().unwrap_or_else(|err| panic!("{err}"));
        e.phases().unwrap_or_else(|err| panic!("entry {}: {err}", e.seq));
    }
    let kinds: std::collections::BTreeSet<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["applied", "block", "deleted", "failed", "healthy", "intent", "plan", "suspend"]
    );

    let mut apps = Apps::new();
    keelson_core::fleet::replay(&mut apps, entries.clone()).unwrap();
    let phase = |app: &str| apps[app].phase;
    assert_eq!(phase("storefront"), Phase::Healthy);
    assert_eq!(phase("order-worker"), Phase::Healthy, "pruned, then back by a revert");
    assert_eq!(phase("llm-inference"), Phase::Suspended);
    assert_eq!(phase("postgres"), Phase::Failed);
    assert_eq!(apps["postgres"].reason, "ProgressDeadlineExceeded");
    assert!(apps["postgres"].quarantined_digest.is_some(), "an old failure quarantines, as it did then");
    // The inventory comes from the intents the first release wrote (their resources).
    assert_eq!(apps["storefront"].inventory.len(), 2, "{:?}", apps["storefront"].inventory);

    let blocks: Vec<_> = entries
        .iter()
        .filter_map(|e| match e.event().unwrap() {
            Event::Block(b) => Some(b.reason.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(blocks, ["InvalidManifest", "Policy", "Policy"]);

    let anchors = tokio::task::spawn_blocking(move || branch.anchors()).await.unwrap().unwrap();
    assert_eq!(anchors.len(), 43);
    let report = ledger.verify(&anchors).await.unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.anchors_checked, 43);
}
