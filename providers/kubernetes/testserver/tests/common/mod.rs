//! Helpers shared by the test binaries: bounded start, a kube-rs client, bounded polling, and
//! the scenarios that run against both the test server and kmock.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use keelson_kube_testserver::{Options, TestServer, kubeconfig_yaml};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};

/// Every start, stop and wait in these tests is bounded by this.
pub const BOUND: Duration = Duration::from_secs(20);

/// Starts a test server (bounded).
pub async fn start(opts: Options) -> TestServer {
    tokio::time::timeout(BOUND, TestServer::start(opts)).await.expect("server start timed out").expect("server starts")
}

/// A kube-rs client for an API server at `url`, configured through a kubeconfig as a user's
/// would be.
pub async fn client_for(url: &str, token: Option<&str>) -> Client {
    let kc = Kubeconfig::from_yaml(&kubeconfig_yaml(url, token)).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// A kube-rs client for `server`.
pub async fn client(server: &TestServer) -> Client {
    let kc = Kubeconfig::from_yaml(&server.kubeconfig_yaml()).expect("kubeconfig parses");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}

/// Polls `f` until it returns `Some`, for at most [`BOUND`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The API error of a failed call (panics on success or a transport error).
pub fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// What an API server does faithfully; scenarios check the rest only where it is true.
#[derive(Debug, Clone, Copy)]
pub struct Fidelity {
    /// `uid`, `resourceVersion`, `creationTimestamp` on objects.
    pub server_metadata: bool,
    /// Server-side apply creates an absent object.
    pub apply_creates: bool,
    /// `managedFields` recorded per manager.
    pub field_ownership: bool,
    /// List bodies carry `kind: <Kind>List`.
    pub typed_lists: bool,
    /// Error bodies use the real reasons (`NotFound`...).
    pub status_reasons: bool,
    /// `labelSelector` and `fieldSelector` filter lists and watches.
    pub selectors: bool,
}

impl Fidelity {
    /// A real API server (and the test server).
    pub const FULL: Fidelity = Fidelity {
        server_metadata: true,
        apply_creates: true,
        field_ownership: true,
        typed_lists: true,
        status_reasons: true,
        selectors: true,
    };
}

fn cm(name: &str, tier: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        // The namespace is given as kubectl gives it (kmock does not fill it in from the URL).
        "metadata": {"name": name, "namespace": "default", "labels": {"tier": tier}},
        "data": {"key": "value"}
    }))
    .expect("valid ConfigMap")
}

/// Create, get, list by label, delete, and the 404 after it.
pub async fn scenario_crud(client: &Client, f: Fidelity) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("alpha", "a")).await.expect("create alpha");
    api.create(&PostParams::default(), &cm("beta", "b")).await.expect("create beta");

    let got = api.get("alpha").await.expect("get alpha");
    assert_eq!(got.data.as_ref().and_then(|d| d.get("key")).map(String::as_str), Some("value"));
    if f.server_metadata {
        assert!(got.metadata.uid.is_some(), "uid is set");
        assert!(
            got.metadata.resource_version.as_deref().is_some_and(|rv| rv.parse::<u64>().is_ok()),
            "numeric resourceVersion"
        );
        assert!(got.metadata.creation_timestamp.is_some(), "creationTimestamp is set");
    }

    let only_a = api.list(&kube::api::ListParams::default().labels("tier=a")).await.expect("list");
    let names: Vec<_> = only_a.items.iter().filter_map(|c| c.metadata.name.clone()).collect();
    if f.selectors {
        assert_eq!(names, ["alpha"]);
    } else {
        assert!(names.contains(&"alpha".to_string()));
    }
    if f.typed_lists {
        assert_eq!(only_a.types.kind, "ConfigMapList");
        assert_eq!(only_a.types.api_version, "v1");
    }

    api.delete("alpha", &DeleteParams::default()).await.expect("delete");
    let e = api_error(api.get("alpha").await);
    assert_eq!(e.code, 404);
    if f.status_reasons {
        assert_eq!(e.reason, "NotFound");
        assert_eq!(e.message, "configmaps \"alpha\" not found");
    }
    api.delete("beta", &DeleteParams::default()).await.expect("delete beta");
}

