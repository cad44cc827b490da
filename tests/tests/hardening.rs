//! Hostile and careless operators, against the real binary: a ledger deleted under the daemon,
//! corrupt objects in the state repository, a repository that vanishes before SIGTERM, a flood of
//! half-sent API requests, hand-edited status files, two daemons on one repository.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use keelson_e2e::{Daemon, edit, git, keelson, metric, template_repo};

fn up_args(repo: &str) -> Vec<&str> {
    vec!["up", "--dir", repo, "--listen", "127.0.0.1:0", "--sim-rollout-time", "200ms"]
}

/// `(status, body)` of `/readyz`, waiting (bounded) until `want` holds.
fn wait_readyz(d: &Daemon, what: &str, want: impl Fn(u16, &str) -> bool) -> String {
    d.wait_for(what, Duration::from_secs(30), |d| {
        let (code, body) = d.get("/readyz");
        want(code, &body).then_some(body)
    })
}

fn status_tip(repo: &Path) -> String {
    git(repo, &["rev-parse", "keelson/status"])
}

/// Item 2: the ledger file deleted while the daemon runs.
#[test]
fn a_deleted_ledger_stops_applying_and_a_restart_refuses_to_start_a_new_chain_unasked() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d = Daemon::start(&up_args(r), tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    let deployed = d.app("storefront").unwrap()["desiredCommit"].clone();

    std::fs::remove_file(repo.join(".keelson/keelson.db")).unwrap();
    let body = wait_readyz(&d, "/readyz 503 naming the ledger", |code, _| code == 503);
    assert!(body.contains("audit ledger") && body.contains("was deleted"), "{body}");
    let status = d.json("/api/v1/status");
    assert_eq!(status["ledger"]["state"], "replaced", "{status}");
    assert_eq!(status["ready"], false, "{status}");
    let (code, verify) = d.get("/api/v1/audit/verify");
    assert_eq!(code, 503, "the API no longer says the chain verifies: {verify}");

    // A change is not applied: no provider call, the app stays at what was deployed.
    let calls = metric(&d.get("/metrics").1, "keelson_provider_calls_total");
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&repo, &["commit", "-qam", "Scale storefront to 5"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("the new commit loaded", Duration::from_secs(30), |d| {
        (d.json("/api/v1/status")["source"]["commit"] == head.as_str()).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&d.get("/metrics").1, "keelson_provider_calls_total"), calls, "a provider was called");
    assert_eq!(d.app("storefront").unwrap()["desiredCommit"], deployed);
    assert!(d.log().contains("replaced under the daemon"), "{}", d.log());
    assert_eq!(d.terminate(), 0);

    // The next start finds a fresh ledger under a status branch that anchors the old chain.
    let anchored = status_tip(&repo);
    let out = keelson(&up_args(r), tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to start") && err.contains("--new-audit-chain"), "{err}");
    assert_eq!(status_tip(&repo), anchored, "nothing was written on the status branch");

    // Said explicitly, a new chain starts; the status branch records it from seq 1 again.
    let mut args = up_args(r);
    args.push("--new-audit-chain");
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy on the new chain", Duration::from_secs(60));
    d.wait_for("storefront at the new commit", Duration::from_secs(30), |d| {
        (d.app("storefront")?["desiredCommit"] == head.as_str()).then_some(())
    });
    assert_eq!(d.terminate(), 0);
    let log = git(&repo, &["log", "--format=%B", "keelson/status"]);
    assert!(log.contains("Keelson-Audit-Chain: new"), "{log}");
    let newest = git(&repo, &["log", "-1", "--format=%B", "keelson/status"]);
    assert!(newest.contains("Keelson-Audit: "), "the status branch goes on being written: {newest}");
    let verify = keelson(&["audit", "verify", "--repo", r], tmp.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// Item 4: a ledger write that fails, on the real daemon. The running daemon's file-size limit is
/// lowered (with `prlimit`) to one byte, so the kernel refuses every file write past the first
/// byte with EFBIG, as a full disk refuses it with ENOSPC (the daemon catches SIGXFSZ, so the
/// write fails instead of killing it); its log is lost meanwhile, the API is not (sockets are
/// not files). Raising the limit again is the disk having room again.
#[test]
fn a_failing_ledger_write_turns_readiness_503_until_a_write_succeeds_again() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d = Daemon::start(&up_args(r), tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    let pid = d.pid().to_string();
    let prlimit = |limit: &str| {
        let out =
            std::process::Command::new("prlimit").args(["--pid", &pid, &format!("--fsize={limit}")]).output().unwrap();
        assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
    };
    prlimit("1:unlimited");
    let calls = metric(&d.get("/metrics").1, "keelson_provider_calls_total");
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&repo, &["commit", "-qam", "Scale storefront to 5"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let body = wait_readyz(&d, "/readyz 503: the ledger cannot be written", |code, _| code == 503);
    assert!(body.contains("audit ledger cannot be written"), "{body}");
    assert_eq!(d.json("/api/v1/status")["ledger"]["state"], "failing");
    assert_eq!(metric(&d.get("/metrics").1, "keelson_provider_calls_total"), calls, "no intent, no provider call");
    // The engine retries (with backoff) while the disk stays full, so the failed COMMITs land on
    // several pooled connections (each was left unusable before the fix).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(metric(&d.get("/metrics").1, "keelson_provider_calls_total"), calls, "no intent, no provider call");

    prlimit("unlimited:unlimited");
    wait_readyz(&d, "/readyz 200 again", |code, _| code == 200);
    d.wait_for("storefront Healthy at the new commit", Duration::from_secs(60), |d| {
        let a = d.app("storefront")?;
        (a["phase"] == "Healthy" && a["desiredCommit"] == head.as_str()).then_some(())
    });
    // Every later append works on every pooled connection (a connection left inside the failed
    // transaction failed each append it was handed, every few appends, for good).
    for replicas in 6..=9 {
        edit(
            &repo.join("apps/storefront/deploy.yaml"),
            &format!("replicas: {}", replicas - 1),
            &format!("replicas: {replicas}"),
        );
        git(&repo, &["commit", "-qam", &format!("Scale storefront to {replicas}")]);
        let head = git(&repo, &["rev-parse", "HEAD"]);
        d.wait_for("storefront Healthy at the next commit", Duration::from_secs(60), |d| {
            let a = d.app("storefront")?;
            (a["phase"] == "Healthy" && a["desiredCommit"] == head.as_str()).then_some(())
        });
    }
    let log = d.log();
    let after = &log[log.rfind("can be written again").expect("the recovery is logged")..];
    assert!(!after.contains("audit ledger failed") && !after.contains("could not be carried out"), "{after}");
    assert_eq!(d.terminate(), 0);
    let verify = keelson(&["audit", "verify", "--repo", r], tmp.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// Overwrites the loose object `id` of `repo` with bytes that do not inflate.
fn corrupt_object(repo: &Path, id: &str) {
    let path = repo.join(".git/objects").join(&id[..2]).join(&id[2..]);
    assert!(path.exists(), "{id} is not a loose object");
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap();
    std::fs::write(&path, b"this is not a zlib stream").unwrap();
}

/// Commits the work tree on top of the branch with plumbing only (porcelain `git commit` would
/// read the corrupt tree of HEAD), corrupting the new root tree first if asked; returns the commit.
fn commit_over_corruption(repo: &Path, message: &str, corrupt: bool) -> String {
    git(repo, &["add", "-A"]);
    let tree = git(repo, &["write-tree"]);
    let commit = git(repo, &["commit-tree", &tree, "-p", "HEAD", "-m", message]);
    if corrupt {
        corrupt_object(repo, &tree);
    }
    git(repo, &["update-ref", "refs/heads/main", &commit]);
    commit
}

/// Item 3: a corrupt tree object, at start-up and at run time.
#[test]
fn a_corrupt_tree_is_reported_and_retried_and_a_later_good_commit_is_picked_up() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let deploy = repo.join("apps/storefront/deploy.yaml");
    edit(&deploy, "replicas: 3", "replicas: 4");
    git(&repo, &["commit", "-qam", "Scale storefront to 4"]);
    corrupt_object(&repo, &git(&repo, &["rev-parse", "HEAD^{tree}"]));

    let d = Daemon::start(&up_args(r), tmp.path());
    let body =
        wait_readyz(&d, "/readyz naming the source error", |code, body| code == 503 && body.contains("listing files"));
    assert!(body.contains("no commit of the tracked branch has been loaded yet"), "{body}");
    let error = d.wait_for("a retry", Duration::from_secs(30), |d| {
        let e = d.json("/api/v1/status")["source"]["error"].clone();
        (e["attempts"].as_u64()? >= 2).then_some(e)
    });
    assert_eq!(error["commit"], git(&repo, &["rev-parse", "HEAD"]).as_str(), "{error}");
    assert!(d.log().contains("reading the source failed"), "{}", d.log());

    // A good commit on top is picked up without a restart.
    edit(&deploy, "replicas: 4", "replicas: 5");
    let good = commit_over_corruption(&repo, "Scale storefront to 5", false);
    wait_readyz(&d, "/readyz 200", |code, _| code == 200);
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    let status = d.json("/api/v1/status");
    assert_eq!(status["source"]["commit"], good.as_str(), "{status}");
    assert!(status["source"]["error"].is_null(), "{status}");

    // At run time: ready stays 200, the error is named, the last good commit stays in force.
    edit(&deploy, "replicas: 5", "replicas: 6");
    let bad = commit_over_corruption(&repo, "Scale storefront to 6", true);
    let body = wait_readyz(&d, "/readyz naming the run-time source error", |code, body| {
        code == 200 && body.contains("the source cannot be read")
    });
    assert!(body.contains(&bad[..12]), "names the commit: {body}");
    assert_eq!(d.json("/api/v1/status")["source"]["commit"], good.as_str());
    edit(&deploy, "replicas: 6", "replicas: 7");
    let fixed = commit_over_corruption(&repo, "Scale storefront to 7", false);
    d.wait_for("the fixed commit loaded", Duration::from_secs(30), |d| {
        let s = d.json("/api/v1/status");
        (s["source"]["commit"] == fixed.as_str() && s["source"]["error"].is_null()).then_some(())
    });
    assert_eq!(d.terminate(), 0);
}

/// Item 6: SIGTERM while the outbox holds entries and the repository has gone.
#[test]
fn sigterm_with_the_repository_gone_exits_within_the_shutdown_deadline() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let data = tmp.path().join("data");
    let args = [
        "daemon",
        "--repo",
        r,
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--sim-rollout-time",
        "1500ms",
        "--shutdown-timeout",
        "2s",
    ];
    let d = Daemon::start(&args, tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&repo, &["commit", "-qam", "Scale storefront to 5"]);
    d.wait_for("storefront Progressing", Duration::from_secs(30), |d| {
        (d.app("storefront")?["phase"] == "Progressing").then_some(())
    });
    // The repository goes away (moved at once, then deleted: the daemon is writing into it), and
    // a file where it was makes sure nothing can recreate it.
    let moved = tmp.path().join("moved-away");
    std::fs::rename(&repo, &moved).unwrap();
    std::fs::write(&repo, b"gone").unwrap();
    std::fs::remove_dir_all(&moved).ok();
    d.wait_for("storefront Healthy (recorded in the ledger only)", Duration::from_secs(30), |d| {
        (d.app("storefront")?["phase"] == "Healthy").then_some(())
    });
    let status = d.wait_for("status commits failing", Duration::from_secs(30), |d| {
        let s = d.json("/api/v1/status");
        (s["statusBranch"]["state"] == "failing").then_some(s)
    });
    assert_eq!(status["ready"], true, "a status branch that cannot be written keeps readiness: {status}");
    let stopping = Instant::now();
    let code = d.terminate_within(Duration::from_secs(20));
    let took = stopping.elapsed();
    assert_eq!(code, 0);
    assert!(took < Duration::from_secs(15), "shutdown took {took:?}");
    let log = std::fs::read_to_string(tmp.path().join(format!("daemon-{}.log", std::process::id()))).unwrap();
    assert!(log.contains("they stay in the outbox"), "{log}");
}

/// Item 7: a flood of half-sent requests against a daemon with 256 file descriptors.
#[test]
fn a_flood_of_half_sent_requests_is_capped_and_timed_out_and_the_engine_keeps_working() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let mut args = up_args(r);
    args.extend(["--api-header-timeout", "2s"]);
    // soft = hard = 256: without a cap, 400 idle connections would take every descriptor.
    let d = Daemon::start_wrapped(&["prlimit", "--nofile=256:256", "--"], &args, tmp.path(), &[]);
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    assert!(d.log().contains("max_connections=64"), "a quarter of 256: {}", d.log());
    let addr: SocketAddr = d.url.trim_start_matches("http://").parse().unwrap();

    let mut flood = Vec::new();
    for _ in 0..400 {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        s.write_all(b"GET /api/v1/apps HTTP/1.1\r\nHost: keelson\r\nX-Slow: ").unwrap();
        flood.push(s);
    }
    // While the flood is held, the engine and the recorder still have their descriptors.
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&repo, &["commit", "-qam", "Scale storefront to 5"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    // Every half-sent request is closed by the server: over the cap at once (503), the rest when
    // the header timeout expires. None is left waiting.
    let started = Instant::now();
    let mut over_capacity = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        match s.read_to_end(&mut buf) {
            Ok(_) => over_capacity += usize::from(buf.starts_with(b"HTTP/1.1 503")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("a half-sent request was not closed by the server: {e}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(15), "closing the flood took {:?}", started.elapsed());
    // Over the cap they are answered 503 or, in a burst, reset; a few must have got the answer.
    assert!(over_capacity >= 1, "no connection was answered 503");
    drop(flood);
    d.wait_for("storefront Healthy at the new commit", Duration::from_secs(60), |d| {
        let a = d.app("storefront")?;
        (a["phase"] == "Healthy" && a["desiredCommit"] == head.as_str()).then_some(())
    });
    wait_readyz(&d, "/readyz 200 after the flood", |code, _| code == 200);
    let log = d.log();
    assert!(!log.to_lowercase().contains("too many open files"), "{log}");
    assert_eq!(d.terminate(), 0);
    let tip = git(&repo, &["log", "-1", "--format=%B", "keelson/status"]);
    assert!(tip.contains("storefront"), "the recorder kept writing: {tip}");
}

/// Item 9: a status file edited by hand on the status branch.
#[test]
fn a_hand_edited_status_file_fails_verify_and_stops_status_writes_until_reset() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let d = Daemon::start(&up_args(r), tmp.path());
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    assert_eq!(d.terminate(), 0);
    let good = status_tip(&repo);
    let verify = keelson(&["audit", "verify", "--repo", r], tmp.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));

    let wt = tmp.path().join("status-wt");
    git(&repo, &["worktree", "add", "-q", wt.to_str().unwrap(), "keelson/status"]);
    edit(&wt.join("status/storefront.yaml"), "phase: Healthy", "phase: Failed");
    git(&wt, &["commit", "-qam", "tweak"]);
    let foreign = status_tip(&repo);

    let verify = keelson(&["audit", "verify", "--repo", r], tmp.path());
    let out = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{out}");
    assert!(out.contains("status/storefront.yaml") && out.contains("edited by hand"), "{out}");

    let d = Daemon::start(&up_args(r), tmp.path());
    let body = wait_readyz(&d, "/readyz 200 naming the status branch", |code, body| {
        code == 200 && body.contains("statusBranch")
    });
    assert!(body.contains("was not written by this daemon"), "{body}");
    assert_eq!(d.json("/api/v1/status")["statusBranch"]["state"], "stopped");
    // The daemon reconciles on, but never builds on the foreign tip.
    edit(&repo.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&repo, &["commit", "-qam", "Scale storefront to 5"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    d.wait_for("storefront Healthy at the new commit", Duration::from_secs(60), |d| {
        let a = d.app("storefront")?;
        (a["phase"] == "Healthy" && a["desiredCommit"] == head.as_str()).then_some(())
    });
    assert_eq!(status_tip(&repo), foreign);
    // Reset to the last good commit: status writes resume and catch up.
    git(&repo, &["update-ref", "refs/heads/keelson/status", &good]);
    d.wait_for("status writes resumed", Duration::from_secs(30), |d| {
        (d.json("/api/v1/status")["statusBranch"]["state"] == "recording" && status_tip(&repo) != good).then_some(())
    });
    assert_eq!(d.terminate(), 0);
    let verify = keelson(&["audit", "verify", "--repo", r], tmp.path());
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

/// Item 10: a second daemon on the same repository with another data directory.
#[test]
fn a_second_daemon_on_the_same_repository_is_refused_whatever_its_data_dir() {
    let (tmp, repo) = template_repo();
    let r = repo.to_str().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let args = |data: &Path| -> Vec<String> {
        ["daemon", "--repo", r, "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"]
            .map(str::to_owned)
            .to_vec()
    };
    let first_args = args(&a);
    let first = Daemon::start(&first_args.iter().map(String::as_str).collect::<Vec<_>>(), tmp.path());
    let second_args = args(&b);
    let out = keelson(&second_args.iter().map(String::as_str).collect::<Vec<_>>(), tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running") && err.contains("status branch keelson/status"), "{err}");
    assert!(err.contains(a.to_str().unwrap()), "names the holder's data directory: {err}");
    // Another status branch is another daemon's business.
    let mut other = second_args.clone();
    other.extend(["--status-branch".to_owned(), "keelson/status-b".to_owned()]);
    let second = Daemon::start(&other.iter().map(String::as_str).collect::<Vec<_>>(), tmp.path());
    assert_eq!(second.terminate(), 0);
    assert_eq!(first.terminate(), 0);
}
