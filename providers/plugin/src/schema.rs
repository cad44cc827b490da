//! The protocol's JSON Schemas (`providers/plugin/schemas/*.json`), embedded, and the check of one
//! message against one of them.
//!
//! The files are what third parties read and point their editors at; each names the shared types
//! by a relative `$ref` into `common.json`. The host bundles every schema with `common.json`'s
//! definitions once (no retrieval at run time), and reports the first violation of a message as
//! a JSON pointer into the line the plugin wrote, with what was expected there.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use jsonschema::Validator;
use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::Value;

/// Every schema file of the protocol, by file name.
pub const FILES: [(&str, &str); 23] = [
    ("common.json", include_str!("../schemas/common.json")),
    ("request.json", include_str!("../schemas/request.json")),
    ("response.json", include_str!("../schemas/response.json")),
    ("notification.json", include_str!("../schemas/notification.json")),
    ("event.json", include_str!("../schemas/event.json")),
    ("describe.params.json", include_str!("../schemas/describe.params.json")),
    ("describe.result.json", include_str!("../schemas/describe.result.json")),
    ("render.params.json", include_str!("../schemas/render.params.json")),
    ("render.result.json", include_str!("../schemas/render.result.json")),
    ("observe.params.json", include_str!("../schemas/observe.params.json")),
    ("observe.result.json", include_str!("../schemas/observe.result.json")),
    ("apply.params.json", include_str!("../schemas/apply.params.json")),
    ("apply.result.json", include_str!("../schemas/apply.result.json")),
    ("delete.params.json", include_str!("../schemas/delete.params.json")),
    ("delete.result.json", include_str!("../schemas/delete.result.json")),
    ("health.params.json", include_str!("../schemas/health.params.json")),
    ("health.result.json", include_str!("../schemas/health.result.json")),
    ("setWeights.params.json", include_str!("../schemas/setWeights.params.json")),
    ("setWeights.result.json", include_str!("../schemas/setWeights.result.json")),
    ("weights.params.json", include_str!("../schemas/weights.params.json")),
    ("weights.result.json", include_str!("../schemas/weights.result.json")),
    ("query.params.json", include_str!("../schemas/query.params.json")),
    ("query.result.json", include_str!("../schemas/query.result.json")),
];

/// One way a message breaks its schema: where, and what was expected there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The schema file the message was checked against.
    pub schema: &'static str,
    /// JSON pointer into the message as the plugin wrote it (`/result/outcome`).
    pub pointer: String,
    /// What is wrong at that pointer.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() { "(the whole message)" } else { &self.pointer };
        write!(f, "{at}: {} (schema {})", self.message, self.schema)
    }
}

/// Checks `value` against the schema file `schema`; `prefix` is the pointer of `value` inside
/// the whole message (`/result` for a result), so the pointer names the place in the line.
pub fn check(schema: &'static str, value: &Value, prefix: &str) -> Result<(), Violation> {
    let validators = validators();
    let Some(validator) = validators.get(schema) else {
        return Err(Violation { schema, pointer: String::new(), message: "no such schema in this build".into() });
    };
    let validator = match validator {
        Ok(v) => v,
        Err(e) => {
            return Err(Violation {
                schema,
                pointer: String::new(),
                message: format!("the schema does not compile: {e}"),
            });
        }
    };
    // One error, the same every time (by pointer): a plugin author fixes them one by one anyway.
    let mut errors: Vec<(String, String)> =
        validator.iter_errors(value).map(|e| describe(&e, prefix)).collect::<Vec<_>>();
    errors.sort_by(|a, b| a.0.cmp(&b.0));
    match errors.into_iter().next() {
        None => Ok(()),
        Some((pointer, message)) => Err(Violation { schema, pointer, message }),
    }
}

/// The schema text of `file` (for `keelson` to print, and for tests).
pub fn text(file: &str) -> Option<&'static str> {
    FILES.iter().find(|(name, _)| *name == file).map(|(_, text)| *text)
}

type Compiled = BTreeMap<&'static str, Result<Validator, String>>;

fn validators() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let common: Value = serde_json::from_str(FILES[0].1).unwrap_or(Value::Null);
        let defs = common.get("$defs").cloned().unwrap_or_default();
        FILES
            .iter()
            .skip(1)
            .map(|(name, text)| {
                let compiled = serde_json::from_str::<Value>(text)
                    .map_err(|e| e.to_string())
                    .map(|schema| bundle(schema, &defs))
                    .and_then(|schema| jsonschema::draft202012::new(&schema).map_err(|e| e.to_string()));
                (*name, compiled)
            })
            .collect()
    })
}

