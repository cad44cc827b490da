use std::collections::HashMap;

use rstest::rstest;
use serde_json::json;

use super::*;
use crate::testing::app;

/// An in-memory repository that counts how often each blob is read.
#[derive(Default)]
struct Repo {
    files: Vec<RepoFile>,
    blobs: HashMap<String, Vec<u8>>,
    reads: Vec<String>,
    version: u32,
}

impl Repo {
    fn put(&mut self, path: &str, content: impl Into<Vec<u8>>) -> &mut Self {
        let content = content.into();
        self.version += 1;
        // Blob ids only need to change with content; the version keeps them unique per write.
        let blob = format!("{:08x}-{}", self.version, content.len());
        self.files.retain(|f| f.path != path);
        self.files.push(RepoFile::new(path, blob.clone()));
        self.blobs.insert(blob, content);
        self
    }

    fn app(&mut self, builder: crate::testing::AppBuilder) -> &mut Self {
        let name = builder.value()["metadata"]["name"].as_str().unwrap().to_string();
        self.put(&format!("apps/{name}/deploy.yaml"), builder.yaml())
    }

    fn remove(&mut self, path: &str) -> &mut Self {
        self.files.retain(|f| f.path != path);
        self
    }

    fn load(&mut self, loader: &mut Loader) -> LoadOutcome {
        self.reads.clear();
        let blobs = &self.blobs;
        let reads = &mut self.reads;
        let mut read = |f: &RepoFile| {
            reads.push(f.path.clone());
            blobs.get(&f.blob_id).cloned().ok_or_else(|| std::io::Error::other("no such blob"))
        };
        loader.load(&self.files, &mut read)
    }
}

fn render(outcome: &LoadOutcome) -> String {
    outcome.diagnostics.iter().map(|d| format!("  {d} [{}]", d.rule)).collect::<Vec<_>>().join("\n")
}

#[test]
fn loads_apps_and_policies_and_ignores_other_files() {
    let mut repo = Repo::default();
    repo.app(app("web").depends_on(&["db"]))
        .app(app("db").team("data"))
        .put("apps/web/README.md", "# web")
        .put("README.md", "# state")
        .put("policies/guardrails.yaml", "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: a}\nspec: {rego: [policies/extra.rego]}\n---\napiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: b}\nspec: {quotas: [{team: data, gpus: 2}]}\n")
        .put("policies/extra.rego", "package keelson")
        .put("docs/notes.yaml", "not: [valid");
    let outcome = repo.load(&mut Loader::new());
    assert!(!outcome.has_errors(), "{}", render(&outcome));
    let desired = &outcome.desired;
    assert_eq!(desired.apps.keys().collect::<Vec<_>>(), ["db", "web"]);
    assert_eq!(desired.apps["web"].app, app("web").depends_on(&["db"]).build());
    assert_eq!(desired.apps["web"].file, "apps/web/deploy.yaml");
    assert!(desired.apps["web"].digest.starts_with("sha256:"));
    let names: Vec<&str> = desired.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(desired.policies[1].policy().unwrap().spec.quotas[0].gpus, Some(2));
    assert!(desired.invalid_apps.is_empty());
    let mut read = repo.reads.clone();
    read.sort();
    assert_eq!(read, ["apps/db/deploy.yaml", "apps/web/deploy.yaml", "policies/guardrails.yaml"]);
}

