use rstest::rstest;

use super::*;
use crate::Severity;
use crate::parse_config;
use crate::testing::app;

/// A valid app; cases append lines to its `spec` (line 9 onwards) or to `placement` (indent 4).
const BASE: &str = "\
apiVersion: keelson.dev/v1alpha1
kind: App
metadata:
  name: web
spec:
  image: registry.example.com/web:1.0.0
  placement:
    cluster: prod-east
";

fn render(diags: &[Diagnostic]) -> String {
    diags.iter().map(|d| format!("  {d} [{}]", d.rule)).collect::<Vec<_>>().join("\n")
}

#[track_caller]
fn assert_has(diags: &[Diagnostic], rule: &str, line: usize, col: usize) -> Diagnostic {
    diags
        .iter()
        .find(|d| d.rule == rule && d.line == line && d.col == col)
        .cloned()
        .unwrap_or_else(|| panic!("expected {rule} at {line}:{col}, got:\n{}", render(diags)))
}

#[track_caller]
fn assert_clean(diags: &[Diagnostic]) {
    let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).cloned().collect();
    assert!(errors.is_empty(), "unexpected errors:\n{}", render(&errors));
}

#[rstest]
// --- types and ranges
#[case::replicas_string("  replicas: three", "schema.type", 9, 13)]
#[case::replicas_negative("  replicas: -1", "schema.range", 9, 13)]
#[case::replicas_float("  replicas: 1.5", "schema.type", 9, 13)]
#[case::suspend_quoted("  suspend: \"yes\"", "schema.type", 9, 12)]
#[case::command_not_list("  command: /bin/server", "schema.type", 9, 12)]
#[case::args_number("  args: [--port, 8080]", "schema.type", 9, 18)]
#[case::depends_on_not_list("  dependsOn: postgres", "schema.type", 9, 14)]
#[case::depends_on_bad_name("  dependsOn: [Postgres]", "schema.pattern", 9, 15)]
#[case::depends_on_repeated("  dependsOn: [db, db]", "schema.unique", 9, 14)]
// --- unknown fields
#[case::spec_typo("  replicsa: 3", "schema.unknown-field", 9, 3)]
#[case::placement_unknown("    zone: us-east", "schema.unknown-field", 9, 5)]
#[case::sync_case_typo("  sync: {selfheal: true}", "schema.unknown-field", 9, 10)]
// --- resources
#[case::cpu_spaced("  resources: {cpu: 500 m}", "app.cpu", 9, 20)]
#[case::memory_bytes_word("  resources: {memory: 512MB}", "app.memory", 9, 23)]
#[case::gpu_count_zero("  resources: {gpu: {count: 0}}", "schema.range", 9, 28)]
#[case::gpu_missing_count("  resources: {gpu: {model: H100}}", "schema.required", 9, 15)]
#[case::mig_profile("  resources: {gpu: {count: 1, mig: big}}", "schema.pattern", 9, 36)]
// --- env
#[case::env_value_and_secret("  env:\n  - {name: A, value: x, secretRef: {name: s, key: k}}", "schema.one-of", 10, 5)]
#[case::env_neither("  env:\n  - name: A", "schema.one-of", 10, 5)]
#[case::env_value_number("  env:\n  - {name: PORT, value: 8080}", "schema.type", 10, 25)]
#[case::env_bad_name("  env:\n  - {name: 1A, value: x}", "schema.pattern", 10, 12)]
#[case::secret_ref_without_key("  env:\n  - {name: A, secretRef: {name: s}}", "schema.required", 10, 15)]
#[case::env_twice("  env:\n  - {name: A, value: x}\n  - {name: A, value: y}", "app.env-duplicate", 11, 12)]
// --- ports, expose, health
#[case::port_too_big("  ports: [{port: 70000}]", "schema.range", 9, 18)]
#[case::protocol_unknown("  ports: [{port: 80, protocol: sctp}]", "schema.enum", 9, 32)]
#[case::expose_without_port("  expose: {host: web.example.com}", "schema.required", 9, 3)]
#[case::expose_relative_path("  expose: {port: 8080, path: api}", "schema.pattern", 9, 30)]
#[case::expose_tls_on("  expose: {port: 8080, tls: on}", "schema.type", 9, 29)]
#[case::probe_without_path("  health:\n    readiness: {port: 8080}", "schema.required", 10, 5)]
#[case::probe_period_words(
    "  health:\n    readiness: {path: /healthz, port: 8080, period: 10 seconds}",
    "app.duration",
    10,
    53
)]
// --- placement
#[case::node_pool_without_class("    nodePool: {maxBid: \"0.08\"}", "schema.required", 9, 5)]
#[case::max_bid_negative("    nodePool: {serverClass: gp.vs1.large-iad, maxBid: -1}", "schema.range", 9, 55)]
#[case::max_bid_words("    nodePool: {serverClass: a, maxBid: cheap}", "schema.pattern", 9, 40)]
// --- strategy
#[case::strategy_type_typo("  strategy: {type: canery, steps: [10, 100]}", "schema.enum", 9, 20)]
#[case::canary_without_steps("  strategy: {type: canary}", "schema.required", 9, 3)]
#[case::steps_decrease("  strategy: {type: canary, steps: [10, 50, 30, 100]}", "app.steps", 9, 44)]
#[case::steps_short_of_100("  strategy: {type: canary, steps: [10, 50]}", "app.steps", 9, 40)]
#[case::step_zero("  strategy: {type: canary, steps: [0, 100]}", "schema.range", 9, 36)]
#[case::step_over_100("  strategy: {type: canary, steps: [50, 150]}", "schema.range", 9, 40)]
#[case::interval_words("  strategy: {type: canary, steps: [100], interval: 5 minutes}", "app.duration", 9, 52)]
#[case::gate_without_bound(
    "  strategy:\n    type: canary\n    steps: [100]\n    gates:\n    - metric: success-rate",
    "schema.any-of",
    13,
    7
)]
#[case::gate_min_above_max(
    "  strategy:\n    type: canary\n    steps: [100]\n    gates:\n    - {metric: error-rate, min: 5, max: 1}",
    "app.gate",
    13,
    41
)]
#[case::auto_revert_unknown("  strategy: {type: direct, autoRevert: always}", "schema.enum", 9, 40)]
// --- sync and manifests
#[case::ignore_not_pointer("  sync: {ignoreDifferences: [spec.replicas]}", "schema.pattern", 9, 30)]
#[case::manifests_escape("  manifests: {path: ../other}", "app.manifests-path", 9, 21)]
#[case::manifests_absolute("  manifests: {path: /etc}", "app.manifests-path", 9, 21)]
#[case::manifests_helm("  manifests: {path: manifests, type: helm}", "schema.enum", 9, 38)]
// --- YAML level
#[case::duplicate_key("  image: registry.example.com/web:2.0.0", "yaml.duplicate-key", 9, 3)]
#[case::merge_key("  <<: {replicas: 2}", "yaml.merge-key", 9, 3)]
#[case::infinity("  replicas: .inf", "yaml.non-finite", 9, 13)]
#[case::binary_tag("  replicas: !!binary aGVsbG8=", "yaml.tag", 9, 13)]
#[case::bad_int_tag("  replicas: !!int three", "yaml.tag", 9, 13)]
fn bad_app_spec(#[case] extra: &str, #[case] rule: &str, #[case] line: usize, #[case] col: usize) {
    let text = format!("{BASE}{extra}\n");
    let diags = check_file("apps/web/deploy.yaml", text.as_bytes());
    let d = assert_has(&diags, rule, line, col);
    assert_eq!(d.severity, Severity::Error, "{d}");
    assert_eq!(d.file, "apps/web/deploy.yaml");
}

