//! One plan with every kind of app in it (added, changed, removed with prune on and off, invalid,
//! denied, frozen), checked field by field and as committed snapshots of its text and Markdown.
//!
//! The snapshots are `src/plan/snapshots/plan.{txt,md}`. After a deliberate change of the output,
//! review the diff the failing test prints and re-run with `KEELSON_BLESS=1` to accept it.

use std::path::Path;

use super::*;

/// Messages with everything that breaks Markdown: backticks, pipes, `<details>`, HTML, a newline.
const HOSTILE: &str =
    "PCI `workloads` | may not run on <b>spot</b> capacity </details><details><summary>x</summary> *now*\n# nor here";

fn write(root: &Path, path: &str, text: &str) {
    let file = root.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
}

fn git(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        // A fixed identity and dates (the environment's win over `-c`): the commit ids shown in
        // the plan's header are the same on every machine and under scripts/test.
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_AUTHOR_DATE", "2026-12-01T12:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-12-01T12:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// An app manifest: `extra` goes under `spec`, after placement.
fn app(name: &str, team: &str, replicas: u32, extra: &str) -> String {
    format!(
        "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\n  team: {team}\nspec:\n  image: registry.example.com/{name}:1.0\n  replicas: {replicas}\n  placement:\n    cluster: prod\n{extra}"
    )
}

fn policy(rule_message: &str) -> String {
    format!(
        "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata:\n  name: guardrails\nspec:\n  rules:\n    - name: pci-off-spot\n      match:\n        compliance: [pci]\n      deny:\n        placement.nodePool: present\n      message: {}\n  quotas:\n    - team: ml\n      gpus: 3\n  freeze:\n    - cron: \"0 * * * *\"\n      duration: 2h\n      timeZone: UTC\n      reason: \"release `freeze` | <i>ops</i>\"\n",
        serde_json::to_string(rule_message).unwrap()
    )
}

const PRUNE: &str = "  sync:\n    prune: true\n";
const EXPOSE: &str = "  expose:\n    port: 8080\n";

/// base: web, trainer, legacy (prune on), batch (prune off), api, db.
/// head: web goes to spot (denied by a rule), trainer doubles its GPUs past the team quota and
/// stops exposing a port with prune off, legacy and batch are removed, api is invalid, search is
/// added; a freeze window is open.
fn fixture() -> (tempfile::TempDir, GitRepo) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    let web = |extra: &str| {
        app("web", "shop", 2, &format!("{extra}{PRUNE}"))
            .replace("  team: shop\n", "  team: shop\n  compliance: [pci]\n")
    };
    write(root, "apps/web/deploy.yaml", &web(""));
    let trainer = |gpus: u32, extra: &str| {
        app("trainer", "ml", 2, &format!("  resources:\n    gpu:\n      count: {gpus}\n{extra}"))
    };
    write(root, "apps/trainer/deploy.yaml", &trainer(1, EXPOSE));
    write(root, "apps/legacy/deploy.yaml", &app("legacy", "shop", 1, &format!("{EXPOSE}{PRUNE}")));
    write(root, "apps/batch/deploy.yaml", &app("batch", "data", 1, "  sync:\n    prune: false\n"));
    write(root, "apps/api/deploy.yaml", &app("api", "shop", 2, ""));
    write(root, "apps/db/deploy.yaml", &app("db", "data", 1, ""));
    write(root, "policies/guardrails.yaml", &policy("spot is fine"));
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "base"]);
    git(root, &["checkout", "-qb", "change"]);
    write(
        root,
        "apps/web/deploy.yaml",
        &web("    nodePool:\n      serverClass: gp.vs1.large-iad\n      maxBid: \"0.08\"\n"),
    );
    write(root, "apps/trainer/deploy.yaml", &trainer(2, ""));
    std::fs::remove_dir_all(root.join("apps/legacy")).unwrap();
    std::fs::remove_dir_all(root.join("apps/batch")).unwrap();
    write(root, "apps/api/deploy.yaml", &app("api", "shop", 2, "").replace("replicas: 2", "replicas: two"));
    write(root, "apps/search/deploy.yaml", &app("search", "data", 1, EXPOSE));
    write(root, "policies/guardrails.yaml", &policy(HOSTILE));
    git(root, &["add", "-A"]);
    git(root, &["commit", "-qm", "change"]);
    let repo = GitRepo::open(root).unwrap();
    (dir, repo)
}