#[test]
fn second_load_reads_only_the_changed_file() {
    let mut repo = Repo::default();
    for name in ["a", "b", "c", "d"] {
        repo.app(app(name));
    }
    repo.put("policies/p.yaml", "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec: {}\n");
    let mut loader = Loader::new();
    let first = repo.load(&mut loader);
    assert_eq!(repo.reads.len(), 5);
    assert_eq!(loader.cached_files(), 5);

    let unchanged = repo.load(&mut loader);
    assert!(repo.reads.is_empty(), "{:?}", repo.reads);
    assert_eq!(unchanged.desired, first.desired);

    repo.app(app("c").replicas(7));
    let second = repo.load(&mut loader);
    assert_eq!(repo.reads, ["apps/c/deploy.yaml"]);
    assert_eq!(second.desired.apps["c"].app.spec.replicas, 7);
    assert_ne!(second.desired.apps["c"].digest, first.desired.apps["c"].digest);
    assert_eq!(second.desired.apps["a"].digest, first.desired.apps["a"].digest);

    // A removed app drops out of the cache.
    repo.remove("apps/d/deploy.yaml");
    let third = repo.load(&mut loader);
    assert!(repo.reads.is_empty());
    assert!(!third.desired.apps.contains_key("d"));
    assert_eq!(loader.cached_files(), 4);
}

#[test]
fn invalid_apps_are_held_not_loaded() {
    let mut repo = Repo::default();
    repo.app(app("web"))
        .put("apps/api/deploy.yaml", "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: api}\nspec: {image: r/api:1, replicas: lots, placement: {cluster: c}}\n")
        .put("apps/worker/manifests/job.yaml", "kind: Job\n");
    let mut loader = Loader::new();
    let outcome = repo.load(&mut loader);
    assert_eq!(outcome.desired.apps.keys().collect::<Vec<_>>(), ["web"]);
    assert_eq!(outcome.desired.invalid_apps.iter().collect::<Vec<_>>(), ["api", "worker"]);
    let rules: Vec<(&str, &str, usize, usize)> =
        outcome.diagnostics.iter().map(|d| (d.file.as_str(), d.rule.as_str(), d.line, d.col)).collect();
    assert_eq!(
        rules,
        [
            ("apps/api/deploy.yaml", "schema.type", 4, 34),
            ("apps/worker/manifests/job.yaml", "layout.missing-deploy", 1, 1),
        ]
    );
    // Errors survive the cache: a second load reports the same thing without reading.
    let again = repo.load(&mut loader);
    assert!(repo.reads.is_empty());
    assert_eq!(again.diagnostics, outcome.diagnostics);
}

#[test]
fn unreadable_files_make_their_app_invalid_and_are_retried() {
    let mut repo = Repo::default();
    repo.app(app("web"));
    repo.files.push(RepoFile::new("apps/api/deploy.yaml", "missing-blob"));
    let mut loader = Loader::new();
    let outcome = repo.load(&mut loader);
    assert!(outcome.desired.invalid_apps.contains("api"));
    assert_eq!(outcome.diagnostics[0].rule, "io.read");
    repo.load(&mut loader);
    assert_eq!(repo.reads, ["apps/api/deploy.yaml"]);
}

#[test]
fn a_renamed_blob_reports_its_new_path() {
    let mut repo = Repo::default();
    let broken = "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: r/web:1, placement: {cluster: c}, replicas: -1}\n";
    repo.put("apps/web/deploy.yaml", broken);
    let mut loader = Loader::new();
    repo.load(&mut loader);
    let blob = repo.files[0].blob_id.clone();
    repo.files = vec![RepoFile::new("apps/web2/deploy.yaml", blob)];
    let outcome = repo.load(&mut loader);
    assert!(repo.reads.is_empty());
    assert!(outcome.diagnostics.iter().all(|d| d.file == "apps/web2/deploy.yaml"), "{}", render(&outcome));
    assert!(outcome.diagnostics.iter().any(|d| d.rule == "app.name-mismatch"));
}

fn rules_of(outcome: &LoadOutcome) -> Vec<(String, String, usize, usize)> {
    outcome.diagnostics.iter().map(|d| (d.file.clone(), d.rule.clone(), d.line, d.col)).collect()
}

