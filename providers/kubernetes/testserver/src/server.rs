//! [`TestServer`]: start, address, kubeconfig, knobs, direct object access, bounded shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::controller;
use crate::http::{Fault, RequestRecord, Shared, router};
use crate::status::ApiError;
use crate::store::{DeleteOpts, Deleted, Deny, State, WriteCtx};

/// How the controllers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controllers {
    /// On a timer (one step per tick).
    Every(Duration),
    /// Only when a test calls [`TestServer::tick`] (deterministic tests).
    Manual,
}

/// How to start a [`TestServer`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to bind; the default `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// Delay added before answering every request.
    pub latency: Duration,
    /// When the controllers run (default every 50 ms).
    pub controllers: Controllers,
    /// How often watches that allow bookmarks get one (default 1 s; a real server: about 1 min).
    pub bookmark_interval: Duration,
    /// Events kept for watches to resume from (older resourceVersions get 410).
    pub history: usize,
    /// Require `Authorization: Bearer <token>` (401 otherwise).
    pub token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            latency: Duration::ZERO,
            controllers: Controllers::Every(Duration::from_millis(50)),
            bookmark_interval: Duration::from_secs(1),
            history: 10_000,
            token: None,
        }
    }
}

/// Errors of [`TestServer`] operations outside HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving failed.
    #[error("test API server: {0}")]
    Io(#[from] std::io::Error),
    /// The API answered with a `Status`.
    #[error("{} ({}): {}", .0.reason, .0.code, .0.message)]
    Api(ApiError),
    /// No served type has this apiVersion and kind.
    #[error("no served resource type for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind {
        /// apiVersion asked for.
        api_version: String,
        /// kind asked for.
        kind: String,
    },
    /// A direct object write lacked its identity.
    #[error("the object has no {0}")]
    Missing(&'static str),
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

/// A kubeconfig for an API server at `url`: context `keelson-testserver`, namespace `default`,
/// a bearer token when given (anonymous otherwise).
pub fn kubeconfig_yaml(url: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("  user:\n    token: {t}\n"),
        None => "  user: {}\n".to_string(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: keelson-testserver\n  cluster:\n    server: {url}\ncontexts:\n- name: keelson-testserver\n  context:\n    cluster: keelson-testserver\n    user: keelson-testserver\n    namespace: default\ncurrent-context: keelson-testserver\nusers:\n- name: keelson-testserver\n{user}"
    )
}

/// A running in-memory Kubernetes API server on loopback. Dropping it stops it.
pub struct TestServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    serve: Option<JoinHandle<()>>,
    controllers: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Binds and starts serving; the four default namespaces exist.
    pub async fn start(opts: Options) -> Result<TestServer, Error> {
        let listener = tokio::net::TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let mut state = State::new(opts.history.max(1));
        controller::tick(&mut state);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            log: Mutex::new(Vec::new()),
            latency: Mutex::new(opts.latency),
            faults: Mutex::new(Vec::new()),
            shutdown: stopped.clone(),
            bookmark_interval: opts.bookmark_interval,
            token: opts.token.clone(),
        });
        let app = router(shared.clone());
        let mut on_stop = stopped.clone();
        let serve = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = on_stop.wait_for(|s| *s).await;
                })
                .await;
        });
        let controllers = match opts.controllers {
            Controllers::Manual => None,
            Controllers::Every(period) => {
                let shared = shared.clone();
                let mut stopped = stopped;
                Some(tokio::spawn(async move {
                    let mut t = tokio::time::interval(period);
                    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tokio::select! {
                            _ = t.tick() => controller::tick(&mut shared.state()),
                            _ = stopped.wait_for(|s| *s) => return,
                        }
                    }
                }))
            }
        };
        Ok(TestServer { shared, addr, stop, serve: Some(serve), controllers })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The kubeconfig text pointing at this server (see [`kubeconfig_yaml`]).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_yaml(&self.url(), self.shared.token.as_deref())
    }

    /// Writes [`TestServer::kubeconfig_yaml`] to `path` (for a real process to use).
    pub fn kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig_yaml())?;
        Ok(())
    }

    /// Stops serving: open watches end, the listener closes. Bounded: after `within` the
    /// server task is aborted.
    pub async fn shutdown_within(mut self, within: Duration) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        if let Some(serve) = self.serve.take() {
            let abort = serve.abort_handle();
            if tokio::time::timeout(within, serve).await.is_err() {
                abort.abort();
            }
        }
    }

    /// [`TestServer::shutdown_within`] five seconds.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(5)).await;
    }

    // ---- knobs ----

    /// Sets the delay added to every request.
    pub fn set_latency(&self, latency: Duration) {
        *self.shared.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// Answers matching requests with `fault.code` (and a `Status` of the matching reason).
    pub fn inject(&self, fault: Fault) {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).push(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Refuses matching requests with 403 Forbidden, worded as RBAC does.
    pub fn deny(&self, rule: Deny) {
        self.shared.state().denies.push(rule);
    }

    /// Removes every [`Deny`] rule.
    pub fn allow_all(&self) {
        self.shared.state().denies.clear();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Makes the new pods of Deployment `namespace/name` never become ready (or ready again).
    pub fn set_never_available(&self, namespace: &str, name: &str, never: bool) {
        let mut st = self.shared.state();
        let key = (namespace.to_string(), name.to_string());
        if never {
            st.never_available.insert(key);
        } else {
            st.never_available.remove(&key);
        }
    }

    /// Forgets the watch history: a watch from any earlier resourceVersion gets 410.
    pub fn compact(&self) {
        self.shared.state().compact();
    }

    /// Runs every controller once (with [`Controllers::Manual`], the only way they run).
    pub fn tick(&self) {
        controller::tick(&mut self.shared.state());
    }

    /// The current resourceVersion of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.shared.state().resource_version()
    }

    // ---- direct object access (for assertions and for other managers' edits) ----

    fn rt(&self, api_version: &str, kind: &str) -> Result<Arc<crate::catalog::ResourceType>, Error> {
        self.shared
            .state()
            .catalog
            .find_kind(api_version, kind)
            .ok_or_else(|| Error::UnknownKind { api_version: api_version.into(), kind: kind.into() })
    }

    /// The stored object, exactly as a GET would return it.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, Error> {
        let rt = self.rt(api_version, kind)?;
        let st = self.shared.state();
        Ok(st.lookup(&rt, namespace, name).map(|o| st.served(&rt, o)))
    }

    /// Every stored object of a kind (in `namespace`, or all).
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Result<Vec<Value>, Error> {
        let rt = self.rt(api_version, kind)?;
        Ok(self.shared.state().all(&rt, namespace))
    }

    fn identity(object: &Value) -> Result<(String, String, Option<String>, String), Error> {
        let s = |p: &str| object.pointer(p).and_then(Value::as_str).map(str::to_string);
        Ok((
            s("/apiVersion").ok_or(Error::Missing("apiVersion"))?,
            s("/kind").ok_or(Error::Missing("kind"))?,
            s("/metadata/namespace"),
            s("/metadata/name").ok_or(Error::Missing("metadata.name"))?,
        ))
    }

    /// Creates `object` as field manager `manager` (namespace taken from the object).
    pub fn create_as(&self, manager: &str, object: Value) -> Result<Value, Error> {
        let (av, kind, ns, _) = Self::identity(&object)?;
        let rt = self.rt(&av, &kind)?;
        let ns = if rt.namespaced { Some(ns.unwrap_or_else(|| "default".into())) } else { None };
        Ok(self.shared.state().create(&rt, ns.as_deref(), object, &WriteCtx::new(manager))?)
    }

    /// Server-side apply of `object` as `manager` (what `kubectl apply --server-side` does).
    pub fn apply_as(&self, manager: &str, object: Value, force: bool) -> Result<Value, Error> {
        let (av, kind, ns, name) = Self::identity(&object)?;
        let rt = self.rt(&av, &kind)?;
        let ns = if rt.namespaced { Some(ns.unwrap_or_else(|| "default".into())) } else { None };
        Ok(self.shared.state().apply(&rt, ns.as_deref(), &name, object, &WriteCtx::new(manager), force)?.0)
    }

    /// Another manager's read-modify-write of a stored object (an Update in `managedFields`,
    /// as `kubectl edit` or a controller would make): drift and ownership changes.
    pub fn edit_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Value, Error> {
        let rt = self.rt(api_version, kind)?;
        let mut st = self.shared.state();
        let mut current = st.get(&rt, namespace, name)?;
        edit(&mut current);
        Ok(st.replace(&rt, namespace, name, current, &WriteCtx::new(manager))?)
    }

    /// Writes the `status` of a stored object as `manager` (what a controller would report).
    pub fn set_status_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, Error> {
        let rt = self.rt(api_version, kind)?;
        let mut st = self.shared.state();
        let mut current = st.get(&rt, namespace, name)?;
        current["status"] = status;
        let ctx = WriteCtx { subresource: "status".into(), ..WriteCtx::new(manager) };
        Ok(st.replace(&rt, namespace, name, current, &ctx)?)
    }

    /// Deletes an object (background propagation); `Ok(None)` when it did not exist.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, Error> {
        let rt = self.rt(api_version, kind)?;
        match self.shared.state().delete(&rt, namespace, name, &DeleteOpts::default()) {
            Ok(Deleted::Gone(v) | Deleted::Pending(v)) => Ok(Some(v)),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a namespace (no-op when it exists).
    pub fn create_namespace(&self, name: &str) {
        let mut st = self.shared.state();
        st.ensure_namespace(name);
        controller::tick(&mut st);
    }

    /// Creates a CRD and establishes it at once, so its resources are served immediately.
    pub fn register_crd(&self, crd: Value) -> Result<Value, Error> {
        let mut st = self.shared.state();
        let rt = st.catalog.find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("built in");
        let name =
            crd.pointer("/metadata/name").and_then(Value::as_str).ok_or(Error::Missing("metadata.name"))?.to_string();
        st.create(&rt, None, crd, &WriteCtx::new("keelson-test"))?;
        // Two passes: the cleanup finalizer first, then the Established condition.
        controller::tick(&mut st);
        controller::tick(&mut st);
        Ok(st.get(&rt, None, &name)?)
    }

    /// A minimal namespaced CRD `plural.group` of `kind` at version `v1` with an open schema.
    pub fn simple_crd(group: &str, kind: &str, plural: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List")},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "subresources": {"status": {}},
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        if let Some(s) = self.serve.take() {
            s.abort();
        }
    }
}
