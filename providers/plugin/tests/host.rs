//! The plugin host against real processes: every answer checked against its schema (per method,
//! a missing required field and a wrong type, each named by method and JSON pointer), crashes,
//! hangs, garbage, oversized answers and protocol mismatches turned into clear errors with the
//! right class, restarts with backoff, and notifications recorded.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{alive, config, eventually, example, fixture, kill, shape};
use keelson_provider_api::{
    AppRef, Error, ErrorClass, IdempotencyKey, MetricsSource, Provider, ResourceId, TrafficRouter, Variant,
};
use keelson_provider_plugin::{CallError, Method, PluginHost, PluginProvider};
use serde_json::{Value, json};

const ID: &str =
    r#"{"instance": "t", "apiVersion": "test.keelson.dev/v1", "kind": "Thing", "namespace": "n", "name": "a"}"#;

fn params(method: Method) -> Value {
    let id = serde_json::from_str::<Value>(ID).unwrap();
    let key = json!({"app": "web", "rollout": 1, "step": 1, "resource": "t:Thing/n/a"});
    match method {
        Method::Describe => json!({"protocolVersion": 1, "instance": "t"}),
        Method::Render => json!({"app": {"apiVersion": "keelson.dev/v1alpha1", "kind": "App",
            "metadata": {"name": "web"}, "spec": {"image": "x", "placement": {"cluster": "c"}}},
            "ctx": {"instance": "t", "revision": "abc", "digest": "sha256:1", "variant": "stable", "weight": 100}}),
        Method::Observe | Method::Health => json!({"ids": [id]}),
        Method::Apply => {
            json!({"resource": {"id": id, "owner": {"app": "web"}, "digest": "sha256:1", "spec": {}}, "key": key})
        }
        Method::Delete => json!({"id": id, "key": key}),
        Method::SetWeights => {
            json!({"app": {"app": "web"}, "weights": [{"variant": "stable", "percent": 100}], "key": key})
        }
        Method::Weights => json!({"app": {"app": "web"}}),
        Method::Query => {
            json!({"app": {"app": "web"}, "gate": {"metric": "success-rate"}, "variant": "stable", "windowMs": 60000})
        }
    }
}

