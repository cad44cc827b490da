//! Pages of entries packed by the database into one text value, so that verifying a million
//! entries costs a thousand round trips of one value each instead of a million rows of thirteen.
//!
//! Each row is written as `seq,rollout,` (rollout empty when null) followed by every text column
//! as `<byte length>,<bytes>`, in [`ledger_columns!`](super::ledger_columns) order; rows follow one
//! another without separator. Lengths make the encoding exact for any text, so unpacking gives the
//! very strings the row-by-row path would read. A page that does not unpack (only possible after
//! tampering, e.g. text that is not UTF-8) is read again row by row, which names the bad row.

use super::chain::EntryFields;

/// Entries per page: about 0.3 MB of text for typical entries.
pub(super) const PAGE_ENTRIES: i64 = 1000;

/// One text column as `<byte length>,<bytes>`, as arguments of `concat` (SQLite ≥ 3.44, like the
/// bundled one, and PostgreSQL both have `concat`, `octet_length` and `string_agg`).
macro_rules! packed {
    ($column:literal) => {
        concat!(", octet_length(", $column, "), ',', ", $column)
    };
}

/// The page query up to `FROM`: row count, last seq and the packed rows; the caller appends
/// `FROM (SELECT … WHERE seq >= from ORDER BY seq LIMIT limit) AS page` with its engine's
/// bind parameters. `concat` writes a null rollout as nothing. The rows are not ordered inside the
/// aggregate (that costs a sort in the database); [`unpack`] puts them in seq order.
macro_rules! packed_page_select {
    () => {
        concat!(
            "SELECT count(*), max(seq), string_agg(concat(seq, ',', rollout, ','",
            $crate::ledger::page::packed!("at"),
            $crate::ledger::page::packed!("app"),
            $crate::ledger::page::packed!("desired_commit"),
            $crate::ledger::page::packed!("desired_digest"),
            $crate::ledger::page::packed!("from_state"),
            $crate::ledger::page::packed!("to_state"),
            $crate::ledger::page::packed!("action"),
            $crate::ledger::page::packed!("actor"),
            $crate::ledger::page::packed!("detail"),
            $crate::ledger::page::packed!("prev_hash"),
            $crate::ledger::page::packed!("hash"),
            "), '')"
        )
    };
}
pub(super) use {packed, packed_page_select};

/// A page as the database packed it.
#[derive(Debug)]
pub(super) struct PackedPage {
    /// Rows in the page (0 at the end of the ledger).
    pub rows: usize,
    /// The seq of its last row.
    pub last: Option<i64>,
    /// The packed rows; `None` when the text did not even decode as UTF-8.
    pub text: Option<String>,
}

/// The entries of a packed page of `rows` rows in seq order, or `None` if the text is not such a page.
pub(super) fn unpack(text: &str, rows: usize) -> Option<Vec<EntryFields<'_>>> {
    let mut cursor = Cursor { text, at: 0 };
    let mut entries = Vec::with_capacity(rows);
    while cursor.at < text.len() {
        entries.push(EntryFields {
            seq: cursor.integer()?,
            rollout: cursor.optional_integer()?,
            at: cursor.text()?,
            app: cursor.text()?,
            desired_commit: cursor.text()?,
            desired_digest: cursor.text()?,
            from_state: cursor.text()?,
            to_state: cursor.text()?,
            action: cursor.text()?,
            actor: cursor.text()?,
            detail: cursor.text()?,
            prev_hash: cursor.text()?,
            hash: cursor.text()?,
        });
    }
    if entries.len() != rows {
        return None;
    }
    // Seqs are unique (the primary key), so sorting gives exactly `ORDER BY seq`.
    if !entries.is_sorted_by_key(|e| e.seq) {
        entries.sort_unstable_by_key(|e| e.seq);
    }
    Some(entries)
}

struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    /// The text up to the next `,`, which is consumed.
    fn field(&mut self) -> Option<&'a str> {
        let rest = self.text.get(self.at..)?;
        let end = rest.find(',')?;
        self.at += end + 1;
        Some(&rest[..end])
    }

    fn integer(&mut self) -> Option<i64> {
        self.field()?.parse().ok()
    }

    fn optional_integer(&mut self) -> Option<Option<i64>> {
        match self.field()? {
            "" => Some(None),
            digits => digits.parse().ok().map(Some),
        }
    }

    fn text(&mut self) -> Option<&'a str> {
        let len: usize = self.field()?.parse().ok()?;
        let value = self.text.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(value)
    }
}
