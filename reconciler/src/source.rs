//! Source: the state repository in git. Resolves the tracked branch, lists the files of a commit,
//! reads blobs, and wakes the engine when (and only when) the tracked ref moves.
//!
//! One interface whatever the transport: the engine reads snapshots of `refs/heads/<branch>` of a
//! [`GitRepo`] and is woken through one channel. For a local repository that is the repository
//! itself, watched by [`watch_ref`]; for a remote one ([`remote`]) it is a cache repository under
//! the data directory that the remote source fetches into (at start-up, on a jittered poll, and
//! at once on a [`webhook`] delivery), moving the tracked ref only to a checked head.

mod diff;
pub mod remote;
pub mod transport;
pub mod webhook;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use gix::bstr::ByteSlice;
use keelson_manifest::{EntryKind, RepoFile};
use tokio::sync::mpsc;

/// One commit of the tracked branch, as the loader needs it.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Full hex id of the commit.
    pub commit: String,
    /// Files under the configured sub-path, relative to it, with their blob ids.
    pub files: Vec<RepoFile>,
    /// Apps named by `Keelson-Retry: <app>` trailers in the commit message.
    pub retry_apps: BTreeSet<String>,
    /// First line of the commit message.
    pub summary: String,
    /// The whole commit message (for trailers such as `Keelson-Freeze-Override`).
    pub message: String,
    /// The commit time (Unix seconds; 0 when unreadable), for the commit → healthy latency.
    pub committed_at: i64,
}

/// A commit's message and what its trailers ask for.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    /// Full hex id of the commit.
    pub commit: String,
    /// Apps named by `Keelson-Retry: <app>` trailers in the commit message.
    pub retry_apps: BTreeSet<String>,
    /// First line of the commit message.
    pub summary: String,
    /// The whole commit message (for trailers such as `Keelson-Freeze-Override`).
    pub message: String,
    /// The commit time (Unix seconds; 0 when unreadable), for the commit → healthy latency.
    pub committed_at: i64,
}

/// The commit's message and trailers, and its tree.
fn commit_info(repo: &gix::Repository, commit: &str) -> Result<(CommitInfo, gix::ObjectId)> {
    let id = gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("bad commit id {commit:?}"))?;
    let commit_obj = repo.find_commit(id).with_context(|| format!("commit {commit} not found"))?;
    let message = commit_obj.message_raw_sloppy().to_str_lossy().into_owned();
    let committed_at = commit_obj.time().map_or(0, |t| t.seconds);
    let tree = commit_obj.tree_id().with_context(|| format!("tree of commit {commit}"))?.detach();
    let info = CommitInfo {
        commit: commit.to_owned(),
        retry_apps: trailer_values(&message, "Keelson-Retry").into_iter().collect(),
        summary: message.lines().next().unwrap_or_default().to_owned(),
        message,
        committed_at,
    };
    Ok((info, tree))
}

/// What a tree entry's mode makes it. Links and submodules are listed (so a manifest never
/// vanishes silently) but never followed: the loader reads regular files only, so nothing outside
/// the repository is read.
fn entry_kind(mode: gix::objs::tree::EntryMode) -> EntryKind {
    if mode.is_blob() {
        EntryKind::File
    } else if mode.is_link() {
        EntryKind::Symlink
    } else if mode.is_commit() {
        EntryKind::Submodule
    } else {
        EntryKind::Other
    }
}

/// A git repository on disk (work tree or bare).
#[derive(Clone)]
pub struct GitRepo {
    repo: gix::ThreadSafeRepository,
    /// Work tree if there is one, else the git dir.
    root: PathBuf,
    git_dir: PathBuf,
    /// File listings of the trees the last snapshot walked, by tree id (see [`list_files`]).
    listings: Arc<Mutex<Listings>>,
}

/// The files under a tree, paths relative to it, with their blob ids, and the ids of the tree's
/// direct subtrees; shared between snapshots.
#[derive(Debug)]
struct Listing {
    files: Vec<(String, String, EntryKind)>,
    subtrees: Vec<gix::ObjectId>,
}
type Listings = HashMap<gix::ObjectId, Arc<Listing>>;

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo").field("root", &self.root).finish()
    }
}

