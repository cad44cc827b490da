//! The read-only status API: GET and HEAD only (every other method → 405), JSON errors, its own listener.

use std::sync::{Arc, RwLock};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use keelson_core::AppStatus;
use keelson_core::view::{EntryList, EntryView, History};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::engine::state::{Fleet, Phase};
use crate::ledger::{AuditQuery, Ledger};
use crate::metrics::Metrics;
use crate::record::StatusBranch;

/// What the API reads from.
#[derive(Clone)]
pub struct ApiState {
    pub fleet: Arc<RwLock<Fleet>>,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    /// The status branch, for cross-checking audit trailers in `/api/v1/audit/verify`.
    pub status_branch: Option<StatusBranch>,
    /// The engine, once it runs: `/api/v1/apps/{name}/diff` observes through it.
    pub engine: Arc<std::sync::OnceLock<Arc<crate::engine::Ctx>>>,
}

/// An error as the API returns it: a status code and a JSON body `{"error": {"status", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"status": self.status.as_u16(), "message": self.message}}));
        (self.status, body).into_response()
    }
}

impl From<crate::ledger::Error> for ApiError {
    fn from(e: crate::ledger::Error) -> Self {
        tracing::error!(error = %e, "audit ledger read failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("audit ledger unavailable: {e}"))
    }
}

// Extractor rejections are plain text in axum; every error of this API is JSON.
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad query string: {}", e.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, format!("bad path: {}", e.body_text()))
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Every route of the API (the OpenAPI document at `/openapi.json` describes each; a test checks).
fn routes() -> Vec<(&'static str, MethodRouter<ApiState>)> {
    vec![
        ("/", get(page::index)),
        ("/apps/{name}", get(page::app)),
        ("/healthz", get(healthz)),
        ("/readyz", get(readyz)),
        ("/metrics", get(metrics)),
        ("/openapi.json", get(openapi)),
        ("/api/v1/status", get(status)),
        ("/api/v1/apps", get(apps)),
        ("/api/v1/apps/{name}", get(app)),
        ("/api/v1/apps/{name}/history", get(history)),
        ("/api/v1/apps/{name}/diff", get(diff)),
        ("/api/v1/audit", get(audit)),
        ("/api/v1/audit/verify", get(audit_verify)),
    ]
}

/// The API as a value tests can drive without a socket.
pub fn router(state: ApiState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, route)| router.route(path, route))
        .fallback(not_found)
        .layer(middleware::from_fn(read_only))
        .with_state(state)
}

/// Rejects every method but GET and HEAD before routing, so no path can ever accept a write.
async fn read_only(req: Request, next: Next) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} is not allowed: this API is read-only (GET, HEAD)", req.method()),
    )
    .into_response();
    response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no such endpoint: {}; see /api/v1/status", req.uri().path()))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness from the fleet, the ledger and the recorder (decided by [`crate::health::readiness`]).
