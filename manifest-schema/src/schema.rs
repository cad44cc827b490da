//! Embedded JSON Schemas (draft 2020-12), one per kind and version, and validation against them.
//!
//! Schema errors are turned into [`Diagnostic`]s at the position of the offending YAML node, with
//! a stable rule name and a message written for the person who edits the file. Two non-standard
//! annotation keywords feed those messages: `x-expected` (what a value should look like) and
//! `x-message` (what an `anyOf`/`oneOf` alternative means). Validators ignore both.

use std::fmt;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{ValidationError, Validator};
use serde_json::Value;

use crate::suggest::closest;
use crate::yaml::{Document, Position, Spans, pointer_push, pointer_tokens};
use crate::{API_VERSION, Diagnostic};

/// The kinds of document this release reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `apps/<name>/deploy.yaml`.
    App,
    /// `policies/*.yaml`.
    Policy,
    /// The daemon's `keelson.yaml`.
    Config,
}

impl Kind {
    /// Every kind, in documentation order.
    pub const ALL: [Kind; 3] = [Kind::App, Kind::Policy, Kind::Config];

    /// The `kind:` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::App => "App",
            Kind::Policy => "Policy",
            Kind::Config => "Config",
        }
    }

    /// The kind named by a `kind:` value.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One embedded schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaFile {
    /// The `apiVersion:` it validates.
    pub api_version: &'static str,
    /// The kind it validates.
    pub kind: Kind,
    /// File name under `manifest-schema/schemas/`.
    pub file_name: &'static str,
    /// The schema's `$id`, for the yaml-language-server modeline.
    pub id: &'static str,
    /// The schema text.
    pub json: &'static str,
}

/// Every embedded schema; one entry per (apiVersion, kind).
pub const SCHEMAS: [SchemaFile; 3] = [
    SchemaFile {
        api_version: API_VERSION,
        kind: Kind::App,
        file_name: "app.v1alpha1.json",
        id: "https://keelson.dev/schemas/app.v1alpha1.json",
        json: include_str!("../schemas/app.v1alpha1.json"),
    },
    SchemaFile {
        api_version: API_VERSION,
        kind: Kind::Policy,
        file_name: "policy.v1alpha1.json",
        id: "https://keelson.dev/schemas/policy.v1alpha1.json",
        json: include_str!("../schemas/policy.v1alpha1.json"),
    },
    SchemaFile {
        api_version: API_VERSION,
        kind: Kind::Config,
        file_name: "config.v1alpha1.json",
        id: "https://keelson.dev/schemas/config.v1alpha1.json",
        json: include_str!("../schemas/config.v1alpha1.json"),
    },
];

/// The supported `kind:` values.
pub const SUPPORTED_KINDS: [&str; 3] = ["App", "Policy", "Config"];

/// The supported `apiVersion:` values.
pub const SUPPORTED_API_VERSIONS: [&str; 1] = [API_VERSION];

/// The schema text of `kind` at the current [`API_VERSION`].
pub fn for_kind(kind: &str) -> Option<&'static str> {
    for_version_kind(API_VERSION, kind).map(|s| s.json)
}

/// The embedded schema for an (apiVersion, kind) pair.
pub fn for_version_kind(api_version: &str, kind: &str) -> Option<&'static SchemaFile> {
    SCHEMAS.iter().find(|s| s.api_version == api_version && s.kind.as_str() == kind)
}

/// The supported kinds, in documentation order.
pub fn supported_kinds() -> &'static [&'static str] {
    &SUPPORTED_KINDS
}

struct Compiled {
    root: Value,
    validator: Result<Validator, String>,
}

fn compiled(kind: Kind) -> &'static Compiled {
    static CELLS: [OnceLock<Compiled>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    CELLS[kind.index()].get_or_init(|| {
        let text = SCHEMAS[kind.index()].json;
        let root: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let validator = jsonschema::draft202012::new(&root).map_err(|e| e.to_string());
        Compiled { root, validator }
    })
}

