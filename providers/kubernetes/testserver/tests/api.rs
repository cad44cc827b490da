//! kube-rs's own client against the test server: discovery, CRUD, server-side apply with
//! conflicts, watches, deletion, status reasons, the Deployment controller and the knobs.

mod common;

use std::time::Duration;

use common::{BOUND, Fidelity, api_error, client, eventually, raw, start};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use keelson_kube_testserver::{Controllers, Deny, Fault, Options, TestServer};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};

fn manual() -> Options {
    Options { controllers: Controllers::Manual, ..Options::default() }
}

#[tokio::test]
async fn scenario_crud() {
    let s = start(Options::default()).await;
    common::scenario_crud(&client(&s).await, Fidelity::FULL).await;
    s.shutdown().await;
}

#[tokio::test]
async fn scenario_apply() {
    let s = start(Options::default()).await;
    common::scenario_apply(&client(&s).await, Fidelity::FULL).await;
    s.shutdown().await;
}

#[tokio::test]
async fn scenario_watch() {
    let s = start(Options::default()).await;
    common::scenario_watch(&client(&s).await, Fidelity::FULL).await;
    s.shutdown().await;
}

#[tokio::test]
async fn discovery_lists_the_built_in_kinds_with_scope_kind_and_verbs() {
    let s = start(manual()).await;
    let c = client(&s).await;
    for aggregated in [false, true] {
        let d = Discovery::new(c.clone());
        let d = if aggregated { d.run_aggregated().await } else { d.run().await }.expect("discovery runs");
        let find = |g: &str, v: &str, k: &str| {
            d.resolve_gvk(&GroupVersionKind::gvk(g, v, k))
                .unwrap_or_else(|| panic!("{g}/{v} {k} discovered (aggregated: {aggregated})"))
        };
        for (g, v, k, plural, ns) in [
            ("", "v1", "Namespace", "namespaces", false),
            ("", "v1", "ServiceAccount", "serviceaccounts", true),
            ("", "v1", "Service", "services", true),
            ("", "v1", "ConfigMap", "configmaps", true),
            ("", "v1", "Secret", "secrets", true),
            ("apps", "v1", "Deployment", "deployments", true),
            ("apps", "v1", "StatefulSet", "statefulsets", true),
            ("apps", "v1", "DaemonSet", "daemonsets", true),
            ("batch", "v1", "Job", "jobs", true),
            ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
            ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true),
            ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
            ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
            ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false),
            ("coordination.k8s.io", "v1", "Lease", "leases", true),
        ] {
            let (ar, caps) = find(g, v, k);
            assert_eq!(ar.plural, plural);
            assert_eq!(caps.scope == Scope::Namespaced, ns, "{k} scope");
            for verb in ["create", "get", "list", "watch", "patch", "update", "delete"] {
                assert!(caps.supports_operation(verb), "{k} supports {verb}");
            }
        }
    }
    let (code, core) = raw(&c, "GET", "/api/v1", None).await;
    assert_eq!(code, 200);
    assert_eq!(core["groupVersion"], "v1", "core discovery names groupVersion v1");
    let (_, apps) = raw(&c, "GET", "/apis/apps/v1", None).await;
    let deploy = apps["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments").unwrap().clone();
    assert_eq!(deploy["kind"], "Deployment");
    assert_eq!(deploy["namespaced"], true);
    assert!(apps["resources"].as_array().unwrap().iter().any(|r| r["name"] == "deployments/status"));
    s.shutdown().await;
}

