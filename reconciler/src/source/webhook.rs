//! Push webhooks: `POST /hooks/git` on a listener of its own (the status API stays GET-only).
//!
//! A delivery is trusted only with a valid signature made with the shared secret: GitHub's
//! `X-Hub-Signature-256`, Gitea's and Forgejo's `X-Gitea-Signature` / `X-Forgejo-Signature`,
//! Bitbucket's `X-Hub-Signature: sha256=…`, the generic `X-Keelson-Signature` (all HMAC-SHA256 of
//! the body), or GitLab's `X-Gitlab-Token` (the secret itself). Every comparison is constant-time.
//! Bad or missing → 401 and nothing is fetched. A push to the tracked branch → 202 and a fetch at
//! once; anything else (another branch, a tag, a ping) → 202, ignored; a delivery id seen before →
//! 202, not fetched again. This listener faces the internet: bodies, connections and the time to
//! send headers are bounded.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::engine::state::Fleet;

/// Largest body accepted (GitHub caps payloads at 25 MB, but a push of a state repository is small).
pub const MAX_BODY: usize = 1024 * 1024;
/// Delivery ids remembered to recognise a replay.
const DELIVERIES_REMEMBERED: usize = 4096;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The shared secret (never logged, never shown).
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Reads the secret from `path`, trailing newline trimmed; an empty secret is refused.
    pub fn read(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read the webhook secret file {}: {e}", path.display()))?;
        let mut bytes = text.as_slice();
        while let Some(rest) = bytes.strip_suffix(b"\n").or_else(|| bytes.strip_suffix(b"\r")) {
            bytes = rest;
        }
        if bytes.is_empty() {
            anyhow::bail!("the webhook secret file {} is empty; put a long random secret in it", path.display());
        }
        Ok(Self(bytes.into()))
    }

    /// A secret from bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.into())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

/// Which forge signed a delivery, by the header it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Forge {
    GitHub,
    GitLab,
    Gitea,
    Bitbucket,
    Generic,
}

/// The webhook listener as `/api/v1/status` shows it (under `source.webhook`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    pub listen: String,
    /// Deliveries that started a fetch.
    pub accepted: u64,
    /// Valid deliveries about something else (another branch, a tag, a ping).
    pub ignored: u64,
    /// Valid deliveries whose id was seen before.
    pub duplicates: u64,
    /// Deliveries refused for a bad or missing signature.
    pub rejected: u64,
    /// When the last valid delivery arrived (RFC 3339).
    pub last_delivery: Option<String>,
}

