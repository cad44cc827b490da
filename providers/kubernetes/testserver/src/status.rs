//! `Status` bodies with the reasons, codes and messages of the Kubernetes API server.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::catalog::ResourceType;

/// An API error, answered as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `code` in the body).
    pub code: u16,
    /// `reason` (NotFound, AlreadyExists, Conflict, Invalid, Forbidden, ...).
    pub reason: &'static str,
    /// `message`.
    pub message: String,
    /// `details`, when the API server gives them.
    pub details: Option<Value>,
}

/// `pub type Result` of the crate's operations.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// One `details.causes` item.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldManagerConflict`...
    pub reason: &'static str,
    /// Human text.
    pub message: String,
    /// The field, in the API server's notation.
    pub field: String,
}

impl Cause {
    /// A missing required field.
    pub fn required(field: &str) -> Self {
        Cause { reason: "FieldValueRequired", message: "Required value".into(), field: field.into() }
    }

    /// A field whose value is not allowed; `value` is shown as JSON.
    pub fn invalid(field: &str, value: &Value, why: &str) -> Self {
        Cause { reason: "FieldValueInvalid", message: format!("Invalid value: {value}: {why}"), field: field.into() }
    }

    /// A field that may not be set (or changed) here.
    pub fn forbidden(field: &str, why: &str) -> Self {
        Cause { reason: "FieldValueForbidden", message: format!("Forbidden: {why}"), field: field.into() }
    }

    fn to_json(&self) -> Value {
        json!({"reason": self.reason, "message": self.message, "field": self.field})
    }
}

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), Value::String(name.into()));
    }
    if !rt.group.is_empty() {
        d.insert("group".into(), Value::String(rt.group.clone()));
    }
    d.insert("kind".into(), Value::String(rt.plural.clone()));
    Value::Object(d)
}

impl ApiError {
    /// The `Status` body.
    pub fn body(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!("Status"));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("metadata".into(), json!({}));
        m.insert("status".into(), json!("Failure"));
        m.insert("message".into(), Value::String(self.message.clone()));
        m.insert("reason".into(), Value::String(self.reason.into()));
        m.insert("details".into(), self.details.clone().unwrap_or_else(|| json!({})));
        m.insert("code".into(), json!(self.code));
        Value::Object(m)
    }

    /// 404 for a path no resource is served at.
    pub fn no_route() -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: "the server could not find the requested resource".into(),
            details: Some(json!({})),
        }
    }

    /// 404 `<resource>.<group> "<name>" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("{} {name:?} not found", rt.group_resource()),
            details: Some(details(rt, name)),
        }
    }

    /// 404 for a namespace that does not exist.
    pub fn namespace_not_found(ns: &str) -> Self {
        ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("namespaces {ns:?} not found"),
            details: Some(json!({"name": ns, "kind": "namespaces"})),
        }
    }

    /// 409 AlreadyExists.
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("{} {name:?} already exists", rt.group_resource()),
            details: Some(details(rt, name)),
        }
    }

    /// 409 AlreadyExists for a name whose previous object is still being deleted.
    pub fn being_deleted(rt: &ResourceType, name: &str) -> Self {
        ApiError {
            code: 409,
            reason: "AlreadyExists",
            message: format!("object is being deleted: {} {name:?} already exists", rt.group_resource()),
            details: Some(details(rt, name)),
        }
    }

    /// 409 Conflict on a stale `resourceVersion` (or a failed precondition).
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        ApiError {
            code: 409,
            reason: "Conflict",
            message: format!("Operation cannot be fulfilled on {} {name:?}: {why}", rt.group_resource()),
            details: Some(details(rt, name)),
        }
    }

    /// 409 Conflict of server-side apply, one cause per field (structured-merge-diff's wording).
    pub fn apply_conflict(conflicts: &[crate::apply::Conflict]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.path.to_string()})
            })
            .collect();
        let message = if let [c] = conflicts {
            format!("Apply failed with 1 conflict: conflict with {}: {}", c.manager, c.path)
        } else {
            let mut by_manager: Vec<(&str, Vec<String>)> = Vec::new();
            for c in conflicts {
                match by_manager.iter_mut().find(|(m, _)| *m == c.manager) {
                    Some((_, paths)) => paths.push(c.path.to_string()),
                    None => by_manager.push((&c.manager, vec![c.path.to_string()])),
                }
            }
            by_manager.sort_by(|a, b| a.0.cmp(b.0));
            let mut lines = Vec::new();
            for (m, paths) in by_manager {
                lines.push(format!("conflicts with {m}:"));
                lines.extend(paths.into_iter().map(|p| format!("- {p}")));
            }
            format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
        };
        ApiError { code: 409, reason: "Conflict", message, details: Some(json!({"causes": causes})) }
    }

    /// 422 Invalid with field causes.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let parts: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let listed = if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) };
        let qualified = if rt.group.is_empty() { rt.kind.clone() } else { format!("{}.{}", rt.kind, rt.group) };
        let mut d = Map::new();
        d.insert("name".into(), Value::String(name.into()));
        if !rt.group.is_empty() {
            d.insert("group".into(), Value::String(rt.group.clone()));
        }
        d.insert("kind".into(), Value::String(rt.kind.clone()));
        d.insert("causes".into(), Value::Array(causes.iter().map(Cause::to_json).collect()));
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{qualified} {name:?} is invalid: {listed}"),
            details: Some(Value::Object(d)),
        }
    }

    /// 403 Forbidden, as RBAC words it.
    pub fn forbidden(rt: &ResourceType, name: &str, verb: &str, ns: Option<&str>, user: &str) -> Self {
        let what = if name.is_empty() { rt.group_resource() } else { format!("{} {name:?}", rt.group_resource()) };
        let scope = match ns {
            Some(ns) => format!(" in the namespace {ns:?}"),
            None => " at the cluster scope".into(),
        };
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{what} is forbidden: User {user:?} cannot {verb} resource {:?} in API group {:?}{scope}",
                rt.plural, rt.group
            ),
            details: Some(details(rt, name)),
        }
    }

    /// 403 Forbidden for new content in a terminating namespace.
    pub fn namespace_terminating(rt: &ResourceType, name: &str, ns: &str) -> Self {
        let mut d = details(rt, name);
        d["causes"] = json!([{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]);
        ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                rt.group_resource()
            ),
            details: Some(d),
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: "the server does not allow this method on the requested resource".into(),
            details: Some(json!({})),
        }
    }

    /// 410 for a resourceVersion older than the watch history (reason `Expired`, as the watch
    /// cache answers; `Gone` is the older spelling of the same code).
    pub fn expired(message: String) -> Self {
        ApiError { code: 410, reason: "Expired", message, details: None }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { code: 400, reason: "BadRequest", message: message.into(), details: None }
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
            details: Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": content_type}]})),
        }
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            code: 500,
            reason: "InternalError",
            message: format!("Internal error occurred: {message}"),
            details: Some(json!({"causes": [{"message": message}]})),
        }
    }

    /// An injected fault with any code; the reason follows the code as the API server's would.
    pub fn injected(code: u16, message: String) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "Unknown",
        };
        ApiError { code, reason, message, details: Some(json!({})) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, axum::Json(self.body())).into_response();
        if self.code == 429 {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        resp
    }
}
