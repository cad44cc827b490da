use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use super::*;
use crate::engine::state::{AppStatus, Phase};
use crate::ledger::{NewEntry, RolloutRef};

async fn state() -> (tempfile::TempDir, ApiState) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(&dir.path().join("k.db").display().to_string()).await.unwrap();
    let mut fleet = Fleet::default();
    fleet.apps.insert("web".into(), AppStatus { phase: Phase::Healthy, in_sync: true, ..AppStatus::pending("web") });
    let state = ApiState {
        fleet: Arc::new(RwLock::new(fleet)),
        ledger,
        metrics: Arc::new(Metrics::new()),
        status_branch: None,
        engine: Default::default(),
    };
    (dir, state)
}

async fn call(state: &ApiState, method: &str, uri: &str) -> (StatusCode, serde_json::Value) {
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let resp = router(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn every_write_method_on_any_path_is_405_with_a_json_body() {
    let (_d, s) = state().await;
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
        for path in ["/api/v1/apps/web", "/nope", "/metrics"] {
            let (code, body) = call(&s, method, path).await;
            assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(body["error"]["status"], 405);
        }
    }
}

#[tokio::test]
async fn unknown_paths_and_apps_are_404_json() {
    let (_d, s) = state().await;
    let (code, body) = call(&s, "GET", "/api/v2/whatever").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"]["message"].as_str().unwrap().contains("/api/v2/whatever"));
    let (code, _) = call(&s, "GET", "/api/v1/apps/missing").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn readyz_waits_for_the_first_reconcile() {
    let (_d, s) = state().await;
    assert_eq!(call(&s, "GET", "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    s.fleet.write().unwrap().source.ready = true;
    assert_eq!(call(&s, "GET", "/readyz").await.0, StatusCode::OK);
    assert_eq!(call(&s, "HEAD", "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn apps_status_audit_and_verify() {
    let (_d, s) = state().await;
    let (code, body) = call(&s, "GET", "/api/v1/apps/web").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["phase"], "Healthy");
    assert_eq!(body["inSync"], true);
    let (_, body) = call(&s, "GET", "/api/v1/status").await;
    assert_eq!(body["phases"]["Healthy"], 1);
    for i in 0..3 {
        s.ledger
            .append(NewEntry {
                app: if i == 1 { "db".into() } else { "web".into() },
                desired_commit: "c".repeat(40),
                desired_digest: "sha256:1".into(),
                rollout: Some(RolloutRef::StartsHere),
                from_state: "Pending".into(),
                to_state: "Planned".into(),
                action: "plan".into(),
                actor: "test".into(),
                detail: serde_json::json!({}),
            })
            .await
            .unwrap();
    }
    let (_, body) = call(&s, "GET", "/api/v1/audit?app=web").await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 2);
    let (_, body) = call(&s, "GET", "/api/v1/audit?since=1&limit=1").await;
    assert_eq!(body["entries"][0]["seq"], 2);
    let (_, body) = call(&s, "GET", "/api/v1/apps/web/history").await;
    assert_eq!(body["entries"].as_array().unwrap().len(), 2);
    let (code, body) = call(&s, "GET", "/api/v1/audit?limit=0").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, _) = call(&s, "GET", "/api/v1/audit?since=yesterday").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, body) = call(&s, "GET", "/api/v1/audit/verify").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["ok"], true);
    assert_eq!(body["entries"], 3);
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let (_d, s) = state().await;
    s.metrics.transition("Healthy", 7);
    let req = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
    let resp = router(s.clone()).oneshot(req).await.unwrap();
    let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("keelson_transitions_total{to=\"Healthy\"} 1"), "{text}");
    assert!(text.contains("keelson_ledger_head_seq 7"), "{text}");
}

