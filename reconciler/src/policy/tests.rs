use std::collections::BTreeMap;
use std::time::Instant;

use keelson_manifest::{App, DesiredState, Diagnostic, LoadedApp, LoadedPolicy, Loader, RepoFile};
use rstest::rstest;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::rules::glob;
use super::*;

// ---------------------------------------------------------------------------------------------
// Builders

/// An App named `name` running a tagged image on `prod-east` with CPU and memory set.
struct AppBuilder(Value);

fn app(name: &str) -> AppBuilder {
    AppBuilder(json!({
        "apiVersion": keelson_manifest::API_VERSION,
        "kind": "App",
        "metadata": {"name": name},
        "spec": {
            "image": format!("registry.example.com/{name}:1.0.0"),
            "resources": {"cpu": "500m", "memory": "512Mi"},
            "placement": {"cluster": "prod-east"},
        },
    }))
}

impl AppBuilder {
    fn set(mut self, pointer: &str, v: Value) -> Self {
        let tokens: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let mut node = &mut self.0;
        for t in &tokens[..tokens.len() - 1] {
            if !node.get(*t).is_some_and(Value::is_object) {
                node[*t] = Value::Object(Map::new());
            }
            node = &mut node[*t];
        }
        node[tokens[tokens.len() - 1]] = v;
        self
    }
    fn unset(mut self, pointer: &str) -> Self {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        if let Some(Value::Object(map)) = self.0.pointer_mut(parent) {
            map.remove(key);
        }
        self
    }
    fn team(self, team: &str) -> Self {
        self.set("/metadata/team", json!(team))
    }
    fn label(self, k: &str, v: &str) -> Self {
        self.set(&format!("/metadata/labels/{k}"), json!(v))
    }
    fn compliance(self, c: &[&str]) -> Self {
        self.set("/metadata/compliance", json!(c))
    }
    fn spot(self) -> Self {
        self.set("/spec/placement/nodePool", json!({"serverClass": "gp.vs1.large-iad", "maxBid": "0.08"}))
    }
    fn image(self, image: &str) -> Self {
        self.set("/spec/image", json!(image))
    }
    fn replicas(self, n: u32) -> Self {
        self.set("/spec/replicas", json!(n))
    }
    fn gpus(self, count: u32) -> Self {
        self.set("/spec/resources/gpu", json!({"count": count, "model": "H100"}))
    }
    fn build(&self) -> App {
        serde_json::from_value(self.0.clone()).expect("builder makes valid apps")
    }
    fn loaded(&self) -> LoadedApp {
        let app = self.build();
        LoadedApp { file: format!("apps/{}/deploy.yaml", app.metadata.name), digest: "sha256:0".into(), app }
    }
}

/// A Policy document named `name` in `policies/<name>.yaml`.
struct PolicyBuilder(Value);

fn policy(name: &str) -> PolicyBuilder {
    PolicyBuilder(json!({
        "apiVersion": keelson_manifest::API_VERSION, "kind": "Policy", "metadata": {"name": name}, "spec": {},
    }))
}

impl PolicyBuilder {
    fn push(mut self, list: &str, item: Value) -> Self {
        let spec = self.0["spec"].as_object_mut().unwrap();
        spec.entry(list).or_insert_with(|| json!([])).as_array_mut().unwrap().push(item);
        self
    }
    fn rule(self, rule: Value) -> Self {
        self.push("rules", rule)
    }
    fn freeze(self, cron: &str, duration: &str, zone: &str) -> Self {
        self.push("freeze", json!({"cron": cron, "duration": duration, "timeZone": zone, "reason": "release freeze"}))
    }
    fn quota(self, team: &str, gpus: Option<u32>, replicas: Option<u32>) -> Self {
        let mut q = json!({"team": team});
        if let Some(g) = gpus {
            q["gpus"] = json!(g);
        }
        if let Some(r) = replicas {
            q["replicas"] = json!(r);
        }
        self.push("quotas", q)
    }
    fn rego(self, path: &str) -> Self {
        self.push("rego", json!(path))
    }
    fn build(self) -> LoadedPolicy {
        let name = self.0["metadata"]["name"].as_str().unwrap().to_string();
        LoadedPolicy { file: format!("policies/{name}.yaml"), name, document: self.0 }
    }
}

/// Compiles `policies` with `files` (path → text) readable.
fn compile(policies: Vec<LoadedPolicy>, files: &[(&str, &str)]) -> (PolicySet, Vec<Diagnostic>) {
    let desired = DesiredState { policies, ..DesiredState::default() };
    let files: BTreeMap<String, String> = files.iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
    PolicySet::compile(&desired, &mut |path| {
        files.get(path).map(|t| t.clone().into_bytes()).ok_or_else(|| std::io::ErrorKind::NotFound.into())
    })
}

fn compile_ok(policies: Vec<LoadedPolicy>, files: &[(&str, &str)]) -> PolicySet {
    let (set, diags) = compile(policies, files);
    assert!(diags.iter().all(|d| !d.is_error()), "unexpected diagnostics: {diags:#?}");
    set
}

/// A Wednesday noon, outside every freeze used here.
const WEDNESDAY: OffsetDateTime = datetime!(2026-03-04 12:00 UTC);

fn ctx(now: OffsetDateTime) -> ChangeCtx<'static> {
    ChangeCtx { previous: None, commit: "0123abcd", now, freeze_override: None }
}

