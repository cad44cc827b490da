//! The object store and the write path every request goes through: identity and server
//! metadata (`uid`, `resourceVersion`, `generation`, `creationTimestamp`), status kept apart
//! from the main resource, defaulting, validation, field ownership, finalizers and deletion,
//! and the event history that watches replay.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::admission;
use crate::apply::{self, ApplyError, Manager};
use crate::catalog::{Catalog, Generation, ResourceType};
use crate::fieldpath::Set;
use crate::status::{ApiError, Cause, Result};

/// `ADDED`, `MODIFIED` or `DELETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A new object.
    Added,
    /// A changed object.
    Modified,
    /// A removed object (carries its last state).
    Deleted,
}

impl EventType {
    /// The watch event `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the change produced.
    pub rv: u64,
    /// The storage key of the resource type (group, plural).
    pub key: (String, String),
    /// The namespace (empty for cluster-scoped objects).
    pub namespace: String,
    /// What happened.
    pub kind: EventType,
    /// The object after the change (before it, for a deletion).
    pub object: Value,
    /// The object before the change, for selectors that stop or start matching.
    pub prev: Option<Value>,
}

/// Who writes, and how.
#[derive(Debug, Clone)]
pub struct WriteCtx {
    /// The field manager.
    pub manager: String,
    /// `dryRun=All`: everything but storing.
    pub dry_run: bool,
    /// `""` or `"status"`.
    pub subresource: String,
}

impl WriteCtx {
    /// A write by `manager` to the main resource.
    pub fn new(manager: &str) -> Self {
        WriteCtx { manager: manager.into(), dry_run: false, subresource: String::new() }
    }
}

/// `DeleteOptions` that matter here.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `Foreground`, `Background` or `Orphan` (default Background).
    pub propagation: Option<String>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// The object is gone (its last state).
    Gone(Value),
    /// Finalizers hold it; it now has a `deletionTimestamp`.
    Pending(Value),
}

/// A request the server refuses with 403, as RBAC would.
#[derive(Debug, Clone, PartialEq)]
pub struct Deny {
    /// Verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`), or `*`.
    pub verb: String,
    /// API group (`""` for core), or `*`.
    pub group: String,
    /// Resource (`deployments`), or `*`.
    pub resource: String,
    /// Namespace, or any when `None`.
    pub namespace: Option<String>,
}

impl Deny {
    fn matches(&self, verb: &str, rt: &ResourceType, ns: Option<&str>) -> bool {
        (self.verb == "*" || self.verb == verb)
            && (self.group == "*" || self.group == rt.group)
            && (self.resource == "*" || self.resource == rt.plural)
            && self.namespace.as_deref().is_none_or(|n| Some(n) == ns)
    }
}

/// The server's whole state, behind one lock.
pub struct State {
    /// Served types.
    pub catalog: Catalog,
    rv: u64,
    objects: BTreeMap<(String, String), BTreeMap<(String, String), Value>>,
    history: VecDeque<Arc<Event>>,
    /// Most events kept for watches to resume from (older versions get 410).
    pub history_limit: usize,
    /// The oldest resourceVersion a watch may resume from.
    pub oldest_rv: u64,
    /// Live events for open watches.
    pub events: broadcast::Sender<Arc<Event>>,
    next_ip: u32,
    seed: u64,
    /// Deployments (namespace, name) whose new pods never become ready.
    pub never_available: HashSet<(String, String)>,
    /// RBAC-style refusals.
    pub denies: Vec<Deny>,
    /// The controller's memory of each Deployment rollout, by uid.
    pub rollouts: HashMap<String, crate::controller::Rollout>,
    /// The user name used in Forbidden messages.
    pub user: String,
}

/// The current time as the API server writes it (RFC 3339, seconds).
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

const SERVER_META: [&str; 8] = [
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// `v` without the metadata the server maintains (what field ownership compares).
pub fn without_server_meta(v: &Value) -> Value {
    let mut out = v.clone();
    if let Some(m) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in SERVER_META {
            m.remove(k);
        }
    }
    out
}

fn managers_of(v: &Value) -> Vec<Manager> {
    v.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Manager::from_json).collect())
        .unwrap_or_default()
}

fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

