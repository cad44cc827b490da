//! "Did you mean …?" suggestions for misspelled keys, kinds and names.

/// The candidate closest to `word`, if it is close enough to be a plausible typo.
pub(crate) fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_lowercase();
    // Roughly one typo per three characters, at least one: `replcas` → `replicas`, but `image`
    // never suggests `name`.
    let budget = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions, which are the
/// most common typing slip).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Long inputs are never keys; bail out before the quadratic table gets large.
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::missing_letter("replcas", Some("replicas"))]
    #[case::transposed("repilcas", Some("replicas"))]
    #[case::case_only("dependson", Some("dependsOn"))]
    #[case::snake_case("depends_on", Some("dependsOn"))]
    #[case::too_far("colour", None)]
    #[case::short_word("imge", Some("image"))]
    fn suggests_close_keys(#[case] word: &str, #[case] want: Option<&str>) {
        let keys = ["image", "replicas", "dependsOn", "placement", "strategy"];
        assert_eq!(closest(word, keys), want);
    }
}
