//! RFC 8785 (JCS) canonical JSON, used for app digests and the audit ledger's hash chain: the one
//! canonical-JSON writer of the workspace, plus a one-pass check that a text already is canonical.
//!
//! Keys are sorted by their UTF-16 code units, strings use the minimal JSON escapes, and numbers
//! are written as ECMAScript would. Only integers that fit an `i64`/`u64` are accepted: Keelson never
//! hashes floats into the ledger, so refusing them there avoids a whole class of cross-language
//! disagreements. App digests must cover gate thresholds such as `min: 99.5`, so
//! [`to_canonical_string_with_floats`] also writes finite floats the way RFC 8785 §3.2.2.3 does
//! (ECMAScript's `Number.prototype.toString`).

use serde_json::Value;

use crate::{Error, Result};

/// Writes `value` as RFC 8785 canonical JSON.
pub fn to_canonical_string(value: &Value) -> Result<String> {
    let mut out = String::with_capacity(256);
    write_value(value, &mut out, false)?;
    Ok(out)
}

/// Writes `value` as RFC 8785 canonical JSON, floats included (used for app digests).
pub fn to_canonical_string_with_floats(value: &Value) -> Result<String> {
    let mut out = String::with_capacity(256);
    write_value(value, &mut out, true)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut String, floats: bool) -> Result<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let (true, Some(f)) = (floats, n.as_f64()) {
                write_f64(f, out)?;
            } else {
                return Err(Error::Canonical(format!("non-integer number {n} is not allowed")));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out, floats)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(&map[key], out, floats)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// ECMAScript `Number::toString(x)` for finite `x`, as RFC 8785 requires.
fn write_f64(x: f64, out: &mut String) -> Result<()> {
    if !x.is_finite() {
        return Err(Error::Canonical(format!("non-finite number {x}")));
    }
    if x == 0.0 {
        out.push('0');
        return Ok(());
    }
    if x < 0.0 {
        out.push('-');
    }
    // `{:e}` yields the shortest digits that round-trip, which is what ECMAScript uses too.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i64 = exp.parse().map_err(|_| Error::Canonical(format!("cannot format {x}")))?;
    let k = digits.len() as i64;
    let n = exp + 1;
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    Ok(())
}

