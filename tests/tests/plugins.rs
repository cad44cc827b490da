//! External provider plugins end to end: the template repository with two apps placed on the
//! example plugin (`providers/examples/dns-records`) through a config file and the rest on `sim`;
//! the plugin process killed mid-run fails only its two apps, a commit to a `sim` app still
//! reaches Healthy, the host restarts the plugin and its apps recover with no operator action,
//! and the audit chain verifies afterwards. Also `keelson provider test --plugin` and
//! `keelson plan --config` with a plugin.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, template_repo, workspace_root};
use serde_json::Value;

fn example_plugin() -> PathBuf {
    workspace_root().join("providers/examples/dns-records/dns-records")
}

/// Pids of the processes whose command line mentions `needle` (the test's own records directory,
/// so only the plugin this test's daemon started).
fn pids_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(needle) {
            out.push(pid);
        }
    }
    out
}

fn config(tmp: &Path, repo: &Path, records: &Path) -> PathBuf {
    let path = tmp.join("keelson.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  repo: {repo}\napi:\n  listen: 127.0.0.1:0\n\
             providers:\n  lab:\n    type: sim\n    rolloutTime: 100ms\n  dns:\n    type: plugin\n    \
             command: [{plugin}, --dir, {records}]\n    timeout: 5s\n    restart:\n      backoff: 3s\n\
             clusters:\n  prod-east:\n    workloads: lab\n  gpu-lab:\n    workloads: dns\n  edge:\n    workloads: dns\n",
            repo = repo.display(),
            plugin = example_plugin().display(),
            records = records.display()
        ),
    )
    .unwrap();
    path
}

fn record(records: &Path, team: &str, name: &str) -> Option<Value> {
    let text = std::fs::read_to_string(records.join(team).join("Record").join(format!("{name}.json"))).ok()?;
    Some(serde_json::from_str(&text).expect("a record file is JSON"))
}

/// The app's ledger entries with their detail parsed.
fn history(d: &Daemon, app: &str) -> Vec<(String, Value)> {
    let h = d.json(&format!("/api/v1/apps/{app}/history"));
    h["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let detail = e["detail"].clone();
            (e["action"].as_str().unwrap_or_default().to_owned(), detail)
        })
        .collect()
}