#[rstest]
#[case::api_version(
    "apiVersion: keelson.dev/v1\nkind: App\nmetadata: {name: web}\nspec: {image: a:1, placement: {cluster: c}}\n",
    "manifest.api-version",
    1,
    13
)]
#[case::kind_typo(
    "apiVersion: keelson.dev/v1alpha1\nkind: Ap\nmetadata: {name: web}\nspec: {image: a:1, placement: {cluster: c}}\n",
    "manifest.kind",
    2,
    7
)]
#[case::kind_missing("apiVersion: keelson.dev/v1alpha1\nmetadata: {name: web}\n", "manifest.kind", 1, 1)]
#[case::not_a_mapping("- web\n- api\n", "manifest.not-a-mapping", 1, 1)]
#[case::name_uppercase(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: Web\nspec: {image: a:1, placement: {cluster: c}}\n",
    "schema.pattern",
    4,
    9
)]
#[case::name_mismatch(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: api\nspec: {image: a:1, placement: {cluster: c}}\n",
    "app.name-mismatch",
    4,
    9
)]
#[case::metadata_typo(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\n  tema: payments\nspec: {image: a:1, placement: {cluster: c}}\n",
    "schema.unknown-field",
    5,
    3
)]
#[case::label_number(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\n  labels: {tier: 1}\nspec: {image: a:1, placement: {cluster: c}}\n",
    "schema.type",
    5,
    18
)]
#[case::compliance_not_list(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\n  compliance: pci\nspec: {image: a:1, placement: {cluster: c}}\n",
    "schema.type",
    5,
    15
)]
#[case::spec_missing("apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\n", "schema.required", 1, 1)]
#[case::image_missing(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\nspec:\n  placement: {cluster: c}\n",
    "schema.required",
    5,
    1
)]
#[case::cluster_missing(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\nspec:\n  image: a:1\n  placement: {}\n",
    "schema.required",
    7,
    3
)]
#[case::image_uppercase(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\nspec:\n  image: Registry/Web\n  placement: {cluster: c}\n",
    "schema.pattern",
    6,
    10
)]
#[case::top_level_typo(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: a:1, placement: {cluster: c}}\nstatus: {}\n",
    "schema.unknown-field",
    5,
    1
)]
#[case::two_apps(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec: {image: a:1, placement: {cluster: c}}\n---\napiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: api}\nspec: {image: a:1, placement: {cluster: c}}\n",
    "layout.one-app",
    5,
    1
)]
#[case::policy_in_deploy(
    "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: web}\nspec: {}\n",
    "layout.kind",
    2,
    7
)]
#[case::empty_file("# nothing here\n", "layout.empty", 1, 1)]
#[case::tab_indent("apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata:\n\tname: web\n", "yaml.syntax", 4, 2)]
#[case::unclosed_flow(
    "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: web\nspec: {}\n",
    "yaml.syntax",
    4,
    5
)]
fn bad_app_document(#[case] text: &str, #[case] rule: &str, #[case] line: usize, #[case] col: usize) {
    let diags = check_file("apps/web/deploy.yaml", text.as_bytes());
    assert_has(&diags, rule, line, col);
}

