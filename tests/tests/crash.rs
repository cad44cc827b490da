//! Crash safety with a real process: the daemon aborts at each named crash point
//! (`KEELSON_CRASH_AT`, compiled in with the `crash-points` feature); the next start settles what
//! was in flight, records what really happened, and loses or repeats nothing.

use std::time::Duration;

use keelson_e2e::{Daemon, git, keelson, template_repo};
use serde_json::Value;

/// Crashes at `point` with `concurrency` workers, restarts, and checks that nothing was lost or
/// repeated. With one worker exactly one intent is open at the crash; with more, every rollout
/// started at once may be.
fn crash_and_recover(point: &str, concurrency: &str) -> Vec<Value> {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let args =
        ["up", "--dir", r, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms", "--concurrency", concurrency];
    let d = Daemon::start_with_env(&args, tmp.path(), &[("KEELSON_CRASH_AT", point)]);
    let code = d.wait_exit(Duration::from_secs(60));
    assert_ne!(code, 0, "the daemon aborted at {point}");

    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy after recovery", Duration::from_secs(60));
    let verify = d.json("/api/v1/audit/verify");
    assert_eq!(verify["ok"], true, "{point}: {verify}");
    let entries = d.json("/api/v1/audit?limit=10000")["entries"].as_array().unwrap().clone();
    assert_eq!(d.terminate(), 0);

    // Every ledger entry is on the status branch exactly once.
    let log = git(&repo, &["log", "keelson/status", "--format=%B"]);
    let mut seqs: Vec<i64> = log
        .lines()
        .filter_map(|l| l.strip_prefix("Keelson-Audit: "))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
        .collect();
    seqs.sort_unstable();
    let expected: Vec<i64> = (1..=entries.len() as i64).collect();
    assert_eq!(seqs, expected, "{point}: status branch trailers match the ledger one to one");
    let out = keelson(&["audit", "verify", "--repo", r], tmp.path());
    assert!(out.status.success(), "{point}: {}", String::from_utf8_lossy(&out.stdout));

    // Every intent has exactly one outcome.
    for intent in entries.iter().filter(|e| e["action"] == "intent") {
        let seq = intent["seq"].as_i64().unwrap();
        let outcomes = entries.iter().filter(|e| e["detail"]["intentSeq"].as_i64() == Some(seq)).count();
        assert_eq!(outcomes, 1, "{point}: intent {seq} has one outcome");
    }
    entries
}

fn recovered(entries: &[Value]) -> usize {
    entries.iter().filter(|e| e["detail"]["recovered"] == true).count()
}

#[test]
fn crash_after_intent_is_settled_by_acting_once() {
    let entries = crash_and_recover("after-intent", "1");
    assert_eq!(recovered(&entries), 1, "the open intent was settled at start-up");
}

#[test]
fn crash_after_provider_call_is_settled_without_acting_twice() {
    let entries = crash_and_recover("after-provider-call", "1");
    assert_eq!(recovered(&entries), 1);
    let settled = entries.iter().find(|e| e["detail"]["recovered"] == true).unwrap();
    let detail = &settled["detail"];
    let outcomes = detail["outcomes"].as_object().unwrap();
    assert!(outcomes.values().all(|o| o == "replayed"), "the provider had acted; it is not asked again: {detail}");
}

#[test]
fn crash_after_ledger_append_loses_nothing() {
    // Concurrent reconciles: the crash hits a group commit of several apps' entries.
    crash_and_recover("after-ledger-append", "16");
}

#[test]
fn crash_after_intent_with_concurrent_rollouts_settles_every_open_intent_once() {
    let entries = crash_and_recover("after-intent", "16");
    assert!(recovered(&entries) >= 1, "the open intents were settled at start-up");
}

#[test]
fn crash_mid_status_commit_loses_nothing() {
    crash_and_recover("mid-status-commit", "16");
}
