//! Memory bounds for Rego evaluation without a custom allocator.
//!
//! regorus bounds time cooperatively (its timer is checked between steps), but one builtin call
//! can allocate without bound before the next check: `numbers.range(1, 1e9)`, a `sprintf` width
//! of a billion, or a chain of `concat`/`hex.encode` calls that doubles a string each step. Every
//! builtin whose result can be larger than its arguments is shadowed here by an extension (regorus
//! looks extensions up before builtins) that first checks how large the result would be, refuses
//! past [`MAX_BYTES`] / [`MAX_ELEMENTS`], and otherwise delegates to the real builtin through a
//! one-rule engine, so semantics are exactly regorus's. Builtins whose result is never larger than
//! their arguments need no guard: their inputs already passed one.

use regorus::{Engine, Value};

/// Largest string (or serialized value) one builtin call may produce.
pub(crate) const MAX_BYTES: usize = 4 << 20;
/// Largest array one builtin call may produce.
pub(crate) const MAX_ELEMENTS: usize = 100_000;
/// Largest width or precision in a `sprintf` format.
pub(crate) const MAX_WIDTH: usize = 10_000;

/// How the size of a builtin's result is bounded before it is computed.
#[derive(Debug, Clone, Copy)]
enum Bound {
    /// `numbers.range(a, b)`: |b − a| + 1 elements.
    Range,
    /// `numbers.range_step(a, b, s)`: |b − a| / |s| + 1 elements.
    RangeStep,
    /// `array.concat(a, b)`: the two lengths.
    ArrayConcat,
    /// `concat(sep, items)`: the items plus a separator between each.
    Concat,
    /// `sprintf(format, args)`: widths and precisions in the format, plus the arguments.
    Sprintf,
    /// `replace(s, old, new)`: every occurrence of `old` (every gap when empty) becomes `new`.
    Replace,
    /// `strings.replace_n(patterns, s)`: at worst every byte of `s` becomes the longest replacement.
    ReplaceN,
    /// At most `factor` × the size of the arguments plus `per_arg` × their sizes (indentation).
    Proportional(usize),
}

/// Every builtin that can produce more than it is given, with its arity and bound.
const GUARDED: &[(&str, u8, Bound)] = &[
    ("numbers.range", 2, Bound::Range),
    ("numbers.range_step", 3, Bound::RangeStep),
    ("array.concat", 2, Bound::ArrayConcat),
    ("concat", 2, Bound::Concat),
    ("sprintf", 2, Bound::Sprintf),
    ("replace", 3, Bound::Replace),
    ("strings.replace_n", 2, Bound::ReplaceN),
    ("hex.encode", 1, Bound::Proportional(2)),
    ("base64.encode", 1, Bound::Proportional(2)),
    ("base64url.encode", 1, Bound::Proportional(2)),
    ("base64url.encode_no_pad", 1, Bound::Proportional(2)),
    ("urlquery.encode", 1, Bound::Proportional(3)),
    ("urlquery.encode_object", 1, Bound::Proportional(3)),
    ("json.marshal", 1, Bound::Proportional(6)),
    ("yaml.marshal", 1, Bound::Proportional(6)),
    // Indentation repeats per line: bounded as if every byte started a line.
    ("json.marshal_with_options", 2, Bound::Proportional(0)),
];

/// Shadows every guarded builtin in `engine` with its size-checked form.
pub(crate) fn install(engine: &mut Engine) -> anyhow::Result<()> {
    for &(name, arity, bound) in GUARDED {
        let mut delegate = Engine::new();
        let args: Vec<String> = (0..arity).map(|i| format!("input[{i}]")).collect();
        delegate
            .add_policy("guard.rego".into(), format!("package keelson_guard\nr := {name}({})\n", args.join(", ")))?;
        // Builtins of regorus features this build leaves out stay unknown functions.
        delegate.set_input(Value::from(vec![Value::Null; usize::from(arity)]));
        if delegate
            .eval_rule("data.keelson_guard.r".into())
            .is_err_and(|e| format!("{e:#}").contains("could not find function"))
        {
            continue;
        }
        let extension = move |args: Vec<Value>| -> anyhow::Result<Value> {
            check(name, bound, &args)?;
            delegate.set_input(Value::from(args));
            delegate.eval_rule("data.keelson_guard.r".into())
        };
        engine.add_extension(name.into(), arity, Box::new(extension))?;
    }
    Ok(())
}

