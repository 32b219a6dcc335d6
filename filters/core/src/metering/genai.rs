//! Facts about a request and its answer in OpenTelemetry's GenAI semantic conventions
//! (`gen_ai.operation.name`, `gen_ai.request.temperature`, `gen_ai.response.id`,
//! `gen_ai.response.finish_reasons`, ...). The filters publish them as filter state; Envoy's tracer
//! and access loggers read them from there (custom tags with a `value` format string).
//!
//! Everything here comes from fields a provider or client sets for exactly this purpose: no prompt
//! or answer text is read, and each value is capped so that a hostile answer cannot make a span huge.

use crate::usage::ResponseFormat;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

/// The longest `gen_ai.response.id` kept (provider ids are tens of characters).
pub const MAX_ID_CHARS: usize = 128;
/// The longest finish reason kept.
pub const MAX_REASON_CHARS: usize = 64;
/// The most finish reasons kept (one per choice; `n` rarely exceeds a few).
pub const MAX_FINISH_REASONS: usize = 16;

/// `gen_ai.operation.name` for a request path: `chat` for Chat Completions, Responses and
/// Messages, `text_completion` for Completions, `embeddings` for Embeddings; `None` elsewhere
/// (model listings, token counting).
pub fn operation_name(path: &str) -> Option<&'static str> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match path {
        "/v1/chat/completions" | "/v1/responses" | "/v1/messages" => Some("chat"),
        "/v1/completions" => Some("text_completion"),
        "/v1/embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// A sampling setting (`temperature`, `top_p`) as the JSON number the request wrote (`0.2`, `1`);
/// `None` for anything but a finite number.
pub fn sampling_number(raw: &str) -> Option<String> {
    let value: f64 = raw.parse().ok()?;
    (value.is_finite() && raw.len() <= 32).then(|| raw.to_string())
}

/// What an answer says about itself: its id and why each choice stopped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AnswerFacts {
    pub id: Option<String>,
    pub finish_reasons: Vec<String>,
}

impl AnswerFacts {
    /// `gen_ai.response.finish_reasons` as one string (`stop`, `stop,length`): span attributes
    /// from Envoy's custom tags are strings.
    pub fn finish_reasons_text(&self) -> Option<String> {
        (!self.finish_reasons.is_empty()).then(|| self.finish_reasons.join(","))
    }

    pub fn set_id(&mut self, id: Option<&Value>) {
        if self.id.is_none() {
            self.id = id.and_then(Value::as_str).and_then(capped_id);
        }
    }

    pub fn add_reason(&mut self, reason: Option<&Value>) {
        if let Some(reason) = reason.and_then(Value::as_str) {
            self.push_reason(reason);
        }
    }

    fn push_reason(&mut self, reason: &str) {
        if self.finish_reasons.len() >= MAX_FINISH_REASONS || reason.is_empty() {
            return;
        }
        // A reason is a word; anything else (commas, control characters) would make the joined
        // text ambiguous or unreadable.
        let clean: String = reason
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
            .take(MAX_REASON_CHARS)
            .collect();
        if !clean.is_empty() {
            self.finish_reasons.push(clean);
        }
    }

    /// A Responses API `response` object: its id, and `status` (or, when incomplete, the reason).
    pub fn absorb_response_object(&mut self, response: Option<&Value>) {
        let Some(response) = response else { return };
        self.set_id(response.get("id"));
        let reason = response
            .pointer("/incomplete_details/reason")
            .filter(|r| r.is_string())
            .or_else(|| response.get("status"));
        if let Some(reason) = reason.and_then(Value::as_str) {
            if reason != "in_progress" && reason != "queued" {
                self.finish_reasons.clear();
                self.push_reason(reason);
            }
        }
    }
}

