//! The provider against the in-memory API server over real HTTP: the conformance suite, rendered
//! apps applied and observed with no drift, another manager's edits seen as drift and as
//! conflicts, finalizers, and the corpus folders as `manifests:` apps.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use keelson_kube_testserver::{Options, TestServer};
use keelson_manifest::App;
use keelson_provider_api::conformance::{self, Subject};
use keelson_provider_api::{
    DesiredResource, ErrorClass, Health, IdempotencyKey, InstanceName, Outcome, Provider, RenderCtx, ResourceId,
    Variant,
};
use keelson_provider_kubernetes::manifests::{self, ManifestFile};
use keelson_provider_kubernetes::{KubeProvider, KubeRenderer, KubeSettings};
use serde_json::json;

/// Every start and wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(20);

async fn start() -> (TestServer, KubeProvider) {
    let server = tokio::time::timeout(BOUND, TestServer::start(Options::default())).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.kubeconfig(&path).unwrap();
    let settings = KubeSettings { kubeconfig: Some(path), ..KubeSettings::default() };
    let provider = KubeProvider::connect(&InstanceName::new("prod"), &settings).await.unwrap();
    (server, provider)
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn key(n: u32) -> IdempotencyKey {
    IdempotencyKey { app: "web".into(), rollout: 1, step: n, resource: "r".into() }
}

fn ctx() -> RenderCtx {
    RenderCtx {
        instance: "prod".into(),
        revision: "c0ffee".into(),
        digest: "sha256:d1".into(),
        variant: Variant::Stable,
        weight: 100,
    }
}

fn web() -> App {
    let mut app = App::default();
    app.metadata.name = "web".into();
    app.metadata.team = Some("shop".into());
    app.spec.image = "registry.example.com/web:1".into();
    app.spec.replicas = 2;
    app.spec.placement.cluster = "prod".into();
    app.spec.expose = Some(keelson_manifest::app::Expose {
        port: 8080,
        host: Some("shop.example.com".into()),
        path: None,
        tls: true,
    });
    app
}

async fn observed(p: &KubeProvider, id: &ResourceId) -> Option<keelson_provider_api::Observed> {
    p.observe(std::slice::from_ref(id)).await.remove(0).1.unwrap()
}

async fn health(p: &KubeProvider, id: &ResourceId) -> Health {
    p.health(std::slice::from_ref(id)).await.remove(0).1.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let (server, provider) = start().await;
    let report = conformance::run(Subject::provider(&provider)).await;
    assert!(report.passed(), "{report}");
    assert!(report.checks.len() > 50, "{report}");
    // Every write went through server-side apply with Keelson's field manager.
    let patches: Vec<_> = server.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert!(!patches.is_empty());
    assert!(
        patches.iter().all(|r| r.field_manager.as_deref().is_some_and(|m| m.starts_with("keelson"))),
        "{patches:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rendered_app_applies_observes_without_drift_and_becomes_healthy() {
    let (server, provider) = start().await;
    let resources = KubeRenderer::default().render_app(&web(), &ctx()).unwrap();
    for (i, r) in resources.iter().enumerate() {
        assert_eq!(provider.apply(r, &key(i as u32)).await.unwrap(), Outcome::Created, "{}", r.id);
    }
    // Defaulted fields (strategy, clusterIP, protocol, imagePullPolicy…) are not Keelson's: no drift.
    for r in &resources {
        let o = observed(&provider, &r.id).await.expect("applied object exists");
        assert_eq!(o.spec, r.spec, "{}", r.id);
        assert_eq!(o.digest.as_ref(), Some(&r.digest));
        assert_eq!(provider.apply(r, &key(99)).await.unwrap(), Outcome::Unchanged, "{}", r.id);
    }
    let stored = server.get("apps/v1", "Deployment", Some("shop"), "web").unwrap().unwrap();
    assert_eq!(stored["metadata"]["annotations"]["keelson.dev/digest"], "sha256:d1");
    assert_eq!(stored["spec"]["strategy"]["type"], "RollingUpdate", "the server defaulted it");
    // The team namespace was created on the first apply into it.
    assert!(server.get("v1", "Namespace", None, "shop").unwrap().is_some());
    let deployment = &resources.iter().find(|r| r.id.kind == "Deployment").unwrap().id;
    eventually("the deployment healthy", || async {
        (health(&provider, deployment).await == Health::Healthy).then_some(())
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_managers_edit_is_drift_and_a_conflict_until_the_app_takes_ownership() {
    let (server, provider) = start().await;
    let resources = KubeRenderer::default().render_app(&web(), &ctx()).unwrap();
    for r in &resources {
        provider.apply(r, &key(1)).await.unwrap();
    }
    let deployment = resources.iter().find(|r| r.id.kind == "Deployment").unwrap().clone();

    // kubectl edit (an Update) takes the field: observe no longer reports it as Keelson's.
    server
        .edit_as("kubectl-edit", "apps/v1", "Deployment", Some("shop"), "web", |d| d["spec"]["replicas"] = 5.into())
        .unwrap();
    let o = observed(&provider, &deployment.id).await.unwrap();
    assert_ne!(o.spec, deployment.spec, "the edit shows as drift");
    assert!(o.spec["spec"].get("replicas").is_none(), "{}", o.spec);

    // Another appliers' ownership of the same field: Keelson's apply is a conflict naming it.
    server
        .apply_as(
            "hpa-like",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 7}}),
            true,
        )
        .unwrap();
    let e = provider.apply(&deployment, &key(2)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Conflict, "{e}");
    assert!(e.to_string().contains("hpa-like owns .spec.replicas"), "{e}");

    // The app says so explicitly: the apply forces and the field is Keelson's again.
    let mut forced: DesiredResource = deployment.clone();
    forced.spec["metadata"]["annotations"] = json!({"keelson.dev/take-ownership": "true"});
    assert_eq!(provider.apply(&forced, &key(3)).await.unwrap(), Outcome::Updated);
    let o = observed(&provider, &deployment.id).await.unwrap();
    assert_eq!(o.spec, forced.spec);
    assert_eq!(server.get("apps/v1", "Deployment", Some("shop"), "web").unwrap().unwrap()["spec"]["replicas"], 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_held_by_a_finalizer_is_reported_and_deleted_once_released() {
    let (server, provider) = start().await;
    let id = ResourceId::namespaced("prod", "v1", "ConfigMap", "shop", "held");
    let r = DesiredResource {
        id: id.clone(),
        owner: keelson_provider_api::Owner { app: "web".into() },
        digest: "sha256:d1".into(),
        spec: json!({"metadata": {"finalizers": ["example.com/hold"]}, "data": {"k": "v"}}),
    };
    assert_eq!(provider.apply(&r, &key(1)).await.unwrap(), Outcome::Created);
    let e = provider.delete(&id, &key(2)).await.unwrap_err();
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.to_string().contains("held by finalizers example.com/hold"), "{e}");
    assert!(
        matches!(health(&provider, &id).await, Health::Progressing { message, .. } if message.contains("example.com/hold"))
    );
    server
        .edit_as("finalizer-owner", "v1", "ConfigMap", Some("shop"), "held", |c| {
            c["metadata"]["finalizers"] = json!([])
        })
        .unwrap();
    eventually("the config map gone", || async { observed(&provider, &id).await.is_none().then_some(()) }).await;
    assert_eq!(provider.delete(&id, &key(3)).await.unwrap(), Outcome::NotFound);
    let deletes: Vec<_> = server.requests().into_iter().filter(|r| r.method == "DELETE").collect();
    assert!(!deletes.is_empty());
    server.shutdown().await;
}

fn corpus_files(folder: &Path) -> Vec<ManifestFile> {
    let mut files: Vec<ManifestFile> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| ManifestFile { path: p.display().to_string(), bytes: std::fs::read(&p).unwrap() })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// Real manifests written by others: each folder applies, observes back with no drift, becomes
/// healthy, and deletes cleanly (exactly its objects: another app's survive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_folders_apply_observe_without_drift_and_prune_cleanly() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/kubernetes");
    if !corpus.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "the corpus is missing at {} and CI is set", corpus.display());
        println!("SKIP: no corpus at {}", corpus.display());
        return;
    }
    let (server, provider) = start().await;
    let mut all: Vec<(String, Vec<DesiredResource>)> = Vec::new();
    for folder in ["bookinfo", "emojivoto", "podinfo"] {
        let mut app = App::default();
        app.metadata.name = folder.into();
        let resources = manifests::render(&app, &ctx(), folder, &corpus_files(&corpus.join(folder))).unwrap();
        assert!(resources.len() >= 2, "{folder}: {}", resources.len());
        for r in &resources {
            let outcome = provider.apply(r, &key(1)).await.unwrap_or_else(|e| panic!("{folder}: {}: {e}", r.id));
            assert_eq!(outcome, Outcome::Created, "{}", r.id);
        }
        all.push((folder.to_owned(), resources));
    }
    for (folder, resources) in &all {
        for r in resources {
            let o = observed(&provider, &r.id).await.unwrap_or_else(|| panic!("{folder}: {} missing", r.id));
            assert_eq!(o.spec, r.spec, "{folder}: {} drifted right after apply", r.id);
            assert_eq!(provider.apply(r, &key(2)).await.unwrap(), Outcome::Unchanged, "{}", r.id);
        }
        for r in resources.iter().filter(|r| r.id.kind == "Deployment") {
            eventually(&format!("{} healthy", r.id), || async {
                (health(&provider, &r.id).await == Health::Healthy).then_some(())
            })
            .await;
        }
    }
    // Prune one app: exactly its objects go (in reverse order), the others stay.
    let (_, emojivoto) = &all[1];
    for r in emojivoto.iter().rev() {
        let outcome = provider.delete(&r.id, &key(3)).await.unwrap();
        assert!(matches!(outcome, Outcome::Deleted | Outcome::NotFound), "{}: {outcome:?}", r.id);
    }
    for r in emojivoto {
        eventually(&format!("{} gone", r.id), || async { observed(&provider, &r.id).await.is_none().then_some(()) })
            .await;
    }
    for (_, resources) in [&all[0], &all[2]] {
        for r in resources {
            assert!(observed(&provider, &r.id).await.is_some(), "{} was pruned with another app", r.id);
        }
    }
    server.shutdown().await;
}
