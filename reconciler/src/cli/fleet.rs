//! The verbs that read a running daemon's status API (`get`, `history`, `wait`, `status`),
//! through the same view types the API writes.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use keelson_core::AppStatus;
use keelson_core::Phase;
use keelson_core::view::{AppList, History};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::percent_encode;

/// Where the daemon's status API is.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Status API of the daemon.
    #[arg(long, env = "KEELSON_SERVER", default_value = "http://127.0.0.1:7420")]
    pub server: String,
    /// How long one request may take.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub request_timeout: Duration,
}

/// Output of the verbs that show objects (`get`, `history`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ObjectFormat {
    Table,
    Json,
    Yaml,
}

/// What `keelson wait` waits for.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum WaitFor {
    /// Phase `Healthy`.
    Healthy,
    /// The live resources carry the desired digest and are healthy (`inSync`).
    Synced,
}

/// App states `keelson status --fail-on` exits 1 for.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum FailOn {
    /// Phase `Failed` or `RolledBack`.
    Failed,
    /// Phase `Blocked` (policy, freeze, invalid manifest, missing role).
    Blocked,
    /// Phase `Degraded`.
    Degraded,
    /// Not in sync with git.
    OutOfSync,
    /// Never fail on app states.
    None,
}

impl FailOn {
    fn hits(self, a: &AppStatus) -> bool {
        match self {
            FailOn::Failed => matches!(a.phase, Phase::Failed | Phase::RolledBack),
            FailOn::Blocked => a.phase == Phase::Blocked,
            FailOn::Degraded => a.phase == Phase::Degraded,
            FailOn::OutOfSync => !a.in_sync,
            FailOn::None => false,
        }
    }
}

fn get_json<T: DeserializeOwned>(server: &ServerArgs, path: &str) -> Result<T> {
    match try_get(server, path)? {
        Ok(v) => Ok(v),
        Err((status, message)) => bail!("{} answered {status}: {message}", url(server, path)),
    }
}

fn url(server: &ServerArgs, path: &str) -> String {
    format!("{}{path}", server.server.trim_end_matches('/'))
}

/// `Ok(Err((status, message)))` for an answer other than 200 (the API's JSON error message).
fn try_get<T: DeserializeOwned>(server: &ServerArgs, path: &str) -> Result<Result<T, (u16, String)>> {
    let url = url(server, path);
    let response = crate::client::get(&url, server.request_timeout)?;
    if response.status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(response.body);
        return Ok(Err((response.status, message)));
    }
    let value = serde_json::from_str(&response.body)
        .with_context(|| format!("{url} did not answer with the JSON this keelson reads (a different version?)"))?;
    Ok(Ok(value))
}

/// JSON or YAML of a view.
fn print_object<T: Serialize>(value: &T, format: ObjectFormat) -> Result<()> {
    match format {
        ObjectFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        ObjectFormat::Yaml => print!("{}", serde_saphyr::to_string(value).context("writing YAML")?),
        ObjectFormat::Table => unreachable!("tables are printed by each verb"),
    }
    Ok(())
}

fn step(a: &AppStatus) -> String {
    a.progress.as_ref().map_or_else(|| "-".to_owned(), |p| format!("{}/{}", p.step, p.of))
}

/// The fleet as a table (`keelson status`, `keelson get apps`).
pub fn app_table(apps: &[AppStatus]) -> String {
    let mut out = format!("{:<24} {:<12} {:<5} {:<8} {:<13} MESSAGE\n", "APP", "PHASE", "SYNC", "STEP", "COMMIT");
    for a in apps {
        out.push_str(&format!(
            "{:<24} {:<12} {:<5} {:<8} {:<13} {}\n",
            a.name,
            a.phase.to_string(),
            if a.in_sync { "yes" } else { "no" },
            step(a),
            crate::engine::short(&a.desired_commit),
            a.message
        ));
    }
    if apps.is_empty() {
        out.push_str("(no apps yet)\n");
    }
    out
}