/// What the webhook handler shares.
#[derive(Clone)]
pub struct HookState {
    secret: Secret,
    branch: String,
    /// Asks the source for a fetch (remote) or a look at the ref (local).
    trigger: Arc<dyn Fn() + Send + Sync>,
    seen: Arc<Mutex<Deliveries>>,
    fleet: Arc<RwLock<Fleet>>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl HookState {
    pub fn new(
        secret: Secret,
        branch: &str,
        trigger: Arc<dyn Fn() + Send + Sync>,
        fleet: Arc<RwLock<Fleet>>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self { secret, branch: branch.to_owned(), trigger, seen: Arc::default(), fleet, metrics }
    }

    fn count(&self, f: impl FnOnce(&mut WebhookStatus)) {
        let mut fleet = self.fleet.write().unwrap_or_else(|e| e.into_inner());
        if let Some(status) = fleet.source.webhook.as_mut() {
            f(status);
        }
    }
}

/// A trigger for a source that fetches: wakes its loop.
pub fn notify_trigger(notify: Arc<Notify>) -> Arc<dyn Fn() + Send + Sync> {
    Arc::new(move || notify.notify_one())
}

/// Recently seen delivery ids (bounded, oldest forgotten first).
#[derive(Debug, Default)]
struct Deliveries {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Deliveries {
    /// False if `id` was seen before.
    fn insert(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == DELIVERIES_REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.ids.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }
}

/// The webhook router: `POST /hooks/git`; other methods 405, other paths 404.
pub fn router(state: HookState) -> Router {
    Router::new()
        .route("/hooks/git", post(hook).fallback(method_not_allowed))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    answer(status, json!({"error": {"status": status.as_u16(), "message": message}}))
}

async fn method_not_allowed() -> Response {
    let mut r = error(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted on /hooks/git");
    r.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("POST"));
    r
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "the webhook listener serves only POST /hooks/git")
}

async fn hook(State(s): State<HookState>, headers: HeaderMap, body: Bytes) -> Response {
    let forge = match verify(&headers, &body, &s.secret) {
        Ok(forge) => forge,
        Err(why) => {
            tracing::warn!(reason = why, "webhook delivery refused (nothing fetched)");
            s.count(|w| w.rejected += 1);
            crate::metrics::Metrics::outcome(&s.metrics.webhook_deliveries, "rejected");
            return error(StatusCode::UNAUTHORIZED, why);
        }
    };
    let delivery = delivery_id(&headers);
    s.count(|w| w.last_delivery = Some(crate::engine::now_rfc3339()));
    if let Some(id) = &delivery {
        let fresh = s.seen.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
        if !fresh {
            tracing::info!(?forge, delivery = id, "webhook delivery seen before; not fetched again");
            s.count(|w| w.duplicates += 1);
            crate::metrics::Metrics::outcome(&s.metrics.webhook_deliveries, "duplicate");
            return answer(StatusCode::ACCEPTED, json!({"status": "duplicate", "delivery": id}));
        }
    }
    let ignored = match pushed_branches(forge, &headers, &body) {
        Pushed::Branches(b) if b.contains(&s.branch) => None,
        Pushed::Any => None,
        Pushed::Branches(b) if b.is_empty() => Some("not a push to a branch (a tag?)".to_owned()),
        Pushed::Branches(b) => Some(format!("a push to {}, not to the tracked branch {}", b.join(", "), s.branch)),
        Pushed::Other(what) => Some(what),
    };
    if let Some(reason) = ignored {
        tracing::info!(?forge, delivery, reason, "webhook delivery ignored");
        s.count(|w| w.ignored += 1);
        crate::metrics::Metrics::outcome(&s.metrics.webhook_deliveries, "ignored");
        return answer(StatusCode::ACCEPTED, json!({"status": "ignored", "delivery": delivery, "reason": reason}));
    }
    tracing::info!(?forge, delivery, branch = s.branch, "webhook: push to the tracked branch; fetching now");
    (s.trigger)();
    s.count(|w| w.accepted += 1);
    crate::metrics::Metrics::outcome(&s.metrics.webhook_deliveries, "accepted");
    answer(StatusCode::ACCEPTED, json!({"status": "accepted", "delivery": delivery, "fetch": "started"}))
}

/// Checks the delivery's signature; the forge that signed it, or why it is refused.
fn verify(headers: &HeaderMap, body: &[u8], secret: &Secret) -> Result<Forge, &'static str> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or_default().trim());
    let hmac_ok = |hex: &str| {
        let Some(expected) = decode_hex(hex) else { return false };
        let mut mac = secret.mac();
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    };
    let signed = |value: &str, prefixed: bool| match value.strip_prefix("sha256=") {
        Some(hex) => hmac_ok(hex),
        None if !prefixed => hmac_ok(value),
        None => false,
    };
    if let Some(v) = header("x-hub-signature-256") {
        return if signed(v, true) { Ok(Forge::GitHub) } else { Err("bad X-Hub-Signature-256") };
    }
    if let Some(v) = header("x-gitea-signature").or_else(|| header("x-forgejo-signature")) {
        return if signed(v, false) { Ok(Forge::Gitea) } else { Err("bad X-Gitea-Signature") };
    }
    if let Some(v) = header("x-keelson-signature") {
        return if signed(v, false) { Ok(Forge::Generic) } else { Err("bad X-Keelson-Signature") };
    }
    if let Some(v) = header("x-hub-signature") {
        return if signed(v, true) { Ok(Forge::Bitbucket) } else { Err("bad X-Hub-Signature (sha256= expected)") };
    }
    if let Some(v) = headers.get("x-gitlab-token") {
        // Compared as MACs of both values, so the comparison takes the same time wherever they differ.
        let mut theirs = secret.mac();
        theirs.update(v.as_bytes());
        let mut ours = secret.mac();
        ours.update(&secret.0);
        return if theirs.verify_slice(&ours.finalize().into_bytes()).is_ok() {
            Ok(Forge::GitLab)
        } else {
            Err("bad X-Gitlab-Token")
        };
    }
    Err("missing signature: send X-Hub-Signature-256 (GitHub), X-Gitlab-Token (GitLab), X-Gitea-Signature \
         (Gitea, Forgejo), X-Hub-Signature (Bitbucket) or X-Keelson-Signature (HMAC-SHA256 of the body)")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// The delivery's id, from whichever forge header carries it.
fn delivery_id(headers: &HeaderMap) -> Option<String> {
    [
        "x-github-delivery",
        "x-gitea-delivery",
        "x-forgejo-delivery",
        "x-gitlab-event-uuid",
        "x-request-uuid",
        "x-hook-uuid",
        "x-keelson-delivery",
    ]
    .iter()
    .find_map(|name| headers.get(*name)?.to_str().ok().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned))
}

