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
use std::path::Path;

/// Files an `extends` chain may name, the first included: deeper is a cycle or a mistake.
const MAX_EXTENDS: usize = 8;

/// A gateway file's text with its `extends` chain applied, as JSON (which the generator reads like
/// YAML). `extends: base.gateway.yaml` (relative to the file) reads the base first; this file's
/// keys override it: maps merge key by key, other values (lists included) replace, and `null`
/// removes the key. Errors name the file.
pub fn read_gateway_file(path: &Path) -> Result<String, String> {
    let mut chain = vec![path.to_path_buf()];
    let mut layers = Vec::new();
    loop {
        let current = chain.last().cloned().unwrap_or_default();
        let shown = current.display().to_string();
        let text = std::fs::read_to_string(&current).map_err(|err| format!("{shown}: {err}"))?;
        let mut value = spec::yaml_to_json(&text).map_err(|err| format!("{shown}: {err}"))?;
        let base = match value
            .as_object_mut()
            .and_then(|o| o.shift_remove("extends"))
        {
            None => None,
            Some(serde_json::Value::String(base)) => Some(base),
            Some(_) => return Err(format!("{shown}: `extends` must name a file")),
        };
        layers.push(value);
        let Some(base) = base else { break };
        if chain.len() >= MAX_EXTENDS {
            return Err(format!(
                "{shown}: `extends` goes more than {MAX_EXTENDS} files deep (a cycle?)"
            ));
        }
        let dir = current.parent().unwrap_or(Path::new("."));
        chain.push(dir.join(base));
    }
    let mut merged = serde_json::Value::Null;
    for layer in layers.into_iter().rev() {
        merge(&mut merged, layer);
    }
    Ok(merged.to_string())
}

fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    use serde_json::Value;
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                if value.is_null() {
                    base.shift_remove(&key);
                } else if let Some(existing) = base.get_mut(&key) {
                    merge(existing, value);
                } else {
                    base.insert(key, value);
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// The SHA-256 digest llm_auth stores for an API key (lowercase hex). Surrounding whitespace and
/// line breaks are not part of a key: `echo` and editors add them.
pub fn hash_key(key: &str) -> Option<String> {
    let key = key.trim();
    (!key.is_empty()).then(|| hex::encode(Sha256::digest(key.as_bytes())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn extends_merges_maps_and_replaces_the_rest() {
        let dir = tempfile_dir();
        let base = dir.join("base.gateway.yaml");
        std::fs::write(
            &base,
            "envoy: { listener: 127.0.0.1:10000, admin: 127.0.0.1:9901 }\nmodels: [a, b]\nguard: { x: 1 }\n",
        )
        .unwrap();
        let top = dir.join("top.gateway.yaml");
        std::fs::write(
            &top,
            "extends: base.gateway.yaml\nenvoy: { admin: 127.0.0.1:9902 }\nmodels: [c]\nguard: null\n",
        )
        .unwrap();
        let merged: serde_json::Value =
            serde_json::from_str(&super::read_gateway_file(&top).unwrap()).unwrap();
        assert_eq!(
            merged,
            serde_json::json!({"envoy": {"listener": "127.0.0.1:10000", "admin": "127.0.0.1:9902"}, "models": ["c"]})
        );
        std::fs::write(&base, "extends: top.gateway.yaml\n").unwrap();
        let err = super::read_gateway_file(&top).unwrap_err();
        assert!(err.contains("more than 8 files deep"), "{err}");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("llm-config-extends-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

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