fn kinds(verdicts: &[Verdict]) -> Vec<(VerdictKind, bool)> {
    verdicts.iter().map(|v| (v.kind, v.blocking)).collect()
}

// ---------------------------------------------------------------------------------------------
// Declarative rules

const DENY: (VerdictKind, bool) = (VerdictKind::Rule, true);
const REQUIRE: (VerdictKind, bool) = (VerdictKind::Require, true);

#[rstest]
#[case::deny_present_blocks(json!({"deny": {"placement.nodePool": "present"}}), app("web").spot(), vec![DENY])]
#[case::deny_present_allows_absent(json!({"deny": {"placement.nodePool": "present"}}), app("web"), vec![])]
#[case::deny_absent(json!({"deny": {"resources.memory": "absent"}}), app("web").unset("/spec/resources/memory"), vec![DENY])]
#[case::deny_value(json!({"deny": {"placement.cluster": "prod-east"}}), app("web"), vec![DENY])]
#[case::deny_other_value(json!({"deny": {"placement.cluster": "gpu-lab"}}), app("web"), vec![])]
#[case::deny_one_of(json!({"deny": {"placement.cluster": ["gpu-lab", "prod-east"]}}), app("web"), vec![DENY])]
#[case::deny_number_as_text(json!({"deny": {"resources.cpu": 2}}), app("web").set("/spec/resources/cpu", json!("2")), vec![DENY])]
#[case::deny_needs_every_condition(json!({"deny": {"placement.nodePool": "present", "replicas": 1}}), app("web").spot().replicas(3), vec![])]
#[case::deny_every_condition_holds(json!({"deny": {"placement.nodePool": "present", "replicas": 3}}), app("web").spot().replicas(3), vec![DENY])]
#[case::deny_metadata_path(json!({"deny": {"metadata.labels.tier": "critical"}}), app("web").label("tier", "critical"), vec![DENY])]
#[case::deny_list_field_contains(json!({"deny": {"metadata.compliance": "pci"}}), app("web").compliance(&["sox", "pci"]), vec![DENY])]
#[case::deny_nothing_when_empty(json!({}), app("web").spot(), vec![])]
#[case::require_missing(json!({"require": {"resources.memory": "present"}}), app("web").unset("/spec/resources/memory"), vec![REQUIRE])]
#[case::require_met(json!({"require": {"resources.memory": "present"}}), app("web"), vec![])]
#[case::require_value(json!({"require": {"strategy.type": "canary"}}), app("web").set("/spec/strategy/type", json!("direct")), vec![REQUIRE])]
#[case::require_one_of(json!({"require": {"placement.cluster": ["prod-east", "prod-west"]}}), app("web"), vec![])]
#[case::deny_and_require(json!({"deny": {"placement.nodePool": "present"}, "require": {"metadata.team": "present"}}), app("web").spot(), vec![DENY, REQUIRE])]
fn rule_conditions(#[case] mut rule: Value, #[case] subject: AppBuilder, #[case] expected: Vec<(VerdictKind, bool)>) {
    rule["name"] = json!("r");
    rule["message"] = json!("no");
    let set = compile_ok(vec![policy("p").rule(rule).build()], &[]);
    assert_eq!(kinds(&set.evaluate(&subject.loaded(), &ctx(WEDNESDAY))), expected);
}

#[rstest]
#[case::every_app(json!({}), app("web"), true)]
#[case::name_glob(json!({"names": ["web-*"]}), app("web-eu"), true)]
#[case::name_glob_misses(json!({"names": ["web-*"]}), app("api"), false)]
#[case::any_of_the_globs(json!({"names": ["api", "web-?"]}), app("web-1"), true)]
#[case::question_mark_is_one_char(json!({"names": ["web-?"]}), app("web-12"), false)]
#[case::team(json!({"team": "payments"}), app("web").team("payments"), true)]
#[case::other_team(json!({"team": "payments"}), app("web").team("ml"), false)]
#[case::no_team(json!({"team": "payments"}), app("web"), false)]
#[case::labels_all(json!({"labels": {"tier": "critical", "env": "prod"}}), app("web").label("tier", "critical").label("env", "prod"), true)]
#[case::labels_one_missing(json!({"labels": {"tier": "critical", "env": "prod"}}), app("web").label("tier", "critical"), false)]
#[case::compliance_any(json!({"compliance": ["pci", "hipaa"]}), app("web").compliance(&["hipaa"]), true)]
#[case::compliance_none(json!({"compliance": ["pci"]}), app("web").compliance(&["sox"]), false)]
#[case::all_parts(json!({"names": ["web*"], "team": "web"}), app("web").team("ml"), false)]
fn rule_match(#[case] matches: Value, #[case] subject: AppBuilder, #[case] denied: bool) {
    let rule = json!({"name": "r", "match": matches, "deny": {"placement.cluster": "present"}, "message": "no"});
    let set = compile_ok(vec![policy("p").rule(rule).build()], &[]);
    assert_eq!(!set.evaluate(&subject.loaded(), &ctx(WEDNESDAY)).is_empty(), denied);
}

