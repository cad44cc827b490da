//! Server-side apply and field ownership, after the algorithm of structured-merge-diff (the
//! library behind the Kubernetes API server's field manager):
//!
//! - **apply**: merge the applied configuration into the live object (the configuration wins;
//!   associative lists merge item by item), record the configuration's field set as the applier's,
//!   prune what the applier owned last time and no longer applies when nobody else owns it, then
//!   report every field another manager owns whose value would change (a conflict) unless forced;
//!   forced fields move to the applier.
//! - **update** (create, PUT, merge patch): the writer takes every field it changed or added,
//!   never conflicts, and other managers lose what changed under them.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::fieldpath::{KeyValue, Path, PathElement, Set};
use crate::schema::{ListType, Schema};

/// `Apply` or `Update`, as in `managedFields[].operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    /// A server-side apply.
    Apply,
    /// Any other write (create, update, patch).
    Update,
}

impl Operation {
    /// The spelling in `managedFields`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Manager {
    /// The field manager's name.
    pub name: String,
    /// How it last wrote.
    pub operation: Operation,
    /// `""` for the main resource, `"status"` for the status subresource.
    pub subresource: String,
    /// The API version it wrote with.
    pub api_version: String,
    /// RFC 3339 time of its last change.
    pub time: Option<String>,
    /// The fields it owns.
    pub set: Set,
}

impl Manager {
    fn same_identity(&self, name: &str, op: Operation, subresource: &str) -> bool {
        self.name == name && self.operation == op && self.subresource == subresource
    }

    /// How the API server names this manager in a conflict message.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.name);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }

    /// The `managedFields` JSON entry.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.name.clone()));
        m.insert("operation".into(), Value::String(self.operation.as_str().into()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), Value::String(self.subresource.clone()));
        }
        Value::Object(m)
    }

    /// Parses one `managedFields` entry.
    pub fn from_json(v: &Value) -> Option<Manager> {
        let operation = match v.get("operation")?.as_str()? {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            _ => return None,
        };
        Some(Manager {
            name: v.get("manager").and_then(Value::as_str).unwrap_or_default().to_string(),
            operation,
            subresource: v.get("subresource").and_then(Value::as_str).unwrap_or_default().to_string(),
            api_version: v.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_string(),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            set: Set::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Object(Map::new())))?,
        })
    }
}

/// Sorts entries the way the API server stores them: appliers first, then by time and name.
pub fn sort_managers(managers: &mut [Manager]) {
    managers.sort_by(|a, b| {
        (a.operation, &a.time, &a.name, &a.api_version, &a.subresource).cmp(&(
            b.operation,
            &b.time,
            &b.name,
            &b.api_version,
            &b.subresource,
        ))
    });
}

/// One conflicting field and the manager that owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The owner, as the API server prints it (`"kubectl"`, `"x" using apps/v1`).
    pub manager: String,
    /// The field.
    pub path: Path,
}

/// Why an apply could not be carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum ApplyError {
    /// Fields owned by other managers would change.
    Conflicts(Vec<Conflict>),
    /// The configuration does not fit the schema (a list item without its key, duplicate keys).
    Malformed(String),
}

/// Fields no manager ever owns: identity and server-maintained metadata.
pub fn stripped_fields() -> Set {
    let mut s = Set::new();
    for p in [
        &["apiVersion"][..],
        &["kind"],
        &["metadata"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "uid"],
        &["metadata", "resourceVersion"],
        &["metadata", "generation"],
        &["metadata", "creationTimestamp"],
        &["metadata", "managedFields"],
        &["metadata", "selfLink"],
        &["metadata", "deletionTimestamp"],
        &["metadata", "deletionGracePeriodSeconds"],
    ] {
        s.insert(&Path::fields(p));
    }
    s
}

/// The result of a successful apply or update.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The new object (without server-maintained metadata).
    pub object: Value,
    /// The new `managedFields`.
    pub managers: Vec<Manager>,
}

