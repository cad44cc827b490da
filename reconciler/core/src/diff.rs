//! Diffs: of managed fields by JSON pointer, of a rollout's resources against what is live, and
//! of two renders of an app. Pure, so `keelson plan` and the daemon compute them the same way.

use keelson_provider_api::{DesiredResource, Observed, ResourceId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{ChangeKind, PlannedChange};
use crate::fleet::ResourceDrift;

/// One changed field, by JSON pointer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub pointer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

/// Every leaf that differs between `old` and `new`; objects are compared key by key, arrays and
/// scalars as a whole (a changed list shows as one change, which is how people read them).
pub fn field_diff(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    diff_into(String::new(), Some(old), Some(new), &mut out);
    out
}

fn diff_into(pointer: String, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                diff_into(p, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange { pointer, old: a.cloned(), new: b.cloned() }),
    }
}

/// Per-resource changes of a rollout, for the ledger's `plan` entry: what is created, what
/// changes (by field), what is deleted, and what could not be observed (with why).
pub fn resource_changes(
    desired: &[DesiredResource],
    observed: &[(ResourceId, keelson_provider_api::Result<Option<Observed>>)],
    deletes: &[ResourceId],
) -> Vec<PlannedChange> {
    let change =
        |id: &ResourceId, change, fields, message| PlannedChange { resource: id.to_string(), change, fields, message };
    let mut out: Vec<PlannedChange> = desired
        .iter()
        .filter_map(|r| match observed.iter().find(|(id, _)| id == &r.id).map(|(_, o)| o) {
            None | Some(Ok(None)) => Some(change(&r.id, ChangeKind::Create, Vec::new(), None)),
            Some(Ok(Some(o))) => {
                let fields: Vec<String> = field_diff(&o.spec, &r.spec).into_iter().map(|c| c.pointer).collect();
                (!fields.is_empty()).then(|| change(&r.id, ChangeKind::Update, fields, None))
            }
            Some(Err(e)) => Some(change(
                &r.id,
                ChangeKind::Unknown,
                Vec::new(),
                Some(format!("could not be observed ({}): {e}", e.class())),
            )),
        })
        .collect();
    out.extend(deletes.iter().map(|id| change(id, ChangeKind::Delete, Vec::new(), None)));
    out
}

/// Drift: the managed fields of live resources that differ from `desired`, by pointer under
/// `/spec` (`/spec/replicas`), minus those `ignored` names for each resource (a pointer ignores
/// itself and everything below it). A resource that is gone is `missing`; one that could not be
/// observed says nothing either way and is left out (the caller sees the error in `observed`).
pub fn drift(
    desired: &[DesiredResource],
    observed: &[(ResourceId, keelson_provider_api::Result<Option<Observed>>)],
    ignored: impl Fn(&ResourceId) -> Vec<String>,
) -> Vec<ResourceDrift> {
    let mut out = Vec::new();
    for r in desired {
        let Some((_, found)) = observed.iter().find(|(id, _)| id == &r.id) else { continue };
        match found {
            Ok(None) => out.push(ResourceDrift { resource: r.id.to_string(), missing: true, changes: Vec::new() }),
            Ok(Some(live)) => {
                let ignore = ignored(&r.id);
                let changes: Vec<FieldChange> = field_diff(&live.spec, &r.spec)
                    .into_iter()
                    .map(|c| FieldChange { pointer: format!("/spec{}", c.pointer), ..c })
                    .filter(|c| !ignore.iter().any(|i| covers(i, &c.pointer)))
                    .collect();
                if !changes.is_empty() {
                    out.push(ResourceDrift { resource: r.id.to_string(), missing: false, changes });
                }
            }
            Err(_) => {}
        }
    }
    out
}

/// True when JSON pointer `ignore` is `pointer` or one of its ancestors.
fn covers(ignore: &str, pointer: &str) -> bool {
    let ignore = ignore.trim_end_matches('/');
    ignore.is_empty() || pointer == ignore || pointer.strip_prefix(ignore).is_some_and(|rest| rest.starts_with('/'))
}

/// What happens to one rendered resource between two revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceChange {
    /// `instance:Kind/namespace/name`.
    pub resource: String,
    /// `create`, `update` or `delete`.
    pub change: ChangeKind,
    /// The managed fields that change (for a create: every field).
    pub fields: Vec<FieldChange>,
}