/// What a valid delivery is about.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// A push to these branches (empty: a push of tags only).
    Branches(Vec<String>),
    /// No ref named (a generic delivery): look anyway.
    Any,
    /// Not a push (a ping, an issue comment…).
    Other(String),
}

fn pushed_branches(forge: Forge, headers: &HeaderMap, body: &[u8]) -> Pushed {
    let event = ["x-github-event", "x-gitea-event", "x-forgejo-event", "x-gitlab-event", "x-event-key"]
        .iter()
        .find_map(|name| headers.get(*name)?.to_str().ok())
        .map(str::to_owned);
    if let Some(event) = &event {
        let push = matches!(event.as_str(), "push" | "Push Hook" | "repo:push");
        if !push {
            return Pushed::Other(format!("a `{event}` event, not a push"));
        }
    }
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return Pushed::Other("the body is not JSON".into());
    };
    if forge == Forge::Bitbucket || payload.pointer("/push/changes").is_some() {
        let changes = payload.pointer("/push/changes").and_then(Value::as_array).cloned().unwrap_or_default();
        let branches = changes
            .iter()
            .filter_map(|c| c.get("new").filter(|n| n.get("type") == Some(&json!("branch"))))
            .filter_map(|n| n.get("name")?.as_str().map(str::to_owned))
            .collect();
        return Pushed::Branches(branches);
    }
    match payload.get("ref").and_then(Value::as_str) {
        Some(r) => Pushed::Branches(r.strip_prefix("refs/heads/").map(str::to_owned).into_iter().collect()),
        None if forge == Forge::Generic => Pushed::Any,
        None => Pushed::Other("a delivery without a ref".into()),
    }
}

/// Limits of the webhook listener: it faces the internet.
pub fn limits() -> crate::api::server::ServeLimits {
    crate::api::server::ServeLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(5),
        max_lifetime: Duration::from_secs(30),
    }
}

