//! `keelson validate`: every problem in a repository or one file, as `PATH:LINE:COL: error: message`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use keelson_manifest::yaml::Position;
use keelson_manifest::{Diagnostic, EntryKind, Loader, RepoFile};
use serde_json::json;

use crate::cli::Format;

/// Validates `path` (a directory is read from the filesystem, work tree as it is now) and the
/// daemon config file `config` (with a repository: each app's placement against it too), and prints
/// findings. Without either, `path` is `.`.
pub async fn run(path: Option<&Path>, config: Option<&Path>, format: Format) -> Result<ExitCode> {
    let (mut files, mut diagnostics) = match (path, config) {
        (None, Some(_)) => (0, Vec::new()),
        (path, _) => check(path.unwrap_or(Path::new(".")))?,
    };
    if let Some(config) = config {
        let (config_files, found) = check_config(path, config)?;
        files += config_files;
        diagnostics.extend(found);
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"files": files, "errors": errors, "warnings": warnings, "diagnostics": diagnostics})
            )?
        ),
        Format::Text => {
            for d in &diagnostics {
                println!("{d}");
            }
            eprintln!("{files} files checked: {errors} errors, {warnings} warnings");
        }
    }
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Number of files looked at and every diagnostic, paths as the user gave them.
pub fn check(path: &Path) -> Result<(usize, Vec<Diagnostic>)> {
    if let Some(link) = link_inside_repository(path) {
        // Never followed: the daemon would not follow it either, and its target may be any file.
        let shown = path.display().to_string();
        let message = if link == path {
            format!("{shown} is a symbolic link; Keelson never follows links, so its target is not read")
        } else {
            format!("{} (on the way to {shown}) is a symbolic link; Keelson never follows links", link.display())
        };
        let d = Diagnostic::error(&shown, Position::START, "", "layout.not-a-file", message)
            .with_hint("commit the file's content instead of a link to it");
        return Ok((1, vec![d]));
    }
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let file = path.display().to_string();
        let mut found = keelson_manifest::check_file(&file, &bytes);
        // A daemon config's provider settings are checked against the schemas their types declare.
        let is_config = keelson_manifest::yaml::parse(&file, &bytes).ok().is_some_and(|docs| {
            docs.first().and_then(|d| d.value.get("kind")).and_then(|k| k.as_str()) == Some("Config")
        });
        if is_config && !found.iter().any(Diagnostic::is_error) {
            let more: Vec<Diagnostic> =
                crate::config::check(&file, &bytes).1.into_iter().filter(|d| !found.contains(d)).collect();
            found.extend(more);
        }
        return Ok((1, found));
    }
    if !path.is_dir() {
        anyhow::bail!("{} does not exist", path.display());
    }
    let mut files = Vec::new();
    walk(path, path, &mut files)?;
    files.sort_by(|a: &(RepoFile, Vec<u8>), b| a.0.path.cmp(&b.0.path));
    let listing: Vec<RepoFile> = files.iter().map(|(f, _)| f.clone()).collect();
    // `files` is sorted by path: a binary search keeps a 10,000-app repository linear overall.
    let read = |path: &str| {
        let i = files.binary_search_by(|(g, _)| g.path.as_str().cmp(path)).ok()?;
        (files[i].0.entry == EntryKind::File).then(|| files[i].1.clone())
    };
    let outcome = Loader::new().load(&listing, &mut |f| Ok(read(&f.path).unwrap_or_default()));
    let (policies, policy_diagnostics) = crate::policy::PolicySet::compile(&outcome.desired, &mut |path| {
        read(path).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{path} does not exist")))
    });
    let mut found = outcome.diagnostics.clone();
    found.extend(policy_diagnostics);
    for app in outcome.desired.apps.values() {
        let verdicts = crate::plan::verdicts_for(&policies, &outcome.desired, app, None, "");
        found.extend(verdicts.iter().map(|v| crate::plan::verdict_diagnostic(&app.file, v)));
    }
    let prefix = if path == Path::new(".") {
        String::new()
    } else {
        format!("{}/", path.display().to_string().trim_end_matches('/'))
    };
    let diagnostics = found.into_iter().map(|mut d| {
        d.file = format!("{prefix}{}", d.file);
        d
    });
    Ok((listing.len(), diagnostics.collect()))
}

