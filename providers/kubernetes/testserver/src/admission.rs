//! What the API server does to an object before storing it: defaulting (the values a real
//! cluster fills in, so a client that diffs whole objects sees the same drift it would see on a
//! cluster) and validation (names, selectors, required fields, immutable fields), answered as
//! 422 Invalid with field causes.

use serde_json::{Map, Value, json};

use crate::catalog::ResourceType;
use crate::status::Cause;

fn obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("made an object above")
}

fn default(m: &mut Map<String, Value>, key: &str, value: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), value);
    }
}

/// Fills in the defaults of a real API server. `next_ip` allocates a Service cluster IP.
pub fn apply_defaults(rt: &ResourceType, o: &mut Value, next_ip: &mut dyn FnMut() -> String) {
    if !rt.builtin {
        return;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment") => {
            let spec = obj(&mut o["spec"]);
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = obj(spec.entry("strategy").or_insert(json!({})));
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type") == Some(&json!("RollingUpdate")) {
                let ru = obj(strategy.entry("rollingUpdate").or_insert(json!({})));
                default(ru, "maxUnavailable", json!("25%"));
                default(ru, "maxSurge", json!("25%"));
            }
            pod_template_defaults(&mut o["spec"]["template"]);
        }
        ("apps", "StatefulSet") => {
            let spec = obj(&mut o["spec"]);
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(spec, "updateStrategy", json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            pod_template_defaults(&mut o["spec"]["template"]);
        }
        ("apps", "DaemonSet") => {
            let spec = obj(&mut o["spec"]);
            default(spec, "revisionHistoryLimit", json!(10));
            default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
            );
            pod_template_defaults(&mut o["spec"]["template"]);
        }
        ("batch", "Job") => {
            let uid = o.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            let spec = obj(&mut o["spec"]);
            default(spec, "parallelism", json!(1));
            default(spec, "completions", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            if spec.get("selector").is_none() {
                spec.insert("selector".into(), json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}));
                let labels = obj(&mut spec.entry("template").or_insert(json!({}))["metadata"]["labels"]);
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid.clone()),
                    ("batch.kubernetes.io/job-name", name.clone()),
                    ("controller-uid", uid),
                    ("job-name", name),
                ] {
                    default(labels, k, v);
                }
            }
            pod_template_defaults(&mut o["spec"]["template"]);
        }
        ("", "Service") => {
            let spec = obj(&mut o["spec"]);
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if spec.get("type") != Some(&json!("ExternalName")) {
                if spec.get("clusterIP").is_none_or(|v| v.is_null() || v == "") {
                    spec.insert("clusterIP".into(), json!(next_ip()));
                }
                let ip = spec["clusterIP"].clone();
                default(spec, "clusterIPs", json!([ip]));
                default(spec, "ipFamilies", json!(["IPv4"]));
                default(spec, "ipFamilyPolicy", json!("SingleStack"));
                default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for p in ports {
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    let pm = obj(p);
                    default(pm, "protocol", json!("TCP"));
                    default(pm, "targetPort", port);
                }
            }
        }
        ("", "Secret") => {
            let m = obj(o);
            default(m, "type", json!("Opaque"));
            if let Some(Value::Object(sd)) = m.remove("stringData") {
                let data = obj(m.entry("data").or_insert(json!({})));
                for (k, v) in sd {
                    data.insert(k, json!(base64(v.as_str().unwrap_or_default().as_bytes())));
                }
            }
        }
        ("", "Namespace") => {
            let name = o.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
            default(obj(&mut o["spec"]), "finalizers", json!(["kubernetes"]));
            default(obj(&mut o["metadata"]["labels"]), "kubernetes.io/metadata.name", name);
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            let spec = obj(&mut o["spec"]);
            let egress = spec.contains_key("egress");
            let mut types = vec![json!("Ingress")];
            if egress {
                types.push(json!("Egress"));
            }
            default(spec, "policyTypes", Value::Array(types));
        }
        _ => {}
    }
}

