//! The network side of git, behind one small trait: list a remote ref, fetch it, push a branch.
//!
//! gix reads and writes the objects; it cannot push, and its network transports are not compiled
//! in. The `git` CLI does these three things for every transport (`file://`, `http(s)://`,
//! `ssh://`, `git@host:path`) with one code path. Credentials are read from their files at every
//! call (so a rotated token is picked up), handed to git through its environment (never its
//! command line, which other users can read), and masked out of every message.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

/// Longest time one git command may take before it is stopped.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Where credentials for the remote come from: files, never values in config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name for HTTP basic authentication.
    pub username: Option<String>,
    /// File holding the password (or an access token used as one) for basic authentication.
    pub password_file: Option<PathBuf>,
    /// File holding a bearer token (`Authorization: Bearer …`).
    pub token_file: Option<PathBuf>,
    /// Private key for ssh.
    pub ssh_key_file: Option<PathBuf>,
    /// `known_hosts` file the ssh host key is checked against.
    pub known_hosts_file: Option<PathBuf>,
}

/// Why a remote operation failed: one cause per thing an operator would fix differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Cause {
    /// The host cannot be reached (DNS, refused connection, network down, timeout).
    Unreachable,
    /// The remote refused the credentials, or none were given where some are needed.
    BadCredentials,
    /// The ssh host key is unknown or changed.
    HostKey,
    /// There is no repository at the URL.
    NotFound,
    /// The repository exists but has no tracked branch.
    BranchMissing,
    /// The repository has no commits at all.
    EmptyRepository,
    /// Objects the remote sent (or the cache holds) are corrupt.
    Corrupt,
    /// The tracked branch was rewritten and `allowForcePush: false` refuses it.
    HistoryRewriteRefused,
    /// A credentials file cannot be read.
    CredentialsFile,
    /// Anything else git reported.
    Other,
}

impl Cause {
    /// Metric label and the name `/api/v1/status` shows.
    pub fn label(self) -> &'static str {
        match self {
            Cause::Unreachable => "unreachable",
            Cause::BadCredentials => "badCredentials",
            Cause::HostKey => "hostKey",
            Cause::NotFound => "notFound",
            Cause::BranchMissing => "branchMissing",
            Cause::EmptyRepository => "emptyRepository",
            Cause::Corrupt => "corrupt",
            Cause::HistoryRewriteRefused => "historyRewriteRefused",
            Cause::CredentialsFile => "credentialsFile",
            Cause::Other => "other",
        }
    }
}

/// A failed remote operation: its cause and a message for people (no secrets in it).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub cause: Cause,
    pub message: String,
}

impl RemoteError {
    pub fn new(cause: Cause, message: impl Into<String>) -> Self {
        Self { cause, message: message.into() }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The remote branch now points at the pushed commit.
    Pushed,
    /// The remote branch moved to something ours does not contain (never forced).
    Rejected,
}

/// The remote operations the daemon needs.
#[async_trait::async_trait]
pub trait GitTransport: Send + Sync + std::fmt::Debug {
    /// The URL for people (no password).
    fn display_url(&self) -> String;
    /// The commit `reference` points at on the remote, `None` if it has no such ref: one ref
    /// lookup, so an idle poll costs no more.
    async fn remote_ref(&self, reference: &str) -> Result<Option<String>, RemoteError>;
    /// True when the remote has any branch at all (tells a missing branch from an empty repository).
    async fn has_branches(&self) -> Result<bool, RemoteError>;
    /// Fetches the remote's `remote_ref` into the local `local_ref` (forced locally: `local_ref`
    /// is a scratch ref the caller inspects before moving anything that matters).
    async fn fetch(&self, remote_ref: &str, local_ref: &str) -> Result<(), RemoteError>;
    /// Pushes the local `reference` to the same name on the remote, never forced.
    async fn push(&self, reference: &str) -> Result<PushOutcome, RemoteError>;
}

/// The secrets to mask in git's output, and the environment that hands them to git.
type Auth = (Vec<String>, Vec<(String, String)>);

/// [`GitTransport`] through the `git` CLI, against a cache repository under the data directory.
#[derive(Debug, Clone)]
pub struct GitCli {
    url: String,
    git_dir: PathBuf,
    credentials: Credentials,
}

impl GitCli {
    pub fn new(url: &str, git_dir: &Path, credentials: Credentials) -> Self {
        Self { url: url.to_owned(), git_dir: git_dir.to_path_buf(), credentials }
    }

