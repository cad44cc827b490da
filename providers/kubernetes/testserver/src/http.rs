//! The HTTP surface: discovery, the resource paths of the Kubernetes API (cluster-scoped,
//! namespaced, all-namespaces, `status` subresource), list / watch / create / get / update /
//! patch / delete / deletecollection, plus the latency, fault and request-log knobs.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::catalog::ResourceType;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, Result};
use crate::store::{DeleteOpts, Deleted, Event, EventType, State, WriteCtx};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// `fieldManager` of the query, if any.
    pub field_manager: Option<String>,
    /// `Content-Type` of the request, if any.
    pub content_type: Option<String>,
    /// Response status code.
    pub status: u16,
}

/// A failure the server answers instead of serving a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Only requests with this method (any when `None`).
    pub method: Option<String>,
    /// Only paths containing this text.
    pub path_contains: String,
    /// The status code answered (500, 503, 429, 504...).
    pub code: u16,
    /// How many requests it answers before it lapses (`None`: every one).
    pub times: Option<usize>,
}

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub latency: Mutex<Duration>,
    pub faults: Mutex<Vec<Fault>>,
    pub shutdown: watch::Receiver<bool>,
    pub bookmark_interval: Duration,
    pub token: Option<String>,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decoded query parameters.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Self {
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, v: Value) -> Response {
    (code, axum::Json(v)).into_response()
}

/// The router: one handler that parses Kubernetes paths itself.
pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

async fn handle(AxState(shared): AxState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let headers = req.headers().clone();
    let query = Query::parse(&raw_query);
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);

    let latency = *lock(&shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match fault(&shared, &method, &path) {
        Some(e) => e.into_response(),
        None => match authenticate(&shared, &headers) {
            Err(e) => e.into_response(),
            Ok(()) => {
                let body = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
                    Ok(b) => b,
                    Err(e) => return ApiError::bad_request(format!("reading the request body: {e}")).into_response(),
                };
                route(&shared, &method, &path, &query, &headers, &body).unwrap_or_else(IntoResponse::into_response)
            }
        },
    };
    lock(&shared.log).push(RequestRecord {
        method: method.to_string(),
        path,
        query: raw_query,
        field_manager: query.get("fieldManager").map(str::to_string),
        content_type,
        status: response.status().as_u16(),
    });
    response
}

fn fault(shared: &Shared, method: &Method, path: &str) -> Option<ApiError> {
    let mut faults = lock(&shared.faults);
    let i = faults.iter().position(|f| {
        f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str())) && path.contains(&f.path_contains)
    })?;
    let code = faults[i].code;
    if let Some(n) = &mut faults[i].times {
        *n -= 1;
        if *n == 0 {
            faults.remove(i);
        }
    }
    Some(ApiError::injected(code, format!("injected fault: {code} for {method} {path}")))
}

fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<()> {
    let Some(token) = &shared.token else { return Ok(()) };
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given == Some(token.as_str()) {
        return Ok(());
    }
    Err(ApiError { code: 401, reason: "Unauthorized", message: "Unauthorized".into(), details: Some(json!({})) })
}

/// What a path names.
enum Target {
    Collection { rt: Arc<ResourceType>, ns: Option<String> },
    Object { rt: Arc<ResourceType>, ns: Option<String>, name: String, sub: String },
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').next().is_some_and(|first| first.contains("as=APIGroupDiscoveryList")))
}