#[tokio::test]
async fn status_bodies_carry_the_real_reasons_and_codes() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let e = api_error(cms.create(&PostParams::default(), &cm).await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (409, "AlreadyExists", "configmaps \"x\" already exists")
    );

    let mut stale = cms.get("x").await.unwrap();
    cms.patch("x", &PatchParams::default(), &Patch::Merge(json!({"data": {"a": "1"}}))).await.unwrap();
    stale.data = Some([("b".to_string(), "2".to_string())].into());
    let e = api_error(cms.replace("x", &PostParams::default(), &stale).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(e.message.contains("the object has been modified"), "{}", e.message);

    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let bad: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))
    .unwrap();
    let e = api_error(deps.create(&PostParams::default(), &bad).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    let causes = e.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.template.metadata.labels");

    s.deny(Deny { verb: "delete".into(), group: "".into(), resource: "configmaps".into(), namespace: None });
    let e = api_error(cms.delete("x", &DeleteParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "configmaps \"x\" is forbidden: User \"system:anonymous\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    s.allow_all();

    let in_missing: Api<ConfigMap> = Api::namespaced(c.clone(), "nowhere");
    let e = api_error(in_missing.create(&PostParams::default(), &cm).await);
    assert_eq!((e.code, e.reason.as_str(), e.message.as_str()), (404, "NotFound", "namespaces \"nowhere\" not found"));

    let (code, body) = raw(&c, "POST", "/api/v1/namespaces/default/configmaps/x", Some(json!({}))).await;
    assert_eq!((code, body["reason"].as_str()), (405, Some("MethodNotAllowed")));
    let (code, body) = raw(&c, "GET", "/apis/example.com/v1/widgets", None).await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    s.shutdown().await;
}

fn deployment(image: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 8080}]}]}}
        }
    })
}

#[tokio::test]
async fn server_side_apply_conflicts_force_dry_run_and_generation() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let keelson = PatchParams::apply("keelson");

    let created = deps.patch("web", &keelson, &Patch::Apply(deployment("nginx:1.27", 3))).await.expect("apply creates");
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    let fields = &mf[0].fields_v1.as_ref().unwrap().0;
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["f:ports"],
        json!({"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}})
    );
    // Defaults are filled in and owned by nobody.
    assert_eq!(created.spec.as_ref().unwrap().progress_deadline_seconds, Some(600));
    assert!(fields["f:spec"].get("f:progressDeadlineSeconds").is_none());

    // Another manager edits replicas: a plain update that takes the field.
    s.edit_as("kubectl-edit", "apps/v1", "Deployment", Some("default"), "web", |d| d["spec"]["replicas"] = json!(5))
        .unwrap();
    let e = api_error(deps.patch("web", &keelson, &Patch::Apply(deployment("nginx:1.27", 3))).await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(e.message, "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas");
    let causes = e.details.unwrap().causes;
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].reason, "FieldManagerConflict");
    assert_eq!(causes[0].field, ".spec.replicas");
    assert_eq!(causes[0].message, "conflict with \"kubectl-edit\" using apps/v1");

    // Dry run: the answer shows the forced result, the store keeps the old one.
    let mut dry = PatchParams::apply("keelson").force();
    dry.dry_run = true;
    let preview = deps.patch("web", &dry, &Patch::Apply(deployment("nginx:1.27", 3))).await.unwrap();
    assert_eq!(preview.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(deps.get("web").await.unwrap().spec.unwrap().replicas, Some(5));

    let forced = deps.patch("web", &keelson.clone().force(), &Patch::Apply(deployment("nginx:1.27", 3))).await.unwrap();
    assert_eq!(forced.spec.as_ref().unwrap().replicas, Some(3));
    assert!(
        forced.metadata.managed_fields.unwrap().iter().all(|m| m.manager.as_deref() != Some("kubectl-edit")),
        "the editor lost its only field"
    );
    assert_eq!(forced.metadata.generation, Some(3), "two spec changes since creation");

    // A label change is not a spec change.
    let mut labelled = deployment("nginx:1.27", 3);
    labelled["metadata"]["labels"] = json!({"team": "payments"});
    let after = deps.patch("web", &keelson, &Patch::Apply(labelled)).await.unwrap();
    assert_eq!(after.metadata.generation, Some(3));
    // Applying the same manifest again changes nothing, not even the resourceVersion.
    let rv = after.metadata.resource_version.clone();
    let mut same = deployment("nginx:1.27", 3);
    same["metadata"]["labels"] = json!({"team": "payments"});
    let again = deps.patch("web", &keelson, &Patch::Apply(same)).await.unwrap();
    assert_eq!(again.metadata.resource_version, rv);

    // Status in an apply to the main resource is ignored.
    let mut with_status = deployment("nginx:1.27", 3);
    with_status["status"] = json!({"replicas": 99});
    let ignored = deps.patch("web", &keelson, &Patch::Apply(with_status)).await.unwrap();
    assert_ne!(ignored.status.and_then(|s| s.replicas), Some(99));

    // Apply without fieldManager is refused.
    let (code, body) = raw(&c, "PATCH", "/apis/apps/v1/namespaces/default/deployments/web", None).await;
    assert_eq!(code, 415, "a PATCH without a patch content type is refused: {body}");
    s.shutdown().await;
}

