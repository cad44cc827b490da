//! A remote state repository, driven with the `git` CLI as users would: `file://` remotes pushed
//! to from a second clone, push webhooks signed (or not) with the test's secret, force-pushes, a
//! remote that disappears and comes back, and the status branch pushed to the remote.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keelson_e2e::{Daemon, edit, git, hmac_hex, keelson, post, template_repo, workspace_root};
use serde_json::Value;

const SECRET: &str = "test-webhook-secret";

/// A bare `origin.git` holding the template, a clone `dev` to push from, and a secret file.
struct Remote {
    tmp: tempfile::TempDir,
    origin: PathBuf,
    dev: PathBuf,
    secret: PathBuf,
}

impl Remote {
    fn new() -> Self {
        let (tmp, seed) = template_repo();
        let origin = tmp.path().join("origin.git");
        git(tmp.path(), &["clone", "-q", "--bare", seed.to_str().unwrap(), origin.to_str().unwrap()]);
        let dev = tmp.path().join("dev");
        git(tmp.path(), &["clone", "-q", origin.to_str().unwrap(), dev.to_str().unwrap()]);
        let secret = tmp.path().join("hook-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        Self { tmp, origin, dev, secret }
    }

    fn url(&self) -> String {
        format!("file://{}", self.origin.display())
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn start(&self, extra: &[&str]) -> (Daemon, String) {
        let (url, data, secret) = (self.url(), self.data(), self.secret.display().to_string());
        let mut args = vec![
            "daemon",
            "--repo",
            &url,
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "1h",
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-secret-file",
            &secret,
            "--push-interval",
            "200ms",
            "--sim-rollout-time",
            "100ms",
        ];
        args.extend_from_slice(extra);
        let d = Daemon::start(&args, self.tmp.path());
        let hook = d.stdout_line("webhooks on ", Duration::from_secs(10));
        (d, hook)
    }

    /// Commits a change to storefront's replicas in `dev` and pushes it; the new head.
    fn push_replicas(&self, from: &str, to: &str) -> String {
        edit(&self.dev.join("apps/storefront/deploy.yaml"), &format!("replicas: {from}"), &format!("replicas: {to}"));
        git(&self.dev, &["commit", "-qam", &format!("storefront to {to}")]);
        git(&self.dev, &["push", "-q", "origin", "main"]);
        git(&self.dev, &["rev-parse", "HEAD"])
    }
}

/// A GitHub-style push delivery for `branch`, signed with `secret`.
fn github_push(hook: &str, branch: &str, secret: &str, delivery: &str) -> (u16, Value) {
    let body = format!(r#"{{"ref":"refs/heads/{branch}","after":"x"}}"#);
    let sig = format!("sha256={}", hmac_hex(secret.as_bytes(), body.as_bytes()));
    let (status, text) = post(
        hook,
        &[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", delivery), ("X-Hub-Signature-256", &sig)],
        body.as_bytes(),
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn source(d: &Daemon) -> Value {
    d.json("/api/v1/status")["source"].clone()
}

fn wait_commit(d: &Daemon, commit: &str, limit: Duration) {
    d.wait_for(&format!("commit {commit} loaded"), limit, |d| (source(d)["commit"] == commit).then_some(()));
}

fn remote_status_tip(origin: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["--git-dir", origin.to_str().unwrap(), "rev-parse", "--verify", "--quiet", "refs/heads/keelson/status"])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn a_remote_is_fetched_on_a_webhook_and_its_status_branch_is_pushed() {
    let r = Remote::new();
    let first = git(&r.dev, &["rev-parse", "HEAD"]);
    let (d, hook) = r.start(&[]);
    // Fetched at start-up although the poll interval is an hour.
    wait_commit(&d, &first, Duration::from_secs(30));
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    assert_eq!(source(&d)["remote"]["url"], r.url());

    // The status branch appears on the remote, and its trailers verify against the ledger.
    let tip = d.wait_for("the status branch on the remote", Duration::from_secs(30), |_| remote_status_tip(&r.origin));
    assert!(!tip.is_empty());

    // A bad or missing signature fetches nothing.
    let second = r.push_replicas("3", "5");
    let (status, _) = github_push(&hook, "main", "wrong-secret", "d-bad");
    assert_eq!(status, 401);
    let (status, _) = post(&hook, &[("X-GitHub-Event", "push")], br#"{"ref":"refs/heads/main"}"#);
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(source(&d)["commit"], first, "an unsigned delivery made the daemon fetch");

    // A push for another branch is ignored; one for the tracked branch fetches at once.
    let (status, answer) = github_push(&hook, "dev", SECRET, "d-other");
    assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")), "{answer}");
    let sent = Instant::now();
    let (status, answer) = github_push(&hook, "main", SECRET, "d-1");
    assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{answer}");
    wait_commit(&d, &second, Duration::from_secs(10));
    let took = sent.elapsed();
    eprintln!("webhook → pushed commit loaded (file://, polled every 50 ms): {took:?}");
    assert!(took < Duration::from_secs(3), "a webhook took {took:?} to load the pushed commit");
    let (status, answer) = github_push(&hook, "main", SECRET, "d-1");
    assert_eq!((status, answer["status"].as_str()), (202, Some("duplicate")), "{answer}");
    d.wait_for("storefront Healthy at 5 replicas", Duration::from_secs(30), |d| {
        let app = d.app("storefront")?;
        (app["phase"] == "Healthy" && app["desiredCommit"] == second).then_some(())
    });

    // A force-push is detected, recorded, and followed (allowForcePush defaults to true).
    git(&r.dev, &["reset", "-q", "--hard", &first]);
    edit(&r.dev.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 4");
    git(&r.dev, &["commit", "-qam", "storefront to 4, rewritten"]);
    git(&r.dev, &["push", "-q", "--force", "origin", "main"]);
    let rewritten = git(&r.dev, &["rev-parse", "HEAD"]);
    assert_eq!(github_push(&hook, "main", SECRET, "d-2").0, 202);
    wait_commit(&d, &rewritten, Duration::from_secs(10));
    let rewrites = source(&d)["remote"]["historyRewrites"].clone();
    assert_eq!(rewrites[0]["from"], second, "{rewrites}");
    assert_eq!(rewrites[0]["to"], rewritten, "{rewrites}");
    assert_eq!(rewrites[0]["followed"], true, "{rewrites}");

    // The remote disappears: one clear error, the last good commit stays, /readyz stays 200.
    let moved = r.tmp.path().join("moved.git");
    std::fs::rename(&r.origin, &moved).unwrap();
    assert_eq!(github_push(&hook, "main", SECRET, "d-3").0, 202);
    let error = d.wait_for("a fetch error", Duration::from_secs(10), |d| {
        let e = source(d)["remote"]["error"].clone();
        (!e.is_null()).then_some(e)
    });
    assert_eq!(error["cause"], "notFound", "{error}");
    assert!(error["message"].as_str().unwrap().contains("does not appear to be a git repository"), "{error}");
    let (status, body) = d.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("fetching the remote fails"), "{body}");
    assert_eq!(source(&d)["commit"], rewritten);
    // It comes back: the next delivery clears the error.
    std::fs::rename(&moved, &r.origin).unwrap();
    assert_eq!(github_push(&hook, "main", SECRET, "d-4").0, 202);
    d.wait_for("the fetch error to clear", Duration::from_secs(10), |d| {
        source(d)["remote"]["error"].is_null().then_some(())
    });
    let (_, metrics) = d.get("/metrics");
    assert!(metrics.contains(r#"keelson_webhook_deliveries_total{outcome="rejected"} 2"#), "{metrics}");
    assert!(metrics.contains(r#"keelson_webhook_deliveries_total{outcome="duplicate"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"keelson_source_fetches_total{outcome="notFound"}"#), "{metrics}");

    // Everything the ledger holds reaches the remote's status branch, and verifies there.
    d.wait_all_healthy(4, "four apps Healthy after the rewrite", Duration::from_secs(60));
    let local = r.data().join("source.git");
    d.wait_for("the remote status branch to catch up", Duration::from_secs(30), |_| {
        let ours = git(&local, &["rev-parse", "refs/heads/keelson/status"]);
        (remote_status_tip(&r.origin).as_deref() == Some(ours.as_str())).then_some(())
    });
    assert_eq!(d.terminate(), 0);
    let db = r.data().join("keelson.db");
    let out = keelson(
        &["audit", "verify", "--database", db.to_str().unwrap(), "--repo", r.origin.to_str().unwrap()],
        r.tmp.path(),
    );
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_force_push_is_refused_with_allow_force_push_false() {
    let r = Remote::new();
    let config = r.tmp.path().join("keelson.yaml");
    let yaml = "apiVersion: keelson.dev/v1alpha1\nkind: Config\nsource:\n  allowForcePush: false\nstatus:\n  author: {name: Ops Bot, email: ops@example.com}\n";
    std::fs::write(&config, yaml).unwrap();
    let first = git(&r.dev, &["rev-parse", "HEAD"]);
    let (d, hook) = r.start(&["--config", config.to_str().unwrap()]);
    wait_commit(&d, &first, Duration::from_secs(30));
    git(&r.dev, &["commit", "-q", "--amend", "-m", "rewritten"]);
    git(&r.dev, &["push", "-q", "--force", "origin", "main"]);
    assert_eq!(github_push(&hook, "main", SECRET, "f-1").0, 202);
    let error = d.wait_for("the rewrite refused", Duration::from_secs(10), |d| {
        let e = source(d)["remote"]["error"].clone();
        (!e.is_null()).then_some(e)
    });
    assert_eq!(error["cause"], "historyRewriteRefused", "{error}");
    assert!(error["message"].as_str().unwrap().contains("allowForcePush is false"), "{error}");
    assert_eq!(source(&d)["commit"], first, "a refused rewrite was applied");
    assert_eq!(source(&d)["remote"]["historyRewrites"][0]["followed"], false);
    let (status, _) = d.get("/readyz");
    assert_eq!(status, 200);
    // A commit on top of the applied history is taken again.
    git(&r.dev, &["reset", "-q", "--hard", &first]);
    edit(&r.dev.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 6");
    git(&r.dev, &["commit", "-qam", "storefront to 6, on top of the applied commit"]);
    git(&r.dev, &["push", "-q", "--force", "origin", "main"]);
    let next = git(&r.dev, &["rev-parse", "HEAD"]);
    assert_eq!(github_push(&hook, "main", SECRET, "f-2").0, 202);
    wait_commit(&d, &next, Duration::from_secs(10));
    // Status commits carry the configured identity.
    d.wait_for("the status branch on the remote", Duration::from_secs(30), |_| remote_status_tip(&r.origin));
    assert_eq!(git(&r.origin, &["log", "-1", "--format=%an <%ae>", "keelson/status"]), "Ops Bot <ops@example.com>");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn a_status_branch_moved_by_someone_else_stops_status_writes() {
    let r = Remote::new();
    let (d, hook) = r.start(&[]);
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    d.wait_for("the status branch on the remote", Duration::from_secs(30), |_| remote_status_tip(&r.origin));
    // Someone commits to the status branch by hand and pushes it.
    git(&r.dev, &["fetch", "-q", "origin", "keelson/status"]);
    git(&r.dev, &["checkout", "-q", "-b", "status-edit", "FETCH_HEAD"]);
    std::fs::write(r.dev.join("status/storefront.yaml"), "phase: Healthy\n").unwrap();
    git(&r.dev, &["commit", "-qam", "looks fine to me"]);
    git(&r.dev, &["push", "-q", "origin", "status-edit:keelson/status"]);
    git(&r.dev, &["checkout", "-q", "main"]);
    // The next transition's push is rejected and the foreign tip is found.
    r.push_replicas("3", "7");
    assert_eq!(github_push(&hook, "main", SECRET, "s-1").0, 202);
    let body = d.wait_for("status writes stopped", Duration::from_secs(30), |d| {
        let (status, body) = d.get("/readyz");
        (status == 200 && body.contains("moved by someone else")).then_some(body)
    });
    assert!(body.contains("no Keelson-Audit trailer"), "{body}");
    let status = d.json("/api/v1/status");
    assert_eq!(status["statusBranch"]["state"], "stopped", "{status}");
    assert_eq!(d.terminate(), 0);
}

#[test]
fn webhook_listen_without_a_secret_file_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = keelson(&["daemon", "--repo", "file:///nowhere.git", "--webhook-listen", "127.0.0.1:0"], tmp.path());
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--webhook-secret-file"));
}

/// The real deliveries in ../shared/corpus/webhooks, written by the forges themselves: each is
/// accepted when signed with the test's secret, and what is not a push to the tracked branch
/// (`master` there) is ignored.
#[test]
fn forge_deliveries_from_the_corpus_are_accepted_or_ignored() {
    let corpus = workspace_root().join("../shared/corpus/webhooks");
    if !corpus.is_dir() {
        assert!(std::env::var_os("CI").is_none(), "the webhook corpus is missing at {}", corpus.display());
        eprintln!("SKIP: no webhook corpus at {}", corpus.display());
        return;
    }
    let (tmp, repo) = template_repo();
    git(&repo, &["branch", "master"]);
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let d = Daemon::start(
        &[
            "daemon",
            "--repo",
            repo.to_str().unwrap(),
            "--branch",
            "master",
            "--listen",
            "127.0.0.1:0",
            "--webhook-listen",
            "127.0.0.1:0",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
        tmp.path(),
    );
    let hook = d.stdout_line("webhooks on ", Duration::from_secs(10));
    let cases: &[(&str, &str, &str, &str)] = &[
        ("github/push-with-new-branch.payload.json", "github", "push", "accepted"),
        ("github/push-payload.json", "github", "push", "ignored"),
        ("github/push-1.payload.json", "github", "push", "ignored"),
        ("github/push-with-organization.payload.json", "github", "push", "ignored"),
        ("github/ping-payload.json", "github", "ping", "ignored"),
        ("gitlab/push-event.json", "gitlab", "Push Hook", "accepted"),
        ("gitlab/tag-event.json", "gitlab", "Tag Push Hook", "ignored"),
        ("gitea/push-event.json", "gitea", "push", "accepted"),
        ("bitbucket/repo-push.json", "bitbucket", "repo:push", "ignored"),
    ];
    for (i, (file, forge, event, expected)) in cases.iter().enumerate() {
        let body = std::fs::read(corpus.join(file)).unwrap();
        let sig = hmac_hex(SECRET.as_bytes(), &body);
        let delivery = format!("corpus-{i}");
        let prefixed = format!("sha256={sig}");
        let headers: Vec<(&str, &str)> = match *forge {
            "github" => {
                vec![("X-GitHub-Event", event), ("X-GitHub-Delivery", &delivery), ("X-Hub-Signature-256", &prefixed)]
            }
            "gitlab" => vec![("X-Gitlab-Event", event), ("X-Gitlab-Event-UUID", &delivery), ("X-Gitlab-Token", SECRET)],
            "gitea" => vec![("X-Gitea-Event", event), ("X-Gitea-Delivery", &delivery), ("X-Gitea-Signature", &sig)],
            _ => vec![("X-Event-Key", event), ("X-Request-UUID", &delivery), ("X-Hub-Signature", &prefixed)],
        };
        let (status, answer) = post(&hook, &headers, &body);
        assert_eq!(status, 202, "{file}: {answer}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["status"], *expected, "{file}: {answer}");
        // The same delivery unsigned is refused.
        let unsigned: Vec<(&str, &str)> = headers
            .iter()
            .copied()
            .filter(|(k, _)| k.starts_with("X-") && !k.contains("Signature") && !k.contains("Token"))
            .collect();
        assert_eq!(post(&hook, &unsigned, &body).0, 401, "{file} unsigned");
    }
    let webhook = d.json("/api/v1/status")["source"]["webhook"].clone();
    assert_eq!(webhook["accepted"], 3, "{webhook}");
    assert_eq!(webhook["ignored"], 6, "{webhook}");
    assert_eq!(webhook["rejected"], 9, "{webhook}");
    assert_eq!(d.terminate(), 0);
}

/// Two daemons on one PostgreSQL ledger push one status branch: each builds on the other's
/// commits (their trailers verify against the shared ledger), and the remote ends up recording
/// the whole chain.
#[test]
fn two_daemons_on_one_postgres_ledger_push_one_status_branch() {
    let Ok(admin) = std::env::var("KEELSON_TEST_POSTGRES_URL") else {
        assert!(std::env::var_os("CI").is_none(), "KEELSON_TEST_POSTGRES_URL must be set when CI is set");
        println!("SKIP: KEELSON_TEST_POSTGRES_URL not set");
        return;
    };
    let psql = |sql: &str| {
        let out =
            std::process::Command::new("psql").args([&admin, "-v", "ON_ERROR_STOP=1", "-qc", sql]).output().unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let name = format!("keelson_remote_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {name}"));
    psql(&format!("CREATE DATABASE {name}"));
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    let db = format!("{base}/{name}");
    let r = Remote::new();
    let url = r.url();
    let start = |data: &str| {
        let data = r.tmp.path().join(data);
        Daemon::start(
            &[
                "daemon",
                "--repo",
                &url,
                "--data-dir",
                data.to_str().unwrap(),
                "--database",
                &db,
                "--listen",
                "127.0.0.1:0",
                "--poll-interval",
                "300ms",
                "--push-interval",
                "100ms",
                "--sim-rollout-time",
                "100ms",
            ],
            r.tmp.path(),
        )
    };
    let a = start("a");
    let b = start("b");
    a.wait_all_healthy(4, "four apps Healthy on a", Duration::from_secs(60));
    b.wait_all_healthy(4, "four apps Healthy on b", Duration::from_secs(60));
    r.push_replicas("3", "5");
    a.wait_for("storefront at 5 replicas", Duration::from_secs(30), |d| {
        let app = d.app("storefront")?;
        (app["phase"] == "Healthy" && app["desiredCommit"] == git(&r.dev, &["rev-parse", "HEAD"])).then_some(())
    });
    // Both settle on one remote tip that records the whole ledger.
    for d in [&a, &b] {
        d.wait_for("the status branch pushed and agreed on", Duration::from_secs(30), |d| {
            let status = d.json("/api/v1/status");
            assert_ne!(status["statusBranch"]["state"], "stopped", "{status}");
            let pushed = status["statusPush"]["pushedCommit"].as_str()?.to_owned();
            (remote_status_tip(&r.origin).as_deref() == Some(pushed.as_str())).then_some(())
        });
    }
    let adopted = [&a, &b].iter().any(|d| d.log().contains("another replica of this ledger"));
    assert!(adopted, "neither daemon built on the other's status commits:\n{}\n{}", a.log(), b.log());
    assert_eq!(a.terminate(), 0);
    assert_eq!(b.terminate(), 0);
    let out = keelson(&["audit", "verify", "--database", &db, "--repo", r.origin.to_str().unwrap()], r.tmp.path());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    psql(&format!("DROP DATABASE {name}"));
}

/// A daemon killed just before a push of the status branch loses nothing: the next start drains
/// the outbox and pushes at once, and the remote's trailers match the ledger one to one.
#[test]
fn a_crash_mid_push_loses_nothing_and_the_next_start_pushes() {
    let r = Remote::new();
    let (url, data) = (r.url(), r.data());
    let args = [
        "daemon",
        "--repo",
        &url,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--push-interval",
        "100ms",
        "--sim-rollout-time",
        "100ms",
    ];
    let d = Daemon::start_with_env(&args, r.tmp.path(), &[("KEELSON_CRASH_AT", "mid-push")]);
    assert_ne!(d.wait_exit(Duration::from_secs(60)), 0, "the daemon aborted at mid-push");
    assert!(remote_status_tip(&r.origin).is_none(), "nothing was pushed before the crash point");
    let d = Daemon::start(&args, r.tmp.path());
    d.wait_all_healthy(4, "four apps Healthy after the restart", Duration::from_secs(60));
    let entries = d.wait_for("every entry pushed", Duration::from_secs(30), |d| {
        let entries = d.json("/api/v1/audit?limit=10000")["entries"].as_array().unwrap().len();
        let log = git(&r.origin, &["log", "keelson/status", "--format=%B"]);
        let pushed = log.lines().filter(|l| l.starts_with("Keelson-Audit: ")).count();
        (remote_status_tip(&r.origin).is_some() && pushed == entries).then_some(entries)
    });
    assert!(entries > 0);
    assert_eq!(d.terminate(), 0);
    let db = r.data().join("keelson.db");
    let out = keelson(
        &["audit", "verify", "--database", db.to_str().unwrap(), "--repo", r.origin.to_str().unwrap()],
        r.tmp.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}