/// True when `message` is one of the refusals of this module.
pub(crate) fn is_limit(message: &str) -> bool {
    message.contains(LIMIT_MARK)
}

const LIMIT_MARK: &str = "over Keelson's per-call limit";

fn refuse(name: &str, what: String, limit: usize, unit: &str) -> anyhow::Error {
    anyhow::anyhow!("{name} would produce {what}, {LIMIT_MARK} of {limit} {unit}")
}

fn check(name: &str, bound: Bound, args: &[Value]) -> anyhow::Result<()> {
    let number = |i: usize| args.get(i).and_then(|v| v.as_f64().ok());
    let text = |i: usize| args.get(i).and_then(|v| v.as_string().ok()).map(|s| s.len()).unwrap_or(0);
    let elements = |count: f64| {
        if count.is_finite() && count <= MAX_ELEMENTS as f64 {
            Ok(())
        } else {
            Err(refuse(name, format!("{count} elements"), MAX_ELEMENTS, "elements"))
        }
    };
    let bytes = |count: usize| {
        if count <= MAX_BYTES { Ok(()) } else { Err(refuse(name, format!("{count} bytes"), MAX_BYTES, "bytes")) }
    };
    match bound {
        Bound::Range => match (number(0), number(1)) {
            (Some(a), Some(b)) => elements((b - a).abs() + 1.0),
            _ => Ok(()),
        },
        Bound::RangeStep => match (number(0), number(1), number(2)) {
            (Some(a), Some(b), Some(s)) if s != 0.0 => elements((b - a).abs() / s.abs() + 1.0),
            _ => Ok(()),
        },
        Bound::ArrayConcat => {
            let len = |i: usize| args.get(i).and_then(|v| v.as_array().ok()).map_or(0, |a| a.len());
            elements((len(0) + len(1)) as f64)
        }
        Bound::Concat => {
            let items: usize = match args.get(1) {
                Some(Value::Array(a)) => a.iter().map(serialized_len).sum::<usize>() + a.len() * text(0),
                Some(Value::Set(s)) => s.iter().map(serialized_len).sum::<usize>() + s.len() * text(0),
                _ => 0,
            };
            bytes(items)
        }
        Bound::Sprintf => {
            let format = args.first().and_then(|v| v.as_string().ok()).map(|s| s.to_string()).unwrap_or_default();
            if let Some(width) = widths(&format).into_iter().max()
                && width > MAX_WIDTH
            {
                return Err(refuse(name, format!("a field {width} characters wide"), MAX_WIDTH, "characters"));
            }
            let widths: usize = widths(&format).iter().sum();
            bytes(format.len() + widths + args.get(1).map_or(0, serialized_len))
        }
        Bound::Replace => {
            let s = args.first().and_then(|v| v.as_string().ok()).map(|s| s.to_string()).unwrap_or_default();
            let old = args.get(1).and_then(|v| v.as_string().ok()).map(|s| s.to_string()).unwrap_or_default();
            let new = text(2);
            let count = if old.is_empty() { s.chars().count() + 1 } else { s.matches(old.as_str()).count() };
            bytes(s.len().saturating_add(count.saturating_mul(new)))
        }
        Bound::ReplaceN => {
            let longest = match args.first() {
                Some(Value::Object(o)) => o.values().filter_map(|v| v.as_string().ok()).map(|s| s.len()).max(),
                _ => None,
            };
            let s = text(1);
            bytes(s.saturating_add((s + 1).saturating_mul(longest.unwrap_or(0))))
        }
        Bound::Proportional(factor) => {
            let size: usize = args.iter().map(serialized_len).sum();
            let factor = if factor == 0 {
                // json.marshal_with_options: prefix and indent may repeat on every line.
                let options = args.get(1).map_or(0, serialized_len);
                6 + options
            } else {
                factor
            };
            bytes(size.saturating_mul(factor))
        }
    }
}