#[tokio::test]
async fn request_log_and_latency() {
    let s = start(Options { latency: Duration::from_millis(30), ..manual() }).await;
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    s.clear_requests();
    let started = std::time::Instant::now();
    let m = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "logged"}});
    cms.patch("logged", &PatchParams::apply("keelson").force(), &Patch::Apply(m)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(30), "latency is added before answering");
    let log = s.requests();
    let last = log.last().unwrap();
    assert_eq!(last.method, "PATCH");
    assert_eq!(last.path, "/api/v1/namespaces/default/configmaps/logged");
    assert_eq!(last.field_manager.as_deref(), Some("keelson"));
    assert!(last.query.contains("force=true"), "{}", last.query);
    assert_eq!(last.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(last.status, 201);

    s.set_latency(Duration::ZERO);
    // kube-rs retries 429, 503 and 504 on its own: one 503 is invisible to the caller but not
    // to the request log.
    s.clear_requests();
    s.inject(Fault {
        method: Some("GET".into()),
        path_contains: "/configmaps/logged".into(),
        code: 503,
        times: Some(1),
    });
    cms.get("logged").await.expect("retried past one 503");
    let codes: Vec<u16> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(codes, [503, 200]);
    s.inject(Fault { method: None, path_contains: "/configmaps/logged".into(), code: 500, times: Some(1) });
    let e = api_error(cms.get("logged").await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    cms.get("logged").await.expect("the fault lapsed after one request");
    s.shutdown().await;
}

#[tokio::test]
async fn watch_bookmarks_resume_and_gone() {
    let s = start(Options { bookmark_interval: Duration::from_millis(50), ..manual() }).await;
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let first = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap())
        .await
        .unwrap();
    let rv = first.metadata.resource_version.unwrap();
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap())
        .await
        .unwrap();

    // Resuming from a resourceVersion replays only what came after it, then bookmarks.
    let mut stream = Box::pin(cms.watch(&WatchParams::default().timeout(30), &rv).await.unwrap());
    let mut added = Vec::new();
    let mut bookmark = None;
    while bookmark.is_none() {
        match tokio::time::timeout(BOUND, futures_util::StreamExt::next(&mut stream)).await.unwrap().unwrap().unwrap() {
            WatchEvent::Added(o) => added.push(o.metadata.name.unwrap()),
            WatchEvent::Bookmark(b) => bookmark = Some(b.metadata.resource_version),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, ["b"]);
    assert_eq!(bookmark.unwrap(), s.resource_version().to_string());

    // After compaction an old resourceVersion is gone: one ERROR event with 410.
    s.compact();
    let mut stream = Box::pin(cms.watch(&WatchParams::default().timeout(30), &rv).await.unwrap());
    match tokio::time::timeout(BOUND, futures_util::StreamExt::next(&mut stream)).await.unwrap().unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    s.shutdown().await;
}

#[tokio::test]
async fn deletion_propagation_and_finalizers() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let owned = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "blockOwnerDeletion": true}]}}))
        .unwrap()
    };
    cms.create(&PostParams::default(), &owned("dependent")).await.unwrap();

    // Foreground: the owner waits, marked for deletion, until its dependents are gone.
    let r = cms.delete("owner", &DeleteParams::foreground()).await.unwrap();
    let pending = r.left().expect("still there while dependents exist");
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert!(pending.metadata.finalizers.unwrap().contains(&"foregroundDeletion".to_string()));
    // The collector deletes the dependent in the foreground too (one pass marks it, the next
    // releases it), and only then the owner.
    s.tick();
    let marked = s.get("v1", "ConfigMap", Some("default"), "dependent").unwrap().expect("marked, not yet gone");
    assert!(marked["metadata"]["deletionTimestamp"].is_string());
    s.tick();
    assert!(s.get("v1", "ConfigMap", Some("default"), "dependent").unwrap().is_none(), "dependent deleted first");
    assert!(s.get("v1", "ConfigMap", Some("default"), "owner").unwrap().is_some(), "owner still waiting");
    s.tick();
    assert!(s.get("v1", "ConfigMap", Some("default"), "owner").unwrap().is_none(), "owner gone after its dependents");

    // Background: the owner goes at once, dependents after.
    let owner = cms
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap())
        .await
        .unwrap();
    let _ = owner;
    let dep: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dep2", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": cms.get("owner").await.unwrap().metadata.uid}]}}))
    .unwrap();
    cms.create(&PostParams::default(), &dep).await.unwrap();
    let gone = cms.delete("owner", &DeleteParams::background()).await.unwrap();
    let status = gone.right().expect("deleted at once");
    assert_eq!(status.details.unwrap().name, "owner");
    assert!(cms.get("dep2").await.is_ok(), "the dependent outlives the owner until the collector runs");
    s.tick();
    assert_eq!(api_error(cms.get("dep2").await).code, 404);

    // A finalizer holds an object in deletion until it is removed.
    let held: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})).unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    let pending = cms.delete("held", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    let e = api_error(
        cms.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}})),
        )
        .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert_eq!(api_error(cms.get("held").await).code, 404);
    s.shutdown().await;
}