/// Reads `apiVersion` and `kind`; reports unknown ones naming the supported values.
pub fn detect_kind(file: &str, doc: &Document) -> Result<Kind, Vec<Diagnostic>> {
    let Value::Object(map) = &doc.value else {
        return Err(vec![Diagnostic::error(
            file,
            doc.spans.locate_value(""),
            "",
            "manifest.not-a-mapping",
            format!("expected a mapping with `apiVersion` and `kind`, got {}", describe_value(&doc.value)),
        )]);
    };
    let mut errors = Vec::new();
    let start = doc.spans.locate_value("");
    match map.get("apiVersion") {
        Some(Value::String(v)) if SUPPORTED_API_VERSIONS.contains(&v.as_str()) => {}
        Some(v) => {
            let mut d = Diagnostic::error(
                file,
                doc.spans.locate_value("/apiVersion"),
                "/apiVersion",
                "manifest.api-version",
                format!(
                    "unsupported apiVersion {}; supported: {}",
                    describe_value(v),
                    SUPPORTED_API_VERSIONS.join(", ")
                ),
            );
            if let Some(s) = v.as_str().and_then(|s| closest(s, SUPPORTED_API_VERSIONS)) {
                d = d.with_hint(format!("did you mean `{s}`?"));
            }
            errors.push(d);
        }
        None => errors.push(Diagnostic::error(
            file,
            start,
            "",
            "manifest.api-version",
            format!("missing `apiVersion`; supported: {}", SUPPORTED_API_VERSIONS.join(", ")),
        )),
    }
    let kind = match map.get("kind") {
        Some(Value::String(k)) if Kind::from_name(k).is_some() => Kind::from_name(k),
        Some(v) => {
            let mut d = Diagnostic::error(
                file,
                doc.spans.locate_value("/kind"),
                "/kind",
                "manifest.kind",
                format!("unknown kind {}; supported kinds: {}", describe_value(v), SUPPORTED_KINDS.join(", ")),
            );
            if let Some(s) = v.as_str().and_then(|s| closest(s, SUPPORTED_KINDS)) {
                d = d.with_hint(format!("did you mean `{s}`?"));
            }
            errors.push(d);
            None
        }
        None => {
            errors.push(Diagnostic::error(
                file,
                start,
                "",
                "manifest.kind",
                format!("missing `kind`; supported kinds: {}", SUPPORTED_KINDS.join(", ")),
            ));
            None
        }
    };
    match kind {
        Some(kind) if errors.is_empty() => Ok(kind),
        _ => Err(errors),
    }
}

/// Validates a document against the schema of `kind`; every violation, each at its node.
pub fn validate(file: &str, doc: &Document, kind: Kind) -> Vec<Diagnostic> {
    let compiled = compiled(kind);
    let validator = match &compiled.validator {
        Ok(v) => v,
        Err(e) => {
            return vec![Diagnostic::error(
                file,
                Position::START,
                "",
                "schema.internal",
                format!("the embedded {kind} schema does not compile: {e}"),
            )];
        }
    };
    let ctx = Context { file, spans: &doc.spans, root: &compiled.root };
    let mut out = Vec::new();
    for error in validator.iter_errors(&doc.value) {
        ctx.convert(&error, &mut out);
    }
    out.sort_by(|a, b| (a.line, a.col, &a.rule).cmp(&(b.line, b.col, &b.rule)));
    out.dedup();
    out
}

/// Validates a document against a schema given at run time (e.g. the settings a provider type
/// declares), with the same positions and messages as the embedded schemas. `schema` must describe
/// the whole document; an invalid schema is one error at the top of the file.
pub fn validate_with(file: &str, doc: &Document, schema: &Value) -> Vec<Diagnostic> {
    let validator = match jsonschema::draft202012::new(schema) {
        Ok(v) => v,
        Err(e) => {
            return vec![Diagnostic::error(
                file,
                Position::START,
                "",
                "schema.internal",
                format!("a provider's settings schema does not compile: {e}"),
            )];
        }
    };
    let ctx = Context { file, spans: &doc.spans, root: schema };
    let mut out = Vec::new();
    for error in validator.iter_errors(&doc.value) {
        ctx.convert(&error, &mut out);
    }
    out.sort_by(|a, b| (a.line, a.col, &a.rule).cmp(&(b.line, b.col, &b.rule)));
    out.dedup();
    out
}

struct Context<'a> {
    file: &'a str,
    spans: &'a Spans,
    root: &'a Value,
}

