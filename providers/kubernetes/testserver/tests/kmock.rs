//! The scenarios of `tests/api.rs` against kmock (PyPI), a Kubernetes emulator nobody here
//! wrote, where kmock is faithful; and the gaps where it is not, measured so this list stays
//! true: kmock answers server-side apply of an absent object with 404, sets no `uid`,
//! `resourceVersion` or `generation`, sends list bodies without `kind`, reports the core group's
//! discovery as `groupVersion: "/v1"` listing only resources it has seen requests for (kind
//! guessed, no verbs, no scope), ignores label and field selectors, keeps
//! only the namespace an object's body names (so a namespaced watch misses objects created
//! without one), uses its own reasons (`Object Not Found`, `Object Already Exists`), does not
//! serve PUT, and lets objects into namespaces that do not exist.
//!
//! Needs `KEELSON_TEST_KMOCK_PYTHON` (a Python with kmock installed; `scripts/test` sets it up).
//! Without it the tests print SKIP, or fail when `CI` is set.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{BOUND, Fidelity, api_error, client_for, raw};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What kmock does faithfully.
const KMOCK: Fidelity = Fidelity {
    server_metadata: false,
    apply_creates: false,
    field_ownership: false,
    typed_lists: false,
    status_reasons: false,
    selectors: false,
};

struct Kmock {
    child: Child,
    url: String,
}

impl Kmock {
    /// Starts kmock, or `None` (after printing SKIP) when it is not set up outside CI.
    async fn start(test: &str) -> Option<Kmock> {
        let Some(python) = std::env::var_os("KEELSON_TEST_KMOCK_PYTHON").map(PathBuf::from) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "KEELSON_TEST_KMOCK_PYTHON is not set, and CI must run the kmock cross-checks (scripts/test sets it up)"
            );
            eprintln!("SKIP {test}: KEELSON_TEST_KMOCK_PYTHON is not set (./scripts/test sets up kmock)");
            return None;
        };
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kmock_serve.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {}: {e}", python.display(), script.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        tokio::time::timeout(BOUND, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("kmock printed its URL in time")
            .expect("reading kmock's stdout");
        let url = line.trim().to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "kmock printed {url:?}");
        Some(Kmock { child, url })
    }

    /// Closes kmock's stdin (it exits) and waits, bounded; kills it if it lingers.
    async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(BOUND, self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

#[tokio::test]
async fn kmock_scenario_crud() {
    let Some(k) = Kmock::start("kmock_scenario_crud").await else { return };
    common::scenario_crud(&client_for(&k.url, None).await, KMOCK).await;
    k.stop().await;
}

#[tokio::test]
async fn kmock_scenario_apply() {
    let Some(k) = Kmock::start("kmock_scenario_apply").await else { return };
    common::scenario_apply(&client_for(&k.url, None).await, KMOCK).await;
    k.stop().await;
}

#[tokio::test]
async fn kmock_scenario_watch() {
    let Some(k) = Kmock::start("kmock_scenario_watch").await else { return };
    common::scenario_watch(&client_for(&k.url, None).await, KMOCK).await;
    k.stop().await;
}

/// Each gap named in the module comment, measured. If kmock closes one, this fails and the
/// list (here and in docs/kubernetes-testserver.md) should shrink.
#[tokio::test]
async fn kmock_gaps_are_as_documented() {
    let Some(k) = Kmock::start("kmock_gaps_are_as_documented").await else { return };
    let c = client_for(&k.url, None).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    let m = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "absent"}, "data": {"a": "1"}});
    let e = api_error(cms.patch("absent", &PatchParams::apply("keelson"), &Patch::Apply(&m)).await);
    assert_eq!(e.code, 404, "server-side apply of an absent object is a 404 in kmock");
    assert_ne!(e.reason, "NotFound", "and its reason is not the API server's");

    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.metadata.uid.is_none() && created.metadata.creation_timestamp.is_none());
    assert!(created.metadata.resource_version.is_none(), "no resourceVersion");
    let again = api_error(cms.create(&PostParams::default(), &cm).await);
    assert_eq!((again.code, again.reason.as_str()), (409, "Object Already Exists"), "409, with kmock's own reason");

    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(list.types.kind, "List", "the list body has no kind (kube-rs fills in \"List\")");
    let none = cms.list(&ListParams::default().labels("no-such-label=1")).await.unwrap();
    assert_eq!(none.items.len(), 1, "label selectors are ignored");
    assert_eq!(none.items[0].metadata.namespace, None, "the URL's namespace is not filled in");

    let (code, core) = raw(&c, "GET", "/api/v1", None).await;
    assert_eq!(code, 200);
    assert_eq!(core["groupVersion"], "/v1");
    // Only resources it has seen requests for, with a guessed kind, no verbs and no scope.
    for r in core["resources"].as_array().expect("a resource list") {
        assert_ne!(r["kind"], "ConfigMap", "{r}");
        assert_eq!((&r["verbs"], &r["namespaced"]), (&json!([]), &json!(null)), "{r}");
    }

    let (code, _) = raw(
        &c,
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        Some(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"x": "y"}})),
    )
    .await;
    assert_eq!(code, 404, "PUT is not served");

    let elsewhere: Api<ConfigMap> = Api::namespaced(c.clone(), "no-such-namespace");
    assert!(elsewhere.create(&PostParams::default(), &cm).await.is_ok(), "namespaces need not exist");
    k.stop().await;
}