fn assess(s: &ApiState) -> crate::health::Readiness {
    let ledger = s.ledger.write_state();
    let record = s.status_branch.as_ref().map(StatusBranch::record_state);
    let push = s.status_branch.as_ref().and_then(StatusBranch::push_status);
    let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
    let held_apps = fleet
        .apps
        .values()
        .filter(|a| matches!(a.phase, Phase::Blocked | Phase::Failed))
        .map(|a| a.name.as_str())
        .collect();
    crate::health::readiness(&crate::health::Signals {
        snapshot_loaded: fleet.source.ready,
        ledger: &ledger,
        source_error: fleet.source.error.as_ref(),
        source_warnings: &fleet.source.warnings,
        status_branch: record.as_ref(),
        fetch_error: fleet.source.remote.as_ref().and_then(|r| r.error.as_ref()),
        push_error: push.as_ref().and_then(|p| p.error.as_deref()),
        held_apps,
    })
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let verdict = assess(&s);
    if verdict.ready {
        return Json(json!({"status": "ready", "problems": verdict.problems})).into_response();
    }
    let message: Vec<&str> =
        verdict.problems.iter().filter(|p| p.blocks_readiness).map(|p| p.message.as_str()).collect();
    let body = json!({
        "status": "not ready",
        "error": {"status": 503, "message": message.join("; ")},
        "problems": verdict.problems,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

/// `GET /metrics`: classic Prometheus text unless the scraper's `Accept` asks for OpenMetrics.
async fn metrics(State(s): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    {
        let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
        let apps = fleet.apps.values().map(|a| {
            let placement = fleet.placements.get(&a.name).cloned().unwrap_or_default();
            crate::metrics::AppInfo {
                app: a.name.clone(),
                phase: a.phase.as_str().to_owned(),
                in_sync: a.in_sync,
                team: placement.team,
                cluster: placement.cluster,
            }
        });
        s.metrics.observe_fleet(apps, fleet.source.last_sync.as_deref());
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (text, content_type) = s.metrics.render_for(accept);
    let mut response = text.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The OpenAPI 3.1 document of this API (kept beside the routes; a test holds it to them).
pub const OPENAPI: &str = include_str!("api/openapi.json");

/// `GET /openapi.json`.
async fn openapi() -> Response {
    let mut doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap_or_default();
    doc["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    Json(doc).into_response()
}

async fn status(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let verdict = assess(&s);
    let record = s.status_branch.as_ref().map(StatusBranch::record_state);
    let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
    Json(json!({
        "ready": verdict.ready,
        "problems": verdict.problems,
        "ledger": s.ledger.write_state(),
        "statusBranch": record,
        "statusPush": s.status_branch.as_ref().and_then(StatusBranch::push_status),
        "source": fleet.source,
        "providers": fleet.providers,
        "apps": fleet.apps.len(),
        "phases": fleet.counts(),
        "inSync": fleet.apps.values().filter(|a| a.in_sync).count(),
        "drifted": fleet.apps.values().filter(|a| !a.drift.is_empty()).map(|a| &a.name).collect::<Vec<_>>(),
        // Apps a commit removed that the prune guard keeps (`Keelson-Allow-Prune: true` lets them go).
        "pruneGuard": prune_guard_view(&fleet),
        // Settings (daemon config, then manifests) that are accepted but not carried out.
        "notBuilt": fleet.config_not_built.iter().chain(&fleet.source.not_built).collect::<Vec<_>>(),
    }))
}

/// How long one live diff may take to observe.
const LIVE_DIFF_LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// `GET /api/v1/apps/{name}/diff`: what is live against what git wants, observed now through the
/// engine (`live: true`), or as last observed when the engine cannot say (`live: false`).
async fn diff(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    let Path(name) = name?;
    let last = {
        let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
        fleet.apps.get(&name).cloned()
    };
    let Some(last) = last else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no app named {name:?} in the fleet")));
    };
    let live = match s.engine.get() {
        Some(ctx) => tokio::time::timeout(LIVE_DIFF_LIMIT, ctx.live_diff(&name)).await.ok().flatten(),
        None => None,
    };
    let (is_live, drift) = match live {
        Some(drift) => (true, drift),
        None => (false, last.drift.clone()),
    };
    Ok(Json(json!({"app": name, "phase": last.phase, "live": is_live, "drift": drift})))
}

/// What the prune guard holds, or null.
fn prune_guard_view(fleet: &crate::engine::state::Fleet) -> serde_json::Value {
    let held: Vec<&AppStatus> =
        fleet.apps.values().filter(|a| a.phase == keelson_core::Phase::Blocked && a.reason == "PruneGuard").collect();
    match held.first() {
        None => serde_json::Value::Null,
        Some(first) => json!({
            "apps": held.iter().map(|a| &a.name).collect::<Vec<_>>(),
            "commit": first.desired_commit,
            "message": first.message,
        }),
    }
}

/// Filters and paging of the app list (`/api/v1/apps` and the status page).
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct AppFilter {
    /// Only apps in this phase (case-insensitive).
    phase: Option<String>,
    /// Only apps of this team (`metadata.team`).
    team: Option<String>,
    /// Only apps placed on this cluster.
    cluster: Option<String>,
    /// At most this many apps (1..=1000; all when absent).
    limit: Option<usize>,
    /// The cursor a previous page returned as `next`: the apps after it.
    next: Option<String>,
}

/// The most apps one page holds.
const MAX_PAGE: usize = 1000;

impl AppFilter {
    /// The apps of `fleet` this filter selects, in name order, and the cursor of the next page.
    fn select<'a>(&self, fleet: &'a Fleet) -> ApiResult<(Vec<&'a AppStatus>, Option<String>)> {
        let phase = match self.phase.as_deref().filter(|p| !p.is_empty()) {
            None => None,
            Some(p) => Some(Phase::ALL.into_iter().find(|k| k.as_str().eq_ignore_ascii_case(p)).ok_or_else(|| {
                let known: Vec<&str> = Phase::ALL.iter().map(|k| k.as_str()).collect();
                ApiError::new(StatusCode::BAD_REQUEST, format!("phase {p:?} is not one of {}", known.join(", ")))
            })?),
        };
        let limit = self.limit.unwrap_or(usize::MAX);
        if limit == 0 || (self.limit.is_some() && limit > MAX_PAGE) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be between 1 and {MAX_PAGE}, got {limit}"),
            ));
        }
        let wanted = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w.is_empty() || w == have);
        let mut selected = fleet.apps.values().filter(|a| {
            let placement = fleet.placements.get(&a.name);
            phase.is_none_or(|p| a.phase == p)
                && wanted(&self.team, placement.map_or("", |p| p.team.as_str()))
                && wanted(&self.cluster, placement.map_or("", |p| p.cluster.as_str()))
                && self.next.as_deref().is_none_or(|after| a.name.as_str() > after)
        });
        let page: Vec<&AppStatus> = selected.by_ref().take(limit).collect();
        let next = match selected.next() {
            Some(_) => page.last().map(|a| a.name.clone()),
            None => None,
        };
        Ok((page, next))
    }
}