/// Server-side apply of `config` by `manager` onto `live` (an empty object when absent).
/// `ignored` are fields the endpoint resets (`status` on the main resource), already removed
/// from `config` by the caller; `now` stamps the applier's entry when the object changes.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    live: &Value,
    config: &Value,
    schema: &Schema,
    managers: &[Manager],
    manager: &str,
    subresource: &str,
    api_version: &str,
    force: bool,
    ignored: &Set,
    now: &str,
) -> Result<Outcome, ApplyError> {
    let config_set = to_field_set(config, schema)?.recursive_difference(ignored);
    let mut merged = merge(Some(live), Some(config), schema).unwrap_or(Value::Object(Map::new()));

    let mut ms: Vec<Manager> = managers.to_vec();
    let last = ms.iter().position(|m| m.same_identity(manager, Operation::Apply, subresource)).map(|i| ms.remove(i));
    let is_new = last.is_none();
    let last_set = last.as_ref().map(|m| m.set.clone()).unwrap_or_default();
    let mut applier = Manager {
        name: manager.to_string(),
        operation: Operation::Apply,
        subresource: subresource.to_string(),
        api_version: api_version.to_string(),
        time: last.and_then(|m| m.time),
        set: config_set,
    };

    // Prune: what the applier owned before and no longer applies goes, unless someone owns it.
    if !last_set.is_empty() {
        let mut owned = applier.set.clone();
        for m in &ms {
            owned = owned.union(&m.set);
        }
        let owned = owned.with_field_parents();
        let candidates = last_set.difference(&stripped_fields()).with_field_parents().difference(&owned);
        remove_paths(&mut merged, &candidates, schema);
    }

    let cmp = compare(live, &merged, schema);
    let changed = cmp.added.union(&cmp.modified);
    let mut conflicts = Vec::new();
    for m in &ms {
        for p in m.set.intersection(&changed).members() {
            conflicts.push(Conflict { manager: m.describe(), path: p });
        }
    }
    if !force && !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for m in &mut ms {
        m.set = m.set.difference(&changed).difference(&cmp.removed);
    }

    applier.set = applier.set.difference(&stripped_fields());
    if !cmp.is_empty() || is_new {
        applier.time = Some(now.to_string());
    }
    ms.push(applier);
    ms.retain(|m| !m.set.is_empty());
    sort_managers(&mut ms);
    Ok(Outcome { object: merged, managers: ms })
}

/// Ownership after a non-apply write of `new` over `live` (`live` empty for a create).
#[allow(clippy::too_many_arguments)]
pub fn update(
    live: &Value,
    new: &Value,
    schema: &Schema,
    managers: &[Manager],
    manager: &str,
    subresource: &str,
    api_version: &str,
    ignored: &Set,
    now: &str,
) -> Vec<Manager> {
    let cmp = compare(live, new, schema);
    let mut ms: Vec<Manager> = managers.to_vec();
    let prev = ms.iter().position(|m| m.same_identity(manager, Operation::Update, subresource)).map(|i| ms.remove(i));
    let changed = cmp.added.union(&cmp.modified);
    for m in &mut ms {
        m.set = m.set.difference(&changed).difference(&cmp.removed);
    }
    let prev_set = prev.as_ref().map(|m| m.set.clone()).unwrap_or_default();
    let set =
        prev_set.difference(&cmp.removed).union(&changed).recursive_difference(ignored).difference(&stripped_fields());
    let time = if cmp.is_empty() { prev.and_then(|m| m.time) } else { Some(now.to_string()) };
    ms.push(Manager {
        name: manager.to_string(),
        operation: Operation::Update,
        subresource: subresource.to_string(),
        api_version: api_version.to_string(),
        time,
        set,
    });
    ms.retain(|m| !m.set.is_empty());
    sort_managers(&mut ms);
    ms
}

/// The path element of item `item` of a list of type `list`.
fn item_element(list: &ListType, index: usize, item: &Value) -> Result<PathElement, String> {
    match list {
        ListType::Atomic => Ok(PathElement::Index(index)),
        ListType::Set => Ok(PathElement::Value(KeyValue::of(item))),
        ListType::Map { keys, defaults } => {
            let mut fields = Vec::with_capacity(keys.len());
            for k in keys {
                match item.get(k).or_else(|| defaults.get(k)) {
                    Some(v) if !v.is_null() => fields.push((k.clone(), KeyValue::of(v))),
                    _ => {
                        return Err(format!(
                            "element {index}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                        ));
                    }
                }
            }
            fields.sort();
            Ok(PathElement::Key(fields))
        }
    }
}

/// The items of a non-atomic list by path element; duplicates are an error.
fn index_items<'a>(list: &ListType, items: &'a [Value], path: &Path) -> Result<Vec<(PathElement, &'a Value)>, String> {
    let mut out: Vec<(PathElement, &Value)> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let pe = item_element(list, i, item).map_err(|e| format!("{path}: {e}"))?;
        if out.iter().any(|(p, _)| p == &pe) {
            return Err(format!("{path}: duplicate entries for key {pe}"));
        }
        out.push((pe, item));
    }
    Ok(out)
}

