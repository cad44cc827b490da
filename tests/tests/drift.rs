//! Drift end to end: the simulator behind a running daemon changes a field by itself
//! (`--sim-drift`, as a hand edit would); the daemon finds it on its drift interval, records
//! `Drifted` naming the field and heals it, or with `sync.selfHeal: false` leaves it and
//! `keelson diff` shows it (exit 1). And a dry-run daemon that never applies.

use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, template_repo};
use serde_json::Value;

/// The app's ledger entries as (action, detail); none while the daemon has not seen it yet.
fn actions(d: &Daemon, app: &str) -> Vec<(String, Value)> {
    let (status, body) = d.get(&format!("/api/v1/apps/{app}/history"));
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "{body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_owned(), e["detail"].clone()))
        .collect()
}

#[test]
fn a_field_drifted_in_the_sim_is_found_recorded_and_healed_or_left_and_shown_by_diff() {
    let (tmp, repo) = template_repo();
    // order-worker owns up to its drift: recorded, never healed.
    edit(&repo.join("apps/order-worker/deploy.yaml"), "    prune: true\n", "    prune: true\n    selfHeal: false\n");
    git(&repo, &["commit", "-qam", "order-worker: no self-heal"]);
    let r = repo.to_str().unwrap();
    let args = [
        "up",
        "--dir",
        r,
        "--listen",
        "127.0.0.1:0",
        "--sim-rollout-time",
        "200ms",
        "--drift-interval",
        "1s",
        "--sim-drift",
        "storefront:/spec/replicas=7@1s",
        "--sim-drift",
        "order-worker:/spec/replicas=9@1s",
    ];
    let d = Daemon::start(&args, tmp.path());

    // storefront: drifted, recorded with the field, healed by a new rollout, Healthy again.
    let healed = d.wait_for("storefront drifted and healed", Duration::from_secs(60), |d| {
        let history = actions(d, "storefront");
        let at = history.iter().position(|(a, _)| a == "drift")?;
        let rest: Vec<&str> = history[at..].iter().map(|(a, _)| a.as_str()).collect();
        (rest == ["drift", "plan", "intent", "applied", "healthy"]).then(|| history[at].1.clone())
    });
    assert_eq!(healed["resources"][0]["resource"], "sim:Workload/web/storefront", "{healed}");
    assert_eq!(healed["resources"][0]["fields"], serde_json::json!(["/spec/replicas"]), "{healed}");
    assert_eq!(healed["selfHeal"], true);
    let plans: Vec<Value> =
        actions(&d, "storefront").into_iter().filter(|(a, _)| a == "plan").map(|(_, p)| p).collect();
    assert_eq!(plans.last().unwrap()["cause"], "Drifted", "{plans:?}");

    // order-worker: Drifted, left as it is, and `keelson diff` says what differs.
    d.wait_for("order-worker Drifted", Duration::from_secs(60), |d| {
        d.app("order-worker").filter(|a| a["phase"] == "Drifted").map(|_| ())
    });
    let live = d.json("/api/v1/apps/order-worker/diff");
    assert_eq!(live["live"], true, "observed now, through the engine: {live}");
    assert_eq!(live["drift"][0]["changes"][0]["pointer"], "/spec/replicas", "{live}");
    let out = keelson(&["diff", "order-worker", "--server", &d.url], tmp.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "drift exits 1: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("sim:Workload/payments/order-worker"), "{text}");
    assert!(text.contains("/spec/replicas: live 9 → git 2"), "{text}");
    let out = keelson(&["diff", "--server", &d.url, "-o", "json"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let apps: Vec<&str> = json["apps"].as_array().unwrap().iter().map(|a| a["app"].as_str().unwrap()).collect();
    assert_eq!(apps, ["order-worker"], "storefront was healed: {json}");
    std::thread::sleep(Duration::from_secs(3));
    let drifts = actions(&d, "order-worker").iter().filter(|(a, _)| a == "drift").count();
    assert_eq!(drifts, 1, "recorded once, however often it is looked at");
    let status = d.json("/api/v1/status");
    assert_eq!(status["drifted"], serde_json::json!(["order-worker"]), "{status}");
    let out = keelson(&["diff", "storefront", "--server", &d.url], tmp.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(d.terminate(), 0);
}

/// `keelson daemon --dry-run` beside a provider that rejects every apply and delete: every app is
/// planned (marked as a dry run), nothing is applied, a removal is planned and nothing deleted.
#[test]
fn a_dry_run_daemon_plans_every_app_and_never_applies_or_deletes() {
    let (tmp, repo) = template_repo();
    let config = tmp.path().join("keelson.yaml");
    let names = "[postgres, storefront, order-worker, llm-inference]";
    std::fs::write(
        &config,
        format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  repo: {}\napi:\n  listen: 127.0.0.1:0\n\
             providers:\n  lab:\n    type: sim\n    faults:\n      failApply: {names}\n      failDelete: {names}\n\
             clusters:\n  prod-east:\n    workloads: lab\n  gpu-lab:\n    workloads: lab\n",
            repo.display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&["daemon", "--config", config.to_str().unwrap(), "--dry-run"], tmp.path());
    let planned = |d: &Daemon, want: usize| {
        let apps = d.json("/api/v1/apps");
        let list = apps["apps"].as_array()?.clone();
        (list.len() == want && list.iter().all(|a| a["phase"] == "Planned")).then_some(list)
    };
    let apps = d.wait_for("every app planned", Duration::from_secs(60), |d| planned(d, 4));
    assert!(apps.iter().all(|a| a["reason"] == "DryRun"), "{apps:?}");
    for app in ["postgres", "storefront", "order-worker", "llm-inference"] {
        let history = actions(&d, app);
        let kinds: Vec<&str> = history.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(kinds, ["plan"], "{app}: only planned, no intent");
        assert_eq!(history[0].1["dryRun"], true, "{app}");
    }
    git(&repo, &["rm", "-rq", "apps/order-worker"]);
    git(&repo, &["commit", "-qm", "Retire order-worker"]);
    d.wait_for("order-worker's removal planned", Duration::from_secs(30), |d| {
        d.app("order-worker").filter(|a| a["reason"] == "DryRunPrune").map(|_| ())
    });
    std::thread::sleep(Duration::from_millis(500));
    let log = d.log();
    assert!(!log.contains("injected fault"), "no apply or delete reached the provider:\n{log}");
    assert_eq!(actions(&d, "order-worker").len(), 2);
    assert_eq!(d.terminate(), 0);
}
