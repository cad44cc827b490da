//! In-process measurements of Keelson's library: loading and validating a repository, change
//! detection between two commits, the audit ledger, and status-branch commits.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keelson::ledger::{GENESIS_HASH, Ledger, LedgerEntry, NewEntry, RolloutRef};
use keelson::record::StatusBranch;
use keelson::source::GitRepo;
use keelson_manifest::{LoadOutcome, Loader, RepoFile};
use serde_json::json;

/// The files of a commit with their contents, read up front so a timed load does no git I/O.
pub struct CommitFiles {
    pub files: Vec<RepoFile>,
    pub blobs: HashMap<String, Vec<u8>>,
}

impl CommitFiles {
    /// Lists and reads every file of `commit`.
    pub fn read(repo: &GitRepo, commit: &str) -> Result<CommitFiles> {
        let snapshot = repo.snapshot(commit, "")?;
        let mut blobs = HashMap::with_capacity(snapshot.files.len());
        for f in &snapshot.files {
            blobs.insert(f.blob_id.clone(), repo.read_blob(&f.blob_id).with_context(|| format!("reading {}", f.path))?);
        }
        Ok(CommitFiles { files: snapshot.files, blobs })
    }

    /// Loads them with `loader` (reads come from memory).
    pub fn load(&self, loader: &mut Loader) -> LoadOutcome {
        loader.load(&self.files, &mut |f| {
            self.blobs.get(&f.blob_id).cloned().ok_or_else(|| std::io::Error::other(format!("no blob {}", f.blob_id)))
        })
    }
}

/// Fails unless `outcome` holds exactly `apps` apps and no errors (a benchmark of a broken load measures nothing).
pub fn expect_clean(outcome: &LoadOutcome, apps: usize) -> Result<()> {
    let errors: Vec<String> =
        outcome.diagnostics.iter().filter(|d| d.is_error()).take(5).map(|d| d.to_string()).collect();
    if !errors.is_empty() || outcome.desired.apps.len() != apps {
        bail!(
            "Keelson's loader found {} of {apps} apps and {} errors in the generated repository (first: {})",
            outcome.desired.apps.len(),
            outcome.diagnostics.iter().filter(|d| d.is_error()).count(),
            errors.join(" | ")
        );
    }
    Ok(())
}

/// Cold-cache load of every file of `commit` (parse, schema, semantic checks, digests): files per second.
pub fn validation_files_per_s(repo: &GitRepo, commit: &str, apps: usize) -> Result<f64> {
    let files = CommitFiles::read(repo, commit)?;
    let mut loader = Loader::new();
    let started = Instant::now();
    let outcome = files.load(&mut loader);
    let elapsed = started.elapsed().as_secs_f64();
    expect_clean(&outcome, apps)?;
    Ok(loader.cached_files() as f64 / elapsed)
}

/// What the daemon does when the tracked branch moves from `base` to `head`: compare the two
/// commits' trees (only the trees whose ids differ are read) and load those changes into a loader
/// that holds `base`, so only changed blobs are read and validated and only the apps they can
/// reach are checked again. Returns milliseconds in all, milliseconds in `Loader::load_changes`
/// alone, and the names of apps whose digest changed.
pub fn change_detection_ms(repo: &GitRepo, base: &str, head: &str) -> Result<(f64, f64, Vec<String>)> {
    let local = repo.local();
    let mut loader = Loader::new();
    let before = {
        let snapshot = repo.snapshot(base, "")?;
        loader.load(&snapshot.files, &mut |f| keelson::source::read_blob(&local, &f.blob_id))
    };
    let started = Instant::now();
    let changes = repo.changes(base, head, "")?;
    let loading = Instant::now();
    let after = loader.load_changes(&changes, &mut |f| keelson::source::read_blob(&local, &f.blob_id));
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    let changed = after
        .desired
        .apps
        .iter()
        .filter(|(name, app)| before.desired.apps.get(*name).is_none_or(|b| b.digest != app.digest))
        .map(|(name, _)| name.clone())
        .collect();
    Ok((elapsed, load_ms, changed))
}