#[rstest]
#[case::unknown_dependency(
    vec![app("web").depends_on(&["postgress"]), app("postgres")],
    "apps/web/deploy.yaml", "app.unknown-dependency", 10, 7, &["web"]
)]
#[case::self_dependency(
    vec![app("web").depends_on(&["web"])],
    "apps/web/deploy.yaml", "app.dependency-cycle", 10, 7, &["web"]
)]
#[case::two_cycle(
    vec![app("a").depends_on(&["b"]), app("b").depends_on(&["a"]), app("c").depends_on(&["a"])],
    "apps/b/deploy.yaml", "app.dependency-cycle", 10, 7, &["a", "b"]
)]
#[case::manifests_missing(
    vec![app("web").manifests("k8s")],
    "apps/web/deploy.yaml", "app.manifests-path", 10, 11, &["web"]
)]
fn repository_checks(
    #[case] apps: Vec<crate::testing::AppBuilder>,
    #[case] file: &str,
    #[case] rule: &str,
    #[case] line: usize,
    #[case] col: usize,
    #[case] invalid: &[&str],
) {
    let mut repo = Repo::default();
    for a in apps {
        repo.app(a);
    }
    let outcome = repo.load(&mut Loader::new());
    let found = rules_of(&outcome);
    assert!(found.contains(&(file.to_string(), rule.to_string(), line, col)), "{}", render(&outcome));
    assert_eq!(outcome.desired.invalid_apps.iter().map(String::as_str).collect::<Vec<_>>(), invalid);
}

#[test]
fn cycles_are_reported_with_their_path_in_every_file() {
    let mut repo = Repo::default();
    repo.app(app("a").depends_on(&["b"]))
        .app(app("b").depends_on(&["c"]))
        .app(app("c").depends_on(&["x", "a"]))
        .app(app("x"));
    let outcome = repo.load(&mut Loader::new());
    let cycles: Vec<(&str, &str, &str)> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.rule == "app.dependency-cycle")
        .map(|d| (d.file.as_str(), d.pointer.as_str(), d.message.as_str()))
        .collect();
    assert_eq!(
        cycles,
        [
            ("apps/a/deploy.yaml", "/spec/dependsOn/0", "dependency cycle: a → b → c → a"),
            ("apps/b/deploy.yaml", "/spec/dependsOn/0", "dependency cycle: b → c → a → b"),
            ("apps/c/deploy.yaml", "/spec/dependsOn/1", "dependency cycle: c → a → b → c"),
        ]
    );
    assert_eq!(outcome.desired.apps.keys().collect::<Vec<_>>(), ["x"]);
}

#[test]
fn duplicate_names_are_reported() {
    let mut repo = Repo::default();
    repo.app(app("web"));
    let other = app("web").value();
    repo.put("apps/web-old/deploy.yaml", crate::testing::to_yaml(&other, &Default::default()));
    let outcome = repo.load(&mut Loader::new());
    let found = rules_of(&outcome);
    assert!(
        found.contains(&("apps/web-old/deploy.yaml".into(), "app.duplicate-name".into(), 4, 9)),
        "{}",
        render(&outcome)
    );
    assert!(found.contains(&("apps/web-old/deploy.yaml".into(), "app.name-mismatch".into(), 4, 9)));
    assert_eq!(outcome.desired.apps.keys().collect::<Vec<_>>(), ["web"]);
}

#[test]
fn policy_problems_are_located_and_keep_the_policy_out() {
    let mut repo = Repo::default();
    repo.put("policies/a.yaml", "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: guard}\nspec:\n  rego: [policies/extr.rego]\n")
        .put("policies/b.yaml", "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: guard}\nspec: {}\n---\napiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: x}\nspec: {image: r/x:1, placement: {cluster: c}}\n")
        .put("policies/extra.rego", "package keelson");
    let outcome = repo.load(&mut Loader::new());
    let found = rules_of(&outcome);
    assert_eq!(
        found,
        [
            ("policies/a.yaml".to_string(), "policy.rego-missing".to_string(), 5, 10),
            ("policies/b.yaml".to_string(), "policy.duplicate-name".to_string(), 3, 18),
            ("policies/b.yaml".to_string(), "layout.kind".to_string(), 7, 7),
        ],
        "{}",
        render(&outcome)
    );
    assert_eq!(outcome.diagnostics[0].hint.as_deref(), Some("did you mean `policies/extra.rego`?"));
    assert!(outcome.desired.policies.is_empty());
}

