use serde_json::json;

use super::*;

/// Every detail shape the first release (ledger format v1) wrote, exactly as it wrote them.
fn first_release_details() -> Vec<(&'static str, Value)> {
    let resource = json!({"id": {"instance": "sim", "apiVersion": "sim.keelson.dev/v1", "kind": "Workload",
        "namespace": "web", "name": "storefront"}, "owner": {"app": "storefront"}, "digest": "sha256:d1",
        "spec": {"image": "shop:1", "replicas": 3, "variant": "stable", "weight": 100}});
    let verdict = json!({"policy": "guardrails", "rule": "pci-off-spot", "kind": "rule", "message": "no spot",
        "blocking": true, "file": "policies/guardrails.yaml", "line": 12, "col": 7});
    vec![
        (
            "plan",
            json!({"instance": "sim", "strategy": "direct", "steps": 1,
            "changes": [{"resource": "sim:Workload/web/storefront", "change": "update", "fields": ["/replicas"]},
                        {"resource": "sim:Route/web/storefront", "change": "create"}],
            "verdicts": [verdict], "message": "rolling out 0123456789ab from abcdefabcdef"}),
        ),
        ("plan", json!({"instance": "sim", "op": "delete", "message": "order-worker was removed from git at abc"})),
        (
            "intent",
            json!({"key": "storefront/5/1", "op": "apply", "instance": "sim", "step": 1, "of": 1,
            "resources": [resource]}),
        ),
        ("intent", json!({"key": "order-worker/9/1", "op": "delete", "instance": "sim", "step": 1, "of": 1})),
        (
            "applied",
            json!({"intentSeq": 6, "instance": "sim", "step": 1, "of": 1,
            "outcomes": {"sim:Workload/web/storefront": "updated", "sim:Route/web/storefront": "not_found"}}),
        ),
        (
            "applied",
            json!({"intentSeq": 6, "recovered": true, "instance": "sim",
            "outcomes": {"sim:Workload/web/storefront": "replayed"}, "step": 1, "of": 1}),
        ),
        (
            "deleted",
            json!({"intentSeq": 10, "instance": "sim", "outcomes": {"sim:Workload/payments/order-worker": "deleted"}}),
        ),
        ("healthy", json!({"observedDigest": "sha256:d1", "resources": 2})),
        (
            "failed",
            json!({"intentSeq": 6, "instance": "sim", "reason": "ApplyFailed", "message": "boom", "outcomes": {}}),
        ),
        (
            "failed",
            json!({"intentSeq": 6, "recovered": true, "instance": "sim", "reason": "RecoveryFailed", "message": "x"}),
        ),
        ("failed", json!({"reason": "ProgressDeadlineExceeded", "message": "not healthy after 10m (1 of 3 ready)"})),
        ("failed", json!({"reason": "NoProvider", "message": "cluster \"x\" has no workloads provider"})),
        ("failed", json!({"reason": "RenderFailed", "message": "provider sim: invalid spec"})),
        ("failed", json!({"intentSeq": 10, "instance": "sim", "reason": "DeleteFailed", "message": "x"})),
        (
            "block",
            json!({"reason": "Policy", "message": "guardrails/pci-off-spot: no spot; the running version is kept",
            "verdicts": [verdict]}),
        ),
        ("block", json!({"reason": "Freeze", "message": "frozen; the running version is kept", "verdicts": []})),
        (
            "block",
            json!({"reason": "InvalidManifest", "message": "apps/x/deploy.yaml:3:1: error; the running version is kept"}),
        ),
        ("suspend", json!({"reason": "Suspended", "message": "spec.suspend is true; the app is left as it is"})),
    ]
}

#[test]
fn every_first_release_detail_parses() {
    for (seq, (action, detail)) in first_release_details().into_iter().enumerate() {
        let event = Event::parse(seq as i64 + 1, action, &detail.to_string())
            .unwrap_or_else(|e| panic!("{action} {detail}: {e}"));
        assert_eq!(event.action(), action);
    }
}

