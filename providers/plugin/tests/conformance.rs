//! The conformance suite against real plugin executables: the example plugin passes every
//! check; plugins that print garbage, never answer, die at once, die on their second call, or
//! answer with the wrong shape each fail it, within a bounded time.

mod common;

use std::time::{Duration, Instant};

use common::{config, example, fixture, shape};
use keelson_provider_api::conformance::{KIND_CHECKS, Options, Report};
use keelson_provider_plugin::HostConfig;
use keelson_provider_plugin::conformance::{PLUGIN_CHECKS, run};

/// Runs the suite and checks it ended in bounded time (every call has a deadline).
async fn suite(config: HostConfig) -> Report {
    let started = Instant::now();
    let report = run(config, Options { call_timeout: Duration::from_secs(3) }).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "the suite took {took:?}:\n{report}");
    report
}

fn failed(report: &Report, name: &str) -> String {
    let check = report.checks.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}:\n{report}"));
    assert!(!check.passed, "{name} passed:\n{report}");
    check.message.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&[&example()]);
    c.data_dir = Some(dir.path().join("data"));
    let report = suite(c).await;
    assert!(report.passed(), "{report}");
    // The plugin's own checks, 12 per kind (Record, Zone), descriptor, unknown kind, 5 router checks.
    assert_eq!(report.checks.len(), PLUGIN_CHECKS.len() + 2 * KIND_CHECKS.len() + 2 + 5, "{report}");
    assert_eq!(report.provider, "plugin dns-records 0.1.0");
    for kind in ["Record", "Zone"] {
        for name in KIND_CHECKS {
            assert!(report.check(kind, name).is_some_and(|c| c.passed), "{kind}/{name}:\n{report}");
        }
    }
    // It kept its records where the host told it to, and cleaned up after itself.
    let records = dir.path().join("data/records");
    assert!(records.is_dir(), "records under KEELSON_DATA_DIR");
    let left: Vec<_> = walk(&records).into_iter().filter(|p| !p.contains("_weights")).collect();
    assert!(left.is_empty(), "the suite removes what it created: {left:?}");
    // And a second run against the same state passes too.
    let mut c = config(&[&example()]);
    c.data_dir = Some(dir.path().join("data"));
    let again = suite(c).await;
    assert!(again.passed(), "{again}");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_prints_garbage_fails() {
    let report = suite(config(&[&fixture("garbage.py")])).await;
    let message = failed(&report, "describe");
    assert!(message.contains("it wrote a line that is not JSON"), "{message}");
    assert!(message.contains("starting up... ok"), "{message}");
    assert_eq!(report.checks.len(), 1, "nothing else can run:\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_never_answers_fails_at_its_deadline() {
    let report = suite(config(&[&fixture("silent.py")])).await;
    let message = failed(&report, "describe");
    assert!(message.contains("describe did not answer within 2s"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_dies_at_once_fails() {
    let report = suite(config(&[&fixture("dies-at-once.py")])).await;
    let message = failed(&report, "describe");
    assert!(message.contains("exited during describe (it exited: exit status: 3"), "{message}");
    assert!(message.contains("fatal: cannot reach the records backend"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_dies_on_its_second_call_fails_every_check_after_describe() {
    let report = suite(config(&[&fixture("dies-on-second-call.py")])).await;
    assert!(report.check("", "describe").is_some_and(|c| c.passed), "{report}");
    let render = failed(&report, "render");
    assert!(render.contains("exited during render") && render.contains("exit status: 139"), "{render}");
    let create = failed(&report, "create");
    // Later calls meet a plugin that is down (restart pending) or dies again: transient either way.
    assert!(create.contains("plugin dies-on-second-call"), "{create}");
    assert!(report.failures().count() >= report.checks.len() - 2, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_answers_with_the_wrong_shape_fails() {
    let report = suite(shape("*", "result", Some(r#"{"outcome": 42, "resources": "none", "results": {}}"#))).await;
    assert!(report.check("", "describe").is_some_and(|c| c.passed), "{report}");
    let render = failed(&report, "render");
    assert!(
        render.contains("render: answer does not match the protocol: /result/resources: expected an array"),
        "{render}"
    );
    let create = failed(&report, "create");
    assert!(create.contains("apply: answer does not match the protocol: /result/outcome"), "{create}");
    let observe = failed(&report, "observe after apply");
    assert!(observe.contains("/result/results: expected an array"), "{observe}");
}
