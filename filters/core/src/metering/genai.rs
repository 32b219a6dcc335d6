//! Facts about a request and its answer in OpenTelemetry's GenAI semantic conventions
//! (`gen_ai.operation.name`, `gen_ai.request.temperature`, `gen_ai.response.id`,
//! `gen_ai.response.finish_reasons`, ...). The filters publish them as filter state; Envoy's tracer
//! and access loggers read them from there (custom tags with a `value` format string).
//!
//! The facts come from fields a provider or client sets for exactly this purpose, each value capped
//! so that a hostile answer cannot make a span huge. Prompt and answer text is read only for content
//! capture (below), which llm_pii runs when configured, on text it has masked.

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

/// The span name GenAI's conventions ask for, `{operation} {model}`: the model as the client wrote
/// it (a glob route takes any), so capped and without control characters.
pub fn span_name(operation: &str, model: &str) -> String {
    let model: String = model
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    format!("{operation} {model}")
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
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return AnswerFacts::default();
    }
    serde_json::from_slice::<FactFields<'_>>(body)
        .map(|fields| fields.facts(format))
        .unwrap_or_default()
}

/// The fields of an answer its facts come from, borrowed unparsed: a probe that reads an answer
/// for other reasons (llm_usage's) reads these too, so the answer is parsed once.
#[derive(Debug, Default, Deserialize)]
pub struct FactFields<'a> {
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub choices: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub stop_reason: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub status: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub incomplete_details: Option<&'a RawValue>,
}

impl FactFields<'_> {
    pub fn facts(&self, format: ResponseFormat) -> AnswerFacts {
        #[derive(Deserialize)]
        struct Choice {
            #[serde(default)]
            finish_reason: Option<Value>,
        }
        let value =
            |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
        let mut facts = AnswerFacts::default();
        facts.set_id(value(self.id).as_ref());
        match format {
            ResponseFormat::OpenAi => {
                if let Some(choices) = self
                    .choices
                    .and_then(|raw| serde_json::from_str::<Vec<Choice>>(raw.get()).ok())
                {
                    for choice in choices {
                        facts.add_reason(choice.finish_reason.as_ref());
                    }
                }
            }
            ResponseFormat::Anthropic => facts.add_reason(value(self.stop_reason).as_ref()),
            ResponseFormat::Responses => {
                let mut response = serde_json::Map::new();
                for (key, raw) in [
                    ("status", self.status),
                    ("incomplete_details", self.incomplete_details),
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
}

/// Content capture: the prompt and the answer as OpenTelemetry's GenAI conventions write them
/// (`gen_ai.input.messages`, `gen_ai.output.messages`: `[{"role", "parts": [{"type", "content"}]}]`).
/// llm_pii captures them, and only as they leave and arrive (masked, before restoring), so nothing it
/// masked reaches a trace. Text is kept up to a byte budget (the latest messages first); media
/// are named (`{"type":"image"}`) and never copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Bytes of text kept per direction (the JSON around it is not counted).
    #[serde(default = "default_capture_bytes")]
    pub max_bytes: usize,
}

/// The largest `max_bytes`: span attributes travel in every export batch.
pub const MAX_CAPTURE_BYTES: usize = 65_536;

fn default_capture_bytes() -> usize {
    4096
}

impl CaptureConfig {
    pub fn check(&self) -> Result<(), crate::config::ConfigError> {
        if self.max_bytes == 0 || self.max_bytes > MAX_CAPTURE_BYTES {
            return Err(crate::config::ConfigError::new(
                "capture_content.max_bytes",
                format!("must be between 1 and {MAX_CAPTURE_BYTES}"),
            ));
        }
        Ok(())
    }
}

/// One message as captured: a role and its parts.
struct Captured {
    role: String,
    parts: Vec<Value>,
    finish_reason: Option<String>,
}

fn part_text(text: &str) -> Value {
    serde_json::json!({"type": "text", "content": text})
}

fn part_kind(kind: &str) -> Value {
    serde_json::json!({ "type": kind })
}

/// The parts of a message's `content`, in any of the APIs' spellings.
fn content_parts(content: Option<&Value>, parts: &mut Vec<Value>) {
    match content {
        Some(Value::String(text)) => parts.push(part_text(text)),
        Some(Value::Array(items)) => {
            for item in items {
                content_item(item, parts);
            }
        }
        _ => {}
    }
}

fn content_item(item: &Value, parts: &mut Vec<Value>) {
    if let Value::String(text) = item {
        parts.push(part_text(text));
        return;
    }
    let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" | "input_text" | "output_text" | "refusal" => {
            let text = item
                .get("text")
                .or_else(|| item.get("refusal"))
                .and_then(Value::as_str)
                .unwrap_or("");
            parts.push(part_text(text));
        }
        "tool_use" | "function_call" => parts.push(serde_json::json!({
            "type": "tool_call",
            "name": item.get("name").and_then(Value::as_str).unwrap_or(""),
            "arguments": item.get("input").or_else(|| item.get("arguments")).cloned().unwrap_or(Value::Null),
        })),
        "tool_result" | "function_call_output" => {
            let mut inner = Vec::new();
            content_parts(item.get("content").or_else(|| item.get("output")), &mut inner);
            let text: Vec<&str> = inner
                .iter()
                .filter_map(|p| p.get("content").and_then(Value::as_str))
                .collect();
            parts.push(serde_json::json!({"type": "tool_call_response", "response": text.join("\n")}));
        }
        "image" | "image_url" | "input_image" => parts.push(part_kind("image")),
        "document" | "file" | "input_file" => parts.push(part_kind("file")),
        "input_audio" | "audio" => parts.push(part_kind("audio")),
        _ => {}
    }
}