/// Readiness reads the ledger's write state: a ledger deleted under the API makes `/readyz` 503
/// naming it, while a source error after a load keeps it 200 and is named in the body.
#[tokio::test]
async fn readyz_names_every_problem_and_fails_only_for_the_ledger_or_no_snapshot() {
    let (dir, s) = state().await;
    s.fleet.write().unwrap().source.ready = true;
    s.fleet.write().unwrap().source.error = Some(crate::engine::state::SourceError {
        message: "object 0123 could not be decoded".into(),
        commit: Some("0123456789abcdef".into()),
        since: "2026-11-23T10:00:00Z".into(),
        attempts: 2,
        retry_in_ms: 2000,
    });
    let (code, body) = call(&s, "GET", "/readyz").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["problems"][0]["component"], "source", "{body}");
    let (_, status) = call(&s, "GET", "/api/v1/status").await;
    assert_eq!(status["ready"], true);
    assert_eq!(status["source"]["error"]["attempts"], 2, "{status}");

    s.ledger
        .append(NewEntry {
            app: "web".into(),
            desired_commit: String::new(),
            desired_digest: String::new(),
            rollout: Some(RolloutRef::StartsHere),
            from_state: "Pending".into(),
            to_state: "Planned".into(),
            action: "plan".into(),
            actor: "test".into(),
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();
    std::fs::remove_file(dir.path().join("k.db")).unwrap();
    s.ledger.check_identity().await;
    let (code, body) = call(&s, "GET", "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("audit ledger"), "{body}");
    let (_, status) = call(&s, "GET", "/api/v1/status").await;
    assert_eq!(status["ledger"]["state"], "replaced", "{status}");
    let (code, _) = call(&s, "GET", "/api/v1/audit/verify").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "a replaced ledger is not reported as verified");
}

/// Settings accepted but not carried out are named in `/api/v1/status`, config first.
#[tokio::test]
async fn status_lists_settings_that_are_not_built() {
    let (_d, s) = state().await;
    {
        let mut fleet = s.fleet.write().unwrap();
        fleet.config_not_built = vec!["`concurrency` is not carried out yet".into()];
        fleet.source.not_built = vec!["apps/web/deploy.yaml:9:5: warning: /spec/sync/selfHeal: …".into()];
    }
    let (code, body) = call(&s, "GET", "/api/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    let listed: Vec<&str> = body["notBuilt"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert_eq!(listed.len(), 2, "{body}");
    assert!(listed[0].contains("concurrency") && listed[1].contains("selfHeal"), "{body}");
}

/// Every error is JSON: bad query strings, invalid UTF-8 in a path, and the history of an app
/// nobody ever knew (404, while a known app without entries answers 200).
#[tokio::test]
async fn query_and_path_errors_are_json_and_unknown_history_is_404() {
    let (_d, s) = state().await;
    for uri in ["/api/v1/audit?limit=abc", "/api/v1/apps/web/history?limit=1x", "/api/v1/audit?since=1&limit=-"] {
        let (code, body) = call(&s, "GET", uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["status"], 400, "{uri}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("query"), "{uri}: {body}");
    }
    for uri in ["/api/v1/apps/%FF%FE", "/api/v1/apps/%C3%28/history"] {
        let (code, body) = call(&s, "GET", uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(body["error"]["status"], 400, "{uri}: {body}");
    }
    let (code, body) = call(&s, "GET", "/api/v1/apps/nobody/history").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["status"], 404);
    assert_eq!(call(&s, "GET", "/api/v1/apps/web/history").await.0, StatusCode::OK, "a known app");
    s.ledger
        .append(NewEntry {
            app: "gone".into(),
            desired_commit: "c".into(),
            desired_digest: String::new(),
            rollout: Some(RolloutRef::StartsHere),
            from_state: "Healthy".into(),
            to_state: "Deleted".into(),
            action: "deleted".into(),
            actor: "keelson".into(),
            detail: serde_json::json!({}),
        })
        .await
        .unwrap();
    assert_eq!(call(&s, "GET", "/api/v1/apps/gone/history").await.0, StatusCode::OK, "a deleted app keeps its history");
}

#[tokio::test]
async fn status_names_what_the_prune_guard_holds_and_what_drifted() {
    let (_d, s) = state().await;
    let (_, body) = call(&s, "GET", "/api/v1/status").await;
    assert_eq!(body["pruneGuard"], serde_json::Value::Null, "{body}");
    {
        let mut fleet = s.fleet.write().unwrap();
        for name in ["api", "db"] {
            let held = AppStatus {
                phase: Phase::Blocked,
                reason: "PruneGuard".into(),
                message: "api left git at abc, but the commit would delete 2 of 3 apps".into(),
                desired_commit: "abc".into(),
                ..AppStatus::pending(name)
            };
            fleet.apps.insert(name.into(), held);
        }
        let web = fleet.apps.get_mut("web").unwrap();
        web.phase = Phase::Drifted;
        web.drift = vec![keelson_core::fleet::ResourceDrift {
            resource: "sim:Workload/web/web".into(),
            missing: false,
            changes: Vec::new(),
        }];
    }
    let (_, body) = call(&s, "GET", "/api/v1/status").await;
    assert_eq!(body["pruneGuard"]["apps"], serde_json::json!(["api", "db"]), "{body}");
    assert_eq!(body["pruneGuard"]["commit"], "abc");
    assert_eq!(body["drifted"], serde_json::json!(["web"]));
    let (code, diff) = call(&s, "GET", "/api/v1/apps/web/diff").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(diff["live"], false, "no engine here: the last observation: {diff}");
    assert_eq!(diff["drift"][0]["resource"], "sim:Workload/web/web");
    assert_eq!(call(&s, "GET", "/api/v1/apps/nope/diff").await.0, StatusCode::NOT_FOUND);
    let (_, apps) = call(&s, "GET", "/api/v1/apps").await;
    let api = apps["apps"].as_array().unwrap().iter().find(|a| a["name"] == "api").unwrap().clone();
    assert_eq!((api["phase"].as_str(), api["reason"].as_str()), (Some("Blocked"), Some("PruneGuard")));
    let (_, page) = {
        let req = Request::builder().uri("/").body(Body::empty()).unwrap();
        let resp = router(s.clone()).oneshot(req).await.unwrap();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        ((), String::from_utf8_lossy(&bytes).into_owned())
    };
    assert!(page.contains("would delete 2 of 3 apps"), "the status page shows why: {page}");
}

async fn call_text(state: &ApiState, uri: &str, accept: Option<&str>) -> (StatusCode, String, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(accept) = accept {
        req = req.header(header::ACCEPT, accept);
    }
    let resp = router(state.clone()).oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let content_type =
        resp.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22).await.unwrap();
    (status, content_type, String::from_utf8_lossy(&bytes).into_owned())
}

/// A fleet of three apps on two clusters, with placements, a manifest error and some history.
async fn fleet_state() -> (tempfile::TempDir, ApiState) {
    let (dir, s) = state().await;
    {
        let mut fleet = s.fleet.write().unwrap();
        fleet.source.ready = true;
        fleet.source.last_sync = Some("2026-12-01T12:00:00.000000Z".into());
        fleet.source.diagnostics =
            vec!["apps/db/app.yaml:7:12: error: /spec/replicas: -1 is less than the minimum of 0".into()];
        fleet.apps.insert(
            "db".into(),
            AppStatus {
                phase: Phase::Blocked,
                reason: "InvalidManifest".into(),
                message: "the manifests of db are invalid; the running version is kept".into(),
                ..AppStatus::pending("db")
            },
        );
        fleet
            .apps
            .insert("api".into(), AppStatus { phase: Phase::Healthy, in_sync: true, ..AppStatus::pending("api") });
        for (app, team, cluster) in [("web", "shop", "prod"), ("api", "shop", "staging"), ("db", "data", "prod")] {
            let placement = crate::engine::state::AppPlacement { team: team.into(), cluster: cluster.into() };
            fleet.placements.insert(app.into(), placement);
        }
    }
    for (i, to) in ["Planned", "Progressing", "Healthy"].into_iter().enumerate() {
        s.ledger
            .append(NewEntry {
                app: "web".into(),
                desired_commit: "0123456789abcdef0123456789abcdef01234567".into(),
                desired_digest: "sha256:1".into(),
                rollout: Some(if i == 0 { RolloutRef::StartsHere } else { RolloutRef::Seq(1) }),
                from_state: if i == 0 { "Pending".into() } else { ["Planned", "Progressing"][i - 1].into() },
                to_state: to.into(),
                action: ["plan", "intent", "healthy"][i].into(),
                actor: "keelson".into(),
                detail: if i == 1 { serde_json::json!({"key": "web/1/1"}) } else { serde_json::json!({}) },
            })
            .await
            .unwrap();
    }
    (dir, s)
}

#[tokio::test]
async fn metrics_are_classic_text_unless_openmetrics_is_asked_for() {
    let (_d, s) = fleet_state().await;
    let (code, content_type, text) = call_text(&s, "/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(content_type, crate::metrics::PROMETHEUS_TEXT);
    assert!(!text.contains("# EOF"), "{text}");
    assert!(
        text.contains(
            "keelson_app_info{app=\"db\",phase=\"Blocked\",sync_status=\"OutOfSync\",team=\"data\",cluster=\"prod\"} 1"
        ),
        "{text}"
    );
    let (_, content_type, text) = call_text(&s, "/metrics", Some("application/openmetrics-text; version=1.0.0")).await;
    assert_eq!(content_type, crate::metrics::OPENMETRICS_TEXT);
    assert!(text.ends_with("# EOF\n"), "{text}");
}

/// Metrics with a sample in every family that takes one without a real engine.
fn exercise(m: &Metrics) {
    m.commit_loaded("c1", time::OffsetDateTime::now_utc().unix_timestamp() + 1);
    m.recorded("web", "Planned", "c1", 1, None);
    m.recorded("web", "Healthy", "c1", 2, None);
    m.recorded("db", "Blocked", "c1", 3, Some("Policy"));
    m.reconciled(true, std::time::Duration::from_millis(3));
    m.provider_call("sim", "apply", Err(("unavailable", "transient")), std::time::Duration::from_millis(9));
    m.source_fetch_failed("unreachable");
    m.verified(true);
    Metrics::outcome(&m.source_fetches, "moved");
    Metrics::outcome(&m.webhook_deliveries, "accepted");
    Metrics::outcome(&m.status_pushes, "pushed");
}

/// `promtool check metrics` (Debian's `prometheus` package; `scripts/test` installs it) accepts
/// what a real scrape returns, lint included.
#[tokio::test]
async fn promtool_accepts_the_metrics() {
    let promtool = ["promtool", "/usr/bin/promtool"]
        .into_iter()
        .find(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(promtool) = promtool else {
        assert!(std::env::var_os("CI").is_none(), "promtool is required under CI (apt-get install prometheus)");
        eprintln!("SKIP promtool_accepts_the_metrics: promtool not found (apt-get install prometheus)");
        return;
    };
    let (_d, s) = fleet_state().await;
    exercise(&s.metrics);
    let (_, _, text) = call_text(&s, "/metrics", None).await;
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

/// Every metric a query of the Grafana dashboard in `deploy/grafana/` names is in `/metrics`.
#[tokio::test]
async fn the_grafana_dashboard_refers_only_to_metrics_that_exist() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/keelson.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (_d, s) = fleet_state().await;
    // Labelled families without a series are not in the output at all.
    exercise(&s.metrics);
    let (_, _, text) = call_text(&s, "/metrics", None).await;
    let mut exported = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' ')) {
            exported.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exported.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    let mut referred = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .filter(|w| w.starts_with("keelson_") || w.starts_with("process_"));
            for name in names {
                referred += 1;
                assert!(exported.contains(name), "panel {:?} refers to {name}, which /metrics lacks", panel["title"]);
            }
        }
    }
    assert!(referred >= 20, "the dashboard refers to {referred} metrics");
}

#[tokio::test]
async fn apps_are_filtered_by_phase_team_and_cluster_and_paged() {
    let (_d, s) = fleet_state().await;
    let names = |body: &serde_json::Value| -> Vec<String> {
        body["apps"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_owned()).collect()
    };
    let (_, body) = call(&s, "GET", "/api/v1/apps").await;
    assert_eq!(names(&body), ["api", "db", "web"]);
    assert!(body.get("next").is_none(), "{body}");
    let (_, body) = call(&s, "GET", "/api/v1/apps?limit=2").await;
    assert_eq!(names(&body), ["api", "db"]);
    assert_eq!(body["next"], "db");
    let (_, body) = call(&s, "GET", "/api/v1/apps?limit=2&next=db").await;
    assert_eq!(names(&body), ["web"]);
    assert!(body.get("next").is_none(), "{body}");
    assert_eq!(names(&call(&s, "GET", "/api/v1/apps?team=shop").await.1), ["api", "web"]);
    assert_eq!(names(&call(&s, "GET", "/api/v1/apps?cluster=prod").await.1), ["db", "web"]);
    assert_eq!(names(&call(&s, "GET", "/api/v1/apps?phase=blocked").await.1), ["db"]);
    assert_eq!(names(&call(&s, "GET", "/api/v1/apps?team=shop&cluster=prod&phase=Healthy").await.1), ["web"]);
    for uri in ["/api/v1/apps?phase=Sleepy", "/api/v1/apps?limit=0", "/api/v1/apps?limit=5000", "/api/v1/apps?limit=x"]
    {
        let (code, body) = call(&s, "GET", uri).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"]["status"], 400, "{uri}: {body}");
    }
    let (_, body) = call(&s, "GET", "/api/v1/apps?phase=Sleepy").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("Healthy"), "names the phases: {body}");
}