#[rstest]
#[case::literal("web", "web", true)]
#[case::star_all("*", "anything", true)]
#[case::star_empty("web*", "web", true)]
#[case::star_middle("a*c", "abbbc", true)]
#[case::star_backtracks("*ab", "aab", true)]
#[case::two_stars("*-*-eu", "web-1-eu", true)]
#[case::prefix_only("web", "web-1", false)]
#[case::question("w?b", "wab", true)]
#[case::question_needs_one("w?b", "wb", false)]
fn globs(#[case] pattern: &str, #[case] text: &str, #[case] matches: bool) {
    assert_eq!(glob(pattern, text), matches);
}

#[test]
fn rule_verdict_names_the_rule_and_what_was_found() {
    let rule = json!({"name": "pci-off-spot", "match": {"compliance": ["pci"]},
                      "deny": {"placement.nodePool": "present"}, "message": "PCI workloads may not run on spot capacity"});
    let set = compile_ok(vec![policy("guard").rule(rule).build()], &[]);
    let v = set.evaluate(&app("pay").compliance(&["pci"]).spot().loaded(), &ctx(WEDNESDAY));
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].policy.as_str(), v[0].rule.as_str()), ("guard", "pci-off-spot"));
    assert_eq!(v[0].message, "PCI workloads may not run on spot capacity (placement.nodePool is present)");
    assert_eq!(v[0].file, "policies/guard.yaml");
}

#[test]
fn require_verdict_says_what_is_expected_and_found() {
    let rule = json!({"name": "canary", "require": {"strategy.type": "canary", "replicas": "present"}, "message": "use canaries"});
    let set = compile_ok(vec![policy("p").rule(rule).build()], &[]);
    let v = set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY));
    assert_eq!(v[0].message, "use canaries (strategy.type must be \"canary\", is absent)");
}

// ---------------------------------------------------------------------------------------------
// Rego

const CHECKS: &str = r#"package team.checks

import rego.v1

deny contains msg if {
	input.placement.cluster == "prod-east"
	input.app.spec.replicas < 2
	msg := sprintf("%s needs 2 replicas in prod", [input.app.metadata.name])
}

deny contains msg if {
	input.change.previous.spec.replicas > input.app.spec.replicas
	msg := sprintf("scale-down in %s needs review", [input.change.commit])
}

warn contains msg if {
	input.app.metadata.labels.tier == "critical"
	msg := "critical app"
}
"#;

fn checks() -> PolicySet {
    compile_ok(vec![policy("p").rego("policies/checks.rego").build()], &[("policies/checks.rego", CHECKS)])
}

#[rstest]
#[case::allowed(app("web").replicas(3), None, vec![])]
#[case::deny(app("web").replicas(1), None, vec!["web needs 2 replicas in prod"])]
#[case::warn(app("web").replicas(3).label("tier", "critical"), None, vec!["critical app"])]
#[case::previous_and_commit(app("web").replicas(3), Some(app("web").replicas(5)), vec!["scale-down in 0123abcd needs review"])]
fn rego_deny_and_warn(#[case] subject: AppBuilder, #[case] previous: Option<AppBuilder>, #[case] expected: Vec<&str>) {
    let set = checks();
    let previous = previous.map(|p| p.build());
    let ctx = ChangeCtx { previous: previous.as_ref(), ..ctx(WEDNESDAY) };
    let v = set.evaluate(&subject.loaded(), &ctx);
    assert_eq!(v.iter().map(|v| v.message.as_str()).collect::<Vec<_>>(), expected);
    for v in &v {
        assert_eq!(v.kind, VerdictKind::Rego);
        assert_eq!(v.blocking, v.message != "critical app", "{v}");
        assert_eq!(v.file, "policies/checks.rego");
    }
}

#[test]
fn rego_verdicts_point_at_the_rule_head() {
    let set = checks();
    let v = set.evaluate(&app("web").replicas(1).label("tier", "critical").loaded(), &ctx(WEDNESDAY));
    let at: Vec<(&str, usize, usize, bool)> = v.iter().map(|v| (v.rule.as_str(), v.line, v.col, v.blocking)).collect();
    assert_eq!(at, [("team.checks.deny", 5, 1, true), ("team.checks.warn", 16, 1, false)]);
}

#[test]
fn rego_module_listed_by_two_policies_is_evaluated_once() {
    let policies =
        vec![policy("a").rego("policies/checks.rego").build(), policy("b").rego("policies/checks.rego").build()];
    let set = compile_ok(policies, &[("policies/checks.rego", CHECKS)]);
    let v = set.evaluate(&app("web").replicas(1).loaded(), &ctx(WEDNESDAY));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].policy, "a");
}

#[test]
fn rego_package_may_span_modules_and_import_helpers() {
    let lib = "package lib.images\n\nimport rego.v1\n\nlatest(image) if endswith(image, \":latest\")\n";
    let rules = "package images\n\nimport rego.v1\nimport data.lib.images\n\ndeny contains \"no :latest\" if images.latest(input.app.spec.image)\n";
    let (set, diags) = compile(
        vec![policy("p").rego("policies/lib.rego").rego("policies/images.rego").build()],
        &[("policies/lib.rego", lib), ("policies/images.rego", rules)],
    );
    assert_eq!(diags, []);
    let v = set.evaluate(&app("web").image("r/web:latest").loaded(), &ctx(WEDNESDAY));
    assert_eq!(kinds(&v), [(VerdictKind::Rego, true)]);
    assert!(set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY)).is_empty());
}