#[test]
fn digest_covers_manifests_and_rego_blobs() {
    let mut repo = Repo::default();
    repo.app(app("web").manifests("manifests"))
        .app(app("api"))
        .put("apps/web/manifests/deploy.yaml", "kind: Deployment\n")
        .put("apps/web/manifests/svc/service.yaml", "kind: Service\n")
        .put("apps/web/manifests-old/x.yaml", "kind: Service\n")
        .put("policies/extra.rego", "package keelson");
    let mut loader = Loader::new();
    let first = repo.load(&mut loader);
    assert!(!first.has_errors(), "{}", render(&first));
    // Manifests are hashed by blob id, never read.
    assert!(!repo.reads.iter().any(|p| p.contains("manifests")), "{:?}", repo.reads);
    let digest = |o: &LoadOutcome, name: &str| o.desired.apps[name].digest.clone();

    repo.put("apps/web/manifests/svc/service.yaml", "kind: Service\nmetadata: {}\n");
    let changed = repo.load(&mut loader);
    assert!(repo.reads.is_empty());
    assert_ne!(digest(&changed, "web"), digest(&first, "web"));
    assert_eq!(digest(&changed, "api"), digest(&first, "api"));

    repo.put("apps/web/manifests-old/x.yaml", "kind: Secret\n");
    assert_eq!(digest(&repo.load(&mut loader), "web"), digest(&changed, "web"));

    repo.put("policies/extra.rego", "package keelson.v2");
    let rego = repo.load(&mut loader);
    assert_ne!(digest(&rego, "web"), digest(&changed, "web"));
    assert_ne!(digest(&rego, "api"), digest(&changed, "api"));

    // Digests recalled from the warm loader are the ones a cold loader computes.
    repo.put("apps/web/manifests/deploy.yaml", "kind: Deployment\nspec: {}\n");
    let warm = repo.load(&mut loader);
    let cold = repo.load(&mut Loader::new());
    for name in ["web", "api"] {
        assert_eq!(digest(&warm, name), digest(&cold, name), "{name}");
    }
    assert_ne!(digest(&warm, "web"), digest(&rego, "web"));
}

#[test]
fn reformatting_an_app_keeps_its_digest() {
    let mut repo = Repo::default();
    repo.app(app("web").replicas(2));
    let mut loader = Loader::new();
    let before = repo.load(&mut loader).desired.apps["web"].digest.clone();
    repo.put(
        "apps/web/deploy.yaml",
        "# reformatted\n{spec: {replicas: 2, placement: {cluster: prod-east}, image: \"registry.example.com/web:1.0.0\"}, metadata: {name: web}, kind: App, apiVersion: keelson.dev/v1alpha1}\n",
    );
    let after = repo.load(&mut loader);
    assert_eq!(repo.reads.len(), 1);
    assert_eq!(after.desired.apps["web"].digest, before);
    let _ = json!(null);
}

/// The example repository embedded in the binary must always load cleanly.
#[test]
fn the_state_repo_template_loads_cleanly() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../state-repo-template");
    if !root.is_dir() {
        println!("SKIP the_state_repo_template_loads_cleanly: {} is absent", root.display());
        return;
    }
    let mut repo = Repo::default();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable template") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(&root).expect("inside").to_string_lossy().replace('\\', "/");
                repo.put(&rel, std::fs::read(&path).expect("readable"));
            }
        }
    }
    let outcome = repo.load(&mut Loader::new());
    assert!(!outcome.has_errors(), "{}", render(&outcome));
    assert!(outcome.desired.invalid_apps.is_empty());
    assert!(outcome.desired.apps.len() >= 4, "{:?}", outcome.desired.apps.keys());
    assert!(!outcome.desired.policies.is_empty());
}

