//! Problems found in a user's file, reported as `PATH:LINE:COL: error: message`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::yaml::Position;

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks the file: the app is held, the config refused.
    Error,
    /// Reported, but the file is still applied.
    Warning,
}

/// One problem in one file, with its position, the rule broken and a hint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    /// Path of the file, relative to the repository (or as given on the command line).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// JSON pointer of the offending value inside the document (`/spec/replicas`), empty for the root.
    pub pointer: String,
    /// Whether it blocks the file.
    pub severity: Severity,
    /// Short stable name of the rule broken (`schema.type`, `yaml.duplicate-key`, `app.name-mismatch`).
    pub rule: String,
    /// What is wrong, for the person editing the file.
    pub message: String,
    /// How to fix it, when we can tell (`did you mean `replicas`?`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `pos` in `file`.
    pub fn error(file: &str, pos: Position, pointer: &str, rule: &str, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line: pos.line,
            col: pos.col,
            pointer: pointer.to_string(),
            severity: Severity::Error,
            rule: rule.to_string(),
            message: message.into(),
            hint: None,
        }
    }

    /// A warning at `pos` in `file`: reported, but does not block the file.
    pub fn warning(file: &str, pos: Position, pointer: &str, rule: &str, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, ..Self::error(file, pos, pointer, rule, message) }
    }

    /// The same diagnostic with a hint attached.
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Where the diagnostic points.
    pub fn position(&self) -> Position {
        Position::new(self.line, self.col)
    }

    /// True when this diagnostic blocks the file from being applied.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {severity}: ", self.file, self.line, self.col)?;
        if !self.pointer.is_empty() {
            write!(f, "{}: ", self.pointer)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}
