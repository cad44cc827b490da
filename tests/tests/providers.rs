//! Provider contract v2 end to end: instances from config, deadlines that fail only the apps on a
//! hung instance, the default `sim` binding said out loud, `keelson provider test`, and
//! `keelson validate --config` checking cluster roles.

use std::time::Duration;

use std::path::{Path, PathBuf};

use keelson_e2e::{Daemon, git, keelson, template_repo};

/// A config binding prod-east to a sim instance `lab` and gpu-lab (llm-inference) to an instance
/// `stuck` whose applies never answer (each ended by its `timeout`).
fn hung_instance_config(dir: &Path, repo: &Path, rollout: &str, timeout: &str) -> PathBuf {
    let config = dir.join("keelson.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  repo: {}\napi:\n  listen: 127.0.0.1:0\n\
             providers:\n  lab:\n    type: sim\n    rolloutTime: {rollout}\n  stuck:\n    type: sim\n    timeout: {timeout}\n    \
             faults:\n      hang: [apply]\nclusters:\n  prod-east:\n    workloads: lab\n  gpu-lab:\n    workloads: stuck\n",
            repo.display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn a_hung_instance_fails_only_its_apps_with_a_transient_error_that_is_retried() {
    let (tmp, repo) = template_repo();
    let config = hung_instance_config(tmp.path(), &repo, "100ms", "300ms");
    let d = Daemon::start(&["daemon", "--config", config.to_str().unwrap()], tmp.path());
    for app in ["postgres", "storefront", "order-worker"] {
        d.wait_for(&format!("{app} Healthy"), Duration::from_secs(60), |d| {
            d.app(app).filter(|a| a["phase"] == "Healthy")
        });
    }
    let failed = d.wait_for("llm-inference Failed", Duration::from_secs(30), |d| {
        d.app("llm-inference").filter(|a| a["phase"] == "Failed")
    });
    let message = failed["message"].as_str().unwrap();
    assert!(message.contains("provider stuck: apply did not answer within 300ms"), "{failed}");
    assert_eq!(failed["quarantinedDigest"], serde_json::Value::Null, "a transient failure is not quarantined");

    // Transient: tried again after a backoff (1 s, then 2 s), each attempt recorded.
    d.wait_for("a second attempt", Duration::from_secs(30), |d| {
        let history = d.json("/api/v1/apps/llm-inference/history");
        let failures = history["entries"].as_array()?.iter().filter(|e| e["action"] == "failed").count();
        (failures >= 2).then_some(())
    });
    let status = d.json("/api/v1/status");
    let providers = &status["providers"];
    assert_eq!(providers["simulated"], false, "{providers}");
    let instances = providers["instances"].as_array().unwrap();
    let stuck = instances.iter().find(|i| i["name"] == "stuck").expect("the stuck instance is listed");
    assert_eq!(stuck["timeoutMs"], 300);
    assert_eq!(providers["bindings"]["clusters"]["gpu-lab"]["workloads"], "stuck");
    assert_eq!(d.terminate(), 0);
}

/// The work queue runs apps apart: while one instance holds an apply for its whole deadline, a
/// commit to an app on another instance is applied and healthy, and the daemon still stops on time.
#[test]
fn a_commit_is_applied_while_another_instance_holds_a_call() {
    let (tmp, repo) = template_repo();
    let config = hung_instance_config(tmp.path(), &repo, "0ms", "120s");
    let args = ["daemon", "--config", config.to_str().unwrap(), "--shutdown-timeout", "2s"];
    let d = Daemon::start(&args, tmp.path());
    d.wait_for("storefront Healthy", Duration::from_secs(60), |d| {
        d.app("storefront").filter(|a| a["phase"] == "Healthy")
    });
    d.wait_for("llm-inference's apply in flight", Duration::from_secs(30), |d| {
        let history = d.json("/api/v1/apps/llm-inference/history");
        history["entries"].as_array()?.iter().any(|e| e["action"] == "intent").then_some(())
    });

    keelson_e2e::edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 4");
    git(&repo, &["commit", "-qam", "Scale storefront to 4"]);
    let change = git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("storefront Healthy at the new commit", Duration::from_secs(30), |d| {
        let a = d.app("storefront")?;
        (a["desiredCommit"] == change.as_str() && a["phase"] == "Healthy").then_some(())
    });
    let stuck = d.app("llm-inference").expect("llm-inference is listed");
    assert_eq!(stuck["phase"], "Progressing", "its apply is still held by the hung instance: {stuck}");
    assert_eq!(d.terminate_within(Duration::from_secs(20)), 0);
}

#[test]
fn without_providers_every_cluster_runs_on_the_simulator_and_the_daemon_says_so() {
    let (tmp, repo) = template_repo();
    let args = ["up", "--dir", repo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--sim-rollout-time", "100ms"];
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    let status = d.json("/api/v1/status");
    let providers = &status["providers"];
    assert_eq!(providers["simulated"], true, "{providers}");
    assert_eq!(providers["bindings"]["default"], "sim", "{providers}");
    let message = providers["message"].as_str().unwrap();
    assert!(message.contains("built-in simulator (sim) in every role"), "{message}");
    assert!(d.log().contains(message), "the log says it too:\n{}", d.log());
    let app = d.app("storefront").unwrap();
    let inventory = app["inventory"].as_array().unwrap();
    assert_eq!(inventory.len(), 2, "a Workload and a Route: {app}");

    // Prune deletes exactly the inventory the ledger recorded, in the simulator's own database.
    let sim_db = repo.join(".keelson/sim.db");
    let owned = |app: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(&sim_db)
            .arg(format!("SELECT count(*) FROM resources WHERE owner = '{app}'"))
            .output()
            .expect("sqlite3 CLI");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(owned("order-worker"), "1");
    git(&repo, &["rm", "-rq", "apps/order-worker"]);
    git(&repo, &["commit", "-qm", "Retire order-worker"]);
    d.wait_for("order-worker pruned", Duration::from_secs(30), |d| d.app("order-worker").is_none().then_some(()));
    assert_eq!(owned("order-worker"), "0");
    assert_eq!(owned("storefront"), "2", "nothing else was touched");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn provider_test_passes_the_sim_and_fails_a_broken_instance_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keelson(&["provider", "test"], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("conformance of sim (sim "), "{stdout}");
    assert!(stdout.contains("46 of 46 checks passed"), "{stdout}");

    let config = tmp.path().join("keelson.yaml");
    std::fs::write(
        &config,
        "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  broken:\n    type: sim\n    \
         faults:\n      failApply: [keelson-conformance-route]\n  fine:\n    type: sim\n",
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let out = keelson(&["provider", "test", "--config", c], tmp.path());
    // An error that stops the command.
    assert_eq!(out.status.code(), Some(2), "two instances: say which");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--instance (broken, fine)"));

    let out = keelson(&["provider", "test", "--config", c, "--instance", "broken", "-o", "json"], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| format!("{}/{}", c["kind"].as_str().unwrap(), c["name"].as_str().unwrap()))
        .collect();
    assert!(failed.contains(&"Route/create".to_owned()), "{failed:?}");
    assert!(failed.iter().all(|f| f.starts_with("Route/")), "only the Route checks fail: {failed:?}");
    assert_eq!(report["instance"], "broken");

    let out = keelson(&["provider", "test", "--config", c, "--instance", "nope"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no provider instance \"nope\""));

    let out = keelson(&["provider", "types"], tmp.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sim "), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn validate_with_a_config_names_the_app_the_cluster_and_the_missing_role() {
    // (A cluster lacking a mesh for a canary is checked too, in keelson-provider-api's tests; canary
    // strategies are refused as not built yet, so a valid app can only miss its workloads role.)
    let (tmp, repo) = template_repo();
    let config = tmp.path().join("keelson.yaml");
    std::fs::write(
        &config,
        "apiVersion: keelson.dev/v1alpha1\nkind: Config\nproviders:\n  lab:\n    type: sim\n\
         clusters:\n  prod-east:\n    workloads: lab\n",
    )
    .unwrap();
    let out = keelson(&["validate", repo.to_str().unwrap(), "--config", config.to_str().unwrap()], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let lines: Vec<&str> =
        stdout.lines().filter(|l| l.contains("config.missing-role") || l.contains("is not bound")).collect();
    assert_eq!(lines.len(), 1, "only llm-inference runs on the unbound gpu-lab:\n{stdout}");
    let line = lines[0];
    assert!(line.contains("apps/llm-inference/deploy.yaml:18:14: error: /spec/placement/cluster"), "{line}");
    assert!(line.contains("app llm-inference") && line.contains("\"gpu-lab\" is not bound"), "{line}");
    assert!(line.contains("hint: bind `clusters.gpu-lab.workloads`"), "{line}");
}