const POLICY: &str = "\
apiVersion: keelson.dev/v1alpha1
kind: Policy
metadata:
  name: guardrails
spec:
";

#[rstest]
#[case::rule_without_effect("  rules:\n  - {name: r, message: m}", "schema.any-of", 7, 5)]
#[case::rule_without_message("  rules:\n  - {name: r, deny: {suspend: true}}", "schema.required", 7, 5)]
#[case::deny_key_not_path("  rules:\n  - {name: r, deny: {spec/image: present}, message: m}", "schema.key", 7, 22)]
#[case::deny_empty("  rules:\n  - {name: r, deny: {}, message: m}", "schema.empty", 7, 21)]
#[case::match_typo(
    "  rules:\n  - {name: r, match: {teams: [a]}, deny: {suspend: true}, message: m}",
    "schema.unknown-field",
    7,
    23
)]
#[case::rule_twice(
    "  rules:\n  - {name: r, deny: {suspend: true}, message: m}\n  - {name: r, require: {replicas: 2}, message: m}",
    "policy.duplicate-rule",
    8,
    12
)]
#[case::cron_six_fields("  freeze:\n  - {cron: \"0 0 18 * * FRI\", duration: 62h}", "policy.cron", 7, 12)]
#[case::cron_bad_day("  freeze:\n  - {cron: \"0 18 * * FRIDAY\", duration: 62h}", "policy.cron", 7, 12)]
#[case::freeze_duration("  freeze:\n  - {cron: \"0 18 * * FRI\", duration: a weekend}", "policy.duration", 7, 38)]
#[case::freeze_without_duration("  freeze:\n  - {cron: \"0 18 * * FRI\"}", "schema.required", 7, 5)]
#[case::time_zone("  freeze:\n  - {cron: \"0 18 * * FRI\", duration: 62h, timeZone: Berlin}", "schema.pattern", 7, 53)]
#[case::quota_negative("  quotas:\n  - {team: payments, gpus: -8}", "schema.range", 7, 28)]
#[case::quota_empty("  quotas:\n  - {team: payments}", "schema.any-of", 7, 5)]
#[case::rego_not_rego("  rego: [policies/extra.yaml]", "schema.pattern", 6, 10)]
#[case::spec_typo("  rulez: []", "schema.unknown-field", 6, 3)]
fn bad_policy(#[case] extra: &str, #[case] rule: &str, #[case] line: usize, #[case] col: usize) {
    let text = format!("{POLICY}{extra}\n");
    let diags = check_file("policies/guardrails.yaml", text.as_bytes());
    assert_has(&diags, rule, line, col);
}

