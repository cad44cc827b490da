//! Pull-request review and the kubectl / flux / argocd habits of the CLI, against the real
//! binary: `plan` exit codes for every kind of finding, and `get`, `history`, `wait`, `status
//! --fail-on`, `completion` and `version` against a real daemon on loopback.

use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, template_repo};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A daemon on the template whose `order-worker` apply is rejected (so it ends `Failed`).
fn daemon_with_a_failing_app() -> (tempfile::TempDir, std::path::PathBuf, Daemon) {
    let (tmp, repo) = template_repo();
    let config = tmp.path().join("keelson.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  repo: {}\napi:\n  listen: 127.0.0.1:0\n\
             providers:\n  sim:\n    type: sim\n    rolloutTime: 100ms\n    faults:\n      failApply: [order-worker]\n\
             clusters:\n  prod-east:\n    workloads: sim\n  gpu-lab:\n    workloads: sim\n",
            repo.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&["daemon", "--config", config.to_str().unwrap()], tmp.path());
    (tmp, repo, d)
}

#[test]
fn get_history_wait_and_status_read_a_running_daemon() {
    let (tmp, _repo, d) = daemon_with_a_failing_app();
    let dir = tmp.path();
    let server = d.url.as_str();

    let wait = keelson(&["wait", "postgres", "--for", "healthy", "--timeout", "60s", "--server", server], dir);
    assert_eq!(wait.status.code(), Some(0), "{}{}", stdout(&wait), stderr(&wait));
    assert!(stdout(&wait).contains("postgres is healthy"), "{}", stdout(&wait));
    let synced = keelson(&["wait", "postgres", "--for", "synced", "--timeout", "60s", "--server", server], dir);
    assert_eq!(synced.status.code(), Some(0), "{}", stderr(&synced));
    // A failed app ends the wait at once with exit 1, naming the phase.
    let failed = keelson(&["wait", "order-worker", "--timeout", "60s", "--server", server], dir);
    assert_eq!(failed.status.code(), Some(1), "{}{}", stdout(&failed), stderr(&failed));
    assert!(stderr(&failed).contains("order-worker is Failed"), "{}", stderr(&failed));
    // An app that never shows up times out with exit 1.
    let missing = keelson(&["wait", "nope", "--timeout", "1s", "--interval", "200ms", "--server", server], dir);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("was not healthy within 1s"), "{}", stderr(&missing));

    let table = keelson(&["get", "apps", "--server", server], dir);
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).starts_with("APP"), "{}", stdout(&table));
    let json = keelson(&["get", "apps", "-o", "json", "--server", server], dir);
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let apps = list["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 4, "{list}");
    assert!(apps[0].get("desiredCommit").is_some(), "camelCase, as the API writes it: {list}");
    let yaml = keelson(&["get", "apps", "-o", "yaml", "--server", server], dir);
    assert!(stdout(&yaml).contains("name: postgres"), "{}", stdout(&yaml));

    let one = keelson(&["get", "app", "postgres", "--server", server], dir);
    assert!(stdout(&one).contains("Phase:") && stdout(&one).contains("Healthy"), "{}", stdout(&one));
    let one = keelson(&["get", "app", "postgres", "-o", "json", "--server", server], dir);
    let app: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(app["name"], "postgres");
    let unknown = keelson(&["get", "app", "nope", "--server", server], dir);
    assert_eq!(unknown.status.code(), Some(2), "an error that stops the command");
    assert!(stderr(&unknown).contains("no app named \"nope\""), "{}", stderr(&unknown));

    let history = keelson(&["history", "postgres", "--server", server], dir);
    assert!(history.status.success(), "{}", stderr(&history));
    assert!(stdout(&history).contains("Planned → Progressing"), "{}", stdout(&history));
    let history = keelson(&["history", "postgres", "-o", "json", "--server", server], dir);
    let h: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(h["app"], "postgres");
    assert!(h["entries"].as_array().unwrap().iter().any(|e| e["to"] == "Healthy"), "{h}");

    // --watch is bounded: it prints the list, then exits 0 at its timeout.
    let watch =
        keelson(&["get", "apps", "--watch", "--interval", "200ms", "--watch-timeout", "1s", "--server", server], dir);
    assert_eq!(watch.status.code(), Some(0), "{}", stderr(&watch));
    assert!(stdout(&watch).starts_with("APP"), "{}", stdout(&watch));

    // `status` exits 1 with a failed app (the default --fail-on failed), 0 with --fail-on none.
    let status = keelson(&["status", "--server", server], dir);
    assert_eq!(status.status.code(), Some(1), "{}{}", stdout(&status), stderr(&status));
    assert!(stderr(&status).contains("order-worker (Failed)"), "{}", stderr(&status));
    let status = keelson(&["status", "--fail-on", "none", "-o", "json", "--server", server], dir);
    assert_eq!(status.status.code(), Some(0), "{}", stderr(&status));
    let status = keelson(&["status", "--fail-on", "blocked", "--server", server], dir);
    assert_eq!(status.status.code(), Some(0), "nothing is blocked: {}", stderr(&status));
    assert_eq!(d.terminate(), 0);

    let down = keelson(&["get", "apps", "--server", "http://127.0.0.1:9"], dir);
    assert_eq!(down.status.code(), Some(2));
    assert!(stderr(&down).contains("keelson up"), "{}", stderr(&down));
}

