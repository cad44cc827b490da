//! A `keelson daemon` process under measurement: started on a free loopback port, read through its
//! status API and `/proc`, stopped with SIGTERM, killed on drop. Every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// A running daemon.
pub struct Daemon {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: PathBuf,
    /// When the process was spawned.
    pub started: Instant,
}

impl Daemon {
    /// Spawns `bin daemon` on `repo` with its data in `data_dir`, and waits (≤ 60 s) for its address.
    pub fn start(bin: &Path, repo: &Path, data_dir: &Path) -> Result<Daemon> {
        std::fs::create_dir_all(data_dir)?;
        let log = data_dir.join("daemon.log");
        let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .args(["--log-level", "warn", "daemon", "--listen", "127.0.0.1:0", "--sim-rollout-time", "0ms"])
            .arg("--repo")
            .arg(repo)
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .with_context(|| {
                format!("starting {} (build it with `cargo build --release -p keelson`)", bin.display())
            })?;
        let stdout = child.stdout.take().context("daemon stdout is piped")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let mut daemon = Daemon { child: Some(child), url: String::new(), log, started };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => daemon.url = url,
            Err(_) => bail!("the daemon did not print its address within 60 s; its log:\n{}", daemon.log_tail()),
        }
        Ok(daemon)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The last lines the daemon logged, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `GET path` of the status API (10 s timeout): status and body.
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let r = keelson::client::get(&format!("{}{path}", self.url), Duration::from_secs(10))?;
        Ok((r.status, r.body))
    }

    /// `GET path` as JSON, or `None` unless the answer is 200.
    pub fn json(&self, path: &str) -> Result<Option<Value>> {
        let (status, body) = self.get(path)?;
        if status != 200 {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&body).with_context(|| format!("GET {path}: not JSON"))?))
    }

    /// A counter or gauge from `/metrics` (the first sample whose name matches, labels ignored).
    pub fn metric(&self, name: &str) -> Result<f64> {
        let (_, body) = self.get("/metrics")?;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let key = key.split('{').next()?;
                (key == name).then(|| value.parse().ok()).flatten()
            })
            .with_context(|| format!("/metrics has no {name}"))
    }

    /// Polls `probe` every `every` until it returns `Some`, failing after `limit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        every: Duration,
        mut probe: impl FnMut(&Daemon) -> Result<Option<T>>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = probe(self)? {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out after {limit:?} waiting for {what}; daemon log:\n{}", self.log_tail());
            }
            std::thread::sleep(every);
        }
    }

    /// Peak resident set size so far (`VmHWM` of `/proc/<pid>/status`), in bytes.
    pub fn peak_rss_bytes(&self) -> Result<u64> {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).context("reading /proc/<pid>/status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .context("no VmHWM in /proc/<pid>/status")
    }

    /// On-CPU time of each live thread, in nanoseconds (`/proc/<pid>/task/*/schedstat`), for
    /// measuring short windows far below the 10 ms resolution of `/proc/<pid>/stat`.
    pub fn thread_cpu_ns(&self) -> Result<std::collections::HashMap<u32, u64>> {
        let mut out = std::collections::HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{}/task", self.pid())).context("listing /proc/<pid>/task")? {
            let entry = entry?;
            let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            // A thread may exit between the listing and the read; it simply does not count.
            if let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat"))
                && let Some(ns) = text.split_whitespace().next().and_then(|v| v.parse().ok())
            {
                out.insert(tid, ns);
            }
        }
        Ok(out)
    }

    /// SIGTERM, then waits (≤ `limit`) for a clean exit; returns how long the shutdown took.
    /// A daemon that does not stop in time is killed and reported as an error.
    pub fn terminate(mut self, limit: Duration) -> Result<Duration> {
        let Some(mut child) = self.child.take() else { return Ok(Duration::ZERO) };
        let asked = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!("the daemon exited with {status} after SIGTERM; log:\n{}", self.log_tail());
                }
                return Ok(asked.elapsed());
            }
            if asked.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the daemon did not stop within {limit:?} of SIGTERM and was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
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