/// DESIGN.md's keelson.yaml sample.
const CONFIG: &str = r#"apiVersion: keelson.dev/v1alpha1
kind: Config
source: {repo: "git@github.com:acme/state.git", branch: main, path: clusters/prod, pollInterval: 60s,
         webhook: {listen: "0.0.0.0:7421", secretFile: /etc/keelson/hook-secret},
         requireSignedCommits: true, allowedSigners: /etc/keelson/allowed_signers}
status: {branch: keelson/status, pushInterval: 2s}   # or {repo: …, branch: …}
database: sqlite:///var/lib/keelson/keelson.db         # or postgres://…
api: {listen: "127.0.0.1:7420"}
drift: {schedule: "*/5 * * * *"}
concurrency: 8
providers:                                  # named instances of provider types
  prod-east-k8s: {type: kubernetes, kubeconfig: /etc/keelson/prod-east.kubeconfig}
  spot:          {type: spot, tokenFile: /etc/keelson/spot-token, organization: acme}
  mesh-east:     {type: istio, kubeconfig: /etc/keelson/prod-east.kubeconfig}
  prom-east:     {type: prometheus, url: "http://prometheus.monitoring:9090"}
  gpu-lab:       {type: gpu, agents: ["https://gpu-01:7443"], caFile: /etc/keelson/ca.pem}
  dns:           {type: exec, command: [/usr/local/bin/keelson-provider-dns], timeout: 30s}
clusters:
  prod-east: {workloads: prod-east-k8s, capacity: spot, mesh: mesh-east, metrics: prom-east}
  gpu-lab:   {workloads: gpu-lab}
"#;

#[test]
fn design_config_parses() {
    // The sketch names settings that are not built: they are the only findings.
    let checked = check_bytes("keelson.yaml", CONFIG.as_bytes());
    let findings: Vec<(String, Severity)> =
        checked.all_diagnostics().into_iter().map(|d| (format!("{} {}", d.rule, d.pointer), d.severity)).collect();
    let not_built = |p: &str, s| (format!("not-built {p}"), s);
    assert_eq!(
        findings,
        [
            not_built("/source/requireSignedCommits", Severity::Error),
            not_built("/source/allowedSigners", Severity::Warning),
            not_built("/clusters/prod-east/capacity", Severity::Warning),
            not_built("/clusters/prod-east/mesh", Severity::Warning),
            not_built("/clusters/prod-east/metrics", Severity::Warning),
        ]
    );
    let config: crate::Config = serde_json::from_value(checked.documents[0].document.value.clone()).unwrap();
    let source = config.source.as_ref().expect("source");
    assert_eq!(source.repo.as_deref(), Some("git@github.com:acme/state.git"));
    assert_eq!(source.poll_interval.as_deref(), Some("60s"));
    assert!(source.require_signed_commits);
    assert_eq!(config.concurrency, Some(8));
    assert_eq!(config.providers["spot"].kind, "spot");
    assert_eq!(config.providers["spot"].settings["organization"], "acme");
    assert_eq!(config.clusters["prod-east"].metrics.as_deref(), Some("prom-east"));
    assert_eq!(config.clusters["gpu-lab"].capacity, None);
}