impl GitRepo {
    /// Opens the repository at `path` (a work tree or a bare repository).
    pub fn open(path: &Path) -> Result<Self> {
        let repo = gix::open(path).with_context(|| {
            format!("{} is not a git repository (run `keelson init {}` to make one)", path.display(), path.display())
        })?;
        let root = repo.workdir().map(Path::to_path_buf).unwrap_or_else(|| repo.git_dir().to_path_buf());
        let git_dir = repo.git_dir().to_path_buf();
        Ok(Self { repo: repo.into_sync(), root, git_dir, listings: Arc::default() })
    }

    /// The work tree (or the git dir of a bare repository).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The `.git` directory.
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// A handle for the current thread (gix repositories are not `Sync`).
    pub fn local(&self) -> gix::Repository {
        self.repo.to_thread_local()
    }

    /// Resolves a revision (`main`, `HEAD~1`, a hex id) to a full commit id.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        let repo = self.local();
        let id = repo
            .rev_parse_single(rev)
            .with_context(|| format!("cannot resolve revision {rev:?} in {}", self.root.display()))?;
        let commit = id
            .object()
            .with_context(|| format!("reading object {id}"))?
            .peel_to_commit()
            .with_context(|| format!("revision {rev:?} is not a commit"))?;
        Ok(commit.id.to_string())
    }

    /// The commit `refs/heads/<branch>` points at, or `None` if the branch does not exist.
    pub fn branch_head(&self, branch: &str) -> Result<Option<String>> {
        let repo = self.local();
        let name = format!("refs/heads/{branch}");
        let Some(mut reference) = repo.try_find_reference(name.as_str()).with_context(|| format!("reading {name}"))?
        else {
            return Ok(None);
        };
        let id = reference.peel_to_id().with_context(|| format!("peeling {name}"))?;
        Ok(Some(id.to_string()))
    }

    /// Reads the commit and lists every file under `subpath` (`""` for the whole tree).
    pub fn snapshot(&self, commit: &str, subpath: &str) -> Result<Snapshot> {
        let repo = self.local();
        let (info, tree) = commit_info(&repo, commit)?;
        let files = {
            let mut listings = self.listings.lock().unwrap_or_else(|e| e.into_inner());
            list_files(&repo, tree, subpath, &mut listings)
                .with_context(|| format!("listing files of commit {commit}"))?
        };
        let CommitInfo { commit, retry_apps, summary, message, committed_at } = info;
        Ok(Snapshot { commit, files, retry_apps, summary, message, committed_at })
    }

    /// The commit's message and what its trailers ask for, without listing its files.
    pub fn commit_info(&self, commit: &str) -> Result<CommitInfo> {
        Ok(commit_info(&self.local(), commit)?.0)
    }

    /// Reads a blob by id.
    pub fn read_blob(&self, blob_id: &str) -> std::io::Result<Vec<u8>> {
        read_blob(&self.local(), blob_id)
    }

    /// The content of the regular file at `path` in `commit`, if it has one there.
    pub fn file_at(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
        let repo = self.local();
        let id = gix::ObjectId::from_hex(commit.as_bytes()).with_context(|| format!("bad commit id {commit:?}"))?;
        let tree = repo
            .find_commit(id)
            .with_context(|| format!("commit {commit} not found"))?
            .tree()
            .with_context(|| format!("tree of commit {commit}"))?;
        let Some(entry) = tree.lookup_entry_by_path(path).with_context(|| format!("looking up {path} in {commit}"))?
        else {
            return Ok(None);
        };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        let blob = entry.object().with_context(|| format!("reading {path} at {commit}"))?;
        Ok(Some(blob.data.clone()))
    }
}

/// Reads a blob through a thread-local repository handle.
pub fn read_blob(repo: &gix::Repository, blob_id: &str) -> std::io::Result<Vec<u8>> {
    let id = gix::ObjectId::from_hex(blob_id.as_bytes()).map_err(|e| std::io::Error::other(e.to_string()))?;
    let blob = repo.find_blob(id).map_err(|e| std::io::Error::other(format!("blob {blob_id}: {e}")))?;
    Ok(blob.data.clone())
}

