//! The controllers a real control plane runs that a provider's tests can observe: CRD
//! establishment, the garbage collector (background, foreground and orphan propagation), the
//! namespace lifecycle, default ServiceAccounts, and a Deployment controller that moves
//! `status` toward `spec` one replica per tick.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::catalog::ResourceType;
use crate::store::{DeleteOpts, State, WriteCtx, now};

/// What the Deployment controller remembers of one rollout (the ReplicaSets it would own).
#[derive(Debug, Clone)]
pub struct Rollout {
    hash: String,
    /// Pods of the current template.
    updated: i64,
    /// Pods of earlier templates.
    old: i64,
    revision: i64,
    last_progress: Instant,
}

const CONTROLLER: &str = "kube-controller-manager";
const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

fn rt(state: &State, key: &(String, String)) -> Option<std::sync::Arc<ResourceType>> {
    state.catalog.types().iter().find(|t| &t.key() == key).cloned()
}

fn s<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

fn ns_of(rt: &ResourceType, v: &Value) -> Option<String> {
    rt.namespaced.then(|| s(v, "/metadata/namespace").to_string())
}

fn has_finalizer(v: &Value, f: &str) -> bool {
    v.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == f))
}

fn without_finalizer(v: &Value, f: &str) -> Value {
    let mut n = v.clone();
    if let Some(a) = n.pointer_mut("/metadata/finalizers").and_then(Value::as_array_mut) {
        a.retain(|x| x != f);
    }
    n
}

/// Runs every controller once. Controllers act as the cluster's own components, so RBAC-style
/// refusals meant for the client under test do not apply to them.
pub fn tick(state: &mut State) {
    let denies = std::mem::take(&mut state.denies);
    establish_crds(state);
    garbage_collect(state);
    finalize_namespaces(state);
    finalize_crds(state);
    default_service_accounts(state);
    deployments(state);
    state.denies = denies;
}

fn establish_crds(state: &mut State) {
    let Some(crt) = state.catalog.find("apiextensions.k8s.io", "v1", "customresourcedefinitions") else { return };
    for crd in state.all(&crt, None) {
        let name = s(&crd, "/metadata/name").to_string();
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let established = crd
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Established" && c["status"] == "True"));
        let observed = crd.pointer("/status/observedGeneration") == crd.pointer("/metadata/generation");
        if !has_finalizer(&crd, CRD_CLEANUP) {
            let mut n = crd.clone();
            n["metadata"]["finalizers"] = json!([CRD_CLEANUP]);
            let _ = state.replace(&crt, None, &name, n, &WriteCtx::new("kube-apiserver"));
            continue;
        }
        if established && observed {
            continue;
        }
        state.catalog.serve_crd(&crd);
        let t = now();
        let storage: Vec<Value> = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].clone())
            .collect();
        let mut n = crd.clone();
        n["status"] = json!({
            "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t, "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": t, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
            ],
            "storedVersions": storage,
            "observedGeneration": crd.pointer("/metadata/generation").cloned().unwrap_or(json!(1)),
        });
        let ctx = WriteCtx { subresource: "status".into(), ..WriteCtx::new("kube-apiserver") };
        let _ = state.replace(&crt, None, &name, n, &ctx);
    }
}

fn finalize_crds(state: &mut State) {
    let Some(crt) = state.catalog.find("apiextensions.k8s.io", "v1", "customresourcedefinitions") else { return };
    for crd in state.all(&crt, None) {
        if crd.pointer("/metadata/deletionTimestamp").is_none() || !has_finalizer(&crd, CRD_CLEANUP) {
            continue;
        }
        let key = (s(&crd, "/spec/group").to_string(), s(&crd, "/spec/names/plural").to_string());
        let mut remaining = 0;
        if let Some(cr_rt) = rt(state, &key) {
            for cr in state.all(&cr_rt, None) {
                remaining += 1;
                if cr.pointer("/metadata/deletionTimestamp").is_none() {
                    let _ = state.delete(
                        &cr_rt,
                        ns_of(&cr_rt, &cr).as_deref(),
                        s(&cr, "/metadata/name"),
                        &DeleteOpts::default(),
                    );
                }
            }
        }
        if remaining == 0 {
            state.catalog.unserve(&key.0, &key.1);
            let name = s(&crd, "/metadata/name").to_string();
            state.store_raw(&crt, None, &name, Some(&crd), without_finalizer(&crd, CRD_CLEANUP));
        }
    }
}