/// The widths and precisions written in a `sprintf` format (`%08d` → 8, `%.3f` → 3).
fn widths(format: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut digits = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() {
                digits.push(d);
            } else if d == '.' || d == '-' || d == '+' || d == ' ' || d == '#' {
                if !digits.is_empty() {
                    out.push(digits.parse().unwrap_or(usize::MAX));
                    digits.clear();
                }
            } else {
                break;
            }
            chars.next();
        }
        if !digits.is_empty() {
            out.push(digits.parse().unwrap_or(usize::MAX));
        }
        chars.next();
    }
    out
}

/// Size of a value as JSON text, counted without building the text (and capped, so a huge value
/// is not walked to its end).
fn serialized_len(v: &Value) -> usize {
    fn walk(v: &Value, budget: &mut usize) {
        if *budget == 0 {
            return;
        }
        let here = match v {
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                for item in a.iter() {
                    walk(item, budget);
                }
                a.len() + 2
            }
            Value::Set(s) => {
                for item in s.iter() {
                    walk(item, budget);
                }
                s.len() + 2
            }
            Value::Object(o) => {
                for (k, item) in o.iter() {
                    walk(k, budget);
                    walk(item, budget);
                }
                o.len() * 2 + 2
            }
            _ => 8,
        };
        *budget = budget.saturating_sub(here);
    }
    let cap = MAX_BYTES * 8;
    let mut budget = cap;
    walk(v, &mut budget);
    cap - budget
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(rule: &str) -> Engine {
        let mut e = Engine::new();
        install(&mut e).unwrap();
        e.add_policy("t.rego".into(), format!("package t\nimport rego.v1\n{rule}\n")).unwrap();
        e
    }

    #[rstest::rstest]
    #[case::range("r := count(numbers.range(1, 100000000))")]
    #[case::range_step("r := count(numbers.range_step(0, 1000000000, 2))")]
    #[case::sprintf_width("r := count(sprintf(\"%0999999999d\", [1]))")]
    #[case::replace_gaps(
        "r := count(replace(concat(\"\", [\"x\" | some _ in numbers.range(1, 3000)]), \"\", concat(\"\", [\"y\" | some _ in numbers.range(1, 3000)])))"
    )]
    #[case::doubling(
        "r := count(x) if { a := concat(\"\", [\"x\" | some _ in numbers.range(1, 90000)]); b := concat(\"\", [a, a]); c := concat(\"\", [b, b]); d := concat(\"\", [c, c]); e := concat(\"\", [d, d]); f := concat(\"\", [e, e]); x := concat(\"\", [f, f]) }"
    )]
    #[case::marshal_chain(
        "r := count(x) if { a := concat(\"\", [\"\\\"\" | some _ in numbers.range(1, 90000)]); x := json.marshal(json.marshal(json.marshal(json.marshal(json.marshal(a))))) }"
    )]
    fn amplifying_calls_are_refused_before_they_allocate(#[case] rule: &str) {
        let err = engine(rule).eval_rule("data.t.r".into()).expect_err("must be refused");
        assert!(is_limit(&format!("{err:#}")), "{err:#}");
    }

    #[rstest::rstest]
    #[case::range("r := count(numbers.range(1, 10))", 10)]
    #[case::sprintf("r := count(sprintf(\"%05d-%s\", [42, \"ab\"]))", 8)]
    #[case::concat("r := count(concat(\", \", [\"a\", \"b\"]))", 4)]
    #[case::replace("r := count(replace(\"aXbX\", \"X\", \"--\"))", 6)]
    #[case::marshal("r := count(json.marshal(\"ab\"))", 4)]
    fn ordinary_calls_behave_as_the_builtins(#[case] rule: &str, #[case] expected: u64) {
        let value = engine(rule).eval_rule("data.t.r".into()).unwrap();
        assert_eq!(value, Value::from(expected));
    }
}
