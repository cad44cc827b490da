//! The documented cases of server-side apply (the Kubernetes documentation's "Server-Side
//! Apply" page: field management, conflicts, managers, merge strategy, transferring ownership,
//! custom resources, controllers), transcribed as tests of the algorithm.

use serde_json::{Value, json};

use super::*;
use crate::schema;

const NOW: &str = "2026-01-01T00:00:00Z";

/// One object and its managers, written to as the API server would.
struct Live {
    object: Value,
    managers: Vec<Manager>,
    schema: Schema,
}

impl Live {
    fn new(group: &str, kind: &str) -> Self {
        Live { object: json!({}), managers: Vec::new(), schema: schema::builtin(group, kind) }
    }

    fn apply(&mut self, manager: &str, config: Value, force: bool) -> Result<(), Vec<Conflict>> {
        let av = config["apiVersion"].as_str().unwrap_or("v1").to_string();
        match super::apply(
            &self.object,
            &config,
            &self.schema,
            &self.managers,
            manager,
            "",
            &av,
            force,
            &Set::new(),
            NOW,
        ) {
            Ok(o) => {
                self.object = o.object;
                self.managers = o.managers;
                Ok(())
            }
            Err(ApplyError::Conflicts(c)) => Err(c),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn update(&mut self, manager: &str, edit: impl FnOnce(&mut Value)) {
        let mut new = self.object.clone();
        edit(&mut new);
        let av = new["apiVersion"].as_str().unwrap_or("v1").to_string();
        self.managers =
            super::update(&self.object, &new, &self.schema, &self.managers, manager, "", &av, &Set::new(), NOW);
        self.object = new;
    }

    fn fields(&self, manager: &str) -> Value {
        self.managers.iter().find(|m| m.name == manager).map(|m| m.set.to_fields_v1()).unwrap_or(Value::Null)
    }

    fn owners(&self) -> Vec<(&str, Operation)> {
        self.managers.iter().map(|m| (m.name.as_str(), m.operation)).collect()
    }
}

fn conflict_paths(c: &[Conflict]) -> Vec<String> {
    c.iter().map(|c| format!("{}: {}", c.manager, c.path)).collect()
}

/// A ConfigMap manifest; empty maps are left out (an applied empty map is itself owned).
fn cm(labels: Value, data: Value) -> Value {
    let mut o =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "test-cm", "namespace": "default"}});
    if labels.as_object().is_some_and(|m| !m.is_empty()) {
        o["metadata"]["labels"] = labels;
    }
    if data.as_object().is_some_and(|m| !m.is_empty()) {
        o["data"] = data;
    }
    o
}

// "Field management": a simple example of an object created using Server-Side Apply.
#[test]
fn apply_records_the_appliers_fields_in_fields_v1() {
    let mut live = Live::new("", "ConfigMap");
    live.apply("kubectl", cm(json!({"test-label": "test"}), json!({"key": "some value"})), false).unwrap();
    assert_eq!(live.object["data"]["key"], "some value");
    assert_eq!(live.owners(), [("kubectl", Operation::Apply)]);
    assert_eq!(
        live.fields("kubectl"),
        json!({"f:data": {"f:key": {}}, "f:metadata": {"f:labels": {"f:test-label": {}}}})
    );
}

// "Operations in scope for field management": an update by kube-controller-manager changes
// data.key and takes it over; the same change as an apply would have failed with a conflict.
#[test]
fn an_update_takes_changed_fields_and_an_apply_of_the_same_change_conflicts() {
    let mut live = Live::new("", "ConfigMap");
    live.apply("kubectl", cm(json!({"test-label": "test"}), json!({"key": "some value"})), false).unwrap();
    let before = live.object.clone();

    let mut other = Live { object: before.clone(), managers: live.managers.clone(), schema: live.schema.clone() };
    let err = other.apply("kube-controller-manager", cm(json!({}), json!({"key": "new value"})), false).unwrap_err();
    assert_eq!(conflict_paths(&err), ["\"kubectl\": .data.key"]);
    assert_eq!(other.object, before, "a conflicting apply changes nothing");

    live.update("kube-controller-manager", |o| o["data"]["key"] = json!("new value"));
    assert_eq!(live.fields("kubectl"), json!({"f:metadata": {"f:labels": {"f:test-label": {}}}}));
    assert_eq!(live.fields("kube-controller-manager"), json!({"f:data": {"f:key": {}}}));
    assert_eq!(live.owners(), [("kubectl", Operation::Apply), ("kube-controller-manager", Operation::Update)]);
}