/// Per method: (answer missing a required field, its pointer), (answer with a wrong type, its pointer).
fn bad_answers(method: Method) -> [(String, &'static str); 2] {
    let resource = format!(r#"{{"id": {ID}, "owner": {{"app": "web"}}, "spec": {{}}}}"#);
    match method {
        Method::Describe => [
            (r#"{"protocolVersion": 1, "name": "x", "version": "1", "capabilities": []}"#.into(), "/result/kinds"),
            (
                r#"{"protocolVersion": 1, "name": "x", "version": 1, "kinds": [], "capabilities": []}"#.into(),
                "/result/version",
            ),
        ],
        Method::Render => [
            (format!(r#"{{"resources": [{resource}]}}"#), "/result/resources/0/digest"),
            (r#"{"resources": {}}"#.into(), "/result/resources"),
        ],
        Method::Observe => [
            (r#"{"results": [{"observed": null}]}"#.into(), "/result/results/0/id"),
            (
                format!(r#"{{"results": [{{"id": {ID}, "observed": {{"digest": 7, "spec": {{}}}}}}]}}"#),
                "/result/results/0/observed/digest",
            ),
        ],
        Method::Apply => [("{}".into(), "/result/outcome"), (r#"{"outcome": 5}"#.into(), "/result/outcome")],
        Method::Delete => [("{}".into(), "/result/outcome"), (r#"{"outcome": true}"#.into(), "/result/outcome")],
        Method::Health => [
            (format!(r#"{{"results": [{{"id": {ID}, "health": {{}}}}]}}"#), "/result/results/0/health/status"),
            (
                format!(
                    r#"{{"results": [{{"id": {ID}, "health": {{"status": "progressing", "ready": "1", "desired": 2}}}}]}}"#
                ),
                "/result/results/0/health/ready",
            ),
        ],
        Method::SetWeights => [("{}".into(), "/result/outcome"), (r#"{"outcome": []}"#.into(), "/result/outcome")],
        Method::Weights => [
            ("{}".into(), "/result/weights"),
            (r#"{"weights": [{"variant": "stable", "percent": "100"}]}"#.into(), "/result/weights/0/percent"),
        ],
        Method::Query => [("{}".into(), "/result/value"), (r#"{"value": "99.9"}"#.into(), "/result/value")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_rejects_a_missing_field_and_a_wrong_type_naming_method_and_pointer() {
    for method in Method::ALL {
        for (answer, pointer) in bad_answers(method) {
            let host = PluginHost::new(shape(method.as_str(), "result", Some(&answer)));
            let error = match method {
                Method::Describe => host.start().await.map(|_| ()).unwrap_err(),
                _ => host.call(method, params(method)).await.map(|_| ()).unwrap_err(),
            };
            let CallError::Shape { method: m, violation } = &error else {
                panic!("{method}: {answer}: expected a shape error, got {error:?}");
            };
            assert_eq!(*m, method);
            assert_eq!(violation.pointer, pointer, "{method}: {answer}: {violation}");
            assert_eq!(violation.schema, method.result_schema());
            assert_eq!(error.class(), ErrorClass::Terminal, "a wrong shape is a plugin bug");
            let text = error.describe("shape", method);
            assert!(
                text.contains(&format!("shape: {method}: answer does not match the protocol: {pointer}:")),
                "{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_error_names_the_instance_the_method_and_the_pointer() {
    let host = Arc::new(PluginHost::new(shape("apply", "result", Some(r#"{"outcome": "done"}"#))));
    let provider = PluginProvider::connect(host).await.unwrap();
    let id: ResourceId = serde_json::from_str(ID).unwrap();
    let r = keelson_provider_api::DesiredResource {
        id: id.clone(),
        owner: keelson_provider_api::Owner { app: "web".into() },
        digest: "sha256:1".into(),
        spec: json!({}),
    };
    let key = IdempotencyKey { app: "web".into(), rollout: 1, step: 1, resource: id.to_string() };
    let err = provider.apply(&r, &key).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Terminal);
    assert_eq!(
        err.to_string(),
        "provider t: plugin shape: apply: answer does not match the protocol: /result/outcome: expected one of \
         `created`, `updated`, `unchanged`, `replayed`, got \"done\" (schema apply.result.json)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_plugin_fails_fast_as_transient_and_is_restarted_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&[&example(), "--dir", dir.path().to_str().unwrap()]);
    c.restart_backoff = Duration::from_millis(600);
    let host = Arc::new(PluginHost::new(c));
    let provider = PluginProvider::connect(host.clone()).await.unwrap();
    let pid = host.pid().expect("running");
    kill(pid);
    let app = AppRef { app: "web".into(), team: None };
    // While it is down, calls fail at once with a transient error naming the plugin and the call.
    let down = eventually("the host to notice the crash", Duration::from_secs(5), async || {
        let started = Instant::now();
        match provider.weights(&app).await {
            Err(e) if e.to_string().contains("is not running") => Some((e, started.elapsed())),
            _ => None,
        }
    })
    .await;
    let (err, took) = down;
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(took < Duration::from_secs(2), "a down plugin answers without waiting for the deadline, took {took:?}");
    let text = err.to_string();
    assert!(text.starts_with("provider t: unavailable: plugin dns-records is not running"), "{text}");
    assert!(text.contains("signal: 9") && text.contains("weights was not sent"), "{text}");
    // Back on its own after the backoff: a new process, same answers.
    eventually("the restarted plugin to answer", Duration::from_secs(10), async || provider.weights(&app).await.ok())
        .await;
    assert_eq!(host.starts(), 2);
    assert_ne!(host.pid(), Some(pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_dies_names_its_exit_status_and_last_stderr_line() {
    let host = PluginHost::new(config(&[&fixture("dies-at-once.py")]));
    let err = host.start().await.unwrap_err();
    let text = err.describe(&host.label(), Method::Describe);
    assert!(text.contains("dies-at-once.py exited during describe"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    assert!(text.contains("fatal: cannot reach the records backend"), "{text}");
    assert_eq!(err.class(), ErrorClass::Transient);

    let host = PluginHost::new(shape("apply", "exit", None));
    host.start().await.unwrap();
    let err = host.call(Method::Apply, params(Method::Apply)).await.unwrap_err();
    assert!(matches!(err, CallError::Exited { method: Method::Apply, .. }), "{err:?}");
    assert!(err.describe("shape", Method::Apply).contains("exit status: 1"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_call_ends_at_the_deadline_and_the_plugin_is_restarted_even_if_the_caller_left() {
    let mut c = shape("health", "hang", None);
    c.timeout = Duration::from_millis(500);
    let host = PluginHost::new(c);
    host.start().await.unwrap();
    let started = Instant::now();
    let err = host.call(Method::Health, params(Method::Health)).await.unwrap_err();
    assert_eq!(err, CallError::Hung { method: Method::Health, after: Duration::from_millis(500) });
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    eventually("a restart after the hang", Duration::from_secs(5), async || (host.starts() == 2).then_some(())).await;

    // A caller that gives up first (the daemon's own deadline) does not keep a hung plugin alive.
    let pid = eventually("the restarted plugin", Duration::from_secs(5), async || host.pid()).await;
    let early =
        tokio::time::timeout(Duration::from_millis(50), host.call(Method::Health, params(Method::Health))).await;
    assert!(early.is_err(), "the caller left before the plugin's deadline");
    eventually("the watchdog to stop the hung process", Duration::from_secs(5), async || (!alive(pid)).then_some(()))
        .await;
    eventually("another restart", Duration::from_secs(5), async || (host.starts() == 3).then_some(())).await;
    // The third start may still be handshaking (calls meanwhile fail at once): other calls work
    // once it is up, within a bounded time.
    eventually("a call to succeed after the restart", Duration::from_secs(5), async || {
        host.call(Method::Apply, params(Method::Apply)).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_is_not_json_stops_and_restarts_the_plugin() {
    let host = PluginHost::new(shape("observe", "garbage", None));
    host.start().await.unwrap();
    let pid = host.pid().unwrap();
    let err = host.call(Method::Observe, params(Method::Observe)).await.unwrap_err();
    let text = err.describe("shape", Method::Observe);
    assert!(matches!(err, CallError::Garbage { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Transient, "the plugin is restarted, so a retry can help");
    assert!(text.contains("observe: it wrote a line that is not JSON"), "{text}");
    assert!(text.contains("\"Traceback (most recent call last): oops\""), "{text}");
    assert!(text.contains("write logs to stderr"), "{text}");
    eventually("the garbage writer to be stopped", Duration::from_secs(5), async || (!alive(pid)).then_some(())).await;
    eventually("a restart", Duration::from_secs(5), async || (host.starts() == 2).then_some(())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_over_the_size_limit_is_refused() {
    let mut c = shape("weights", "huge", None);
    c.max_answer_bytes = 64 << 10;
    c.env.insert("SHAPE_BYTES".into(), (1 << 20).to_string());
    let host = PluginHost::new(c);
    host.start().await.unwrap();
    let err = host.call(Method::Weights, params(Method::Weights)).await.unwrap_err();
    assert_eq!(err, CallError::TooLarge { limit: 64 << 10 });
    assert!(err.describe("shape", Method::Weights).contains("longer than the limit of 65536 bytes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_version_mismatch_is_terminal_and_says_what_to_do() {
    let host = Arc::new(PluginHost::new(shape("describe", "version", None)));
    let err = PluginProvider::connect(host).await.err().expect("refused");
    assert_eq!(err.class(), ErrorClass::Terminal);
    let text = err.to_string();
    assert!(text.contains("plugin shape.py speaks protocol version 2, this keelson speaks 1"), "{text}");
    assert!(text.contains("use a plugin built for protocol 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_answers_fails_to_start_within_its_deadline() {
    let mut c = config(&[&fixture("silent.py")]);
    c.timeout = Duration::from_millis(700);
    let host = PluginHost::new(c);
    let started = Instant::now();
    let err = host.start().await.unwrap_err();
    assert_eq!(err, CallError::Hung { method: Method::Describe, after: Duration::from_millis(700) });
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_recorded_as_provider_events() {
    let host = PluginHost::new(shape("apply", "event", None));
    host.start().await.unwrap();
    host.call(Method::Apply, params(Method::Apply)).await.unwrap();
    let events = host.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].method, "event");
    assert_eq!(events[0].event_type(), Some("preemption"));
    assert_eq!(events[0].instance, "t");
    assert_eq!(events[0].params["message"], "spot node n-1 is reclaimed in 2 minutes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_keep_their_reason_and_class() {
    let dir = tempfile::tempdir().unwrap();
    let host = Arc::new(PluginHost::new(config(&[&example(), "--dir", dir.path().to_str().unwrap()])));
    let provider = PluginProvider::connect(host.clone()).await.unwrap();
    let kind = &provider.descriptor().kinds[0];
    let id = ResourceId::namespaced("t", &kind.api_version, &kind.kind, "team", "web");
    let bad = keelson_provider_api::DesiredResource {
        id: id.clone(),
        owner: keelson_provider_api::Owner { app: "web".into() },
        digest: "sha256:1".into(),
        spec: kind.example.invalid.clone(),
    };
    let key = IdempotencyKey { app: "web".into(), rollout: 1, step: 1, resource: id.to_string() };
    let err = provider.apply(&bad, &key).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    assert!(err.to_string().contains("not-an-address"), "{err}");
    // Someone else's record: a conflict naming who owns it.
    let mine = keelson_provider_api::DesiredResource { spec: kind.example.valid.clone(), ..bad.clone() };
    provider.apply(&mine, &key).await.unwrap();
    let theirs =
        keelson_provider_api::DesiredResource { owner: keelson_provider_api::Owner { app: "api".into() }, ..mine };
    let err = provider.apply(&theirs, &key).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Conflict, "{err}");
    assert!(err.to_string().contains("app web owns /spec"), "{err}");
    // No metrics capability: no MetricsSource, and a plugin that lacks a method says so.
    assert!(!provider.descriptor().has(keelson_provider_api::Capability::Metrics));
    let gate = keelson_manifest::app::Gate { metric: "success-rate".into(), ..Default::default() };
    let err = provider
        .query(&AppRef { app: "web".into(), team: None }, &gate, Variant::Stable, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "provider t: plugin dns-records does not implement query: dns-records has no method query"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_host_stops_the_plugin() {
    let host = PluginHost::new(config(&[&example()]));
    host.start().await.unwrap();
    let pid = host.pid().unwrap();
    assert!(alive(pid));
    drop(host);
    eventually("the plugin to exit", Duration::from_secs(5), async || (!alive(pid)).then_some(())).await;
}