#[test]
fn loader_and_state_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Loader>();
    assert_send_sync::<DesiredState>();
    assert_send_sync::<LoadOutcome>();
}

/// A canary is refused (held as it is, never rolled out as `direct`); an ignored interval only warns.
#[test]
fn unbuilt_strategies_hold_the_app_and_unbuilt_settings_that_are_safe_to_ignore_only_warn() {
    let mut repo = Repo::default();
    repo.app(app("web").canary(&[10, 100]))
        .app(app("db").set("/spec/strategy", json!({"type": "direct", "interval": "30s"})));
    let outcome = repo.load(&mut Loader::new());
    assert_eq!(outcome.desired.invalid_apps.iter().collect::<Vec<_>>(), ["web"], "{}", render(&outcome));
    assert_eq!(outcome.desired.apps.keys().collect::<Vec<_>>(), ["db"]);
    let not_built: Vec<(&str, &str, bool)> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.rule == crate::not_built::RULE)
        .map(|d| (d.file.as_str(), d.pointer.as_str(), d.is_error()))
        .collect();
    assert_eq!(
        not_built,
        [
            ("apps/db/deploy.yaml", "/spec/strategy/interval", false),
            ("apps/web/deploy.yaml", "/spec/strategy/type", true),
            ("apps/web/deploy.yaml", "/spec/strategy/interval", false),
            ("apps/web/deploy.yaml", "/spec/strategy/gates", true),
        ]
    );
}

/// A link or submodule where a manifest is expected is an error at its path and holds its app;
/// it is never read.
#[rstest]
#[case::linked_deploy("apps/web/deploy.yaml", EntryKind::Symlink, Some("web"))]
#[case::submodule_app_dir("apps/web", EntryKind::Submodule, Some("web"))]
#[case::linked_manifests("apps/web/manifests/svc.yaml", EntryKind::Symlink, Some("web"))]
#[case::linked_policy("policies/extra.yaml", EntryKind::Symlink, None)]
#[case::linked_apps_dir("apps", EntryKind::Symlink, None)]
fn links_and_submodules_are_errors_never_read(
    #[case] path: &str,
    #[case] entry: EntryKind,
    #[case] held: Option<&str>,
) {
    let mut repo = Repo::default();
    repo.app(app("db"));
    if path != "apps/web" {
        repo.app(app("web"));
    }
    repo.remove(path);
    repo.files.push(RepoFile::other(path, "0000-link", entry));
    let outcome = repo.load(&mut Loader::new());
    let d = outcome
        .diagnostics
        .iter()
        .find(|d| d.rule == "layout.not-a-file")
        .unwrap_or_else(|| panic!("no layout.not-a-file:\n{}", render(&outcome)));
    assert_eq!((d.file.as_str(), d.line, d.col), (path, 1, 1));
    assert!(d.is_error() && d.message.contains(entry.describe()), "{d}");
    assert!(!repo.reads.iter().any(|r| r == path), "the entry was read");
    match held {
        Some(app) => {
            assert!(outcome.desired.invalid_apps.contains(app), "{app} must be held");
            assert!(!outcome.desired.apps.contains_key(app));
            assert!(outcome.desired.held[app].contains("is a "), "{:?}", outcome.desired.held);
        }
        None => assert!(outcome.desired.apps.contains_key("db")),
    }
}