fn aggregated(body: Value) -> Response {
    let mut r = json_response(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList".parse().expect("static header"),
    );
    r
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let st = shared.state();
    let get_only = |r: Response| if method == Method::GET { Ok(r) } else { Err(ApiError::method_not_allowed()) };
    match segs.as_slice() {
        ["version"] => {
            return get_only(json_response(
                StatusCode::OK,
                json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-keelson-testserver", "gitCommit": "",
                       "gitTreeState": "clean", "buildDate": "", "goVersion": "", "compiler": "", "platform": "linux/amd64"}),
            ));
        }
        ["healthz" | "readyz" | "livez"] => return get_only((StatusCode::OK, "ok").into_response()),
        ["api"] => {
            if wants_aggregated(headers) {
                return get_only(aggregated(discovery_v2(&st, true)));
            }
            return get_only(json_response(
                StatusCode::OK,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
            ));
        }
        ["apis"] => {
            if wants_aggregated(headers) {
                return get_only(aggregated(discovery_v2(&st, false)));
            }
            let groups: Vec<Value> = st.catalog.groups().iter().map(|(g, vs)| api_group(g, vs)).collect();
            return get_only(json_response(
                StatusCode::OK,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        ["apis", group] => {
            let groups = st.catalog.groups();
            let (g, vs) = groups.iter().find(|(g, _)| g == group).ok_or_else(ApiError::no_route)?;
            let mut v = api_group(g, vs);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            return get_only(json_response(StatusCode::OK, v));
        }
        ["api", version] => return get_only(json_response(StatusCode::OK, resource_list(&st, "", version)?)),
        ["apis", group, version] => {
            return get_only(json_response(StatusCode::OK, resource_list(&st, group, version)?));
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route()),
    };
    let find = |plural: &str| st.catalog.find(group, version, plural).ok_or_else(ApiError::no_route);
    let target = match rest {
        [res] => Target::Collection { rt: find(res)?, ns: None },
        ["namespaces", ns, res] if st.catalog.find(group, version, res).is_some() => {
            Target::Collection { rt: find(res)?, ns: Some(ns.to_string()) }
        }
        ["namespaces", ns, res, name] => {
            Target::Object { rt: find(res)?, ns: Some(ns.to_string()), name: name.to_string(), sub: String::new() }
        }
        ["namespaces", ns, res, name, sub] => {
            Target::Object { rt: find(res)?, ns: Some(ns.to_string()), name: name.to_string(), sub: sub.to_string() }
        }
        [res, name] => Target::Object { rt: find(res)?, ns: None, name: name.to_string(), sub: String::new() },
        [res, name, sub] => Target::Object { rt: find(res)?, ns: None, name: name.to_string(), sub: sub.to_string() },
        _ => return Err(ApiError::no_route()),
    };
    drop(st);
    match target {
        Target::Collection { rt, ns } => {
            if ns.is_some() && !rt.namespaced {
                return Err(ApiError::no_route());
            }
            match *method {
                Method::GET if q.flag("watch") => {
                    shared.state().authorize("watch", &rt, ns.as_deref(), "")?;
                    watch(shared, rt, ns, q, headers)
                }
                Method::GET => {
                    let st = shared.state();
                    st.authorize("list", &rt, ns.as_deref(), "")?;
                    Ok(json_response(StatusCode::OK, list(&st, &rt, ns.as_deref(), q, headers)?))
                }
                Method::POST => {
                    if rt.namespaced && ns.is_none() {
                        return Err(ApiError::method_not_allowed());
                    }
                    let ctx = write_ctx(q, headers, "")?;
                    let v = parse_json(body)?;
                    let obj = shared.state().create(&rt, ns.as_deref(), v, &ctx)?;
                    Ok(json_response(StatusCode::CREATED, obj))
                }
                Method::DELETE => {
                    let mut st = shared.state();
                    st.authorize("deletecollection", &rt, ns.as_deref(), "")?;
                    let opts = delete_opts(q, body)?;
                    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default())
                        .map_err(ApiError::bad_request)?;
                    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default())
                        .map_err(ApiError::bad_request)?;
                    let mut items = Vec::new();
                    for o in st.all(&rt, ns.as_deref()) {
                        if !labels.matches(o.pointer("/metadata/labels")) || !fields.matches(&o) {
                            continue;
                        }
                        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                        let ons = o.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_string);
                        match st.delete(&rt, ons.as_deref(), &name, &opts)? {
                            Deleted::Gone(v) | Deleted::Pending(v) => items.push(strip_type(&rt, v)),
                        }
                    }
                    let rv = st.resource_version().to_string();
                    Ok(json_response(
                        StatusCode::OK,
                        json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv}, "items": items}),
                    ))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        Target::Object { rt, ns, name, sub } => {
            if rt.namespaced != ns.is_some() {
                return Err(ApiError::no_route());
            }
            if !(sub.is_empty() || sub == "status" && rt.status) {
                return Err(ApiError::no_route());
            }
            match *method {
                Method::GET => {
                    let st = shared.state();
                    st.authorize("get", &rt, ns.as_deref(), &name)?;
                    Ok(json_response(StatusCode::OK, shape_one(st.get(&rt, ns.as_deref(), &name)?, headers)))
                }
                Method::PUT => {
                    let ctx = write_ctx(q, headers, &sub)?;
                    let v = parse_json(body)?;
                    Ok(json_response(StatusCode::OK, shared.state().replace(&rt, ns.as_deref(), &name, v, &ctx)?))
                }
                Method::PATCH => patch(shared, &rt, ns.as_deref(), &name, &sub, q, headers, body),
                Method::DELETE if sub.is_empty() => {
                    let opts = delete_opts(q, body)?;
                    match shared.state().delete(&rt, ns.as_deref(), &name, &opts)? {
                        Deleted::Gone(v) => {
                            let mut details = Map::new();
                            details.insert("name".into(), json!(name));
                            if !rt.group.is_empty() {
                                details.insert("group".into(), json!(rt.group));
                            }
                            details.insert("kind".into(), json!(rt.plural));
                            details.insert("uid".into(), v.pointer("/metadata/uid").cloned().unwrap_or(Value::Null));
                            Ok(json_response(
                                StatusCode::OK,
                                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                            ))
                        }
                        Deleted::Pending(v) => Ok(json_response(StatusCode::OK, v)),
                    }
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
    }
}

fn api_group(g: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

fn resource_list(st: &State, group: &str, version: &str) -> Result<Value> {
    let types: Vec<&Arc<ResourceType>> =
        st.catalog.types().iter().filter(|t| t.group == group && t.version == version).collect();
    if types.is_empty() {
        return Err(ApiError::no_route());
    }
    let resources: Vec<Value> = types.iter().flat_map(|t| t.discovery()).collect();
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Ok(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn discovery_v2(st: &State, core: bool) -> Value {
    let mut items = Vec::new();
    let groups: Vec<(String, Vec<String>)> =
        if core { vec![(String::new(), vec!["v1".into()])] } else { st.catalog.groups() };
    for (g, versions) in groups {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> = st
                    .catalog
                    .types()
                    .iter()
                    .filter(|t| t.group == g && &t.version == v)
                    .map(|t| t.discovery_v2())
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn parse_json(body: &Bytes) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

fn write_ctx(q: &Query, headers: &HeaderMap, sub: &str) -> Result<WriteCtx> {
    let dry_run = match q.get("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => return Err(ApiError::bad_request(format!("Invalid dry run value: {other:?}"))),
    };
    let manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => {
            if m.len() > 128 {
                return Err(ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: "fieldManager: Too long: may not be more than 128 bytes".into(),
                    details: Some(json!({})),
                });
            }
            m.to_string()
        }
        _ => {
            // As the API server: the User-Agent's product name, empty without one (kube-rs
            // sends none, so its unnamed writes are recorded under manager "").
            let ua = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default();
            ua.split('/').next().unwrap_or_default().to_string()
        }
    };
    Ok(WriteCtx { manager, dry_run, subresource: sub.to_string() })
}

fn delete_opts(q: &Query, body: &Bytes) -> Result<DeleteOpts> {
    let b: Value = if body.is_empty() { json!({}) } else { parse_json(body)? };
    let dry_run = q.get("dryRun") == Some("All")
        || b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All"));
    let propagation = q
        .get("propagationPolicy")
        .map(str::to_string)
        .or_else(|| b.get("propagationPolicy").and_then(Value::as_str).map(str::to_string))
        .or_else(|| match b.get("orphanDependents").and_then(Value::as_bool) {
            Some(true) => Some("Orphan".into()),
            Some(false) => Some("Background".into()),
            None => None,
        });
    Ok(DeleteOpts {
        propagation,
        uid: b.pointer("/preconditions/uid").and_then(Value::as_str).map(str::to_string),
        resource_version: b.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(str::to_string),
        dry_run,
    })
}

#[allow(clippy::too_many_arguments)]
fn patch(
    shared: &Shared,
    rt: &ResourceType,
    ns: Option<&str>,
    name: &str,
    sub: &str,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media = ct.split(';').next().unwrap_or_default().trim();
    let force = match q.get("force") {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(ApiError::bad_request(format!("Invalid force value: {other:?}"))),
    };
    if q.get("force").is_some() && media != "application/apply-patch+yaml" {
        return Err(ApiError::bad_request("force may not be specified for non-apply patch"));
    }
    let ctx = write_ctx(q, headers, sub)?;
    match media {
        "application/apply-patch+yaml" => {
            if q.get("fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::bad_request(
                    "PATCH /apply requires fieldManager: fieldManager is required for apply requests",
                ));
            }
            let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the apply body is not UTF-8"))?;
            let config = crate::yaml::parse(text).map_err(ApiError::bad_request)?;
            let (obj, created) = shared.state().apply(rt, ns, name, config, &ctx, force)?;
            Ok(json_response(if created { StatusCode::CREATED } else { StatusCode::OK }, obj))
        }
        "application/merge-patch+json" => {
            let p = parse_json(body)?;
            Ok(json_response(StatusCode::OK, shared.state().merge_patch(rt, ns, name, &p, &ctx)?))
        }
        "application/json-patch+json" => {
            let p = parse_json(body)?;
            Ok(json_response(StatusCode::OK, shared.state().json_patch(rt, ns, name, &p, &ctx)?))
        }
        other => Err(ApiError::unsupported_media_type(
            other,
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        )),
    }
}

/// Built-in kinds' list items and watch objects carry no `kind`/`apiVersion`... in lists only.
fn strip_type(rt: &ResourceType, mut v: Value) -> Value {
    if rt.builtin
        && let Some(m) = v.as_object_mut()
    {
        m.shift_remove("apiVersion");
        m.shift_remove("kind");
    }
    v
}

fn metadata_only(headers: &HeaderMap, list: bool) -> bool {
    let want = if list { "as=PartialObjectMetadataList" } else { "as=PartialObjectMetadata" };
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| {
        a.split(',').next().is_some_and(|first| first.contains(want) && (list || !first.contains("List")))
    })
}

fn partial(v: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": v.get("metadata").cloned().unwrap_or(json!({}))})
}

fn shape_one(v: Value, headers: &HeaderMap) -> Value {
    if metadata_only(headers, false) { partial(&v) } else { v }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

fn list(st: &State, rt: &ResourceType, ns: Option<&str>, q: &Query, headers: &HeaderMap) -> Result<Value> {
    let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?;
    let current = st.resource_version();
    if q.get("resourceVersionMatch") == Some("Exact")
        && let Some(rv) = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok())
        && rv != current
    {
        return Err(ApiError::expired(format!("too old resource version: {rv} ({current})")));
    }
    let mut items: Vec<Value> = st
        .all(rt, ns)
        .into_iter()
        .filter(|o| labels.matches(o.pointer("/metadata/labels")) && fields.matches(o))
        .collect();
    let mut meta = Map::new();
    meta.insert("resourceVersion".into(), json!(current.to_string()));
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
            o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
        )
    };
    if let Some(token) = q.get("continue").filter(|t| !t.is_empty()) {
        let after = unhex(token).ok_or_else(|| ApiError::bad_request("continue key is not valid"))?;
        items.retain(|o| key(o) > after);
    }
    if let Some(limit) = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0)
        && items.len() > limit
    {
        let remaining = items.len() - limit;
        items.truncate(limit);
        meta.insert("continue".into(), json!(hex(&key(items.last().expect("limit > 0")))));
        meta.insert("remainingItemCount".into(), json!(remaining));
    }
    if metadata_only(headers, true) {
        let items: Vec<Value> = items.iter().map(partial).collect();
        return Ok(
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
        );
    }
    let items: Vec<Value> = items.into_iter().map(|o| strip_type(rt, o)).collect();
    Ok(json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items}))
}

