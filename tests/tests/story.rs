//! The whole story of the walking skeleton, on the real binary: a state repository from the
//! template, the daemon with the simulator, a change committed with git, a revert, the audit
//! ledger verified, then tampered with.

use std::process::Command;
use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, metric, template_repo};
use serde_json::Value;

const APPS: usize = 4;

fn phase(app: &Value) -> &str {
    app["phase"].as_str().unwrap_or_default()
}

fn all_healthy(d: &Daemon) -> Option<Value> {
    let apps = d.json("/api/v1/apps");
    let list = apps["apps"].as_array()?;
    (list.len() == APPS && list.iter().all(|a| phase(a) == "Healthy" && a["inSync"] == true)).then_some(apps)
}

#[test]
fn change_revert_status_branch_and_tamper_evident_audit() {
    let (tmp, repo) = template_repo();
    let repo_arg = repo.to_str().unwrap();
    let d = Daemon::start(
        &["up", "--dir", repo_arg, "--listen", "127.0.0.1:0", "--sim-rollout-time", "1500ms", "--poll-interval", "30s"],
        tmp.path(),
    );
    d.wait_for("every template app Healthy", Duration::from_secs(90), all_healthy);
    let (code, _) = d.get("/readyz");
    assert_eq!(code, 200);
    let metrics_before = metric(&d.get("/metrics").1, "keelson_transitions_total");
    assert!(metrics_before >= (APPS * 4) as f64, "each app went plan → intent → applied → healthy: {metrics_before}");
    let first = d.app("storefront").unwrap();
    let first_digest = first["desiredDigest"].as_str().unwrap().to_owned();
    let first_rollout = first["rollout"].as_i64().unwrap();
    let postgres_rollout = d.app("postgres").unwrap()["rollout"].clone();

    // A change, committed with the git CLI: seen Progressing, then Healthy at the new commit.
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&repo, &["commit", "-qam", "Scale storefront to 5"]);
    let change = git(&repo, &["rev-parse", "HEAD"]);
    let progressing = d.wait_for("storefront Progressing at the new commit", Duration::from_secs(20), |d| {
        let a = d.app("storefront")?;
        (a["desiredCommit"] == change.as_str() && phase(&a) == "Progressing").then_some(a)
    });
    assert_eq!(progressing["inSync"], false);
    assert_eq!(progressing["progress"]["of"], 1);
    let healthy = d.wait_for("storefront Healthy at the new commit", Duration::from_secs(30), |d| {
        let a = d.app("storefront")?;
        (a["desiredCommit"] == change.as_str() && phase(&a) == "Healthy").then_some(a)
    });
    assert_eq!(healthy["inSync"], true);
    assert_eq!(healthy["observedDigest"], healthy["desiredDigest"]);
    assert_ne!(healthy["desiredDigest"].as_str().unwrap(), first_digest);
    let metrics_after = metric(&d.get("/metrics").1, "keelson_transitions_total");
    assert!(metrics_after > metrics_before, "transitions counter grew: {metrics_before} → {metrics_after}");
    assert_eq!(d.app("postgres").unwrap()["rollout"], postgres_rollout, "an unchanged app is not rolled out again");

    // A revert is a new rollout back to the earlier digest.
    git(&repo, &["revert", "--no-edit", "HEAD"]);
    let revert = git(&repo, &["rev-parse", "HEAD"]);
    let reverted = d.wait_for("storefront Healthy at the revert", Duration::from_secs(30), |d| {
        let a = d.app("storefront")?;
        (a["desiredCommit"] == revert.as_str() && phase(&a) == "Healthy").then_some(a)
    });
    assert_eq!(reverted["desiredDigest"].as_str().unwrap(), first_digest, "same content, same digest");
    assert!(reverted["rollout"].as_i64().unwrap() > healthy["rollout"].as_i64().unwrap());
    assert!(healthy["rollout"].as_i64().unwrap() > first_rollout);

    let history = d.json("/api/v1/apps/storefront/history?limit=1000");
    let actions: Vec<&str> =
        history["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions.iter().filter(|a| **a == "intent").count(), 3, "three rollouts: {actions:?}");
    let verify = d.json("/api/v1/audit/verify");
    assert_eq!(verify["ok"], true, "{verify}");

    assert_eq!(d.terminate(), 0, "SIGTERM exits 0");

    // The status branch holds every transition, with trailers in the final paragraph.
    let log = git(&repo, &["log", "keelson/status", "--format=%B%x00"]);
    assert!(log.contains(&format!("Keelson-Source: {change}")), "{log}");
    assert!(log.contains(&format!("Keelson-Source: {revert}")));
    let trailers = log.matches("Keelson-Audit: ").count();
    let head_seq = history["entries"].as_array().unwrap().last().unwrap()["seq"].as_i64().unwrap();
    assert!(trailers as i64 >= head_seq, "{trailers} trailers for {head_seq} entries");
    for message in log.split('\0').filter(|m| !m.trim().is_empty()) {
        let last = message.trim_end().rsplit("\n\n").next().unwrap();
        assert!(
            last.lines().all(|l| l.starts_with("Keelson-Audit: ") || l.starts_with("Keelson-Source: ")),
            "{message}"
        );
    }
    // The tracked branch was never touched by the daemon.
    assert_eq!(git(&repo, &["rev-parse", "main"]), revert);

    let verify = keelson(&["audit", "verify", "--repo", repo_arg], tmp.path());
    let out = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "audit verify failed: {out}{}", String::from_utf8_lossy(&verify.stderr));
    assert!(out.starts_with("OK"), "{out}");

    // An attacker deletes one row of a copy (dropping the trigger first): the entry after the gap is named.
    let db = repo.join(".keelson/keelson.db");
    let copy = tmp.path().join("copy.db");
    let backup = format!(".backup '{}'", copy.display());
    assert!(Command::new("sqlite3").arg(&db).arg(backup).status().expect("sqlite3 CLI").success());
    let sql = "DROP TRIGGER IF EXISTS ledger_no_delete; DELETE FROM ledger WHERE seq = 9;";
    assert!(Command::new("sqlite3").arg(&copy).arg(sql).status().expect("sqlite3 CLI").success());
    let verify = keelson(&["audit", "verify", "--database", copy.to_str().unwrap(), "--repo", repo_arg], tmp.path());
    let out = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{out}");
    assert!(out.contains("seq 10"), "names the entry after the gap: {out}");

    // An attacker edits one row (dropping the trigger first): verification names it.
    let sql =
        "DROP TRIGGER IF EXISTS ledger_no_update; UPDATE ledger SET to_state = 'Healthy', detail = '{}' WHERE seq = 5;";
    let status = Command::new("sqlite3").arg(&db).arg(sql).status().expect("sqlite3 CLI");
    assert!(status.success());
    let verify = keelson(&["audit", "verify", "--repo", repo_arg], tmp.path());
    let out = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{out}");
    assert!(out.contains("seq 5"), "names entry 5: {out}");
}