/// A chat-style message (Chat Completions, Messages, a Responses input item).
fn message(value: &Value) -> Option<Captured> {
    let kind = value.get("type").and_then(Value::as_str);
    if matches!(kind, Some("function_call" | "function_call_output")) {
        let mut parts = Vec::new();
        content_item(value, &mut parts);
        let role = if kind == Some("function_call") {
            "assistant"
        } else {
            "tool"
        };
        return Some(Captured {
            role: role.into(),
            parts,
            finish_reason: None,
        });
    }
    let role = value.get("role").and_then(Value::as_str)?;
    let mut parts = Vec::new();
    content_parts(value.get("content"), &mut parts);
    for call in value
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        parts.push(serde_json::json!({
            "type": "tool_call",
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
            "arguments": call.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
        }));
    }
    Some(Captured {
        role: role.into(),
        parts,
        finish_reason: None,
    })
}

/// Plain prompts (Completions' `prompt`, Embeddings' `input`): strings, or arrays of them.
fn plain_prompts(value: Option<&Value>, out: &mut Vec<Captured>) {
    let mut parts = Vec::new();
    match value {
        Some(Value::String(text)) => parts.push(part_text(text)),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(text) = item.as_str() {
                    parts.push(part_text(text));
                }
            }
        }
        _ => {}
    }
    if !parts.is_empty() {
        out.push(Captured {
            role: "user".into(),
            parts,
            finish_reason: None,
        });
    }
}

/// `gen_ai.input.messages` of a request body (as it leaves the gateway), for its API path.
pub fn input_messages(path: &str, body: &[u8], max_bytes: usize) -> Option<String> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let mut messages = Vec::new();
    match path {
        "/v1/completions" => plain_prompts(request.get("prompt"), &mut messages),
        "/v1/embeddings" => plain_prompts(request.get("input"), &mut messages),
        "/v1/responses" => {
            if let Some(Value::String(text)) = request.get("instructions") {
                messages.push(Captured {
                    role: "system".into(),
                    parts: vec![part_text(text)],
                    finish_reason: None,
                });
            }
            match request.get("input") {
                Some(Value::String(text)) => messages.push(Captured {
                    role: "user".into(),
                    parts: vec![part_text(text)],
                    finish_reason: None,
                }),
                Some(Value::Array(items)) => messages.extend(items.iter().filter_map(message)),
                _ => {}
            }
        }
        _ => {
            // Chat Completions, and Messages with its top-level `system`.
            let mut system = Vec::new();
            content_parts(request.get("system"), &mut system);
            if !system.is_empty() {
                messages.push(Captured {
                    role: "system".into(),
                    parts: system,
                    finish_reason: None,
                });
            }
            for item in request
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                messages.extend(message(item));
            }
        }
    }
    render(messages, max_bytes)
}