/// One app in full, for people (`keelson get app NAME`).
fn app_details(a: &AppStatus) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<18} {v}\n"));
    line("Name:", &a.name);
    line("Phase:", &a.phase.to_string());
    line("Reason:", if a.reason.is_empty() { "-" } else { &a.reason });
    line("Message:", if a.message.is_empty() { "-" } else { &a.message });
    line("In sync:", if a.in_sync { "yes" } else { "no" });
    line("Step:", &step(a));
    line("Desired commit:", if a.desired_commit.is_empty() { "-" } else { &a.desired_commit });
    line("Desired digest:", if a.desired_digest.is_empty() { "-" } else { &a.desired_digest });
    line("Observed digest:", a.observed_digest.as_deref().unwrap_or("-"));
    line("Instance:", if a.instance.is_empty() { "-" } else { &a.instance });
    if let Some(q) = &a.quarantined_digest {
        line("Quarantined:", q);
    }
    if let Some(w) = &a.wanted_commit {
        line("Wanted commit:", w);
    }
    if let Some(t) = &a.last_transition {
        line(
            "Last transition:",
            &format!("{} → {} ({}) at {}, audit seq {}", t.from, t.to, t.action, t.at, t.audit_seq),
        );
    }
    out.push_str("Resources:\n");
    if a.resources.is_empty() {
        out.push_str("  (none observed)\n");
    }
    for r in &a.resources {
        let health = serde_json::to_value(&r.health).map(|v| v.to_string()).unwrap_or_default();
        out.push_str(&format!("  {}  {health}\n", r.id));
    }
    out.push_str(&format!("Inventory:         {} resources (what a prune deletes)\n", a.inventory.len()));
    out
}

fn list(server: &ServerArgs) -> Result<Vec<AppStatus>> {
    Ok(get_json::<AppList>(server, "/api/v1/apps")?.apps)
}

