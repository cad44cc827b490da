//! The status page: server-rendered HTML (no script), the fleet at `/` with filters by phase,
//! team and cluster, and one page per app at `/apps/{name}` with its error, resources, drift and
//! history.

use std::fmt::Write as _;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use keelson_core::AppStatus;
use keelson_core::fleet::ResourceStatus;
use keelson_provider_api::Health;

use super::{ApiState, AppFilter};
use crate::client::percent_encode;
use crate::engine::state::{Fleet, Phase};
use crate::ledger::AuditQuery;

/// Entries the app page shows, newest first.
const HISTORY_SHOWN: usize = 50;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;\
text-align:left;vertical-align:top}code,pre{font-size:.9em}pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}\
.Healthy,.ok{color:#080}.Failed,.Blocked,.Degraded,.bad{color:#b00}.Progressing,.Planned,.Drifted{color:#c70}\
form{margin:1em 0}nav a{margin-right:1em}";

fn layout(title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh { "<meta http-equiv=\"refresh\" content=\"10\">" } else { "" };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>{refresh}<style>{STYLE}</style></head>\
         <body>{body}<nav><a href=\"/\">apps</a><a href=\"/api/v1/status\">status</a><a href=\"/api/v1/apps\">apps (JSON)</a>\
         <a href=\"/api/v1/audit\">audit</a><a href=\"/api/v1/audit/verify\">verify</a><a href=\"/metrics\">metrics</a>\
         <a href=\"/openapi.json\">OpenAPI</a></nav></body></html>",
        title = escape(title),
    )
}

/// An HTML error page.
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!("<h1>Keelson</h1><p class=\"bad\">{}</p>", escape(message));
    (status, Html(layout("Keelson", false, &body))).into_response()
}

/// `GET /`: the fleet, filtered by `phase`, `team` and `cluster` (and paged like `/api/v1/apps`).
pub(super) async fn index(State(s): State<ApiState>, filter: Result<Query<AppFilter>, QueryRejection>) -> Response {
    let filter = match filter {
        Ok(Query(f)) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &format!("bad query string: {}", e.body_text())),
    };
    let verify = verify_verdict(&s);
    let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
    let (apps, next) = match filter.select(&fleet) {
        Ok(page) => page,
        Err(e) => return error_page(e.status, &e.message),
    };
    let mut body = String::from("<h1>Keelson</h1>");
    body.push_str(&source_section(&fleet));
    body.push_str(&verify);
    body.push_str(&filter_form(&fleet, &filter));
    body.push_str(
        "<table><tr><th>app</th><th>phase</th><th>sync</th><th>progress</th><th>team</th><th>cluster</th>\
         <th>last transition</th><th>commit</th><th>error / message</th></tr>",
    );
    let now = time::OffsetDateTime::now_utc();
    for a in &apps {
        let placement = fleet.placements.get(&a.name).cloned().unwrap_or_default();
        let _ = write!(
            body,
            "<tr><td><a href=\"/apps/{n}\">{n}</a></td><td class=\"{p}\">{p}</td><td>{sync}</td><td>{progress}</td>\
             <td>{team}</td><td>{cluster}</td><td>{age}</td><td><code>{c}</code></td><td>{m}</td></tr>",
            n = escape(&a.name),
            p = a.phase,
            sync = if a.in_sync { "Synced" } else { "OutOfSync" },
            progress = progress(a),
            team = escape(&placement.team),
            cluster = escape(&placement.cluster),
            age = a.last_transition.as_ref().map(|t| ago(&t.at, now)).unwrap_or_default(),
            c = escape(crate::engine::short(&a.desired_commit)),
            m = app_error(a, &fleet),
        );
    }
    body.push_str("</table>");
    if apps.is_empty() {
        body.push_str("<p>No app matches.</p>");
    }
    if let Some(next) = next {
        let _ = write!(body, "<p><a href=\"/?{}\">next page</a></p>", escape(&query_with_next(&filter, &next)));
    }
    Html(layout("Keelson", true, &body)).into_response()
}