#[test]
fn old_shapes_read_as_what_they_meant() {
    let details = first_release_details();
    let Event::Intent(delete) = Event::parse(4, "intent", &details[3].1.to_string()).unwrap() else { panic!() };
    assert_eq!(delete.op, IntentOp::Delete { resources: None }, "old delete intents named no resources");
    let Event::Failed(failed) = Event::parse(9, "failed", &details[8].1.to_string()).unwrap() else { panic!() };
    assert_eq!(failed.class, None);
    assert!(!failed.is_transient(), "a failure of an old ledger quarantines, as it did then");
    let Event::Applied(applied) = Event::parse(5, "applied", &details[4].1.to_string()).unwrap() else { panic!() };
    assert_eq!(applied.outcomes["sim:Route/web/storefront"], Recorded::NotFound);
    let Event::Intent(apply) = Event::parse(3, "intent", &details[2].1.to_string()).unwrap() else { panic!() };
    let IntentOp::Apply { resources, prune } = apply.op else { panic!() };
    assert_eq!(resources[0].id.namespace.as_deref(), Some("web"));
    assert!(prune.is_empty());
}

#[test]
fn events_round_trip_through_their_detail() {
    for (seq, (action, detail)) in first_release_details().into_iter().enumerate() {
        let event = Event::parse(seq as i64 + 1, action, &detail.to_string()).unwrap();
        let again = Event::parse(seq as i64 + 1, action, &event.detail().to_string()).unwrap();
        assert_eq!(again, event, "{action}");
    }
}

#[test]
fn an_unknown_action_or_a_malformed_detail_is_an_error_naming_the_entry() {
    let err = Event::parse(42, "teleport", "{}").unwrap_err();
    assert!(matches!(&err, EventError::UnknownAction { seq: 42, .. }), "{err}");
    assert!(err.to_string().contains("ledger entry 42 has action \"teleport\""), "{err}");
    let err = Event::parse(7, "failed", r#"{"reason":"Exploded","message":"x"}"#).unwrap_err();
    assert!(err.to_string().starts_with("ledger entry 7 (failed): the detail is not a valid failed event"), "{err}");
    assert!(Event::parse(8, "healthy", "not json").is_err());
    assert!(Event::parse(9, "intent", r#"{"key":"a/1/1","instance":"sim","step":1,"of":1,"op":"launch"}"#).is_err());
}

#[test]
fn new_fields_are_written_only_when_they_say_something() {
    let failed = Failed {
        reason: FailReason::ApplyFailed,
        message: "down".into(),
        intent_seq: Some(3),
        instance: Some("sim".into()),
        class: Some(ErrorClass::Transient),
        outcomes: BTreeMap::new(),
        recovered: false,
    };
    assert_eq!(
        Event::Failed(failed).detail(),
        json!({"reason": "ApplyFailed", "message": "down", "intentSeq": 3, "instance": "sim", "class": "transient"})
    );
}

#[test]
fn drift_prune_guard_and_dry_run_are_additive_and_round_trip() {
    let details = [
        (
            "drift",
            json!({"resources": [{"resource": "sim:Workload/web/storefront", "fields": ["/spec/replicas"]},
                                 {"resource": "sim:Route/web/storefront", "missing": true}],
                   "selfHeal": true, "message": "2 resources differ from git"}),
        ),
        ("block", json!({"reason": "PruneGuard", "message": "the commit would delete all 4 apps; nothing is pruned"})),
        (
            "plan",
            json!({"instance": "sim", "op": "apply", "strategy": "direct", "steps": 1, "changes": [],
                   "verdicts": [], "message": "m", "dryRun": true}),
        ),
        (
            "plan",
            json!({"instance": "sim", "op": "apply", "strategy": "direct", "steps": 1, "changes": [],
                   "verdicts": [], "message": "m", "cause": "Drifted"}),
        ),
    ];
    for (seq, (action, detail)) in details.iter().enumerate() {
        let event = Event::parse(seq as i64 + 1, action, &detail.to_string()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&event.detail(), detail, "{action} writes back exactly what it read");
    }
    let drift = Event::parse(1, "drift", &details[0].1.to_string()).unwrap();
    assert_eq!((drift.reason(), drift.message()), (Some("Drifted"), Some("2 resources differ from git")));
    let dry = Event::parse(3, "plan", &details[2].1.to_string()).unwrap();
    assert_eq!(dry.reason(), Some("DryRun"));
    let Event::Plan(plan) = Event::parse(2, "plan", &first_release_details()[0].1.to_string()).unwrap() else {
        panic!()
    };
    assert!(!plan.dry_run && plan.cause.is_none(), "old plans were neither dry runs nor self-heals");
}