/// A directory renamed without its `metadata.name` holds the app that name refers to.
#[test]
fn renamed_app_directory_holds_the_named_app_until_they_agree() {
    let mut repo = Repo::default();
    repo.app(app("db")).put("apps/web2/deploy.yaml", app("web").yaml());
    let outcome = repo.load(&mut Loader::new());
    let invalid: Vec<&str> = outcome.desired.invalid_apps.iter().map(String::as_str).collect();
    assert_eq!(invalid, ["web", "web2"], "{}", render(&outcome));
    assert!(outcome.desired.held["web"].contains("apps/web2/deploy.yaml declares `web`"), "{:?}", outcome.desired.held);
    assert!(
        outcome.desired.held["web2"].contains("app.name-mismatch")
            || outcome.desired.held["web2"].contains("metadata.name")
    );
    // Once the name follows the directory, only the new app is wanted (the old one may be pruned).
    repo.put("apps/web2/deploy.yaml", app("web2").yaml());
    let outcome = repo.load(&mut Loader::new());
    assert!(outcome.desired.invalid_apps.is_empty(), "{}", render(&outcome));
    assert_eq!(outcome.desired.apps.keys().collect::<Vec<_>>(), ["db", "web2"]);
}

/// One edit of a small repository, for the property below.
#[derive(Debug, Clone)]
enum Edit {
    /// `apps/<dir>/deploy.yaml` declaring app `name` with these dependencies.
    App {
        dir: usize,
        name: usize,
        deps: Vec<usize>,
    },
    /// A deploy.yaml the schema rejects.
    Broken(usize),
    Remove(usize),
    /// A file under the app's manifests path (the app declares none: ignored, but listed).
    Extra(usize),
    /// A link where a file is expected.
    Link(usize),
    Policy(bool),
    Rego(u8),
}

const DIRS: [&str; 5] = ["api", "db", "web", "worker", "cache"];

fn edit() -> impl proptest::strategy::Strategy<Value = Edit> {
    use proptest::prelude::*;
    let ix = 0..DIRS.len();
    prop_oneof![
        6 => (ix.clone(), prop_oneof![4 => Just(None), 1 => (0..DIRS.len()).prop_map(Some)], proptest::collection::vec(0..DIRS.len(), 0..3))
            .prop_map(|(dir, name, deps)| Edit::App { dir, name: name.unwrap_or(dir), deps }),
        1 => ix.clone().prop_map(Edit::Broken),
        2 => ix.clone().prop_map(Edit::Remove),
        1 => ix.clone().prop_map(Edit::Extra),
        1 => ix.prop_map(Edit::Link),
        1 => any::<bool>().prop_map(Edit::Policy),
        1 => (0u8..3).prop_map(Edit::Rego),
    ]
}

