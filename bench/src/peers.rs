//! Peers measured beside Keelson on the same inputs: `check-jsonschema` (PyPI) on the same manifests
//! and `git diff-tree` on the same commit pair.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// `check-jsonschema` from a private virtualenv, installed on first use.
pub struct CheckJsonschema {
    bin: PathBuf,
}

impl CheckJsonschema {
    /// Finds or installs `check-jsonschema` in `venv` (`python3 -m venv` + `pip install`).
    pub fn ensure(venv: &Path) -> Result<CheckJsonschema> {
        let bin = venv.join("bin/check-jsonschema");
        if bin.is_file() {
            return Ok(CheckJsonschema { bin });
        }
        eprintln!("installing check-jsonschema into {} (first use only)", venv.display());
        run_quiet(Command::new("python3").arg("-m").arg("venv").arg(venv))
            .context("creating the virtualenv (is python3-venv installed?)")?;
        run_quiet(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "check-jsonschema",
        ]))
        .context("pip install check-jsonschema")?;
        if !bin.is_file() {
            bail!("pip installed check-jsonschema but {} is missing", bin.display());
        }
        Ok(CheckJsonschema { bin })
    }

    /// The installed version, for the report.
    pub fn version(&self) -> String {
        Command::new(&self.bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    }

    /// Validates `files` against `schema` in one process; returns files per second (process start included).
    pub fn files_per_s(&self, schema: &Path, files: &[PathBuf]) -> Result<f64> {
        let started = Instant::now();
        let out = Command::new(&self.bin)
            .arg("--schemafile")
            .arg(schema)
            .args(files)
            .stdin(Stdio::null())
            .output()
            .context("running check-jsonschema")?;
        let elapsed = started.elapsed().as_secs_f64();
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            bail!(
                "check-jsonschema rejected the generated manifests: {}",
                text.lines().take(8).collect::<Vec<_>>().join(" | ")
            );
        }
        Ok(files.len() as f64 / elapsed)
    }
}

/// `keelson validate DIR` as a process (start-up included), like the peer: files per second.
pub fn keelson_validate_files_per_s(bin: &Path, repo: &Path, files: usize) -> Result<f64> {
    let started = Instant::now();
    let out = Command::new(bin)
        .arg("validate")
        .arg(repo)
        .stdin(Stdio::null())
        .output()
        .context("running keelson validate")?;
    let elapsed = started.elapsed().as_secs_f64();
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout);
        bail!("keelson validate reported problems: {}", text.lines().take(8).collect::<Vec<_>>().join(" | "));
    }
    Ok(files as f64 / elapsed)
}

/// `git diff-tree -r --name-only base head`: milliseconds (process start included) and the changed paths.
pub fn git_diff_tree_ms(repo: &Path, base: &str, head: &str) -> Result<(f64, Vec<String>)> {
    let started = Instant::now();
    let out = Command::new("git")
        .args(["diff-tree", "-r", "--name-only", base, head])
        .current_dir(repo)
        .stdin(Stdio::null())
        .output()
        .context("running git diff-tree")?;
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!("git diff-tree failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()))
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("failed"));
    }
    Ok(())
}
