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

    let (code, text) = d.get("/metrics");
    assert_eq!(code, 200);
    assert!(!text.contains("# EOF"), "classic text unless OpenMetrics is asked for: {text}");
    assert!(metric(&text, "keelson_rollout_duration_seconds_count") >= APPS as f64, "{text}");
    assert!(metric(&text, "keelson_commit_to_healthy_seconds_count") >= APPS as f64, "{text}");
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