#[tokio::test]
async fn namespaces_terminate_with_their_content() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "team-a"}})).unwrap())
        .await
        .unwrap();
    s.tick();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "team-a");
    cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap())
        .await
        .unwrap();
    let sa = s.get("v1", "ServiceAccount", Some("team-a"), "default").unwrap();
    assert!(sa.is_some(), "every namespace gets a default ServiceAccount");

    let terminating = nss.delete("team-a", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(terminating.status.unwrap().phase.as_deref(), Some("Terminating"));
    let e = api_error(
        cms.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap())
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    s.tick();
    s.tick();
    assert_eq!(api_error(nss.get("team-a").await).code, 404);
    assert!(s.get("v1", "ConfigMap", Some("team-a"), "c").unwrap().is_none());
    s.shutdown().await;
}

#[tokio::test]
async fn deployment_status_converges_and_can_be_held_unavailable() {
    let s = start(Options { controllers: Controllers::Every(Duration::from_millis(10)), ..Options::default() }).await;
    let c = client(&s).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(deployment("nginx:1.27", 3))).await.unwrap();
    let healthy = eventually("web available", || async {
        let d = deps.get("web").await.ok()?;
        let st = d.status.clone()?;
        let available = st.conditions.as_ref()?.iter().any(|c| c.type_ == "Available" && c.status == "True");
        let progressed = st
            .conditions
            .as_ref()?
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable"));
        (st.available_replicas == Some(3) && st.updated_replicas == Some(3) && available && progressed).then_some(d)
    })
    .await;
    assert_eq!(healthy.status.as_ref().unwrap().observed_generation, Some(1));
    assert_eq!(healthy.status.as_ref().unwrap().ready_replicas, Some(3));
    let mf = healthy.metadata.managed_fields.unwrap();
    let ctrl = mf.iter().find(|m| m.subresource.as_deref() == Some("status")).expect("the controller owns status");
    assert_eq!(ctrl.manager.as_deref(), Some("kube-controller-manager"));

    // A new image that never becomes available: the rollout stalls, old pods keep serving.
    s.set_never_available("default", "web", true);
    let mut stuck = deployment("nginx:broken", 3);
    stuck["spec"]["progressDeadlineSeconds"] = json!(1);
    deps.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(stuck)).await.unwrap();
    let stalled = eventually("rollout stalls", || async {
        let d = deps.get("web").await.ok()?;
        let st = d.status.clone()?;
        st.conditions?
            .iter()
            .any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
            .then_some(d)
    })
    .await;
    let st = stalled.status.unwrap();
    assert_eq!(st.observed_generation, Some(2));
    assert!(st.updated_replicas.unwrap_or(0) >= 1);
    assert!(st.available_replicas.unwrap_or(0) >= 2, "old pods stay within maxUnavailable");
    assert!(st.available_replicas.unwrap_or(0) < 3 + st.updated_replicas.unwrap_or(0));
    s.shutdown().await;
}