/// Lists all blobs under `subpath` of `tree`, paths relative to `subpath`, sorted by path.
///
/// A tree id names its whole content, so a subtree the previous snapshot listed (an app directory
/// the new commit did not touch) is taken from `listings` without reading it again: after a
/// one-app commit only the trees on the changed path are read. `listings` is left holding the
/// trees of this snapshot only, so its memory follows the repository.
fn list_files(
    repo: &gix::Repository,
    tree: gix::ObjectId,
    subpath: &str,
    listings: &mut Listings,
) -> Result<Vec<RepoFile>> {
    let mut start = tree;
    for component in subpath.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let t = repo.find_tree(start)?;
        let entry =
            t.decode()?.entries.iter().find(|e| e.filename == component.as_bytes()).map(|e| (e.mode, e.oid.to_owned()));
        match entry {
            Some((mode, oid)) if mode.is_tree() => start = oid,
            _ => bail!("source path {subpath:?} is not a directory in this commit"),
        }
    }
    let mut seen = Listings::new();
    let listing = list_tree(repo, start, listings, &mut seen)?;
    *listings = seen;
    let mut files: Vec<RepoFile> =
        listing.files.iter().map(|(path, blob, entry)| RepoFile::other(path.clone(), blob.clone(), *entry)).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// The listing of tree `id`: from `previous` or `seen` when known, else read (recursively).
fn list_tree(
    repo: &gix::Repository,
    id: gix::ObjectId,
    previous: &Listings,
    seen: &mut Listings,
) -> Result<Arc<Listing>> {
    if let Some(known) = seen.get(&id) {
        return Ok(Arc::clone(known));
    }
    if let Some(known) = previous.get(&id) {
        keep(id, previous, seen);
        return Ok(Arc::clone(known));
    }
    let t = repo.find_tree(id)?;
    let mut listing = Listing { files: Vec::new(), subtrees: Vec::new() };
    for entry in t.decode()?.entries {
        let name = entry.filename.to_str_lossy();
        if entry.mode.is_tree() {
            let oid = entry.oid.to_owned();
            let sub = list_tree(repo, oid, previous, seen)?;
            listing.subtrees.push(oid);
            listing
                .files
                .extend(sub.files.iter().map(|(path, blob, kind)| (format!("{name}/{path}"), blob.clone(), *kind)));
        } else {
            listing.files.push((name.into_owned(), entry.oid.to_string(), entry_kind(entry.mode)));
        }
    }
    let listing = Arc::new(listing);
    seen.insert(id, Arc::clone(&listing));
    Ok(listing)
}

/// Carries the listing of `id` and of every tree below it from `previous` to `seen`, so that the
/// next snapshot can reuse them too.
fn keep(id: gix::ObjectId, previous: &Listings, seen: &mut Listings) {
    let mut stack = vec![id];
    while let Some(id) = stack.pop() {
        if let Some(listing) = previous.get(&id)
            && !seen.contains_key(&id)
        {
            stack.extend(listing.subtrees.iter().copied());
            seen.insert(id, Arc::clone(listing));
        }
    }
}