/// The four entries a cold rollout of one app appends (plan, intent, applied, healthy), shaped like the engine's.
pub fn rollout_entries(app: &str, commit: &str, first_seq: i64) -> Vec<NewEntry> {
    let digest = format!("sha256:{:0>64}", format!("{:x}", fnv(app)));
    let resources = json!([{"id": {"instance": "sim", "apiVersion": "sim.keelson.dev/v1", "kind": "Workload", "namespace": "web", "name": app},
        "owner": {"app": app}, "digest": digest,
        "spec": {"image": format!("registry.example.com/web/{app}:1.0.0"), "replicas": 3,
                 "resources": {"cpu": "500m", "memory": "512Mi"}, "variant": "stable", "weight": 100}}]);
    let base = NewEntry {
        app: app.to_owned(),
        desired_commit: commit.to_owned(),
        desired_digest: digest.clone(),
        rollout: Some(RolloutRef::Seq(first_seq)),
        from_state: String::new(),
        to_state: String::new(),
        action: String::new(),
        actor: "keelson".into(),
        detail: json!({}),
    };
    vec![
        NewEntry {
            rollout: Some(RolloutRef::StartsHere),
            from_state: "Pending".into(),
            to_state: "Planned".into(),
            action: "plan".into(),
            detail: json!({"instance": "sim", "strategy": "direct", "steps": 1,
                "changes": [{"resource": format!("sim/Workload/web/{app}"), "change": "create"}],
                "message": format!("rolling out {} from {}", &digest[7..19], &commit[..12.min(commit.len())])}),
            ..base.clone()
        },
        NewEntry {
            from_state: "Planned".into(),
            to_state: "Progressing".into(),
            action: "intent".into(),
            detail: json!({"key": format!("{app}/{first_seq}/1"), "op": "apply", "instance": "sim", "step": 1, "of": 1, "resources": resources}),
            ..base.clone()
        },
        NewEntry {
            from_state: "Progressing".into(),
            to_state: "Progressing".into(),
            action: "applied".into(),
            detail: json!({"intentSeq": first_seq + 1, "instance": "sim", "step": 1, "of": 1,
                "outcomes": {format!("sim/Workload/web/{app}"): "created"}}),
            ..base.clone()
        },
        NewEntry {
            from_state: "Progressing".into(),
            to_state: "Healthy".into(),
            action: "healthy".into(),
            detail: json!({"observedDigest": digest, "resources": 1}),
            ..base
        },
    ]
}

/// Ledger throughput: appends `entries` one at a time (as the engine does) to a new SQLite ledger in
/// `dir`, then verifies the whole chain. Returns (appends per second, verify seconds, entries).
pub async fn ledger_append_and_verify(dir: &Path, apps: &[String], commit: &str) -> Result<(f64, f64, usize)> {
    let path = dir.join("ledger.db");
    let ledger = Ledger::open(&path.display().to_string()).await?;
    let mut appended = 0usize;
    let started = Instant::now();
    for app in apps {
        let first = appended as i64 + 1;
        for entry in rollout_entries(app, commit, first) {
            ledger.append(entry).await?;
            appended += 1;
        }
    }
    let append_s = started.elapsed().as_secs_f64();
    let verify_s = ledger_verify_s(&ledger, appended as u64).await?;
    ledger.close().await;
    Ok((appended as f64 / append_s, verify_s, appended))
}

/// Endless cold rollouts (plan, intent, applied, healthy per app) for a ledger whose next seq is `next_seq`.
pub fn rollouts(commit: &str, next_seq: i64) -> impl Iterator<Item = NewEntry> + '_ {
    (0..).flat_map(move |i: i64| rollout_entries(&format!("app-{i:06}"), commit, next_seq + 4 * i))
}

/// The seq the next append to `ledger` gets.
async fn next_seq(ledger: &Ledger) -> Result<i64> {
    Ok(ledger.head().await?.map_or(1, |(seq, _)| seq + 1))
}

/// Appends `count` rollout entries in `Ledger::append_batch` calls of `batch` entries; returns
/// entries per second, timing only the appends (building the entries is the caller's work).
pub async fn ledger_batch_appends_per_s(ledger: &Ledger, count: usize, batch: usize, commit: &str) -> Result<f64> {
    if batch == 0 {
        bail!("the batch size must be at least 1");
    }
    let mut entries = rollouts(commit, next_seq(ledger).await?).take(count);
    let mut busy = Duration::ZERO;
    loop {
        let chunk: Vec<NewEntry> = entries.by_ref().take(batch).collect();
        if chunk.is_empty() {
            break;
        }
        let started = Instant::now();
        ledger.append_batch(chunk).await?;
        busy += started.elapsed();
    }
    Ok(count as f64 / busy.as_secs_f64())
}

