//! Shared helpers: fixture plugins (real processes) and bounded waits.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use keelson_provider_plugin::HostConfig;

/// A fixture script under `tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    assert!(path.exists(), "no fixture {}", path.display());
    path.display().to_string()
}

/// The example plugin a third party would start from.
pub fn example() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/dns-records/dns-records");
    assert!(path.exists(), "no example plugin at {}", path.display());
    path.display().to_string()
}

/// A host config for `command` with a short deadline and quick restarts, so failing tests stay fast.
pub fn config(command: &[&str]) -> HostConfig {
    let mut c = HostConfig::new("t", command.iter().map(|s| s.to_string()).collect());
    c.timeout = Duration::from_secs(2);
    c.restart_backoff = Duration::from_millis(100);
    c.max_restart_backoff = Duration::from_millis(400);
    c
}

/// The shape fixture doing `mode` on `method` (see its docstring).
pub fn shape(method: &str, mode: &str, result: Option<&str>) -> HostConfig {
    let mut c = config(&[&fixture("shape.py")]);
    c.env.insert("SHAPE_METHOD".into(), method.into());
    c.env.insert("SHAPE_MODE".into(), mode.into());
    if let Some(r) = result {
        c.env.insert("SHAPE_RESULT".into(), r.into());
    }
    c
}

/// Polls `probe` every 20 ms for at most `limit`.
pub async fn eventually<T>(what: &str, limit: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True while a process with this id exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Sends SIGKILL to one process (one the test started).
pub fn kill(pid: u32) {
    let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill -9 {pid}");
}
