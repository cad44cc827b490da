use serde_json::json;

use super::*;

fn entry(seq: i64, from: &str, to: &str, action: &str, detail: serde_json::Value) -> LedgerEntry {
    LedgerEntry {
        seq,
        at: "2026-12-01T12:00:00.000000Z".into(),
        app: "web".into(),
        desired_commit: "c1".into(),
        desired_digest: "sha256:d1".into(),
        rollout: Some(1),
        from_state: from.into(),
        to_state: to.into(),
        action: action.into(),
        actor: "keelson".into(),
        detail: detail.to_string(),
        prev_hash: String::new(),
        hash: String::new(),
    }
}

fn resource(kind: &str, name: &str) -> serde_json::Value {
    json!({"id": {"instance": "sim", "apiVersion": "sim.keelson.dev/v1", "kind": kind, "namespace": "web", "name": name},
           "owner": {"app": "web"}, "digest": "sha256:d1", "spec": {}})
}

fn id(kind: &str, name: &str) -> ResourceId {
    ResourceId::namespaced("sim", "sim.keelson.dev/v1", kind, "web", name)
}

fn intent(seq: i64, resources: serde_json::Value, prune: serde_json::Value) -> LedgerEntry {
    entry(
        seq,
        "Planned",
        "Progressing",
        "intent",
        json!({"key": "web/1/1", "op": "apply", "instance": "sim", "step": 1, "of": 1, "resources": resources, "prune": prune}),
    )
}

#[test]
fn intents_build_the_inventory_that_prune_deletes() {
    let mut apps = Apps::new();
    replay(&mut apps, [intent(2, json!([resource("Workload", "web"), resource("Route", "web")]), json!([]))]).unwrap();
    assert_eq!(apps["web"].inventory, [id("Route", "web"), id("Workload", "web")]);
    assert_eq!(apps["web"].progress.as_ref().map(|p| (p.step, p.of)), Some((1, 1)));
    assert_eq!(apps["web"].instance, "sim");
    // The next rollout no longer renders the Route and prunes it.
    replay(&mut apps, [intent(5, json!([resource("Workload", "web")]), json!([id("Route", "web")]))]).unwrap();
    assert_eq!(apps["web"].inventory, [id("Workload", "web")]);
    // A delete intent leaves the inventory for recovery; `Deleted` removes the app.
    let delete = json!({"key": "web/8/1", "op": "delete", "instance": "sim", "step": 1, "of": 1, "resources": [id("Workload", "web")]});
    replay(&mut apps, [entry(8, "Planned", "Progressing", "intent", delete)]).unwrap();
    assert_eq!(apps["web"].inventory, [id("Workload", "web")]);
    let deleted = json!({"intentSeq": 8, "instance": "sim", "outcomes": {"sim:Workload/web/web": "deleted"}});
    replay(&mut apps, [entry(9, "Progressing", "Deleted", "deleted", deleted)]).unwrap();
    assert!(!apps.contains_key("web"));
}

#[test]
fn only_failures_that_are_not_transient_quarantine_the_digest() {
    let mut apps = Apps::new();
    let failed = |class: &str| json!({"reason": "ApplyFailed", "message": "x", "class": class});
    replay(&mut apps, [entry(3, "Progressing", "Failed", "failed", failed("transient"))]).unwrap();
    assert_eq!(apps["web"].quarantined_digest, None);
    assert_eq!(apps["web"].reason, "ApplyFailed");
    replay(&mut apps, [entry(4, "Progressing", "Failed", "failed", failed("terminal"))]).unwrap();
    assert_eq!(apps["web"].quarantined_digest.as_deref(), Some("sha256:d1"));
    // Ledgers written before error classes: every failure quarantines, as it always did.
    let mut old = Apps::new();
    replay(&mut old, [entry(3, "Progressing", "Failed", "failed", json!({"reason": "ApplyFailed", "message": "x"}))])
        .unwrap();
    assert_eq!(old["web"].quarantined_digest.as_deref(), Some("sha256:d1"));
}

#[test]
fn healthy_clears_quarantine_and_marks_in_sync() {
    let mut apps = Apps::new();
    replay(&mut apps, [entry(3, "Progressing", "Failed", "failed", json!({"reason": "ApplyFailed", "message": "x"}))])
        .unwrap();
    replay(
        &mut apps,
        [entry(4, "Progressing", "Healthy", "healthy", json!({"observedDigest": "sha256:d1", "resources": 1}))],
    )
    .unwrap();
    let web = &apps["web"];
    assert!(web.in_sync && web.quarantined_digest.is_none());
    assert_eq!(web.observed_digest.as_deref(), Some("sha256:d1"));
    assert_eq!(web.last_transition.as_ref().map(|t| (t.from, t.to)), Some((Phase::Progressing, Phase::Healthy)));
    assert!(web.reason.is_empty() && web.message.is_empty());
}

#[test]
fn an_entry_the_fold_cannot_read_is_an_error_not_a_default() {
    let mut apps = Apps::new();
    let err = replay(&mut apps, [entry(5, "Pending", "Healthy", "teleport", json!({}))]).unwrap_err();
    assert!(err.to_string().contains("ledger entry 5 has action \"teleport\""), "{err}");
    let err =
        replay(&mut apps, [entry(6, "Pending", "Exploded", "suspend", json!({"reason": "Suspended", "message": ""}))])
            .unwrap_err();
    assert!(err.to_string().starts_with("ledger entry 6: unknown phase \"Exploded\""), "{err}");
}