/// `gen_ai.output.messages` of a complete JSON answer (as it arrives, before llm_pii restores it).
pub fn output_messages(path: &str, body: &[u8], max_bytes: usize) -> Option<String> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let mut messages = Vec::new();
    if path == "/v1/responses" {
        let mut parts = Vec::new();
        for item in answer
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) == Some("message") {
                content_parts(item.get("content"), &mut parts);
            } else {
                content_item(item, &mut parts);
            }
        }
        let reason = answer
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string);
        messages.push(Captured {
            role: "assistant".into(),
            parts,
            finish_reason: reason,
        });
    } else if let Some(choices) = answer.get("choices").and_then(Value::as_array) {
        for choice in choices {
            let mut captured = match choice.get("message") {
                Some(m) => message(m).unwrap_or(Captured {
                    role: "assistant".into(),
                    parts: Vec::new(),
                    finish_reason: None,
                }),
                None => {
                    let mut parts = Vec::new();
                    if let Some(text) = choice.get("text").and_then(Value::as_str) {
                        parts.push(part_text(text));
                    }
                    Captured {
                        role: "assistant".into(),
                        parts,
                        finish_reason: None,
                    }
                }
            };
            captured.finish_reason = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(str::to_string);
            messages.push(captured);
        }
    } else if answer.get("type").and_then(Value::as_str) == Some("message") {
        let mut parts = Vec::new();
        content_parts(answer.get("content"), &mut parts);
        let reason = answer
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        messages.push(Captured {
            role: "assistant".into(),
            parts,
            finish_reason: reason,
        });
    }
    render(messages, max_bytes)
}

/// The text of a streamed answer, gathered event by event up to the byte budget.
#[derive(Debug)]
pub struct StreamCapture {
    parser: crate::sse::SseParser,
    text: String,
    max_bytes: usize,
    cut: bool,
    facts: AnswerFacts,
}

impl StreamCapture {
    pub fn new(max_bytes: usize) -> Self {
        StreamCapture {
            parser: crate::sse::SseParser::new(),
            text: String::new(),
            max_bytes,
            cut: false,
            facts: AnswerFacts::default(),
        }
    }

    /// Feeds a chunk of the stream as it arrived.
    pub fn push(&mut self, chunk: &[u8]) {
        for event in self.parser.push(chunk) {
            self.observe(&event.data);
        }
    }

    fn observe(&mut self, data: &str) {
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let delta = event
            .pointer("/choices/0/delta/content")
            .or_else(|| event.pointer("/choices/0/text"))
            .or_else(|| event.pointer("/delta/text"))
            .or_else(|| match event.get("type").and_then(Value::as_str) {
                Some("response.output_text.delta") => event.get("delta"),
                _ => None,
            })
            .and_then(Value::as_str);
        self.facts
            .add_reason(event.pointer("/choices/0/finish_reason"));
        self.facts.add_reason(event.pointer("/delta/stop_reason"));
        if let Some(delta) = delta {
            let room = self.max_bytes.saturating_sub(self.text.len());
            if delta.len() <= room {
                self.text.push_str(delta);
            } else {
                let mut end = room;
                while !delta.is_char_boundary(end) {
                    end -= 1;
                }
                self.text.push_str(delta.get(..end).unwrap_or_default());
                self.cut = true;
            }
        }
    }