/// Server-side apply of a changed manifest onto an existing object.
pub async fn scenario_apply(client: &Client, f: Fidelity) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PatchParams::apply("keelson");
    let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": "default"}, "data": {"a": "1"}});
    if f.apply_creates {
        api.patch("applied", &pp, &Patch::Apply(&manifest)).await.expect("apply creates");
    } else {
        api.create(&PostParams::default(), &serde_json::from_value(manifest).expect("cm")).await.expect("create");
    }
    let changed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": "default"}, "data": {"a": "2"}});
    let out = api.patch("applied", &pp, &Patch::Apply(&changed)).await.expect("apply updates");
    assert_eq!(out.data.as_ref().and_then(|d| d.get("a")).map(String::as_str), Some("2"));
    if f.field_ownership {
        let mf = out.metadata.managed_fields.expect("managedFields");
        let entry = mf.iter().find(|m| m.manager.as_deref() == Some("keelson")).expect("keelson's entry");
        assert_eq!(entry.operation.as_deref(), Some("Apply"));
        assert_eq!(entry.fields_v1.as_ref().map(|f| f.0.clone()), Some(json!({"f:data": {"f:a": {}}})));
    }
    api.delete("applied", &DeleteParams::default()).await.expect("delete");
}

/// A watch sees ADDED, MODIFIED and DELETED of an object, in order.
pub async fn scenario_watch(client: &Client, _f: Fidelity) {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let wp = WatchParams::default().fields("metadata.name=watched").timeout(30);
    let mut stream = Box::pin(api.watch(&wp, "0").await.expect("watch opens"));
    api.create(&PostParams::default(), &cm("watched", "w")).await.expect("create");
    api.patch("watched", &PatchParams::default(), &Patch::Merge(json!({"data": {"key": "changed"}})))
        .await
        .expect("patch");
    api.delete("watched", &DeleteParams::default()).await.expect("delete");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let ev = tokio::time::timeout(BOUND, futures_util::StreamExt::next(&mut stream))
            .await
            .expect("watch event in time")
            .expect("stream open")
            .expect("event decodes");
        // Filtered here too: not every server honours the field selector.
        let named = |o: &ConfigMap| o.metadata.name.as_deref() == Some("watched");
        match ev {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) if !named(&o) => {}
            WatchEvent::Added(o) => seen.push(("ADDED", o.data.and_then(|d| d.get("key").cloned()))),
            WatchEvent::Modified(o) => seen.push(("MODIFIED", o.data.and_then(|d| d.get("key").cloned()))),
            WatchEvent::Deleted(o) => seen.push(("DELETED", o.data.and_then(|d| d.get("key").cloned()))),
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        }
    }
    let v = |s: &str| Some(s.to_string());
    assert_eq!(seen, [("ADDED", v("value")), ("MODIFIED", v("changed")), ("DELETED", v("changed"))]);
}

/// The status and JSON body of a raw request through kube-rs's client.
pub async fn raw(client: &Client, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    raw_text(client, method, path, text.as_ref().map(|t| ("application/json", t.as_str()))).await
}

/// Like [`raw`] with a body of any content type (YAML apply bodies).
pub async fn raw_text(client: &Client, method: &str, path: &str, body: Option<(&str, &str)>) -> (u16, Value) {
    let mut req = axum::http::Request::builder().method(method).uri(path);
    if let Some((ct, _)) = body {
        req = req.header("content-type", ct);
    }
    let req = req.body(body.map(|(_, b)| b.as_bytes().to_vec()).unwrap_or_default()).expect("request builds");
    match tokio::time::timeout(BOUND, client.request_text(req)).await.expect("answer in time") {
        Ok(text) => (200, serde_json::from_str(&text).unwrap_or(Value::String(text))),
        Err(kube::Error::Api(s)) => (s.code, serde_json::to_value(&*s).unwrap_or_default()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}