/// The document at `/openapi.json` names every route of the router (and no other), and every JSON
/// response it documents is what the route really answers.
#[tokio::test]
async fn the_openapi_document_describes_every_route_and_its_responses() {
    let (_d, s) = fleet_state().await;
    let (code, doc) = call(&s, "GET", "/openapi.json").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: std::collections::BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: std::collections::BTreeSet<String> = routes().into_iter().map(|(p, _)| p.to_owned()).collect();
    assert_eq!(documented, routed, "routes and the OpenAPI document differ");

    // One request for each documented JSON response that a healthy ledger can give.
    let requests = [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/openapi.json", 200),
        ("/api/v1/status", 200),
        ("/api/v1/apps", 200),
        ("/api/v1/apps?limit=1&team=shop", 200),
        ("/api/v1/apps?phase=nope", 400),
        ("/api/v1/apps/web", 200),
        ("/api/v1/apps/%FF", 400),
        ("/api/v1/apps/nope", 404),
        ("/api/v1/apps/web/history", 200),
        ("/api/v1/apps/web/history?limit=0", 400),
        ("/api/v1/apps/nope/history", 404),
        ("/api/v1/apps/web/diff", 200),
        ("/api/v1/apps/%FF/diff", 400),
        ("/api/v1/apps/nope/diff", 404),
        ("/api/v1/audit", 200),
        ("/api/v1/audit?since=never", 400),
        ("/api/v1/audit/verify", 200),
    ];
    // Those need a broken ledger or status branch (their bodies are the same `Error` schema).
    let untested = [
        "/api/v1/apps/{name}/history 503",
        "/api/v1/audit 503",
        "/api/v1/audit/verify 409",
        "/api/v1/audit/verify 503",
    ];
    let mut covered = std::collections::BTreeSet::new();
    for (uri, want) in requests {
        let (code, body) = call(&s, "GET", uri).await;
        assert_eq!(code.as_u16(), want, "{uri}: {body}");
        let path = uri.split('?').next().unwrap();
        let template = routed.iter().find(|t| matches_template(t, path)).unwrap_or_else(|| panic!("{uri}"));
        let response = &doc["paths"][template]["get"]["responses"][want.to_string()];
        let schema = &response["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{template} {want} is not documented as JSON");
        let mut root = doc.clone();
        root.as_object_mut().unwrap().insert("$ref".into(), schema["$ref"].clone());
        if schema.get("$ref").is_none() {
            root = schema.clone();
        }
        let validator = jsonschema::validator_for(&root).unwrap();
        let errors: Vec<String> =
            validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{uri} ({want}) does not match {template}'s schema: {errors:?}\n{body}");
        covered.insert(format!("{template} {want}"));
    }
    s.fleet.write().unwrap().source.ready = false;
    let (code, body) = call(&s, "GET", "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "not ready");
    covered.insert("/readyz 503".into());
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (status, response) in item["get"]["responses"].as_object().unwrap() {
            let key = format!("{template} {status}");
            if response["content"].get("application/json").is_some() && !untested.contains(&key.as_str()) {
                assert!(covered.contains(&key), "{key} is documented but no test request checks it");
            }
        }
    }
}

