//! Content digests of apps: what changed, independent of formatting.
//!
//! `digest = "sha256:" + hex(sha256(JCS({"app": <app as JSON>, "files": [[path, blob], …]})))`,
//! with `files` sorted and deduplicated. Hashing the parsed value rather than the bytes means
//! comments, key order, quoting and flow vs block style never change a digest; listing blob ids
//! means a changed manifest file or Rego module does, without reading it.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical_string_with_floats;
use crate::{RepoFile, Result};

/// The digest of an app document and the repository files it depends on.
pub fn app_digest(app: &Value, inputs: &[RepoFile]) -> Result<String> {
    let mut files: Vec<(&str, &str)> = inputs.iter().map(|f| (f.path.as_str(), f.blob_id.as_str())).collect();
    files.sort_unstable();
    files.dedup();
    let canonical = to_canonical_string_with_floats(&json!({"app": app, "files": files}))?;
    let hash = Sha256::digest(canonical.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