/// Resource-level diff of two renders (either may be empty).
pub fn diff_resources(base: &[DesiredResource], head: &[DesiredResource]) -> Vec<ResourceChange> {
    let mut out = Vec::new();
    for r in head {
        match base.iter().find(|b| b.id == r.id) {
            None => out.push(ResourceChange {
                resource: r.id.to_string(),
                change: ChangeKind::Create,
                fields: field_diff(&Value::Null, &r.spec),
            }),
            Some(b) => {
                let fields = field_diff(&b.spec, &r.spec);
                if !fields.is_empty() {
                    out.push(ResourceChange { resource: r.id.to_string(), change: ChangeKind::Update, fields });
                }
            }
        }
    }
    for b in base.iter().filter(|b| !head.iter().any(|r| r.id == b.id)) {
        out.push(ResourceChange { resource: b.id.to_string(), change: ChangeKind::Delete, fields: Vec::new() });
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_diff_reports_leaves_by_pointer() {
        let old = json!({"spec": {"replicas": 3, "image": "a", "gone": 1, "list": [1, 2]}});
        let new = json!({"spec": {"replicas": 5, "image": "a", "new/key": true, "list": [1]}});
        let pointers: Vec<_> = field_diff(&old, &new).into_iter().map(|c| c.pointer).collect();
        assert_eq!(pointers, vec!["/spec/gone", "/spec/list", "/spec/new~1key", "/spec/replicas"]);
    }

    fn desired(name: &str, spec: Value) -> DesiredResource {
        DesiredResource {
            id: ResourceId::namespaced("sim", "sim.keelson.dev/v1", "Workload", "web", name),
            owner: keelson_provider_api::Owner { app: "web".into() },
            digest: "sha256:d".into(),
            spec,
        }
    }

    #[test]
    fn resource_changes_say_create_update_delete_and_what_could_not_be_observed() {
        let a = desired("a", json!({"replicas": 2}));
        let b = desired("b", json!({"replicas": 2}));
        let c = desired("c", json!({"replicas": 2}));
        let gone = ResourceId::namespaced("sim", "sim.keelson.dev/v1", "Route", "web", "a");
        let observed = vec![
            (a.id.clone(), Ok(Some(Observed { id: a.id.clone(), digest: None, spec: json!({"replicas": 1}) }))),
            (b.id.clone(), Ok(None)),
            (c.id.clone(), Err(keelson_provider_api::Error::unavailable(&"sim".into(), "down"))),
        ];
        let changes = resource_changes(&[a, b, c], &observed, &[gone]);
        let summary: Vec<(&str, ChangeKind)> = changes.iter().map(|c| (c.resource.as_str(), c.change)).collect();
        assert_eq!(
            summary,
            [
                ("sim:Workload/web/a", ChangeKind::Update),
                ("sim:Workload/web/b", ChangeKind::Create),
                ("sim:Workload/web/c", ChangeKind::Unknown),
                ("sim:Route/web/a", ChangeKind::Delete)
            ]
        );
        assert_eq!(changes[0].fields, ["/replicas"]);
        assert!(changes[2].message.as_deref().unwrap().contains("(transient)"), "{:?}", changes[2]);
    }

    #[test]
    fn renders_diff_by_resource_id() {
        let before = [desired("a", json!({"replicas": 1})), desired("old", json!({}))];
        let after = [desired("a", json!({"replicas": 3})), desired("new", json!({"image": "x"}))];
        let changes = diff_resources(&before, &after);
        let summary: Vec<(&str, ChangeKind, usize)> =
            changes.iter().map(|c| (c.resource.as_str(), c.change, c.fields.len())).collect();
        assert_eq!(
            summary,
            [
                ("sim:Workload/web/a", ChangeKind::Update, 1),
                ("sim:Workload/web/new", ChangeKind::Create, 1),
                ("sim:Workload/web/old", ChangeKind::Delete, 0)
            ]
        );
        assert!(diff_resources(&after, &after).is_empty());
    }

    #[test]
    fn drift_names_fields_under_spec_and_leaves_out_ignored_ones() {
        let a = desired("a", json!({"image": "x:1", "replicas": 2, "resources": {"cpu": "1"}}));
        let b = desired("b", json!({"replicas": 2}));
        let c = desired("c", json!({"replicas": 2}));
        let live = |r: &DesiredResource, spec: Value| {
            (r.id.clone(), Ok(Some(Observed { id: r.id.clone(), digest: None, spec })))
        };
        let observed = vec![
            live(&a, json!({"image": "x:2", "replicas": 5, "resources": {"cpu": "2"}})),
            (b.id.clone(), Ok(None)),
            (c.id.clone(), Err(keelson_provider_api::Error::unavailable(&"sim".into(), "down"))),
        ];
        let all = drift(&[a.clone(), b.clone(), c.clone()], &observed, |_| Vec::new());
        assert_eq!(all.len(), 2, "an unobservable resource says nothing: {all:?}");
        let pointers: Vec<&str> = all[0].changes.iter().map(|c| c.pointer.as_str()).collect();
        assert_eq!(pointers, ["/spec/image", "/spec/replicas", "/spec/resources/cpu"]);
        assert_eq!(all[0].changes[1].old, Some(json!(5)), "old is what is live");
        assert_eq!(all[0].changes[1].new, Some(json!(2)), "new is what git wants");
        assert!(all[1].missing);
        let ignored =
            drift(std::slice::from_ref(&a), &observed, |_| vec!["/spec/replicas".into(), "/spec/resources".into()]);
        let pointers: Vec<&str> = ignored[0].changes.iter().map(|c| c.pointer.as_str()).collect();
        assert_eq!(pointers, ["/spec/image"]);
        let none = drift(&[a], &observed, |_| {
            vec!["/spec/image".into(), "/spec/replicas".into(), "/spec/resources/cpu".into()]
        });
        assert!(none.is_empty(), "{none:?}");
        assert!(!covers("/spec/rep", "/spec/replicas"), "a pointer is not a string prefix");
    }

    #[test]
    fn identical_values_have_no_diff() {
        let v = json!({"a": {"b": [1, {"c": null}]}});
        assert!(field_diff(&v, &v).is_empty());
    }
}
