//! One file at a time: YAML → kind → schema → semantic checks → typed manifest.
//!
//! Everything here depends only on a file's bytes (and, for [`check_file`], its path), which is
//! what lets the loader cache results by blob id.

use serde::de::DeserializeOwned;

use crate::schema::{self, Kind};
use crate::yaml::{self, Document, Position};
use crate::{App, Config, Diagnostic, Policy, semantic};

/// A validated document of a known kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    /// An `App`.
    App(Box<App>),
    /// A `Policy`.
    Policy(Box<Policy>),
    /// A `Config`.
    Config(Box<Config>),
}

impl Manifest {
    /// Which kind this is.
    pub fn kind(&self) -> Kind {
        match self {
            Manifest::App(_) => Kind::App,
            Manifest::Policy(_) => Kind::Policy,
            Manifest::Config(_) => Kind::Config,
        }
    }
}

/// One document with what validation found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedDocument {
    /// The parsed document with its positions.
    pub document: Document,
    /// Its kind, when `apiVersion` and `kind` were recognised.
    pub kind: Option<Kind>,
    /// The typed manifest, present only when there are no errors.
    pub manifest: Option<Manifest>,
    /// Problems in this document.
    pub diagnostics: Vec<Diagnostic>,
}

/// A whole file with what validation found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckedFile {
    /// Its non-empty documents.
    pub documents: Vec<CheckedDocument>,
    /// Problems of the file as a whole (size, encoding, YAML syntax).
    pub diagnostics: Vec<Diagnostic>,
}

impl CheckedFile {
    /// Every diagnostic of the file and its documents, in position order.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> =
            self.diagnostics.iter().chain(self.documents.iter().flat_map(|d| &d.diagnostics)).cloned().collect();
        all.sort_by_key(|d| (d.line, d.col));
        all
    }

    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().chain(self.documents.iter().flat_map(|d| &d.diagnostics)).any(Diagnostic::is_error)
    }
}

/// Parses and validates every document of a file, whatever its kind.
pub fn check_bytes(file: &str, bytes: &[u8]) -> CheckedFile {
    match yaml::parse(file, bytes) {
        Err(diagnostics) => CheckedFile { documents: Vec::new(), diagnostics },
        Ok(docs) => CheckedFile {
            documents: docs.into_iter().map(|d| check_document(file, d)).collect(),
            diagnostics: Vec::new(),
        },
    }
}

/// Validates one parsed document: kind, schema, semantic checks, then the typed value.
pub fn check_document(file: &str, document: Document) -> CheckedDocument {
    let kind = match schema::detect_kind(file, &document) {
        Ok(kind) => kind,
        Err(diagnostics) => {
            return CheckedDocument { document, kind: None, manifest: None, diagnostics };
        }
    };
    let mut diagnostics = schema::validate(file, &document, kind);
    // Semantic checks read the raw value, so they run even when the schema failed elsewhere and
    // one pass reports every problem; they skip nodes whose type the schema already rejected.
    let mut semantic = match kind {
        Kind::App => semantic::check_app_document(file, &document),
        Kind::Policy => semantic::check_policy_document(file, &document),
        Kind::Config => crate::config::check_config_document(file, &document),
    };
    semantic.extend(crate::not_built::diagnostics(file, kind, &document));
    let fresh: Vec<Diagnostic> =
        semantic.into_iter().filter(|s| !diagnostics.iter().any(|d| d.pointer == s.pointer)).collect();
    diagnostics.extend(fresh);
    let manifest = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        let typed = match kind {
            Kind::App => typed(&document).map(|a| Manifest::App(Box::new(a))),
            Kind::Policy => typed(&document).map(|p| Manifest::Policy(Box::new(p))),
            Kind::Config => typed(&document).map(|c| Manifest::Config(Box::new(c))),
        };
        match typed {
            Ok(m) => Some(m),
            Err(e) => {
                // The schema and the Rust types disagree (a bug here, not in the user's file); say
                // where, when the error names a value the document holds.
                diagnostics.push(match locate_typed_error(&document, &e.to_string()) {
                    Some((pointer, found, expected)) => Diagnostic::error(
                        file,
                        document.spans.locate_value(&pointer),
                        &pointer,
                        "schema.range",
                        format!("{found} is out of range here: expected {expected}"),
                    ),
                    None => Diagnostic::error(
                        file,
                        document.start,
                        "",
                        "schema.internal",
                        format!("document passed the {kind} schema but not the {kind} type: {e}"),
                    ),
                });
                None
            }
        }
    };
    diagnostics.sort_by_key(|d| (d.line, d.col));
    CheckedDocument { document, kind: Some(kind), manifest, diagnostics }
}

