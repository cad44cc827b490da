//! Test builders: `app("web").replicas(3).build()` and a small YAML writer, so tests state what
//! differs from a valid app instead of repeating YAML blobs.

use serde_json::{Map, Value, json};

use crate::App;
use crate::yaml::pointer_tokens;

/// A valid App, ready to be changed one field at a time.
pub(crate) struct AppBuilder {
    value: Value,
}

/// An App named `name` with a pinned image on cluster `prod-east`.
pub(crate) fn app(name: &str) -> AppBuilder {
    AppBuilder {
        value: json!({
            "apiVersion": crate::API_VERSION,
            "kind": "App",
            "metadata": {"name": name},
            "spec": {
                "image": format!("registry.example.com/{name}:1.0.0"),
                "placement": {"cluster": "prod-east"},
            },
        }),
    }
}

impl AppBuilder {
    /// Sets any node by JSON pointer, creating parent mappings.
    pub(crate) fn set(mut self, pointer: &str, v: Value) -> Self {
        let tokens = pointer_tokens(pointer);
        let mut node = &mut self.value;
        for t in &tokens[..tokens.len() - 1] {
            if !node.get(t).is_some_and(Value::is_object) {
                node[t.as_str()] = Value::Object(Map::new());
            }
            node = &mut node[t.as_str()];
        }
        node[tokens[tokens.len() - 1].as_str()] = v;
        self
    }

    pub(crate) fn replicas(self, n: u32) -> Self {
        self.set("/spec/replicas", json!(n))
    }

    pub(crate) fn team(self, team: &str) -> Self {
        self.set("/metadata/team", json!(team))
    }

    pub(crate) fn depends_on(self, deps: &[&str]) -> Self {
        self.set("/spec/dependsOn", json!(deps))
    }

    pub(crate) fn canary(self, steps: &[u32]) -> Self {
        self.set(
            "/spec/strategy",
            json!({"type": "canary", "steps": steps, "interval": "60s",
                   "gates": [{"metric": "success-rate", "min": 99.5}, {"metric": "latency-p99", "maxMs": 500}]}),
        )
    }

    pub(crate) fn manifests(self, path: &str) -> Self {
        self.set("/spec/manifests", json!({"path": path, "type": "plain"}))
    }

    pub(crate) fn resources(self, cpu: &str, memory: &str) -> Self {
        self.set("/spec/resources", json!({"cpu": cpu, "memory": memory}))
    }

    pub(crate) fn value(&self) -> Value {
        self.value.clone()
    }

    /// Block-style YAML of the app.
    pub(crate) fn yaml(&self) -> String {
        to_yaml(&self.value, &Style::default())
    }

    /// The typed app (panics when the builder made something the types reject).
    pub(crate) fn build(self) -> App {
        serde_json::from_value(self.value).expect("builder made a valid App")
    }
}

/// How [`to_yaml`] writes a value; every style denotes the same data.
#[derive(Debug, Clone)]
pub(crate) struct Style {
    /// Spaces per nesting level in block style.
    pub indent: usize,
    /// Write collections at this depth and deeper as flow (`{a: 1}`, `[1, 2]`).
    pub flow_from_depth: usize,
    /// Rotate each mapping's keys by this much (key order must never matter).
    pub rotate_keys: usize,
    /// Put a comment after every block entry.
    pub comments: bool,
    /// Quote every string, even those that are safe plain.
    pub quote_all: bool,
}

impl Default for Style {
    fn default() -> Self {
        Self { indent: 2, flow_from_depth: usize::MAX, rotate_keys: 0, comments: false, quote_all: false }
    }
}

pub(crate) fn to_yaml(v: &Value, style: &Style) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() && style.flow_from_depth > 0 => block(v, 0, 0, style, &mut out),
        Value::Array(a) if !a.is_empty() && style.flow_from_depth > 0 => block(v, 0, 0, style, &mut out),
        other => {
            out.push_str(&flow(other, style));
            out.push('\n');
        }
    }
    out
}

fn entries<'a>(m: &'a Map<String, Value>, style: &Style) -> Vec<(&'a String, &'a Value)> {
    let mut e: Vec<_> = m.iter().collect();
    if !e.is_empty() {
        let k = style.rotate_keys % e.len();
        e.rotate_left(k);
    }
    e
}

fn is_block(v: &Value, depth: usize, style: &Style) -> bool {
    depth < style.flow_from_depth
        && match v {
            Value::Object(m) => !m.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => false,
        }
}

fn block(v: &Value, indent: usize, depth: usize, style: &Style, out: &mut String) {
    let pad = " ".repeat(indent);
    let comment = if style.comments { "  # note" } else { "" };
    match v {
        Value::Object(m) => {
            for (k, child) in entries(m, style) {
                out.push_str(&pad);
                out.push_str(&scalar_text(k, style));
                out.push(':');
                if is_block(child, depth + 1, style) {
                    out.push_str(comment);
                    out.push('\n');
                    block(child, indent + style.indent, depth + 1, style, out);
                } else {
                    out.push(' ');
                    out.push_str(&flow(child, style));
                    out.push_str(comment);
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if is_block(item, depth + 1, style) {
                    let mut inner = String::new();
                    block(item, indent + 2, depth + 1, style, &mut inner);
                    // The first line of the item starts right after the dash.
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&inner[indent + 2..]);
                } else {
                    out.push_str(&pad);
                    out.push_str("- ");
                    out.push_str(&flow(item, style));
                    out.push_str(comment);
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&flow(other, style));
            out.push('\n');
        }
    }
}

fn flow(v: &Value, style: &Style) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = entries(m, style)
                .into_iter()
                .map(|(k, v)| format!("{}: {}", scalar_text(k, style), flow(v, style)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(|v| flow(v, style)).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::String(s) => scalar_text(s, style),
        other => other.to_string(),
    }
}

/// A string plain when that reads back as the same string, else JSON-quoted (valid YAML).
fn scalar_text(s: &str, style: &Style) -> String {
    let plain_safe = !style.quote_all
        && s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !matches!(s, "true" | "True" | "TRUE" | "false" | "False" | "FALSE" | "null" | "Null" | "NULL");
    if plain_safe { s.to_string() } else { Value::String(s.to_string()).to_string() }
}
