//! What changed between two commits under a sub-path, found the way `git diff-tree -r` finds it:
//! only the trees whose ids differ are read, so a one-app commit costs the trees on its path
//! whatever the size of the repository.

use std::cmp::Ordering;

use anyhow::{Context, Result, bail};
use gix::bstr::ByteSlice;
use keelson_manifest::{FileChange, RepoFile};

use super::{GitRepo, entry_kind};

impl GitRepo {
    /// The entries under `subpath` that differ between commit `base` and commit `commit`, paths
    /// relative to `subpath`. Fails like [`GitRepo::snapshot`] when `commit` has no such directory;
    /// a `base` without it counts as empty.
    pub fn changes(&self, base: &str, commit: &str, subpath: &str) -> Result<Vec<FileChange>> {
        let repo = self.local();
        let old = subtree(&repo, commit_tree(&repo, base)?, subpath)?;
        let Some(new) = subtree(&repo, commit_tree(&repo, commit)?, subpath)? else {
            bail!("source path {subpath:?} is not a directory in this commit");
        };
        let mut changes = Vec::new();
        diff_trees(&repo, old, Some(new), "", &mut changes)
            .with_context(|| format!("comparing commit {commit} with {base}"))?;
        Ok(changes)
    }
}

fn commit_tree(repo: &gix::Repository, commit: &str) -> Result<gix::ObjectId> {
    let id = gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("bad commit id {commit:?}"))?;
    let commit_obj = repo.find_commit(id).with_context(|| format!("commit {commit} not found"))?;
    Ok(commit_obj.tree_id().with_context(|| format!("tree of commit {commit}"))?.detach())
}

/// The tree at `subpath` below `tree`, if there is one.
fn subtree(repo: &gix::Repository, tree: gix::ObjectId, subpath: &str) -> Result<Option<gix::ObjectId>> {
    let mut at = tree;
    for component in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let t = repo.find_tree(at)?;
        let entry =
            t.decode()?.entries.iter().find(|e| e.filename == component.as_bytes()).map(|e| (e.mode, e.oid.to_owned()));
        match entry {
            Some((mode, oid)) if mode.is_tree() => at = oid,
            _ => return Ok(None),
        }
    }
    Ok(Some(at))
}

/// Git's tree order: names compare bytewise, a tree's name as if it ended in `/`.
fn git_order(a: &[u8], a_tree: bool, b: &[u8], b_tree: bool) -> Ordering {
    let n = a.len().min(b.len());
    a[..n].cmp(&b[..n]).then_with(|| {
        let end = |name: &[u8], tree: bool| name.get(n).copied().or(tree.then_some(b'/'));
        end(a, a_tree).cmp(&end(b, b_tree))
    })
}

