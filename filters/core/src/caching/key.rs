//! The exact-tier cache key: a digest of the request as it will be served. Two requests share a key
//! when a provider would be asked the same thing: same API, route, model and scope, and equal bodies
//! once the fields that only change how the answer is delivered (`stream`, `stream_options`, `user`,
//! `metadata`, ...) are left out. Bodies are compared in a canonical JSON form (keys sorted, numbers in
//! one spelling), so `{"temperature":1.0,"messages":...}` and `{"messages":...,"temperature":1}`
//! collide.

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

/// The APIs whose answers the cache stores and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheApi {
    /// OpenAI `/v1/chat/completions`.
    ChatCompletions,
    /// Anthropic `/v1/messages`.
    Messages,
}

impl CacheApi {
    pub fn from_path(path: &str) -> Option<Self> {
        match path.split(['?', '#']).next().unwrap_or(path) {
            "/v1/chat/completions" => Some(CacheApi::ChatCompletions),
            "/v1/messages" => Some(CacheApi::Messages),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            CacheApi::ChatCompletions => "chat",
            CacheApi::Messages => "messages",
        }
    }
}

/// Top-level fields that change how an answer is delivered or billed, not what it says.
const TRANSPORT_FIELDS: [&str; 6] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "service_tier",
];

/// What identifies a request to the cache besides its body.
#[derive(Debug, Clone, Copy)]
pub struct KeyParts<'a> {
    pub api: CacheApi,
    /// llm_router's route (empty without llm_router).
    pub route: &'a str,
    /// The resolved model (replaces the body's `model`, so aliases share entries).
    pub model: &'a str,
    /// The consumer for per-consumer entries; empty for shared ones.
    pub scope: &'a str,
}

/// A 32-byte digest naming one cache entry.
pub type Digest32 = [u8; 32];

/// The key of `body` (a JSON object) under `parts`.
pub fn digest(parts: &KeyParts<'_>, body: &serde_json::Map<String, Value>) -> Digest32 {
    let mut canonical = String::with_capacity(256);
    canonical.push('{');
    let mut fields: Vec<(&String, &Value)> = body
        .iter()
        .filter(|(name, _)| name.as_str() != "model" && !TRANSPORT_FIELDS.contains(&name.as_str()))
        .collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    for (index, (name, value)) in fields.into_iter().enumerate() {
        if index > 0 {
            canonical.push(',');
        }
        write_string(name, &mut canonical);
        canonical.push(':');
        write_canonical(value, &mut canonical);
    }
    canonical.push('}');
    let mut hasher = Sha256::new();
    // Fields separated by NUL, which none of them can contain unescaped.
    for part in [
        "llm_cache/v1",
        parts.api.tag(),
        parts.route,
        parts.model,
        parts.scope,
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

/// Canonical JSON: object keys sorted, numbers in one spelling, strings as serde_json escapes them.
pub fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_number(n, out),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (name, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(name, out);
                out.push(':');
                write_canonical(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // Serializing a &str cannot fail; an empty string stands in if it ever did.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// `1`, `1.0`, `1e0` and `10e-1` are one number: integers print as integers, other values in Rust's
/// shortest round-trip form. Integers beyond f64's exact range keep their digits.
fn write_number(n: &Number, out: &mut String) {
    use std::fmt::Write;
    if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(f) = n.as_f64() {
        // 2^53: beyond it f64 no longer holds every integer, so the float spelling is kept.
        if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
            #[allow(clippy::cast_possible_truncation)]
            let _ = write!(out, "{}", f as i64);
        } else {
            let _ = write!(out, "{f}");
        }
    }
}

/// Whether the request asks for a reproducible answer: `temperature` 0 (both APIs default to 1).
pub fn is_deterministic(body: &serde_json::Map<String, Value>) -> bool {
    body.get("temperature").and_then(Value::as_f64) == Some(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key_of(body: Value) -> Digest32 {
        key_with(body, "gpt-4o-mini", "team-a")
    }

    fn key_with(body: Value, model: &str, scope: &str) -> Digest32 {
        let parts = KeyParts {
            api: CacheApi::ChatCompletions,
            route: "openai",
            model,
            scope,
        };
        match body {
            Value::Object(map) => digest(&parts, &map),
            _ => panic!("object expected"),
        }
    }

    fn base() -> Value {
        json!({"model": "gpt-4o-mini", "temperature": 0.5, "messages": [{"role": "user", "content": "hi"}]})
    }

    #[test]
    fn key_order_and_number_spelling_do_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{"model":"fast","temperature":1.0,"max_tokens":10,"messages":[{"content":"hi","role":"user"}]}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1e1,"temperature":1,"model":"gpt-4o-mini"}"#,
        )
        .unwrap();
        assert_eq!(key_of(a), key_of(b));
    }

    #[test]
    fn transport_fields_do_not_matter() {
        let mut streamed = base();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        streamed["user"] = json!("u-1");
        streamed["metadata"] = json!({"trace": "x"});
        assert_eq!(key_of(base()), key_of(streamed));
    }

    #[test]
    fn every_field_that_changes_the_answer_matters() {
        let reference = key_of(base());
        for (field, value) in [
            ("temperature", json!(0.7)),
            ("top_p", json!(0.9)),
            ("max_tokens", json!(5)),
            ("seed", json!(7)),
            ("stop", json!(["\n"])),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("none")),
            ("response_format", json!({"type": "json_object"})),
            ("messages", json!([{"role": "user", "content": "hi!"}])),
        ] {
            let mut changed = base();
            changed[field] = value;
            assert_ne!(reference, key_of(changed), "{field}");
        }
        assert_ne!(reference, key_with(base(), "gpt-4o", "team-a"));
        assert_ne!(reference, key_with(base(), "gpt-4o-mini", "team-b"));
        let parts = KeyParts {
            api: CacheApi::Messages,
            route: "openai",
            model: "gpt-4o-mini",
            scope: "team-a",
        };
        let Value::Object(map) = base() else {
            unreachable!()
        };
        assert_ne!(reference, digest(&parts, &map));
    }

    #[test]
    fn large_integers_keep_their_digits() {
        let a = json!({"seed": 9_007_199_254_740_993u64});
        let b = json!({"seed": 9_007_199_254_740_992u64});
        assert_ne!(key_of(a), key_of(b));
        let mut out = String::new();
        write_canonical(&json!([0.1, -0.0, 2.5, -3]), &mut out);
        assert_eq!(out, "[0.1,0,2.5,-3]");
    }

    #[test]
    fn determinism() {
        let body = |v: Value| match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        assert!(is_deterministic(&body(json!({"temperature": 0}))));
        assert!(is_deterministic(&body(json!({"temperature": 0.0}))));
        assert!(!is_deterministic(&body(json!({"temperature": 0.2}))));
        assert!(!is_deterministic(&body(json!({}))));
    }

    #[test]
    fn paths() {
        assert_eq!(
            CacheApi::from_path("/v1/chat/completions?x=1"),
            Some(CacheApi::ChatCompletions)
        );
        assert_eq!(
            CacheApi::from_path("/v1/messages"),
            Some(CacheApi::Messages)
        );
        assert_eq!(CacheApi::from_path("/v1/embeddings"), None);
    }
}