impl Context<'_> {
    fn convert(&self, error: &ValidationError<'_>, out: &mut Vec<Diagnostic>) {
        let pointer = error.instance_path().as_str();
        let schema_path = error.schema_path().as_str();
        // The keyword's own schema object: where `x-expected`, `properties` and bounds live.
        let node = schema_node(self.root, schema_path);
        let name = display_name(pointer);
        let got = describe_value(error.instance());
        let at_value = self.spans.locate_value(pointer);
        let at_key = self.spans.locate_key(pointer);
        let diag =
            |pos: Position, rule: &str, message: String| Diagnostic::error(self.file, pos, pointer, rule, message);
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed: Vec<&str> = node
                    .and_then(|n| n.get("properties"))
                    .and_then(Value::as_object)
                    .map(|m| m.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                for key in unexpected {
                    let child = pointer_push(pointer, key);
                    let pos = self.spans.locate_key(&child);
                    let mut d = Diagnostic::error(
                        self.file,
                        pos,
                        &child,
                        "schema.unknown-field",
                        format!("unknown field `{key}` in {name}"),
                    );
                    d = match closest(key, allowed.iter().copied()) {
                        Some(s) => d.with_hint(format!("did you mean `{s}`?")),
                        None if !allowed.is_empty() => d.with_hint(format!("allowed fields: {}", allowed.join(", "))),
                        None => d,
                    };
                    out.push(d);
                }
            }
            ValidationErrorKind::Required { property } => {
                let prop = property.as_str().unwrap_or_default();
                out.push(diag(at_key, "schema.required", format!("{name}: missing required field `{prop}`")));
            }
            ValidationErrorKind::Type { kind } => {
                let has_bounds = node.is_some_and(|n| {
                    ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"].iter().any(|k| n.get(k).is_some())
                });
                let expected = expected_text(node).unwrap_or_else(|| {
                    if has_bounds && matches!(kind, TypeKind::Single(_)) { bounds_text(node) } else { type_text(kind) }
                });
                out.push(diag(at_value, "schema.type", format!("{name}: expected {expected}, got {got}")));
            }
            ValidationErrorKind::Enum { options } => {
                let choices: Vec<String> = options
                    .as_array()
                    .map(|a| a.iter().map(|v| format!("`{}`", plain(v))).collect())
                    .unwrap_or_default();
                let mut d =
                    diag(at_value, "schema.enum", format!("{name}: expected one of {}, got {got}", choices.join(", ")));
                if let (Some(s), Some(opts)) = (error.instance().as_str(), options.as_array()) {
                    let names: Vec<&str> = opts.iter().filter_map(Value::as_str).collect();
                    if let Some(c) = closest(s, names.iter().copied()) {
                        d = d.with_hint(format!("did you mean `{c}`?"));
                    }
                }
                out.push(d);
            }
            ValidationErrorKind::Constant { expected_value } => out.push(diag(
                at_value,
                "schema.const",
                format!("{name}: expected `{}`, got {got}", plain(expected_value)),
            )),
            ValidationErrorKind::Minimum { .. }
            | ValidationErrorKind::Maximum { .. }
            | ValidationErrorKind::ExclusiveMinimum { .. }
            | ValidationErrorKind::ExclusiveMaximum { .. }
            | ValidationErrorKind::MultipleOf { .. } => {
                let expected = expected_text(node).unwrap_or_else(|| bounds_text(node));
                out.push(diag(at_value, "schema.range", format!("{name}: expected {expected}, got {got}")));
            }
            ValidationErrorKind::MinLength { limit } => {
                let expected = expected_text(node).unwrap_or_else(|| {
                    if *limit == 1 { "a non-empty string".to_string() } else { format!("at least {limit} characters") }
                });
                out.push(diag(at_value, "schema.length", format!("{name}: expected {expected}, got {got}")));
            }
            ValidationErrorKind::MaxLength { limit } => out.push(diag(
                at_value,
                "schema.length",
                format!("{name}: expected at most {limit} characters, got {got}"),
            )),
            ValidationErrorKind::Pattern { pattern } => {
                let expected = expected_text(node).unwrap_or_else(|| format!("text matching `{pattern}`"));
                out.push(diag(at_value, "schema.pattern", format!("{name}: expected {expected}, got {got}")));
            }
            ValidationErrorKind::MinItems { limit } => out.push(diag(
                at_value,
                "schema.items",
                format!("{name}: expected at least {limit} item(s), got {got}"),
            )),
            ValidationErrorKind::MaxItems { limit } => {
                out.push(diag(at_value, "schema.items", format!("{name}: expected at most {limit} item(s), got {got}")))
            }
            ValidationErrorKind::UniqueItems => {
                out.push(diag(at_value, "schema.unique", format!("{name}: items must be unique")))
            }
            ValidationErrorKind::MinProperties { .. } => {
                out.push(diag(at_value, "schema.empty", format!("{name}: must not be empty")))
            }
            ValidationErrorKind::PropertyNames { error: inner } => {
                let key = inner.instance().as_str().unwrap_or_default().to_string();
                let child = pointer_push(pointer, &key);
                let inner_node = schema_node(self.root, inner.schema_path().as_str());
                let expected = expected_text(inner_node)
                    .or_else(|| expected_text(node.and_then(|n| n.get("propertyNames"))))
                    .unwrap_or_else(|| "a valid key".to_string());
                out.push(Diagnostic::error(
                    self.file,
                    self.spans.locate_key(&child),
                    &child,
                    "schema.key",
                    format!("{name}: key `{key}` is not {expected}"),
                ));
            }
            ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
                let rule = if matches!(error.kind(), ValidationErrorKind::AnyOf { .. }) {
                    "schema.any-of"
                } else {
                    "schema.one-of"
                };
                if let Some(message) = node.and_then(|n| n.get("x-message")).and_then(Value::as_str) {
                    out.push(diag(at_key, rule, format!("{name}: {message}")));
                } else if let Some(best) = context.iter().min_by_key(|branch| branch.len()) {
                    // Without a curated message, the alternative that came closest explains best.
                    for e in best {
                        self.convert(e, out);
                    }
                } else {
                    out.push(diag(at_key, rule, format!("{name}: {error}")));
                }
            }
            ValidationErrorKind::OneOfMultipleValid { .. } => {
                let message = node
                    .and_then(|n| n.get("x-message"))
                    .and_then(Value::as_str)
                    .unwrap_or("matches more than one alternative");
                out.push(diag(at_key, "schema.one-of", format!("{name}: {message}")));
            }
            ValidationErrorKind::FalseSchema => {
                out.push(diag(at_key, "schema.unknown-field", format!("{name} is not allowed here")))
            }
            _ => out.push(diag(at_value, "schema.invalid", format!("{name}: {error}"))),
        }
    }
}