fn pod_template_defaults(t: &mut Value) {
    let spec = obj(&mut t["spec"]);
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "securityContext", json!({}));
    default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(cs)) = spec.get_mut(list) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
                let cm = obj(c);
                default(cm, "terminationMessagePath", json!("/dev/termination-log"));
                default(cm, "terminationMessagePolicy", json!("File"));
                let latest = !image.contains('@')
                    && image.rsplit('/').next().is_none_or(|last| !last.contains(':') || last.ends_with(":latest"));
                default(cm, "imagePullPolicy", json!(if latest { "Always" } else { "IfNotPresent" }));
                default(cm, "resources", json!({}));
                if let Some(Value::Array(ports)) = cm.get_mut("ports") {
                    for p in ports {
                        default(obj(p), "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The decoding error of a real API server for string maps holding other types (a YAML `on` or
/// a bare number in ConfigMap data, labels or annotations).
pub fn type_errors(rt: &ResourceType, o: &Value) -> Option<String> {
    let mut maps = vec![
        ("metadata.labels", "/metadata/labels", "ObjectMeta.metadata.labels"),
        ("metadata.annotations", "/metadata/annotations", "ObjectMeta.metadata.annotations"),
    ];
    if rt.builtin && rt.group.is_empty() && rt.kind == "ConfigMap" {
        maps.push(("data", "/data", "ConfigMap.data"));
    }
    if rt.builtin && rt.group.is_empty() && rt.kind == "Secret" {
        maps.push(("stringData", "/stringData", "Secret.stringData"));
    }
    for (_, pointer, go_field) in maps {
        for v in o.pointer(pointer).and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
            let found = match v {
                Value::String(_) | Value::Null => continue,
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            return Some(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: json: cannot unmarshal {found} into Go struct field {go_field} of type string",
                kind = rt.kind,
                version = rt.version
            ));
        }
    }
    None
}

/// True for a DNS-1123 subdomain (most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// True for a DNS-1123 label (namespace and service names).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && !s.contains('.') && is_dns_subdomain(s)
}

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && (s.is_empty()
            || (s.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()))
}

fn is_label_key(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(is_dns_subdomain)
}