#[rstest]
#[case::source_typo("concurrency: 8", "sorce: {}", "schema.unknown-field", 10, 1)]
#[case::unknown_provider("metrics: prom-east}", "metrics: prom-west}", "config.unknown-provider", 19, 83)]
#[case::poll_interval("pollInterval: 60s", "pollInterval: 1 minute", "config.duration", 3, 98)]
#[case::drift_cron("\"*/5 * * * *\"", "\"*/5 * * *\"", "config.cron", 9, 19)]
#[case::listen("\"127.0.0.1:7420\"", "\"127.0.0.1\"", "config.listen", 8, 15)]
#[case::database("sqlite:///var", "mysql:///var", "schema.pattern", 7, 11)]
#[case::concurrency_zero("concurrency: 8", "concurrency: 0", "schema.range", 10, 14)]
#[case::provider_without_type("{type: spot, ", "{", "schema.required", 13, 3)]
#[case::cluster_without_workloads("{workloads: gpu-lab}", "{capacity: spot}", "schema.required", 20, 3)]
#[case::provider_name("  dns: ", "  DNS: ", "schema.key", 17, 3)]
#[case::second_document(
    "concurrency: 8",
    "concurrency: 8\n---\napiVersion: keelson.dev/v1alpha1\nkind: Config",
    "manifest.document-count",
    11,
    1
)]
#[case::wrong_kind("kind: Config", "kind: App", "manifest.kind", 2, 7)]
fn bad_config(#[case] from: &str, #[case] to: &str, #[case] rule: &str, #[case] line: usize, #[case] col: usize) {
    assert!(CONFIG.contains(from), "{from}");
    let text = CONFIG.replacen(from, to, 1);
    let diags = parse_config("keelson.yaml", text.as_bytes()).expect_err("config must fail");
    assert_has(&diags, rule, line, col);
}

#[test]
fn messages_read_well() {
    let diags = check_file(
        "apps/web/deploy.yaml",
        format!("{BASE}  replicas: three\n  replicsa: 3\n  strategy: {{type: canery, steps: [100]}}\n").as_bytes(),
    );
    let msgs: Vec<String> = diags.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "apps/web/deploy.yaml:9:13: error: /spec/replicas: replicas: expected an integer ≥ 0 and ≤ 4294967295, got \"three\"",
            "apps/web/deploy.yaml:10:3: error: /spec/replicsa: unknown field `replicsa` in spec (hint: did you mean `replicas`?)",
            "apps/web/deploy.yaml:11:20: error: /spec/strategy/type: type: expected one of `direct`, `rolling`, `blueGreen`, `canary`, got \"canery\" (hint: did you mean `canary`?)",
        ]
    );
}

#[test]
fn reports_every_problem_in_a_file() {
    let text = format!(
        "{BASE}  replicas: -2\n  resources: {{cpu: lots, memory: 1 GB}}\n  strategy: {{type: canary, steps: [50, 20], interval: soon}}\n  dependsOn: [Bad]\n"
    );
    let diags = check_file("apps/web/deploy.yaml", text.as_bytes());
    let rules: Vec<&str> = diags.iter().map(|d| d.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "schema.range",
            "app.cpu",
            "app.memory",
            "not-built",
            "app.steps",
            "not-built",
            "app.duration",
            "schema.pattern"
        ],
        "{}",
        render(&diags)
    );
}

#[test]
fn unknown_kind_names_the_supported_ones() {
    let diags = check_file("x.yaml", b"apiVersion: keelson.dev/v1alpha1\nkind: Deployment\n");
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.contains("App, Policy, Config"), "{}", diags[0]);
}

