//! Typed identifiers shared by every crate above this one: an app's name, a content digest, a commit.
//!
//! Each is a string on the wire (`#[serde(transparent)]`), so ledgers and APIs written before these
//! types existed read back unchanged; in code they keep an app name from being passed where a
//! digest is wanted.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as it is; validation happens where the value enters (schema, git).
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The text of the id.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

string_id!(
    /// `metadata.name` of an App: a DNS-1123 label, equal to its directory under `apps/`.
    AppName
);
string_id!(
    /// `sha256:<hex>` content digest of an app (see [`crate::digest`]).
    Digest
);
string_id!(
    /// A git commit id in full hex.
    CommitId
);

impl Digest {
    /// The first 12 hex characters, for messages.
    pub fn short(&self) -> &str {
        let hex = self.0.strip_prefix("sha256:").unwrap_or(&self.0);
        &hex[..hex.len().min(12)]
    }
}

impl CommitId {
    /// The first 12 characters, for messages.
    pub fn short(&self) -> &str {
        &self.0[..self.0.len().min(12)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_strings_on_the_wire() {
        let name = AppName::new("web");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"web\"");
        let back: AppName = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(back, name);
        assert_eq!(name, "web");
        assert_eq!(&*name, "web");
    }

    #[test]
    fn short_forms_cut_prefix_and_length() {
        assert_eq!(Digest::new("sha256:0123456789abcdef").short(), "0123456789ab");
        assert_eq!(Digest::new("abc").short(), "abc");
        assert_eq!(CommitId::new("0123456789abcdef0123").short(), "0123456789ab");
    }
}