fn finalizers(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect();
    // A namespace is held by its spec finalizers until its content is gone.
    if v.get("kind") == Some(&json!("Namespace")) {
        out.extend(
            v.pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string)),
        );
    }
    out
}

fn generation_input(rt: &ResourceType, v: &Value) -> Value {
    match rt.generation {
        Generation::None => Value::Null,
        Generation::Spec => v.get("spec").cloned().unwrap_or(Value::Null),
        Generation::AllButMetadataAndStatus => {
            let mut m = v.as_object().cloned().unwrap_or_default();
            for k in ["metadata", "status", "apiVersion", "kind"] {
                m.remove(k);
            }
            Value::Object(m)
        }
    }
}

impl State {
    /// A store with the four namespaces a new cluster has.
    pub fn new(history_limit: usize) -> Self {
        let (events, _) = broadcast::channel(4096);
        let seed = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64 ^ u64::from(std::process::id());
        let mut s = State {
            catalog: Catalog::default(),
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_rv: 0,
            events,
            next_ip: 1,
            seed,
            never_available: HashSet::new(),
            denies: Vec::new(),
            rollouts: HashMap::new(),
            user: "system:anonymous".into(),
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            s.ensure_namespace(ns);
        }
        s
    }

    /// Creates namespace `ns` (and its `default` ServiceAccount) unless it exists.
    pub fn ensure_namespace(&mut self, ns: &str) {
        let rt = self.catalog.find("", "v1", "namespaces").expect("namespaces are built in");
        if self.lookup(&rt, None, ns).is_none() {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let _ = self.create(&rt, None, body, &WriteCtx::new("kube-apiserver"));
        }
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    fn uid(&mut self) -> String {
        // xorshift64*: unique enough for uids within one test server, no dependency needed.
        let mut x = self.seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed = x;
        let a = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let b = a.rotate_left(29) ^ self.rv.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn cluster_ip(&mut self) -> String {
        let n = self.next_ip;
        self.next_ip += 1;
        format!("10.96.{}.{}", (n >> 8) & 0xff, n & 0xff)
    }

    /// The stored object, if any.
    pub fn lookup(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects.get(&rt.key())?.get(&(ns.unwrap_or_default().to_string(), name.to_string()))
    }

    /// The stored object as served at `rt`'s version.
    pub fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        self.check_namespace_path(rt, ns)?;
        self.lookup(rt, ns, name).map(|o| self.served(rt, o)).ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// Every stored object of `rt` (in `ns`, or all namespaces), ordered by namespace and name.
    pub fn all(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&rt.key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, o)| self.served(rt, o))
            .collect()
    }

    /// Every stored object of every type (for the controllers).
    pub fn everything(&self) -> Vec<((String, String), Value)> {
        self.objects.iter().flat_map(|(k, m)| m.values().map(move |o| (k.clone(), o.clone()))).collect()
    }

    /// An object as served at a version: custom resources are stored once for all versions.
    pub fn served(&self, rt: &ResourceType, o: &Value) -> Value {
        let mut o = o.clone();
        if !rt.builtin {
            o["apiVersion"] = json!(rt.api_version());
        }
        o
    }

    /// The event history since `rv` (exclusive), or 410 when it no longer reaches back there.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Arc<Event>>> {
        if rv < self.oldest_rv {
            return Err(ApiError::expired(format!("too old resource version: {rv} ({})", self.oldest_rv)));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Forgets the event history: watches from any earlier resourceVersion get 410 Gone.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_rv = self.rv;
    }

