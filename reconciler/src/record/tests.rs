use super::*;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::source::GitRepo;

fn entry(seq: i64, app: &str, from: &str, to: &str) -> LedgerEntry {
    LedgerEntry {
        seq,
        at: "2026-11-23T10:00:00.000000Z".into(),
        app: app.into(),
        desired_commit: "a".repeat(40),
        desired_digest: "sha256:00".into(),
        rollout: Some(1),
        from_state: from.into(),
        to_state: to.into(),
        action: "test".into(),
        actor: "keelson".into(),
        detail: "{}".into(),
        prev_hash: "0".repeat(64),
        hash: format!("{seq:064x}"),
    }
}

fn repo() -> (tempfile::TempDir, GitRepo) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("git").args(["init", "-q", "-b", "main"]).arg(dir.path()).status().unwrap();
    assert!(status.success());
    let repo = GitRepo::open(dir.path()).unwrap();
    (dir, repo)
}

#[test]
fn batches_become_commits_with_one_trailer_per_entry() {
    let (_dir, repo) = repo();
    let branch = StatusBranch::new(repo.clone(), "keelson/status");
    assert_eq!(branch.last_recorded_seq().unwrap(), None);
    branch.commit_batch(&[entry(1, "web", "Pending", "Planned")]).unwrap();
    branch.commit_batch(&[entry(2, "web", "Planned", "Progressing"), entry(3, "db", "Pending", "Planned")]).unwrap();
    assert_eq!(branch.last_recorded_seq().unwrap(), Some(3));
    let anchors = branch.anchors().unwrap();
    assert_eq!(anchors.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(anchors[2].hash, format!("{:064x}", 3));
    assert_eq!(anchors[1].commit, anchors[2].commit, "entries of one batch share a commit");
    // The tracked branch is untouched and the status files are in the tree.
    assert_eq!(repo.branch_head("main").unwrap(), None);
    let tip = repo.branch_head("keelson/status").unwrap().unwrap();
    let snap = repo.snapshot(&tip, "").unwrap();
    let paths: Vec<_> = snap.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["status/db.yaml", "status/web.yaml"]);
    let web = repo.read_blob(&snap.files[1].blob_id).unwrap();
    assert!(String::from_utf8(web).unwrap().contains("phase: Progressing"));
}

#[test]
fn deleted_apps_leave_the_status_tree() {
    let (_dir, repo) = repo();
    let branch = StatusBranch::new(repo.clone(), "keelson/status");
    branch.commit_batch(&[entry(1, "web", "Pending", "Healthy")]).unwrap();
    branch.commit_batch(&[entry(2, "web", "Healthy", "Deleted")]).unwrap();
    let tip = repo.branch_head("keelson/status").unwrap().unwrap();
    assert!(repo.snapshot(&tip, "").unwrap().files.is_empty());
}

#[test]
fn message_puts_trailers_in_the_final_paragraph() {
    let msg = commit_message(&[entry(7, "web", "Planned", "Progressing"), entry(8, "web", "Progressing", "Healthy")]);
    let last = msg.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("Keelson-Audit: 7 "));
    assert!(last.contains(&format!("Keelson-Source: {}", "a".repeat(40))));
    assert_eq!(parse_audit_trailers(&msg).len(), 2);
}