/// `keelson get apps`: once, or with `--watch` every `interval` until `timeout`, printing on change.
pub fn get_apps(server: &ServerArgs, format: ObjectFormat, watch: Option<(Duration, Duration)>) -> Result<ExitCode> {
    let show = |apps: Vec<AppStatus>, watching: bool| -> Result<()> {
        match format {
            ObjectFormat::Table => print!("{}", app_table(&apps)),
            // One document per line while watching, so a consumer can read them as they come.
            ObjectFormat::Json if watching => println!("{}", serde_json::to_string(&AppList { apps })?),
            ObjectFormat::Yaml if watching => {
                println!("---");
                print_object(&AppList { apps }, format)?
            }
            _ => print_object(&AppList { apps }, format)?,
        }
        Ok(())
    };
    let Some((interval, timeout)) = watch else {
        show(list(server)?, false)?;
        return Ok(ExitCode::SUCCESS);
    };
    let deadline = Instant::now() + timeout;
    let mut last: Option<Vec<AppStatus>> = None;
    loop {
        let apps = list(server)?;
        if last.as_ref() != Some(&apps) {
            if last.is_some() && format == ObjectFormat::Table {
                println!();
            }
            show(apps.clone(), true)?;
            last = Some(apps);
        }
        if Instant::now() + interval > deadline {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(interval);
    }
}

/// `keelson get app NAME`.
pub fn get_app(server: &ServerArgs, name: &str, format: ObjectFormat) -> Result<ExitCode> {
    let app: AppStatus = get_json(server, &format!("/api/v1/apps/{}", percent_encode(name)))?;
    match format {
        ObjectFormat::Table => print!("{}", app_details(&app)),
        _ => print_object(&app, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `keelson diff [APP]`: what is live against what git wants, managed field by field, observed now
/// by the daemon (as last observed when it cannot observe); exit 1 when anything differs.
pub fn diff(server: &ServerArgs, name: Option<&str>, format: super::Format) -> Result<ExitCode> {
    let names: Vec<String> = match name {
        Some(name) => vec![name.to_owned()],
        None => get_json::<AppList>(server, "/api/v1/apps")?.apps.into_iter().map(|a| a.name).collect(),
    };
    let mut apps = Vec::with_capacity(names.len());
    for name in &names {
        let path = format!("/api/v1/apps/{}/diff", percent_encode(name));
        match try_get::<LiveDiff>(server, &path)? {
            Ok(diff) => apps.push(diff.into_status()),
            Err((404, _)) => bail!("the daemon at {} has no app {name:?} (see `keelson get apps`)", server.server),
            Err((status, message)) => bail!("{} answered {status}: {message}", url(server, &path)),
        }
    }
    let drifted: Vec<&AppStatus> = apps.iter().filter(|a| !a.drift.is_empty()).collect();
    match format {
        super::Format::Json => {
            let out: Vec<serde_json::Value> = drifted
                .iter()
                .map(|a| serde_json::json!({"app": a.name, "phase": a.phase, "drift": a.drift}))
                .collect();
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({"apps": out}))?);
        }
        super::Format::Text => print!("{}", diff_text(&drifted, apps.len())),
    }
    Ok(if drifted.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `GET /api/v1/apps/{name}/diff`.
#[derive(serde::Deserialize)]
struct LiveDiff {
    app: String,
    phase: Phase,
    #[serde(default)]
    drift: Vec<keelson_core::fleet::ResourceDrift>,
}

impl LiveDiff {
    fn into_status(self) -> AppStatus {
        AppStatus { phase: self.phase, drift: self.drift, ..AppStatus::pending(&self.app) }
    }
}

fn diff_text(drifted: &[&AppStatus], looked_at: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if drifted.is_empty() {
        let _ = writeln!(out, "no drift: {looked_at} app(s) live as git wants them");
        return out;
    }
    let show = |v: &Option<serde_json::Value>| v.as_ref().map_or_else(|| "?".to_owned(), |v| v.to_string());
    for a in drifted {
        let _ = writeln!(out, "{} ({}):", a.name, a.phase);
        for r in &a.drift {
            if r.missing {
                let _ = writeln!(out, "  {}: missing (git wants it)", r.resource);
                continue;
            }
            let _ = writeln!(out, "  {}", r.resource);
            for c in &r.changes {
                let _ = writeln!(out, "    {}: live {} → git {}", c.pointer, show(&c.old), show(&c.new));
            }
        }
    }
    out
}

/// `keelson history APP`.
pub fn history(server: &ServerArgs, name: &str, format: ObjectFormat) -> Result<ExitCode> {
    let history: History = get_json(server, &format!("/api/v1/apps/{}/history", percent_encode(name)))?;
    if format != ObjectFormat::Table {
        print_object(&history, format)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:>6}  {:<27} {:<26} {:<10} {:<13} ACTOR", "SEQ", "AT", "TRANSITION", "ACTION", "COMMIT");
    for e in &history.entries {
        println!(
            "{:>6}  {:<27} {:<26} {:<10} {:<13} {}",
            e.seq,
            e.at,
            format!("{} → {}", e.from, e.to),
            e.action,
            crate::engine::short(&e.desired_commit),
            e.actor
        );
    }
    if history.entries.is_empty() {
        println!("(no entries)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether a wait is over: `Some(Ok)` reached, `Some(Err(why))` will not be reached.
fn wait_verdict(a: &AppStatus, what: WaitFor) -> Option<Result<(), String>> {
    let reached = match what {
        WaitFor::Healthy => a.phase == Phase::Healthy,
        WaitFor::Synced => a.in_sync,
    };
    if reached {
        return Some(Ok(()));
    }
    let why = || format!("{} is {} ({}): {}", a.name, a.phase, a.reason, a.message);
    match a.phase {
        Phase::Failed | Phase::RolledBack | Phase::Deleted => Some(Err(why())),
        // A freeze closes by itself; any other block needs a new commit.
        Phase::Blocked if a.reason != "Freeze" => Some(Err(why())),
        _ => None,
    }
}

/// `keelson wait APP --for healthy|synced --timeout D`: exit 0 when reached, 1 when the app fails
/// (or is blocked by anything but a freeze) or the timeout passes first.
pub fn wait(server: &ServerArgs, name: &str, what: WaitFor, timeout: Duration, interval: Duration) -> Result<ExitCode> {
    let deadline = Instant::now() + timeout;
    let path = format!("/api/v1/apps/{}", percent_encode(name));
    let what_text = match what {
        WaitFor::Healthy => "healthy",
        WaitFor::Synced => "synced",
    };
    let mut last;
    loop {
        // A daemon that restarts, or has not loaded the app yet, is waited for too.
        match try_get::<AppStatus>(server, &path) {
            Ok(Ok(app)) => match wait_verdict(&app, what) {
                Some(Ok(())) => {
                    println!("{name} is {what_text} ({} at {})", app.phase, crate::engine::short(&app.desired_commit));
                    return Ok(ExitCode::SUCCESS);
                }
                Some(Err(why)) => {
                    eprintln!("error: {why}");
                    return Ok(ExitCode::FAILURE);
                }
                None => last = format!("{} is {} ({})", name, app.phase, app.message),
            },
            Ok(Err((status, message))) => last = format!("{status}: {message}"),
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() + interval > deadline {
            eprintln!("error: {name} was not {what_text} within {}; last: {last}", humantime(timeout));
            return Ok(ExitCode::FAILURE);
        }
        std::thread::sleep(interval);
    }
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `keelson status`: the fleet table; exit 1 when an app is in a state `fail_on` names.
pub fn status(server: &ServerArgs, format: super::Format, fail_on: &[FailOn]) -> Result<ExitCode> {
    let apps = list(server)?;
    match format {
        super::Format::Json => println!("{}", serde_json::to_string_pretty(&AppList { apps: apps.clone() })?),
        super::Format::Text => print!("{}", app_table(&apps)),
    }
    let hits: Vec<String> = apps
        .iter()
        .filter_map(|a| fail_on.iter().find(|f| f.hits(a)).map(|_| format!("{} ({})", a.name, a.phase)))
        .collect();
    if hits.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("{} app(s) in a state --fail-on names: {}", hits.len(), hits.join(", "));
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(phase: Phase, reason: &str, in_sync: bool) -> AppStatus {
        AppStatus { phase, reason: reason.into(), in_sync, ..AppStatus::pending("web") }
    }

    #[test]
    fn a_wait_ends_on_success_on_failure_and_on_a_block_that_will_not_lift() {
        assert_eq!(wait_verdict(&app(Phase::Healthy, "", false), WaitFor::Healthy), Some(Ok(())));
        assert_eq!(wait_verdict(&app(Phase::Healthy, "", false), WaitFor::Synced), None);
        assert_eq!(wait_verdict(&app(Phase::Progressing, "", false), WaitFor::Healthy), None);
        assert!(matches!(wait_verdict(&app(Phase::Failed, "ApplyFailed", false), WaitFor::Healthy), Some(Err(_))));
        assert!(matches!(wait_verdict(&app(Phase::Blocked, "Policy", false), WaitFor::Synced), Some(Err(_))));
        assert_eq!(wait_verdict(&app(Phase::Blocked, "Freeze", false), WaitFor::Synced), None, "a freeze lifts");
    }

    #[test]
    fn fail_on_names_the_states_it_fails_for() {
        assert!(FailOn::Failed.hits(&app(Phase::RolledBack, "", true)));
        assert!(!FailOn::Failed.hits(&app(Phase::Blocked, "", true)));
        assert!(FailOn::Blocked.hits(&app(Phase::Blocked, "", true)));
        assert!(FailOn::OutOfSync.hits(&app(Phase::Healthy, "", false)));
        assert!(!FailOn::None.hits(&app(Phase::Failed, "", false)));
    }

    #[test]
    fn app_names_are_escaped_in_paths() {
        assert_eq!(percent_encode("web"), "web");
        assert_eq!(percent_encode("a/b c"), "a%2Fb%20c");
    }
}