#[test]
fn status_fails_on_blocked_apps_when_asked() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d =
        Daemon::start(&["daemon", "--repo", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "100ms"], tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    edit(&repo.join("apps/order-worker/deploy.yaml"), "replicas: 2", "replicas: two");
    git(&repo, &["commit", "-qam", "Break order-worker"]);
    d.wait_for("order-worker Blocked", Duration::from_secs(30), |d| {
        d.app("order-worker").filter(|a| a["phase"] == "Blocked")
    });
    let status = keelson(&["status", "--fail-on", "failed,blocked", "--server", &d.url], tmp.path());
    assert_eq!(status.status.code(), Some(1), "{}{}", stdout(&status), stderr(&status));
    assert!(stderr(&status).contains("order-worker (Blocked)"), "{}", stderr(&status));
    let wait = keelson(&["wait", "order-worker", "--timeout", "30s", "--server", &d.url], tmp.path());
    assert_eq!(wait.status.code(), Some(1), "a block that needs a new commit ends the wait");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn completion_version_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef keelson"), ("fish", "complete -c keelson")] {
        let out = keelson(&["completion", shell], dir.path());
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        assert!(stdout(&out).contains(marker), "{shell}: {}", &stdout(&out)[..200.min(stdout(&out).len())]);
        assert!(stdout(&out).contains("history"), "{shell} completes the verbs");
    }
    assert_eq!(keelson(&["completion", "tcsh"], dir.path()).status.code(), Some(2));
    let version = keelson(&["version"], dir.path());
    assert_eq!(stdout(&version).trim(), format!("keelson {}", env!("CARGO_PKG_VERSION")));
    let version = keelson(&["version", "-o", "json"], dir.path());
    let v: serde_json::Value = serde_json::from_slice(&version.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(keelson(&["wait", "web", "--for", "ready"], dir.path()).status.code(), Some(2));
    assert_eq!(keelson(&["get", "pods"], dir.path()).status.code(), Some(2));
}

/// `plan` exits 1 for every kind of finding (a policy deny, a freeze, an invalid app) and 2 when
/// it cannot plan at all.
#[test]
fn plan_exit_codes_are_the_same_for_every_kind_of_deny() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let plan = |head: &str| keelson(&["plan", "--repo", r, "--base", "main", "--head", head], tmp.path());
    git(&repo, &["checkout", "-qb", "scale"]);
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 4");
    git(&repo, &["commit", "-qam", "Scale"]);
    assert_eq!(plan("scale").status.code(), Some(0), "{}", stdout(&plan("scale")));

    git(&repo, &["checkout", "-qb", "frozen"]);
    // Open every hour for two hours: always open.
    std::fs::write(
        repo.join("policies/freeze.yaml"),
        "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: freeze\nspec:\n  freeze:\n    \
         - cron: \"0 * * * *\"\n      duration: 2h\n      timeZone: UTC\n      reason: release freeze\n",
    )
    .unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "Freeze"]);
    let frozen = plan("frozen");
    assert_eq!(frozen.status.code(), Some(1), "a freeze is a finding: {}", stdout(&frozen));
    assert_eq!(stdout(&frozen).matches("Freeze: 1 window open").count(), 1, "{}", stdout(&frozen));

    git(&repo, &["checkout", "-q", "scale"]);
    git(&repo, &["checkout", "-qb", "invalid"]);
    edit(&repo.join("apps/order-worker/deploy.yaml"), "replicas: 2", "replicas: two");
    git(&repo, &["commit", "-qam", "Break"]);
    let invalid = keelson(&["plan", "--repo", r, "--base", "main", "--head", "invalid", "-o", "json"], tmp.path());
    assert_eq!(invalid.status.code(), Some(1), "{}", stdout(&invalid));
    let v: serde_json::Value = serde_json::from_slice(&invalid.stdout).unwrap();
    assert_eq!(v["summary"]["invalid"], 1, "{v}");
    assert_eq!(v["summary"]["unchanged"], 2, "{v}");
    assert_eq!(v["changes"].as_array().unwrap().iter().filter(|c| c["change"] == "invalid").count(), 1);

    let unknown = keelson(&["plan", "--repo", r, "--base", "nope"], tmp.path());
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("nope"), "{}", stderr(&unknown));
}

/// The CI recipes' comment script against a fake of GitHub's and GitLab's comment APIs on
/// loopback: one comment posted, then updated in place, other comments untouched.
#[test]
fn the_pr_comment_script_posts_once_and_then_updates() {
    let script = keelson_e2e::workspace_root().join("docs/ci/test_pr_comment.py");
    let out = std::process::Command::new("python3").arg(&script).output();
    let out = match out {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            println!("SKIP the_pr_comment_script_posts_once_and_then_updates: no python3 ({e})");
            return;
        }
        Err(e) => panic!("python3 is needed in CI: {e}"),
    };
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "ok github\nok gitlab\n");
}
