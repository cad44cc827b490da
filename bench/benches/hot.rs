//! Micro-benchmarks of Keelson's hot functions: the canonical digest of an app, schema validation
//! of one manifest, the tree diff between two 1,000-app commits, an incremental load of a one-app
//! commit at 10,000 apps, and the hash chain of 10,000 ledger entries. Run with `cargo bench -p keelson-bench`.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use keelson::source::GitRepo;
use keelson_bench::generator::{self, AppKind};
use keelson_bench::measure;
use keelson_manifest::{Kind, yaml};

/// A web API with health probes and dependencies: the richest app the generator makes (gates are
/// refused until they are built).
fn sample_manifest() -> String {
    let apps = generator::plan_apps(200, 42);
    let app = apps
        .iter()
        .find(|a| a.kind == AppKind::Api && generator::manifest(a, 42, 0).contains("dependsOn"))
        .unwrap_or(&apps[0]);
    generator::manifest(app, 42, 0)
}

fn canonical_digest(c: &mut Criterion) {
    let text = sample_manifest();
    let doc = yaml::parse("deploy.yaml", text.as_bytes()).expect("generated YAML parses").remove(0);
    c.bench_function("canonical digest of one app", |b| {
        b.iter(|| keelson_manifest::digest::app_digest(black_box(&doc.value), &[]).expect("digest"))
    });
}

fn schema_validation(c: &mut Criterion) {
    let text = sample_manifest();
    let doc = yaml::parse("deploy.yaml", text.as_bytes()).expect("generated YAML parses").remove(0);
    assert!(
        keelson_manifest::schema::validate("deploy.yaml", &doc, Kind::App).is_empty(),
        "the sample manifest is valid"
    );
    c.bench_function("schema validation of one manifest (parsed)", |b| {
        b.iter(|| keelson_manifest::schema::validate("deploy.yaml", black_box(&doc), Kind::App))
    });
    c.bench_function("parse + validate one manifest (check_file)", |b| {
        b.iter(|| keelson_manifest::check_file("deploy.yaml", black_box(text.as_bytes())))
    });
}

fn tree_diff(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = generator::generate(&tmp.path().join("repo"), 1000, 42).expect("generating 1,000 apps");
    let head = generator::commit_one_app_change(&repo, repo.change_target(0), 1).expect("one-app commit");
    let git = GitRepo::open(&repo.dir).expect("open");
    let base: HashMap<String, String> =
        git.snapshot(&repo.commit, "").expect("snapshot").files.into_iter().map(|f| (f.path, f.blob_id)).collect();
    let mut group = c.benchmark_group("tree diff");
    group.sample_size(20);
    group.bench_function("two 1k-app commits (snapshot + compare)", |b| {
        b.iter(|| {
            let files = git.snapshot(black_box(&head), "").expect("snapshot").files;
            files.iter().filter(|f| base.get(&f.path) != Some(&f.blob_id)).count()
        })
    });
    group.bench_function("two 1k-app commits (GitRepo::changes)", |b| {
        b.iter(|| git.changes(black_box(&repo.commit), black_box(&head), "").expect("changes").len())
    });
    group.finish();
}

/// What the daemon does with a one-app commit on a 10,000-app repository once the tree diff is
/// known: `Loader::load_changes` into a loader holding the parent (forth, then back, so every
/// iteration is a real change).
fn incremental_load(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = generator::generate(&tmp.path().join("repo"), 10_000, 42).expect("generating 10,000 apps");
    let head = generator::commit_one_app_change(&repo, repo.change_target(0), 1).expect("one-app commit");
    let git = GitRepo::open(&repo.dir).expect("open");
    let local = git.local();
    let mut read = |f: &keelson_manifest::RepoFile| keelson::source::read_blob(&local, &f.blob_id);
    let mut loader = keelson_manifest::Loader::new();
    loader.load(&git.snapshot(&repo.commit, "").expect("snapshot").files, &mut read);
    let forth = git.changes(&repo.commit, &head, "").expect("changes");
    let back = git.changes(&head, &repo.commit, "").expect("changes");
    let mut group = c.benchmark_group("incremental load");
    group.sample_size(20);
    group.bench_function("one-app commit at 10k apps (load_changes, forth and back)", |b| {
        b.iter(|| {
            let a = loader.load_changes(black_box(&forth), &mut read);
            let b = loader.load_changes(black_box(&back), &mut read);
            a.desired.apps.len() + b.desired.apps.len()
        })
    });
    group.finish();
}

fn hash_chain(c: &mut Criterion) {
    let chain = measure::chain_of(10_000);
    let mut group = c.benchmark_group("hash chain");
    group.sample_size(20);
    group.bench_function("verify 10k ledger entries", |b| {
        b.iter_batched(
            || chain.clone(),
            |entries| assert!(keelson::ledger::verify_entries(black_box(entries), &[]).ok),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(hot, canonical_digest, schema_validation, tree_diff, incremental_load, hash_chain);
criterion_main!(hot);