fn deployment(replicas: Option<i64>, image: &str) -> Value {
    let mut d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx-deployment"},
        "spec": {
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                         "spec": {"containers": [{"name": "nginx", "image": image}]}}
        }
    });
    if let Some(r) = replicas {
        d["spec"]["replicas"] = json!(r);
    }
    d
}

// "Conflicts", option 1: overwrite value, become sole manager (force).
#[test]
fn forcing_a_conflict_overwrites_the_value_and_takes_sole_ownership() {
    let mut live = Live::new("apps", "Deployment");
    live.apply("alice", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    let err = live.apply("bob", deployment(Some(5), "nginx:1.14.2"), false).unwrap_err();
    assert_eq!(conflict_paths(&err), ["\"alice\": .spec.replicas"]);

    live.apply("bob", deployment(Some(5), "nginx:1.14.2"), true).unwrap();
    assert_eq!(live.object["spec"]["replicas"], 5);
    assert!(live.fields("alice")["f:spec"].get("f:replicas").is_none(), "alice lost .spec.replicas");
    assert!(live.fields("bob")["f:spec"].get("f:replicas").is_some());
    // Fields both applied with the same value stay shared.
    assert!(live.fields("alice")["f:spec"]["f:template"].is_object());
}

// "Conflicts", option 2: don't overwrite value, give up management claim.
#[test]
fn omitting_a_conflicting_field_leaves_the_value_and_drops_the_claim() {
    let mut live = Live::new("apps", "Deployment");
    live.apply("alice", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    live.apply("bob", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    // bob now wants no opinion on replicas.
    live.apply("bob", deployment(None, "nginx:1.14.2"), false).unwrap();
    assert_eq!(live.object["spec"]["replicas"], 3, "alice still owns it, so it stays");
    assert!(live.fields("bob")["f:spec"].get("f:replicas").is_none());
    assert!(live.fields("alice")["f:spec"].get("f:replicas").is_some());
}

// "Conflicts", option 3: don't overwrite value, become shared manager; and any later change of a
// shared field by either applier conflicts.
#[test]
fn applying_the_same_value_shares_ownership_and_then_changes_conflict() {
    let mut live = Live::new("apps", "Deployment");
    live.apply("alice", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    live.apply("bob", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    assert!(live.fields("alice")["f:spec"].get("f:replicas").is_some());
    assert!(live.fields("bob")["f:spec"].get("f:replicas").is_some());

    let err = live.apply("alice", deployment(Some(4), "nginx:1.14.2"), false).unwrap_err();
    assert_eq!(conflict_paths(&err), ["\"bob\": .spec.replicas"]);
    let err = live.apply("bob", deployment(Some(3), "nginx:1.16.1"), false).unwrap_err();
    assert_eq!(conflict_paths(&err), ["\"alice\": .spec.template.spec.containers[name=\"nginx\"].image"]);
}

// "If you remove a field from a manifest and apply that manifest, Server-Side Apply checks if
// there are any other field managers that also own the field. If the field is not owned by any
// other field managers, it is either deleted from the live object or reset to its default value."
#[test]
fn a_field_removed_from_the_manifest_is_deleted_unless_someone_else_owns_it() {
    let mut live = Live::new("", "ConfigMap");
    live.apply("alice", cm(json!({"a": "1", "b": "2"}), json!({"k1": "v1", "k2": "v2"})), false).unwrap();
    live.apply("bob", cm(json!({"b": "2"}), json!({})), false).unwrap();
    live.apply("alice", cm(json!({}), json!({"k1": "v1"})), false).unwrap();
    assert_eq!(live.object["data"], json!({"k1": "v1"}), "k2 had no other owner");
    assert_eq!(live.object["metadata"]["labels"], json!({"b": "2"}), "b is still owned by bob");
    assert_eq!(live.object["metadata"]["name"], "test-cm", "identity is never pruned");
}

// "The same rule applies to associative list or map items": containers merge by name, and each
// applier's containers survive the other's applies.
#[test]
fn associative_list_items_are_owned_and_pruned_item_by_item() {
    let two = |names: &[&str]| {
        let containers: Vec<Value> = names.iter().map(|n| json!({"name": n, "image": format!("{n}:1")})).collect();
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": containers}}}})
    };
    let mut live = Live::new("apps", "Deployment");
    live.apply("keelson", two(&["app", "helper"]), false).unwrap();
    live.apply("mesh-injector", two(&["sidecar"]), false).unwrap();
    let names = |live: &Live| -> Vec<String> {
        live.object["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&live), ["app", "helper", "sidecar"]);
    assert_eq!(
        live.fields("mesh-injector"),
        json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
    );
    // keelson drops "helper": it goes; the injector's sidecar stays.
    live.apply("keelson", two(&["app"]), false).unwrap();
    assert_eq!(names(&live), ["app", "sidecar"]);
}

// Ports are keyed by containerPort and protocol; protocol's default (TCP) completes the key.
#[test]
fn ports_merge_by_container_port_and_defaulted_protocol() {
    let with_ports = |ports: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "app:1", "ports": ports}]}}}})
    };
    let mut live = Live::new("apps", "Deployment");
    live.apply("keelson", with_ports(json!([{"containerPort": 8080, "name": "http"}])), false).unwrap();
    let f =
        &live.fields("keelson")["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:ports"];
    assert_eq!(
        f,
        &json!({"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}, "f:name": {}}})
    );
    // The same port with UDP is another item.
    live.apply("other", with_ports(json!([{"containerPort": 8080, "protocol": "UDP", "name": "dns"}])), false).unwrap();
    let ports = &live.object["spec"]["template"]["spec"]["containers"][0]["ports"];
    assert_eq!(ports.as_array().unwrap().len(), 2);
    // Two items with the same key are rejected.
    let dup = with_ports(json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]));
    let e = super::apply(&json!({}), &dup, &live.schema, &[], "x", "", "apps/v1", false, &Set::new(), NOW).unwrap_err();
    assert!(
        matches!(e, ApplyError::Malformed(m) if m.contains("duplicate entries for key [containerPort=80,protocol=\"TCP\"]"))
    );
}

