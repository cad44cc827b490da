//! Helpers for end-to-end tests of the real `keelson` binary: temp git repositories, a running
//! daemon on a free loopback port, bounded waits. Every wait here has a deadline.
#![forbid(unsafe_code)]

pub mod githttp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `keelson` binary the tests run: this crate's `keelson-crashable` (the CLI with crash points
/// compiled in), which cargo builds next to the test executables; `KEELSON_BIN` overrides it.
pub fn keelson_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(bin) = std::env::var("KEELSON_BIN") {
            return PathBuf::from(bin);
        }
        // Test executables live in target/<profile>/deps; the package's binaries one level up.
        let exe = std::env::current_exe().expect("the test executable's path");
        let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
        let bin = dir.join("keelson-crashable");
        assert!(
            bin.exists(),
            "{} is missing: run the tests through cargo (`cargo test -p keelson-e2e`), which builds it",
            bin.display()
        );
        bin
    })
    .clone()
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Runs `keelson ARGS` to completion (bounded by 120 s).
pub fn keelson(args: &[&str], dir: &Path) -> Output {
    let child = Command::new(keelson_bin())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning keelson");
    wait_output(child, Duration::from_secs(120))
}

fn wait_output(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for keelson"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("keelson did not finish within {limit:?}");
        }
    }
}

/// Runs `git ARGS` in `dir` with a fixed identity; panics with git's stderr on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Replaces `from` with `to` in a file (exactly one occurrence expected).
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once in {}", path.display());
    std::fs::write(path, text.replace(from, to)).expect("writing file");
}

/// A temp directory holding a state repository made by `keelson init`.
pub fn template_repo() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let repo = tmp.path().join("state");
    let out = keelson(&["init", repo.to_str().expect("utf-8 path")], tmp.path());
    assert!(out.status.success(), "keelson init failed: {}", String::from_utf8_lossy(&out.stderr));
    (tmp, repo)
}

/// A running `keelson` daemon process.
pub struct Daemon {
    child: Option<Child>,
    pub url: String,
    stderr_log: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `keelson ARGS` (a daemon verb with `--listen 127.0.0.1:0`) and waits for its address.
    pub fn start(args: &[&str], dir: &Path) -> Daemon {
        Self::start_with_env(args, dir, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Daemon {
        Self::start_wrapped(&[], args, dir, env)
    }

    /// Like [`Daemon::start_with_env`], run through a wrapper command (e.g. `prlimit --nofile=256 --`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Daemon {
        let stderr_log = dir.join(format!("daemon-{}.log", std::process::id()));
        let log = std::fs::File::options().create(true).append(true).open(&stderr_log).expect("daemon log file");
        let bin = keelson_bin();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning keelson daemon");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(rest.trim().to_owned());
                }
                kept.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut daemon = Daemon { child: Some(child), url: String::new(), stderr_log, stdout: lines };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => daemon.url = url,
            Err(_) => panic!("daemon did not report its address within 60 s; log:\n{}", daemon.log()),
        }
        daemon
    }

    /// The rest of the first stdout line starting with `prefix` (waits at most `limit`).
    pub fn stdout_line(&self, prefix: &str, limit: Duration) -> String {
        self.wait_for(&format!("a line starting {prefix:?} on stdout"), limit, |d| {
            let lines = d.stdout.lock().unwrap_or_else(|e| e.into_inner());
            lines.iter().find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_owned()))
        })
    }

    /// The daemon's process id (of the wrapper, if one execs it, which `prlimit` does).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    /// What the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// GET a path of the status API: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let r = keelson::client::get(&format!("{}{path}", self.url), Duration::from_secs(10)).expect("GET status API");
        (r.status, r.body)
    }

    /// GET a path and parse the JSON body (panics on a non-200 answer).
    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
    }

    /// Polls `probe` every 50 ms until it returns Some, for at most `limit`.
    pub fn wait_for<T>(&self, what: &str, limit: Duration, mut probe: impl FnMut(&Daemon) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe(self) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {limit:?} waiting for {what}; daemon log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most `limit`) until `/api/v1/apps` lists exactly `apps` apps, all Healthy.
    pub fn wait_all_healthy(&self, apps: usize, what: &str, limit: Duration) {
        self.wait_for(what, limit, |d| {
            let listed = d.json("/api/v1/apps");
            let list = listed["apps"].as_array()?;
            (list.len() == apps && list.iter().all(|a| a["phase"] == "Healthy")).then_some(())
        });
    }

    /// The app's status, or None while the API does not know it.
    pub fn app(&self, name: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/api/v1/apps/{name}"));
        (status == 200).then(|| serde_json::from_str(&body).expect("app JSON"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit code.
    pub fn terminate(self) -> i32 {
        self.terminate_within(Duration::from_secs(30))
    }

    /// Sends SIGTERM and waits at most `limit` for the exit code (panics past it).
    pub fn terminate_within(mut self, limit: Duration) -> i32 {
        let mut child = self.child.take().expect("daemon running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daemon did not exit within {limit:?} of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL (no chance to clean up).
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (bounded) for a daemon that is expected to exit on its own; returns its exit code.
    pub fn wait_exit(mut self, limit: Duration) -> i32 {
        let mut child = self.child.take().expect("daemon running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("process did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads one metric sample's value from Prometheus text (`name{labels} value`), summing label sets.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `POST url` with extra headers and a body (bounded by 10 s): (status, body).
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http:// URL");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(authority).expect("connecting");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("writing request");
    stream.write_all(body).expect("writing body");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Hex HMAC-SHA256 of `body` with `secret`, as forges sign webhook deliveries.
pub fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}
