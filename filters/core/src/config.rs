//! Filter configuration parsing: serde with `deny_unknown_fields`, errors that name the field path.
//!
//! Configs may hold secrets (key digests, literal PII terms), so error messages never carry values from
//! the config: serde's messages quote offending values, and those quotes are redacted here.

use serde::de::DeserializeOwned;
use std::fmt;

/// A configuration error: where (`path`, e.g. `models[2].target`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ConfigError {
    /// The same error inside the object field `section` (`models[0]` becomes `router.models[0]`).
    pub fn within(self, section: &str) -> Self {
        let path = match self.path.as_str() {
            "" | "." => section.to_string(),
            path if path.starts_with('[') => format!("{section}{path}"),
            path => format!("{section}.{path}"),
        };
        ConfigError { path, ..self }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() || self.path == "." {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Parses a filter's JSON configuration. Empty input (Envoy sends none when `configuration` is absent)
/// is read as `{}`, so a config type with required fields still reports which one is missing.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConfigError> {
    let input: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let deserializer = &mut serde_json::Deserializer::from_slice(input);
    let parsed: T = serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let message = if inner.is_syntax() || inner.is_eof() {
            format!(
                "configuration is not valid JSON ({} at line {} column {})",
                syntax_summary(&inner),
                inner.line(),
                inner.column()
            )
        } else {
            redact_numbers(&redact_quoted(&strip_position(&inner.to_string())))
        };
        ConfigError::new(path, message)
    })?;
    Ok(parsed)
}

fn syntax_summary(err: &serde_json::Error) -> &'static str {
    if err.is_eof() {
        "unexpected end of input"
    } else {
        "syntax error"
    }
}

/// serde_json appends " at line L column C"; the path already says where, and positions into a
/// config that Envoy re-serialized mean little to the user.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message.get(..at).unwrap_or(message).to_string(),
        None => message.to_string(),
    }
}

/// serde writes numbers it refuses in backticks (`invalid type: integer `12345678`, expected a
/// string`): a numeric key or PIN would be echoed. Field names stay (`unknown field `x``).
fn redact_numbers(message: &str) -> String {
    let mut out = message.to_string();
    for kind in ["integer `", "floating point `"] {
        let mut from = 0;
        while let Some(at) = out.get(from..).and_then(|rest| rest.find(kind)) {
            let start = from + at + kind.len();
            let Some(len) = out.get(start..).and_then(|rest| rest.find('`')) else {
                break;
            };
            out.replace_range(start..start + len, "…");
            from = start + "…".len();
        }
    }
    out
}

/// Replaces every double-quoted span with `"…"`: serde quotes the offending value there
/// (`invalid type: string "sk-live-…", expected u32`).
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut inside = false;
    for ch in message.chars() {
        if ch == '"' {
            if inside {
                out.push_str("…\"");
            } else {
                out.push('"');
            }
            inside = !inside;
        } else if !inside {
            out.push(ch);
        }
    }
    if inside {
        out.push_str("…\"");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        limit: u32,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        name: String,
        #[serde(default)]
        items: Vec<Inner>,
    }

    #[test]
    fn empty_input_reads_as_empty_object() {
        assert_eq!(parse::<Sample>(b"").unwrap(), Sample::default());
        assert_eq!(parse::<Sample>(b"  \n").unwrap(), Sample::default());
    }

    #[test]
    fn valid_config_parses() {
        let parsed: Sample = parse(br#"{"name":"x","items":[{"limit":3}]}"#).unwrap();
        assert_eq!(parsed.items, vec![Inner { limit: 3 }]);
    }

    #[test]
    fn unknown_field_is_named_with_its_path() {
        let err =
            parse::<Sample>(br#"{"items":[{"limit":1},{"limit":2,"bogus":true}]}"#).unwrap_err();
        assert_eq!(err.path, "items[1].bogus");
        assert!(err.message.contains("unknown field `bogus`"), "{err}");
        assert!(
            err.to_string().starts_with("field `items[1].bogus`: "),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_names_the_field_and_hides_the_value() {
        let err = parse::<Sample>(br#"{"items":[{"limit":"sk-secret-value"}]}"#).unwrap_err();
        assert_eq!(err.path, "items[0].limit");
        assert!(!err.to_string().contains("sk-secret-value"), "{err}");
        assert!(err.message.contains("expected u32"), "{err}");
    }

    #[test]
    fn numbers_in_the_wrong_place_are_hidden_too() {
        let err = parse::<Sample>(br#"{"name": 12345678}"#).unwrap_err();
        assert!(!err.to_string().contains("12345678"), "{err}");
        assert!(err.message.contains("integer `…`"), "{err}");
        let err = parse::<Sample>(br#"{"name": 1234.5678}"#).unwrap_err();
        assert!(!err.to_string().contains("1234.5678"), "{err}");
        let err = parse::<Sample>(br#"{"items":[{"limit":-987654}]}"#).unwrap_err();
        assert!(!err.to_string().contains("987654"), "{err}");
    }

    #[test]
    fn missing_field_is_reported() {
        let err = parse::<Sample>(br#"{"items":[{}]}"#).unwrap_err();
        assert_eq!(err.path, "items[0]");
        assert!(err.message.contains("missing field `limit`"), "{err}");
    }

    #[test]
    fn syntax_errors_do_not_echo_input() {
        let err = parse::<Sample>(br#"{"name": "sk-secret"#).unwrap_err();
        assert!(
            err.message.starts_with("configuration is not valid JSON"),
            "{err}"
        );
        assert!(!err.to_string().contains("sk-secret"), "{err}");
        let err = parse::<Sample>(b"{not json}").unwrap_err();
        assert!(err.message.contains("syntax error"), "{err}");
    }

    #[test]
    fn redaction_handles_unbalanced_quotes() {
        assert_eq!(redact_quoted(r#"a "b" c "d"#), r#"a "…" c "…""#);
        assert_eq!(redact_quoted("no quotes"), "no quotes");
    }
}
