//! RFC 6902 JSON patch (`application/json-patch+json`).

use serde_json::Value;

fn tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| format!("invalid JSON pointer {pointer:?}"))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent<'a>(doc: &'a mut Value, toks: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t).ok_or_else(|| format!("doc is missing path: /{}", toks.join("/")))?,
            Value::Array(a) => {
                let i: usize = t.parse().map_err(|_| format!("invalid array index {t:?}"))?;
                a.get_mut(i).ok_or_else(|| format!("doc is missing path: /{}", toks.join("/")))?
            }
            _ => return Err(format!("doc is missing path: /{}", toks.join("/"))),
        };
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let toks = tokens(path)?;
    let Some((last, init)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent(doc, init)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| format!("invalid array index {last:?}"))?
            };
            if i > a.len() {
                return Err(format!("add operation does not apply: index {i} out of bounds"));
            }
            a.insert(i, value);
            Ok(())
        }
        _ => Err(format!("add operation does not apply: doc is missing path: {path:?}")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let toks = tokens(path)?;
    let Some((last, init)) = toks.split_last() else { return Err("cannot remove the whole document".into()) };
    match parent(doc, init)? {
        Value::Object(m) => m
            .shift_remove(last)
            .ok_or_else(|| format!("remove operation does not apply: doc is missing path: {path:?}")),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| format!("invalid array index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("remove operation does not apply: doc is missing path: {path:?}"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("remove operation does not apply: doc is missing path: {path:?}")),
    }
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    doc.pointer(path).cloned().ok_or_else(|| format!("doc is missing path: {path:?}"))
}

/// Applies the operations of `patch` to `doc` (all or nothing).
pub fn apply(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch.as_array().ok_or("a JSON patch must be an array of operations")?;
    let mut work = doc.clone();
    for op in ops {
        let path = op.get("path").and_then(Value::as_str).ok_or("operation is missing \"path\"")?;
        let value = || op.get("value").cloned().ok_or_else(|| "operation is missing \"value\"".to_string());
        let from = || op.get("from").and_then(Value::as_str).ok_or_else(|| "operation is missing \"from\"".to_string());
        match op.get("op").and_then(Value::as_str) {
            Some("add") => add(&mut work, path, value()?)?,
            Some("remove") => {
                remove(&mut work, path)?;
            }
            Some("replace") => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            Some("move") => {
                let v = remove(&mut work, from()?)?;
                add(&mut work, path, v)?;
            }
            Some("copy") => {
                let v = get(&work, from()?)?;
                add(&mut work, path, v)?;
            }
            Some("test") => {
                if get(&work, path)? != value()? {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("unexpected kind of operation: {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operations() {
        let mut d = json!({"a": {"b": [1, 2]}});
        apply(
            &mut d,
            &json!([
                {"op": "add", "path": "/a/b/-", "value": 3},
                {"op": "replace", "path": "/a/b/0", "value": 0},
                {"op": "copy", "from": "/a/b", "path": "/c"},
                {"op": "remove", "path": "/a/b/1"},
                {"op": "test", "path": "/c/2", "value": 3}
            ]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": {"b": [0, 3]}, "c": [0, 2, 3]}));
        assert!(apply(&mut d, &json!([{"op": "test", "path": "/c/0", "value": 9}])).is_err());
        assert_eq!(d["c"][0], 0, "a failed patch changes nothing");
    }
}