#[test]
fn rego_v0_module_is_accepted_with_a_warning() {
    let v0 = "package old\n\ndeny[msg] {\n  input.app.spec.replicas == 1\n  msg := \"one replica\"\n}\n";
    let (set, diags) = compile(vec![policy("p").rego("policies/old.rego").build()], &[("policies/old.rego", v0)]);
    assert_eq!(diags.iter().map(|d| (d.rule.as_str(), d.is_error())).collect::<Vec<_>>(), [("rego.v0", false)]);
    let v = set.evaluate(&app("web").replicas(1).loaded(), &ctx(WEDNESDAY));
    assert_eq!(v.iter().map(|v| v.message.as_str()).collect::<Vec<_>>(), ["one replica"]);
}

#[rstest]
#[case::syntax("package broken\n\nimport rego.v1\n\ndeny contains msg if {\n  msg := \n}\n", (6, 7))]
#[case::unsafe_variable("package broken\n\nimport rego.v1\n\ndeny contains msg if {\n  x > 1\n  msg := \"no\"\n}\n", (6, 3))]
#[case::unknown_function("package broken\n\nimport rego.v1\n\ndeny contains msg if {\n  msg := no_such_function(1)\n}\n", (6, 26))]
fn rego_that_does_not_compile_is_a_diagnostic_and_fails_closed(#[case] text: &str, #[case] at: (usize, usize)) {
    let (set, diags) = compile(
        vec![policy("p").rego("policies/broken.rego").rego("policies/checks.rego").build()],
        &[("policies/broken.rego", text), ("policies/checks.rego", CHECKS)],
    );
    assert_eq!(diags.len(), 1, "{diags:#?}");
    let d = &diags[0];
    assert!(d.is_error());
    assert_eq!((d.file.as_str(), d.rule.as_str()), ("policies/broken.rego", "rego.compile"));
    assert_eq!((d.line, d.col), at, "{d}");
    // The broken module blocks every app; the good one still speaks.
    let v = set.evaluate(&app("web").replicas(1).loaded(), &ctx(WEDNESDAY));
    assert_eq!(kinds(&v), [(VerdictKind::Rego, true), (VerdictKind::Rego, true)]);
    assert!(v[0].message.contains("does not compile"), "{}", v[0]);
    assert_eq!(blocked_by(&v), Some(Block::Policy));
}

#[test]
fn missing_rego_module_is_a_diagnostic_at_the_policy_entry() {
    let (set, diags) = compile(vec![policy("p").rego("policies/gone.rego").build()], &[]);
    assert_eq!(
        diags.iter().map(|d| (d.file.as_str(), d.rule.as_str())).collect::<Vec<_>>(),
        [("policies/p.yaml", "policy.rego-missing")]
    );
    assert_eq!(kinds(&set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY))), [(VerdictKind::Rego, true)]);
}

#[test]
fn rego_module_without_deny_or_warn_is_a_warning() {
    let text = "package nothing\n\nimport rego.v1\n\nallow := true\n";
    let (set, diags) = compile(vec![policy("p").rego("policies/n.rego").build()], &[("policies/n.rego", text)]);
    assert_eq!(diags.iter().map(|d| (d.rule.as_str(), d.is_error())).collect::<Vec<_>>(), [("rego.no-rules", false)]);
    assert!(set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY)).is_empty());
}

#[test]
fn rego_evaluation_is_time_bounded_and_fails_closed() {
    let slow = "package slow\n\nimport rego.v1\n\ndeny contains \"never\" if {\n  \
                count([x | some a in numbers.range(1, 4000); some b in numbers.range(1, 4000); x := a * b]) < 0\n}\n";
    let set = compile_ok(vec![policy("p").rego("policies/slow.rego").build()], &[("policies/slow.rego", slow)]);
    let started = Instant::now();
    let v = set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY));
    assert!(started.elapsed() < rego::EVAL_LIMIT * 8, "took {:?}", started.elapsed());
    assert_eq!(kinds(&v), [(VerdictKind::Rego, true)]);
    assert!(v[0].message.starts_with("data.slow.deny exceeded its evaluation limit"), "{}", v[0]);
}

/// A rule over its time or memory limit blocks, whether it is a `deny` or a `warn`, and names
/// itself; the same modules' other rules still answer.
#[rstest]
#[case::slow_warn(
    "warn",
    "count([x | some a in numbers.range(1, 4000); some b in numbers.range(1, 4000); x := a * b]) < 0"
)]
#[case::huge_range("deny", "count(numbers.range(1, 100000000)) < 0")]
#[case::huge_width("warn", "count(sprintf(\"%0999999999d\", [1])) < 0")]
#[case::doubling(
    "deny",
    "a := concat(\"\", [\"x\" | some _ in numbers.range(1, 90000)]); b := concat(\"\", [a, a]); c := concat(\"\", [b, b]); d := concat(\"\", [c, c]); e := concat(\"\", [d, d]); f := concat(\"\", [e, e]); count(concat(\"\", [f, f])) < 0"
)]
fn rules_over_their_limits_block_and_name_themselves(#[case] rule: &str, #[case] body: &str) {
    let module = format!(
        "package hostile\n\nimport rego.v1\n\n{rule} contains \"never\" if {{\n  {body}\n}}\n\n\
         {other} contains \"fine\" if {{ input.app.metadata.name == \"web\" }}\n",
        other = if rule == "deny" { "warn" } else { "deny" }
    );
    let set =
        compile_ok(vec![policy("p").rego("policies/hostile.rego").build()], &[("policies/hostile.rego", &module)]);
    let v = set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY));
    let over: Vec<&Verdict> = v.iter().filter(|v| v.message.contains("exceeded its evaluation limit")).collect();
    assert_eq!(over.len(), 1, "{v:#?}");
    assert!(over[0].blocking, "{:#?}", over[0]);
    assert_eq!(over[0].rule, format!("hostile.{rule}"));
    assert_eq!(blocked_by(&v), Some(Block::Policy));
    assert!(v.iter().any(|v| v.message == "fine"), "the module's other rule still answers: {v:#?}");
}