struct WatchFilter {
    key: (String, String),
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.labels.matches(o.pointer("/metadata/labels")) && self.fields.matches(o)
    }

    /// The event a watcher with this filter sees, if any: selectors that start or stop
    /// matching turn a modification into ADDED or DELETED.
    fn view(&self, e: &Event) -> Option<(EventType, Value)> {
        if e.key != self.key || self.ns.as_ref().is_some_and(|n| n != &e.namespace) {
            return None;
        }
        let now = self.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.matches(p));
        match e.kind {
            EventType::Modified if now && !before => Some((EventType::Added, e.object.clone())),
            EventType::Modified if !now && before => Some((EventType::Deleted, e.object.clone())),
            _ if now => Some((e.kind, e.object.clone())),
            _ => None,
        }
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object})).unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    shared: &Shared,
    rt: Arc<ResourceType>,
    ns: Option<String>,
    q: &Query,
    headers: &HeaderMap,
) -> Result<Response> {
    let filter = WatchFilter {
        key: rt.key(),
        ns: ns.clone(),
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or_default()).map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(q.get("fieldSelector").unwrap_or_default()).map_err(ApiError::bad_request)?,
    };
    let meta_only = metadata_only(headers, true) || metadata_only(headers, false);
    let shape = {
        let rt = rt.clone();
        move |v: &Value| if meta_only { partial(v) } else { rt_served(&rt, v) }
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let initial_events = q.flag("sendInitialEvents");
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let bookmark = {
        let rt = rt.clone();
        move |rv: u64, end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            event_line("BOOKMARK", &json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta}))
        }
    };

    let (mut first, sub, start_rv): (Vec<Bytes>, broadcast::Receiver<Arc<Event>>, u64) = {
        let st = shared.state();
        let sub = st.events.subscribe();
        let current = st.resource_version();
        let rv = q.get("resourceVersion").filter(|r| !r.is_empty() && *r != "0");
        let mut lines = Vec::new();
        match rv {
            Some(rv) if !initial_events => {
                let rv: u64 =
                    rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv:?}")))?;
                match st.events_since(rv) {
                    Ok(evs) => {
                        for e in evs {
                            if let Some((k, o)) = filter.view(&e) {
                                lines.push(event_line(k.as_str(), &shape(&o)));
                            }
                        }
                    }
                    Err(e) => {
                        // The API server answers 200 and one ERROR event carrying the 410.
                        lines.push(event_line("ERROR", &e.body()));
                        return Ok(stream_response(lines, None));
                    }
                }
            }
            _ => {
                for o in st.all(&rt, ns.as_deref()) {
                    if filter.matches(&o) {
                        lines.push(event_line("ADDED", &shape(&o)));
                    }
                }
                if initial_events {
                    lines.push(bookmark(current, true));
                }
            }
        }
        (lines, sub, current)
    };

    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut shutdown = shared.shutdown.clone();
    let interval = shared.bookmark_interval;
    tokio::spawn(async move {
        let mut sub = sub;
        // Bookmarks carry the newest resourceVersion this watch has seen.
        let mut last = start_rv;
        for line in first.drain(..) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= last {
                            continue;
                        }
                        last = e.rv;
                        if let Some((k, o)) = filter.view(&e)
                            && tx.send(event_line(k.as_str(), &shape(&o))).await.is_err()
                        {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::expired("the watch fell behind the event stream; relist".into());
                        let _ = tx.send(event_line("ERROR", &e.body())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if bookmarks => {
                    if tx.send(bookmark(last, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(stream_response(Vec::new(), Some(rx)))
}

fn rt_served(rt: &ResourceType, v: &Value) -> Value {
    let mut o = v.clone();
    if !rt.builtin {
        o["apiVersion"] = json!(rt.api_version());
    }
    o
}

fn stream_response(lines: Vec<Bytes>, rx: Option<mpsc::Receiver<Bytes>>) -> Response {
    let head = futures_util::stream::iter(lines.into_iter().map(Ok::<Bytes, Infallible>));
    let tail = futures_util::stream::unfold(rx, |rx| async move {
        let mut rx = rx?;
        let b = rx.recv().await?;
        Some((Ok::<Bytes, Infallible>(b), Some(rx)))
    });
    let body = Body::from_stream(futures_util::StreamExt::chain(head, tail));
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, "application/json".parse().expect("static header"));
    r
}