fn garbage_collect(state: &mut State) {
    let all = state.everything();
    let uids: HashSet<String> = all.iter().map(|(_, o)| s(o, "/metadata/uid").to_string()).collect();
    let mut foreground: HashSet<String> = HashSet::new();
    let mut orphaning: HashSet<String> = HashSet::new();
    for (_, o) in &all {
        if o.pointer("/metadata/deletionTimestamp").is_some() {
            if has_finalizer(o, "foregroundDeletion") {
                foreground.insert(s(o, "/metadata/uid").to_string());
            }
            if has_finalizer(o, "orphan") {
                orphaning.insert(s(o, "/metadata/uid").to_string());
            }
        }
    }
    let mut dependents_of: HashSet<String> = HashSet::new();
    for (key, o) in &all {
        let Some(refs) = o.pointer("/metadata/ownerReferences").and_then(Value::as_array) else { continue };
        let Some(t) = rt(state, key) else { continue };
        let name = s(o, "/metadata/name").to_string();
        let ns = ns_of(&t, o);
        let owner_uids: Vec<String> = refs.iter().map(|r| s(r, "/uid").to_string()).collect();
        for u in &owner_uids {
            dependents_of.insert(u.clone());
        }
        if owner_uids.iter().any(|u| orphaning.contains(u)) {
            let mut n = o.clone();
            if let Some(a) = n.pointer_mut("/metadata/ownerReferences").and_then(Value::as_array_mut) {
                a.retain(|r| !orphaning.contains(s(r, "/uid")));
            }
            let _ = state.replace(&t, ns.as_deref(), &name, n, &WriteCtx::new("generic-garbage-collector"));
            continue;
        }
        let all_gone = owner_uids.iter().all(|u| !uids.contains(u));
        let owner_foreground = owner_uids.iter().any(|u| foreground.contains(u));
        if (all_gone || owner_foreground) && o.pointer("/metadata/deletionTimestamp").is_none() {
            let propagation = owner_foreground.then(|| "Foreground".to_string());
            let _ = state.delete(&t, ns.as_deref(), &name, &DeleteOpts { propagation, ..Default::default() });
        }
    }
    for (key, o) in &all {
        if o.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let uid = s(o, "/metadata/uid");
        let Some(t) = rt(state, key) else { continue };
        let name = s(o, "/metadata/name").to_string();
        let ns = ns_of(&t, o);
        let Some(current) = state.lookup(&t, ns.as_deref(), &name).cloned() else { continue };
        let mut next = current.clone();
        if has_finalizer(&next, "orphan") {
            next = without_finalizer(&next, "orphan");
        }
        if has_finalizer(&next, "foregroundDeletion") && !dependents_of.contains(uid) {
            next = without_finalizer(&next, "foregroundDeletion");
        }
        if next != current {
            state.store_raw(&t, ns.as_deref(), &name, Some(&current), next);
        }
    }
}

fn finalize_namespaces(state: &mut State) {
    let Some(nsrt) = state.catalog.find("", "v1", "namespaces") else { return };
    for n in state.all(&nsrt, None) {
        if n.pointer("/metadata/deletionTimestamp").is_none() {
            continue;
        }
        let name = s(&n, "/metadata/name").to_string();
        let mut remaining = 0;
        for (key, o) in state.everything() {
            let Some(t) = rt(state, &key) else { continue };
            if !t.namespaced || s(&o, "/metadata/namespace") != name {
                continue;
            }
            remaining += 1;
            if o.pointer("/metadata/deletionTimestamp").is_none() {
                let _ = state.delete(&t, Some(&name), s(&o, "/metadata/name"), &DeleteOpts::default());
            }
        }
        if remaining == 0 {
            let mut next = n.clone();
            next["spec"]["finalizers"] = json!([]);
            if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("finalizers");
            }
            let current = state.lookup(&nsrt, None, &name).cloned();
            state.store_raw(&nsrt, None, &name, current.as_ref(), next);
        }
    }
}

fn default_service_accounts(state: &mut State) {
    let (Some(nsrt), Some(sart)) =
        (state.catalog.find("", "v1", "namespaces"), state.catalog.find("", "v1", "serviceaccounts"))
    else {
        return;
    };
    for n in state.all(&nsrt, None) {
        let name = s(&n, "/metadata/name");
        if n.pointer("/metadata/deletionTimestamp").is_some() || state.lookup(&sart, Some(name), "default").is_some() {
            continue;
        }
        let body =
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}});
        let _ = state.create(&sart, Some(name), body, &WriteCtx::new(CONTROLLER));
    }
}

/// The pod-template-hash of a template (FNV-1a, in the "safe" alphabet Kubernetes uses).
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10).map(|i| SAFE[((h >> (i * 6)) % SAFE.len() as u64) as usize] as char).collect()
}

fn percent(v: Option<&Value>, of: i64, round_up: bool, fallback: i64) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(fallback),
        Some(Value::String(s)) if s.ends_with('%') => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            if round_up { (p * of + 99) / 100 } else { p * of / 100 }
        }
        Some(Value::String(s)) => s.parse().unwrap_or(fallback),
        _ => fallback,
    }
}

fn condition(old: Option<&Value>, kind: &str, status: &str, reason: &str, message: String, t: &str) -> Value {
    let prev = old
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    let transition = match prev {
        Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
        _ => json!(t),
    };
    let update = match prev {
        Some(p) if p["status"] == status && p["reason"] == reason && p["message"] == message.as_str() => {
            p["lastUpdateTime"].clone()
        }
        _ => json!(t),
    };
    json!({"type": kind, "status": status, "lastUpdateTime": update, "lastTransitionTime": transition, "reason": reason, "message": message})
}