// ---------------------------------------------------------------------------------------------
// Freeze windows

fn frozen(set: &PolicySet, now: OffsetDateTime) -> bool {
    blocked_by(&set.evaluate(&app("web").loaded(), &ctx(now))) == Some(Block::Freeze)
}

fn weekend(zone: &str) -> PolicySet {
    compile_ok(vec![policy("freeze").freeze("0 18 * * FRI", "62h", zone).build()], &[])
}

#[rstest]
#[case::wednesday(datetime!(2026-03-04 12:00 UTC), false)]
#[case::friday_before(datetime!(2026-03-06 16:59:59 UTC), false)]
#[case::friday_18_berlin(datetime!(2026-03-06 17:00 UTC), true)]
#[case::saturday(datetime!(2026-03-07 12:00 UTC), true)]
#[case::monday_before_8(datetime!(2026-03-09 06:59:59 UTC), true)]
#[case::monday_8_berlin(datetime!(2026-03-09 07:00 UTC), false)]
// Summer time starts Sun 2026-03-29: the window still ends Mon 08:00 CEST (06:00 UTC), not 62
// elapsed hours after Fri 18:00 CET (which would be 09:00 CEST).
#[case::spring_dst_monday_7_30(datetime!(2026-03-30 05:30 UTC), true)]
#[case::spring_dst_monday_8_30(datetime!(2026-03-30 06:30 UTC), false)]
#[case::spring_dst_sunday(datetime!(2026-03-29 01:30 UTC), true)]
// Summer time ends Sun 2026-10-25: Fri 18:00 CEST (16:00 UTC) to Mon 08:00 CET (07:00 UTC).
#[case::autumn_dst_friday(datetime!(2026-10-23 16:00 UTC), true)]
#[case::autumn_dst_monday_7_30(datetime!(2026-10-26 06:30 UTC), true)]
#[case::autumn_dst_monday_8_30(datetime!(2026-10-26 07:30 UTC), false)]
#[case::given_in_another_offset(datetime!(2026-03-06 19:30 +02:00), true)]
fn weekend_freeze_in_berlin(#[case] now: OffsetDateTime, #[case] expected: bool) {
    assert_eq!(frozen(&weekend("Europe/Berlin"), now), expected);
}

#[rstest]
#[case::berlin_is_already_frozen("Europe/Berlin", datetime!(2026-03-06 17:30 UTC), true)]
#[case::utc_is_not_yet("UTC", datetime!(2026-03-06 17:30 UTC), false)]
#[case::utc_opens_at_18(  "UTC", datetime!(2026-03-06 18:00 UTC), true)]
#[case::new_york_is_not_yet("America/New_York", datetime!(2026-03-06 22:59 UTC), false)]
#[case::new_york_opens("America/New_York", datetime!(2026-03-06 23:00 UTC), true)]
fn freeze_follows_its_time_zone(#[case] zone: &str, #[case] now: OffsetDateTime, #[case] expected: bool) {
    assert_eq!(frozen(&weekend(zone), now), expected);
}

#[rstest]
// US summer time starts Sun 2026-03-08; a daily 09:00-10:00 New York window moves by an hour in UTC.
#[case::before_us_dst(datetime!(2026-03-06 14:30 UTC), true)]
#[case::after_us_dst_old_offset(datetime!(2026-03-09 14:30 UTC), false)]
#[case::after_us_dst(datetime!(2026-03-09 13:30 UTC), true)]
fn daily_window_across_dst(#[case] now: OffsetDateTime, #[case] expected: bool) {
    let set = compile_ok(vec![policy("f").freeze("0 9 * * MON-FRI", "1h", "America/New_York").build()], &[]);
    assert_eq!(frozen(&set, now), expected);
}

#[test]
fn window_opening_in_a_dst_gap_still_opens() {
    // 02:30 does not exist in Berlin on 2026-03-29; the window opens when the clock jumps to 03:00.
    let set = compile_ok(vec![policy("f").freeze("30 2 * * SUN", "2h", "Europe/Berlin").build()], &[]);
    assert!(frozen(&set, datetime!(2026-03-29 01:15 UTC)));
    assert!(!frozen(&set, datetime!(2026-03-29 00:59 UTC)));
}

#[test]
fn freeze_verdict_says_until_when_and_how_to_override() {
    let v = weekend("Europe/Berlin").evaluate(&app("web").loaded(), &ctx(datetime!(2026-03-07 12:00 UTC)));
    assert_eq!(v.len(), 1);
    assert_eq!((v[0].kind, v[0].blocking, v[0].rule.as_str()), (VerdictKind::Freeze, true, "freeze[0]"));
    assert!(v[0].message.contains("until Mon 2026-03-09 08:00 CET"), "{}", v[0].message);
    assert!(v[0].message.contains("Keelson-Freeze-Override"), "{}", v[0].message);
}