// env merges by name, so two managers can each own variables of one container.
#[test]
fn env_vars_merge_by_name() {
    let env = |vars: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": [{"name": "app", "env": vars}]}}}})
    };
    let mut live = Live::new("apps", "Deployment");
    live.apply("keelson", env(json!([{"name": "A", "value": "1"}])), false).unwrap();
    live.apply("ops", env(json!([{"name": "B", "value": "2"}])), false).unwrap();
    let vars = &live.object["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(vars, &json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
    let err = live.apply("ops", env(json!([{"name": "A", "value": "changed"}])), false).unwrap_err();
    assert_eq!(
        conflict_paths(&err),
        ["\"keelson\": .spec.template.spec.containers[name=\"app\"].env[name=\"A\"].value"]
    );
}

// "atomic: the entire list is replaced during merge. At any point in time, a single manager owns
// the list." Tolerations and container args are atomic.
#[test]
fn atomic_lists_are_replaced_whole_and_owned_by_one_manager() {
    let tol = |t: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"tolerations": t}}}})
    };
    let mut live = Live::new("apps", "Deployment");
    live.apply("keelson", tol(json!([{"key": "spot", "operator": "Exists"}])), false).unwrap();
    assert_eq!(live.fields("keelson"), json!({"f:spec": {"f:template": {"f:spec": {"f:tolerations": {}}}}}));
    let err = live.apply("ops", tol(json!([{"key": "gpu", "operator": "Exists"}])), false).unwrap_err();
    assert_eq!(conflict_paths(&err), ["\"keelson\": .spec.template.spec.tolerations"]);
    live.apply("ops", tol(json!([{"key": "gpu", "operator": "Exists"}])), true).unwrap();
    assert_eq!(live.object["spec"]["template"]["spec"]["tolerations"], json!([{"key": "gpu", "operator": "Exists"}]));
    assert_eq!(live.fields("keelson"), Value::Null, "keelson owned nothing else, so its entry is gone");
}