/// `schema` with `common.json`'s definitions inside it and its `common.json#…` references made local.
fn bundle(mut schema: Value, common_defs: &Value) -> Value {
    fn localise(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get_mut("$ref")
                    && let Some(rest) = r.strip_prefix("common.json")
                {
                    *r = rest.to_owned();
                }
                map.values_mut().for_each(localise);
            }
            Value::Array(items) => items.iter_mut().for_each(localise),
            _ => {}
        }
    }
    localise(&mut schema);
    if let (Some(root), Some(defs)) = (schema.as_object_mut(), common_defs.as_object()) {
        let own = root.entry("$defs").or_insert_with(|| Value::Object(Default::default()));
        if let Some(own) = own.as_object_mut() {
            for (k, v) in defs {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    schema
}

/// (pointer, message) of one validation error.
fn describe(error: &jsonschema::ValidationError<'_>, prefix: &str) -> (String, String) {
    let pointer = format!("{prefix}{}", error.instance_path().as_str());
    let got = describe_value(error.instance());
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let field = property.as_str().unwrap_or_default();
            (format!("{pointer}/{field}"), "missing required field".to_owned())
        }
        ValidationErrorKind::Type { kind } => (pointer, format!("expected {}, got {got}", type_text(kind))),
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<String> =
                options.as_array().map(|a| a.iter().map(|v| format!("`{}`", plain(v))).collect()).unwrap_or_default();
            (pointer, format!("expected one of {}, got {got}", choices.join(", ")))
        }
        ValidationErrorKind::Constant { expected_value } => {
            (pointer, format!("expected `{}`, got {got}", plain(expected_value)))
        }
        ValidationErrorKind::OneOfNotValid { .. } => {
            (pointer, "matches none of the alternatives the protocol allows here".to_owned())
        }
        ValidationErrorKind::OneOfMultipleValid { .. } => {
            (pointer, "matches more than one alternative; exactly one is allowed here".to_owned())
        }
        ValidationErrorKind::Not { .. } => (pointer, "has a field the protocol forbids here".to_owned()),
        _ => (pointer, error.to_string()),
    }
}

fn type_text(kind: &TypeKind) -> String {
    let article = |t: String| match t.as_str() {
        "object" => "an object".to_owned(),
        "array" => "an array".to_owned(),
        "integer" => "an integer".to_owned(),
        "null" => "null".to_owned(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => article(t.to_string()),
        TypeKind::Multiple(set) => set.iter().map(|t| article(t.to_string())).collect::<Vec<_>>().join(" or "),
    }
}

fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::String(s) if s.chars().count() > 60 => format!("\"{}…\"", s.chars().take(57).collect::<String>()),
        other => other.to_string(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_parses_names_itself_and_compiles() {
        for (name, text) in FILES {
            let schema: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let id = schema["$id"].as_str().unwrap_or_default();
            assert_eq!(id, format!("https://keelson.dev/schemas/plugin/v1/{name}"), "{name}");
            if name != "common.json" {
                assert!(validators()[name].is_ok(), "{name}: {:?}", validators()[name].as_ref().err());
            }
        }
    }

    #[test]
    fn a_missing_field_and_a_wrong_type_are_named_by_pointer() {
        let missing = check("apply.result.json", &json!({}), "/result").unwrap_err();
        assert_eq!(missing.pointer, "/result/outcome");
        assert_eq!(missing.message, "missing required field");
        let wrong = check("apply.result.json", &json!({"outcome": 5}), "/result").unwrap_err();
        assert_eq!(wrong.pointer, "/result/outcome");
        assert!(wrong.message.starts_with("expected one of `created`, `updated`"), "{wrong}");
        let nested = check(
            "observe.result.json",
            &json!({"results": [{"id": {"instance": "dns", "apiVersion": "v1", "kind": "Record", "name": "a"},
                                 "observed": {"digest": 7, "spec": {}}}]}),
            "/result",
        )
        .unwrap_err();
        assert_eq!(nested.pointer, "/result/results/0/observed/digest");
        assert_eq!(nested.message, "expected null or a string, got 7");
    }

    #[test]
    fn an_error_reason_must_come_with_its_class() {
        let error =
            |data: Value| json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "m", "data": data}});
        assert!(check("response.json", &error(json!({"class": "terminal", "reason": "invalidSpec"})), "").is_ok());
        let v = check("response.json", &error(json!({"class": "transient", "reason": "invalidSpec"})), "").unwrap_err();
        assert_eq!(v.pointer, "/error/data/class", "{v}");
        let v = check("response.json", &error(json!({"reason": "failed"})), "").unwrap_err();
        assert_eq!(v.pointer, "/error/data/class", "{v}");
    }

    #[test]
    fn a_response_has_a_result_or_an_error_never_both() {
        assert!(check("response.json", &json!({"jsonrpc": "2.0", "id": 3, "result": null}), "").is_ok());
        let both = json!({"jsonrpc": "2.0", "id": 3, "result": {}, "error": {"code": 1, "message": "m"}});
        assert!(check("response.json", &both, "").is_err());
        let neither = check("response.json", &json!({"jsonrpc": "2.0", "id": 3}), "").unwrap_err();
        assert_eq!(neither.pointer, "");
        let version = check("response.json", &json!({"jsonrpc": "1.0", "id": 3, "result": 1}), "").unwrap_err();
        assert_eq!((version.pointer.as_str(), version.message.as_str()), ("/jsonrpc", "expected `2.0`, got \"1.0\""));
    }
}