fn matches_template(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

#[tokio::test]
async fn the_status_page_shows_sync_team_cluster_the_exact_error_and_filters() {
    let (_d, s) = fleet_state().await;
    let (code, content_type, page) = call_text(&s, "/", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("<a href=\"/apps/db\">db</a>"), "{page}");
    assert!(
        page.contains("apps/db/app.yaml:7:12: error: /spec/replicas"),
        "the exact error with file:line:col: {page}"
    );
    assert!(page.contains("<td>data</td><td>prod</td>"), "team and cluster: {page}");
    assert!(page.contains("OutOfSync") && page.contains("Synced"), "{page}");
    assert!(page.contains("<select name=\"phase\">") && page.contains("<option>staging</option>"), "{page}");
    assert!(page.contains("last synced 2026-12-01T12:00:00.000000Z"), "{page}");
    assert!(page.contains("not verified since the daemon started"), "{page}");

    let (_, _, page) = call_text(&s, "/?cluster=prod&phase=Blocked", None).await;
    assert!(page.contains("/apps/db") && !page.contains("/apps/web\"") && !page.contains("/apps/api\""), "{page}");
    assert!(page.contains("<option selected>prod</option>"), "the form keeps the filter: {page}");
    let (_, _, page) = call_text(&s, "/?limit=1", None).await;
    assert!(page.contains("<a href=\"/?limit=1&amp;next=api\">next page</a>"), "{page}");
    let (code, _, page) = call_text(&s, "/?phase=Sleepy", None).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(page.contains("is not one of"), "{page}");

    call(&s, "GET", "/api/v1/audit/verify").await;
    let (_, _, page) = call_text(&s, "/", None).await;
    assert!(page.contains("<span class=\"ok\">verified</span>"), "the last verdict: {page}");
}

#[tokio::test]
async fn the_app_page_shows_history_error_and_resources() {
    let (_d, s) = fleet_state().await;
    let (code, _, page) = call_text(&s, "/apps/web", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains("<h1>web</h1>"), "{page}");
    assert!(page.contains("<h2>History</h2>"), "{page}");
    // Newest first: seq 3 (Healthy) before seq 1 (Planned), with actor and short commit.
    let (healthy, planned) = (page.find("<tr><td>3</td>").unwrap(), page.find("<tr><td>1</td>").unwrap());
    assert!(healthy < planned, "{page}");
    assert!(page.contains("Progressing → <span class=\"Healthy\">Healthy</span>"), "{page}");
    assert!(
        page.contains("<td>keelson</td><td><code>0123456</code>")
            || page.contains("<td>keelson</td><td><code>01234567"),
        "{page}"
    );
    assert!(page.contains("<th>team</th><td>shop</td>") && page.contains("<th>cluster</th><td>prod</td>"), "{page}");

    let (_, _, page) = call_text(&s, "/apps/db", None).await;
    assert!(page.contains("<h2>Error</h2>"), "{page}");
    assert!(page.contains("apps/db/app.yaml:7:12: error: /spec/replicas: -1 is less than the minimum of 0"), "{page}");
    assert!(page.contains("the running version is kept"), "{page}");

    let (code, _, page) = call_text(&s, "/apps/nobody", None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(page.contains("no app named \"nobody\"") || page.contains("no app named &quot;nobody&quot;"), "{page}");
}