// "set applies to lists that include only scalar elements": finalizers are a set.
#[test]
fn set_items_are_owned_one_by_one() {
    let fin = |f: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": f}});
    let mut live = Live::new("", "ConfigMap");
    live.apply("a", fin(json!(["example.com/a"])), false).unwrap();
    live.apply("b", fin(json!(["example.com/b"])), false).unwrap();
    assert_eq!(live.object["metadata"]["finalizers"], json!(["example.com/a", "example.com/b"]));
    assert_eq!(live.fields("b"), json!({"f:metadata": {"f:finalizers": {"v:\"example.com/b\"": {}}}}));
    live.apply("a", fin(json!([])), false).unwrap();
    assert_eq!(live.object["metadata"]["finalizers"], json!(["example.com/b"]));
}

// Service.spec.selector is an atomic map: owned and replaced as a whole.
#[test]
fn atomic_maps_are_owned_whole() {
    let svc = |sel: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"selector": sel}});
    let mut live = Live::new("", "Service");
    live.apply("keelson", svc(json!({"app": "web", "tier": "fe"})), false).unwrap();
    assert_eq!(live.fields("keelson"), json!({"f:spec": {"f:selector": {}}}));
    live.apply("keelson", svc(json!({"app": "web"})), false).unwrap();
    assert_eq!(live.object["spec"]["selector"], json!({"app": "web"}));
}

// "Transferring ownership": hand spec.replicas from a user to the HorizontalPodAutoscaler.
#[test]
fn replicas_hand_over_to_the_hpa_through_a_temporary_manager() {
    let mut live = Live::new("apps", "Deployment");
    live.apply("kubectl", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    // The race the page warns about: dropping replicas before anyone else owns it removes it
    // (the API server then defaults it to 1).
    let mut racy = Live { object: live.object.clone(), managers: live.managers.clone(), schema: live.schema.clone() };
    racy.apply("kubectl", deployment(None, "nginx:1.14.2"), false).unwrap();
    assert!(racy.object["spec"].get("replicas").is_none());

    // The safe way: a replicas-only manifest under a private manager shares the field...
    let replicas_only = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                               "metadata": {"name": "nginx-deployment"}, "spec": {"replicas": 3}});
    live.apply("handover-to-hpa", replicas_only, false).unwrap();
    // ...so the user can drop it without the value changing.
    live.apply("kubectl", deployment(None, "nginx:1.14.2"), false).unwrap();
    assert_eq!(live.object["spec"]["replicas"], 3);
    assert_eq!(live.fields("handover-to-hpa"), json!({"f:spec": {"f:replicas": {}}}));
    // When the HPA sets replicas, the temporary manager owns nothing and disappears.
    live.update("horizontal-pod-autoscaler", |o| o["spec"]["replicas"] = json!(5));
    assert_eq!(live.fields("handover-to-hpa"), Value::Null);
    assert_eq!(live.fields("horizontal-pod-autoscaler"), json!({"f:spec": {"f:replicas": {}}}));
}

