use std::time::{Duration, Instant};

use proptest::prelude::*;
use rstest::rstest;
use serde_json::json;

use super::*;

fn doc(text: &str) -> Document {
    let mut docs = parse("t.yaml", text.as_bytes())
        .unwrap_or_else(|e| panic!("{}", e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")));
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn errors(text: &str) -> Vec<Diagnostic> {
    parse("t.yaml", text.as_bytes()).expect_err("must fail")
}

#[rstest]
#[case::tilde("~", json!(null))]
#[case::null_word("null", json!(null))]
#[case::null_title("Null", json!(null))]
#[case::empty("", json!(null))]
#[case::true_lower("true", json!(true))]
#[case::false_upper("FALSE", json!(false))]
#[case::yes_is_text("yes", json!("yes"))]
#[case::on_is_text("on", json!("on"))]
#[case::int("42", json!(42))]
#[case::negative("-17", json!(-17))]
#[case::plus("+5", json!(5))]
#[case::leading_zero_is_decimal("017", json!(17))]
#[case::hex("0x1F", json!(31))]
#[case::octal("0o17", json!(15))]
#[case::big("18446744073709551615", json!(18446744073709551615u64))]
#[case::float("1.5", json!(1.5))]
#[case::dot_float(".5", json!(0.5))]
#[case::trailing_dot("1.", json!(1.0))]
#[case::exponent("1e3", json!(1000.0))]
#[case::signed_exponent("-2.5E-2", json!(-0.025))]
#[case::underscore_is_text("1_000", json!("1_000"))]
#[case::bare_hex_prefix("0x", json!("0x"))]
#[case::time_is_text("12:30", json!("12:30"))]
#[case::version_is_text("1.2.3", json!("1.2.3"))]
#[case::single_quoted("'1'", json!("1"))]
#[case::double_quoted("\"true\"", json!("true"))]
#[case::str_tag("!!str 12", json!("12"))]
#[case::int_tag("!!int 12", json!(12))]
#[case::float_tag_on_int("!!float 12", json!(12))]
#[case::non_specific_tag("! 12", json!("12"))]
#[case::literal_block("|\n  a\n  b\n", json!("a\nb\n"))]
#[case::folded_block(">\n  a\n  b\n", json!("a b\n"))]
fn resolves_scalars_by_the_core_schema(#[case] text: &str, #[case] want: serde_json::Value) {
    let docs = parse("t.yaml", format!("v: {text}\n").as_bytes()).expect("parses");
    assert_eq!(docs[0].value["v"], want, "{text}");
}

#[test]
fn records_positions_of_keys_and_values() {
    let d = doc("a: 1\nmeta:\n  name: x\n  list:\n    - 1\n    - {b: 2}\nflow: [1, 'two']\n\"q/k~\": z\n");
    assert_eq!(d.spans.value(""), Some(Position::new(1, 1)));
    assert_eq!(d.spans.key("/a"), Some(Position::new(1, 1)));
    assert_eq!(d.spans.value("/a"), Some(Position::new(1, 4)));
    assert_eq!(d.spans.key("/meta"), Some(Position::new(2, 1)));
    assert_eq!(d.spans.value("/meta/name"), Some(Position::new(3, 9)));
    assert_eq!(d.spans.value("/meta/list/0"), Some(Position::new(5, 7)));
    assert_eq!(d.spans.key("/meta/list/1/b"), Some(Position::new(6, 8)));
    assert_eq!(d.spans.value("/meta/list/1/b"), Some(Position::new(6, 11)));
    assert_eq!(d.spans.value("/flow/1"), Some(Position::new(7, 11)));
    assert_eq!(d.spans.key("/q~1k~0"), Some(Position::new(8, 1)));
    assert_eq!(d.spans.value("/q~1k~0"), Some(Position::new(8, 9)));
    // Missing nodes fall back to the nearest ancestor.
    assert_eq!(d.spans.locate_value("/meta/list/1/c"), Position::new(6, 7));
    assert_eq!(d.spans.locate_key("/meta/nope"), Position::new(3, 3));
    // The array item has no key of its own.
    assert_eq!(d.spans.key("/meta/list/0"), None);
}

#[test]
fn counts_columns_in_characters() {
    let d = doc("ä: ö\nkey: \"日本\"\nx: y\n");
    assert_eq!(d.spans.value("/ä"), Some(Position::new(1, 4)));
    assert_eq!(d.spans.value("/key"), Some(Position::new(2, 6)));
}

#[test]
fn reads_every_document_and_skips_empty_ones() {
    let docs = parse("t.yaml", b"a: 1\n---\n---\n# only a comment\n---\nb: 2\n...\n").unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].value, json!({"a": 1}));
    assert_eq!((docs[1].index, docs[1].start.line), (3, 5));
    assert_eq!(docs[1].spans.value("/b"), Some(Position::new(6, 4)));
    assert!(parse("t.yaml", b"").unwrap().is_empty());
    assert!(parse("t.yaml", b"# nothing\n").unwrap().is_empty());
}

#[test]
fn preserves_key_order() {
    let d = doc("z: 1\na: 2\nm: 3\n");
    let keys: Vec<&String> = d.value.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["z", "a", "m"]);
}