/// Inside the freeze window (`0 * * * *` for 2h is always open), at a fixed instant.
fn now() -> time::OffsetDateTime {
    time::macros::datetime!(2026-12-04 10:30 UTC)
}

async fn plan() -> (tempfile::TempDir, RevisionPlan) {
    let (dir, repo) = fixture();
    let renderers = crate::providers::Renderers::from_config(&Default::default(), &Default::default()).unwrap();
    let plan = plan_revisions(&repo, "main", "change", "", &renderers, now()).await.unwrap();
    (dir, plan)
}

fn change<'p>(plan: &'p RevisionPlan, app: &str) -> &'p AppChange {
    plan.changes.iter().find(|c| c.app == app).unwrap_or_else(|| panic!("no change for {app}"))
}

#[tokio::test]
async fn every_app_is_counted_once_and_every_deny_is_a_finding() {
    let (_dir, plan) = plan().await;
    let s = plan.summary;
    assert_eq!((s.added, s.changed, s.removed, s.unchanged, s.invalid), (1, 2, 2, 1, 1), "{s:?}");
    assert_eq!(s.apps(), 7);
    assert_eq!((s.denied, s.frozen), (2, 1), "web and trainer denied, search only frozen: {s:?}");
    assert!(plan.has_findings());
    assert_eq!(change(&plan, "search").result, AppResult::Frozen);
    assert_eq!(change(&plan, "web").result, AppResult::Denied);
    assert_eq!(change(&plan, "api").result, AppResult::Invalid);
    assert!(change(&plan, "api").problems.iter().any(|d| d.line == 8), "{:?}", change(&plan, "api").problems);
}

#[tokio::test]
async fn removals_delete_what_they_rendered_and_prune_off_keeps_stale_resources_of_a_live_app() {
    let (_dir, plan) = plan().await;
    let legacy = change(&plan, "legacy");
    let deleted: Vec<&str> = legacy.deletes().map(|r| r.resource.as_str()).collect();
    assert_eq!(deleted, ["sim:Workload/shop/legacy", "sim:Route/shop/legacy"]);
    // A removed app that says `sync.prune: false` keeps its resources (the daemon forgets it).
    assert_eq!(change(&plan, "batch").deletes().count(), 0);
    assert!(change(&plan, "batch").resources.iter().all(|r| r.kept));
    let trainer = change(&plan, "trainer");
    let route = trainer.resources.iter().find(|r| r.resource == "sim:Route/ml/trainer").unwrap();
    assert!(route.kept, "prune off keeps the route the app stopped rendering");
    assert_eq!(plan.summary.deleted_resources, 2);
    let search = change(&plan, "search");
    assert!(search.resources.iter().all(|r| r.change == ResourceChangeKind::Create && r.object.is_some()));
}

#[tokio::test]
async fn one_freeze_notice_and_verdicts_point_at_the_rule_and_the_field() {
    let (_dir, plan) = plan().await;
    let freeze = plan.freeze.as_ref().unwrap();
    assert_eq!(freeze.windows.len(), 1);
    assert_eq!(freeze.apps, ["search", "trainer", "web"]);
    assert!(plan.changes.iter().all(|c| c.verdicts.iter().all(|v| v.verdict.kind != VerdictKind::Freeze)));
    let web = change(&plan, "web");
    let deny = &web.verdicts[0];
    assert_eq!(deny.rule_at.to_string(), "policies/guardrails.yaml:7:7");
    assert_eq!(deny.fields_at[0].to_string(), "apps/web/deploy.yaml:12:5", "{:?}", deny.fields_at);
    assert_eq!(deny.fields_at[0].pointer, "/spec/placement/nodePool");
    let quota = &change(&plan, "trainer").verdicts[0];
    assert_eq!(quota.verdict.kind, VerdictKind::Quota);
    assert_eq!(quota.fields_at[0].pointer, "/spec/resources/gpu/count");
    assert_eq!(quota.fields_at[0].to_string(), "apps/trainer/deploy.yaml:13:7");
}

