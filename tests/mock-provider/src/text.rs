//! The mock's deterministic rules: which text a reply echoes, how tokens are counted, tool-call markers.

use serde_json::Value;

/// Token rule, documented in the README: one token per started group of four characters
/// (Unicode scalar values) of each text, i.e. `ceil(chars / 4)`.
pub fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// The text of an OpenAI message `content` (string, or array of parts whose `text` parts count) or of an
/// Anthropic content (string, or blocks: `text` blocks and the content of `tool_result` blocks).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => {
            let mut out = String::new();
            for part in parts {
                let piece = match part.get("type").and_then(Value::as_str) {
                    Some("text") | Some("input_text") => {
                        part.get("text").and_then(Value::as_str).map(str::to_string)
                    }
                    Some("tool_result") => part.get("content").map(content_text),
                    _ => None,
                };
                if let Some(piece) = piece {
                    if !out.is_empty() && !piece.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(&piece);
                }
            }
            out
        }
        _ => String::new(),
    }
}

/// The text the reply echoes: the last message whose role is `user` or `tool`.
pub fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| matches!(m.get("role").and_then(Value::as_str), Some("user" | "tool")))
        .and_then(|m| m.get("content"))
        .map(content_text)
        .unwrap_or_default()
}

/// The tokens of every message's content (plus the Anthropic `system` when given).
pub fn prompt_tokens(messages: &[Value], system: Option<&Value>) -> u64 {
    let mut total = system.map(|s| tokens(&content_text(s))).unwrap_or(0);
    for message in messages {
        if let Some(content) = message.get("content") {
            total += tokens(&content_text(content));
        }
        // Assistant tool calls count by their arguments' text.
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            for call in calls {
                if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str)
                {
                    total += tokens(arguments);
                }
            }
        }
    }
    total
}

/// Truncates `text` to at most `max_tokens` tokens under the token rule; returns whether it cut.
pub fn truncate_to_tokens(text: &str, max_tokens: Option<u64>) -> (String, bool) {
    match max_tokens {
        Some(max) if tokens(text) > max => {
            let keep = usize::try_from(max.saturating_mul(4)).unwrap_or(usize::MAX);
            (text.chars().take(keep).collect(), true)
        }
        _ => (text.to_string(), false),
    }
}

/// A requested tool call: the prompt contains `!tool` (call the first declared tool) or `!tool:NAME`
/// (call the declared tool NAME). Returns the tool name and the prompt without the marker.
pub fn tool_request(prompt: &str, declared: &[String]) -> Option<(String, String)> {
    let at = prompt.find("!tool")?;
    let after = prompt.get(at + "!tool".len()..).unwrap_or("");
    let (name, marker_len) = match after.strip_prefix(':') {
        Some(rest) => {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-')
                .collect();
            let len = "!tool:".len() + name.len();
            (declared.iter().find(|d| **d == name)?.clone(), len)
        }
        None => (declared.first()?.clone(), "!tool".len()),
    };
    let mut rest = String::with_capacity(prompt.len());
    rest.push_str(prompt.get(..at).unwrap_or(""));
    rest.push_str(prompt.get(at + marker_len..).unwrap_or(""));
    Some((name, rest.trim().to_string()))
}

/// Splits a reply into the pieces a stream sends: one word (with its trailing space) per event, grouped
/// so that a long reply still takes at most `max_pieces` events. An empty reply is one empty piece.
pub fn stream_pieces(text: &str, max_pieces: usize) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    if words.is_empty() {
        return vec![String::new()];
    }
    let per_piece = words.len().div_ceil(max_pieces.max(1));
    words
        .chunks(per_piece)
        .map(|group| group.concat())
        .collect()
}

/// Splits a string into `parts` pieces of about equal length (on char boundaries), for streaming tool
/// arguments in several deltas.
pub fn split_even(text: &str, parts: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(parts.max(1)).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_rule() {
        assert_eq!(tokens(""), 0);
        assert_eq!(tokens("hi"), 1);
        assert_eq!(tokens("abcd"), 1);
        assert_eq!(tokens("abcde"), 2);
        assert_eq!(tokens("éééé"), 1);
    }

    #[test]
    fn content_text_forms() {
        assert_eq!(content_text(&json!("x")), "x");
        assert_eq!(
            content_text(
                &json!([{"type":"text","text":"a"},{"type":"image_url"},{"type":"text","text":"b"}])
            ),
            "a\nb"
        );
        assert_eq!(
            content_text(
                &json!([{"type":"tool_result","tool_use_id":"t","content":[{"type":"text","text":"r"}]}])
            ),
            "r"
        );
        assert_eq!(content_text(&json!(null)), "");
    }

    #[test]
    fn last_user_text_skips_assistant() {
        let messages = vec![
            json!({"role":"system","content":"s"}),
            json!({"role":"user","content":"first"}),
            json!({"role":"assistant","content":"a"}),
            json!({"role":"user","content":"second"}),
            json!({"role":"assistant","content":"b"}),
        ];
        assert_eq!(last_user_text(&messages), "second");
        assert_eq!(prompt_tokens(&messages, None), 1 + 2 + 1 + 2 + 1);
    }

    #[test]
    fn tool_markers() {
        let tools = vec!["get_weather".to_string(), "lookup".to_string()];
        assert_eq!(
            tool_request("!tool Paris", &tools),
            Some(("get_weather".into(), "Paris".into()))
        );
        assert_eq!(
            tool_request("find !tool:lookup x", &tools),
            Some(("lookup".into(), "find  x".into()))
        );
        assert_eq!(tool_request("!tool:nope x", &tools), None);
        assert_eq!(tool_request("!tool x", &[]), None);
        assert_eq!(tool_request("no marker", &tools), None);
    }

    #[test]
    fn truncation() {
        assert_eq!(
            truncate_to_tokens("abcdefghij", Some(2)),
            ("abcdefgh".into(), true)
        );
        assert_eq!(truncate_to_tokens("abc", Some(2)), ("abc".into(), false));
        assert_eq!(truncate_to_tokens("abc", None), ("abc".into(), false));
    }

    #[test]
    fn pieces_rejoin_to_the_text() {
        for text in ["", "one", "hello there world", "a b c d e f g h i j k"] {
            let pieces = stream_pieces(text, 4);
            assert!(pieces.len() <= 4);
            assert_eq!(pieces.concat(), text);
        }
        assert_eq!(stream_pieces("a b c", 64).len(), 3);
        assert_eq!(
            split_even("{\"text\":\"x\"}", 3).concat(),
            "{\"text\":\"x\"}"
        );
    }
}