    /// The secrets to mask and the environment that hands them to git.
    fn auth(&self) -> Result<Auth, RemoteError> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path).map(|s| s.trim_end_matches(['\n', '\r']).to_owned()).map_err(|e| {
                RemoteError::new(
                    Cause::CredentialsFile,
                    format!("cannot read the {what} file {}: {e}; check source.credentials", path.display()),
                )
            })
        };
        let mut secrets = Vec::new();
        if let Some(password) = url_password(&self.url) {
            secrets.push(password);
        }
        let mut config: Vec<(String, String)> = vec![
            // No credential helper or prompt of the host: the daemon's own config decides.
            ("credential.helper".into(), String::new()),
            ("http.lowSpeedLimit".into(), "1000".into()),
            ("http.lowSpeedTime".into(), "30".into()),
        ];
        if let Some(path) = &self.credentials.token_file {
            let token = read(path, "token")?;
            config.push(("http.extraHeader".into(), format!("Authorization: Bearer {token}")));
            secrets.push(token);
        } else if let Some(path) = &self.credentials.password_file {
            let password = read(path, "password")?;
            let user = self.credentials.username.clone().unwrap_or_default();
            let basic = base64_encode(format!("{user}:{password}").as_bytes());
            config.push(("http.extraHeader".into(), format!("Authorization: Basic {basic}")));
            secrets.push(password);
            secrets.push(basic);
        }
        let mut env: Vec<(String, String)> = vec![("GIT_CONFIG_COUNT".into(), config.len().to_string())];
        for (i, (key, value)) in config.into_iter().enumerate() {
            env.push((format!("GIT_CONFIG_KEY_{i}"), key));
            env.push((format!("GIT_CONFIG_VALUE_{i}"), value));
        }
        let mut ssh = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=20");
        if let Some(key) = &self.credentials.ssh_key_file {
            ssh.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(&key.display().to_string())));
        }
        if let Some(hosts) = &self.credentials.known_hosts_file {
            ssh.push_str(&format!(" -o UserKnownHostsFile={}", shell_quote(&hosts.display().to_string())));
        }
        env.push(("GIT_SSH_COMMAND".into(), ssh));
        Ok((secrets.into_iter().filter(|s| !s.is_empty()).collect(), env))
    }

    /// Runs `git ARGS` against the cache with the remote's credentials; stdout, or the failure
    /// classified with secrets masked.
    async fn run(&self, args: &[&str]) -> Result<std::process::Output, RemoteError> {
        let (secrets, env) = self.auth()?;
        let mut command = network_git(&self.git_dir);
        command.args(args).envs(env);
        let output = match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
            Ok(Ok(output)) => output,
            Ok(Err(e)) => {
                return Err(RemoteError::new(Cause::Other, format!("cannot run git: {e} (is git installed?)")));
            }
            Err(_) => {
                return Err(RemoteError::new(
                    Cause::Unreachable,
                    format!("{} did not answer within {COMMAND_TIMEOUT:?}", self.display_url()),
                ));
            }
        };
        let mask = |text: &[u8]| {
            let mut text = String::from_utf8_lossy(text).into_owned();
            for secret in &secrets {
                text = text.replace(secret.as_str(), "***");
            }
            text
        };
        Ok(std::process::Output {
            status: output.status,
            stdout: mask(&output.stdout).into(),
            stderr: mask(&output.stderr).into(),
        })
    }

    fn failure(&self, what: &str, output: &std::process::Output) -> RemoteError {
        classify(&self.display_url(), what, &String::from_utf8_lossy(&output.stderr))
    }
}