/// `(pointer, value, expected)` for a serde error such as ``invalid value: integer `4294967296`,
/// expected u32``, when exactly one number of the document is that value.
fn locate_typed_error(document: &Document, error: &str) -> Option<(String, String, String)> {
    let (_, rest) = error.split_once('`')?;
    let (found, rest) = rest.split_once('`')?;
    let expected = rest.split_once("expected ")?.1.split(" at ").next()?.trim().to_string();
    let expected = match expected.as_str() {
        "u8" => "an integer from 0 to 255".to_string(),
        "u16" => "an integer from 0 to 65535".to_string(),
        "u32" => "an integer from 0 to 4294967295".to_string(),
        "u64" => "an integer from 0 to 18446744073709551615".to_string(),
        _ => expected,
    };
    fn walk(v: &serde_json::Value, pointer: String, found: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Number(n)
                if n.to_string() == found || n.as_f64().is_some_and(|f| f.to_string() == found) =>
            {
                out.push(pointer)
            }
            serde_json::Value::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    walk(item, format!("{pointer}/{i}"), found, out);
                }
            }
            serde_json::Value::Object(o) => {
                for (k, item) in o {
                    walk(item, crate::yaml::pointer_push(&pointer, k), found, out);
                }
            }
            _ => {}
        }
    }
    let mut at = Vec::new();
    walk(&document.value, String::new(), found, &mut at);
    match at.as_slice() {
        [pointer] => Some((pointer.clone(), found.to_string(), expected)),
        _ => None,
    }
}

fn typed<T: DeserializeOwned>(document: &Document) -> Result<T, serde_json::Error> {
    serde_json::from_value(document.value.clone())
}

/// Validates one file for `keelson validate FILE`; the kind of each document is read from its
/// content. A path of the form `…apps/<name>/deploy.yaml` also gets the repository layout checks
/// that need no other file (one App per file, `metadata.name == <name>`).
pub fn check_file(path: &str, bytes: &[u8]) -> Vec<Diagnostic> {
    let checked = check_bytes(path, bytes);
    let mut diagnostics = checked.all_diagnostics();
    if let Some(dir) = app_dir_of(path) {
        diagnostics.extend(semantic::check_app_layout(path, dir, &checked));
    } else if checked.documents.is_empty() && checked.diagnostics.is_empty() {
        diagnostics.push(Diagnostic::error(path, Position::START, "", "manifest.empty", "file has no YAML documents"));
    }
    diagnostics.sort_by_key(|d| (d.line, d.col));
    diagnostics
}

/// `<name>` when `path` ends in `apps/<name>/deploy.yaml`.
fn app_dir_of(path: &str) -> Option<&str> {
    let rest = path.strip_suffix("/deploy.yaml")?;
    let (parent, name) = rest.rsplit_once('/')?;
    (parent == "apps" || parent.ends_with("/apps")).then_some(name)
}

/// Parses a file that must hold exactly one document of `kind`.
pub(crate) fn parse_single(path: &str, bytes: &[u8], kind: Kind) -> Result<Manifest, Vec<Diagnostic>> {
    parse_single_with_warnings(path, bytes, kind).map(|(m, _)| m)
}

/// [`parse_single`], keeping the warnings of a document that has no errors.
pub(crate) fn parse_single_with_warnings(
    path: &str,
    bytes: &[u8],
    kind: Kind,
) -> Result<(Manifest, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut docs = yaml::parse(path, bytes)?;
    if docs.len() != 1 {
        let pos = docs.get(1).map_or(Position::START, |d| d.start);
        return Err(vec![Diagnostic::error(
            path,
            pos,
            "",
            "manifest.document-count",
            format!("expected exactly one {kind} document, found {}", docs.len()),
        )]);
    }
    let document = docs.remove(0);
    // A document of another kind would drown in that kind's schema errors; say what is wrong.
    let found = schema::detect_kind(path, &document)?;
    if found != kind {
        return Err(vec![Diagnostic::error(
            path,
            document.spans.locate_value("/kind"),
            "/kind",
            "manifest.kind",
            format!("expected a {kind} document, found a {found}"),
        )]);
    }
    let checked = check_document(path, document);
    match checked.manifest {
        Some(m) if !checked.diagnostics.iter().any(Diagnostic::is_error) => Ok((m, checked.diagnostics)),
        _ => Err(checked.diagnostics.into_iter().filter(Diagnostic::is_error).collect()),
    }
}

#[cfg(test)]
mod tests;