/// Appends what differs between the trees `old` and `new` (`None`: absent) below `prefix`.
fn diff_trees(
    repo: &gix::Repository,
    old: Option<gix::ObjectId>,
    new: Option<gix::ObjectId>,
    prefix: &str,
    out: &mut Vec<FileChange>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let old_tree = old.map(|id| repo.find_tree(id)).transpose()?;
    let new_tree = new.map(|id| repo.find_tree(id)).transpose()?;
    let old_entries = match &old_tree {
        Some(t) => t.decode()?.entries,
        None => Vec::new(),
    };
    let new_entries = match &new_tree {
        Some(t) => t.decode()?.entries,
        None => Vec::new(),
    };
    let file = |e: &gix::objs::tree::EntryRef<'_>| {
        RepoFile::other(format!("{prefix}{}", e.filename.to_str_lossy()), e.oid.to_string(), entry_kind(e.mode))
    };
    let below = |e: &gix::objs::tree::EntryRef<'_>| format!("{prefix}{}/", e.filename.to_str_lossy());
    let (mut i, mut j) = (0, 0);
    while i < old_entries.len() || j < new_entries.len() {
        let order = match (old_entries.get(i), new_entries.get(j)) {
            (Some(a), Some(b)) => git_order(a.filename, a.mode.is_tree(), b.filename, b.mode.is_tree()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Equal => {
                let (a, b) = (&old_entries[i], &new_entries[j]);
                if a.oid != b.oid || a.mode != b.mode {
                    if a.mode.is_tree() {
                        diff_trees(repo, Some(a.oid.to_owned()), Some(b.oid.to_owned()), &below(b), out)?;
                    } else {
                        let (before, after) = (file(a), file(b));
                        if before != after {
                            out.push(FileChange { before: Some(before), after: Some(after) });
                        }
                    }
                }
                i += 1;
                j += 1;
            }
            Ordering::Less => {
                let a = &old_entries[i];
                if a.mode.is_tree() {
                    diff_trees(repo, Some(a.oid.to_owned()), None, &below(a), out)?;
                } else {
                    out.push(FileChange { before: Some(file(a)), after: None });
                }
                i += 1;
            }
            Ordering::Greater => {
                let b = &new_entries[j];
                if b.mode.is_tree() {
                    diff_trees(repo, None, Some(b.oid.to_owned()), &below(b), out)?;
                } else {
                    out.push(FileChange { before: None, after: Some(file(b)) });
                }
                j += 1;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testing::git;

    /// Every step's changes, applied to the listing before it, give the listing after it (and
    /// match `git diff-tree -r`), for the whole tree and for a sub-path.
    #[test]
    fn changes_match_the_listings_and_git_diff_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        let write = |path: &str, content: &str| crate::testing::write(root, path, content);
        for app in ["api", "db", "web", "web-2", "web.x"] {
            write(&format!("apps/{app}/deploy.yaml"), app);
        }
        write("policies/p.yaml", "p");
        let steps: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| write("apps/web/deploy.yaml", "web v2")),
            Box::new(|| write("apps/api/manifests/base/extra.yaml", "x")),
            Box::new(|| std::fs::remove_dir_all(root.join("apps/db")).unwrap()),
            Box::new(|| std::fs::rename(root.join("apps/api"), root.join("apps/api2")).unwrap()),
            Box::new(|| {
                // A file replaced by a directory of the same name, and the reverse.
                std::fs::remove_dir_all(root.join("apps/web.x")).unwrap();
                write("apps/web.x", "now a file");
                std::fs::remove_file(root.join("policies/p.yaml")).unwrap();
                write("policies/p.yaml/inner", "now a tree");
            }),
            Box::new(|| {
                write("apps/db/deploy.yaml", "db");
                std::os::unix::fs::symlink("deploy.yaml", root.join("apps/db/link.yaml")).unwrap();
            }),
            Box::new(|| std::fs::remove_dir_all(root.join("apps")).unwrap()),
        ];
        let repo = GitRepo::open(root).unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-qm", "start"]);
        let mut base = repo.branch_head("main").unwrap().unwrap();
        for step in &steps {
            step();
            git(root, &["add", "-A"]);
            git(root, &["commit", "-q", "--allow-empty", "-m", "step"]);
            let head = repo.branch_head("main").unwrap().unwrap();
            for subpath in ["", "apps"] {
                let listing = |commit: &str| -> BTreeMap<String, RepoFile> {
                    match repo.snapshot(commit, subpath) {
                        Ok(s) => s.files.into_iter().map(|f| (f.path.clone(), f)).collect(),
                        Err(_) => BTreeMap::new(),
                    }
                };
                let Ok(changes) = repo.changes(&base, &head, subpath) else {
                    assert!(repo.snapshot(&head, subpath).is_err(), "changes failed where a snapshot works");
                    continue;
                };
                let mut applied = listing(&base);
                for c in &changes {
                    if let Some(b) = &c.before {
                        assert_eq!(applied.remove(&b.path).as_ref(), Some(b), "{b:?} was not there before");
                    }
                }
                for c in &changes {
                    if let Some(a) = &c.after {
                        assert!(applied.insert(a.path.clone(), a.clone()).is_none(), "{a:?} twice");
                    }
                }
                assert_eq!(applied, listing(&head), "step changes of {subpath:?} do not give the next listing");
                if subpath.is_empty() {
                    let mut ours: Vec<&str> =
                        changes.iter().map(|c| c.after.as_ref().or(c.before.as_ref()).unwrap().path.as_str()).collect();
                    ours.sort();
                    ours.dedup();
                    let theirs = git(root, &["diff-tree", "-r", "--name-only", "--no-renames", &base, &head]);
                    let mut theirs: Vec<&str> = theirs.lines().collect();
                    theirs.sort();
                    assert_eq!(ours, theirs);
                }
            }
            base = head;
        }
    }
}
