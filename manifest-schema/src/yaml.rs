//! Span-aware YAML parsing: YAML text → `serde_json::Value` plus the `line:col` of every node.
//!
//! We drive `saphyr-parser`'s event API ourselves instead of going through serde so that every key
//! and value keeps its position (schema errors must point at `file:line:col`), duplicate keys are
//! caught, and hostile input (billion laughs, huge or deeply nested files) fails fast with a clear
//! diagnostic instead of exhausting memory or the stack. Plain scalars resolve by the YAML 1.2
//! core schema, so `on`/`yes`/`no` stay strings.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::Diagnostic;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

impl Position {
    /// The first character of a file.
    pub const START: Position = Position { line: 1, col: 1 };

    /// A position from 1-based line and column.
    pub fn new(line: usize, col: usize) -> Self {
        Self { line, col }
    }

    fn from_span(span: &Span) -> Self {
        Self { line: span.start.line().max(1), col: span.start.col() + 1 }
    }
}

/// Positions of the nodes of one document, keyed by RFC 6901 JSON pointer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spans {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl Spans {
    /// Where the value at `pointer` starts.
    pub fn value(&self, pointer: &str) -> Option<Position> {
        self.values.get(pointer).copied()
    }

    /// Where the mapping key whose value is at `pointer` starts (none for the root and array items).
    pub fn key(&self, pointer: &str) -> Option<Position> {
        self.keys.get(pointer).copied()
    }

    /// The value at `pointer`, or its nearest ancestor that has a position.
    pub fn locate_value(&self, pointer: &str) -> Position {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.value(p) {
                return pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return Position::START,
            }
        }
    }

    /// The key naming `pointer` if it has one (a whole `field: value` entry starts there),
    /// otherwise like [`Spans::locate_value`].
    pub fn locate_key(&self, pointer: &str) -> Position {
        self.key(pointer).unwrap_or_else(|| self.locate_value(pointer))
    }

    /// Number of value nodes recorded.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no node was recorded.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document's content, as JSON.
    pub value: Value,
    /// Positions of its keys and values.
    pub spans: Spans,
    /// 0-based index of the document in its file (empty documents are skipped but counted).
    pub index: usize,
    /// Where the document starts.
    pub start: Position,
}

/// Bounds that make hostile input fail fast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest file accepted, in bytes.
    pub max_bytes: usize,
    /// Most nodes per file, counting every node an alias expands to.
    pub max_nodes: usize,
    /// Most nodes that aliases may add per file (the billion-laughs guard).
    pub max_alias_nodes: usize,
    /// Deepest nesting of mappings and sequences (the JSON tree is later walked recursively).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: MAX_FILE_BYTES, max_nodes: 200_000, max_alias_nodes: 10_000, max_depth: 64 }
    }
}

/// Default per-file size limit: 1 MiB is far above any sane manifest and bounds parse time.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// Parses every document of a YAML file with the default [`Limits`].
///
/// Returns all problems found (syntax errors stop the parse; duplicate keys, unsupported tags and
/// non-finite numbers are collected and parsing continues). Empty documents are skipped.
pub fn parse(file: &str, bytes: &[u8]) -> Result<Vec<Document>, Vec<Diagnostic>> {
    parse_with(file, bytes, &Limits::default())
}

