//! Apply bodies are YAML (`application/apply-patch+yaml`); JSON is parsed as such, anything
//! else through saphyr's event parser into JSON, resolving plain scalars as the API server's
//! YAML decoder (go-yaml v2) does.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Number, Value};

/// Parses one YAML (or JSON) document.
pub fn parse(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str(text) {
        return Ok(v);
    }
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<(Value, Option<String>, Option<usize>)> = Vec::new();
    let mut anchors: HashMap<usize, Value> = HashMap::new();
    let mut root: Option<Value> = None;
    while let Some(ev) = parser.next_event() {
        let (event, _span) =
            ev.map_err(|e| format!("error converting YAML to JSON: yaml: line {}: {}", e.marker().line(), e.info()))?;
        let (value, anchor) = match event {
            Event::SequenceStart(anchor, _) => {
                stack.push((Value::Array(Vec::new()), None, Some(anchor)));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push((Value::Object(Map::new()), None, Some(anchor)));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (v, _, anchor) = stack.pop().ok_or("unbalanced YAML")?;
                (v, anchor.unwrap_or(0))
            }
            Event::Scalar(text, style, anchor, _) => {
                let v = if style == ScalarStyle::Plain { resolve(&text) } else { Value::String(text.to_string()) };
                (v, anchor)
            }
            Event::Alias(id) => (anchors.get(&id).cloned().ok_or("unknown YAML alias")?, 0),
            _ => continue,
        };
        if anchor > 0 {
            anchors.insert(anchor, value.clone());
        }
        match stack.last_mut() {
            None => {
                if root.is_some() {
                    return Err("expected a single YAML document".into());
                }
                root = Some(value);
            }
            Some((Value::Array(a), _, _)) => a.push(value),
            Some((Value::Object(m), pending, _)) => match pending.take() {
                None => *pending = Some(value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string())),
                Some(key) => {
                    m.insert(key, value);
                }
            },
            Some(_) => return Err("invalid YAML structure".into()),
        }
    }
    Ok(root.unwrap_or(Value::Null))
}

fn resolve(s: &str) -> Value {
    // The API server decodes YAML with go-yaml v2 rules (YAML 1.1 booleans): `on`, `yes`, `y`
    // are true, so `mode: on` in a ConfigMap is a bool, and a type error, as on a cluster.
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" | "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => return Value::Bool(true),
        "false" | "False" | "FALSE" | "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        _ => {}
    }
    if let Ok(i) = s.parse::<i64>() {
        return Value::Number(i.into());
    }
    let numeric =
        s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) && s.bytes().any(|b| b.is_ascii_digit());
    if numeric && let Some(n) = s.parse::<f64>().ok().and_then(Number::from_f64) {
        return Value::Number(n);
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_manifests_become_json() {
        let v = parse("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {a: \"1\"}\ndata:\n  num: 1\n  s: 'x'\n  mode: on\nlist: [1, 2.5, yes, null]\n").unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"a": "1"}},
                   "data": {"num": 1, "s": "x", "mode": true}, "list": [1, 2.5, true, null]})
        );
        // Keys resolve the same way and are then written as JSON strings, as sigs.k8s.io/yaml does.
        assert_eq!(parse("on: 1\nn: 2\n").unwrap(), json!({"true": 1, "false": 2}));
        assert_eq!(parse("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert!(parse("a: [").is_err());
    }
}