/// Why `o` may not be stored (as a create when `old` is `None`, else as an update of `old`).
pub fn validate(rt: &ResourceType, o: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let dns_label = matches!((rt.group.as_str(), rt.kind.as_str()), ("", "Namespace") | ("", "Service"));
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if dns_label && !is_dns_label(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ));
    } else if !dns_label && !is_dns_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    labels(o.pointer("/metadata/labels"), "metadata.labels", &mut causes);

    if !rt.builtin {
        return causes;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet") => {
            workload(o, &mut causes);
            if let Some(old) = old
                && old.pointer("/spec/selector") != o.pointer("/spec/selector")
            {
                causes.push(Cause::invalid(
                    "spec.selector",
                    o.pointer("/spec/selector").unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
            if rt.kind == "StatefulSet"
                && let Some(old) = old
            {
                let frozen = |v: &Value| {
                    let mut s = v.get("spec").cloned().unwrap_or_default();
                    if let Some(m) = s.as_object_mut() {
                        for k in [
                            "replicas",
                            "ordinals",
                            "template",
                            "updateStrategy",
                            "persistentVolumeClaimRetentionPolicy",
                            "minReadySeconds",
                        ] {
                            m.remove(k);
                        }
                    }
                    s
                };
                if frozen(old) != frozen(o) {
                    causes.push(Cause::forbidden(
                        "spec",
                        "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                    ));
                }
            }
        }
        ("batch", "Job") => {
            containers(o.pointer("/spec/template/spec/containers"), "spec.template.spec.containers", &mut causes);
            let rp = o.pointer("/spec/template/spec/restartPolicy").cloned().unwrap_or(Value::Null);
            if rp != json!("Never") && rp != json!("OnFailure") {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    message: format!("Unsupported value: {rp}: supported values: \"OnFailure\", \"Never\""),
                    field: "spec.template.spec.restartPolicy".into(),
                });
            }
            if let Some(old) = old
                && old.pointer("/spec/template") != o.pointer("/spec/template")
            {
                causes.push(Cause::invalid(
                    "spec.template",
                    o.pointer("/spec/template").unwrap_or(&Value::Null),
                    "field is immutable",
                ));
            }
        }
        ("", "Service") => {
            let headless = o.pointer("/spec/clusterIP") == Some(&json!("None"));
            let external = o.pointer("/spec/type") == Some(&json!("ExternalName"));
            match o.pointer("/spec/ports").and_then(Value::as_array) {
                Some(ports) if !ports.is_empty() => {
                    for (i, p) in ports.iter().enumerate() {
                        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
                        if !(1..=65535).contains(&port) {
                            causes.push(Cause::invalid(
                                &format!("spec.ports[{i}].port"),
                                p.get("port").unwrap_or(&Value::Null),
                                "must be between 1 and 65535, inclusive",
                            ));
                        }
                    }
                }
                _ if !headless && !external => causes.push(Cause::required("spec.ports")),
                _ => {}
            }
            if let Some(old) = old {
                let ip = |v: &Value| v.pointer("/spec/clusterIP").cloned();
                if ip(old) != ip(o) && ip(o).is_some() {
                    causes.push(Cause::invalid(
                        "spec.clusterIPs[0]",
                        &ip(o).unwrap_or_default(),
                        "may not change once set",
                    ));
                }
            }
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData"] {
                for key in o.get(field).and_then(Value::as_object).into_iter().flat_map(|m| m.keys()) {
                    let ok = !key.is_empty()
                        && key.len() <= 253
                        && key.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
                    if !ok {
                        causes.push(Cause::invalid(
                            &format!("{field}[{key}]"),
                            &json!(key),
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    causes
}

fn labels(v: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    for (k, val) in v.and_then(Value::as_object).into_iter().flatten() {
        if !is_label_key(k) {
            causes.push(Cause::invalid(field, &json!(k), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        match val.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => causes.push(Cause::invalid(
                field,
                val,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            )),
        }
    }
}

fn containers(v: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    match v.and_then(Value::as_array) {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(&format!("{field}[{i}].name")));
                }
                if c.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push(Cause::required(&format!("{field}[{i}].image")));
                }
            }
        }
        _ => causes.push(Cause::required(field)),
    }
}

fn workload(o: &Value, causes: &mut Vec<Cause>) {
    let selector = o.pointer("/spec/selector");
    match selector {
        None | Some(Value::Null) => causes.push(Cause::required("spec.selector")),
        Some(sel) => {
            let template_labels = o.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({}));
            if !crate::selector::matches_label_selector(sel, &template_labels) {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &template_labels,
                    "`selector` does not match template `labels`",
                ));
            }
            if sel.get("matchLabels").and_then(Value::as_object).is_none_or(Map::is_empty)
                && sel.get("matchExpressions").and_then(Value::as_array).is_none_or(Vec::is_empty)
            {
                causes.push(Cause::invalid("spec.selector", sel, "empty selector is invalid for deployment"));
            }
        }
    }
    if let Some(r) = o.pointer("/spec/replicas").and_then(Value::as_i64)
        && r < 0
    {
        causes.push(Cause::invalid("spec.replicas", &json!(r), "must be greater than or equal to 0"));
    }
    containers(o.pointer("/spec/template/spec/containers"), "spec.template.spec.containers", causes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn names() {
        assert!(is_dns_subdomain("web.example-1"));
        assert!(!is_dns_subdomain("Web"));
        assert!(!is_dns_subdomain("-web"));
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("web.1"));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(!is_label_value("-x"));
    }
}