/// `GET /api/v1/apps`: the apps, filtered, with the cursor of the next page when there is one.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct AppPage<'a> {
    apps: Vec<&'a AppStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

async fn apps(State(s): State<ApiState>, filter: Result<Query<AppFilter>, QueryRejection>) -> ApiResult<Response> {
    let Query(filter) = filter?;
    let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
    let (apps, next) = filter.select(&fleet)?;
    Ok(Json(AppPage { apps, next }).into_response())
}

async fn app(State(s): State<ApiState>, name: Result<Path<String>, PathRejection>) -> ApiResult<Json<AppStatus>> {
    let Path(name) = name?;
    let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
    let app =
        fleet.apps.get(&name).ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no app named {name:?}")))?;
    Ok(Json(app.clone()))
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    since: Option<String>,
    app: Option<String>,
    limit: Option<i64>,
}

/// `since` is a ledger seq (entries after it) or an RFC 3339 time.
fn audit_query(p: AuditParams, app: Option<String>) -> ApiResult<AuditQuery> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, format!("limit must be between 1 and 10000, got {limit}")));
    }
    let (since_seq, since_time) = match p.since {
        None => (None, None),
        Some(s) if s.parse::<i64>().is_ok() => (s.parse().ok(), None),
        Some(s) => {
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("since must be a ledger seq or an RFC 3339 time, got {s:?}"),
                )
            })?;
            (None, Some(s))
        }
    };
    Ok(AuditQuery { since_seq, app: app.or(p.app), limit: Some(limit), since_time })
}

async fn history(
    State(s): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult<Json<History>> {
    let (Path(name), Query(p)) = (name?, params?);
    let q = audit_query(p, Some(name.clone()))?;
    let entries = s.ledger.entries(&q).await?;
    // An app the daemon never knew has no history; a deleted one keeps its own.
    let known = s.fleet.read().unwrap_or_else(|e| e.into_inner()).apps.contains_key(&name);
    if entries.is_empty() && !known {
        let probe = AuditQuery { since_seq: None, app: Some(name.clone()), limit: Some(1), since_time: None };
        if s.ledger.entries(&probe).await?.is_empty() {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no app named {name:?} in the fleet or the ledger"),
            ));
        }
    }
    Ok(Json(History { app: name, entries: entries.iter().map(EntryView::from).collect() }))
}

async fn audit(
    State(s): State<ApiState>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> ApiResult<Json<EntryList>> {
    let Query(p) = params?;
    let q = audit_query(p, None)?;
    let entries = s.ledger.entries(&q).await?;
    Ok(Json(EntryList { entries: entries.iter().map(EntryView::from).collect() }))
}

async fn audit_verify(State(s): State<ApiState>) -> ApiResult<Response> {
    if let crate::ledger::WriteState::Replaced { message } = s.ledger.write_state() {
        // The chain this process reads is no longer the file on disk: "verified" would mislead.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the audit ledger was replaced under the daemon, so the chain it holds cannot be verified: {message}"
            ),
        ));
    }
    let anchors = match s.status_branch.clone() {
        Some(branch) => tokio::task::spawn_blocking(move || branch.anchors())
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("reading the status branch: {e:#}")))?,
        None => Vec::new(),
    };
    let report = match s.ledger.verify(&anchors).await {
        Ok(report) => report,
        Err(e) => {
            s.metrics.verified(false);
            return Err(e.into());
        }
    };
    let mut body = serde_json::to_value(&report).unwrap_or_default();
    let mut ok = report.ok;
    if let Some(branch) = &s.status_branch {
        let files = crate::record::check_status_files(branch, &s.ledger)
            .await
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("reading the status branch: {e:#}")))?;
        ok &= files.ok;
        body["ok"] = json!(ok);
        body["statusFiles"] = serde_json::to_value(&files).unwrap_or_default();
    }
    s.metrics.verified(ok);
    let code = if ok { StatusCode::OK } else { StatusCode::CONFLICT };
    Ok((code, Json(body)).into_response())
}

mod page;
pub mod server;

#[cfg(test)]
mod tests;