fn apply(repo: &mut Repo, edit: &Edit) {
    let deploy = |dir: usize| format!("apps/{}/deploy.yaml", DIRS[dir]);
    match edit {
        Edit::App { dir, name, deps } => {
            let deps: Vec<&str> = deps.iter().map(|d| DIRS[*d]).collect();
            let yaml = app(DIRS[*name]).depends_on(&deps).yaml();
            repo.files.retain(|f| f.path != format!("apps/{}", DIRS[*dir]));
            repo.put(&deploy(*dir), yaml);
        }
        Edit::Broken(dir) => {
            let yaml = format!(
                "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {{name: {}}}\nspec: {{image: r/x:1, replicas: lots, placement: {{cluster: c}}}}\n",
                DIRS[*dir]
            );
            repo.put(&deploy(*dir), yaml);
        }
        Edit::Remove(dir) => {
            let prefix = format!("apps/{}", DIRS[*dir]);
            repo.files.retain(|f| !crate::semantic::under(&f.path, &prefix));
        }
        Edit::Extra(dir) => {
            repo.put(&format!("apps/{}/manifests/extra.yaml", DIRS[*dir]), "kind: ConfigMap\n");
        }
        Edit::Link(dir) => {
            let path = format!("apps/{}/notes.md", DIRS[*dir]);
            repo.files.retain(|f| f.path != path);
            repo.files.push(RepoFile::other(path, "0000-link", EntryKind::Symlink));
        }
        Edit::Policy(true) => {
            repo.put(
                "policies/p.yaml",
                "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec: {rego: [policies/x.rego]}\n",
            );
        }
        Edit::Policy(false) => {
            repo.remove("policies/p.yaml");
        }
        Edit::Rego(0) => {
            repo.remove("policies/x.rego");
        }
        Edit::Rego(n) => {
            repo.put("policies/x.rego", format!("package keelson\n# {n}\n"));
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
    /// Whatever the sequence of commits, a loader that saw each of them gives what a new loader
    /// gives on the last one: the incremental checks miss nothing and keep nothing stale.
    #[test]
    fn incremental_loads_equal_a_fresh_load(edits in proptest::collection::vec(edit(), 1..24)) {
        let mut repo = Repo::default();
        let mut loader = Loader::new();
        // Fed only the changes, as the daemon feeds it a tree diff.
        let mut by_changes = Loader::new();
        let mut before: BTreeMap<String, RepoFile> = BTreeMap::new();
        for (i, edit) in edits.iter().enumerate() {
            apply(&mut repo, edit);
            let incremental = repo.load(&mut loader);
            let fresh = repo.load(&mut Loader::new());
            proptest::prop_assert_eq!(&incremental.desired, &fresh.desired, "after edit {} ({:?})", i, edit);
            proptest::prop_assert_eq!(render(&incremental), render(&fresh), "after edit {} ({:?})", i, edit);

            let after: BTreeMap<String, RepoFile> = repo.files.iter().map(|f| (f.path.clone(), f.clone())).collect();
            let paths: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
            let changes: Vec<FileChange> = paths
                .into_iter()
                .filter(|p| before.get(*p) != after.get(*p))
                .map(|p| FileChange::new(before.get(p), after.get(p)))
                .collect();
            let blobs = &repo.blobs;
            let changed = by_changes.load_changes(&changes, &mut |f| {
                blobs.get(&f.blob_id).cloned().ok_or_else(|| std::io::Error::other("no such blob"))
            });
            proptest::prop_assert_eq!(&changed.desired, &fresh.desired, "changes after edit {} ({:?})", i, edit);
            proptest::prop_assert_eq!(render(&changed), render(&fresh), "changes after edit {} ({:?})", i, edit);
            before = after;
        }
    }
}

#[test]
fn a_cycle_closed_and_broken_by_later_commits_is_reported_then_cleared() {
    let mut repo = Repo::default();
    let mut loader = Loader::new();
    repo.app(app("a").depends_on(&["b"])).app(app("b")).app(app("c").depends_on(&["a"]));
    assert!(!repo.load(&mut loader).has_errors());
    // b → c closes a → b → c → a; only b's file changed.
    repo.app(app("b").depends_on(&["c"]));
    let closed = repo.load(&mut loader);
    assert_eq!(repo.reads, ["apps/b/deploy.yaml"]);
    let cyclic: Vec<&str> = closed.desired.invalid_apps.iter().map(String::as_str).collect();
    assert_eq!(cyclic, ["a", "b", "c"], "{}", render(&closed));
    assert!(render(&closed).contains("dependency cycle: a → b → c → a"), "{}", render(&closed));
    // Removing c (not the file that closed it) breaks the cycle; a now names a missing app.
    repo.remove("apps/c/deploy.yaml");
    let broken = repo.load(&mut loader);
    assert!(!render(&broken).contains("cycle"), "{}", render(&broken));
    assert_eq!(broken.desired.apps.keys().collect::<Vec<_>>(), ["a"]);
    assert!(render(&broken).contains("dependsOn[0]: there is no app `c`"), "{}", render(&broken));
    // An app named like the missing dependency makes b valid again without touching b.
    repo.app(app("c"));
    let fixed = repo.load(&mut loader);
    assert!(!fixed.has_errors(), "{}", render(&fixed));
    assert_eq!(fixed.desired.apps.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
}