#[rstest]
#[case::reason(Some("hotfix for INC-123"), Some((false, "overridden by Keelson-Freeze-Override: hotfix for INC-123")))]
#[case::blank_reason(Some("  "), Some((true, "needs a reason")))]
#[case::none(None, Some((true, "rollouts wait")))]
fn freeze_override(#[case] reason: Option<&str>, #[case] expected: Option<(bool, &str)>) {
    let set = weekend("Europe/Berlin");
    let ctx = ChangeCtx { freeze_override: reason, ..ctx(datetime!(2026-03-07 12:00 UTC)) };
    let v = set.evaluate(&app("web").loaded(), &ctx);
    let (blocking, text) = expected.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].blocking, blocking);
    assert!(v[0].message.contains(text), "{}", v[0].message);
    assert_eq!(blocked_by(&v), blocking.then_some(Block::Freeze));
}

#[test]
fn override_outside_a_window_says_nothing() {
    let ctx = ChangeCtx { freeze_override: Some("hotfix"), ..ctx(WEDNESDAY) };
    assert!(weekend("Europe/Berlin").evaluate(&app("web").loaded(), &ctx).is_empty());
}

#[rstest]
#[case::not_five_fields("0 0 18 * * FRI", "62h", "UTC", "policy.cron", "/spec/freeze/0/cron")]
#[case::never_matches("0 0 31 2 *", "62h", "UTC", "policy.cron", "/spec/freeze/0/cron")]
#[case::unknown_zone("0 18 * * FRI", "62h", "Europe/Berln", "policy.time-zone", "/spec/freeze/0/timeZone")]
#[case::bad_duration("0 18 * * FRI", "a weekend", "UTC", "policy.duration", "/spec/freeze/0/duration")]
fn bad_freeze_window_is_a_diagnostic_and_fails_closed(
    #[case] cron: &str,
    #[case] duration: &str,
    #[case] zone: &str,
    #[case] rule: &str,
    #[case] pointer: &str,
) {
    let (set, diags) = compile(vec![policy("f").freeze(cron, duration, zone).build()], &[]);
    assert_eq!(diags.iter().map(|d| (d.rule.as_str(), d.pointer.as_str())).collect::<Vec<_>>(), [(rule, pointer)]);
    let v = set.evaluate(&app("web").loaded(), &ctx(WEDNESDAY));
    assert_eq!(kinds(&v), [(VerdictKind::Rule, true)]);
    assert_eq!(blocked_by(&v), Some(Block::Policy));
}

// ---------------------------------------------------------------------------------------------
// Quotas

fn fleet(apps: &[AppBuilder]) -> DesiredState {
    let apps = apps.iter().map(|a| a.loaded()).map(|l| (l.app.metadata.name.clone(), l.into())).collect();
    DesiredState { apps, ..DesiredState::default() }
}

#[rstest]
#[case::under(Some(8), None, vec![app("a").team("ml").replicas(2).gpus(1), app("b").team("ml").gpus(4)], vec![])]
#[case::at_the_limit(Some(8), None, vec![app("a").team("ml").replicas(2).gpus(2), app("b").team("ml").gpus(4)], vec![])]
#[case::over_gpus(Some(8), None,
    vec![app("a").team("ml").replicas(2).gpus(4), app("b").team("ml").gpus(1), app("c").team("ml"), app("d").team("web").replicas(9).gpus(8)],
    vec![("a", "quotas[0].gpus"), ("b", "quotas[0].gpus")])]
#[case::over_replicas(None, Some(5), vec![app("a").team("ml").replicas(3), app("b").team("ml").replicas(3), app("c").replicas(9)],
    vec![("a", "quotas[0].replicas"), ("b", "quotas[0].replicas")])]
#[case::over_both(Some(1), Some(2), vec![app("a").team("ml").replicas(2).gpus(1), app("b").team("ml")],
    vec![("a", "quotas[0].gpus"), ("a", "quotas[0].replicas"), ("b", "quotas[0].replicas")])]
fn quotas(
    #[case] gpus: Option<u32>,
    #[case] replicas: Option<u32>,
    #[case] apps: Vec<AppBuilder>,
    #[case] expected: Vec<(&str, &str)>,
) {
    let set = compile_ok(vec![policy("q").quota("ml", gpus, replicas).build()], &[]);
    let out = set.quotas(&fleet(&apps));
    assert_eq!(out.iter().map(|(app, v)| (app.as_str(), v.rule.as_str())).collect::<Vec<_>>(), expected);
    assert!(out.iter().all(|(_, v)| v.blocking && v.kind == VerdictKind::Quota));
}

#[test]
fn quota_message_lists_the_teams_usage() {
    let set = compile_ok(vec![policy("q").quota("ml", Some(8), None).build()], &[]);
    let out = set.quotas(&fleet(&[app("a").team("ml").replicas(3).gpus(2), app("b").team("ml").replicas(2).gpus(2)]));
    assert!(out[0].1.message.starts_with("team `ml` asks for 10 gpus across its apps (a 6, b 4), over its quota of 8"));
}

// ---------------------------------------------------------------------------------------------
// Verdicts