/// [`ledger_batch_appends_per_s`] on a new SQLite ledger in `dir`.
pub async fn new_sqlite_ledger_batch_appends_per_s(
    dir: &Path,
    count: usize,
    batch: usize,
    commit: &str,
) -> Result<f64> {
    let ledger = Ledger::open(&dir.join("batch.db").display().to_string()).await?;
    let per_s = ledger_batch_appends_per_s(&ledger, count, batch, commit).await?;
    ledger.close().await;
    Ok(per_s)
}

/// Appends `count` rollout entries with `Ledger::append`, one transaction each, as the engine
/// does; returns entries per second.
pub async fn ledger_single_appends_per_s(ledger: &Ledger, count: usize, commit: &str) -> Result<f64> {
    let entries: Vec<NewEntry> = rollouts(commit, next_seq(ledger).await?).take(count).collect();
    let started = Instant::now();
    for entry in entries {
        ledger.append(entry).await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// `Ledger::verify` of the whole ledger, which must hold `expected` entries and verify; returns seconds.
pub async fn ledger_verify_s(ledger: &Ledger, expected: u64) -> Result<f64> {
    let started = Instant::now();
    let report = ledger.verify(&[]).await?;
    let seconds = started.elapsed().as_secs_f64();
    if !report.ok || report.entries != expected {
        bail!("the freshly written ledger does not verify as {expected} entries: {report}");
    }
    Ok(seconds)
}

/// Builds a valid hash chain of `n` entries without a database (for the hash-chain micro-benchmark).
pub fn chain_of(n: usize) -> Vec<LedgerEntry> {
    let mut out: Vec<LedgerEntry> = Vec::with_capacity(n);
    let mut prev = GENESIS_HASH.to_owned();
    for i in 0..n {
        let app = format!("app-{:05}", i / 4);
        let new = &rollout_entries(&app, "0123456789abcdef0123456789abcdef01234567", (i - i % 4) as i64 + 1)[i % 4];
        let seq = i as i64 + 1;
        let mut e = LedgerEntry {
            seq,
            at: format!("2026-01-01T00:00:{:02}.{:06}Z", (i / 1_000_000) % 60, i % 1_000_000),
            app: new.app.clone(),
            desired_commit: new.desired_commit.clone(),
            desired_digest: new.desired_digest.clone(),
            rollout: match new.rollout {
                Some(RolloutRef::StartsHere) => Some(seq),
                Some(RolloutRef::Seq(s)) => Some(s),
                None => None,
            },
            from_state: new.from_state.clone(),
            to_state: new.to_state.clone(),
            action: new.action.clone(),
            actor: new.actor.clone(),
            detail: keelson_manifest::canonical::to_canonical_string(&new.detail).unwrap_or_default(),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        prev.clone_from(&e.hash);
        out.push(e);
    }
    out
}

/// Status-branch throughput on a repository of `apps.len()` apps: records every app once (in
/// outbox-sized batches, untimed, as after a cold start), then times `commits` single-entry commits,
/// as a quiet system makes them. Returns commits per second. Uses (and deletes) `branch`.
pub fn status_commits_per_s(repo: &GitRepo, branch: &str, apps: &[String], commits: usize) -> Result<f64> {
    let status = StatusBranch::new(repo.clone(), branch);
    let chain = chain_of(apps.len() + commits);
    // Entries of the chain are per-app rollouts of 4; give each status file its own app name.
    let named = |i: usize, e: &LedgerEntry| LedgerEntry { app: apps[i % apps.len()].clone(), ..e.clone() };
    let prefill: Vec<LedgerEntry> = chain[..apps.len()].iter().enumerate().map(|(i, e)| named(i, e)).collect();
    for batch in prefill.chunks(500) {
        status.commit_batch(batch)?;
    }
    let started = Instant::now();
    for (i, e) in chain[apps.len()..].iter().enumerate() {
        status.commit_batch(&[named(i * 7919, e)])?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    crate::generator::git(repo.root(), &["update-ref", "-d", &format!("refs/heads/{branch}")], 0)?;
    Ok(commits as f64 / elapsed)
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