#[async_trait::async_trait]
impl GitTransport for GitCli {
    fn display_url(&self) -> String {
        display_url(&self.url)
    }

    async fn remote_ref(&self, reference: &str) -> Result<Option<String>, RemoteError> {
        let output = self.run(&["ls-remote", "--", &self.url, reference]).await?;
        if !output.status.success() {
            return Err(self.failure("listing refs of", &output));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        Ok(stdout.lines().find_map(|line| {
            let (id, name) = line.split_once('\t')?;
            (name.trim() == reference).then(|| id.trim().to_owned())
        }))
    }

    async fn has_branches(&self) -> Result<bool, RemoteError> {
        let output = self.run(&["ls-remote", "--heads", "--", &self.url]).await?;
        if !output.status.success() {
            return Err(self.failure("listing branches of", &output));
        }
        Ok(!output.stdout.iter().all(u8::is_ascii_whitespace))
    }

    async fn fetch(&self, remote_ref: &str, local_ref: &str) -> Result<(), RemoteError> {
        let refspec = format!("+{remote_ref}:{local_ref}");
        let output = self
            .run(&[
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-recurse-submodules",
                "--",
                &self.url,
                &refspec,
            ])
            .await?;
        if !output.status.success() {
            return Err(self.failure("fetching from", &output));
        }
        Ok(())
    }

    async fn push(&self, reference: &str) -> Result<PushOutcome, RemoteError> {
        let refspec = format!("{reference}:{reference}");
        let output = self.run(&["push", "--porcelain", "--quiet", "--", &self.url, &refspec]).await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            return Ok(PushOutcome::Pushed);
        }
        // `!	<ref>	[rejected] (fetch first)` / `(non-fast-forward)`: the remote moved.
        let rejected = stdout.lines().chain(stderr.lines()).any(|l| {
            (l.contains("[rejected]") && (l.contains("fetch first") || l.contains("non-fast-forward")))
                    // Another writer pushing at the same moment held the ref's lock: the same for us.
                    || (l.contains("[remote rejected]")
                        && (l.contains("failed to update ref") || l.contains("cannot lock ref")))
        });
        if rejected {
            return Ok(PushOutcome::Rejected);
        }
        if let Some(line) = stdout.lines().find(|l| l.contains("[remote rejected]")) {
            return Err(RemoteError::new(
                Cause::Other,
                format!(
                    "{} refused the push of {reference}: {}; allow keelson to push that branch (branch protection, hooks)",
                    self.display_url(),
                    line.trim_start_matches('!').trim()
                ),
            ));
        }
        Err(self.failure("pushing to", &output))
    }
}

/// `git` for the cache repository, isolated from the host's git configuration and never prompting.
fn network_git(git_dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .arg("--git-dir")
        .arg(git_dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs a local (no network) `git` command on the cache; stdout, or stderr as the error.
pub async fn local_git(git_dir: &Path, args: &[&str]) -> Result<std::process::Output, String> {
    let mut command = network_git(git_dir);
    command.args(args);
    match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(e)) => Err(format!("cannot run git: {e} (is git installed?)")),
        Err(_) => Err(format!("git {} did not finish within {COMMAND_TIMEOUT:?}", args.join(" "))),
    }
}

