//! JSON Lines export of the ledger, and verification of such an export without a database.

use std::io::{BufRead, Write};

use futures_util::StreamExt;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::chain::{Anchor, LedgerEntry, Verifier, VerifyReport};
use super::{EntryStream, Result, db};

/// Bytes buffered before each write to the caller's writer.
const FLUSH_AT: usize = 256 * 1024;

/// Streams entries to `out` as JSON Lines; returns how many were written.
pub(super) async fn write_jsonl(mut rows: EntryStream<'_>, out: &mut (dyn Write + Send)) -> Result<u64> {
    let mut buf = Vec::with_capacity(FLUSH_AT + 4096);
    let mut written = 0;
    while let Some(row) = rows.next().await {
        let entry = row.map_err(db("reading the ledger to export it"))?;
        serde_json::to_writer(&mut buf, &entry).expect("a ledger entry is strings and integers");
        buf.push(b'\n');
        written += 1;
        if buf.len() >= FLUSH_AT {
            write_blocking(out, &buf)?;
            buf.clear();
        }
    }
    write_blocking(out, &buf)?;
    Ok(written)
}

/// `out` is the caller's synchronous writer (usually a file or stdout), so writing may block.
fn write_blocking(out: &mut (dyn Write + Send), buf: &[u8]) -> std::io::Result<()> {
    let write = |out: &mut (dyn Write + Send)| {
        out.write_all(buf)?;
        out.flush()
    };
    // On a multi-threaded runtime, let tokio move other tasks off this thread while it blocks. A
    // current-thread runtime cannot; there the caller is a CLI or a test with nothing else to run.
    let multi_thread = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread { tokio::task::block_in_place(|| write(out)) } else { write(out) }
}

/// Verifies a JSON Lines export (as written by [`super::Ledger::export`]) against status-branch anchors.
///
/// A line that is not a ledger entry makes the report bad (at the seq it should have had); only a
/// failure to read `reader` is an error. Blank lines are ignored.
pub fn verify_export(mut reader: impl BufRead, anchors: &[Anchor]) -> Result<VerifyReport> {
    let mut verifier = Verifier::new(anchors);
    let mut line = Vec::new();
    let mut number = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<LedgerEntry>(text) {
            Ok(entry) => {
                if !verifier.push(&entry) {
                    break;
                }
            }
            Err(e) => {
                verifier.push_unreadable(format!("line {number} is not a ledger entry ({e})"));
                break;
            }
        }
    }
    Ok(verifier.finish())
}
