//! A hostile or careless repository (issue 9): links where manifests belong, renamed app
//! directories, invalid dependencies. Nothing that runs is pruned because of them, nothing outside
//! the repository is read, and the API says what is true.

use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, template_repo};

const LIMIT: Duration = Duration::from_secs(60);

fn commit(repo: &std::path::Path, message: &str) {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", message]);
}

fn deleted(d: &Daemon, app: &str) -> bool {
    let history = d.json(&format!("/api/v1/apps/{app}/history?limit=10000"));
    history["entries"].as_array().unwrap().iter().any(|e| e["to"] == "Deleted")
}

#[test]
fn links_renames_and_invalid_dependencies_hold_apps_instead_of_pruning_them() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let args = ["up", "--dir", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms"];
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", LIMIT);

    // 1. deploy.yaml replaced by a link to a file outside the repository.
    let secret = tmp.path().join("secret.yaml");
    std::fs::write(&secret, "TOPSECRET-credentials: hunter2\n").unwrap();
    let deploy = repo.join("apps/storefront/deploy.yaml");
    let original = std::fs::read(&deploy).unwrap();
    std::fs::remove_file(&deploy).unwrap();
    std::os::unix::fs::symlink(&secret, &deploy).unwrap();
    for target in [repo.clone(), deploy.clone()] {
        let out = keelson(&["validate", target.to_str().unwrap()], tmp.path());
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "validate {}: {text}", target.display());
        assert!(text.contains("storefront/deploy.yaml:1:1: error:") && text.contains("symbolic link"), "{text}");
        assert!(!text.contains("TOPSECRET"), "validate read through the link: {text}");
    }
    commit(&repo, "Link storefront's manifest");
    let held = d.wait_for("storefront held", LIMIT, |d| {
        d.app("storefront").filter(|a| a["phase"] == "Blocked" && a["reason"] == "InvalidManifest")
    });
    assert!(held["message"].as_str().unwrap().contains("symbolic link"), "{held}");
    assert!(!deleted(&d, "storefront"), "a linked manifest pruned the running app");
    assert!(!d.json("/api/v1/status").to_string().contains("TOPSECRET"));

    std::fs::remove_file(&deploy).unwrap();
    std::fs::write(&deploy, original).unwrap();
    commit(&repo, "Storefront's manifest back");
    d.wait_all_healthy(4, "four apps Healthy again", LIMIT);

    // 2. An app directory renamed without its name: the app is held until the two agree.
    std::fs::rename(repo.join("apps/order-worker"), repo.join("apps/orders")).unwrap();
    commit(&repo, "Rename the order-worker directory");
    let held = d.wait_for("order-worker held", LIMIT, |d| {
        d.app("order-worker").filter(|a| a["phase"] == "Blocked" && a["reason"] == "InvalidManifest")
    });
    assert!(held["message"].as_str().unwrap().contains("apps/orders/deploy.yaml"), "{held}");
    assert!(!deleted(&d, "order-worker"), "renaming a directory pruned the running app");

    // 3. A change waiting on a dependency that is invalid says so, and is not "in sync".
    edit(&repo.join("apps/postgres/deploy.yaml"), "replicas: 1", "replicas: one");
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 4");
    commit(&repo, "Break postgres, scale storefront");
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let waiting =
        d.wait_for("storefront waiting", LIMIT, |d| d.app("storefront").filter(|a| a["wantedCommit"] == head.as_str()));
    assert_eq!(waiting["inSync"], false, "{waiting}");
    assert_eq!(waiting["reason"], "DependencyNotReady", "{waiting}");
    let message = waiting["message"].as_str().unwrap();
    assert!(message.contains("postgres") && message.contains("invalid"), "{message}");
    assert!(!message.contains("not in the repository"), "{message}");
    assert_eq!(d.terminate(), 0);
}