fn deployments(state: &mut State) {
    let Some(drt) = state.catalog.find("apps", "v1", "deployments") else { return };
    for d in state.all(&drt, None) {
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let ns = s(&d, "/metadata/namespace").to_string();
        let name = s(&d, "/metadata/name").to_string();
        let uid = s(&d, "/metadata/uid").to_string();
        let spec = &d["spec"];
        let desired = spec.get("replicas").and_then(Value::as_i64).unwrap_or(1);
        let paused = spec.get("paused").and_then(Value::as_bool).unwrap_or(false);
        let recreate = spec.pointer("/strategy/type") == Some(&json!("Recreate"));
        let deadline = Duration::from_secs(spec.get("progressDeadlineSeconds").and_then(Value::as_u64).unwrap_or(600));
        let max_surge = percent(spec.pointer("/strategy/rollingUpdate/maxSurge"), desired, true, 1);
        let mut max_unavailable = percent(spec.pointer("/strategy/rollingUpdate/maxUnavailable"), desired, false, 0);
        if max_surge == 0 && max_unavailable == 0 {
            max_unavailable = 1;
        }
        let never = state.never_available.contains(&(ns.clone(), name.clone()));
        let hash = template_hash(&spec["template"]);
        let r = state.rollouts.entry(uid).or_insert_with(|| Rollout {
            hash: hash.clone(),
            updated: 0,
            old: 0,
            revision: 1,
            last_progress: Instant::now(),
        });
        if r.hash != hash {
            r.old += r.updated;
            r.updated = 0;
            r.hash = hash.clone();
            r.revision += 1;
            r.last_progress = Instant::now();
        }
        let before = (r.updated, r.old);
        if !paused {
            if recreate {
                if r.old > 0 {
                    r.old -= 1;
                } else if r.updated < desired {
                    r.updated += 1;
                }
            } else {
                if r.updated < desired && r.updated + r.old < desired + max_surge.max(1) {
                    r.updated += 1;
                }
                let ready_new = if never { 0 } else { r.updated };
                if r.old > 0 && ready_new + r.old > desired - max_unavailable {
                    r.old -= 1;
                }
            }
            if r.updated > desired {
                r.updated = desired;
            }
        }
        if (r.updated, r.old) != before {
            r.last_progress = Instant::now();
        }
        let ready_new = if never { 0 } else { r.updated };
        let replicas = r.updated + r.old;
        let available = ready_new + r.old;
        let rs_name = format!("{name}-{hash}");
        let complete = r.updated == desired && replicas == desired && available == desired;
        let stalled = !complete && r.last_progress.elapsed() > deadline;
        let revision = r.revision;
        let t = now();
        let old_status = d.get("status");
        let (av_status, av_reason, av_msg) = if available >= desired - max_unavailable {
            ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.".to_string())
        } else {
            ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".to_string())
        };
        let (pr_status, pr_reason, pr_msg) = if complete {
            ("True", "NewReplicaSetAvailable", format!("ReplicaSet {rs_name:?} has successfully progressed."))
        } else if paused {
            ("Unknown", "DeploymentPaused", "Deployment is paused".to_string())
        } else if stalled {
            ("False", "ProgressDeadlineExceeded", format!("ReplicaSet {rs_name:?} has timed out progressing."))
        } else {
            ("True", "ReplicaSetUpdated", format!("ReplicaSet {rs_name:?} is progressing."))
        };
        let mut status = serde_json::Map::new();
        status.insert("observedGeneration".into(), d.pointer("/metadata/generation").cloned().unwrap_or(json!(1)));
        for (k, v) in [
            ("replicas", replicas),
            ("updatedReplicas", r.updated),
            ("readyReplicas", available),
            ("availableReplicas", available),
            ("unavailableReplicas", (desired - available).max(0)),
        ] {
            // DeploymentStatus fields are omitempty: zero counts are absent.
            if v != 0 {
                status.insert(k.into(), json!(v));
            }
        }
        status.insert(
            "conditions".into(),
            json!([
                condition(old_status, "Available", av_status, av_reason, av_msg, &t),
                condition(old_status, "Progressing", pr_status, pr_reason, pr_msg, &t),
            ]),
        );
        let rev = revision.to_string();
        if s(&d, "/metadata/annotations/deployment.kubernetes.io~1revision") != rev {
            let mut n = d.clone();
            n["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!(rev);
            let _ = state.replace(&drt, Some(&ns), &name, n, &WriteCtx::new(CONTROLLER));
        }
        let Some(current) = state.lookup(&drt, Some(&ns), &name).cloned() else { continue };
        let mut n = current;
        n["status"] = Value::Object(status);
        let ctx = WriteCtx { subresource: "status".into(), ..WriteCtx::new(CONTROLLER) };
        let _ = state.replace(&drt, Some(&ns), &name, n, &ctx);
    }
}