/// The daemon config (schema, settings not built yet, provider settings, warnings included) and,
/// for a repository `path`, each app's placement: its cluster must have every role its strategy
/// needs, served by an instance able to.
pub fn check_config(path: Option<&Path>, config: &Path) -> Result<(usize, Vec<Diagnostic>)> {
    let bytes = std::fs::read(config).with_context(|| format!("reading config {}", config.display()))?;
    let file = config.display().to_string();
    let (parsed, mut found) = crate::config::check(&file, &bytes);
    let Some(parsed) = parsed else { return Ok((1, found)) };
    let Some(path) = path.filter(|p| p.is_dir()) else {
        return Ok((1, found));
    };
    let renderers = crate::providers::Renderers::from_config(&parsed.providers, &parsed.clusters)?;
    let mut files = Vec::new();
    walk(path, path, &mut files)?;
    files.sort_by(|a: &(RepoFile, Vec<u8>), b| a.0.path.cmp(&b.0.path));
    let listing: Vec<RepoFile> = files.iter().map(|(f, _)| f.clone()).collect();
    let read = |p: &str| files.binary_search_by(|(g, _)| g.path.as_str().cmp(p)).ok().map(|i| &files[i].1);
    let outcome = Loader::new().load(&listing, &mut |f| Ok(read(&f.path).cloned().unwrap_or_default()));
    let prefix = if path == Path::new(".") {
        String::new()
    } else {
        format!("{}/", path.display().to_string().trim_end_matches('/'))
    };
    for app in outcome.desired.apps.values() {
        let problems = renderers.placement_problems(&app.app);
        if problems.is_empty() {
            continue;
        }
        let spans = read(&app.file)
            .and_then(|bytes| keelson_manifest::yaml::parse(&app.file, bytes).ok())
            .and_then(|mut docs| (!docs.is_empty()).then(|| docs.remove(0).spans));
        for p in problems {
            // The field that asks for the role: the strategy for mesh and metrics, else the cluster.
            let pointer = match p.role {
                keelson_provider_api::Role::Workloads | keelson_provider_api::Role::Capacity => {
                    "/spec/placement/cluster"
                }
                keelson_provider_api::Role::Mesh => "/spec/strategy/type",
                keelson_provider_api::Role::Metrics => "/spec/strategy/gates",
            };
            let pos = spans.as_ref().map_or(keelson_manifest::yaml::Position::START, |s| s.locate_value(pointer));
            found.push(
                Diagnostic::error(&format!("{prefix}{}", app.file), pos, pointer, "config.missing-role", p.message)
                    .with_hint(format!("bind `clusters.{}.{}` in {file}", p.cluster, p.role)),
            );
        }
    }
    Ok((1, found))
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(RepoFile, Vec<u8>)>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" || name == ".keelson" {
            continue;
        }
        let path = entry.path();
        // `file_type` of a directory entry does not follow links: a link is listed as one and
        // never read, so nothing outside the directory is ever opened.
        let kind = entry.file_type()?;
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let id = gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, &bytes)
                .map(|id| id.to_string())
                .unwrap_or_default();
            out.push((RepoFile::new(rel, id), bytes));
        } else {
            let entry = if kind.is_symlink() { EntryKind::Symlink } else { EntryKind::Other };
            out.push((RepoFile::other(rel, String::new(), entry), Vec::new()));
        }
    }
    Ok(())
}

/// The first symbolic link on `path` inside its repository: `path` itself, or a directory between
/// it and the repository root (the nearest parent holding `.git`). Links above the root are the
/// user's own layout and are left alone. Without a repository around it, only `path` is checked.
fn link_inside_repository(path: &Path) -> Option<PathBuf> {
    let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
    if is_link(path) {
        return Some(path.to_path_buf());
    }
    let absolute = std::path::absolute(path).ok()?;
    let root = absolute.ancestors().skip(1).find(|a| a.join(".git").exists())?;
    let links = absolute.ancestors().skip(1).take_while(|a| *a != root).filter(|a| is_link(a));
    let link = links.last()?;
    // Shown relative to what the user typed when it is a prefix of it.
    let shown = path.ancestors().find(|p| std::path::absolute(p).ok().as_deref() == Some(link));
    Some(shown.map_or_else(|| link.to_path_buf(), Path::to_path_buf))
}
