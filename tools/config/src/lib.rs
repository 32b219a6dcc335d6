//! `llm-config`: the LLM gateway's Envoy configuration from one concise gateway file.
//!
//! A build-time tool, not a filter: the workspace's panic-free lints hold, except slicing strings
//! at positions `find` returned.
#![allow(clippy::indexing_slicing)]

pub mod generate;
pub mod packaging;
pub mod spec;
pub mod tracing;

pub use generate::{generate, Output, Packaging};

use sha2::{Digest, Sha256};

/// The SHA-256 digest llm_auth stores for an API key (lowercase hex). Surrounding whitespace and
/// line breaks are not part of a key: `echo` and editors add them.
pub fn hash_key(key: &str) -> Option<String> {
    let key = key.trim();
    (!key.is_empty()).then(|| hex::encode(Sha256::digest(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_like_sha256sum() {
        // printf '%s' sk-demo-team-a | sha256sum
        assert_eq!(
            super::hash_key("sk-demo-team-a\n").as_deref(),
            Some("50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e")
        );
        assert_eq!(super::hash_key(" \n"), None);
    }
}