// "(basic) Leave replicas in the configuration; when the HPA eventually writes to that field, the
// system gives the user a conflict over it."
#[test]
fn a_user_still_applying_replicas_gets_a_conflict_once_the_hpa_wrote_it() {
    let mut live = Live::new("apps", "Deployment");
    live.apply("kubectl", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    live.update("horizontal-pod-autoscaler", |o| o["spec"]["replicas"] = json!(7));
    let err = live.apply("kubectl", deployment(Some(3), "nginx:1.14.2"), false).unwrap_err();
    assert_eq!(conflict_paths(&err), ["\"horizontal-pod-autoscaler\" using apps/v1: .spec.replicas"]);
    // Now it is safe to remove replicas from the configuration: the value stays.
    live.apply("kubectl", deployment(None, "nginx:1.14.2"), false).unwrap();
    assert_eq!(live.object["spec"]["replicas"], 7);
}

// "Transferring ownership between managers": share by applying the same value, then the old
// owner drops the field.
#[test]
fn ownership_moves_between_managers_by_sharing_then_dropping() {
    let mut live = Live::new("", "ConfigMap");
    live.apply("old", cm(json!({}), json!({"key": "v"})), false).unwrap();
    live.apply("new", cm(json!({}), json!({"key": "v"})), false).unwrap();
    live.apply("old", cm(json!({}), json!({})), false).unwrap();
    assert_eq!(live.object["data"]["key"], "v");
    assert_eq!(live.fields("new"), json!({"f:data": {"f:key": {}}}));
    assert_eq!(live.fields("old"), Value::Null);
}

// "Using Server-Side Apply in a controller": there is no way to remove fields the controller has
// not applied before; omitting them leaves them.
#[test]
fn omitting_a_field_another_manager_wrote_never_removes_it() {
    let mut live = Live::new("", "ConfigMap");
    live.apply("keelson", cm(json!({}), json!({"a": "1"})), false).unwrap();
    live.update("kubectl-edit", |o| o["data"]["extra"] = json!("x"));
    live.apply("keelson", cm(json!({}), json!({"a": "1"})), false).unwrap();
    assert_eq!(live.object["data"], json!({"a": "1", "extra": "x"}));
}

// "Custom resources": without markers all lists are atomic; with a CRD schema they follow it.
#[test]
fn custom_resources_follow_their_schema_markers() {
    let untyped = schema::from_openapi(None);
    let cr = |items: Value| json!({"apiVersion": "example.com/v1", "kind": "Foo", "metadata": {"name": "f"}, "spec": {"items": items}});
    let e = |s: &Schema, live: &Value, cfg: Value, mgrs: &[Manager], m: &str| {
        super::apply(live, &cfg, s, mgrs, m, "", "example.com/v1", false, &Set::new(), NOW)
    };
    let first = e(&untyped, &json!({}), cr(json!([{"name": "a"}])), &[], "one").unwrap();
    let err = e(&untyped, &first.object, cr(json!([{"name": "b"}])), &first.managers, "two").unwrap_err();
    assert!(matches!(err, ApplyError::Conflicts(c) if c[0].path.to_string() == ".spec.items"));

    let typed =
        schema::from_openapi(Some(&json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}}}})));
    let first = e(&typed, &json!({}), cr(json!([{"name": "a"}])), &[], "one").unwrap();
    let second = e(&typed, &first.object, cr(json!([{"name": "b"}])), &first.managers, "two").unwrap();
    assert_eq!(second.object["spec"]["items"], json!([{"name": "a"}, {"name": "b"}]));
}

// "Merge strategy": an associative list item without its key field is not a valid intent.
#[test]
fn a_list_item_without_its_key_is_rejected() {
    let s = schema::builtin("apps", "Deployment");
    let cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w"},
                     "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let e = super::apply(&json!({}), &cfg, &s, &[], "m", "", "apps/v1", false, &Set::new(), NOW).unwrap_err();
    assert!(matches!(e, ApplyError::Malformed(ref m) if m.contains("omits key field \"name\"")), "{e:?}");
}

#[test]
fn merged_list_order_keeps_live_items_in_place() {
    let s = schema::builtin("apps", "Deployment");
    let pod = |names: &[&str]| {
        let c: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        json!({"spec": {"template": {"spec": {"containers": c}}}})
    };
    let merged = merge(Some(&pod(&["a", "b", "c"])), Some(&pod(&["c", "d", "a"])), &s).unwrap();
    let names: Vec<&str> = merged["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "c", "d", "a"]);
}

#[test]
fn multiple_conflicts_name_every_field() {
    let mut live = Live::new("apps", "Deployment");
    live.apply("alice", deployment(Some(3), "nginx:1.14.2"), false).unwrap();
    let err = live.apply("bob", deployment(Some(4), "nginx:1.16.1"), false).unwrap_err();
    assert_eq!(
        conflict_paths(&err),
        ["\"alice\": .spec.replicas", "\"alice\": .spec.template.spec.containers[name=\"nginx\"].image"]
    );
}