/// `GET /apps/{name}`: one app with its exact error, resources, drift and history.
pub(super) async fn app(State(s): State<ApiState>, name: Result<Path<String>, PathRejection>) -> Response {
    let name = match name {
        Ok(Path(n)) => n,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, &format!("bad path: {}", e.body_text())),
    };
    let (status, section) = {
        let fleet = s.fleet.read().unwrap_or_else(|e| e.into_inner());
        match fleet.apps.get(&name) {
            Some(a) => (Some(a.clone()), app_section(a, &fleet)),
            None => (None, String::new()),
        }
    };
    let q = AuditQuery { since_seq: None, app: Some(name.clone()), limit: Some(10_000), since_time: None };
    let entries = match s.ledger.entries(&q).await {
        Ok(entries) => entries,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, &format!("audit ledger unavailable: {e}")),
    };
    if status.is_none() && entries.is_empty() {
        return error_page(StatusCode::NOT_FOUND, &format!("no app named {name:?} in the fleet or the ledger"));
    }
    let mut body = format!("<h1>{}</h1>", escape(&name));
    if status.is_none() {
        body.push_str("<p>This app is no longer in the fleet; its history is kept.</p>");
    }
    body.push_str(&section);
    let _ = write!(
        body,
        "<h2>History</h2><p>The newest {HISTORY_SHOWN} ledger entries (<a href=\"/api/v1/apps/{n}/history\">all as JSON</a>).</p>\
         <table><tr><th>seq</th><th>at</th><th>from → to</th><th>action</th><th>actor</th><th>commit</th><th>rollout</th></tr>",
        n = escape(&name)
    );
    for e in entries.iter().rev().take(HISTORY_SHOWN) {
        let _ = write!(
            body,
            "<tr><td>{seq}</td><td>{at}</td><td>{from} → <span class=\"{to}\">{to}</span></td><td>{action}</td><td>{actor}</td>\
             <td><code>{commit}</code></td><td>{rollout}</td></tr>",
            seq = e.seq,
            at = escape(&e.at),
            from = escape(&e.from_state),
            to = escape(&e.to_state),
            action = escape(&e.action),
            actor = escape(&e.actor),
            commit = escape(crate::engine::short(&e.desired_commit)),
            rollout = e.rollout.map(|r| r.to_string()).unwrap_or_default(),
        );
    }
    body.push_str("</table>");
    Html(layout(&format!("{name} · Keelson"), true, &body)).into_response()
}