/// The schema object holding the keyword at `schema_path`.
fn schema_node<'a>(root: &'a Value, schema_path: &str) -> Option<&'a Value> {
    let tokens = pointer_tokens(schema_path);
    let parent = &tokens[..tokens.len().saturating_sub(1)];
    let mut node = root;
    for t in parent {
        node = match node {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn expected_text(node: Option<&Value>) -> Option<String> {
    node?.get("x-expected").and_then(Value::as_str).map(str::to_string)
}

fn type_text(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => article(&t.to_string()),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| article(&t.to_string())).collect();
            names.join(" or ")
        }
    }
}

fn article(type_name: &str) -> String {
    match type_name {
        "object" => "a mapping".to_string(),
        "array" => "a list".to_string(),
        "integer" => "an integer".to_string(),
        "null" => "nothing".to_string(),
        other => format!("a {other}"),
    }
}

fn bounds_text(node: Option<&Value>) -> String {
    let Some(node) = node else {
        return "a number in range".to_string();
    };
    let base = match node.get("type").and_then(Value::as_str) {
        Some("integer") => "an integer",
        _ => "a number",
    };
    let num = |k: &str| node.get(k).map(plain);
    let mut parts = Vec::new();
    if let Some(v) = num("minimum") {
        parts.push(format!("≥ {v}"));
    }
    if let Some(v) = num("exclusiveMinimum") {
        parts.push(format!("> {v}"));
    }
    if let Some(v) = num("maximum") {
        parts.push(format!("≤ {v}"));
    }
    if let Some(v) = num("exclusiveMaximum") {
        parts.push(format!("< {v}"));
    }
    if parts.is_empty() { base.to_string() } else { format!("{base} {}", parts.join(" and ")) }
}

/// A value as the user wrote it: strings quoted, collections summarised.
pub(crate) fn describe_value(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".to_string(),
        Value::Object(_) => "a mapping".to_string(),
        Value::Array(_) => "a list".to_string(),
        Value::String(s) if s.chars().count() > 60 => {
            let short: String = s.chars().take(57).collect();
            format!("\"{short}...\"")
        }
        other => other.to_string(),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Short name of the node at `pointer` for messages: its key, with any list indices
/// (`steps[2]`); the full pointer is printed beside it anyway.
pub(crate) fn display_name(pointer: &str) -> String {
    let tokens = pointer_tokens(pointer);
    let Some(last_key) = tokens.iter().rposition(|t| t.parse::<usize>().is_err()) else {
        return match tokens.first() {
            Some(t) => format!("item {t}"),
            None => "document".to_string(),
        };
    };
    let mut out = tokens[last_key].clone();
    for t in &tokens[last_key + 1..] {
        out.push_str(&format!("[{t}]"));
    }
    out
}

#[cfg(test)]
mod tests;