/// Like [`parse`] with explicit limits.
pub fn parse_with(file: &str, bytes: &[u8], limits: &Limits) -> Result<Vec<Document>, Vec<Diagnostic>> {
    if bytes.len() > limits.max_bytes {
        return Err(vec![Diagnostic::error(
            file,
            Position::START,
            "",
            "yaml.too-large",
            format!("file is {} bytes; the limit is {} bytes", bytes.len(), limits.max_bytes),
        )]);
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            // `valid` is valid UTF-8 by construction.
            let prefix = std::str::from_utf8(valid).unwrap_or_default();
            let line = prefix.matches('\n').count() + 1;
            let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(vec![Diagnostic::error(
                file,
                Position::new(line, col),
                "",
                "yaml.encoding",
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // The parser is not ours; a panic inside it must become a diagnostic, never take the
    // daemon down.
    match catch_unwind(AssertUnwindSafe(|| Builder::new(file, limits).run(text))) {
        Ok(result) => result,
        Err(_) => Err(vec![Diagnostic::error(
            file,
            Position::START,
            "",
            "yaml.internal",
            "the YAML parser failed on this file; please report it with the file attached",
        )]),
    }
}

/// Appends one reference token to a JSON pointer, escaping `~` and `/` (RFC 6901).
pub fn pointer_push(pointer: &str, token: &str) -> String {
    let mut out = String::with_capacity(pointer.len() + token.len() + 1);
    out.push_str(pointer);
    out.push('/');
    for c in token.chars() {
        match c {
            '~' => out.push_str("~0"),
            '/' => out.push_str("~1"),
            c => out.push(c),
        }
    }
    out
}

/// The reference tokens of a JSON pointer, unescaped.
pub fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
}

struct PendingKey {
    key: String,
    duplicate: bool,
}

enum FrameKind {
    Seq(Vec<Value>),
    Map { map: Map<String, Value>, pending: Option<PendingKey> },
}

struct Frame {
    kind: FrameKind,
    pointer: String,
    anchor: usize,
    values_start: usize,
    keys_start: usize,
    nodes_start: usize,
}

/// A node that carries an anchor, kept so aliases can be expanded with positions.
struct Anchored {
    value: Value,
    /// Positions below the anchored node, with pointers relative to it.
    values: Vec<(String, Position)>,
    keys: Vec<(String, Position)>,
    nodes: usize,
}

/// Why building stopped early.
enum Abort {
    Syntax(ScanError),
    Fatal,
}

struct Builder<'a> {
    file: &'a str,
    limits: &'a Limits,
    stack: Vec<Frame>,
    values: Vec<(String, Position)>,
    keys: Vec<(String, Position)>,
    anchors: HashMap<usize, Anchored>,
    nodes: usize,
    alias_nodes: usize,
    root: Option<Value>,
    doc_start: Position,
    doc_index: usize,
    docs: Vec<Document>,
    errors: Vec<Diagnostic>,
}

impl<'a> Builder<'a> {
    fn new(file: &'a str, limits: &'a Limits) -> Self {
        Self {
            file,
            limits,
            stack: Vec::new(),
            values: Vec::new(),
            keys: Vec::new(),
            anchors: HashMap::new(),
            nodes: 0,
            alias_nodes: 0,
            root: None,
            doc_start: Position::START,
            doc_index: 0,
            docs: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn run(mut self, text: &str) -> Result<Vec<Document>, Vec<Diagnostic>> {
        let mut parser = Parser::new_from_str(text);
        let outcome = loop {
            match parser.next_event() {
                None => break Ok(()),
                Some(Err(e)) => break Err(Abort::Syntax(e)),
                Some(Ok((event, span))) => {
                    if let Err(abort) = self.on_event(event, span) {
                        break Err(abort);
                    }
                }
            }
        };
        match outcome {
            Err(Abort::Syntax(e)) => {
                let mark = e.marker();
                self.errors.push(Diagnostic::error(
                    self.file,
                    Position::new(mark.line().max(1), mark.col() + 1),
                    "",
                    "yaml.syntax",
                    e.info().to_string(),
                ));
            }
            Err(Abort::Fatal) | Ok(()) => {}
        }
        if self.errors.is_empty() { Ok(self.docs) } else { Err(self.errors) }
    }

    fn error(&mut self, pos: Position, pointer: &str, rule: &str, message: String) {
        self.errors.push(Diagnostic::error(self.file, pos, pointer, rule, message));
    }

    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), Abort> {
        let pos = Position::from_span(&span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd => {}
            Event::DocumentStart(_) => {
                self.doc_start = pos;
                self.stack.clear();
                self.values.clear();
                self.keys.clear();
                self.anchors.clear();
                self.root = None;
            }
            Event::DocumentEnd => {
                let value = self.root.take();
                let values = std::mem::take(&mut self.values);
                let keys = std::mem::take(&mut self.keys);
                if let Some(value) = value.filter(|v| !v.is_null()) {
                    let mut spans = Spans::default();
                    // The first occurrence wins so a discarded duplicate never moves a span.
                    for (p, pos) in values {
                        spans.values.entry(p).or_insert(pos);
                    }
                    for (p, pos) in keys {
                        spans.keys.entry(p).or_insert(pos);
                    }
                    self.docs.push(Document { value, spans, index: self.doc_index, start: self.doc_start });
                }
                self.doc_index += 1;
            }
            Event::Scalar(text, style, anchor, tag) => {
                if self.expecting_key() {
                    return self.on_key(&text, style, pos);
                }
                let pointer = self.child_pointer();
                self.count_node(pos, &pointer)?;
                self.values.push((pointer.clone(), pos));
                let value = self.resolve_scalar(&text, style, tag.as_deref(), pos, &pointer);
                if anchor != 0 {
                    self.anchors.insert(
                        anchor,
                        Anchored { value: value.clone(), values: Vec::new(), keys: Vec::new(), nodes: 1 },
                    );
                }
                self.attach(value);
            }
            Event::Alias(id) => {
                if self.expecting_key() {
                    self.error(pos, "", "yaml.key-type", "an alias cannot be used as a mapping key here".into());
                    return Err(Abort::Fatal);
                }
                let pointer = self.child_pointer();
                let Some(anchored) = self.anchors.get(&id) else {
                    self.error(pos, &pointer, "yaml.alias", "unknown alias".into());
                    return Err(Abort::Fatal);
                };
                let added = anchored.nodes;
                self.alias_nodes = self.alias_nodes.saturating_add(added);
                if self.alias_nodes > self.limits.max_alias_nodes {
                    self.error(
                        pos,
                        &pointer,
                        "yaml.alias-limit",
                        format!(
                            "aliases expand to more than {} nodes; this looks like a \
                             \"billion laughs\" document",
                            self.limits.max_alias_nodes
                        ),
                    );
                    return Err(Abort::Fatal);
                }
                self.nodes = self.nodes.saturating_add(added);
                self.check_node_limit(pos, &pointer)?;
                let anchored = &self.anchors[&id];
                let value = anchored.value.clone();
                self.values.push((pointer.clone(), pos));
                for (suffix, p) in &anchored.values {
                    self.values.push((format!("{pointer}{suffix}"), *p));
                }
                for (suffix, p) in &anchored.keys {
                    self.keys.push((format!("{pointer}{suffix}"), *p));
                }
                self.attach(value);
            }
            Event::SequenceStart(anchor, tag) => self.open(false, anchor, tag.as_deref(), pos)?,
            Event::MappingStart(anchor, tag) => self.open(true, anchor, tag.as_deref(), pos)?,
            Event::SequenceEnd | Event::MappingEnd => self.close()?,
        }
        Ok(())
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame { kind: FrameKind::Map { pending: None, .. }, .. }))
    }

    fn child_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(frame) => match &frame.kind {
                FrameKind::Seq(items) => format!("{}/{}", frame.pointer, items.len()),
                FrameKind::Map { pending: Some(k), .. } => pointer_push(&frame.pointer, &k.key),
                FrameKind::Map { pending: None, .. } => frame.pointer.clone(),
            },
        }
    }

    fn count_node(&mut self, pos: Position, pointer: &str) -> Result<(), Abort> {
        self.nodes += 1;
        self.check_node_limit(pos, pointer)
    }

    fn check_node_limit(&mut self, pos: Position, pointer: &str) -> Result<(), Abort> {
        if self.nodes > self.limits.max_nodes {
            self.error(
                pos,
                pointer,
                "yaml.node-limit",
                format!("file has more than {} nodes (counting alias expansions)", self.limits.max_nodes),
            );
            return Err(Abort::Fatal);
        }
        Ok(())
    }

    fn on_key(&mut self, text: &str, style: ScalarStyle, pos: Position) -> Result<(), Abort> {
        let Some(frame) = self.stack.last() else {
            return Ok(());
        };
        let pointer = pointer_push(&frame.pointer, text);
        let FrameKind::Map { map, .. } = &frame.kind else {
            return Ok(());
        };
        let duplicate = map.contains_key(text);
        let parent = frame.pointer.clone();
        let merge = style == ScalarStyle::Plain && text == "<<";
        if merge {
            self.error(
                pos,
                &parent,
                "yaml.merge-key",
                "merge keys (`<<`) are not part of YAML 1.2; repeat the fields instead".into(),
            );
        } else if duplicate {
            let first = self.keys.iter().find(|(p, _)| *p == pointer).map(|(_, p)| *p);
            let message = match first {
                Some(first) => {
                    format!("duplicate key `{text}` (first defined at line {}, column {})", first.line, first.col)
                }
                None => format!("duplicate key `{text}`"),
            };
            self.error(pos, &pointer, "yaml.duplicate-key", message);
        } else {
            self.keys.push((pointer, pos));
        }
        if let Some(Frame { kind: FrameKind::Map { pending, .. }, .. }) = self.stack.last_mut() {
            *pending = Some(PendingKey { key: text.to_string(), duplicate: duplicate || merge });
        }
        Ok(())
    }

    fn open(&mut self, is_map: bool, anchor: usize, tag: Option<&Tag>, pos: Position) -> Result<(), Abort> {
        if self.expecting_key() {
            self.error(pos, "", "yaml.key-type", "mapping keys must be plain text, not mappings or sequences".into());
            return Err(Abort::Fatal);
        }
        let pointer = self.child_pointer();
        if self.stack.len() >= self.limits.max_depth {
            self.error(pos, &pointer, "yaml.depth", format!("nesting is deeper than {} levels", self.limits.max_depth));
            return Err(Abort::Fatal);
        }
        if let Some(tag) = tag {
            let expected = if is_map { "map" } else { "seq" };
            if !(tag.is_yaml_core_schema() && tag.suffix == expected) {
                self.error(
                    pos,
                    &pointer,
                    "yaml.tag",
                    format!("unsupported tag `{tag}` on a {}", if is_map { "mapping" } else { "sequence" }),
                );
            }
        }
        self.count_node(pos, &pointer)?;
        self.values.push((pointer.clone(), pos));
        let frame = Frame {
            kind: if is_map { FrameKind::Map { map: Map::new(), pending: None } } else { FrameKind::Seq(Vec::new()) },
            pointer,
            anchor,
            values_start: self.values.len(),
            keys_start: self.keys.len(),
            nodes_start: self.nodes,
        };
        self.stack.push(frame);
        Ok(())
    }

    fn close(&mut self) -> Result<(), Abort> {
        let Some(frame) = self.stack.pop() else {
            return Ok(());
        };
        let value = match frame.kind {
            FrameKind::Seq(items) => Value::Array(items),
            FrameKind::Map { map, .. } => Value::Object(map),
        };
        if frame.anchor != 0 {
            let strip = |entries: &[(String, Position)]| {
                entries.iter().map(|(p, pos)| (p[frame.pointer.len()..].to_string(), *pos)).collect::<Vec<_>>()
            };
            let anchored = Anchored {
                value: value.clone(),
                values: strip(&self.values[frame.values_start..]),
                keys: strip(&self.keys[frame.keys_start..]),
                nodes: self.nodes - frame.nodes_start + 1,
            };
            self.anchors.insert(frame.anchor, anchored);
        }
        self.attach(value);
        Ok(())
    }

    fn attach(&mut self, value: Value) {
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(frame) => match &mut frame.kind {
                FrameKind::Seq(items) => items.push(value),
                FrameKind::Map { map, pending } => {
                    if let Some(k) = pending.take()
                        && !k.duplicate
                    {
                        map.insert(k.key, value);
                    }
                }
            },
        }
    }

    fn resolve_scalar(
        &mut self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        pos: Position,
        pointer: &str,
    ) -> Value {
        if let Some(tag) = tag {
            return self.resolve_tagged(text, tag, pos, pointer);
        }
        if style != ScalarStyle::Plain {
            return Value::String(text.to_string());
        }
        match resolve_plain(text) {
            Resolved::Value(v) => v,
            Resolved::NonFinite => {
                self.error(
                    pos,
                    pointer,
                    "yaml.non-finite",
                    format!("`{text}` is a YAML float but JSON has no infinity or NaN; quote it if you mean text"),
                );
                Value::Null
            }
        }
    }

    fn resolve_tagged(&mut self, text: &str, tag: &Tag, pos: Position, pointer: &str) -> Value {
        // The non-specific tag `!` forces a string, as the spec says.
        if tag.handle.is_empty() && tag.suffix == "!" {
            return Value::String(text.to_string());
        }
        if tag.is_yaml_core_schema() {
            let resolved = resolve_plain(text);
            let ok = match (tag.suffix.as_str(), &resolved) {
                ("str", _) => return Value::String(text.to_string()),
                ("null", Resolved::Value(Value::Null)) => true,
                ("bool", Resolved::Value(Value::Bool(_))) => true,
                ("int", Resolved::Value(Value::Number(n))) => !n.is_f64(),
                ("float", Resolved::Value(Value::Number(_))) => true,
                _ => false,
            };
            if ok && let Resolved::Value(v) = resolved {
                return v;
            }
            if ["null", "bool", "int", "float"].contains(&tag.suffix.as_str()) {
                self.error(pos, pointer, "yaml.tag", format!("`{text}` is not a valid `{tag}`"));
                return Value::Null;
            }
        }
        self.error(pos, pointer, "yaml.tag", format!("unsupported tag `{tag}`; manifests use plain YAML values"));
        Value::Null
    }
}

