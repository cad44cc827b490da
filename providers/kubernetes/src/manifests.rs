//! `manifests: {path, type: plain}` apps: a folder of plain Kubernetes YAML applied as it is,
//! like an Argo CD directory app. Pure, like the App renderer: it is handed the files.
//!
//! Every document of every `.yaml` / `.yml` / `.json` file becomes one resource (empty documents
//! and `kind: List` wrappers are unwrapped), with Keelson's ownership labels added. Objects without
//! a namespace go to the app's namespace unless their kind is cluster-scoped (the built-in
//! cluster-scoped kinds, and kinds whose CRD in the same folder says `scope: Cluster`). Order:
//! CRDs, Namespaces, other cluster-scoped objects, then namespaced ones, each by file and position.

use std::collections::{BTreeMap, BTreeSet};

use keelson_manifest::App;
use keelson_provider_api::{DesiredResource, Error, Owner, RenderCtx, ResourceId, Result};
use serde_json::{Map, Value, json};

use crate::{APP_LABEL, MANAGED_BY_LABEL, TEAM_LABEL};

/// Built-in kinds without a namespace.
const CLUSTER_SCOPED: [&str; 16] = [
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "APIService",
    "CSIDriver",
    "Node",
];

/// One file of the folder: its path (for messages) and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// Path in the repository, e.g. `apps/bookinfo/manifests/bookinfo.yaml`.
    pub path: String,
    /// Its content.
    pub bytes: Vec<u8>,
}

/// The resources of `app`'s manifests folder, its namespaced objects defaulting to `namespace`.
pub fn render(app: &App, ctx: &RenderCtx, namespace: &str, files: &[ManifestFile]) -> Result<Vec<DesiredResource>> {
    let name = &app.metadata.name;
    let invalid = |resource: String, message: String| Error::InvalidSpec {
        instance: ctx.instance.clone(),
        resource: format!("{resource} (app {name})"),
        message,
    };
    let mut objects: Vec<(String, Value)> = Vec::new();
    for file in files.iter().filter(|f| [".yaml", ".yml", ".json"].iter().any(|e| f.path.ends_with(e))) {
        let documents = keelson_manifest::yaml::parse(&file.path, &file.bytes).map_err(|diagnostics| {
            let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
            invalid(file.path.clone(), lines.join("; "))
        })?;
        for doc in documents {
            let at = format!("{}:{}:{}", file.path, doc.start.line, doc.start.col);
            match doc.value {
                Value::Null => {}
                Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                    for item in o.get("items").and_then(Value::as_array).into_iter().flatten() {
                        objects.push((at.clone(), item.clone()));
                    }
                }
                other => objects.push((at, other)),
            }
        }
    }

    let custom_cluster_kinds: BTreeSet<String> = objects
        .iter()
        .filter(|(_, o)| o.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .filter(|(_, o)| o.pointer("/spec/scope").and_then(Value::as_str) == Some("Cluster"))
        .filter_map(|(_, o)| o.pointer("/spec/names/kind").and_then(Value::as_str).map(str::to_owned))
        .collect();

    let mut seen: BTreeMap<ResourceId, String> = BTreeMap::new();
    let mut out: Vec<(u8, DesiredResource)> = Vec::new();
    for (at, object) in objects {
        let Value::Object(mut object) = object else {
            return Err(invalid(at, "a document must be a Kubernetes object (a mapping)".into()));
        };
        let text = |o: &Map<String, Value>, field: &str| o.get(field).and_then(Value::as_str).map(str::to_owned);
        let (Some(api_version), Some(kind)) = (text(&object, "apiVersion"), text(&object, "kind")) else {
            return Err(invalid(at, "every object needs apiVersion and kind".into()));
        };
        object.remove("apiVersion");
        object.remove("kind");
        // The API server owns status; null means "no value" and is never stored.
        object.remove("status");
        let mut body = Value::Object(object);
        drop_nulls(&mut body);
        let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
            return Err(invalid(at, format!("{kind} has no metadata.name")));
        };
        let Some(object_name) = metadata.remove("name").and_then(|n| n.as_str().map(str::to_owned)) else {
            return Err(invalid(at, format!("{kind} has no metadata.name (generateName is not supported)")));
        };
        let explicit_ns = metadata.remove("namespace").and_then(|n| n.as_str().map(str::to_owned));
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        let Some(labels) = labels.as_object_mut() else {
            return Err(invalid(at, "metadata.labels must be a map".into()));
        };
        labels.insert(MANAGED_BY_LABEL.into(), json!("keelson"));
        labels.insert(APP_LABEL.into(), json!(name));
        if let Some(team) = &app.metadata.team {
            labels.insert(TEAM_LABEL.into(), json!(team));
        }
        let cluster_scoped = CLUSTER_SCOPED.contains(&kind.as_str()) || custom_cluster_kinds.contains(&kind);
        let id = if cluster_scoped {
            if explicit_ns.is_some() {
                return Err(invalid(at, format!("{kind} is cluster-scoped; remove metadata.namespace")));
            }
            ResourceId::cluster_scoped(ctx.instance.clone(), &api_version, &kind, &object_name)
        } else {
            let ns = explicit_ns.unwrap_or_else(|| namespace.to_owned());
            ResourceId::namespaced(ctx.instance.clone(), &api_version, &kind, &ns, &object_name)
        };
        if let Some(first) = seen.insert(id.clone(), at.clone()) {
            return Err(invalid(at, format!("{id} is also defined at {first}; each object may be defined once")));
        }
        let rank = match kind.as_str() {
            "CustomResourceDefinition" => 0,
            "Namespace" => 1,
            _ if cluster_scoped => 2,
            _ => 3,
        };
        out.push((
            rank,
            DesiredResource { id, owner: Owner { app: name.as_str().into() }, digest: ctx.digest.clone(), spec: body },
        ));
    }
    // A stable sort keeps file order within each rank.
    out.sort_by_key(|(rank, _)| *rank);
    Ok(out.into_iter().map(|(_, r)| r).collect())
}

fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, child| !child.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> App {
        let mut app = App::default();
        app.metadata.name = "legacy".into();
        app.metadata.team = Some("ops".into());
        app
    }

    fn ctx() -> RenderCtx {
        RenderCtx {
            instance: "prod".into(),
            revision: "c0ffee".into(),
            digest: "sha256:d1".into(),
            variant: Default::default(),
            weight: 100,
        }
    }

    fn file(path: &str, text: &str) -> ManifestFile {
        ManifestFile { path: path.into(), bytes: text.as_bytes().to_vec() }
    }

    #[test]
    fn crds_and_namespaces_come_first_and_scopes_follow_the_kind() {
        let files = [
            file(
                "m/app.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  creationTimestamp: null\ndata:\n  k: v\n---\n\
                 apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n---\n\
                 apiVersion: v1\nkind: Namespace\nmetadata:\n  name: extra\n",
            ),
            file(
                "m/crd.yaml",
                "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.example.com\n\
                 spec:\n  scope: Cluster\n  group: example.com\n  names: {kind: Widget, plural: widgets}\n",
            ),
            file("m/README.md", "not yaml: ["),
        ];
        let rendered = render(&app(), &ctx(), "ops", &files).unwrap();
        let ids: Vec<String> = rendered.iter().map(|r| r.id.to_string()).collect();
        assert_eq!(
            ids,
            [
                "prod:CustomResourceDefinition/widgets.example.com",
                "prod:Namespace/extra",
                "prod:Widget/w",
                "prod:ConfigMap/ops/c"
            ]
        );
        let cm = &rendered[3].spec;
        assert_eq!(
            cm,
            &json!({"metadata": {"labels": {MANAGED_BY_LABEL: "keelson", APP_LABEL: "legacy", TEAM_LABEL: "ops"}},
                    "data": {"k": "v"}})
        );
    }

    #[test]
    fn duplicates_and_missing_names_are_errors_at_their_position() {
        let twice = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n";
        let e = render(&app(), &ctx(), "ops", &[file("m/a.yaml", twice)]).unwrap_err();
        assert!(e.to_string().contains("m/a.yaml:5:1"), "{e}");
        assert!(e.to_string().contains("also defined at m/a.yaml:1:1"), "{e}");
        let unnamed = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n";
        let e = render(&app(), &ctx(), "ops", &[file("m/b.yaml", unnamed)]).unwrap_err();
        assert!(e.to_string().contains("no metadata.name"), "{e}");
    }
}