fn capped_id(id: &str) -> Option<String> {
    let id: String = id
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ID_CHARS)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The facts of a complete JSON answer in the client's format. Fields other than these are skipped
/// without being built; an answer that is not a JSON object gives none.
pub fn answer_facts(format: ResponseFormat, body: &[u8]) -> AnswerFacts {
    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        choices: Option<&'a RawValue>,
        #[serde(borrow, default)]
        stop_reason: Option<&'a RawValue>,
        #[serde(borrow, default)]
        status: Option<&'a RawValue>,
        #[serde(borrow, default)]
        incomplete_details: Option<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Choice {
        #[serde(default)]
        finish_reason: Option<Value>,
    }
    let mut facts = AnswerFacts::default();
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return facts;
    }
    let Ok(probe) = serde_json::from_slice::<Probe<'_>>(body) else {
        return facts;
    };
    let value =
        |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
    facts.set_id(value(probe.id).as_ref());
    match format {
        ResponseFormat::OpenAi => {
            if let Some(choices) = probe
                .choices
                .and_then(|raw| serde_json::from_str::<Vec<Choice>>(raw.get()).ok())
            {
                for choice in choices {
                    facts.add_reason(choice.finish_reason.as_ref());
                }
            }
        }
        ResponseFormat::Anthropic => facts.add_reason(value(probe.stop_reason).as_ref()),
        ResponseFormat::Responses => {
            let mut response = serde_json::Map::new();
            for (key, raw) in [
                ("status", probe.status),
                ("incomplete_details", probe.incomplete_details),
            ] {
                if let Some(v) = value(raw) {
                    response.insert(key.into(), v);
                }
            }
            facts.absorb_response_object(Some(&Value::Object(response)));
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_by_path() {
        assert_eq!(operation_name("/v1/chat/completions"), Some("chat"));
        assert_eq!(operation_name("/v1/chat/completions?x=1"), Some("chat"));
        assert_eq!(operation_name("/v1/messages"), Some("chat"));
        assert_eq!(operation_name("/v1/responses"), Some("chat"));
        assert_eq!(operation_name("/v1/completions"), Some("text_completion"));
        assert_eq!(operation_name("/v1/embeddings"), Some("embeddings"));
        assert_eq!(operation_name("/v1/messages/count_tokens"), None);
        assert_eq!(operation_name("/v1/models"), None);
    }

    #[test]
    fn sampling_numbers_are_finite_numbers_as_written() {
        assert_eq!(sampling_number("0.2").as_deref(), Some("0.2"));
        assert_eq!(sampling_number("1").as_deref(), Some("1"));
        for raw in ["\"hot\"", "null", "1e999", "[1]", "true"] {
            assert_eq!(sampling_number(raw), None, "{raw}");
        }
    }

    #[test]
    fn chat_completion_facts() {
        let body = br#"{"id":"chatcmpl-1","choices":[{"index":0,"message":{"content":"hi"},"finish_reason":"stop"},{"index":1,"finish_reason":"length"}],"usage":{}}"#;
        let facts = answer_facts(ResponseFormat::OpenAi, body);
        assert_eq!(facts.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(facts.finish_reasons_text().as_deref(), Some("stop,length"));
    }

    #[test]
    fn messages_and_responses_facts() {
        let facts = answer_facts(
            ResponseFormat::Anthropic,
            br#"{"id":"msg_1","type":"message","stop_reason":"tool_use","content":[]}"#,
        );
        assert_eq!(facts.id.as_deref(), Some("msg_1"));
        assert_eq!(facts.finish_reasons, vec!["tool_use"]);
        let facts = answer_facts(
            ResponseFormat::Responses,
            br#"{"id":"resp_1","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}"#,
        );
        assert_eq!(facts.id.as_deref(), Some("resp_1"));
        assert_eq!(facts.finish_reasons, vec!["max_output_tokens"]);
        let facts = answer_facts(
            ResponseFormat::Responses,
            br#"{"id":"r","status":"completed"}"#,
        );
        assert_eq!(facts.finish_reasons, vec!["completed"]);
    }

    #[test]
    fn odd_answers_give_no_facts_and_big_ones_are_capped() {
        for body in [
            &b"not json"[..],
            br#"[{"id":"x"}]"#,
            br#"{"id":7,"choices":"many"}"#,
            br#"{"id":"","choices":[{"finish_reason":null}]}"#,
        ] {
            assert_eq!(
                answer_facts(ResponseFormat::OpenAi, body),
                AnswerFacts::default()
            );
        }
        let long_id = "i".repeat(10_000);
        let choices = vec![r#"{"finish_reason":"stop,now\u0000"}"#; 100].join(",");
        let body = format!(r#"{{"id":"{long_id}","choices":[{choices}]}}"#);
        let facts = answer_facts(ResponseFormat::OpenAi, body.as_bytes());
        assert_eq!(facts.id.map(|i| i.len()), Some(MAX_ID_CHARS));
        assert_eq!(facts.finish_reasons.len(), MAX_FINISH_REASONS);
        assert!(facts.finish_reasons.iter().all(|r| r == "stopnow"));
    }
}
