//! The write guard: a failed commit leaves no connection inside a transaction, and a ledger swapped
//! under the daemon is noticed and refused.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::super::{Ledger, NewEntry, WriteState};
use super::*;

fn entry(app: &str) -> NewEntry {
    NewEntry {
        app: app.into(),
        desired_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        desired_digest: "sha256:2f1c".into(),
        rollout: None,
        from_state: "Pending".into(),
        to_state: "Planned".into(),
        action: "plan".into(),
        actor: "keelson".into(),
        detail: json!({}),
    }
}

fn head(seq: i64, hash: &str) -> Head {
    Head { seq, hash: hash.into(), at: String::new() }
}

#[test]
fn continuity_of_the_chain_under_the_append_lock() {
    let ours = (5, "a".repeat(64));
    assert_eq!(continuity(None, None), Continuity::Continues, "nothing written yet");
    assert_eq!(continuity(Some(&ours), Some(&head(5, &ours.1))), Continuity::Continues);
    assert!(matches!(continuity(Some(&ours), None), Continuity::Broken(m) if m.contains("empty")));
    assert!(
        matches!(continuity(Some(&ours), Some(&head(3, &ours.1))), Continuity::Broken(m) if m.contains("ends at seq 3"))
    );
    assert!(
        matches!(continuity(Some(&ours), Some(&head(5, &"b".repeat(64)))), Continuity::Broken(m) if m.contains("another chain"))
    );
    assert_eq!(continuity(Some(&ours), Some(&head(9, "x"))), Continuity::Lookup(5, ours.1.clone()));
    assert!(looked_up(5, &ours.1, Some(&ours.1)).is_ok());
    assert!(looked_up(5, &ours.1, Some("b")).is_err());
    assert!(looked_up(5, &ours.1, None).is_err());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Deleting the SQLite file under an open ledger: SQLite would go on appending into the unlinked
/// file; the guard refuses instead, and says so.
#[test]
fn a_deleted_or_replaced_ledger_file_is_refused() {
    for replace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keelson.db");
        runtime().block_on(async {
            let ledger = Ledger::open(&path.display().to_string()).await.unwrap();
            ledger.append(entry("web")).await.unwrap();
            assert_eq!(ledger.write_state(), WriteState::Writable);
            std::fs::remove_file(&path).unwrap();
            if replace {
                std::fs::write(&path, b"").unwrap();
            }
            let err = ledger.append(entry("web")).await.unwrap_err();
            assert_eq!(err.kind(), "ledger_replaced", "{err}");
            let want = if replace { "replaced by another file" } else { "was deleted" };
            assert!(err.to_string().contains(want), "{err}");
            assert!(matches!(ledger.write_state(), WriteState::Replaced { message } if message.contains(want)));
            // Refused for good, not only once.
            assert_eq!(ledger.append(entry("web")).await.unwrap_err().kind(), "ledger_replaced");
        });
    }
}

/// A ledger file swapped for a copy of an older one (same path, same chain, fewer entries) is a
/// different file; the identity check alone (no append) notices it.
#[test]
fn a_ledger_restored_from_an_older_copy_is_noticed_without_an_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keelson.db");
    let copy = dir.path().join("old.db");
    runtime().block_on(async {
        let ledger = Ledger::open(&path.display().to_string()).await.unwrap();
        ledger.append(entry("web")).await.unwrap();
        let other = Ledger::open(&copy.display().to_string()).await.unwrap();
        other.append(entry("web")).await.unwrap();
        other.close().await;
        ledger.append(entry("web")).await.unwrap();
        assert_eq!(ledger.check_identity().await, WriteState::Writable);
        std::fs::rename(&copy, &path).unwrap();
        assert!(matches!(ledger.check_identity().await, WriteState::Replaced { .. }));
    });
}

/// Two handles on one database (as two daemons on PostgreSQL would be) interleave appends: the
/// chain goes on, neither is taken for a swap.
#[test]
fn other_writers_on_the_same_chain_are_not_a_swap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keelson.db").display().to_string();
    runtime().block_on(async {
        let a = Ledger::open(&path).await.unwrap();
        let b = Ledger::open(&path).await.unwrap();
        for _ in 0..3 {
            a.append(entry("web")).await.unwrap();
            b.append(entry("api")).await.unwrap();
        }
        assert_eq!(a.check_identity().await, WriteState::Writable);
        assert_eq!(b.write_state(), WriteState::Writable);
    });
}

/// Set in the child process of [`an_io_error_on_commit_is_rolled_back_and_appends_recover`].
const FAULT_CHILD: &str = "KEELSON_TEST_FSIZE_CHILD";

/// One I/O error on COMMIT must not leave the connection inside a transaction.
///
/// The fault is real: the child process lowers its own file-size limit (RLIMIT_FSIZE) to the
/// current size of the ledger's WAL, so the kernel refuses the next write to the WAL with EFBIG,
/// exactly as a full disk refuses it with ENOSPC. The transaction's pages stay in SQLite's cache
/// until COMMIT, so it is the COMMIT that fails (SQLite rolls the transaction back itself). The
/// limit is then raised again, as when space is freed. SIGXFSZ, which the kernel sends with
/// EFBIG, is caught (the daemon catches it too), so the write fails instead of killing the
/// process. A child process, because the limit applies to every thread of the process.
#[test]
fn an_io_error_on_commit_is_rolled_back_and_appends_recover() {
    if std::env::var_os(FAULT_CHILD).is_none() {
        let exe = std::env::current_exe().unwrap();
        let name = "ledger::guard::tests::an_io_error_on_commit_is_rolled_back_and_appends_recover";
        let mut child = Command::new(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(FAULT_CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                child.kill().unwrap();
                panic!("the fault-injection child did not finish in 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "child failed:\n{text}");
        assert!(text.contains("1 passed"), "the child ran no test:\n{text}");
        return;
    }
    use rlimit::Resource;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keelson.db");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let _xfsz = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ)).unwrap();
        let ledger = Ledger::open(&path.display().to_string()).await.unwrap();
        for app in ["web", "api", "db"] {
            ledger.append(entry(app)).await.unwrap();
        }
        let wal = dir.path().join("keelson.db-wal");
        let size = std::fs::metadata(&wal).unwrap().len();
        let (soft, hard) = Resource::FSIZE.get().unwrap();
        Resource::FSIZE.set(size, hard).unwrap();
        let err = ledger.append(entry("web")).await.unwrap_err();
        Resource::FSIZE.set(soft, hard).unwrap();
        assert!(err.to_string().contains("committing an append"), "the COMMIT is what failed: {err}");
        assert!(matches!(ledger.write_state(), WriteState::Failing { .. }), "{:?}", ledger.write_state());

        // Space is back: the next appends succeed on the same pool and the chain has no hole.
        for app in ["web", "api"] {
            let e = ledger.append(entry(app)).await.unwrap_or_else(|e| panic!("append after the fault: {e}"));
            assert!(e.seq >= 4);
        }
        assert_eq!(ledger.write_state(), WriteState::Writable);
        let report = ledger.verify(&[]).await.unwrap();
        assert!(report.ok, "{report}");
        assert_eq!(report.entries, 5, "{report}");
    });
}