#[test]
fn a_killed_plugin_fails_only_its_apps_and_they_recover_once_it_is_restarted() {
    let (tmp, repo) = template_repo();
    edit(&repo.join("apps/storefront/deploy.yaml"), "cluster: prod-east", "cluster: edge");
    git(&repo, &["commit", "-qam", "storefront moves to the edge cluster"]);
    let records = tmp.path().join("records");
    let config = config(tmp.path(), &repo, &records);
    let d = Daemon::start(&["daemon", "--config", config.to_str().unwrap()], tmp.path());
    d.wait_all_healthy(4, "four apps Healthy (two on the plugin, two on sim)", Duration::from_secs(90));

    // The plugin's apps are DNS records in its directory; its stderr is in the daemon's log.
    let shop = record(&records, "web", "storefront").expect("storefront's record");
    assert_eq!(shop["spec"]["fqdn"], "shop.example.com", "{shop}");
    assert_eq!(record(&records, "ml", "llm-inference").unwrap()["spec"]["fqdn"], "llm.internal.example.com");
    assert!(record(&records, "platform", "postgres").is_none(), "postgres runs on sim");
    let log = d.log();
    assert!(log.contains("dns-records 0.1.0 (protocol 1): records in"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("records in") && l.contains("plugin=dns")),
        "stderr under the plugin's name:\n{log}"
    );
    let status = d.json("/api/v1/status");
    let dns = status["providers"]["instances"].as_array().unwrap().iter().find(|i| i["name"] == "dns").cloned();
    let dns = dns.expect("the plugin instance is listed");
    assert_eq!((dns["type"].as_str(), dns["version"].as_str()), (Some("plugin"), Some("dns-records 0.1.0")), "{dns}");

    // Kill the plugin, and change one app on each side.
    let pids = pids_mentioning(records.to_str().unwrap());
    assert_eq!(pids.len(), 1, "one plugin process: {pids:?}");
    let status = std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status().unwrap();
    assert!(status.success());
    for (app, from, to) in [
        ("storefront", "storefront:1.8.2", "storefront:1.8.3"),
        ("llm-inference", "llm-inference:0.9.1", "llm-inference:0.9.2"),
        ("order-worker", "order-worker:2.3.0", "order-worker:2.3.1"),
    ] {
        edit(&repo.join(format!("apps/{app}/deploy.yaml")), from, to);
    }
    git(&repo, &["commit", "-qam", "New images for storefront, llm-inference and order-worker"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);

    // Only the plugin's apps report the error: transient, naming the instance, the plugin and the call.
    for app in ["storefront", "llm-inference"] {
        let failed = d.wait_for(&format!("{app} Failed while the plugin is down"), Duration::from_secs(30), |d| {
            d.app(app).filter(|a| a["phase"] == "Failed")
        });
        let message = failed["message"].as_str().unwrap();
        assert!(message.starts_with("provider dns: unavailable: plugin dns-records"), "{failed}");
        assert!(message.contains("signal: 9") && message.contains("render"), "{failed}");
        assert!(message.ends_with("retrying after a backoff"), "{failed}");
        assert_eq!(failed["quarantinedDigest"], Value::Null, "a transient failure is not quarantined: {failed}");
    }
    // Meanwhile a commit to a sim app still reaches Healthy.
    d.wait_for("order-worker Healthy at the new commit", Duration::from_secs(30), |d| {
        d.app("order-worker").filter(|a| a["phase"] == "Healthy" && a["desiredCommit"] == head.as_str())
    });
    assert_eq!(d.app("postgres").unwrap()["phase"], "Healthy");

    // The host restarts the plugin by itself; the apps retry after their backoff and recover.
    for app in ["storefront", "llm-inference"] {
        d.wait_for(&format!("{app} Healthy at the new commit"), Duration::from_secs(60), |d| {
            d.app(app).filter(|a| a["phase"] == "Healthy" && a["desiredCommit"] == head.as_str())
        });
        let failures: Vec<Value> =
            history(&d, app).into_iter().filter(|(action, _)| action == "failed").map(|(_, detail)| detail).collect();
        assert!(!failures.is_empty(), "{app}: the failure is in the ledger");
        assert!(failures.iter().all(|f| f["class"] == "transient" && f["reason"] == "RenderFailed"), "{failures:?}");
    }
    let owner = record(&records, "web", "storefront-owner").expect("storefront's owner record");
    assert!(owner["spec"]["values"][0].as_str().unwrap().contains("image=ghcr.io/acme/storefront:1.8.3"), "{owner}");
    let log = d.log();
    assert!(log.contains("plugin dns-records is down: it exited: signal: 9"), "{log}");
    assert_eq!(log.matches("plugin dns-records 0.1.0 started").count(), 2, "started once, restarted once:\n{log}");
    assert_eq!(pids_mentioning(records.to_str().unwrap()).len(), 1, "one plugin process again");

    assert_eq!(d.terminate(), 0);
    let out = keelson(&["audit", "verify", "--repo", repo.to_str().unwrap()], tmp.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The daemon is gone, and so is its plugin (stdin closed, then it exited).
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        pids_mentioning(records.to_str().unwrap()).is_empty()
    });
    assert!(gone, "the plugin outlived the daemon");
}

#[test]
fn provider_test_runs_the_suite_against_a_plugin_executable() {
    let tmp = tempfile::tempdir().unwrap();
    let plugin = example_plugin();
    let out = keelson(&["provider", "test", "--plugin", plugin.to_str().unwrap()], tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.starts_with("conformance of dns-records (plugin dns-records 0.1.0): 35 of 35 checks passed"),
        "{stdout}"
    );

    let broken = workspace_root().join("providers/plugin/tests/fixtures/dies-at-once.py");
    let out = keelson(&["provider", "test", "--plugin", broken.to_str().unwrap(), "-o", "json"], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checks"][0]["name"], "describe");
    assert_eq!(report["checks"][0]["passed"], false);
    assert!(report["checks"][0]["message"].as_str().unwrap().contains("exit status: 3"), "{report}");

    let out = keelson(&["provider", "test", "--plugin", "x", "--instance", "y"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "--plugin and --instance do not go together");
}

#[test]
fn plan_renders_through_a_plugin() {
    let (tmp, repo) = template_repo();
    let base = git(&repo, &["rev-parse", "HEAD"]);
    edit(&repo.join("apps/llm-inference/deploy.yaml"), "llm.internal.example.com", "llm.example.com");
    git(&repo, &["commit", "-qam", "llm-inference gets a public name"]);
    let records = tmp.path().join("records");
    let config = config(tmp.path(), &repo, &records);
    let args = ["plan", "--repo", repo.to_str().unwrap(), "--base", &base, "--config", config.to_str().unwrap()];
    let out = keelson(&args, tmp.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("llm-inference"), "{stdout}");
    assert!(stdout.contains("dns:Record/ml/llm-inference"), "the plugin's objects: {stdout}");
    assert!(stdout.contains("llm.example.com"), "{stdout}");
    assert!(!records.exists(), "plan renders only: the plugin wrote nothing");
}