/// Values of `Key: value` trailers in the last paragraph of a commit message.
pub fn trailer_values(message: &str, key: &str) -> Vec<String> {
    let last = message.trim_end().rsplit("\n\n").next().unwrap_or_default();
    last.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// Sends `()` on `tx` whenever the tracked ref may have moved: a filesystem event on
/// `refs/heads/<branch>` or `packed-refs`, or every `poll` as a fallback for filesystems without events.
/// Events on other refs (such as the status branch the daemon writes itself) are ignored, and so are
/// reads: the daemon reads the ref after every wake-up, and a read that woke it again would spin.
pub fn watch_ref(git_dir: &Path, branch: &str, poll: Duration, tx: mpsc::Sender<()>) -> Result<RefWatch> {
    use notify::{RecursiveMode, Watcher};
    // Events carry the watched path as given; an absolute one makes them comparable whatever the
    // working directory (`--repo ./state` must wake the daemon like `--repo /srv/state`).
    let git_dir = git_dir.canonicalize().with_context(|| format!("cannot watch {}", git_dir.display()))?;
    let git_dir = git_dir.as_path();
    let ref_path = git_dir.join("refs/heads").join(branch);
    let packed = git_dir.join("packed-refs");
    let event_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if !moves_a_ref(&event.kind) {
            return;
        }
        let relevant = event.paths.iter().any(|p| {
            // git writes `<ref>.lock` then renames it over `<ref>`; either name means the ref moved.
            p == &ref_path
                || p == &packed
                || p.to_str().is_some_and(|s| s.strip_suffix(".lock").is_some_and(|b| Path::new(b) == ref_path))
        });
        if relevant {
            let _ = event_tx.try_send(());
        }
    })
    .map_err(|e| anyhow!("cannot watch {}: {e}", git_dir.display()))?;
    watcher
        .watch(git_dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow!("cannot watch {}: {e}", git_dir.display()))?;
    let heads = git_dir.join("refs/heads");
    watcher.watch(&heads, RecursiveMode::Recursive).map_err(|e| anyhow!("cannot watch {}: {e}", heads.display()))?;
    let poller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.send(()).await.is_err() {
                break;
            }
        }
    });
    Ok(RefWatch { _watcher: watcher, poller })
}

/// Whether a filesystem event can mean a ref changed: writes, renames and removals can; opening or
/// reading a file (`Access`) cannot.
fn moves_a_ref(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    matches!(kind, EventKind::Any | EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_))
}

/// Keeps the filesystem watcher and poller alive; dropping it stops both.
pub struct RefWatch {
    _watcher: notify::RecommendedWatcher,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for RefWatch {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::git;

    #[test]
    fn trailers_come_from_the_last_paragraph_only() {
        let msg =
            "fix web\n\nKeelson-Retry: not-this\n\nbody\n\nKeelson-Retry: web\nSigned-off-by: a\nkeelson-retry: api\n";
        assert_eq!(trailer_values(msg, "Keelson-Retry"), vec!["web", "api"]);
        assert!(trailer_values("one line", "Keelson-Retry").is_empty());
    }

    /// Reading the ref (as the daemon does after every wake-up) must not wake it; moving it must.
    #[tokio::test]
    async fn reads_of_the_ref_do_not_wake_the_engine_but_a_move_does() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join(".git");
        std::fs::create_dir_all(git_dir.join("refs/heads")).unwrap();
        let ref_file = git_dir.join("refs/heads/main");
        std::fs::write(&ref_file, "1111111111111111111111111111111111111111\n").unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let _watch = watch_ref(&git_dir, "main", Duration::from_secs(3600), tx).unwrap();
        // The poller's first tick fires at once; drain it.
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();

        for _ in 0..20 {
            std::fs::read(&ref_file).unwrap();
            std::fs::read(git_dir.join("refs/heads")).ok();
        }
        std::fs::write(git_dir.join("refs/heads/keelson-status"), "2222222222222222222222222222222222222222\n")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "a read of the ref or a write of another ref woke the engine");

