//! One test (at least) per verb of the real binary: help, exit codes, init, validate, plan, status, audit.

use std::time::Duration;

use keelson_e2e::{Daemon, edit, git, keelson, template_repo};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_verb_has_help_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for verb in [
        &["--help"][..],
        &["up", "--help"],
        &["daemon", "--help"],
        &["init", "--help"],
        &["validate", "--help"],
        &["plan", "--help"],
        &["status", "--help"],
        &["get", "apps", "--help"],
        &["get", "app", "--help"],
        &["history", "--help"],
        &["wait", "--help"],
        &["completion", "--help"],
        &["version", "--help"],
        &["audit", "--help"],
        &["audit", "verify", "--help"],
        &["audit", "log", "--help"],
        &["audit", "export", "--help"],
        &["schema", "--help"],
    ] {
        let out = keelson(verb, dir.path());
        assert!(out.status.success(), "{verb:?}: {}", stderr(&out));
        assert!(stdout(&out).contains("Usage:"), "{verb:?}");
    }
    assert_eq!(keelson(&["frobnicate"], dir.path()).status.code(), Some(2));
    assert_eq!(keelson(&["daemon"], dir.path()).status.code(), Some(2), "missing --repo is a usage error");
    assert_eq!(keelson(&["up", "--listen", "nowhere"], dir.path()).status.code(), Some(2));
}

#[test]
fn init_makes_one_commit_on_main_and_refuses_a_non_empty_dir() {
    let (tmp, repo) = template_repo();
    assert_eq!(git(&repo, &["rev-list", "--count", "main"]), "1");
    assert_eq!(git(&repo, &["symbolic-ref", "--short", "HEAD"]), "main");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "work tree matches the commit");
    assert!(repo.join("apps/storefront/deploy.yaml").is_file());
    let again = keelson(&["init", repo.to_str().unwrap()], tmp.path());
    assert_eq!(again.status.code(), Some(2), "an error that stops the command");
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
}

#[test]
fn validate_passes_the_template_and_reports_file_line_col() {
    let (tmp, repo) = template_repo();
    let ok = keelson(&["validate", repo.to_str().unwrap()], tmp.path());
    assert!(ok.status.success(), "{}{}", stdout(&ok), stderr(&ok));
    // The template validates clean: no error and no warning (nothing it uses is unbuilt).
    assert!(stderr(&ok).contains(": 0 errors, 0 warnings"), "{}{}", stdout(&ok), stderr(&ok));
    edit(&repo.join("apps/order-worker/deploy.yaml"), "replicas: 2", "replicas: two");
    let bad = keelson(&["validate", repo.to_str().unwrap()], tmp.path());
    assert_eq!(bad.status.code(), Some(1));
    let text = stdout(&bad);
    let line = text.lines().find(|l| l.contains("order-worker/deploy.yaml")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("apps/order-worker/deploy.yaml:10:13: error:"), "{line}");
    let json = keelson(&["validate", repo.to_str().unwrap(), "--format", "json"], tmp.path());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(v["errors"].as_u64().unwrap() >= 1);
    assert_eq!(v["diagnostics"][0]["line"], 10);
}

#[test]
fn plan_shows_added_changed_and_removed_apps() {
    let (tmp, repo) = template_repo();
    git(&repo, &["checkout", "-qb", "change"]);
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 6");
    git(&repo, &["rm", "-rq", "apps/order-worker"]);
    std::fs::create_dir_all(repo.join("apps/search")).unwrap();
    let search = std::fs::read_to_string(repo.join("apps/postgres/deploy.yaml"))
        .unwrap()
        .replace("name: postgres", "name: search");
    std::fs::write(repo.join("apps/search/deploy.yaml"), search).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "change"]);
    let r = repo.to_str().unwrap();
    let text = keelson(&["plan", "--repo", r, "--base", "main", "--head", "change"], tmp.path());
    assert!(text.status.success(), "{}", stderr(&text));
    let out = stdout(&text);
    assert!(out.contains("~ storefront"), "{out}");
    assert!(out.contains("/spec/replicas: 3 → 6"), "{out}");
    assert!(out.contains("- order-worker"), "{out}");
    assert!(out.contains("+ search"), "{out}");
    assert!(out.contains("5 apps: 1 to add, 1 to change, 1 to remove, 2 unchanged, 0 invalid"), "{out}");
    let md = stdout(&keelson(
        &["plan", "--repo", r, "--base", "main", "--head", "change", "--format", "markdown"],
        tmp.path(),
    ));
    assert!(md.starts_with("### Keelson plan"), "{md}");
    assert!(md.contains("| &#126; | <code>storefront</code> |"), "{md}");
    let json = keelson(&["plan", "--repo", r, "--base", "main", "--head", "change", "--format", "json"], tmp.path());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["changes"].as_array().unwrap().len(), 3);
    let unknown = keelson(&["plan", "--repo", r, "--base", "nope"], tmp.path());
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("nope"));
}