#[test]
fn duplicate_keys_point_at_the_second_and_name_the_first() {
    let e = errors("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n");
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].rule.as_str(), e[0].line, e[0].col), ("yaml.duplicate-key", 4, 3));
    assert_eq!(e[0].pointer, "/b/c");
    assert!(e[0].message.contains("line 3, column 3"), "{}", e[0]);
    assert_eq!((e[1].line, e[1].col), (5, 1));
}

#[test]
fn only_plain_double_angle_is_a_merge_key() {
    assert_eq!(doc("\"<<\": 1\n").value, json!({"<<": 1}));
    let e = errors("<<: {a: 1}\nb: 2\n");
    assert_eq!((e[0].rule.as_str(), e[0].line, e[0].col), ("yaml.merge-key", 1, 1));
}

#[test]
fn expands_aliases_with_positions() {
    let d = doc("base: &b\n  cpu: 1\n  mem: 2\nweb: *b\nlist: [&x 5, *x]\n");
    assert_eq!(d.value["web"], json!({"cpu": 1, "mem": 2}));
    assert_eq!(d.value["list"], json!([5, 5]));
    assert_eq!(d.spans.value("/web"), Some(Position::new(4, 6)));
    // Nodes inside an alias point at where they were written.
    assert_eq!(d.spans.value("/web/mem"), Some(Position::new(3, 8)));
    assert_eq!(d.spans.key("/web/mem"), Some(Position::new(3, 3)));
}

#[test]
fn billion_laughs_fails_fast() {
    let mut text = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (prev, name) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"].windows(2).map(|w| (w[0], w[1])) {
        let refs = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{refs}]\n"));
    }
    let started = Instant::now();
    let e = errors(&text);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(e[0].rule, "yaml.alias-limit");
    assert!(e[0].message.contains("billion laughs"), "{}", e[0]);
}

#[test]
fn deep_nesting_fails_fast() {
    // saphyr's scanner caps flow nesting at 255 levels itself, before any event reaches us.
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = errors(&text);
    assert_eq!((e[0].rule.as_str(), e[0].line, e[0].col), ("yaml.syntax", 1, 256));
    assert!(e[0].message.contains("recursion limit"), "{}", e[0]);
    let text = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let e = errors(&text);
    assert_eq!((e[0].rule.as_str(), e[0].line, e[0].col), ("yaml.depth", 1, 65));
    let nested = (0..100).fold(String::new(), |acc, i| format!("{acc}{}k{i}:\n", "  ".repeat(i)));
    assert_eq!(errors(&nested)[0].rule, "yaml.depth");
}

#[test]
fn too_many_nodes_fail() {
    let limits = Limits { max_nodes: 100, ..Limits::default() };
    let text = format!("[{}]", vec!["1"; 200].join(","));
    let e = parse_with("t.yaml", text.as_bytes(), &limits).expect_err("too many");
    assert_eq!(e[0].rule, "yaml.node-limit");
}

#[test]
fn large_files_are_refused_before_parsing() {
    let text = format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
    let e = errors(&text);
    assert_eq!((e[0].rule.as_str(), e[0].line, e[0].col), ("yaml.too-large", 1, 1));
    assert!(e[0].message.contains("1048576"), "{}", e[0]);
}

#[test]
fn invalid_utf8_is_located() {
    let e = parse("t.yaml", b"a: 1\nb: \xff\n").expect_err("bad utf-8");
    assert_eq!((e[0].rule.as_str(), e[0].line, e[0].col), ("yaml.encoding", 2, 4));
}