#[tokio::test]
async fn crds_are_served_once_established_and_custom_resources_apply() {
    let s = start(Options { controllers: Controllers::Every(Duration::from_millis(10)), ..Options::default() }).await;
    let c = client(&s).await;
    let crds: Api<DynamicObject> = Api::all_with(
        c.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = TestServer::simple_crd("example.com", "Widget", "widgets");
    crds.patch("widgets.example.com", &PatchParams::apply("keelson"), &Patch::Apply(crd)).await.unwrap();
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    eventually("widgets served", || async { widgets.list(&ListParams::default()).await.ok() }).await;
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 3}});
    let created = widgets.patch("w1", &PatchParams::apply("keelson"), &Patch::Apply(w)).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let listed = widgets.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        listed.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("Widget"),
        "custom resource list items carry their kind"
    );
    let d = Discovery::new(c.clone()).run().await.unwrap();
    assert!(d.resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget")).is_some());

    // Deleting the CRD removes its resources, then stops serving them.
    crds.delete("widgets.example.com", &DeleteParams::default()).await.unwrap();
    eventually("widgets no longer served", || async {
        match widgets.list(&ListParams::default()).await {
            Err(kube::Error::Api(e)) if e.code == 404 => Some(()),
            _ => None,
        }
    })
    .await;
    s.shutdown().await;
}

