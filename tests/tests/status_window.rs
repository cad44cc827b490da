//! The status window on the real binary: `/metrics` after real rollouts (checked by `promtool`
//! when it is installed), the status page and an app's page, `/openapi.json` and app paging.

use std::time::Duration;

use keelson_e2e::{Daemon, metric, template_repo};

const APPS: usize = 4;

/// `promtool` on PATH, or None (SKIP by hand; under CI its absence fails).
fn promtool() -> Option<&'static str> {
    let found = std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "promtool is required under CI (apt-get install prometheus)");
        eprintln!("SKIP promtool check: promtool not found (apt-get install prometheus)");
    }
    found.then_some("promtool")
}

#[test]
fn metrics_status_page_and_openapi_after_real_rollouts() {
    let (tmp, repo) = template_repo();
    let d = Daemon::start(
        &["up", "--dir", repo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--sim-rollout-time", "500ms"],
        tmp.path(),
    );
    d.wait_all_healthy(APPS, "every template app Healthy", Duration::from_secs(90));
    // A commit made while the daemon runs is timed from its commit time to Healthy.
    keelson_e2e::edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 4");
    keelson_e2e::git(&repo, &["commit", "-qam", "Scale storefront to 4"]);
    let change = keelson_e2e::git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("storefront Healthy at the new commit", Duration::from_secs(30), |d| {
        let a = d.app("storefront")?;
        (a["desiredCommit"] == change.as_str() && a["phase"] == "Healthy").then_some(())
    });

    let (code, text) = d.get("/metrics");
    assert_eq!(code, 200);
    assert!(!text.contains("# EOF"), "classic text unless OpenMetrics is asked for: {text}");
    assert!(metric(&text, "keelson_rollout_duration_seconds_count") >= APPS as f64, "{text}");
    // At least the commit made after start (the template's, made within the daemon's first second, may count too).
    assert!(metric(&text, "keelson_commit_to_healthy_seconds_count") >= 1.0, "{text}");
    assert!(metric(&text, "keelson_reconcile_duration_seconds_count") >= APPS as f64, "{text}");
    assert!(metric(&text, "keelson_provider_call_duration_seconds_count") >= APPS as f64, "{text}");
    assert!(
        text.contains(
            "keelson_app_info{app=\"storefront\",phase=\"Healthy\",sync_status=\"Synced\",team=\"web\",cluster=\"prod-east\"} 1"
        ),
        "{text}"
    );
    assert!(metric(&text, "keelson_last_sync_timestamp_seconds") > 1.0e9, "{text}");
    assert!(metric(&text, "process_resident_memory_bytes") > 0.0, "{text}");
    if let Some(promtool) = promtool() {
        use std::io::Write;
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n---\n{text}");
    }

    let (code, page) = d.get("/?team=web");
    assert_eq!(code, 200);
    assert!(page.contains("<a href=\"/apps/storefront\">storefront</a>"), "{page}");
    assert!(!page.contains("/apps/postgres\""), "filtered by team: {page}");
    let (code, page) = d.get("/apps/storefront");
    assert_eq!(code, 200);
    assert!(page.contains("<h2>History</h2>") && page.contains("→ <span class=\"Healthy\">Healthy</span>"), "{page}");

    let doc = d.json("/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    let page = d.json("/api/v1/apps?limit=3");
    assert_eq!(page["apps"].as_array().unwrap().len(), 3);
    let rest = d.json(&format!("/api/v1/apps?limit=3&next={}", page["next"].as_str().unwrap()));
    assert_eq!(rest["apps"].as_array().unwrap().len(), APPS - 3);
    assert!(rest.get("next").is_none(), "{rest}");

    assert_eq!(d.terminate(), 0);
}

/// Schemathesis (PyPI; `scripts/test` installs it into `target/schemathesis-venv`) fuzzes every
/// route against `/openapi.json` for at most 60 s (90 s with its start): no 5xx, every response
/// as documented, every schema-valid request accepted.
#[test]
fn schemathesis_finds_nothing_against_the_openapi_document() {
    let st = std::env::var_os("KEELSON_TEST_SCHEMATHESIS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| keelson_e2e::workspace_root().join("target/schemathesis-venv/bin/st"));
    if !st.exists() {
        assert!(std::env::var_os("CI").is_none(), "schemathesis is required under CI ({} is missing)", st.display());
        eprintln!("SKIP schemathesis: {} is missing (scripts/test installs it)", st.display());
        return;
    }
    let (tmp, repo) = template_repo();
    let d = Daemon::start(
        &["up", "--dir", repo.to_str().unwrap(), "--listen", "127.0.0.1:0", "--sim-rollout-time", "500ms"],
        tmp.path(),
    );
    d.wait_all_healthy(APPS, "every template app Healthy", Duration::from_secs(90));
    let (code, _) = d.get("/api/v1/audit/verify");
    assert_eq!(code, 200);
    let work = tempfile::tempdir().unwrap();
    let schema = format!("{}/openapi.json", d.url);
    let mut child = std::process::Command::new(&st)
        .args(["--no-color", "run", &schema, "--max-time", "60", "--max-examples", "30"])
        .current_dir(work.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let status = status.unwrap_or_else(|| panic!("schemathesis ran over 90 s:\n{said}"));
    assert!(status.success(), "schemathesis found problems:\n{said}");
    let summary: Vec<&str> = said.lines().filter(|l| l.contains("generated") || l.contains("Tested:")).collect();
    eprintln!("schemathesis: {}", summary.join("; ").trim());
    assert_eq!(d.terminate(), 0);
}
