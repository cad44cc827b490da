//! Smoke tests of the harness: the generator makes a repository Keelson's loader accepts, and the
//! in-process scenarios run on it. No timings are asserted.

use keelson::source::GitRepo;
use keelson_bench::generator::{self, StateRepo};
use keelson_bench::measure::{self, CommitFiles};
use keelson_manifest::Loader;

fn generated(n: usize, seed: u64) -> (tempfile::TempDir, StateRepo) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = generator::generate(&tmp.path().join("state"), n, seed).expect("generating a repository");
    (tmp, repo)
}

#[test]
fn generated_repository_loads_without_errors() {
    let (_tmp, repo) = generated(20, 42);
    let git = GitRepo::open(&repo.dir).expect("a git repository");
    let files = CommitFiles::read(&git, &repo.commit).expect("reading the commit");
    let outcome = files.load(&mut Loader::new());
    let problems: Vec<String> = outcome.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(problems.is_empty(), "the loader reported: {problems:#?}");
    assert_eq!(outcome.desired.apps.len(), 20);
    assert_eq!(outcome.desired.policies.len(), 2);
    for app in &repo.apps {
        let loaded = &outcome.desired.apps[&app.name];
        assert_eq!(loaded.app.spec.depends_on, app.depends_on, "{}", app.name);
    }
}

#[test]
fn generation_is_deterministic_by_seed() {
    let (_a, one) = generated(20, 7);
    let (_b, two) = generated(20, 7);
    let (_c, other) = generated(20, 8);
    assert_eq!(one.commit, two.commit, "same seed, same commit id");
    assert_ne!(one.commit, other.commit);
}

#[test]
fn one_app_change_changes_exactly_one_app() {
    let (_tmp, repo) = generated(20, 42);
    let target = repo.change_target(0).clone();
    let head = generator::commit_one_app_change(&repo, &target, 1).expect("commit");
    let git = GitRepo::open(&repo.dir).expect("open");
    let (_ms, _load_ms, changed) = measure::change_detection_ms(&git, &repo.commit, &head).expect("change detection");
    assert_eq!(changed, vec![target.name]);
}

#[test]
fn library_scenarios_run_on_a_small_fleet() {
    let (tmp, repo) = generated(20, 42);
    let git = GitRepo::open(&repo.dir).expect("open");
    assert!(measure::validation_files_per_s(&git, &repo.commit, 20).expect("validation") > 0.0);
    let names: Vec<String> = repo.apps.iter().map(|a| a.name.clone()).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (per_s, _verify_s, entries) =
        rt.block_on(measure::ledger_append_and_verify(tmp.path(), &names, &repo.commit)).expect("ledger");
    assert_eq!(entries, 80);
    assert!(per_s > 0.0);
    assert!(measure::status_commits_per_s(&git, "bench/status", &names, 5).expect("status commits") > 0.0);
    let chain = measure::chain_of(40);
    assert!(keelson::ledger::verify_entries(chain, &[]).ok);
}