/// A rule over its time limit blocks the apps it is slow for, naming the rule; the daemon does not
/// evaluate it again until something changes, and the rest of the fleet is reached (one slow app
/// holds one worker, not the engine).
#[test]
fn a_slow_rego_rule_blocks_its_apps_and_the_rest_of_the_fleet_proceeds() {
    let (tmp, repo) = template_repo();
    let slow = "package keelson.slow\n\nimport rego.v1\n\n\
                deny contains \"never\" if {\n  input.app.metadata.name in {\"llm-inference\", \"postgres\"}\n  \
                count([x | some a in numbers.range(1, 4000); some b in numbers.range(1, 4000); x := a * b]) < 0\n}\n";
    std::fs::write(repo.join("policies/slow.rego"), slow).unwrap();
    edit(
        &repo.join("policies/guardrails.yaml"),
        "    - policies/defaults.rego",
        "    - policies/defaults.rego\n    - policies/slow.rego",
    );
    // An app after the slow ones in dependency order, depending on nothing.
    let zcache = std::fs::read_to_string(repo.join("apps/postgres/deploy.yaml"))
        .unwrap()
        .replace("name: postgres", "name: zcache");
    std::fs::create_dir_all(repo.join("apps/zcache")).unwrap();
    std::fs::write(repo.join("apps/zcache/deploy.yaml"), zcache).unwrap();
    commit(&repo, "A slow rule");
    let r = repo.to_str().unwrap();
    let args = [
        "up",
        "--dir",
        r,
        "--listen",
        "127.0.0.1:0",
        "--sim-rollout-time",
        "200ms",
        "--concurrency",
        "2",
        "--log-level",
        "info,keelson::engine=debug",
    ];
    let d = Daemon::start(&args, tmp.path());
    d.wait_for("zcache Healthy", LIMIT, |d| d.app("zcache").filter(|a| a["phase"] == "Healthy"));
    for app in ["llm-inference", "postgres"] {
        let a = d.app(app).unwrap();
        assert_eq!((a["phase"].as_str(), a["reason"].as_str()), (Some("Blocked"), Some("Policy")), "{a}");
        let message = a["message"].as_str().unwrap();
        assert!(
            message.contains("keelson.slow.deny") && message.contains("exceeded its evaluation limit"),
            "{message}"
        );
    }
    let evaluations = |d: &Daemon| {
        d.log().lines().filter(|l| l.contains("evaluating policies") && l.contains("llm-inference")).count()
    };
    let before = evaluations(&d);
    std::thread::sleep(Duration::from_secs(2)); // bounded: a window to see whether it spins
    assert_eq!(evaluations(&d), before, "a blocked app is evaluated again and again at the same commit");
    assert_eq!(d.terminate(), 0);
}

/// A commit with no apps and a deleted tracked branch are named in `/api/v1/status` (not only in
/// the log), nothing is pruned, and no absolute path of this machine appears in the API.
#[test]
fn an_empty_commit_and_a_deleted_branch_are_named_and_paths_stay_relative() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d = Daemon::start(&["up", "--dir", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms"], tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", LIMIT);
    let status = d.json("/api/v1/status");
    assert_eq!(status["source"]["repo"], "state", "{status}");
    let absolute = tmp.path().to_str().unwrap();
    for path in ["/api/v1/status", "/api/v1/apps", "/"] {
        assert!(!d.get(path).1.contains(absolute), "{path} shows an absolute path");
    }
    assert_eq!(status["source"]["warnings"], serde_json::json!([]), "{status}");

    git(&repo, &["rm", "-rq", "apps"]);
    git(&repo, &["commit", "-qm", "Remove every app"]);
    let status = d.wait_for("a warning about the empty commit", LIMIT, |d| {
        let s = d.json("/api/v1/status");
        (!s["source"]["warnings"].as_array()?.is_empty()).then_some(s)
    });
    assert!(status["source"]["warnings"][0].as_str().unwrap().contains("no apps at all"), "{status}");
    assert_eq!(status["apps"], 4, "the prune guard kept every app: {status}");

    git(&repo, &["update-ref", "-d", "refs/heads/main"]);
    let status = d.wait_for("a warning about the deleted branch", LIMIT, |d| {
        let s = d.json("/api/v1/status");
        s["source"]["warnings"][0].as_str()?.contains("does not exist").then_some(s)
    });
    assert_eq!(status["apps"], 4, "{status}");
    assert!(d.get("/").1.contains("does not exist"), "the status page names it too");
    assert_eq!(d.terminate(), 0);
}
