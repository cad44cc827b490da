//! `keelson init` and the demo repository of `keelson up`: the bundled template as a git repository.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

include!(concat!(env!("OUT_DIR"), "/template.rs"));

/// Creates a git repository on `main` at `dir` (absent or empty) holding the template in one commit.
pub fn init_repo(dir: &Path) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_some() {
        bail!("{} is not empty; `keelson init` needs a new or empty directory", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    git(dir, &["init", "-q", "-b", "main"])?;
    for (rel, contents) in TEMPLATE {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    git(dir, &["add", "-A"])?;
    git(
        dir,
        &[
            "-c",
            "user.name=Keelson",
            "-c",
            "user.email=keelson@localhost",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "--no-verify",
            "-m",
            "Initial state repository from the Keelson template",
        ],
    )?;
    Ok(())
}

/// For `keelson up`: a new repository when `dir` is absent or empty (returns true), the existing
/// one when it is a git repository (false), an error for anything else.
pub fn prepare_demo(dir: &Path) -> Result<bool> {
    let empty =
        !dir.exists() || std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_none();
    if empty {
        init_repo(dir)?;
        return Ok(true);
    }
    if !dir.is_dir() {
        bail!("{} exists and is not a directory; pass another --dir", dir.display());
    }
    if gix::open(dir).is_err() {
        bail!(
            "{} exists but is neither empty nor a git repository; pass another --dir, or `git init` it yourself",
            dir.display()
        );
    }
    Ok(false)
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running git (is it installed and on PATH?)")?;
    if !output.status.success() {
        bail!("git {} failed in {}: {}", args.join(" "), dir.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// `keelson up --kubeconfig FILE`: one `kubernetes` instance on that kubeconfig, bound as the
/// workloads provider of every cluster the repository's apps name.
pub fn bind_to_kubernetes(
    dir: &Path,
    kubeconfig: &Path,
) -> Result<(
    std::collections::BTreeMap<String, keelson_manifest::config::ProviderConfig>,
    std::collections::BTreeMap<String, keelson_manifest::config::ClusterBinding>,
)> {
    let kubeconfig = std::path::absolute(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
    anyhow::ensure!(kubeconfig.is_file(), "--kubeconfig {}: no such file", kubeconfig.display());
    let mut settings = serde_json::Map::new();
    settings.insert("kubeconfig".into(), serde_json::Value::String(kubeconfig.display().to_string()));
    let providers =
        [("kubernetes".to_owned(), keelson_manifest::config::ProviderConfig { kind: "kubernetes".into(), settings })]
            .into();
    let mut clusters = std::collections::BTreeMap::new();
    let apps = dir.join("apps");
    for entry in std::fs::read_dir(&apps).with_context(|| format!("reading {}", apps.display()))? {
        let deploy = entry?.path().join("deploy.yaml");
        let Ok(bytes) = std::fs::read(&deploy) else { continue };
        // Files that do not parse are the daemon's to report, with their positions.
        let Ok(documents) = keelson_manifest::yaml::parse(&deploy.display().to_string(), &bytes) else { continue };
        for doc in documents {
            if let Some(cluster) = doc.value.pointer("/spec/placement/cluster").and_then(serde_json::Value::as_str) {
                let binding =
                    keelson_manifest::config::ClusterBinding { workloads: "kubernetes".into(), ..Default::default() };
                clusters.insert(cluster.to_owned(), binding);
            }
        }
    }
    Ok((providers, clusters))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_has_apps_policies_and_ignores_local_state() {
        let paths: Vec<&str> = TEMPLATE.iter().map(|(p, _)| *p).collect();
        assert!(paths.iter().filter(|p| p.starts_with("apps/") && p.ends_with("/deploy.yaml")).count() >= 3);
        assert!(paths.iter().any(|p| p.starts_with("policies/")));
        let ignore = TEMPLATE.iter().find(|(p, _)| *p == ".gitignore").expect("template has .gitignore").1;
        assert!(String::from_utf8_lossy(ignore).contains(".keelson/"));
    }

    #[test]
    fn demo_dir_rules() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        assert!(prepare_demo(&dir).unwrap(), "absent directory gets a new repository");
        assert!(!prepare_demo(&dir).unwrap(), "a git repository is reused");
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("x"), "y").unwrap();
        let err = prepare_demo(&other).unwrap_err().to_string();
        assert!(err.contains("neither empty nor a git repository"), "{err}");
        assert!(init_repo(&dir).is_err(), "init refuses a non-empty directory");
    }
}