#[test]
fn byte_order_mark_is_accepted() {
    assert_eq!(doc("\u{feff}a: 1\n").value, json!({"a": 1}));
}

#[rstest]
#[case::tab_indentation("a:\n\tb: 1\n", 2, 2)]
#[case::unclosed_flow_sequence("a: [1, 2\n", 2, 1)]
#[case::unclosed_quote("a: \"x\n", 1, 4)]
#[case::bad_indentation("a:\n  b: 1\n c: 2\n", 3, 2)]
#[case::unknown_alias("a: *nope\n", 1, 4)]
#[case::complex_key("? [a, b]\n: c\n", 1, 3)]
fn syntax_errors_have_positions(#[case] text: &str, #[case] line: usize, #[case] col: usize) {
    let e = errors(text);
    assert!(
        e.iter().any(|d| d.rule.starts_with("yaml.") && d.line == line && d.col == col),
        "{}",
        e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn pointer_escaping_round_trips() {
    let p = pointer_push(&pointer_push("", "a/b"), "c~d");
    assert_eq!(p, "/a~1b/c~0d");
    assert_eq!(pointer_tokens(&p), ["a/b", "c~d"]);
}

/// Real Kubernetes manifests nobody here wrote (see ../shared/corpus/README.md).
#[test]
fn parses_the_kubernetes_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/kubernetes");
    if !dir.is_dir() {
        println!("SKIP parses_the_kubernetes_corpus: {} is absent", dir.display());
        return;
    }
    let mut files = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("readable corpus") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 10, "corpus has {} files", files.len());
    let mut documents = 0;
    for path in &files {
        let bytes = std::fs::read(path).expect("readable");
        let docs =
            parse(&path.display().to_string(), &bytes).unwrap_or_else(|e| panic!("{}: {}", path.display(), e[0]));
        for d in &docs {
            assert!(d.value.get("kind").is_some(), "{}: doc {} has no kind", path.display(), d.index);
        }
        documents += docs.len();
    }
    assert!(documents >= 30, "only {documents} documents");

    let read = |rel: &str| std::fs::read(dir.join(rel)).expect("corpus file");
    let podinfo = parse("deployment.yaml", &read("podinfo/deployment.yaml")).unwrap();
    let d = &podinfo[0];
    assert_eq!(d.value["spec"]["minReadySeconds"], json!(5));
    assert_eq!(d.spans.value("/spec/minReadySeconds"), Some(Position::new(8, 20)));
    assert_eq!(d.value["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"], json!("true"));
    assert_eq!(d.spans.value("/spec/template/spec/containers/0/image"), Some(Position::new(28, 16)));
    assert_eq!(d.spans.key("/spec/template/spec/containers/0/name"), Some(Position::new(27, 9)));

    let web = parse("web.yml", &read("emojivoto/web.yml")).unwrap();
    assert_eq!(web[0].value["kind"], json!("ServiceAccount"));
    assert_eq!((web[1].index, web[1].start), (1, Position::new(6, 1)));
    assert_eq!(web[1].value["spec"]["replicas"], json!(1));
    assert_eq!(web[1].spans.value("/spec/replicas"), Some(Position::new(17, 13)));
    assert_eq!(web[1].value["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"], json!("8080"));
    assert_eq!(web[1].spans.value("/spec/template/spec/containers/0/env/0/value"), Some(Position::new(32, 18)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the bytes, parsing returns; it never panics or hangs.
    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse("fuzz.yaml", &bytes);
    }

    /// YAML-shaped noise reaches deeper into the parser than random bytes do.
    #[test]
    fn never_panics_on_yaml_like_text(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("a"), Just(": "), Just("- "), Just("\n"), Just("  "), Just("{"), Just("}"),
                Just("["), Just("]"), Just(", "), Just("&x "), Just("*x"), Just("? "), Just("!!str "),
                Just("'"), Just("\""), Just("|"), Just(">"), Just("#"), Just("---\n"), Just("..."),
                Just("1"), Just(".inf"), Just("<<"), Just("\t"), Just("%YAML 1.2\n"), Just("!t "),
            ],
            0..64,
        )
    ) {
        let text: String = parts.concat();
        let _ = parse("fuzz.yaml", text.as_bytes());
    }
}