/// The fields a configuration sets, as structured-merge-diff records them for its applier.
pub fn to_field_set(config: &Value, schema: &Schema) -> Result<Set, ApplyError> {
    let mut set = Set::new();
    walk_set(config, schema, &Path::default(), &mut set).map_err(ApplyError::Malformed)?;
    Ok(set)
}

fn walk_set(v: &Value, schema: &Schema, path: &Path, set: &mut Set) -> Result<(), String> {
    match v {
        Value::Object(obj) => {
            if schema.is_atomic() && !path.0.is_empty() {
                set.insert(path);
                return Ok(());
            }
            for (k, child) in obj {
                let child_path = path.child(PathElement::Field(k.clone()));
                let child_schema = schema.field(k);
                walk_set(child, &child_schema, &child_path, set)?;
                let empty_map = child.as_object().is_some_and(Map::is_empty);
                if child.is_null() || empty_map || !schema.is_named_field(k) {
                    set.insert(&child_path);
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            let (list, elem) = schema.list_type();
            if list == ListType::Atomic {
                set.insert(path);
                return Ok(());
            }
            for (pe, item) in index_items(&list, items, path)? {
                let item_path = path.child(pe);
                walk_set(item, &elem, &item_path, set)?;
                set.insert(&item_path);
            }
            Ok(())
        }
        _ => {
            set.insert(path);
            Ok(())
        }
    }
}

/// Merges `config` into `live` by the schema: configuration values win, structs and granular
/// maps merge key by key, associative lists and sets merge item by item, atomic nodes are
/// replaced. An explicit `null` in the configuration removes the field.
pub fn merge(live: Option<&Value>, config: Option<&Value>, schema: &Schema) -> Option<Value> {
    match (live, config) {
        (l, None) => l.cloned(),
        (_, Some(Value::Null)) => None,
        (None, Some(c)) => Some(strip_nulls(c)),
        (Some(Value::Object(l)), Some(Value::Object(c))) if !schema.is_atomic() => {
            let mut out = Map::new();
            for (k, lv) in l {
                let merged =
                    if c.contains_key(k) { merge(Some(lv), c.get(k), &schema.field(k)) } else { Some(lv.clone()) };
                if let Some(m) = merged {
                    out.insert(k.clone(), m);
                }
            }
            for (k, cv) in c {
                if !l.contains_key(k)
                    && let Some(m) = merge(None, Some(cv), &schema.field(k))
                {
                    out.insert(k.clone(), m);
                }
            }
            Some(Value::Object(out))
        }
        (Some(Value::Array(l)), Some(Value::Array(c))) => {
            let (list, elem) = schema.list_type();
            if list == ListType::Atomic {
                return Some(strip_nulls(&Value::Array(c.clone())));
            }
            let (Ok(li), Ok(ci)) = (index_items(&list, l, &Path::default()), index_items(&list, c, &Path::default()))
            else {
                return Some(Value::Array(c.clone()));
            };
            Some(Value::Array(merge_list_items(&li, &ci, &elem)))
        }
        (_, Some(c)) => Some(strip_nulls(c)),
    }
}

/// Orders a merged associative list the way structured-merge-diff does: live items keep their
/// place, items shared with the configuration follow the configuration's order, new items come
/// where the configuration puts them.
fn merge_list_items(lhs: &[(PathElement, &Value)], rhs: &[(PathElement, &Value)], elem: &Arc<Schema>) -> Vec<Value> {
    let in_rhs = |pe: &PathElement| rhs.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let in_lhs = |pe: &PathElement| lhs.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let mut shared: std::collections::VecDeque<&PathElement> =
        rhs.iter().filter(|(p, _)| in_lhs(p).is_some()).map(|(p, _)| p).collect();
    let mut next_shared = shared.pop_front();
    let mut merged_rhs: Vec<&PathElement> = Vec::new();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs[li].0;
            if pe == &rhs[ri].0 {
                merged_rhs.push(pe);
                if let Some(v) = merge(Some(lhs[li].1), Some(rhs[ri].1), elem) {
                    out.push(v);
                }
                li += 1;
                ri += 1;
                next_shared = shared.pop_front();
                continue;
            }
            if in_rhs(pe).is_some() && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            let pe = &lhs[li].0;
            if in_rhs(pe).is_none() {
                out.push(lhs[li].1.clone());
                li += 1;
                continue;
            } else if merged_rhs.contains(&pe) {
                li += 1;
                continue;
            }
        }
        if ri < rhs.len() {
            let pe = &rhs[ri].0;
            merged_rhs.push(pe);
            if let Some(v) = merge(in_lhs(pe), Some(rhs[ri].1), elem) {
                out.push(v);
            }
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.pop_front();
            }
        }
    }
    out
}

fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), strip_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Paths added, changed and removed between two versions of an object.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Comparison {
    /// Present only in the new version (every node of an added subtree).
    pub added: Set,
    /// Leaves (or atomic nodes) whose value changed.
    pub modified: Set,
    /// Present only in the old version.
    pub removed: Set,
}

impl Comparison {
    /// True when both versions are equal.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares two versions of an object by the schema.
pub fn compare(old: &Value, new: &Value, schema: &Schema) -> Comparison {
    let mut cmp = Comparison::default();
    walk_compare(Some(old), Some(new), schema, &Path::default(), &mut cmp);
    cmp
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn walk_compare(l: Option<&Value>, r: Option<&Value>, schema: &Schema, path: &Path, cmp: &mut Comparison) {
    let leaf = |cmp: &mut Comparison| match (l, r) {
        (None, Some(_)) => cmp.added.insert(path),
        (Some(_), None) => cmp.removed.insert(path),
        (Some(a), Some(b)) if a != b => cmp.modified.insert(path),
        _ => {}
    };
    let is_object = matches!(l, Some(Value::Object(_))) || matches!(r, Some(Value::Object(_)));
    let is_array = matches!(l, Some(Value::Array(_))) || matches!(r, Some(Value::Array(_)));
    let same_kind = match (l, r) {
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => true,
    };
    if !same_kind || (!is_object && !is_array) || (schema.is_atomic() && !path.0.is_empty()) {
        return leaf(cmp);
    }
    if is_empty_container(l) && is_empty_container(r) {
        return leaf(cmp);
    }
    if is_object {
        let empty = Map::new();
        let lm = l.and_then(Value::as_object).unwrap_or(&empty);
        let rm = r.and_then(Value::as_object).unwrap_or(&empty);
        for (k, lv) in lm {
            walk_compare(Some(lv), rm.get(k), &schema.field(k), &path.child(PathElement::Field(k.clone())), cmp);
        }
        for (k, rv) in rm {
            if !lm.contains_key(k) {
                walk_compare(None, Some(rv), &schema.field(k), &path.child(PathElement::Field(k.clone())), cmp);
            }
        }
    } else {
        let (list, elem) = schema.list_type();
        if list == ListType::Atomic {
            return leaf(cmp);
        }
        let empty = Vec::new();
        let la = l.and_then(Value::as_array).unwrap_or(&empty);
        let ra = r.and_then(Value::as_array).unwrap_or(&empty);
        let (Ok(li), Ok(ri)) = (index_items(&list, la, path), index_items(&list, ra, path)) else {
            return leaf(cmp);
        };
        for (pe, lv) in &li {
            let rv = ri.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
            walk_compare(Some(lv), rv, &elem, &path.child(pe.clone()), cmp);
        }
        for (pe, rv) in &ri {
            if !li.iter().any(|(p, _)| p == pe) {
                walk_compare(None, Some(rv), &elem, &path.child(pe.clone()), cmp);
            }
        }
    }
    if l.is_none() {
        cmp.added.insert(path);
    } else if r.is_none() {
        cmp.removed.insert(path);
    }
}

/// Removes every member of `paths` (with its subtree) from `v`.
pub fn remove_paths(v: &mut Value, paths: &Set, schema: &Schema) {
    remove_at(v, paths, schema, &Path::default());
}

fn remove_at(v: &mut Value, paths: &Set, schema: &Schema, path: &Path) {
    match v {
        Value::Object(obj) => {
            let keys: Vec<String> = obj.keys().cloned().collect();
            for k in keys {
                let p = path.child(PathElement::Field(k.clone()));
                if paths.has(&p) {
                    obj.shift_remove(&k);
                } else if paths.has_below(&p)
                    && let Some(child) = obj.get_mut(&k)
                {
                    remove_at(child, paths, &schema.field(&k), &p);
                }
            }
        }
        Value::Array(items) => {
            let (list, elem) = schema.list_type();
            if list == ListType::Atomic {
                return;
            }
            let mut keep = Vec::with_capacity(items.len());
            for (i, mut item) in std::mem::take(items).into_iter().enumerate() {
                let Ok(pe) = item_element(&list, i, &item) else {
                    keep.push(item);
                    continue;
                };
                let p = path.child(pe);
                if paths.has(&p) {
                    continue;
                }
                if paths.has_below(&p) {
                    remove_at(&mut item, paths, &elem, &p);
                }
                keep.push(item);
            }
            *items = keep;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