#[test]
fn warnings_do_not_block() {
    let text = "apiVersion: keelson.dev/v1alpha1\nkind: App\nmetadata: {name: web}\nspec:\n  image: nginx\n  placement: {cluster: c}\n  strategy: {type: direct, steps: [50, 100]}\n";
    let checked = check_bytes("apps/web/deploy.yaml", text.as_bytes());
    let rules: Vec<_> = checked.all_diagnostics().into_iter().map(|d| (d.rule, d.severity, d.line, d.col)).collect();
    assert_eq!(
        rules,
        [
            ("app.image-unpinned".to_string(), Severity::Warning, 5, 10),
            ("app.steps-unused".to_string(), Severity::Warning, 7, 35),
        ]
    );
    assert!(checked.documents[0].manifest.is_some());
}

#[test]
fn design_sketch_app_is_valid() {
    let text = r#"apiVersion: keelson.dev/v1alpha1
kind: App
metadata:
  name: checkout
  team: payments
  labels:
    tier: critical
  compliance: [pci]
spec:
  image: registry.example.com/checkout@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  command: [/bin/checkout]
  args: [--port, "8080"]
  env:
  - {name: LOG_LEVEL, value: info}
  - {name: DB_PASSWORD, secretRef: {name: checkout-db, key: password}}
  replicas: 4
  resources: {cpu: 500m, memory: 512Mi, gpu: {count: 1, model: H100}}
  ports: [{name: http, port: 8080, protocol: http}]
  placement: {cluster: prod-east, nodePool: {serverClass: gp.vs1.large-iad, maxBid: "0.08", onDemandFallback: true}}
  expose: {port: 8080, host: checkout.example.com, path: /, tls: true}
  health:
    readiness: {path: /healthz, port: 8080, initialDelay: 5s, period: 10s}
    liveness: {path: /livez, port: 8080, failureThreshold: 3}
  strategy: {type: canary, steps: [10, 30, 50, 100], interval: 60s, autoRevert: branch,
             gates: [{metric: success-rate, min: 99.0}, {metric: latency-p99, maxMs: 500}]}
  sync: {selfHeal: true, prune: true, ignoreDifferences: ["/spec/replicas"]}
  suspend: false
  dependsOn: [postgres]
"#;
    let checked = check_bytes("apps/checkout/deploy.yaml", text.as_bytes());
    // Everything in the sketch passes its checks; what is refused is only what is not built yet.
    let (not_built, other): (Vec<Diagnostic>, Vec<Diagnostic>) =
        checked.all_diagnostics().into_iter().partition(|d| d.rule == crate::not_built::RULE);
    assert_clean(&other);
    let refused: Vec<(&str, Severity)> = not_built.iter().map(|d| (d.pointer.as_str(), d.severity)).collect();
    assert_eq!(
        refused,
        [
            ("/spec/strategy/type", Severity::Error),
            ("/spec/strategy/interval", Severity::Warning),
            ("/spec/strategy/autoRevert", Severity::Error),
            ("/spec/strategy/gates", Severity::Error),
        ]
    );
    assert!(checked.documents[0].manifest.is_none(), "a canary must not be accepted as a direct rollout");
    let app: App = serde_json::from_value(checked.documents[0].document.value.clone()).unwrap();
    assert_eq!(app.metadata.name, "checkout");
    assert_eq!(app.spec.replicas, 4);
    assert_eq!(app.spec.placement.cluster, "prod-east");
    let pool = app.spec.placement.node_pool.as_ref().expect("node pool");
    assert_eq!(pool.max_bid.as_deref(), Some("0.08"));
    let strategy = app.spec.strategy.as_ref().expect("strategy");
    assert_eq!(strategy.kind, crate::app::StrategyType::Canary);
    assert_eq!(strategy.steps, [10, 30, 50, 100]);
    assert_eq!(strategy.gates[0].min, Some(99.0));
    assert_eq!(app.spec.env[1].secret_ref.as_ref().map(|s| s.key.as_str()), Some("password"));
    assert_eq!(app.spec.depends_on, ["postgres"]);
}

