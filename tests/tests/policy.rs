//! Policy on the real daemon: a denied change is Blocked (the running version kept), a freeze
//! window holds changes until a committed override, and `plan` shows verdicts.

use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, template_repo};

fn healthy_at(d: &Daemon, app: &str, commit: &str) -> Option<serde_json::Value> {
    d.app(app).filter(|a| a["phase"] == "Healthy" && a["desiredCommit"] == commit)
}

#[test]
fn denied_change_is_blocked_then_fixed_and_freeze_needs_an_override() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d = Daemon::start(&["up", "--dir", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "100ms"], tmp.path());
    let start = git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("order-worker Healthy", Duration::from_secs(60), |d| healthy_at(d, "order-worker", &start));

    // The shipped defaults require cpu and memory: dropping cpu is denied, the old version keeps running.
    edit(&repo.join("apps/order-worker/deploy.yaml"), "    cpu: 250m\n", "");
    git(&repo, &["commit", "-qam", "Drop the cpu request"]);
    let denied = git(&repo, &["rev-parse", "HEAD"]);
    let plan = keelson(&["plan", "--repo", r, "--base", &start, "--head", &denied], tmp.path());
    assert_eq!(plan.status.code(), Some(1), "plan fails on a policy denial");
    assert!(String::from_utf8_lossy(&plan.stdout).contains("DENY"), "{}", String::from_utf8_lossy(&plan.stdout));
    let blocked = d.wait_for("order-worker Blocked by policy", Duration::from_secs(20), |d| {
        d.app("order-worker").filter(|a| a["phase"] == "Blocked")
    });
    assert_eq!(blocked["reason"], "Policy");
    assert!(blocked["message"].as_str().unwrap().contains("cpu"), "{blocked}");
    assert_eq!(blocked["inSync"], false);

    git(&repo, &["revert", "--no-edit", "HEAD"]);
    let fixed = git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("order-worker Healthy after the fix", Duration::from_secs(20), |d| {
        healthy_at(d, "order-worker", &fixed)
    });

    // A freeze window that is always open holds every change…
    std::fs::write(
        repo.join("policies/freeze.yaml"),
        "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: always-frozen\nspec:\n  freeze:\n    - cron: \"* * * * *\"\n      duration: 2h\n      timeZone: UTC\n      reason: test freeze\n",
    )
    .unwrap();
    edit(&repo.join("apps/order-worker/deploy.yaml"), "replicas: 2", "replicas: 3");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "Freeze and scale"]);
    let frozen = d.wait_for("order-worker held by the freeze", Duration::from_secs(20), |d| {
        d.app("order-worker").filter(|a| a["phase"] == "Blocked" && a["reason"] == "Freeze")
    });
    assert!(frozen["message"].as_str().unwrap().contains("test freeze"), "{frozen}");

    // …until a commit carries an override, which is recorded with the rollout.
    git(
        &repo,
        &["commit", "-q", "--allow-empty", "-m", "Ship it", "-m", "Keelson-Freeze-Override: incident 42 hotfix"],
    );
    let over = git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("order-worker Healthy under the override", Duration::from_secs(20), |d| {
        healthy_at(d, "order-worker", &over)
    });
    let history = d.json("/api/v1/apps/order-worker/history?limit=1000");
    let plan_entry =
        history["entries"].as_array().unwrap().iter().rev().find(|e| e["action"] == "plan").unwrap().clone();
    assert!(plan_entry["detail"].to_string().contains("incident 42 hotfix"), "{plan_entry}");
    assert_eq!(d.terminate(), 0);
}
