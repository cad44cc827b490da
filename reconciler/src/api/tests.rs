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