#[tokio::test]
async fn kubeconfig_token_and_bounded_shutdown() {
    let s = start(Options { token: Some("s3cret".into()), ..manual() }).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    s.kubeconfig(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(&s.url()));
    let c = client(&s).await;
    Api::<ConfigMap>::namespaced(c, "default").list(&ListParams::default()).await.expect("the token is accepted");
    let anonymous = common::client_for(&s.url(), None).await;
    let e = api_error(Api::<ConfigMap>::namespaced(anonymous, "default").list(&ListParams::default()).await);
    assert_eq!(e.code, 401);

    // An open watch does not keep the server from stopping.
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let _stream = cms.watch(&WatchParams::default(), "0").await.unwrap();
    let url = s.url();
    tokio::time::timeout(BOUND, s.shutdown()).await.expect("shutdown is bounded");
    let after = common::client_for(&url, Some("s3cret")).await;
    assert!(
        Api::<ConfigMap>::namespaced(after, "default").list(&ListParams::default()).await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn yaml_apply_bodies_field_manager_and_patch_types() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let path = "/api/v1/namespaces/default/configmaps/from-yaml";
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  port: \"8080\"\n  mode: on\n";
    let (code, body) = common::raw_text(&c, "PATCH", path, Some(("application/apply-patch+yaml", yaml))).await;
    assert_eq!(code, 400, "apply needs a fieldManager: {body}");
    // As on a cluster, `on` is a YAML 1.1 boolean, which ConfigMap data cannot hold.
    let (code, body) = common::raw_text(
        &c,
        "PATCH",
        &format!("{path}?fieldManager=kubectl"),
        Some(("application/apply-patch+yaml", yaml)),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot unmarshal bool into Go struct field ConfigMap.data of type string")
    );
    let yaml = yaml.replace("mode: on", "mode: \"on\"");
    let (code, body) = common::raw_text(
        &c,
        "PATCH",
        &format!("{path}?fieldManager=kubectl"),
        Some(("application/apply-patch+yaml", &yaml)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["data"], json!({"port": "8080", "mode": "on"}));

    let (code, body) =
        common::raw_text(&c, "PATCH", path, Some(("application/strategic-merge-patch+json", "{}"))).await;
    assert_eq!((code, body["reason"].as_str()), (415, Some("UnsupportedMediaType")));

    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let ops = r#"[{"op": "replace", "path": "/data/mode", "value": "off"}, {"op": "add", "path": "/data/extra", "value": "x"}]"#;
    let (code, patched) = common::raw_text(&c, "PATCH", path, Some(("application/json-patch+json", ops))).await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["data"]["mode"], "off");

    // Writes without fieldManager are attributed to the User-Agent's product name (none here).
    let mf = cms.get("from-yaml").await.unwrap().metadata.managed_fields.unwrap();
    let managers: Vec<_> = mf.iter().map(|m| (m.manager.clone().unwrap(), m.operation.clone().unwrap())).collect();
    assert_eq!(managers[0], ("kubectl".to_string(), "Apply".to_string()));
    assert_eq!(managers.len(), 2, "{managers:?}");
    assert_eq!(managers[1], (String::new(), "Update".to_string()), "kube-rs sends no User-Agent");
    s.shutdown().await;
}

#[tokio::test]
async fn dry_runs_pagination_metadata_lists_and_defaults() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let dry = PostParams { dry_run: true, ..Default::default() };
    cms.create(&dry, &serde_json::from_value(json!({"metadata": {"name": "dry"}})).unwrap()).await.unwrap();
    assert_eq!(api_error(cms.get("dry").await).code, 404, "a dry-run create stores nothing");

    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": format!("page-{i}")}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    let rest = cms.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap();
    assert_eq!(rest.items.len(), 3);
    assert!(rest.metadata.continue_.is_none());

    let meta = cms.list_metadata(&ListParams::default()).await.unwrap();
    assert_eq!(meta.items.len(), 5);
    assert!(meta.items.iter().all(|m| m.metadata.uid.is_some()));

    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.clone(), "default");
    let sec = secrets
        .patch("s", &PatchParams::apply("keelson"), &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"user": "admin"}})))
        .await
        .unwrap();
    assert_eq!(sec.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        sec.data.unwrap().get("user").map(|b| b.0.clone()),
        Some(b"admin".to_vec()),
        "stringData is folded into data"
    );

    let svcs: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(c.clone(), "default");
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
    let created = svcs.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(&svc)).await.unwrap();
    let spec = created.spec.unwrap();
    assert!(spec.cluster_ip.as_deref().is_some_and(|ip| ip.starts_with("10.96.")));
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
    let mut moved = svc.clone();
    moved["spec"]["clusterIP"] = json!("10.96.99.99");
    let e = api_error(svcs.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(&moved)).await);
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(deployment("nginx:1", 1))).await.unwrap();
    let mut reselect = deployment("nginx:1", 1);
    reselect["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
    reselect["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let e = api_error(deps.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(&reselect)).await);
    assert_eq!(e.code, 422);
    assert!(e.message.contains("spec.selector") && e.message.contains("field is immutable"), "{}", e.message);
    s.shutdown().await;
}

#[tokio::test]
async fn controllers_write_nothing_once_converged_and_apply_needs_the_namespace() {
    let s = start(manual()).await;
    let c = client(&s).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(deployment("nginx:1", 2))).await.unwrap();
    for _ in 0..6 {
        s.tick();
    }
    let converged = deps.get("web").await.unwrap();
    assert_eq!(converged.status.as_ref().unwrap().available_replicas, Some(2));
    let rv = s.resource_version();
    s.tick();
    s.tick();
    assert_eq!(s.resource_version(), rv, "a converged Deployment is not rewritten");

    let elsewhere: Api<Deployment> = Api::namespaced(c.clone(), "missing");
    let mut d = deployment("nginx:1", 1);
    d["metadata"]["namespace"] = json!("missing");
    let e = api_error(elsewhere.patch("web", &PatchParams::apply("keelson"), &Patch::Apply(&d)).await);
    assert_eq!((e.code, e.message.as_str()), (404, "namespaces \"missing\" not found"));
    s.create_namespace("missing");
    elsewhere
        .patch("web", &PatchParams::apply("keelson"), &Patch::Apply(&d))
        .await
        .expect("applies once the namespace exists");
    s.shutdown().await;
}

#[tokio::test]
async fn watches_with_selectors_see_objects_enter_and_leave() {
    let s = start(manual()).await;
    let cms: Api<ConfigMap> = Api::namespaced(client(&s).await, "default");
    let mut stream = Box::pin(cms.watch(&WatchParams::default().labels("tier=a").timeout(30), "0").await.unwrap());
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "m", "labels": {"tier": "b"}}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let relabel = |t: &str| Patch::Merge(json!({"metadata": {"labels": {"tier": t}}}));
    cms.patch("m", &PatchParams::default(), &relabel("a")).await.unwrap();
    cms.patch("m", &PatchParams::default(), &relabel("c")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let ev =
            tokio::time::timeout(BOUND, futures_util::StreamExt::next(&mut stream)).await.unwrap().unwrap().unwrap();
        match ev {
            WatchEvent::Added(o) => seen.push(("ADDED", o.metadata.labels.unwrap()["tier"].clone())),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.metadata.labels.unwrap()["tier"].clone())),
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, [("ADDED", "a".to_string()), ("DELETED", "c".to_string())]);
    s.shutdown().await;
}