#[test]
fn status_and_audit_verbs_against_a_running_daemon() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d =
        Daemon::start(&["daemon", "--repo", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms"], tmp.path());
    d.wait_for("postgres Healthy", Duration::from_secs(60), |d| {
        d.app("postgres").filter(|a| a["phase"] == "Healthy").map(|_| ())
    });
    let status = keelson(&["status", "--server", &d.url], tmp.path());
    assert!(status.status.success(), "{}", stderr(&status));
    let table = stdout(&status);
    assert!(table.starts_with("APP"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("postgres") && l.contains("Healthy")), "{table}");
    assert_eq!(d.terminate(), 0);

    let log = keelson(&["audit", "log", "--repo", r, "--app", "postgres"], tmp.path());
    assert!(log.status.success(), "{}", stderr(&log));
    assert!(stdout(&log).contains("Planned → Progressing"), "{}", stdout(&log));
    let export = tmp.path().join("export.jsonl");
    let ex = keelson(&["audit", "export", "--repo", r, export.to_str().unwrap()], tmp.path());
    assert!(ex.status.success(), "{}", stderr(&ex));
    let verify = keelson(&["audit", "verify", "--repo", r, "--file", export.to_str().unwrap()], tmp.path());
    assert!(verify.status.success(), "{}{}", stdout(&verify), stderr(&verify));
    // With no arguments, the current directory is the repository (as for `plan` and `validate`),
    // and its status branch is cross-checked.
    let here = keelson(&["audit", "verify", "--format", "json"], &repo);
    assert!(here.status.success(), "{}{}", stdout(&here), stderr(&here));
    let report: serde_json::Value = serde_json::from_slice(&here.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert!(report["anchors_checked"].as_u64().or(report["anchorsChecked"].as_u64()).unwrap() > 0, "{report}");
    let nothing = keelson(&["status", "--server", "http://127.0.0.1:9"], tmp.path());
    assert_eq!(nothing.status.code(), Some(2));
    assert!(stderr(&nothing).contains("keelson up"), "{}", stderr(&nothing));
}

#[test]
fn schema_prints_each_kind_and_names_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    let list = keelson(&["schema"], dir.path());
    assert!(stdout(&list).contains("App"), "{}", stdout(&list));
    for kind in ["App", "policy", "CONFIG"] {
        let out = keelson(&["schema", kind], dir.path());
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(schema["$schema"].as_str().unwrap().contains("2020-12"), "{kind}");
    }
    let bad = keelson(&["schema", "Deployment"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("App, Policy, Config"), "{}", stderr(&bad));
}

/// A setting that is accepted but not carried out is an error when ignoring it is unsafe (a
/// canary would roll out all at once) and a warning otherwise, in every form of `validate`.
#[test]
fn validate_refuses_unbuilt_strategies_and_warns_about_unbuilt_settings() {
    let (tmp, repo) = template_repo();
    let file = repo.join("apps/storefront/deploy.yaml");
    edit(&file, "    type: direct", "    type: canary\n    steps: [10, 50, 100]");
    for target in [repo.clone(), file.clone()] {
        let out = keelson(&["validate", target.to_str().unwrap()], tmp.path());
        assert_eq!(out.status.code(), Some(1), "{}{}", stdout(&out), stderr(&out));
        let text = stdout(&out);
        let line = text.lines().find(|l| l.contains("/spec/strategy/type")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("apps/storefront/deploy.yaml:21:5: error:"), "{line}");
        assert!(line.contains("is not built"), "{line}");
    }
    edit(&file, "    type: canary\n    steps: [10, 50, 100]", "    type: direct");
    edit(&file, "    type: direct", "    type: direct\n    interval: 30s");
    let out = keelson(&["validate", repo.to_str().unwrap(), "--format", "json"], tmp.path());
    assert!(out.status.success(), "a warning does not fail validation: {}", stdout(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"], 1, "{v}");
    assert_eq!(v["diagnostics"][0]["rule"], "not-built");
    assert_eq!(v["diagnostics"][0]["pointer"], "/spec/strategy/interval");

    let config = tmp.path().join("keelson.yaml");
    let base = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource: {repo: /srv/state}\n";
    std::fs::write(
        &config,
        format!(
            "{base}concurrency: 4\nclusters:\n  prod: {{workloads: sim, mesh: sim}}\nproviders:\n  sim: {{type: sim}}\n"
        ),
    )
    .unwrap();
    let out = keelson(&["validate", "--config", config.to_str().unwrap()], tmp.path());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("/concurrency"), "concurrency is carried out: {text}");
    assert!(text.contains("/clusters/prod/mesh:"), "{text}");
    assert!(stderr(&out).contains("1 files checked: 0 errors, 1 warnings"), "{}", stderr(&out));
    std::fs::write(&config, format!("{base}status: {{repo: /srv/status}}\n")).unwrap();
    let out = keelson(&["validate", "--config", config.to_str().unwrap()], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("keelson.yaml:4:10: error: /status/repo:"), "{}", stdout(&out));
    // The daemon refuses the same config before doing anything, naming the field.
    let out = keelson(&["daemon", "--config", config.to_str().unwrap()], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/status/repo"), "{}", stderr(&out));
}

/// `--help` names `KEELSON_DATABASE` but never prints its value (it may hold a password), and a
/// config whose `database` is refused does not quote its password either.
#[test]
fn database_passwords_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    for verb in [&["daemon", "--help"][..], &["audit", "verify", "--help"]] {
        let out = std::process::Command::new(keelson_e2e::keelson_bin())
            .args(verb)
            .env("KEELSON_DATABASE", "postgres://keelson:hunter2@db/k?password=hunter3")
            .output()
            .unwrap();
        let text = stdout(&out);
        assert!(text.contains("KEELSON_DATABASE"), "{text}");
        assert!(!text.contains("hunter"), "{verb:?} printed the password: {text}");
    }
    let config = dir.path().join("keelson.yaml");
    std::fs::write(&config, "apiVersion: keelson.dev/v1alpha1\nkind: Config\ndatabase: mysql://keelson:hunter2@db/k\n")
        .unwrap();
    let out = keelson(&["validate", "--config", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("/database"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("hunter2"), "{}", stdout(&out));
    let out = keelson(&["daemon", "--config", config.to_str().unwrap()], dir.path());
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
}