enum Resolved {
    Value(Value),
    NonFinite,
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Resolved {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Value(Value::Null),
        "true" | "True" | "TRUE" => return Resolved::Value(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Resolved::Value(Value::Bool(false)),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF" | ".nan" | ".NaN"
        | ".NAN" => return Resolved::NonFinite,
        _ => {}
    }
    if let Some(n) = resolve_int(s) {
        return Resolved::Value(Value::Number(n));
    }
    if is_core_float(s) {
        // Rust's parser rejects the `1.` and `.5e3` spellings that YAML allows, so normalize.
        let normalized = normalize_float(s);
        return match normalized.parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Resolved::Value(Value::Number(n)),
            None => Resolved::NonFinite,
        };
    }
    Resolved::Value(Value::String(s.to_string()))
}

fn resolve_int(s: &str) -> Option<Number> {
    if let Some(oct) = s.strip_prefix("0o") {
        if !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Some(radix_number(oct, 8));
        }
        return None;
    }
    if let Some(hex) = s.strip_prefix("0x") {
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(radix_number(hex, 16));
        }
        return None;
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    if let Ok(i) = unsigned.parse::<i64>() {
        return Some(Number::from(i));
    }
    if let Ok(u) = unsigned.parse::<u64>() {
        return Some(Number::from(u));
    }
    // Out of the 64-bit range: JSON parsers fall back to a float, and so do we.
    unsigned.parse::<f64>().ok().and_then(Number::from_f64)
}

fn radix_number(digits: &str, radix: u32) -> Number {
    match u64::from_str_radix(digits, radix) {
        Ok(u) => Number::from(u),
        Err(_) => {
            let f =
                digits.chars().fold(0f64, |acc, c| acc * f64::from(radix) + f64::from(c.to_digit(radix).unwrap_or(0)));
            Number::from_f64(f).unwrap_or_else(|| Number::from(u64::MAX))
        }
    }
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_core_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if int_digits == 0 && i == frac_start {
            return false;
        }
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

fn normalize_float(s: &str) -> String {
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'-') => ("-", &s[1..]),
        Some(b'+') => ("", &s[1..]),
        _ => ("", s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut m = String::with_capacity(mantissa.len() + 2);
    if mantissa.starts_with('.') {
        m.push('0');
    }
    m.push_str(mantissa);
    if m.ends_with('.') {
        m.push('0');
    }
    format!("{sign}{m}{exponent}")
}

#[cfg(test)]
mod tests;