/// The status trees are written by hand (not by gix's editor): git itself must accept them, with
/// entries in git's order whatever order the apps change in, and removals leaving no trace.
#[test]
fn status_trees_pass_git_fsck_and_list_every_app() {
    let (dir, repo) = repo();
    let branch = StatusBranch::new(repo.clone(), "keelson/status");
    let names = ["web", "web-2", "web.api", "a", "zeta", "m-1", "db"];
    let mut seq = 0;
    for name in names.iter().rev() {
        seq += 1;
        branch.commit_batch(&[entry(seq, name, "Pending", "Healthy")]).unwrap();
    }
    seq += 1;
    let batch = [entry(seq, "web.api", "Healthy", "Deleted"), entry(seq + 1, "db", "Healthy", "Degraded")];
    branch.commit_batch(&batch).unwrap();
    let fsck = std::process::Command::new("git")
        .args(["fsck", "--strict", "--no-dangling"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(fsck.status.success(), "git fsck: {}", String::from_utf8_lossy(&fsck.stderr));
    let ls = std::process::Command::new("git")
        .args(["ls-tree", "-r", "--name-only", "keelson/status"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let listed = String::from_utf8(ls.stdout).unwrap();
    let mut want: Vec<String> = names.iter().filter(|n| **n != "web.api").map(|n| format!("status/{n}.yaml")).collect();
    want.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
    let tip = repo.branch_head("keelson/status").unwrap().unwrap();
    let db = repo.snapshot(&tip, "").unwrap().files.into_iter().find(|f| f.path == "status/db.yaml").unwrap();
    assert!(String::from_utf8(repo.read_blob(&db.blob_id).unwrap()).unwrap().contains("phase: Degraded"));
}

/// A file or folder someone committed by hand under a status name is replaced, never doubled.
#[test]
fn entries_of_the_other_kind_are_replaced() {
    let (_dir, repo) = repo();
    let local = repo.local();
    let blob = local.write_blob(b"x").unwrap().detach();
    let mut tree = gix::objs::Tree::empty();
    set_entry(&mut tree, b"status", gix::objs::tree::EntryKind::Blob, Some(blob));
    set_entry(&mut tree, b"status", gix::objs::tree::EntryKind::Tree, Some(local.empty_tree().id));
    assert_eq!(tree.entries.len(), 1);
    assert!(tree.entries[0].mode.is_tree());
    set_entry(&mut tree, b"status", gix::objs::tree::EntryKind::Blob, Some(blob));
    assert_eq!(tree.entries.len(), 1);
    assert!(tree.entries[0].mode.is_blob());
}

fn new_entry(app: &str, to: &str) -> crate::ledger::NewEntry {
    crate::ledger::NewEntry {
        app: app.into(),
        desired_commit: "a".repeat(40),
        desired_digest: "sha256:00".into(),
        rollout: None,
        from_state: "Pending".into(),
        to_state: to.into(),
        action: "test".into(),
        actor: "keelson".into(),
        detail: serde_json::json!({}),
    }
}

/// A repository whose status branch was written from a real ledger by the recorder's drain.
async fn recorded() -> (tempfile::TempDir, GitRepo, Ledger, StatusBranch) {
    let (dir, repo) = repo();
    let ledger = Ledger::open(&dir.path().join("k.db").display().to_string()).await.unwrap();
    for (app, to) in [("web", "Planned"), ("db", "Healthy"), ("web", "Healthy"), ("old", "Healthy"), ("old", "Deleted")]
    {
        ledger.append(new_entry(app, to)).await.unwrap();
        drain_outbox(&StatusBranch::new(repo.clone(), "keelson/status"), &ledger, &Metrics::new()).await.unwrap();
    }
    let branch = StatusBranch::new(repo.clone(), "keelson/status");
    (dir, repo, ledger, branch)
}

fn git_in(dir: &std::path::Path, args: &[&str]) -> String {
    crate::testing::git(dir, args).trim().to_owned()
}

/// Commits `files` (path → content) on top of the status branch by hand, with `message`.
fn hand_commit(dir: &std::path::Path, files: &[(&str, Option<&str>)], message: &str) -> String {
    let wt = dir.join("wt");
    if !wt.exists() {
        git_in(dir, &["worktree", "add", "-q", wt.to_str().unwrap(), "keelson/status"]);
    }
    for (path, content) in files {
        match content {
            Some(text) => std::fs::write(wt.join(path), text).unwrap(),
            None => std::fs::remove_file(wt.join(path)).unwrap(),
        }
    }
    git_in(&wt, &["add", "-A"]);
    git_in(&wt, &["commit", "-q", "--allow-empty", "-m", message]);
    git_in(&wt, &["rev-parse", "HEAD"])
}

#[tokio::test]
async fn a_tip_written_from_the_ledger_verifies_and_every_status_commit_checks_out() {
    let (_dir, _repo, ledger, branch) = recorded().await;
    assert!(matches!(inspect_tip(&branch, &ledger).await.unwrap(), TipCheck::Verified { tip: Some(_) }));
    let report = check_status_files(&branch, &ledger).await.unwrap();
    assert!(report.ok, "{report}");
    assert_eq!(report.commits, 5, "{report}");
}

#[rstest::rstest]
#[case::edited_file(&[("status/web.yaml", Some("phase: Failed\n"))], "plain edit", "status/web.yaml does not say")]
#[case::added_file(&[("status/ghost.yaml", Some("phase: Healthy\n"))], "plain edit", "status/ghost.yaml is not an app")]
#[case::removed_file(&[("status/db.yaml", None)], "plain edit", "status/db.yaml is missing")]
#[tokio::test]
async fn a_hand_edited_tip_is_foreign_and_verify_names_the_file(
    #[case] files: &[(&str, Option<&str>)],
    #[case] message: &str,
    #[case] want: &str,
) {
    let (dir, _repo, ledger, branch) = recorded().await;
    hand_commit(dir.path(), files, message);
    match inspect_tip(&branch, &ledger).await.unwrap() {
        TipCheck::Foreign { reason, .. } => assert!(reason.contains(want), "{reason}"),
        other => panic!("{other:?}"),
    }
    let report = check_status_files(&branch, &ledger).await.unwrap();
    assert!(!report.ok);
    assert!(report.first_bad.unwrap().reason.contains(want));
    // The recorder refuses to build on it, and says why.
    let err = drain_outbox(&branch, &ledger, &Metrics::new()).await.unwrap_err();
    assert!(err.is::<WritesStopped>(), "{err:#}");
    assert!(matches!(branch.record_state(), RecordState::Stopped { message } if message.contains(want)));
}

/// A forged trailer (a commit claiming to record an entry with another hash) is foreign; a
/// branch anchoring entries the ledger lacks is an older chain (the ledger was lost).
#[tokio::test]
async fn forged_trailers_and_a_lost_ledger_are_told_apart() {
    let (dir, repo, ledger, branch) = recorded().await;
    hand_commit(dir.path(), &[], &format!("forged\n\nKeelson-Audit: 5 {}", "f".repeat(64)));
    assert!(
        matches!(inspect_tip(&branch, &ledger).await.unwrap(), TipCheck::Foreign { reason, .. } if reason.contains("anchors entry 5"))
    );

    let fresh = Ledger::open(&dir.path().join("fresh.db").display().to_string()).await.unwrap();
    let b = StatusBranch::new(repo.clone(), "keelson/status");
    match inspect_tip(&b, &fresh).await.unwrap() {
        TipCheck::OlderChain { reason } => assert!(reason.contains("not the ledger this branch recorded"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // A new chain starts: old anchors drop out of verification, the recorder starts from seq 1.
    b.start_new_chain("test").unwrap();
    assert!(b.anchors().unwrap().is_empty());
    assert_eq!(b.last_recorded_seq().unwrap(), Some(0));
    fresh.append(new_entry("api", "Healthy")).await.unwrap();
    assert_eq!(drain_outbox(&b, &fresh, &Metrics::new()).await.unwrap(), 1);
    assert!(matches!(
        inspect_tip(&StatusBranch::new(repo, "keelson/status"), &fresh).await.unwrap(),
        TipCheck::Verified { .. }
    ));
    assert!(check_status_files(&b, &fresh).await.unwrap().ok);
    assert_eq!(b.anchors().unwrap().len(), 1);
}