/// The cause of a failed git command, from its (English) stderr, with what to do about it.
pub fn classify(url: &str, what: &str, stderr: &str) -> RemoteError {
    let lower = stderr.to_ascii_lowercase();
    let detail = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.trim_start_matches("fatal: ").trim_start_matches("error: "))
        .collect::<Vec<_>>()
        .join("; ");
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let (cause, hint) = if has(&["host key verification failed", "remote host identification has changed"]) {
        (
            Cause::HostKey,
            "the ssh host key is not in source.credentials.knownHostsFile or has changed; add the right key",
        )
    } else if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "returned error: 401",
        "returned error: 403",
        "permission denied (publickey",
        "invalid username or password",
        "http basic: access denied",
    ]) {
        (Cause::BadCredentials, "check the files named in source.credentials (they are read again at every fetch)")
    } else if has(&[
        "bad object",
        "corrupt",
        "index-pack failed",
        "did not send all necessary objects",
        "invalid object",
        "unpack-objects failed",
        "object file",
        "fatal: missing",
    ]) {
        (
            Cause::Corrupt,
            "objects are corrupt; if it is the cache, remove <data dir>/source.git and the daemon fetches afresh",
        )
    } else if has(&[
        "does not appear to be a git repository",
        "repository not found",
        "returned error: 404",
        "not found",
        "no such file or directory",
    ]) {
        (Cause::NotFound, "there is no repository at this URL (moved, deleted, or a typo in source.repo)")
    } else if has(&[
        "could not resolve host",
        "connection refused",
        "failed to connect",
        "connection timed out",
        "timed out",
        "network is unreachable",
        "no route to host",
        "connection reset",
        "could not read from remote",
        "unable to access",
        "early eof",
        "empty reply",
    ]) {
        (Cause::Unreachable, "the remote cannot be reached; check the network and the URL")
    } else {
        (Cause::Other, "see git's message")
    };
    let detail = if detail.is_empty() { "git gave no reason".to_owned() } else { detail };
    RemoteError::new(cause, format!("{what} {url} failed ({}): {detail}; {hint}", cause.label()))
}

/// The URL without a password (`https://user:secret@host/x` → `https://user@host/x`).
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}{path}")
        }
        None => url.to_owned(),
    }
}

/// The password of a URL's userinfo (`https://user:secret@host/…`), if it has one.
fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    userinfo.split_once(':').map(|(_, p)| p.to_owned()).filter(|p| !p.is_empty())
}

/// True for a URL git reaches over a transport (`file://`, `http(s)://`, `ssh://`, `git@host:path`),
/// false for a local path.
pub fn is_remote(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    // scp-like `user@host:path`: a colon before any slash, and a user part.
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), slash) => repo[..colon].contains('@') && slash.is_none_or(|s| colon < s),
        _ => false,
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Standard base64 with padding (HTTP basic authentication).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn remote_urls_are_told_from_paths_and_shown_without_passwords() {
        for remote in ["file:///srv/state.git", "https://h/x.git", "ssh://git@h/x", "git@github.com:acme/state.git"] {
            assert!(is_remote(remote), "{remote}");
        }
        for local in ["state", "./state", "/srv/state", "a/b:c", "C:weird"] {
            assert!(!is_remote(local), "{local}");
        }
        assert_eq!(display_url("https://bot:s3cret@git.example.com/x.git"), "https://bot@git.example.com/x.git");
        assert_eq!(display_url("https://git.example.com/x.git"), "https://git.example.com/x.git");
        assert_eq!(url_password("https://bot:s3cret@git.example.com/x.git").as_deref(), Some("s3cret"));
        assert_eq!(url_password("ssh://git@h/x"), None);
    }

    #[test]
    fn failures_are_classified_by_cause() {
        let cases = [
            (
                "fatal: unable to access 'http://127.0.0.1:1/x/': Failed to connect to 127.0.0.1 port 1",
                Cause::Unreachable,
            ),
            ("fatal: Authentication failed for 'http://h/x/'", Cause::BadCredentials),
            ("fatal: could not read Username for 'http://h': terminal prompts disabled", Cause::BadCredentials),
            ("fatal: '/tmp/gone.git' does not appear to be a git repository", Cause::NotFound),
            ("Host key verification failed.\nfatal: Could not read from remote repository.", Cause::HostKey),
            ("error: inflate: data stream error\nfatal: index-pack failed", Cause::Corrupt),
        ];
        for (stderr, cause) in cases {
            let e = classify("http://h/x", "fetching from", stderr);
            assert_eq!(e.cause, cause, "{stderr}: {}", e.message);
            assert!(e.message.starts_with("fetching from http://h/x failed"), "{}", e.message);
        }
    }
}
