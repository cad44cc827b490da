//! An `http://` remote served by `git http-backend` behind basic authentication, on loopback.

use std::path::Path;
use std::time::Duration;

use keelson_e2e::githttp::{GitHttp, HTTP_BACKEND, bare_clone};
use keelson_e2e::{Daemon, edit, git, template_repo};

fn remote_status_tip(origin: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["--git-dir", origin.to_str().unwrap(), "rev-parse", "--verify", "--quiet", "refs/heads/keelson/status"])
        .output()
        .unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn an_http_remote_with_basic_auth_is_polled_fetched_and_pushed_to() {
    let (tmp, seed) = template_repo();
    let root = tmp.path().join("srv");
    std::fs::create_dir_all(&root).unwrap();
    let origin = bare_clone(&root, "state.git", &seed);
    let Some(server) = GitHttp::start(&root, "alice", "pa55word") else {
        assert!(std::env::var_os("CI").is_none(), "{HTTP_BACKEND} is missing (install git)");
        eprintln!("SKIP: no {HTTP_BACKEND}");
        return;
    };
    let password = tmp.path().join("password");
    std::fs::write(&password, "pa55word\n").unwrap();
    let url = server.url("state.git");
    let data = tmp.path().join("data");
    let d = Daemon::start(
        &[
            "daemon",
            "--repo",
            &url,
            "--username",
            "alice",
            "--password-file",
            password.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "300ms",
            "--push-interval",
            "200ms",
            "--sim-rollout-time",
            "100ms",
        ],
        tmp.path(),
    );
    d.wait_all_healthy(4, "four apps Healthy", Duration::from_secs(60));
    // The status branch is pushed over HTTP (receive-pack, authenticated).
    let cache = data.join("source.git");
    d.wait_for("the status branch pushed", Duration::from_secs(30), |_| {
        let ours = git(&cache, &["rev-parse", "refs/heads/keelson/status"]);
        (remote_status_tip(&origin).as_deref() == Some(ours.as_str())).then_some(())
    });

    // Idle polls of an unchanged remote: one ref lookup each, nothing fetched.
    std::thread::sleep(Duration::from_millis(500));
    let before = server.requests().len();
    std::thread::sleep(Duration::from_secs(2));
    let idle: Vec<_> = server.requests().into_iter().skip(before).collect();
    let lookups = idle.iter().filter(|r| r.command.as_deref() == Some("ls-refs")).count();
    assert!(lookups >= 3, "{lookups} ref lookups in 2 s of 300 ms polls: {idle:#?}");
    assert!(
        idle.iter()
            .all(|r| r.command.as_deref() == Some("ls-refs") || (r.method == "GET" && r.path.ends_with("/info/refs"))),
        "an idle poll did more than look up the ref: {idle:#?}"
    );

    // A commit pushed to the remote is polled, fetched and loaded.
    let dev = tmp.path().join("dev");
    git(tmp.path(), &["clone", "-q", origin.to_str().unwrap(), dev.to_str().unwrap()]);
    edit(&dev.join("apps/storefront/deploy.yaml"), "replicas: 3", "replicas: 5");
    git(&dev, &["commit", "-qam", "storefront to 5"]);
    git(&dev, &["push", "-q", "origin", "main"]);
    let head = git(&dev, &["rev-parse", "HEAD"]);
    d.wait_for("the pushed commit loaded", Duration::from_secs(20), |d| {
        (d.json("/api/v1/status")["source"]["commit"] == head).then_some(())
    });

    // The server's password changes: one clear error, never the password, and /readyz stays 200.
    *server.password.lock().unwrap() = "rotated".into();
    let error = d.wait_for("a credentials error", Duration::from_secs(20), |d| {
        let e = d.json("/api/v1/status")["source"]["remote"]["error"].clone();
        (!e.is_null()).then_some(e)
    });
    assert_eq!(error["cause"], "badCredentials", "{error}");
    assert_eq!(d.get("/readyz").0, 200);
    // The file is read again at every fetch: rotating it clears the error.
    std::fs::write(&password, "rotated\n").unwrap();
    d.wait_for("the error to clear", Duration::from_secs(20), |d| {
        d.json("/api/v1/status")["source"]["remote"]["error"].is_null().then_some(())
    });
    let (_, status) = d.get("/api/v1/status");
    assert!(!status.contains("pa55word") && !status.contains("rotated"), "{status}");
    assert_eq!(d.terminate(), 0);
    let log = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("daemon-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("badCredentials"), "{log}");
    assert!(!log.contains("pa55word") && !log.contains("rotated\n"), "a password reached the log:\n{log}");
    let basic = keelson::source::transport::base64_encode(b"alice:pa55word");
    assert!(!log.contains(&basic), "the basic credentials reached the log");
}