/// Appends `s` as an RFC 8785 string: the short escapes, `\u00xx` for other control characters,
/// everything else as is.
pub fn write_string(s: &str, out: &mut String) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // Only ASCII bytes are split on, so both slices fall on character boundaries.
        out.push_str(&s[plain..i]);
        if escape.is_empty() {
            const DIGITS: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        } else {
            out.push_str(escape);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Whether `text` is exactly what `to_canonical_string` writes for the JSON it holds, decided in
/// one pass without building a `Value`.
///
/// Conservative: it may answer false for canonical text (an escaped key, an integer of 19 or more
/// digits, deep nesting), and then the caller asks the generic canonicalization; it never answers
/// true for text the generic path would call non-canonical or not JSON.
pub fn is_canonical(text: &str) -> bool {
    let mut check = CanonicalCheck { s: text.as_bytes(), i: 0 };
    check.value(0) && check.i == text.len()
}

/// Deeper nesting goes to the generic path (serde_json's own limit is 128).
const CANONICAL_CHECK_DEPTH: usize = 64;

struct CanonicalCheck<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> CanonicalCheck<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn value(&mut self, depth: usize) -> bool {
        match self.peek() {
            Some(b'{') => depth < CANONICAL_CHECK_DEPTH && self.object(depth + 1),
            Some(b'[') => depth < CANONICAL_CHECK_DEPTH && self.array(depth + 1),
            Some(b'"') => self.string().is_some(),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            _ => false,
        }
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.s[self.i..].starts_with(word);
        self.i += word.len();
        found
    }

    /// `0` or `-?[1-9][0-9]*` of at most 18 digits (so it fits an `i64`); a fraction or exponent
    /// after it is left for the caller, which then finds no `,` `]` `}` or end and fails.
    fn integer(&mut self) -> bool {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let start = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        match &self.s[start..self.i] {
            [] => false,
            [b'0'] => !negative,
            [b'0', ..] => false,
            digits => digits.len() <= 18,
        }
    }

    /// A string with only the escapes RFC 8785 writes; returns its raw (still escaped) content.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.i += 1;
        let start = self.i;
        loop {
            match self.peek()? {
                b'"' => {
                    let raw = &self.s[start..self.i];
                    self.i += 1;
                    return Some(raw);
                }
                b'\\' => match self.s.get(self.i + 1)? {
                    b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
                    b'u' => {
                        let code = match self.s.get(self.i + 2..self.i + 6)? {
                            [b'0', b'0', high @ (b'0' | b'1'), low @ (b'0'..=b'9' | b'a'..=b'f')] => {
                                let low = if low.is_ascii_digit() { low - b'0' } else { low - b'a' + 10 };
                                (high - b'0') * 16 + low
                            }
                            _ => return None,
                        };
                        // These five have short escapes, which the canonical form uses instead.
                        if matches!(code, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                            return None;
                        }
                        self.i += 6;
                    }
                    _ => return None,
                },
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    fn array(&mut self, depth: usize) -> bool {
        self.i += 1;
        if self.peek() == Some(b']') {
            self.i += 1;
            return true;
        }
        loop {
            if !self.value(depth) {
                return false;
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// Keys must be unescaped and strictly ascending in UTF-16 order (which also rules out duplicates).
    fn object(&mut self, depth: usize) -> bool {
        self.i += 1;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return true;
        }
        let mut previous: Option<&[u8]> = None;
        loop {
            if self.peek() != Some(b'"') {
                return false;
            }
            let Some(key) = self.string() else { return false };
            if key.contains(&b'\\') || previous.is_some_and(|p| !utf16_less(p, key)) {
                return false;
            }
            previous = Some(key);
            if self.peek() != Some(b':') {
                return false;
            }
            self.i += 1;
            if !self.value(depth) {
                return false;
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return true;
                }
                _ => return false,
            }
        }
    }
}

/// `a < b` comparing UTF-16 code units (for ASCII, and for most text, plain byte order agrees).
fn utf16_less(a: &[u8], b: &[u8]) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a < b;
    }
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(a), Ok(b)) => a.encode_utf16().lt(b.encode_utf16()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_keys_by_utf16_and_escapes_minimally() {
        let v = json!({"b": 1, "a": "x\ny\u{1}", "\u{e9}": null, "\u{1F600}": true, "Z": [1, -2]});
        // U+00E9 is one UTF-16 unit (0x00E9), U+1F600 starts with 0xD83D, so U+00E9 comes first.
        assert_eq!(
            to_canonical_string(&v).unwrap(),
            "{\"Z\":[1,-2],\"a\":\"x\\ny\\u0001\",\"b\":1,\"\u{e9}\":null,\"\u{1F600}\":true}"
        );
    }

    #[test]
    fn utf16_order_differs_from_code_point_order() {
        // U+FF61 (one UTF-16 unit 0xFF61) sorts after U+1F600 (first unit 0xD83D) in JCS,
        // although its code point is smaller.
        let v = json!({"\u{FF61}": 1, "\u{1F600}": 2});
        assert_eq!(to_canonical_string(&v).unwrap(), "{\"\u{1F600}\":2,\"\u{FF61}\":1}");
    }

    #[test]
    fn refuses_floats() {
        assert!(to_canonical_string(&json!({"x": 1.5})).is_err());
    }

    #[test]
    fn writes_floats_like_ecmascript() {
        // Expected strings are what `String(x)` prints in a JavaScript engine (RFC 8785 appendix B).
        let cases = [
            (99.0, "99"),
            (99.5, "99.5"),
            (0.08, "0.08"),
            (-1.25, "-1.25"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123456789.125, "123456789.125"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (x, want) in cases {
            assert_eq!(to_canonical_string_with_floats(&json!(x)).unwrap(), want, "{x}");
        }
        assert_eq!(
            to_canonical_string_with_floats(&json!({"b": [1.0, 2], "a": -0.0})).unwrap(),
            "{\"a\":0,\"b\":[1,2]}"
        );
    }
}