/// Binds the listener (before the daemon reports it is running, so a bad address fails start-up).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen for webhooks on {addr}: {e} (is another process using it? try 127.0.0.1:0)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(body);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn state(triggered: Arc<std::sync::atomic::AtomicUsize>) -> HookState {
        let fleet = Arc::new(RwLock::new(Fleet::default()));
        fleet.write().unwrap().source.webhook = Some(WebhookStatus::default());
        let trigger: Arc<dyn Fn() + Send + Sync> =
            Arc::new(move || _ = triggered.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
        HookState::new(Secret::from_bytes(b"s3cret"), "main", trigger, fleet, Arc::default())
    }

    async fn post(s: &HookState, headers: &[(&str, String)], body: &str) -> (u16, Value) {
        let mut req = Request::post("/hooks/git");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = router(s.clone()).oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_BODY).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn every_forge_signature_is_checked_and_only_the_tracked_branch_fetches() {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = state(n.clone());
        let body = r#"{"ref":"refs/heads/main"}"#;
        let sig = sign(b"s3cret", body.as_bytes());
        let good: Vec<Vec<(&str, String)>> = vec![
            vec![("x-hub-signature-256", format!("sha256={sig}")), ("x-github-event", "push".into())],
            vec![("x-gitea-signature", sig.clone()), ("x-gitea-event", "push".into())],
            vec![("x-forgejo-signature", sig.clone())],
            vec![("x-keelson-signature", format!("sha256={sig}"))],
            vec![("x-gitlab-token", "s3cret".into()), ("x-gitlab-event", "Push Hook".into())],
        ];
        for (i, headers) in good.iter().enumerate() {
            let (status, answer) = post(&s, headers, body).await;
            assert_eq!((status, answer["status"].as_str()), (202, Some("accepted")), "{headers:?}");
            assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), i + 1);
        }
        let bad: Vec<Vec<(&str, String)>> = vec![
            vec![],
            vec![("x-hub-signature-256", format!("sha256={}", sign(b"wrong", body.as_bytes())))],
            vec![("x-hub-signature-256", sig.clone())],
            vec![("x-gitea-signature", "zz".into())],
            vec![("x-gitlab-token", "s3cre".into())],
            vec![("x-keelson-signature", format!("sha256={}", &sig[..62]))],
        ];
        for headers in &bad {
            let (status, _) = post(&s, headers, body).await;
            assert_eq!(status, 401, "{headers:?}");
        }
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), good.len(), "a refused delivery fetched");
        let other = r#"{"ref":"refs/heads/dev"}"#;
        let (status, answer) = post(&s, &[("x-keelson-signature", sign(b"s3cret", other.as_bytes()))], other).await;
        assert_eq!((status, answer["status"].as_str()), (202, Some("ignored")));
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), good.len());
        let status = s.fleet.read().unwrap().source.webhook.clone().unwrap();
        assert_eq!((status.accepted, status.rejected, status.ignored), (5, 6, 1));
    }

    #[tokio::test]
    async fn a_replayed_delivery_is_recognised() {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = state(n.clone());
        let body = r#"{"ref":"refs/heads/main"}"#;
        let headers =
            vec![("x-keelson-signature", sign(b"s3cret", body.as_bytes())), ("x-keelson-delivery", "d-1".into())];
        assert_eq!(post(&s, &headers, body).await.1["status"], "accepted");
        assert_eq!(post(&s, &headers, body).await.1["status"], "duplicate");
        assert_eq!(n.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn other_methods_and_paths_are_refused_and_bodies_are_bounded() {
        let s = state(Arc::default());
        let resp = router(s.clone()).oneshot(Request::get("/hooks/git").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 405);
        let resp =
            router(s.clone()).oneshot(Request::post("/api/v1/status").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(resp.status(), 404);
        let big = "x".repeat(MAX_BODY + 1);
        let sig = sign(b"s3cret", big.as_bytes());
        let (status, _) = post(&s, &[("x-keelson-signature", sig)], &big).await;
        assert_eq!(status, 413);
    }

    #[test]
    fn secrets_lose_their_trailing_newline_and_are_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\r\n").unwrap();
        let secret = Secret::read(&path).unwrap();
        assert_eq!(&*secret.0, b"s3cret");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        std::fs::write(&path, "\n").unwrap();
        assert!(Secret::read(&path).is_err());
    }
}
