use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::testing::{Style, app, to_yaml};
use crate::yaml;

fn files(entries: &[(&str, &str)]) -> Vec<RepoFile> {
    entries.iter().map(|(p, b)| RepoFile::new(*p, *b)).collect()
}

fn digest_of_yaml(text: &str, inputs: &[RepoFile]) -> String {
    let docs = yaml::parse("d.yaml", text.as_bytes()).expect("parses");
    app_digest(&docs[0].value, inputs).expect("digest")
}

#[test]
fn has_the_documented_shape() {
    let d = app_digest(&json!({"b": 1, "a": [0.5]}), &files(&[("x", "1")])).unwrap();
    assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
    // sha256 of {"app":{"a":[0.5],"b":1},"files":[["x","1"]]}
    let expected = Sha256::digest(br#"{"app":{"a":[0.5],"b":1},"files":[["x","1"]]}"#);
    let hex: String = expected.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(d, format!("sha256:{hex}"));
}

#[test]
fn file_order_and_duplicates_do_not_matter() {
    let v = app("web").value();
    let a = app_digest(&v, &files(&[("b", "2"), ("a", "1")])).unwrap();
    let b = app_digest(&v, &files(&[("a", "1"), ("b", "2"), ("a", "1")])).unwrap();
    assert_eq!(a, b);
}

#[test]
fn comments_and_flow_style_do_not_matter() {
    let block = "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web # the web app\nspec:\n  image: 'r/web:1'\n  placement:\n    cluster: c\n";
    let flow = "{kind: App, apiVersion: \"keelson.dev/v1alpha1\", spec: {placement: {cluster: c}, image: r/web:1}, metadata: {name: web}}";
    assert_eq!(digest_of_yaml(block, &[]), digest_of_yaml(flow, &[]));
}

fn style() -> impl Strategy<Value = Style> {
    (prop_oneof![Just(2usize), Just(4)], 0usize..5, 0usize..7, any::<bool>(), any::<bool>()).prop_map(
        |(indent, flow_from_depth, rotate_keys, comments, quote_all)| Style {
            indent,
            flow_from_depth,
            rotate_keys,
            comments,
            quote_all,
        },
    )
}

fn app_value() -> impl Strategy<Value = serde_json::Value> {
    (0u32..50, prop::collection::vec(1u32..=99, 0..4), any::<bool>(), "[a-z]{1,8}", prop::option::of(0.0f64..100.0))
        .prop_map(|(replicas, mut steps, suspend, team, min)| {
            steps.sort_unstable();
            steps.dedup();
            steps.push(100);
            let mut b = app("web").replicas(replicas).team(&team).canary(&steps);
            if let Some(min) = min {
                b = b.set("/spec/strategy/gates/0/min", json!(min));
            }
            b.set("/spec/suspend", json!(suspend))
                .set("/metadata/labels", json!({"tier": "critical", "owner/team": team}))
                .value()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Reformatting, reordering keys, quoting and comments keep the digest.
    #[test]
    fn reformatting_keeps_the_digest(value in app_value(), a in style(), b in style()) {
        let inputs = files(&[("apps/web/manifests/d.yaml", "abc"), ("policies/x.rego", "def")]);
        let da = digest_of_yaml(&to_yaml(&value, &a), &inputs);
        let db = digest_of_yaml(&to_yaml(&value, &b), &inputs);
        prop_assert_eq!(&da, &db);
        prop_assert_eq!(da, app_digest(&value, &inputs).unwrap());
    }

    /// Changing any value changes the digest.
    #[test]
    fn changing_a_value_changes_the_digest(value in app_value(), replicas in 50u32..100) {
        let before = app_digest(&value, &[]).unwrap();
        let mut changed = value.clone();
        changed["spec"]["replicas"] = json!(replicas);
        prop_assert_ne!(&before, &app_digest(&changed, &[]).unwrap());
        let mut renamed = value.clone();
        renamed["metadata"]["labels"]["tier"] = json!("low");
        prop_assert_ne!(&before, &app_digest(&renamed, &[]).unwrap());
    }

    /// A changed manifests blob, a new file or a new Rego module changes the digest.
    #[test]
    fn changing_a_blob_changes_the_digest(value in app_value(), blob in "[0-9a-f]{40}", other in "[0-9a-f]{40}") {
        prop_assume!(blob != other);
        let one = files(&[("apps/web/manifests/d.yaml", &blob)]);
        let changed = files(&[("apps/web/manifests/d.yaml", &other)]);
        let more = files(&[("apps/web/manifests/d.yaml", &blob), ("policies/extra.rego", &other)]);
        let d = app_digest(&value, &one).unwrap();
        prop_assert_ne!(&d, &app_digest(&value, &changed).unwrap());
        prop_assert_ne!(&d, &app_digest(&value, &more).unwrap());
    }
}
