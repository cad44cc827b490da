//! One instance per directory, graceful shutdown that drains the outbox, and resuming after a stop.

use std::time::Duration;

use keelson_e2e::{Daemon, git, keelson, template_repo};

fn ledger_head(d: &Daemon) -> i64 {
    let audit = d.json("/api/v1/audit?limit=10000");
    audit["entries"].as_array().unwrap().last().map_or(0, |e| e["seq"].as_i64().unwrap())
}

#[test]
fn second_instance_is_refused_sigterm_drains_and_restart_resumes() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    // One worker: the four apps are reconciled one after another.
    let args = ["up", "--dir", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms", "--concurrency", "1"];
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));

    let second = keelson(&args, tmp.path());
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("already running"), "{err}");

    let head = ledger_head(&d);
    assert_eq!(d.terminate(), 0);
    let tip = git(&repo, &["log", "-1", "keelson/status", "--format=%B"]);
    let last_trailer = tip.lines().filter_map(|l| l.strip_prefix("Keelson-Audit: ")).next_back().unwrap();
    assert!(last_trailer.starts_with(&format!("{head} ")), "status branch ends at the ledger head {head}: {tip}");

    // The next start resumes: nothing is rolled out again, and new commits still flow.
    let d = Daemon::start(&args, tmp.path());
    d.wait_for("ready", Duration::from_secs(30), |d| (d.get("/readyz").0 == 200).then_some(()));
    let apps = d.json("/api/v1/apps");
    assert!(apps["apps"].as_array().unwrap().iter().all(|a| a["phase"] == "Healthy"), "{apps}");
    assert_eq!(ledger_head(&d), head, "no transitions for unchanged apps after a restart");
    git(&repo, &["rm", "-rq", "apps/order-worker"]);
    git(&repo, &["commit", "-qm", "Retire order-worker"]);
    d.wait_for("order-worker pruned", Duration::from_secs(30), |d| d.app("order-worker").is_none().then_some(()));
    let history = d.json("/api/v1/apps/order-worker/history");
    let last = history["entries"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["to"], "Deleted", "{last}");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_sigkill_between_append_and_status_commit_loses_nothing() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let args = ["up", "--dir", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms"];
    let d = Daemon::start(&args, tmp.path());
    d.wait_for("some transitions", Duration::from_secs(60), |d| (ledger_head(d) >= 8).then_some(()));
    d.kill();
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    let verify = d.json("/api/v1/audit/verify");
    assert_eq!(verify["ok"], true, "{verify}");
    let head = ledger_head(&d);
    assert_eq!(d.terminate(), 0);
    let verify = keelson(&["audit", "verify", "--repo", r], tmp.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    let trailers = git(&repo, &["log", "keelson/status", "--format=%B"]).matches("Keelson-Audit: ").count();
    assert_eq!(trailers as i64, head, "every entry is on the status branch exactly once");
}

#[test]
fn daemon_reads_a_config_file_and_refuses_what_it_cannot_honour() {
    let (tmp, repo) = template_repo();
    let config = tmp.path().join("keelson.yaml");
    let write = |extra: &str| {
        std::fs::write(
            &config,
            format!(
                "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  repo: {}\n  branch: main\n{extra}\
                 api:\n  listen: 127.0.0.1:0\nproviders:\n  lab:\n    type: sim\nclusters:\n  prod-east:\n    workloads: lab\n  gpu-lab:\n    workloads: lab\n",
                repo.display()
            ),
        )
        .unwrap();
    };
    write("");
    let c = config.to_str().unwrap();
    let d = Daemon::start(&["daemon", "--config", c, "--sim-rollout-time", "100ms"], tmp.path());
    let app = d.wait_for("postgres Healthy", Duration::from_secs(60), |d| {
        d.app("postgres").filter(|a| a["phase"] == "Healthy")
    });
    assert_eq!(app["instance"], "lab", "the cluster is bound to the configured instance");
    assert_eq!(d.terminate(), 0);

    write("  requireSignedCommits: true\n");
    let out = keelson(&["daemon", "--config", c], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("requireSignedCommits"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::write(&config, "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsorce:\n  repo: x\n").unwrap();
    let out = keelson(&["daemon", "--config", c], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keelson.yaml:3:1"), "names the file, line and column: {err}");

    std::fs::write(&config, format!("apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  repo: {}\nproviders:\n  k8s:\n    type: istio\n", repo.display())).unwrap();
    let out = keelson(&["daemon", "--config", c], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("keelson.yaml:7:11: error: /providers/k8s/type: provider `k8s`: unknown provider type \"istio\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
