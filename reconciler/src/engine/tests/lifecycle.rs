//! Drift and self-heal, the prune guard, prune order, `sync.prune: false`, suspend and dry run,
//! on the same harness (manual clock, real git and ledger, sim instances).

use super::*;
use keelson_core::event::BlockReason;

/// A little more than the drift interval and its jitter.
const PAST_DRIFT: Duration = Duration::from_secs(331);

fn workload(app: &str, team: &str) -> ResourceId {
    ResourceId::namespaced("prod", keelson_provider_sim::API_VERSION, "Workload", team, app)
}

async fn live_replicas(h: &Harness, id: &ResourceId) -> serde_json::Value {
    let live = h.sims["prod"].observe(std::slice::from_ref(id)).await;
    let observed = live[0].1.clone().unwrap().expect("the resource exists");
    observed.spec["replicas"].clone()
}

fn actions(history: &[(String, Event)]) -> Vec<&'static str> {
    history.iter().map(|(_, e)| e.action()).collect()
}

async fn healthy_template(faults: &[(&'static str, Faults)], tweak: impl FnOnce(&mut EngineSettings)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("state");
    crate::init::init_repo(&repo).unwrap();
    let ledger = Ledger::open(dir.path().join("keelson.db").to_str().unwrap()).await.unwrap();
    let mut h = Harness::tuned(dir, repo, ledger, faults, tweak).await;
    h.start().await;
    h.until_all_healthy(5).await;
    h
}

fn add_to_sync(repo: &Path, app: &str, lines: &str) {
    edit(&repo.join(format!("apps/{app}/deploy.yaml")), "  sync:\n", &format!("  sync:\n{lines}"));
}

#[tokio::test]
async fn drift_is_found_on_the_interval_recorded_with_its_fields_and_healed() {
    let mut h = healthy_template(&[], |_| {}).await;
    let before = h.history("storefront").await.len();
    h.tick_after(PAST_DRIFT).await;
    assert_eq!(h.history("storefront").await.len(), before, "no drift, nothing recorded");

    let id = workload("storefront", "web");
    h.sims["prod"].drift(&id, "/replicas", serde_json::json!(7)).await.unwrap();
    let applies = h.applies("prod");
    h.tick_after(Duration::from_secs(10)).await;
    assert_eq!(h.phase("storefront"), Phase::Healthy, "not looked at before its interval");
    h.tick_after(PAST_DRIFT).await;
    let history = h.history("storefront").await;
    let drift = history
        .iter()
        .find_map(|(to, e)| match e {
            Event::Drift(d) => Some((to.clone(), d.clone())),
            _ => None,
        })
        .expect("a drift entry");
    assert_eq!(drift.0, "Drifted");
    assert_eq!(drift.1.resources.len(), 1, "{:?}", drift.1);
    assert_eq!(drift.1.resources[0].resource, id.to_string());
    assert_eq!(drift.1.resources[0].fields, ["/spec/replicas"]);
    assert!(drift.1.self_heal, "self-heal is on unless sync.selfHeal is false");
    let Some(Event::Plan(heal)) = history.iter().map(|(_, e)| e).rfind(|e| e.action() == "plan") else { panic!() };
    assert_eq!(heal.cause.as_deref(), Some("Drifted"), "{heal:?}");
    assert!(h.applies("prod") > applies, "healed by applying again");
    assert_eq!(live_replicas(&h, &id).await, serde_json::json!(3), "what git wants is live again");
    h.until_all_healthy(5).await;
    let tail: Vec<&str> = actions(&h.history("storefront").await)[before..].to_vec();
    assert_eq!(tail, ["drift", "plan", "intent", "applied", "healthy"]);
    assert!(h.app("storefront").drift.is_empty(), "Healthy clears the drift shown");
    let report = h.ledger.verify(&[]).await.unwrap();
    assert!(report.ok, "{report:?}");
}

#[tokio::test]
async fn ignored_fields_never_count_as_drift_per_app_and_per_kind() {
    let mut h = healthy_template(&[], |s| {
        s.ignore_by_kind.insert("Route".into(), vec!["/spec/expose".into()]);
    })
    .await;
    h.commit("Let the autoscaler own storefront's replicas", |repo| {
        add_to_sync(repo, "storefront", "    ignoreDifferences: [\"/spec/replicas\"]\n")
    })
    .await;
    h.until_all_healthy(5).await;
    let before = h.history("storefront").await.len();
    let id = workload("storefront", "web");
    h.sims["prod"].drift(&id, "/replicas", serde_json::json!(9)).await.unwrap();
    let route = ResourceId::namespaced("prod", keelson_provider_sim::API_VERSION, "Route", "web", "storefront");
    h.sims["prod"].drift(&route, "/expose/port", serde_json::json!(9090)).await.unwrap();
    h.tick_after(PAST_DRIFT).await;
    h.tick_after(PAST_DRIFT).await;
    assert_eq!(h.history("storefront").await.len(), before, "ignored fields are not drift");
    assert_eq!(live_replicas(&h, &id).await, serde_json::json!(9), "and are left to their owner");

    h.sims["prod"].drift(&id, "/image", serde_json::json!("hand-edited:1")).await.unwrap();
    h.tick_after(PAST_DRIFT).await;
    let history = h.history("storefront").await;
    let Some(Event::Drift(drift)) = history.iter().map(|(_, e)| e).find(|e| e.action() == "drift") else {
        panic!("{history:?}")
    };
    assert_eq!(drift.resources.len(), 1, "only the workload, and only its image: {drift:?}");
    assert_eq!(drift.resources[0].fields, ["/spec/image"]);
}

#[tokio::test]
async fn with_self_heal_off_drift_is_recorded_once_and_left_until_it_goes_away() {
    let mut h = healthy_template(&[], |_| {}).await;
    h.commit("No self-heal for order-worker", |repo| add_to_sync(repo, "order-worker", "    selfHeal: false\n")).await;
    h.until_all_healthy(5).await;
    let id = workload("order-worker", "payments");
    let original = live_replicas(&h, &id).await;
    h.sims["prod"].drift(&id, "/replicas", serde_json::json!(5)).await.unwrap();
    let applies = h.applies("prod");
    h.tick_after(PAST_DRIFT).await;
    let drifted = h.app("order-worker");
    assert_eq!((drifted.phase, drifted.reason.as_str()), (Phase::Drifted, "Drifted"));
    assert!(drifted.message.contains("sync.selfHeal is false"), "{}", drifted.message);
    assert!(!drifted.in_sync);
    assert_eq!(drifted.drift[0].changes[0].old, Some(serde_json::json!(5)), "live values are shown");
    h.tick_after(PAST_DRIFT).await;
    h.tick_after(PAST_DRIFT).await;
    assert_eq!(h.applies("prod"), applies, "nothing is healed");
    let drifts = h.history("order-worker").await.iter().filter(|(_, e)| e.action() == "drift").count();
    assert_eq!(drifts, 1, "recorded once, not on every look");
    assert_eq!(live_replicas(&h, &id).await, serde_json::json!(5));

    // Someone puts it back by hand: Healthy again.
    h.sims["prod"].drift(&id, "/replicas", original).await.unwrap();
    h.tick_after(PAST_DRIFT).await;
    assert_eq!(h.phase("order-worker"), Phase::Healthy);
    assert!(h.app("order-worker").drift.is_empty());
}

#[tokio::test]
async fn a_suspended_app_is_observed_and_reported_but_never_healed() {
    let mut h = healthy_template(&[], |_| {}).await;
    h.commit("Suspend storefront", |repo| {
        edit(&repo.join("apps/storefront/deploy.yaml"), "  replicas: 3\n", "  replicas: 3\n  suspend: true\n")
    })
    .await;
    assert_eq!(h.phase("storefront"), Phase::Suspended);
    let id = workload("storefront", "web");
    h.sims["prod"].drift(&id, "/replicas", serde_json::json!(1)).await.unwrap();
    let applies = h.applies("prod");
    h.tick_after(PAST_DRIFT).await;
    let suspended = h.app("storefront");
    assert_eq!(suspended.phase, Phase::Suspended);
    assert_eq!(suspended.drift.len(), 1, "the drift is reported: {suspended:?}");
    assert_eq!(h.applies("prod"), applies, "and left alone");
    assert!(!h.history("storefront").await.iter().any(|(_, e)| e.action() == "drift"), "nothing recorded");
}

/// Removes the template apps named, in one commit (with `message`).
async fn remove(h: &mut Harness, apps: &[&str], message: &str) {
    let apps: Vec<String> = apps.iter().map(|a| (*a).to_owned()).collect();
    h.commit(message, move |repo| {
        for app in &apps {
            std::fs::remove_dir_all(repo.join("apps").join(app)).unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn the_prune_guard_lets_a_quarter_through_and_blocks_three_quarters_until_the_trailer() {
    let mut h = healthy_template(&[], |_| {}).await;
    remove(&mut h, &["llm-inference"], "Retire llm-inference").await;
    assert!(!h.fleet.read().unwrap().apps.contains_key("llm-inference"), "1 of 4 (25%) is pruned");

    // Three of four is 75%.
    let mut h = healthy_template(&[], |_| {}).await;
    remove(&mut h, &["storefront", "order-worker", "postgres"], "Remove nearly everything").await;
    for app in ["storefront", "order-worker", "postgres"] {
        let held = h.app(app);
        assert_eq!((held.phase, held.reason.as_str()), (Phase::Blocked, BlockReason::PruneGuard.as_str()), "{app}");
        assert!(held.message.contains("3 of 4 apps (75%, more than the 50% allowed)"), "{}", held.message);
        assert!(held.message.contains("Keelson-Allow-Prune: true"), "{}", held.message);
        assert!(!held.inventory.is_empty(), "nothing was deleted");
    }
    assert_eq!(h.counts["prod"].deletes.load(Ordering::SeqCst), 0);
    h.tick_after(Duration::from_secs(1)).await;
    let blocks = h.history("postgres").await.iter().filter(|(_, e)| e.action() == "block").count();
    assert_eq!(blocks, 1, "held once per commit");

    h.commit("Yes, remove them\n\nKeelson-Allow-Prune: true", |_| {}).await;
    let apps: Vec<String> = h.fleet.read().unwrap().apps.keys().cloned().collect();
    assert_eq!(apps, ["llm-inference"]);
    // Dependents before their dependency: postgres goes last.
    let deleted_at = |app: &'static str| {
        let ledger = h.ledger.clone();
        async move {
            let q = crate::ledger::AuditQuery { app: Some(app.into()), limit: Some(1000), ..Default::default() };
            ledger.entries(&q).await.unwrap().iter().rfind(|e| e.action == "deleted").map(|e| e.seq).unwrap()
        }
    };
    let postgres = deleted_at("postgres").await;
    assert!(deleted_at("storefront").await < postgres && deleted_at("order-worker").await < postgres);
}

#[tokio::test]
async fn the_prune_guard_blocks_every_app_going_and_the_share_is_configurable() {
    let mut h = healthy_template(&[], |_| {}).await;
    remove(&mut h, &["storefront", "order-worker", "postgres", "llm-inference"], "Empty").await;
    assert_eq!(h.fleet.read().unwrap().apps.len(), 4, "nothing pruned");
    let held = h.app("llm-inference");
    assert_eq!(held.reason, "PruneGuard");
    assert!(held.message.contains("all 4 apps"), "{}", held.message);
    h.commit("Really empty\n\nKeelson-Allow-Prune: true", |_| {}).await;
    assert!(h.fleet.read().unwrap().apps.is_empty(), "the trailer lets it through");

    // 2 of 4 is 50%: through at the default, blocked at 49 %.
    let mut h = healthy_template(&[], |s| s.prune_max_percent = 49).await;
    remove(&mut h, &["storefront", "llm-inference"], "Half").await;
    assert_eq!(h.app("storefront").reason, "PruneGuard");
    let mut h = healthy_template(&[], |_| {}).await;
    remove(&mut h, &["storefront", "llm-inference"], "Half").await;
    assert_eq!(h.fleet.read().unwrap().apps.len(), 2);
}

#[tokio::test]
async fn an_app_that_says_prune_false_leaves_git_with_its_resources_kept() {
    let mut h = healthy_template(&[], |_| {}).await;
    let id = workload("postgres", "platform");
    // The template's postgres says `sync.prune: false`; its dependents go first.
    remove(&mut h, &["postgres", "storefront"], "Move postgres out of Keelson").await;
    assert!(!h.fleet.read().unwrap().apps.contains_key("postgres"), "the fleet forgets it");
    assert_eq!(h.counts["prod"].deletes.load(Ordering::SeqCst), 2, "only storefront's resources");
    assert!(h.sims["prod"].observe(std::slice::from_ref(&id)).await[0].1.as_ref().unwrap().is_some(), "kept");
    let history = h.history("postgres").await;
    let Some(Event::Plan(plan)) = history.iter().map(|(_, e)| e).rfind(|e| e.action() == "plan") else { panic!() };
    assert!(plan.message.contains("kept (sync.prune: false)"), "{}", plan.message);
}

#[tokio::test]
async fn a_dry_run_records_plans_and_never_applies_or_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("state");
    crate::init::init_repo(&repo).unwrap();
    let ledger = Ledger::open(dir.path().join("keelson.db").to_str().unwrap()).await.unwrap();
    let mut h = Harness::tuned(dir, repo, ledger, &[], |s| s.dry_run = true).await;
    for c in h.counts.values() {
        c.refuse.store(true, Ordering::SeqCst);
    }
    h.start().await;
    h.tick_after(Duration::from_secs(3600)).await;
    for app in ["postgres", "storefront", "order-worker", "llm-inference"] {
        let s = h.app(app);
        assert_eq!((s.phase, s.reason.as_str()), (Phase::Planned, "DryRun"), "{app}: {s:?}");
        let history = h.history(app).await;
        assert_eq!(actions(&history), ["plan"], "{app}: planned once");
        let Event::Plan(plan) = &history[0].1 else { panic!() };
        assert!(plan.dry_run && plan.message.starts_with("dry run: would roll out"), "{plan:?}");
    }
    h.commit("Scale storefront", |repo| edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 4"))
        .await;
    assert_eq!(actions(&h.history("storefront").await), ["plan", "plan"]);
    remove(&mut h, &["order-worker"], "Retire order-worker").await;
    let history = h.history("order-worker").await;
    let Some(Event::Plan(prune)) = history.last().map(|(_, e)| e) else { panic!() };
    assert_eq!((prune.op, prune.dry_run), (keelson_core::event::Op::Delete, true));
    assert_eq!(h.applies("prod") + h.applies("lab"), 0, "apply never called");
    assert_eq!(h.counts["prod"].deletes.load(Ordering::SeqCst), 0, "delete never called");
}

/// 45 more apps beside the template's four: a fleet of 49, where 24 is 48.98 % and 25 is 51.02 %.
fn add_workers(repo: &Path) {
    for i in 0..45 {
        let dir = repo.join(format!("apps/worker-{i:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = format!(
            "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: worker-{i:02}\n  team: batch\nspec:\n  \
             image: ghcr.io/acme/worker:1.0.0\n  replicas: 1\n  resources:\n    cpu: 100m\n    memory: 64Mi\n  \
             placement:\n    cluster: prod-east\n"
        );
        std::fs::write(dir.join("deploy.yaml"), yaml).unwrap();
    }
}

async fn fleet_of_49() -> Harness {
    let mut h = healthy_template(&[], |_| {}).await;
    h.commit("45 workers", add_workers).await;
    h.until_all_healthy(5).await;
    assert_eq!(h.fleet.read().unwrap().apps.len(), 49);
    h
}

fn workers(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("worker-{i:02}")).collect()
}

#[tokio::test]
async fn the_prune_guard_at_49_and_51_percent_of_the_fleet_with_and_without_the_trailer() {
    // 24 of 49 (48.98 %) goes through.
    let mut h = fleet_of_49().await;
    let gone = workers(24);
    let names: Vec<&str> = gone.iter().map(String::as_str).collect();
    remove(&mut h, &names, "Retire 24 workers").await;
    assert_eq!(h.fleet.read().unwrap().apps.len(), 25, "49 % is pruned");

    // 25 of 49 (51.02 %) is held until a commit carries the trailer.
    let mut h = fleet_of_49().await;
    let gone = workers(25);
    let names: Vec<&str> = gone.iter().map(String::as_str).collect();
    remove(&mut h, &names, "Retire 25 workers").await;
    assert_eq!(h.fleet.read().unwrap().apps.len(), 49, "51 % is held");
    let held = h.app("worker-00");
    assert_eq!(held.reason, "PruneGuard");
    assert!(held.message.contains("25 of 49 apps (51%, more than the 50% allowed)"), "{}", held.message);
    assert_eq!(h.counts["prod"].deletes.load(Ordering::SeqCst), 0);
    h.commit("Retire them anyway\n\nKeelson-Allow-Prune: true", |_| {}).await;
    assert_eq!(h.fleet.read().unwrap().apps.len(), 24, "the trailer lets 51 % through");
}