    fn emit(&mut self, e: Event) {
        let e = Arc::new(e);
        self.history.push_back(e.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.oldest_rv = old.rv;
            }
        }
        let _ = self.events.send(e);
    }

    /// Refuses with 403 when a [`Deny`] rule matches.
    pub fn authorize(&self, verb: &str, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<()> {
        if self.denies.iter().any(|d| d.matches(verb, rt, ns)) {
            return Err(ApiError::forbidden(rt, name, verb, ns, &self.user));
        }
        Ok(())
    }

    fn check_namespace_path(&self, rt: &ResourceType, ns: Option<&str>) -> Result<()> {
        if !rt.namespaced && ns.is_some() {
            return Err(ApiError::no_route());
        }
        Ok(())
    }

    fn namespace_for_create(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<()> {
        let Some(ns) = ns else { return Ok(()) };
        let nsrt = self.catalog.find("", "v1", "namespaces").expect("namespaces are built in");
        match self.lookup(&nsrt, None, ns) {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(ApiError::namespace_terminating(rt, name, ns))
            }
            Some(_) => Ok(()),
        }
    }

    fn check_identity(rt: &ResourceType, body: &Value, ns: Option<&str>) -> Result<()> {
        let av = body.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
        let kind = body.get("kind").and_then(Value::as_str).unwrap_or_default();
        if kind.is_empty() {
            return Err(ApiError::bad_request("Object 'Kind' is missing in the request body"));
        }
        if av != rt.api_version() || kind != rt.kind {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                rt.api_version()
            )));
        }
        if let Some(e) = admission::type_errors(rt, body) {
            return Err(ApiError::bad_request(e));
        }
        if let (Some(body_ns), Some(ns)) = (meta_str(body, "namespace"), ns)
            && !body_ns.is_empty()
            && body_ns != ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    /// Server metadata from `old` (or new identity for a create), the namespace, the status of
    /// the main resource, and defaults.
    fn prepare(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        old: Option<&Value>,
        mut new: Value,
        ctx: &WriteCtx,
    ) -> Value {
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        new["apiVersion"] = json!(rt.api_version());
        new["kind"] = json!(rt.kind);
        {
            let meta = new["metadata"].as_object_mut().expect("set above");
            for k in SERVER_META {
                meta.remove(k);
            }
            match ns {
                Some(ns) => {
                    meta.insert("namespace".into(), json!(ns));
                }
                None => {
                    meta.remove("namespace");
                }
            }
        }
        match old {
            Some(old) => {
                for k in ["uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"] {
                    if let Some(v) = old.pointer(&format!("/metadata/{k}")) {
                        new["metadata"][k] = v.clone();
                    }
                }
                if rt.status && ctx.subresource.is_empty() {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
            }
            None => {
                let uid = self.uid();
                new["metadata"]["uid"] = json!(uid);
                new["metadata"]["creationTimestamp"] = json!(now());
                if rt.generation != Generation::None {
                    new["metadata"]["generation"] = json!(1);
                }
                if rt.status {
                    let initial = match (rt.group.as_str(), rt.kind.as_str()) {
                        ("", "Namespace") => Some(json!({"phase": "Active"})),
                        ("", "Service") => Some(json!({"loadBalancer": {}})),
                        _ if rt.builtin => Some(json!({})),
                        _ => None,
                    };
                    match initial {
                        Some(s) => new["status"] = s,
                        None => {
                            new.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
            }
        }
        let mut next_ip = || self.cluster_ip();
        admission::apply_defaults(rt, &mut new, &mut next_ip);
        new
    }

    /// Validation, generation, managedFields, resourceVersion, then storing (unless dry run).
    fn commit(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        old: Option<&Value>,
        mut new: Value,
        managers: Vec<Manager>,
        ctx: &WriteCtx,
    ) -> Result<Value> {
        let name = meta_str(&new, "name").unwrap_or_default().to_string();
        let mut causes = admission::validate(rt, &new, old);
        if let Some(old) = old
            && old.pointer("/metadata/deletionTimestamp").is_some()
        {
            let before = finalizers(old);
            if finalizers(&new).iter().any(|f| !before.contains(f)) {
                causes.push(Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(rt, &name, causes));
        }
        if let Some(old) = old
            && rt.generation != Generation::None
            && generation_input(rt, old) != generation_input(rt, &new)
        {
            let g = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        let meta = new["metadata"].as_object_mut().expect("prepared");
        if managers.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(managers.iter().map(Manager::to_json).collect()));
        }
        if let Some(old) = old {
            let mut same = new.clone();
            if let Some(rv) = old.pointer("/metadata/resourceVersion") {
                same["metadata"]["resourceVersion"] = rv.clone();
            }
            if &same == old {
                return Ok(self.served(rt, old));
            }
        }
        if ctx.dry_run {
            if let Some(rv) = old.and_then(|o| o.pointer("/metadata/resourceVersion")) {
                new["metadata"]["resourceVersion"] = rv.clone();
            }
            return Ok(self.served(rt, &new));
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (ns.unwrap_or_default().to_string(), name);
        let gone = new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty();
        let kind = if gone {
            self.objects.entry(rt.key()).or_default().remove(&key);
            EventType::Deleted
        } else {
            self.objects.entry(rt.key()).or_default().insert(key.clone(), new.clone());
            if old.is_some() { EventType::Modified } else { EventType::Added }
        };
        self.emit(Event {
            rv: self.rv,
            key: rt.key(),
            namespace: key.0,
            kind,
            object: new.clone(),
            prev: old.cloned(),
        });
        Ok(self.served(rt, &new))
    }

    /// POST: creates `body` (the `generateName` prefix gets five random characters).
    pub fn create(&mut self, rt: &ResourceType, ns: Option<&str>, mut body: Value, ctx: &WriteCtx) -> Result<Value> {
        Self::check_identity(rt, &body, ns)?;
        if meta_str(&body, "name").is_none_or(str::is_empty)
            && let Some(prefix) = meta_str(&body, "generateName").map(str::to_string)
        {
            let suffix: String = self.uid().chars().filter(|c| c.is_ascii_alphanumeric()).take(5).collect();
            body["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
        }
        let name = meta_str(&body, "name").unwrap_or_default().to_string();
        self.authorize("create", rt, ns, &name)?;
        self.namespace_for_create(rt, ns, &name)?;
        if let Some(existing) = self.lookup(rt, ns, &name) {
            if existing.pointer("/metadata/deletionTimestamp").is_some() {
                return Err(ApiError::being_deleted(rt, &name));
            }
            return Err(ApiError::already_exists(rt, &name));
        }
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        let new = self.prepare(rt, ns, None, body, ctx);
        let managers = apply::update(
            &json!({}),
            &without_server_meta(&new),
            &rt.schema,
            &[],
            &ctx.manager,
            &ctx.subresource,
            &rt.api_version(),
            &self.ignored(rt, ctx),
            &now(),
        );
        self.commit(rt, ns, None, new, managers, ctx)
    }

    fn ignored(&self, rt: &ResourceType, ctx: &WriteCtx) -> Set {
        let mut s = Set::new();
        if rt.status && ctx.subresource.is_empty() {
            s.insert(&crate::fieldpath::Path::fields(&["status"]));
        }
        s
    }

    fn live(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Result<Value> {
        self.check_namespace_path(rt, ns)?;
        self.lookup(rt, ns, name).cloned().ok_or_else(|| ApiError::not_found(rt, name))
    }

    /// PUT: replaces the object (409 when `metadata.resourceVersion` is stale).
    pub fn replace(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        body: Value,
        ctx: &WriteCtx,
    ) -> Result<Value> {
        self.authorize("update", rt, ns, name)?;
        let old = self.live(rt, ns, name)?;
        self.write_full(rt, ns, name, &old, body, ctx)
    }

    fn write_full(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        old: &Value,
        mut body: Value,
        ctx: &WriteCtx,
    ) -> Result<Value> {
        Self::check_identity(rt, &body, ns)?;
        if let Some(body_name) = meta_str(&body, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = meta_str(&body, "resourceVersion").filter(|s| !s.is_empty())
            && Some(rv) != meta_str(old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if let Some(uid) = meta_str(&body, "uid").filter(|s| !s.is_empty())
            && Some(uid) != meta_str(old, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(old, "uid").unwrap_or_default()
                ),
            ));
        }
        // managedFields given in the body replace the stored ones; `[{}]` clears them; an
        // absent or empty list keeps them (so clients unaware of the field never strip it).
        let mut managers = managers_of(old);
        match body.pointer("/metadata/managedFields") {
            Some(Value::Array(a)) if a.len() == 1 && a[0].as_object().is_some_and(Map::is_empty) => managers.clear(),
            Some(Value::Array(a)) if !a.is_empty() => managers = a.iter().filter_map(Manager::from_json).collect(),
            _ => {}
        }
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        if ctx.subresource == "status" {
            let mut merged = old.clone();
            match body.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    merged.as_object_mut().map(|m| m.remove("status"));
                }
            }
            body = merged;
        }
        let new = self.prepare(rt, ns, Some(old), body, ctx);
        let managers = apply::update(
            &without_server_meta(old),
            &without_server_meta(&new),
            &rt.schema,
            &managers,
            &ctx.manager,
            &ctx.subresource,
            &rt.api_version(),
            &self.ignored(rt, ctx),
            &now(),
        );
        self.commit(rt, ns, Some(old), new, managers, ctx)
    }

    /// PATCH with `application/merge-patch+json` (RFC 7386).
    pub fn merge_patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
        ctx: &WriteCtx,
    ) -> Result<Value> {
        self.authorize("patch", rt, ns, name)?;
        let old = self.live(rt, ns, name)?;
        let mut patched = self.served(rt, &old);
        json_merge_patch(&mut patched, patch);
        self.write_full(rt, ns, name, &old, patched, ctx)
    }

    /// PATCH with `application/json-patch+json` (RFC 6902).
    pub fn json_patch(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        patch: &Value,
        ctx: &WriteCtx,
    ) -> Result<Value> {
        self.authorize("patch", rt, ns, name)?;
        let old = self.live(rt, ns, name)?;
        let mut patched = self.served(rt, &old);
        crate::jsonpatch::apply(&mut patched, patch).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            message: e,
            details: Some(json!({})),
        })?;
        self.write_full(rt, ns, name, &old, patched, ctx)
    }

    /// Server-side apply (PATCH with `application/apply-patch+yaml`); creates an absent object.
    /// Returns the object and whether it was created.
    pub fn apply(
        &mut self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut config: Value,
        ctx: &WriteCtx,
        force: bool,
    ) -> Result<(Value, bool)> {
        self.check_namespace_path(rt, ns)?;
        if !config.is_object() {
            return Err(ApiError::bad_request("error decoding patch: the applied configuration is not an object"));
        }
        if config.get("apiVersion").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "error decoding patch: apiVersion must be set in the applied configuration",
            ));
        }
        if config.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(ApiError::bad_request("error decoding patch: kind must be set in the applied configuration"));
        }
        Self::check_identity(rt, &config, ns)?;
        if config.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        match meta_str(&config, "name") {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => config["metadata"]["name"] = json!(name),
        }
        if let Some(n) = ns {
            config["metadata"]["namespace"] = json!(n);
        }
        let old = self.lookup(rt, ns, name).cloned();
        self.authorize(if old.is_some() { "patch" } else { "create" }, rt, ns, name)?;
        if let Some(rv) = meta_str(&config, "resourceVersion").filter(|s| !s.is_empty())
            && old.as_ref().and_then(|o| meta_str(o, "resourceVersion")) != Some(rv)
        {
            return Err(match &old {
                Some(_) => ApiError::conflict(
                    rt,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                ),
                None => ApiError::not_found(rt, name),
            });
        }
        let config = {
            let mut c = without_server_meta(&config);
            if rt.status && ctx.subresource.is_empty() {
                c.as_object_mut().map(|m| m.remove("status"));
            }
            if ctx.subresource == "status" {
                let mut only = json!({"apiVersion": c["apiVersion"], "kind": c["kind"], "metadata": {"name": name}});
                if let Some(n) = ns {
                    only["metadata"]["namespace"] = json!(n);
                }
                if let Some(s) = c.get("status") {
                    only["status"] = s.clone();
                }
                only
            } else {
                c
            }
        };
        let (live, managers) = match &old {
            Some(o) => (without_server_meta(o), managers_of(o)),
            None => {
                self.namespace_for_create(rt, ns, name)?;
                (json!({}), Vec::new())
            }
        };
        let outcome = apply::apply(
            &live,
            &config,
            &rt.schema,
            &managers,
            &ctx.manager,
            &ctx.subresource,
            &rt.api_version(),
            force,
            &Set::new(),
            &now(),
        )
        .map_err(|e| match e {
            ApplyError::Conflicts(c) => ApiError::apply_conflict(&c),
            ApplyError::Malformed(m) => ApiError::bad_request(format!(
                "failed to create typed patch object ({}/{name}; {}, Kind={}): {m}",
                ns.unwrap_or_default(),
                rt.api_version(),
                rt.kind
            )),
        })?;
        let mut object = outcome.object;
        if ctx.subresource == "status"
            && let Some(o) = &old
        {
            let mut merged = o.clone();
            match object.get("status") {
                Some(s) => merged["status"] = s.clone(),
                None => {
                    merged.as_object_mut().map(|m| m.remove("status"));
                }
            }
            object = merged;
        }
        let new = self.prepare(rt, ns, old.as_ref(), object, ctx);
        let created = old.is_none();
        let out = self.commit(rt, ns, old.as_ref(), new, outcome.managers, ctx)?;
        Ok((out, created))
    }

    /// DELETE with propagation policy, preconditions and finalizers.
    pub fn delete(&mut self, rt: &ResourceType, ns: Option<&str>, name: &str, opts: &DeleteOpts) -> Result<Deleted> {
        self.authorize("delete", rt, ns, name)?;
        let old = self.live(rt, ns, name)?;
        if let Some(uid) = &opts.uid
            && Some(uid.as_str()) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && Some(rv.as_str()) != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if rt.group.is_empty() && rt.kind == "Namespace" && ["default", "kube-system", "kube-public"].contains(&name) {
            return Err(ApiError {
                code: 403,
                reason: "Forbidden",
                message: format!("namespaces {name:?} is forbidden: this namespace may not be deleted"),
                details: Some(json!({"name": name, "kind": "namespaces"})),
            });
        }
        let mut new = old.clone();
        let added = match opts.propagation.as_deref() {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            Some("Background") | None => None,
            Some(other) => {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    vec![Cause {
                        reason: "FieldValueNotSupported",
                        message: format!(
                            "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                        ),
                        field: "propagationPolicy".into(),
                    }],
                ));
            }
        };
        if let Some(f) = added {
            let list = new["metadata"]
                .as_object_mut()
                .expect("stored objects have metadata")
                .entry("finalizers")
                .or_insert(json!([]));
            if let Some(a) = list.as_array_mut()
                && !a.iter().any(|x| x == f)
            {
                a.push(json!(f));
            }
        }
        if old.pointer("/metadata/deletionTimestamp").is_none() {
            if !finalizers(&new).is_empty() {
                new["metadata"]["deletionTimestamp"] = json!(now());
                new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if let Some(g) = new.pointer("/metadata/generation").and_then(Value::as_i64).filter(|g| *g > 0) {
                    new["metadata"]["generation"] = json!(g + 1);
                }
                if rt.group.is_empty() && rt.kind == "Namespace" {
                    new["status"]["phase"] = json!("Terminating");
                }
            } else {
                if opts.dry_run {
                    return Ok(Deleted::Gone(self.served(rt, &old)));
                }
                self.remove(rt, ns, name);
                return Ok(Deleted::Gone(self.served(rt, &old)));
            }
        }
        if new == old || opts.dry_run {
            return Ok(Deleted::Pending(self.served(rt, &new)));
        }
        self.store_raw(rt, ns, name, Some(&old), new.clone());
        Ok(Deleted::Pending(self.lookup(rt, ns, name).map(|o| self.served(rt, o)).unwrap_or(new)))
    }

    /// Removes an object now, emitting DELETED (the event carries the removal's resourceVersion).
    pub fn remove(&mut self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<Value> {
        let key = (ns.unwrap_or_default().to_string(), name.to_string());
        let mut old = self.objects.get_mut(&rt.key())?.remove(&key)?;
        self.rv += 1;
        let prev = old.clone();
        old["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(Event {
            rv: self.rv,
            key: rt.key(),
            namespace: key.0,
            kind: EventType::Deleted,
            object: old.clone(),
            prev: Some(prev),
        });
        self.rollouts.remove(meta_str(&old, "uid").unwrap_or_default());
        Some(old)
    }

    /// Stores `new` as is (server-side writes: deletion marks, controllers' finalizer removal),
    /// bumping the resourceVersion; an object in deletion without finalizers is removed.
    pub fn store_raw(&mut self, rt: &ResourceType, ns: Option<&str>, name: &str, old: Option<&Value>, mut new: Value) {
        let key = (ns.unwrap_or_default().to_string(), name.to_string());
        if new.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&new).is_empty() {
            self.remove(rt, ns, name);
            return;
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.entry(rt.key()).or_default().insert(key.clone(), new.clone());
        let kind = if old.is_some() { EventType::Modified } else { EventType::Added };
        self.emit(Event { rv: self.rv, key: rt.key(), namespace: key.0, kind, object: new, prev: old.cloned() });
    }
}

/// RFC 7386 JSON merge patch.
pub fn json_merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("made an object above");
            for (k, v) in p {
                if v.is_null() {
                    t.shift_remove(k);
                } else {
                    json_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}
