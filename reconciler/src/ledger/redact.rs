//! Database strings without their credentials, for every place one could be printed (errors,
//! logs, the API, `--help`). PostgreSQL takes a password in several forms (libpq): the URL's
//! user-info (`postgres://user:pw@host/db`), query parameters (`?password=…`, `sslpassword=…`,
//! `passfile=…`) and `key=value` connection strings (`host=db password=…`); all are masked.

/// What stands in for a removed credential.
const MASK: &str = "***";

/// The database string (or any text holding one, such as an error message) with every
/// credential replaced by `***`.
pub fn redact(database: &str) -> String {
    // Each URL in the text (a run of characters no URL holds unquoted) loses its user-info password.
    let delimiter = |c: char| c.is_whitespace() || matches!(c, '"' | '`' | '<' | '>');
    let mut out = String::with_capacity(database.len());
    let mut rest = database;
    while !rest.is_empty() {
        let start = rest.find(|c: char| !delimiter(c)).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(delimiter).unwrap_or(rest.len());
        out.push_str(&redact_url(&rest[..end]));
        rest = &rest[end..];
    }
    for (start, end) in secret_values(&out).into_iter().rev() {
        out.replace_range(start..end, MASK);
    }
    out
}

/// One URL without its user-info password.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // User-info ends at the last `@` before the query: a password may hold `/` or `@`.
    let query = rest.find('?').unwrap_or(rest.len());
    match rest[..query].rfind('@').and_then(|at| Some((at, rest[..at].split_once(':')?))) {
        Some((at, (user, _))) => format!("{scheme}://{user}:{MASK}@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// `text` (an error from the database driver, say) with every credential of `database` masked:
/// drivers may quote the string they were given, or parts of it.
pub fn redact_text(text: &str, database: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Some((_, rest)) = database.split_once("://") {
        let query = rest.find('?').unwrap_or(rest.len());
        if let Some(at) = rest[..query].rfind('@')
            && let Some((_, password)) = rest[..at].split_once(':')
        {
            secrets.push(password.to_owned());
        }
    }
    secrets.extend(secret_values(database).into_iter().map(|(s, e)| database[s..e].to_owned()));
    let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
    secrets.extend(decoded);
    // Longest first, so a secret that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = redact(text);
    for secret in secrets.iter().filter(|s| s.len() >= 2) {
        out = out.replace(secret.as_str(), MASK);
    }
    out
}

/// Byte ranges of the values of credential parameters (`password=…`, `passfile=…`, …) in
/// `text`, whether in a URL query (`&`-separated) or a connection string (space-separated).
fn secret_values(text: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(eq) = text[i..].find('=').map(|p| p + i) {
        let key_start = text[..eq].rfind(['?', '&', ';', ' ', '\t', '\n']).map_or(0, |p| p + 1);
        let key = percent_decode(&text[key_start..eq]).to_ascii_lowercase();
        let mut end = eq + 1;
        // A quoted conninfo value (`password='a b'`) runs to its closing quote.
        if bytes.get(end) == Some(&b'\'') {
            end += 1;
            while end < bytes.len() && bytes[end] != b'\'' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            end = (end + 1).min(bytes.len());
        } else {
            while end < bytes.len() && !matches!(bytes[end], b'&' | b';' | b' ' | b'\t' | b'\n' | b'#') {
                end += 1;
            }
        }
        if is_secret_key(&key) && end > eq + 1 {
            ranges.push((eq + 1, end));
        }
        i = end.max(eq + 1);
    }
    ranges
}

fn is_secret_key(key: &str) -> bool {
    key == "passfile" || ["password", "secret", "token"].iter().any(|k| key.contains(k))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[rstest::rstest]
    #[case::userinfo(
        "postgres://keelson:hunter2@db:5432/k?sslmode=require",
        "postgres://keelson:***@db:5432/k?sslmode=require"
    )]
    #[case::userinfo_with_slash_and_at("postgres://u:hu/nt@er2@db/k", "postgres://u:***@db/k")]
    #[case::no_password("postgres://keelson@db/k", "postgres://keelson@db/k")]
    #[case::query_password(
        "postgres://keelson@db/k?password=hunter2&sslmode=require",
        "postgres://keelson@db/k?password=***&sslmode=require"
    )]
    #[case::query_password_upper(
        "postgresql://db/k?sslmode=disable&PASSWORD=hunter2",
        "postgresql://db/k?sslmode=disable&PASSWORD=***"
    )]
    #[case::encoded_key("postgres://db/k?pass%77ord=hunter2", "postgres://db/k?pass%77ord=***")]
    #[case::passfile("postgres://db/k?passfile=/home/k/.pgpass", "postgres://db/k?passfile=***")]
    #[case::sslpassword(
        "postgres://db/k?sslpassword=hunter2&sslkey=/k.key",
        "postgres://db/k?sslpassword=***&sslkey=/k.key"
    )]
    #[case::both("postgres://u:hunter2@db/k?password=hunter3", "postgres://u:***@db/k?password=***")]
    #[case::conninfo("host=db password=hunter2 dbname=k", "host=db password=*** dbname=k")]
    #[case::conninfo_quoted("host=db password='hun ter2' dbname=k", "host=db password=*** dbname=k")]
    #[case::sqlite_path("/var/lib/keelson/keelson.db", "/var/lib/keelson/keelson.db")]
    #[case::inside_a_message(
        "got \"mysql://u:hunter2@db/k\", expected postgres://",
        "got \"mysql://u:***@db/k\", expected postgres://"
    )]
    fn every_credential_form_is_masked(#[case] given: &str, #[case] shown: &str) {
        assert_eq!(redact(given), shown);
        assert!(!redact(given).contains("hunter"), "{given}");
    }

    #[test]
    fn driver_text_quoting_the_password_is_masked_too() {
        let db = "postgres://u:hun%74er2@db/k?password=s3cr3t-pw";
        let text = "error with configuration: bad password hunter2 near `s3cr3t-pw`";
        let out = redact_text(text, db);
        assert!(!out.contains("hunter2") && !out.contains("s3cr3t-pw"), "{out}");
    }
}
