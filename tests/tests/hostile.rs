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
    history["entries"].as_array().unwrap().iter().any(|e| e["toState"] == "Deleted")
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