/// The app's state, error, resources and drift.
fn app_section(a: &AppStatus, fleet: &Fleet) -> String {
    let placement = fleet.placements.get(&a.name).cloned().unwrap_or_default();
    let mut out = String::new();
    let _ = write!(
        out,
        "<table><tr><th>phase</th><td class=\"{p}\">{p}</td></tr><tr><th>reason</th><td>{reason}</td></tr>\
         <tr><th>sync</th><td>{sync}</td></tr><tr><th>progress</th><td>{progress}</td></tr>\
         <tr><th>team</th><td>{team}</td></tr><tr><th>cluster</th><td>{cluster}</td></tr>\
         <tr><th>provider instance</th><td>{instance}</td></tr><tr><th>desired commit</th><td><code>{commit}</code></td></tr>\
         <tr><th>desired digest</th><td><code>{digest}</code></td></tr><tr><th>observed digest</th><td><code>{observed}</code></td></tr>\
         <tr><th>last transition</th><td>{last}</td></tr></table>",
        p = a.phase,
        reason = escape(&a.reason),
        sync = if a.in_sync { "Synced" } else { "OutOfSync" },
        progress = progress(a),
        team = escape(&placement.team),
        cluster = escape(&placement.cluster),
        instance = escape(&a.instance),
        commit = escape(&a.desired_commit),
        digest = escape(&a.desired_digest),
        observed = escape(a.observed_digest.as_deref().unwrap_or("")),
        last = a
            .last_transition
            .as_ref()
            .map(|t| format!(
                "{} → {} ({}) at {}, ledger seq {}",
                t.from,
                t.to,
                escape(&t.action),
                escape(&t.at),
                t.audit_seq
            ))
            .unwrap_or_default(),
    );
    let diagnostics = app_diagnostics(&a.name, fleet);
    if !a.message.is_empty() || !diagnostics.is_empty() {
        out.push_str("<h2>Error</h2>");
        if !a.message.is_empty() {
            let _ = write!(out, "<pre>{}</pre>", escape(&a.message));
        }
        for d in diagnostics {
            let _ = write!(out, "<pre>{}</pre>", escape(d));
        }
    }
    out.push_str("<h2>Resources</h2>");
    if a.resources.is_empty() {
        out.push_str("<p>None observed yet.</p>");
    } else {
        out.push_str("<table><tr><th>resource</th><th>health</th></tr>");
        for r in &a.resources {
            let (class, text) = health(r);
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td class=\"{class}\">{}</td></tr>",
                escape(&r.id.to_string()),
                escape(&text)
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(
        out,
        "<h2>Desired vs observed</h2><p><a href=\"/api/v1/apps/{}/diff\">observe the live diff now (JSON)</a></p>",
        escape(&a.name)
    );
    if a.drift.is_empty() {
        out.push_str("<p>No drift seen at the last observation.</p>");
    } else {
        out.push_str("<table><tr><th>resource</th><th>field</th><th>live</th><th>git</th></tr>");
        for d in &a.drift {
            if d.missing {
                let _ =
                    write!(out, "<tr><td><code>{}</code></td><td colspan=\"3\">missing</td></tr>", escape(&d.resource));
            }
            for c in &d.changes {
                let show =
                    |v: &Option<serde_json::Value>| v.as_ref().map(|v| escape(&v.to_string())).unwrap_or_default();
                let _ = write!(
                    out,
                    "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                    escape(&d.resource),
                    escape(&c.pointer),
                    show(&c.old),
                    show(&c.new)
                );
            }
        }
        out.push_str("</table>");
    }
    out
}

/// The source: where, which commit, when synced, and what is wrong with it.
fn source_section(fleet: &Fleet) -> String {
    let src = &fleet.source;
    let mut out = format!(
        "<p>Source <code>{repo}</code> branch <code>{branch}</code> at <code>{commit}</code>, last synced {sync}</p>",
        repo = escape(&src.repo),
        branch = escape(&src.branch),
        commit = escape(src.commit.as_deref().map(crate::engine::short).unwrap_or("(none yet)")),
        sync = escape(src.last_sync.as_deref().unwrap_or("never")),
    );
    for w in &src.warnings {
        let _ = write!(out, "<p class=\"Blocked\">{}</p>", escape(w));
    }
    if let Some(e) = &src.error {
        let _ = write!(out, "<p class=\"bad\">source error since {}: {}</p>", escape(&e.since), escape(&e.message));
    }
    if let Some(e) = src.remote.as_ref().and_then(|r| r.error.as_ref()) {
        let _ = write!(out, "<p class=\"bad\">fetch error since {}: {}</p>", escape(&e.since), escape(&e.message));
    }
    if !src.diagnostics.is_empty() {
        let _ = write!(out, "<details><summary>{} manifest problems in this commit</summary>", src.diagnostics.len());
        for d in &src.diagnostics {
            let _ = write!(out, "<pre>{}</pre>", escape(d));
        }
        out.push_str("</details>");
    }
    out
}

/// The last ledger verification this process did.
fn verify_verdict(s: &ApiState) -> String {
    let at = s.metrics.ledger_verify_time.get();
    if at <= 0.0 {
        return "<p>Ledger: not verified since the daemon started (<a href=\"/api/v1/audit/verify\">verify now</a>).</p>"
            .to_owned();
    }
    let when =
        time::OffsetDateTime::from_unix_timestamp(at as i64).map(keelson_core::ledger::format_at).unwrap_or_default();
    let (class, verdict) =
        if s.metrics.ledger_verify_ok.get() == 1 { ("ok", "verified") } else { ("bad", "FAILED verification") };
    format!(
        "<p>Ledger: <span class=\"{class}\">{verdict}</span> at {} (<a href=\"/api/v1/audit/verify\">verify now</a>).</p>",
        escape(&when)
    )
}

fn filter_form(fleet: &Fleet, filter: &AppFilter) -> String {
    let mut teams: Vec<&str> = fleet.placements.values().map(|p| p.team.as_str()).filter(|t| !t.is_empty()).collect();
    teams.sort_unstable();
    teams.dedup();
    let mut clusters: Vec<&str> = fleet.placements.values().map(|p| p.cluster.as_str()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    let select = |name: &str, values: &[&str], chosen: Option<&str>| {
        let mut out = format!("<label>{name} <select name=\"{name}\"><option value=\"\">any</option>");
        for v in values {
            let selected = if chosen.is_some_and(|c| c.eq_ignore_ascii_case(v)) { " selected" } else { "" };
            let _ = write!(out, "<option{selected}>{}</option>", escape(v));
        }
        out.push_str("</select></label> ");
        out
    };
    let phases: Vec<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    format!(
        "<form method=\"get\" action=\"/\">{}{}{}<button>filter</button> <a href=\"/\">clear</a></form>",
        select("phase", &phases, filter.phase.as_deref()),
        select("team", &teams, filter.team.as_deref()),
        select("cluster", &clusters, filter.cluster.as_deref()),
    )
}

/// The query string of the page after `next` with the same filters.
fn query_with_next(filter: &AppFilter, next: &str) -> String {
    let mut parts = Vec::new();
    for (k, v) in [("phase", &filter.phase), ("team", &filter.team), ("cluster", &filter.cluster)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", percent_encode(v)));
        }
    }
    if let Some(limit) = filter.limit {
        parts.push(format!("limit={limit}"));
    }
    parts.push(format!("next={}", percent_encode(next)));
    parts.join("&")
}

/// The app's error: its message, and the diagnostics (`file:line:col: …`) of its manifests.
fn app_error(a: &AppStatus, fleet: &Fleet) -> String {
    let mut out = escape(&a.message);
    for d in app_diagnostics(&a.name, fleet) {
        if !a.message.contains(d.as_str()) {
            let _ = write!(out, "<br><code>{}</code>", escape(d));
        }
    }
    out
}

/// The diagnostics of the last commit about files in the app's directory (`…/<app>/…`).
fn app_diagnostics<'a>(app: &str, fleet: &'a Fleet) -> Vec<&'a String> {
    fleet
        .source
        .diagnostics
        .iter()
        .filter(|d| {
            let file = d.split(':').next().unwrap_or_default();
            let mut dirs = file.split('/').rev().skip(1);
            dirs.any(|dir| dir == app)
        })
        .collect()
}

/// `ready k/n` of the step under way, or empty.
fn progress(a: &AppStatus) -> String {
    match &a.progress {
        Some(p) if p.of > 1 => format!("ready {}/{} (step {}/{})", p.ready, p.desired, p.step, p.of),
        Some(p) => format!("ready {}/{}", p.ready, p.desired),
        None => String::new(),
    }
}

fn health(r: &ResourceStatus) -> (&'static str, String) {
    match &r.health {
        Health::Healthy => ("Healthy", "Healthy".to_owned()),
        Health::Progressing { ready, desired, message } => {
            ("Progressing", format!("Progressing: ready {ready}/{desired} {message}"))
        }
        Health::Degraded { message } => ("Degraded", format!("Degraded: {message}")),
        Health::Missing => ("Failed", "Missing".to_owned()),
    }
}

/// How long ago `at` (RFC 3339) was, as `5s`, `3m`, `2h` or `4d`.
fn ago(at: &str, now: time::OffsetDateTime) -> String {
    let Ok(t) = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339) else {
        return String::new();
    };
    let secs = (now - t).whole_seconds().max(0);
    let text = match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    };
    format!("<span title=\"{}\">{text} ago</span>", escape(at))
}

pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
