//! Field paths and field sets as Kubernetes records them in `managedFields` (`fieldsV1`).
//!
//! A path element is one of `f:<field>` (a field of a struct or a key of a map),
//! `k:{"name":"web"}` (an item of an associative list, by its key fields), `v:<json>` (an item
//! of a set) or `i:<index>` (an item of a list by position). A [`Set`] is a tree of such
//! elements in which a node may itself be a member (owned) and may have children; in the JSON
//! encoding a node that is a member and has children carries a `".": {}` entry.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathElement {
    /// A struct field or map key.
    Field(String),
    /// An associative-list item, by its key fields (sorted by field name).
    Key(Vec<(String, KeyValue)>),
    /// A set item (a scalar list element), by value.
    Value(KeyValue),
    /// A list item by index (for lists that are neither sets nor associative).
    Index(usize),
}

/// A scalar as used in keys and set items, kept as its compact JSON text so it orders and hashes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyValue(pub String);

impl KeyValue {
    /// The key value of a JSON scalar.
    pub fn of(v: &Value) -> Self {
        KeyValue(serde_json::to_string(v).unwrap_or_default())
    }
}

impl PathElement {
    /// The `fieldsV1` key of this element (`f:name`, `k:{...}`, `v:...`, `i:0`).
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    m.insert(k.clone(), serde_json::from_str(&v.0).unwrap_or(Value::Null));
                }
                format!("k:{}", Value::Object(m))
            }
            PathElement::Value(v) => format!("v:{}", v.0),
            PathElement::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a `fieldsV1` key.
    pub fn decode(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_at_checked(2)?;
        match prefix {
            "f:" => Some(PathElement::Field(rest.to_string())),
            "k:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                let mut fields: Vec<(String, KeyValue)> =
                    v.as_object()?.iter().map(|(k, v)| (k.clone(), KeyValue::of(v))).collect();
                fields.sort();
                Some(PathElement::Key(fields))
            }
            "v:" => {
                let v: Value = serde_json::from_str(rest).ok()?;
                Some(PathElement::Value(KeyValue::of(&v)))
            }
            "i:" => rest.parse().ok().map(PathElement::Index),
            _ => None,
        }
    }
}

impl fmt::Display for PathElement {
    /// The notation of structured-merge-diff, used in conflict messages: `.spec`,
    /// `[name="web"]`, `[=value]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(v) => write!(f, "[={}]", v.0),
            PathElement::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the root of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Path(pub Vec<PathElement>);

impl Path {
    /// A path of struct fields, e.g. `Path::fields(&["spec", "replicas"])`.
    pub fn fields(names: &[&str]) -> Self {
        Path(names.iter().map(|n| PathElement::Field((*n).to_string())).collect())
    }