        let lock = git_dir.join("refs/heads/main.lock");
        std::fs::write(&lock, "3333333333333333333333333333333333333333\n").unwrap();
        std::fs::rename(&lock, &ref_file).unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(woke, Ok(Some(()))), "moving the ref did not wake the engine");
    }

    /// Snapshots reuse the listings of unchanged trees: after edits, additions, removals and
    /// renames at every depth, each snapshot must still list exactly what git lists.
    #[test]
    fn snapshots_with_reused_tree_listings_match_git_ls_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        let write = |path: &str, content: &str| crate::testing::write(root, path, content);
        for app in ["web", "api", "db"] {
            write(&format!("apps/{app}/deploy.yaml"), app);
            write(&format!("apps/{app}/manifests/base/svc.yaml"), app);
        }
        write("policies/p.yaml", "p");
        let steps: Vec<Box<dyn Fn()>> = vec![
            Box::new(|| write("apps/web/deploy.yaml", "web v2")),
            Box::new(|| write("apps/api/manifests/base/extra.yaml", "x")),
            Box::new(|| std::fs::remove_dir_all(root.join("apps/db")).unwrap()),
            Box::new(|| std::fs::rename(root.join("apps/api"), root.join("apps/api2")).unwrap()),
            Box::new(|| write("apps/db/deploy.yaml", "db")),
            Box::new(|| write("apps/db/manifests/base/svc.yaml", "api")),
        ];
        let repo = GitRepo::open(root).unwrap();
        for step in std::iter::once(None).chain(steps.iter().map(Some)) {
            if let Some(step) = step {
                step();
            }
            git(root, &["add", "-A"]);
            git(root, &["commit", "-q", "--allow-empty", "-m", "step"]);
            let head = repo.branch_head("main").unwrap().unwrap();
            for subpath in ["", "apps"] {
                let snap = repo.snapshot(&head, subpath).unwrap();
                let ours: Vec<String> = snap.files.iter().map(|f| format!("{} {}", f.blob_id, f.path)).collect();
                let treeish = if subpath.is_empty() { head.clone() } else { format!("{head}:{subpath}") };
                let theirs: Vec<String> = git(root, &["ls-tree", "-r", "--format=%(objectname) %(path)", &treeish])
                    .lines()
                    .map(str::to_owned)
                    .collect();
                let mut theirs = theirs;
                theirs.sort_by(|a, b| a.split_once(' ').unwrap().1.cmp(b.split_once(' ').unwrap().1));
                assert_eq!(ours, theirs, "snapshot of {subpath:?} differs from git ls-tree");
            }
        }
        // Only the trees of the last snapshot are kept.
        let kept = repo.listings.lock().unwrap().len();
        assert!(kept <= 12, "{kept} tree listings kept");
    }

    /// Links and submodules are listed with their kind (so the loader can refuse them at their
    /// path) and never followed.
    #[test]
    fn snapshots_list_links_and_submodules_as_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        std::fs::create_dir_all(root.join("apps/web")).unwrap();
        git(&root, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.path().join("outside.yaml"), "secret: 1\n").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.yaml"), root.join("apps/web/deploy.yaml")).unwrap();
        std::fs::write(root.join("README.md"), "x").unwrap();
        git(&root, &["add", "-A"]);
        git(&root, &["commit", "-qm", "link"]);
        // A submodule entry, written straight into the index (no network, no second clone).
        let blob = "1111111111111111111111111111111111111111";
        git(&root, &["update-index", "--add", "--cacheinfo", &format!("160000,{blob},apps/db")]);
        git(&root, &["commit", "-qm", "submodule"]);
        let repo = GitRepo::open(&root).unwrap();
        let head = repo.branch_head("main").unwrap().unwrap();
        let snap = repo.snapshot(&head, "").unwrap();
        let kinds: Vec<(&str, EntryKind)> = snap.files.iter().map(|f| (f.path.as_str(), f.entry)).collect();
        assert_eq!(
            kinds,
            [
                ("README.md", EntryKind::File),
                ("apps/db", EntryKind::Submodule),
                ("apps/web/deploy.yaml", EntryKind::Symlink)
            ]
        );
    }

    /// A relative git dir (`--repo ./state`) is watched like an absolute one.
    #[test]
    fn relative_paths_are_made_absolute_before_watching() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join(".git");
        std::fs::create_dir_all(git_dir.join("refs/heads")).unwrap();
        let cwd = std::env::current_dir().unwrap();
        let relative = pathdiff(&git_dir, &cwd);
        assert!(relative.is_relative());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(16);
            let _watch = watch_ref(&relative, "main", Duration::from_secs(3600), tx).unwrap();
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            std::fs::write(git_dir.join("refs/heads/main"), "4444444444444444444444444444444444444444\n").unwrap();
            let woke = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            assert!(matches!(woke, Ok(Some(()))), "a ref move under a relative git dir did not wake the engine");
        });
    }

    /// `to` expressed relative to `from` (both absolute), with `..` components as needed.
    fn pathdiff(to: &Path, from: &Path) -> PathBuf {
        let to: Vec<_> = to.components().collect();
        let from: Vec<_> = from.components().collect();
        let common = to.iter().zip(&from).take_while(|(a, b)| a == b).count();
        let mut out = PathBuf::new();
        for _ in common..from.len() {
            out.push("..");
        }
        for c in &to[common..] {
            out.push(c.as_os_str());
        }
        out
    }
}