#[tokio::test]
async fn risks_name_gpus_capacity_prune_share_and_the_freeze() {
    let (_dir, plan) = plan().await;
    let risks: Vec<(RiskKind, Option<&str>)> = plan.risks.iter().map(|r| (r.kind, r.app.as_deref())).collect();
    assert!(risks.contains(&(RiskKind::GpuCount, Some("trainer"))), "{risks:?}");
    assert!(risks.contains(&(RiskKind::Capacity, Some("web"))), "{risks:?}");
    assert!(risks.contains(&(RiskKind::PruneShare, None)), "{risks:?}");
    assert!(risks.contains(&(RiskKind::Freeze, None)), "{risks:?}");
    let gpu = plan.risks.iter().find(|r| r.kind == RiskKind::GpuCount).unwrap();
    assert!(gpu.message.starts_with("GPUs 2 → 4"), "{}", gpu.message);
    assert_eq!(plan.cost.source, None);
    assert!(plan.cost.message.starts_with("no price source"));
}

#[test]
fn a_strategy_change_is_a_risk() {
    let base: keelson_manifest::App = serde_json::from_value(serde_json::json!({
        "apiVersion": "keelson.dev/v1alpha1", "kind": "App", "metadata": {"name": "web"},
        "spec": {"image": "i", "replicas": 1, "placement": {"cluster": "prod"}}
    }))
    .unwrap();
    let mut head = base.clone();
    head.spec.strategy = serde_json::from_value(serde_json::json!({"type": "canary", "steps": [50, 100]})).unwrap();
    let risks = app_risks("web", Some(&base), Some(&head));
    assert_eq!(risks.len(), 1, "{risks:?}");
    assert_eq!(risks[0].message, "strategy direct → canary");
}

#[tokio::test]
async fn markdown_never_lets_a_message_out_of_its_cell() {
    let (_dir, plan) = plan().await;
    let md = render_markdown(&plan);
    assert!(!md.contains("<b>") && !md.contains("<i>") && !md.contains("`workloads`"), "{md}");
    // Every table row has as many cells as its header.
    for block in md.split("\n\n").filter(|b| b.starts_with('|')) {
        let cells = |l: &str| l.matches('|').count() - l.matches("\\|").count();
        let header = cells(block.lines().next().unwrap());
        assert!(block.lines().all(|l| cells(l) == header), "{block}");
    }
    assert_eq!(md.matches("<details>").count(), md.matches("</details>").count(), "{md}");
    assert_eq!(md.matches(":snowflake: **Freeze**").count(), 1, "one freeze notice: {md}");
    let first = md.lines().find(|l| l.starts_with("> ")).unwrap();
    assert!(first.contains(":rotating_light:"), "a deletion is the first notice: {first}");
}

/// Compares `actual` with the committed snapshot `name` (or writes it under `KEELSON_BLESS=1`).
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/plan/snapshots").join(name);
    if std::env::var_os("KEELSON_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let diff =
            similar::TextDiff::from_lines(&expected, actual).unified_diff().header("snapshot", "now").to_string();
        panic!(
            "{} differs from this output; review, then re-run with KEELSON_BLESS=1 to accept:\n{diff}",
            path.display()
        );
    }
}

#[tokio::test]
async fn text_and_markdown_match_their_snapshots() {
    let (_dir, plan) = plan().await;
    snapshot("plan.txt", &render_text(&plan));
    let md = render_markdown(&plan);
    snapshot("plan.md", &md);
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/pr-review.md");
    let doc = std::fs::read_to_string(&doc).unwrap();
    assert!(
        doc.contains(md.trim_end()),
        "the sample comment of docs/pr-review.md is not this output; paste src/plan/snapshots/plan.md into it"
    );
}