    /// `gen_ai.output.messages` of what streamed.
    pub fn finish(mut self) -> Option<String> {
        if let Some(event) = self.parser.finish() {
            self.observe(&event.data);
        }
        let mut text = self.text;
        if self.cut {
            text.push('…');
        }
        let parts = if text.is_empty() {
            Vec::new()
        } else {
            vec![part_text(&text)]
        };
        let captured = Captured {
            role: "assistant".into(),
            parts,
            finish_reason: self.facts.finish_reasons.first().cloned(),
        };
        render(vec![captured], usize::MAX)
    }
}

/// Whether `text` is one JSON value (a capture rewritten by redaction must still be).
pub fn is_json(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Messages and parts kept in a capture, and the longest role or tool name.
const MAX_CAPTURED_MESSAGES: usize = 64;
const MAX_CAPTURED_PARTS: usize = 64;
const MAX_CAPTURED_NAME: usize = 64;

/// `text` cut to what is left of `budget` (at a character boundary, marked with `…`).
fn spend(text: &mut String, budget: &mut usize) {
    if text.len() <= *budget {
        *budget -= text.len();
        return;
    }
    let mut end = *budget;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
    *budget = 0;
}

fn cap_chars(text: &mut String, max: usize) {
    if let Some((end, _)) = text.char_indices().nth(max) {
        text.truncate(end);
    }
}

/// The messages as JSON, every text (content, tool arguments, tool results) cut to `max_bytes` in
/// all: the latest messages are kept first (the turn being answered matters most); a cut text ends
/// with `…`, and earlier messages are dropped. Roles and names are capped, and so are the numbers
/// of messages and parts.
fn render(messages: Vec<Captured>, max_bytes: usize) -> Option<String> {
    if messages.is_empty() {
        return None;
    }
    let mut budget = max_bytes;
    let mut kept = Vec::new();
    for mut captured in messages.into_iter().rev().take(MAX_CAPTURED_MESSAGES) {
        if budget == 0 {
            break;
        }
        captured.parts.truncate(MAX_CAPTURED_PARTS);
        for part in &mut captured.parts {
            let Some(object) = part.as_object_mut() else {
                continue;
            };
            // Tool arguments as text, so that their size counts like any other.
            if let Some(arguments) = object.get_mut("arguments") {
                if !arguments.is_string() {
                    *arguments = Value::String(arguments.to_string());
                }
            }
            if let Some(Value::String(name)) = object.get_mut("name") {
                cap_chars(name, MAX_CAPTURED_NAME);
            }
            for key in ["content", "arguments", "response"] {
                if let Some(Value::String(text)) = object.get_mut(key) {
                    spend(text, &mut budget);
                }
            }
        }
        cap_chars(&mut captured.role, MAX_CAPTURED_NAME);
        let mut message = serde_json::Map::new();
        message.insert("role".into(), Value::String(captured.role));
        message.insert("parts".into(), Value::Array(captured.parts));
        if let Some(reason) = captured.finish_reason {
            message.insert("finish_reason".into(), Value::String(reason));
        }
        kept.push(Value::Object(message));
    }
    kept.reverse();
    let out = Value::Array(kept).to_string();
    // JSON escaping at most sextuples a text; past that bound something is wrong: nothing.
    (out.len() <= max_bytes.saturating_mul(6).saturating_add(64 * 1024)).then_some(out)
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
    fn span_names_are_capped() {
        assert_eq!(span_name("chat", "gpt-4o"), "chat gpt-4o");
        let name = span_name("chat", &format!("{}\n{}", "m".repeat(300), "x"));
        assert_eq!(name.len(), "chat ".len() + 128);
        assert!(!name.contains('\n'));
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

    #[test]
    fn chat_and_messages_prompts_are_captured_as_roles_and_parts() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Mail <EMAIL_1>"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"lookup","arguments":"{}"}}]}]}"#;
        let captured: Value =
            serde_json::from_str(&input_messages("/v1/chat/completions", body, 4096).unwrap())
                .unwrap();
        assert_eq!(
            captured,
            serde_json::json!([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Mail <EMAIL_1>"}, {"type": "image"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "name": "lookup", "arguments": "{}"}]}
            ])
        );
        let body = br#"{"model":"m","system":"S","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let captured: Value =
            serde_json::from_str(&input_messages("/v1/messages", body, 4096).unwrap()).unwrap();
        assert_eq!(captured[0]["role"], "system");
        assert_eq!(captured[1]["parts"][0]["content"], "hi");
        let body = br#"{"model":"m","instructions":"I","input":"question"}"#;
        let captured: Value =
            serde_json::from_str(&input_messages("/v1/responses", body, 4096).unwrap()).unwrap();
        assert_eq!(captured[1]["parts"][0]["content"], "question");
        assert!(input_messages("/v1/chat/completions", b"not json", 4096).is_none());
    }

    #[test]
    fn captured_text_is_capped_keeping_the_latest_messages() {
        let long = "a".repeat(3000);
        let body = serde_json::json!({"messages": [
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": long},
            {"role": "user", "content": "é".repeat(1000)}
        ]})
        .to_string();
        let captured: Value = serde_json::from_str(
            &input_messages("/v1/chat/completions", body.as_bytes(), 2500).unwrap(),
        )
        .unwrap();
        let messages = captured.as_array().unwrap();
        assert_eq!(messages.len(), 2, "the first message is dropped");
        assert_eq!(
            messages[1]["parts"][0]["content"].as_str().unwrap().len(),
            2000
        );
        let cut = messages[0]["parts"][0]["content"].as_str().unwrap();
        assert!(
            cut.ends_with('…') && cut.len() == 500 + '…'.len_utf8(),
            "{}",
            cut.len()
        );
    }

    #[test]
    fn tool_arguments_results_and_names_count_against_the_cap() {
        let huge = "x".repeat(100_000);
        let body = serde_json::json!({"messages": [
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function",
                "function": {"name": "n".repeat(500), "arguments": huge}}]},
            {"role": "tool", "tool_call_id": "c", "content": huge},
            {"role": "r".repeat(500), "content": "hi"}
        ]})
        .to_string();
        let captured = input_messages("/v1/chat/completions", body.as_bytes(), 1000).unwrap();
        assert!(captured.len() < 2_000, "{}", captured.len());
        let many = serde_json::json!({"messages": vec![serde_json::json!({"role": "user", "content": ""}); 1000]})
            .to_string();
        let captured: Value = serde_json::from_str(
            &input_messages("/v1/chat/completions", many.as_bytes(), 1000).unwrap(),
        )
        .unwrap();
        assert_eq!(
            captured.as_array().map(Vec::len),
            Some(MAX_CAPTURED_MESSAGES)
        );
    }

    #[test]
    fn answers_are_captured_from_json_and_streams() {
        let body = br#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Hello <EMAIL_1>"},"finish_reason":"stop"}]}"#;
        let captured: Value =
            serde_json::from_str(&output_messages("/v1/chat/completions", body, 4096).unwrap())
                .unwrap();
        assert_eq!(
            captured,
            serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hello <EMAIL_1>"}], "finish_reason": "stop"}])
        );
        let body = br#"{"type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn"}"#;
        let captured: Value =
            serde_json::from_str(&output_messages("/v1/messages", body, 4096).unwrap()).unwrap();
        assert_eq!(captured[0]["finish_reason"], "end_turn");

        let mut stream = StreamCapture::new(8);
        stream.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello \"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"con");
        stream.push(b"tent\":\"world!\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        let captured: Value = serde_json::from_str(&stream.finish().unwrap()).unwrap();
        assert_eq!(captured[0]["parts"][0]["content"], "Hello wo…");
        assert_eq!(captured[0]["finish_reason"], "stop");
        let mut stream = StreamCapture::new(100);
        stream.push(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n");
        let captured: Value = serde_json::from_str(&stream.finish().unwrap()).unwrap();
        assert_eq!(captured[0]["parts"][0]["content"], "Hi");
    }
}