#[rstest]
#[case::minimal(app("web"))]
#[case::scaled(app("web").replicas(0).team("payments"))]
#[case::resources(app("web").resources("2", "1.5Gi"))]
#[case::manifests_only(app("web").manifests("manifests").set("/spec/image", serde_json::json!("registry.example.com/web:2")))]
#[case::numeric_cpu(app("web").set("/spec/resources", serde_json::json!({"cpu": 2, "memory": "512Mi"})))]
#[case::spot(app("web").set("/spec/placement/nodePool", serde_json::json!({"serverClass": "gp.vs1.medium-dfw", "maxBid": 0.08})))]
fn good_apps_round_trip(#[case] builder: crate::testing::AppBuilder) {
    let yaml = builder.yaml();
    let diags = check_file("apps/web/deploy.yaml", yaml.as_bytes());
    assert_clean(&diags);
    let checked = check_bytes("apps/web/deploy.yaml", yaml.as_bytes());
    let Some(Manifest::App(parsed)) = checked.documents[0].manifest.clone() else { panic!("no app") };
    assert_eq!(*parsed, builder.build());
}

#[test]
fn manifests_app_needs_no_image() {
    let mut value = app("web").manifests("manifests").value();
    value["spec"].as_object_mut().unwrap().remove("image");
    let yaml = crate::testing::to_yaml(&value, &Default::default());
    assert_clean(&check_file("apps/web/deploy.yaml", yaml.as_bytes()));
}

#[test]
fn design_policy_is_valid() {
    let text = r#"apiVersion: keelson.dev/v1alpha1
kind: Policy
metadata:
  name: prod-guardrails
spec:
  rules: [{name: pci-off-spot, match: {labels: {compliance: pci}}, deny: {placement.nodePool: present},
           message: "PCI workloads may not run on spot capacity"}]
  freeze: [{cron: "0 18 * * FRI", duration: 62h, timeZone: Europe/Berlin, reason: weekend freeze}]
  quotas: [{team: payments, gpus: 8, replicas: 200}]
  rego: [policies/extra.rego]
"#;
    let checked = check_bytes("policies/prod.yaml", text.as_bytes());
    assert_clean(&checked.all_diagnostics());
    let Some(Manifest::Policy(policy)) = checked.documents[0].manifest.clone() else { panic!("no policy") };
    assert_eq!(policy.spec.rules[0].deny["placement.nodePool"], "present");
    assert_eq!(policy.spec.freeze[0].time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(policy.spec.quotas[0].gpus, Some(8));
}

#[test]
fn app_dir_detection() {
    assert_eq!(app_dir_of("apps/web/deploy.yaml"), Some("web"));
    assert_eq!(app_dir_of("clusters/prod/apps/web/deploy.yaml"), Some("web"));
    assert_eq!(app_dir_of("web/deploy.yaml"), None);
    assert_eq!(app_dir_of("apps/web/manifests/deploy.yaml"), None);
}

/// Numbers past what a field can hold are reported at their own position with the range, never at
/// 1:1 with serde's text.
#[rstest]
#[case::replicas_u32("  replicas: 4294967296", 9, 13)]
#[case::replicas_huge("  replicas: 99999999999999999999", 9, 13)]
#[case::gpu_count("  resources: {gpu: {count: 5000000000}}", 9, 28)]
#[case::probe_threshold("  health: {readiness: {path: /, port: 80, failureThreshold: 4294967296}}", 9, 61)]
#[case::gate_max_ms("  strategy: {type: direct, gates: [{metric: latency-p99, maxMs: 99999999999999999999}]}", 9, 65)]
fn numbers_past_a_fields_range_are_reported_where_they_are(#[case] line: &str, #[case] l: usize, #[case] c: usize) {
    let text = format!("{BASE}{line}\n");
    let diags = check_file("apps/web/deploy.yaml", text.as_bytes());
    let d = assert_has(&diags, "schema.range", l, c);
    assert!(d.message.contains("4294967295") || d.message.contains("18446744073709551615"), "{d}");
    assert!(!diags.iter().any(|d| d.rule == "schema.internal" || (d.line, d.col) == (1, 1)), "{}", render(&diags));
}

#[test]
fn quota_numbers_past_u32_are_reported_where_they_are() {
    let text = "apiVersion: keelson.dev/v1alpha1\nkind: Policy\nmetadata: {name: q}\nspec:\n  quotas: [{team: a, gpus: 4294967296}]\n";
    let diags = check_file("policies/q.yaml", text.as_bytes());
    assert_has(&diags, "schema.range", 5, 28);
}
