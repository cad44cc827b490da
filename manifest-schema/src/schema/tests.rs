use rstest::rstest;
use serde_json::{Value, json};

use super::*;

#[test]
fn every_schema_compiles_and_names_itself() {
    for s in SCHEMAS {
        let c = compiled(s.kind);
        assert!(c.validator.is_ok(), "{}: {:?}", s.file_name, c.validator.as_ref().err());
        assert_eq!(c.root["$id"], json!(s.id), "{}", s.file_name);
        assert_eq!(c.root["$schema"], json!("https://json-schema.org/draft/2020-12/schema"));
        assert_eq!(c.root["properties"]["apiVersion"]["const"], json!(s.api_version));
        assert_eq!(c.root["properties"]["kind"]["const"], json!(s.kind.as_str()));
        assert!(s.id.ends_with(s.file_name));
    }
}

/// Maps whose keys are the user's own names (labels, provider instances, policy conditions).
const FREE_FORM: [&str; 8] = [
    "/$defs/metadata/properties/labels",
    "/properties/metadata/properties/labels",
    "/$defs/rule/properties/match/properties/labels",
    "/$defs/conditions",
    "/properties/providers",
    "/properties/providers/additionalProperties",
    "/properties/clusters",
    "/$defs/fieldPath",
];

fn walk<'a>(node: &'a Value, pointer: String, out: &mut Vec<(String, &'a Value)>) {
    match node {
        Value::Object(m) => {
            out.push((pointer.clone(), node));
            for (k, v) in m {
                walk(v, format!("{pointer}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                walk(v, format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn every_object_is_closed_so_typos_are_errors() {
    for s in SCHEMAS {
        let root = &compiled(s.kind).root;
        let mut nodes = Vec::new();
        walk(root, String::new(), &mut nodes);
        for (pointer, node) in nodes {
            // `if` subschemas are conditions, not the shape of an object.
            let condition = pointer.ends_with("/if");
            if node.get("properties").is_some() && !condition && !FREE_FORM.contains(&pointer.as_str()) {
                assert_eq!(
                    node.get("additionalProperties"),
                    Some(&json!(false)),
                    "{}{pointer} lets unknown fields through",
                    s.file_name
                );
            }
        }
    }
}

#[test]
fn looks_up_schemas_by_kind() {
    assert!(for_kind("App").is_some_and(|s| s.contains("\"App\"")));
    assert!(for_kind("Policy").is_some());
    assert!(for_kind("Config").is_some());
    assert_eq!(for_kind("Deployment"), None);
    assert_eq!(for_version_kind("keelson.dev/v1", "App"), None);
    assert_eq!(supported_kinds(), ["App", "Policy", "Config"]);
    assert_eq!(Kind::from_name("Policy"), Some(Kind::Policy));
    assert_eq!(Kind::Config.to_string(), "Config");
}

#[rstest]
#[case::root("", "document")]
#[case::field("/spec/replicas", "replicas")]
#[case::item("/spec/strategy/steps/2", "steps[2]")]
#[case::nested_item("/spec/env/0/secretRef/key", "key")]
#[case::escaped("/metadata/labels/example.com~1tier", "example.com/tier")]
#[case::root_item("/3", "item 3")]
fn names_nodes_for_messages(#[case] pointer: &str, #[case] want: &str) {
    assert_eq!(display_name(pointer), want);
}

#[rstest]
#[case::null(json!(null), "nothing (null)")]
#[case::string(json!("three"), "\"three\"")]
#[case::number(json!(-1), "-1")]
#[case::mapping(json!({"a": 1}), "a mapping")]
#[case::list(json!([1]), "a list")]
fn describes_values_as_written(#[case] v: Value, #[case] want: &str) {
    assert_eq!(describe_value(&v), want);
}

#[test]
fn validates_without_positions_too() {
    // Documents built in code have no spans; diagnostics then point at 1:1 instead of failing.
    let doc = crate::yaml::Document {
        value: json!({"apiVersion": API_VERSION, "kind": "App", "metadata": {"name": "x"}, "spec": {"image": "a:1", "placement": {"cluster": "c"}, "replicas": "2"}}),
        spans: Default::default(),
        index: 0,
        start: Position::START,
    };
    let d = validate("mem", &doc, Kind::App);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].rule.as_str(), d[0].line, d[0].col), ("schema.type", 1, 1));
    assert_eq!(d[0].pointer, "/spec/replicas");
}
