//! Micro-benchmarks of Keelson's hot functions: the canonical digest of an app, schema validation
//! of one manifest, the tree diff between two 1,000-app commits, and the hash chain of 10,000
//! ledger entries. Run with `cargo bench -p keelson-bench`.
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

criterion_group!(hot, canonical_digest, schema_validation, tree_diff, hash_chain);
criterion_main!(hot);