    /// This path extended by one element.
    pub fn child(&self, pe: PathElement) -> Self {
        let mut v = self.0.clone();
        v.push(pe);
        Path(v)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of paths, as a tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Set {
    children: BTreeMap<PathElement, Node>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Node {
    member: bool,
    set: Set,
}

impl Set {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when no path is a member.
    pub fn is_empty(&self) -> bool {
        self.children.values().all(|n| !n.member && n.set.is_empty())
    }

    /// Adds `path` as a member.
    pub fn insert(&mut self, path: &Path) {
        let mut cur = self;
        let Some((last, init)) = path.0.split_last() else { return };
        for pe in init {
            cur = &mut cur.children.entry(pe.clone()).or_default().set;
        }
        cur.children.entry(last.clone()).or_default().member = true;
    }

    /// True when `path` is a member.
    pub fn has(&self, path: &Path) -> bool {
        let mut cur = self;
        let Some((last, init)) = path.0.split_last() else { return false };
        for pe in init {
            match cur.children.get(pe) {
                Some(n) => cur = &n.set,
                None => return false,
            }
        }
        cur.children.get(last).is_some_and(|n| n.member)
    }

    /// True when a member lies strictly below `path`.
    pub fn has_below(&self, path: &Path) -> bool {
        let mut cur = self;
        for pe in &path.0 {
            match cur.children.get(pe) {
                Some(n) => cur = &n.set,
                None => return false,
            }
        }
        !cur.is_empty()
    }

    /// Every member path, in order.
    pub fn members(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Path::default(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Path, out: &mut Vec<Path>) {
        for (pe, node) in &self.children {
            prefix.0.push(pe.clone());
            if node.member {
                out.push(prefix.clone());
            }
            node.set.collect(prefix, out);
            prefix.0.pop();
        }
    }

    /// Members of either set.
    pub fn union(&self, other: &Set) -> Set {
        let mut out = self.clone();
        for p in other.members() {
            out.insert(&p);
        }
        out
    }

    /// Members of both sets.
    pub fn intersection(&self, other: &Set) -> Set {
        let mut out = Set::new();
        for p in self.members() {
            if other.has(&p) {
                out.insert(&p);
            }
        }
        out
    }

    /// Members of `self` that are not members of `other`.
    pub fn difference(&self, other: &Set) -> Set {
        let mut out = Set::new();
        for p in self.members() {
            if !other.has(&p) {
                out.insert(&p);
            }
        }
        out
    }

    /// Members of `self` that are neither in `other` nor below a member of `other`.
    pub fn recursive_difference(&self, other: &Set) -> Set {
        let mut out = Set::new();
        for p in self.members() {
            let covered = (1..=p.0.len()).any(|n| other.has(&Path(p.0[..n].to_vec())));
            if !covered {
                out.insert(&p);
            }
        }
        out
    }

    /// This set plus every intermediate node reached through a field (`f:`) element, which
    /// structured-merge-diff treats as owned when pruning ("named fields are members").
    pub fn with_field_parents(&self) -> Set {
        let mut out = self.clone();
        for p in self.members() {
            for n in 1..p.0.len() {
                if matches!(p.0[n - 1], PathElement::Field(_)) {
                    out.insert(&Path(p.0[..n].to_vec()));
                }
            }
        }
        out
    }

    /// The `fieldsV1` JSON of this set.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (pe, node) in &self.children {
            let mut child = match node.set.to_fields_v1() {
                Value::Object(o) => o,
                _ => Map::new(),
            };
            if node.member && !child.is_empty() {
                let mut with_dot = Map::new();
                with_dot.insert(".".into(), Value::Object(Map::new()));
                with_dot.extend(child);
                child = with_dot;
            }
            m.insert(pe.encode(), Value::Object(child));
        }
        Value::Object(m)
    }

    /// Parses `fieldsV1` JSON; `None` when it is not a well-formed field set.
    pub fn from_fields_v1(v: &Value) -> Option<Set> {
        let obj = v.as_object()?;
        let mut out = Set::new();
        for (k, child) in obj {
            if k == "." {
                continue;
            }
            let pe = PathElement::decode(k)?;
            let child_obj = child.as_object()?;
            let sub = Set::from_fields_v1(child)?;
            let member = child_obj.is_empty() || child_obj.contains_key(".");
            out.children.insert(pe, Node { member, set: sub });
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trips_with_dot_for_members_that_have_children() {
        let v = json!({
            "f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"nginx\"}": {".": {}, "f:image": {}, "f:name": {}}
            }}}, "f:replicas": {}}
        });
        let set = Set::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        let paths: Vec<String> = set.members().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            paths,
            [
                ".spec.replicas",
                ".spec.template.spec.containers[name=\"nginx\"]",
                ".spec.template.spec.containers[name=\"nginx\"].image",
                ".spec.template.spec.containers[name=\"nginx\"].name",
            ]
        );
    }

    #[test]
    fn keys_with_several_fields_are_sorted_and_render_like_structured_merge_diff() {
        let pe = PathElement::decode("k:{\"protocol\":\"TCP\",\"containerPort\":80}").unwrap();
        assert_eq!(pe.encode(), "k:{\"containerPort\":80,\"protocol\":\"TCP\"}");
        assert_eq!(pe.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(PathElement::decode("v:\"a\"").unwrap().to_string(), "[=\"a\"]");
    }

    #[test]
    fn set_algebra() {
        let mut a = Set::new();
        a.insert(&Path::fields(&["spec", "replicas"]));
        a.insert(&Path::fields(&["spec", "paused"]));
        let mut b = Set::new();
        b.insert(&Path::fields(&["spec", "replicas"]));
        assert_eq!(a.intersection(&b).members(), vec![Path::fields(&["spec", "replicas"])]);
        assert_eq!(a.difference(&b).members(), vec![Path::fields(&["spec", "paused"])]);
        assert!(a.has_below(&Path::fields(&["spec"])));
        assert!(!a.has(&Path::fields(&["spec"])));
        assert!(a.with_field_parents().has(&Path::fields(&["spec"])));
        let mut spec = Set::new();
        spec.insert(&Path::fields(&["spec"]));
        assert!(a.recursive_difference(&spec).is_empty());
    }
}