#[rstest]
#[case::nothing(vec![], None)]
#[case::warning_only(vec![(VerdictKind::Rego, false)], None)]
#[case::freeze(vec![(VerdictKind::Freeze, true)], Some(Block::Freeze))]
#[case::overridden_freeze(vec![(VerdictKind::Freeze, false)], None)]
#[case::policy_wins_over_freeze(vec![(VerdictKind::Freeze, true), (VerdictKind::Quota, true)], Some(Block::Policy))]
#[case::rule(vec![(VerdictKind::Rule, true)], Some(Block::Policy))]
fn blocking(#[case] verdicts: Vec<(VerdictKind, bool)>, #[case] expected: Option<Block>) {
    let verdicts: Vec<Verdict> = verdicts
        .into_iter()
        .map(|(kind, blocking)| Verdict {
            policy: "p".into(),
            rule: "r".into(),
            kind,
            message: "m".into(),
            blocking,
            file: "f".into(),
            line: 1,
            col: 1,
        })
        .collect();
    assert_eq!(blocked_by(&verdicts), expected);
}

#[test]
fn verdict_displays_on_one_line_and_serializes_camel_case() {
    let v = Verdict {
        policy: "guardrails".into(),
        rule: "pci-off-spot".into(),
        kind: VerdictKind::Require,
        message: "no spot".into(),
        blocking: true,
        file: "policies/guardrails.yaml".into(),
        line: 12,
        col: 7,
    };
    assert_eq!(v.to_string(), "policies/guardrails.yaml:12:7: deny: require guardrails/pci-off-spot: no spot");
    assert_eq!(
        serde_json::to_value(&v).unwrap(),
        json!({"policy": "guardrails", "rule": "pci-off-spot", "kind": "require", "message": "no spot",
               "blocking": true, "file": "policies/guardrails.yaml", "line": 12, "col": 7})
    );
    assert_eq!(Block::Freeze.reason(), "Freeze");
}

#[test]
fn policy_set_is_shareable_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<PolicySet>();
}

// ---------------------------------------------------------------------------------------------
// The shipped defaults (state-repo-template/policies), loaded as a user's repository would be.

const TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../state-repo-template");

/// Every file of the template, relative to it, with its text.
fn template_files() -> BTreeMap<String, String> {
    fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let root = std::path::Path::new(TEMPLATE);
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Loads `files` with the real loader and compiles its policies.
fn load(files: &BTreeMap<String, String>) -> (DesiredState, PolicySet) {
    let list: Vec<RepoFile> = files.keys().map(|p| RepoFile::new(p, p)).collect();
    let outcome = Loader::new().load(&list, &mut |f| Ok(files[&f.path].clone().into_bytes()));
    assert!(!outcome.has_errors(), "{:#?}", outcome.diagnostics);
    let (set, diags) = PolicySet::compile(&outcome.desired, &mut |p| {
        files.get(p).map(|t| t.clone().into_bytes()).ok_or_else(|| std::io::ErrorKind::NotFound.into())
    });
    assert_eq!(diags, []);
    (outcome.desired, set)
}

/// The template with `app` added as `apps/<name>/deploy.yaml`.
fn template_with(app: &AppBuilder) -> (DesiredState, PolicySet) {
    let mut files = template_files();
    let name = app.0["metadata"]["name"].as_str().unwrap().to_string();
    files.insert(format!("apps/{name}/deploy.yaml"), serde_json::to_string(&app.0).unwrap());
    if app.0.pointer("/spec/manifests").is_some() {
        files.insert(format!("apps/{name}/manifests/config.yaml"), "apiVersion: v1\nkind: ConfigMap\n".into());
    }
    load(&files)
}

#[rstest]
fn template_deploys_at_any_time_of_the_week(
    #[values(
        datetime!(2026-03-02 09:00 UTC), // Monday
        datetime!(2026-03-06 17:30 UTC), // Friday evening in Berlin
        datetime!(2026-03-07 12:00 UTC), // Saturday
        datetime!(2026-03-08 23:00 UTC), // Sunday night
        datetime!(2026-03-29 01:30 UTC)  // the night summer time starts
    )]
    now: OffsetDateTime,
) {
    let (desired, set) = load(&template_files());
    assert_eq!(desired.apps.len(), 4);
    assert_eq!(desired.policies.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["guardrails"]);
    for app in desired.apps.values() {
        let v = set.evaluate(app, &ctx(now));
        assert_eq!(blocked_by(&v), None, "{}: {v:#?}", app.app.metadata.name);
    }
    assert_eq!(set.quotas(&desired), []);
}

#[test]
fn template_apps_raise_no_warning() {
    let (desired, set) = load(&template_files());
    let warned: Vec<&str> = desired
        .apps
        .values()
        .filter(|a| set.evaluate(a, &ctx(WEDNESDAY)).iter().any(|v| !v.blocking))
        .map(|a| a.app.metadata.name.as_str())
        .collect();
    // The template's critical apps are pinned by digest, so a fresh repository validates clean.
    assert_eq!(warned, Vec::<&str>::new());
}

