use super::*;
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
