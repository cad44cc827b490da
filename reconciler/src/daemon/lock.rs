//! The repository lock: one daemon per (repository, status branch), whatever its data directory.
//!
//! The data-directory lock alone let a second daemon with another `--data-dir` run on the same
//! repository: both reconciled the same apps and wrote the same status branch (and each removed
//! the other's live git lock files as "stale"). The lock file lives inside the repository's git
//! directory, so every daemon on the repository finds it, whatever its working directory.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Where the lock of `status_branch` lives in `git_dir`.
pub(crate) fn repository_lock_path(git_dir: &Path, status_branch: &str) -> PathBuf {
    let escaped = status_branch.replace('%', "%25").replace('/', "%2F");
    git_dir.join("keelson").join(format!("{escaped}.lock"))
}

/// Takes the repository lock; fails with a clear message naming the holder when it is taken.
pub(crate) fn take_repository_lock(git_dir: &Path, repo: &Path, status_branch: &str, data_dir: &Path) -> Result<File> {
    let path = repository_lock_path(git_dir, status_branch);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the message the next one prints.
            let holder = format!("pid {}, data directory {}\n", std::process::id(), data_dir.display());
            file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(holder.as_bytes())).ok();
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            file.read_to_string(&mut holder).ok();
            let holder = holder.trim();
            bail!(
                "another keelson ({}) is already running on {} with status branch {status_branch} (it holds {}); \
                 two daemons on one repository would reconcile the same apps and write the same branch. Stop it \
                 first, or give this one another --status-branch",
                if holder.is_empty() { "holder unknown" } else { holder },
                repo.display(),
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_per_repository_and_branch_whatever_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(&git).unwrap();
        let held = take_repository_lock(&git, dir.path(), "keelson/status", Path::new("/a")).unwrap();
        let err = take_repository_lock(&git, dir.path(), "keelson/status", Path::new("/b")).unwrap_err().to_string();
        assert!(err.contains("already running"), "{err}");
        assert!(err.contains(&format!("pid {}, data directory /a", std::process::id())), "names the holder: {err}");
        // Another status branch is another daemon's business.
        let _other = take_repository_lock(&git, dir.path(), "keelson/status-staging", Path::new("/b")).unwrap();
        drop(held);
        take_repository_lock(&git, dir.path(), "keelson/status", Path::new("/b")).unwrap();
    }

    #[test]
    fn branch_names_map_to_distinct_files() {
        let git = Path::new("/g");
        assert_ne!(repository_lock_path(git, "a/b"), repository_lock_path(git, "a%2Fb"));
        assert_eq!(repository_lock_path(git, "keelson/status"), Path::new("/g/keelson/keelson%2Fstatus.lock"));
    }
}