#[rstest]
#[case::pci_on_spot(app("pay").compliance(&["pci"]).spot(), Some("guardrails/pci-off-spot"))]
#[case::pci_on_demand(app("pay").compliance(&["pci"]), None)]
#[case::spot_without_pci(app("batch").spot(), None)]
#[case::no_memory(app("web").unset("/spec/resources/memory"), Some("guardrails/keelson.defaults.deny"))]
#[case::no_resources(app("web").unset("/spec/resources"), Some("guardrails/keelson.defaults.deny"))]
#[case::no_cpu(app("web").unset("/spec/resources/cpu"), Some("guardrails/keelson.defaults.deny"))]
#[case::manifests_app_without_resources(
    app("legacy").unset("/spec/resources").unset("/spec/image").set("/spec/manifests", json!({"path": "manifests"})),
    None
)]
fn shipped_rules_deny(#[case] subject: AppBuilder, #[case] denied_by: Option<&str>) {
    let (desired, set) = template_with(&subject);
    let name = subject.0["metadata"]["name"].as_str().unwrap();
    let v = set.evaluate(&desired.apps[name], &ctx(WEDNESDAY));
    let mut blocking: Vec<String> =
        v.iter().filter(|v| v.blocking).map(|v| format!("{}/{}", v.policy, v.rule)).collect();
    blocking.dedup();
    assert_eq!(blocking, denied_by.into_iter().map(str::to_string).collect::<Vec<_>>(), "{v:#?}");
}

#[rstest]
#[case::critical_by_tag(app("api").label("tier", "critical"), true)]
#[case::critical_by_digest(app("api").label("tier", "critical").image(&format!("r/api@sha256:{}", "a".repeat(64))), false)]
#[case::standard_by_tag(app("api").label("tier", "standard"), false)]
fn shipped_digest_pin_warns(#[case] subject: AppBuilder, #[case] warned: bool) {
    let (desired, set) = template_with(&subject);
    let v = set.evaluate(&desired.apps["api"], &ctx(WEDNESDAY));
    assert_eq!(blocked_by(&v), None);
    assert_eq!(v.iter().any(|v| v.rule == "keelson.defaults.warn" && v.message.contains("pin it by digest")), warned);
}

#[rstest]
#[case::ml_over(app("trainer").team("ml").replicas(3).gpus(3), vec!["llm-inference", "trainer"])]
#[case::ml_at_the_limit(app("trainer").team("ml").replicas(2).gpus(3), vec![])]
#[case::other_team_unlimited(app("trainer").team("research").replicas(8).gpus(8), vec![])]
fn shipped_gpu_quota(#[case] subject: AppBuilder, #[case] blocked: Vec<&str>) {
    let (desired, set) = template_with(&subject);
    let out = set.quotas(&desired);
    assert_eq!(out.iter().map(|(a, _)| a.as_str()).collect::<Vec<_>>(), blocked);
}

#[rstest]
#[case::saturday(datetime!(2026-03-07 12:00 UTC), true)]
#[case::wednesday(WEDNESDAY, false)]
fn shipped_weekend_freeze_example(#[case] now: OffsetDateTime, #[case] frozen: bool) {
    let mut files = template_files();
    let example = files["policies/examples/weekend-freeze.yaml"].clone();
    files.insert("policies/weekend-freeze.yaml".into(), example);
    let (desired, set) = load(&files);
    for app in desired.apps.values() {
        let v = set.evaluate(app, &ctx(now));
        assert_eq!(blocked_by(&v) == Some(Block::Freeze), frozen, "{v:#?}");
    }
}

#[test]
fn shipped_policy_verdicts_point_into_the_yaml() {
    let (desired, set) = template_with(&app("pay").compliance(&["pci"]).spot());
    let v = set.evaluate(&desired.apps["pay"], &ctx(WEDNESDAY));
    let text = &template_files()["policies/guardrails.yaml"];
    let line = text.lines().position(|l| l.contains("- name: pci-off-spot")).unwrap() + 1;
    assert_eq!((v[0].file.as_str(), v[0].line, v[0].col), ("policies/guardrails.yaml", line, 7));
}

/// The Policy example of docs/manifest-reference.md fires on its App example: its PCI rule
/// matches the app's `metadata.compliance` (the documented form once matched a `compliance`
/// label instead, which no example app has, so it never fired).
#[test]
fn the_manifest_reference_policy_example_denies_its_app_example() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/manifest-reference.md")).unwrap();
    let blocks: Vec<&str> = doc.split("```yaml\n").skip(1).map(|b| b.split("```").next().unwrap_or_default()).collect();
    let value_of = |kind: &str| -> Value {
        let block = blocks.iter().find(|b| b.contains(&format!("\nkind: {kind}\n"))).expect("an example");
        keelson_manifest::yaml::parse("docs/manifest-reference.md", block.as_bytes()).unwrap().remove(0).value
    };
    let app: App = serde_json::from_value(value_of("App")).expect("the App example reads as an App");
    let mut policy = value_of("Policy");
    let rules = policy["spec"]["rules"].clone();
    policy["spec"] = json!({"rules": rules});
    let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
    let set = compile_ok(vec![LoadedPolicy { file: format!("policies/{name}.yaml"), name, document: policy }], &[]);
    let loaded = LoadedApp { file: "apps/checkout/deploy.yaml".into(), digest: "sha256:0".into(), app };
    let verdicts = set.evaluate(&loaded, &ctx(WEDNESDAY));
    assert!(verdicts.iter().any(|v| v.rule.contains("pci-off-spot") && v.blocking), "{verdicts:#?}");
}
