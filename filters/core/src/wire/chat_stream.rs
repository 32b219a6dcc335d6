//! Reading a Chat Completions SSE stream for a translation into another API's events: the chunks'
//! text, tool calls, finish reason and usage, and how the stream ended. The translations (to Anthropic
//! Messages events, to Responses events) only say what each part becomes.

use crate::sse::{SseEvent, SseParser};
use serde_json::Value;

/// A Chat answer's `usage`, or an estimate (input, output) when the provider sent none.
pub(crate) struct ChatUsage {
    pub input: u64,
    pub output: u64,
    /// Cached prompt tokens (inside `input`).
    pub cached: u64,
    /// Reasoning tokens (inside `output`).
    pub reasoning: u64,
    /// The provider reported nothing: estimated from what was sent and delivered.
    pub estimated: bool,
}

impl ChatUsage {
    pub(crate) fn read(usage: Option<&Value>, estimate: (u64, u64)) -> ChatUsage {
        let get = |pointer: &str| {
            usage
                .and_then(|u| u.pointer(pointer))
                .and_then(Value::as_u64)
        };
        let (input, output, estimated) = match (get("/prompt_tokens"), get("/completion_tokens")) {
            (Some(input), Some(output)) => (input, output, false),
            _ => (estimate.0, estimate.1, true),
        };
        ChatUsage {
            input,
            output,
            cached: get("/prompt_tokens_details/cached_tokens")
                .unwrap_or(0)
                .min(input),
            reasoning: get("/completion_tokens_details/reasoning_tokens")
                .unwrap_or(0)
                .min(output),
            estimated,
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// A tool call id: the provider's, or one made up for servers that send none (clients answer a call
/// by its id, so every call needs a distinct one).
pub(crate) fn call_id(id: Option<&str>, response_id: &str, index: usize) -> String {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!(
            "call_{}_{index}",
            response_id.strip_prefix("chatcmpl-").unwrap_or(response_id)
        ),
    }
}

/// One streamed tool call, assembled from its deltas.
#[derive(Debug, Default)]
pub(crate) struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// How a Chat stream ended: what the client's final events report.
pub(crate) struct StreamEnd<'a> {
    pub finish_reason: Option<&'a str>,
    /// The model declined (a non-empty `refusal`).
    pub refused: bool,
    /// The answer called tools (some servers say `stop` even then).
    pub called_tools: bool,
    /// The provider's usage chunk, if it sent one.
    pub usage: Option<&'a Value>,
}

/// What a translation writes for each part of a Chat stream.
pub(crate) trait ChatEvents {
    /// The first chunk with content (its `id` and `model`).
    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>);
    fn text(&mut self, text: &str, out: &mut Vec<u8>);
    /// A complete tool call, at the end of the choice, in the provider's order.
    fn tool_call(&mut self, call: &ToolCall, out: &mut Vec<u8>);
    /// The choice finished: close whatever block or item is open.
    fn close(&mut self, out: &mut Vec<u8>);
    /// The stream completed.
    fn complete(&mut self, end: &StreamEnd<'_>, out: &mut Vec<u8>);
    /// The stream failed: an error chunk, or cut before its finish reason. `code` names which.
    fn fail(&mut self, message: &str, code: &str, end: &StreamEnd<'_>, out: &mut Vec<u8>);
}

/// Feeds a Chat stream, in chunks cut anywhere, to a translation. Text goes out as it arrives; tool
/// calls are assembled per index and go out whole when the choice finishes: providers interleave
/// the deltas of parallel calls, repeat or omit ids, while the client's APIs want each call's
/// block or item complete before the next.
#[derive(Debug)]
pub(crate) struct ChatStream<E> {
    parser: SseParser,
    pub(crate) events: E,
    started: bool,
    done: bool,
    refused: bool,
    id: String,
    calls: std::collections::BTreeMap<u64, ToolCall>,
    called_tools: bool,
    finish_reason: Option<String>,
    usage: Option<Value>,
}

impl<E: ChatEvents> ChatStream<E> {
    pub(crate) fn new(events: E) -> Self {
        ChatStream {
            parser: SseParser::new(),
            events,
            started: false,
            done: false,
            refused: false,
            id: String::new(),
            calls: std::collections::BTreeMap::new(),
            called_tools: false,
            finish_reason: None,
            usage: None,
        }
    }

    fn end(&mut self) -> (StreamEnd<'_>, &mut E) {
        (
            StreamEnd {
                finish_reason: self.finish_reason.as_deref(),
                refused: self.refused,
                called_tools: self.called_tools,
                usage: self.usage.as_ref(),
            },
            &mut self.events,
        )
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        self.done = true;
        self.flush_calls(out);
        let (end, events) = self.end();
        events.complete(&end, out);
    }

    fn fail(&mut self, message: &str, code: &str, out: &mut Vec<u8>) {
        self.done = true;
        let (end, events) = self.end();
        events.fail(message, code, &end, out);
    }

    /// The assembled tool calls go out, in index order.
    fn flush_calls(&mut self, out: &mut Vec<u8>) {
        let calls = std::mem::take(&mut self.calls);
        for (position, (_, mut call)) in calls.into_iter().enumerate() {
            call.id = call_id(Some(&call.id), &self.id, position);
            self.events.tool_call(&call, out);
            self.called_tools = true;
        }
    }

    fn handle(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if event.data.trim() == "[DONE]" {
            if self.started {
                self.complete(out);
            } else {
                self.fail(
                    "The provider's stream ended before the response began.",
                    "server_error",
                    out,
                );
            }
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The provider reported an error mid-stream.");
            self.fail(message, "server_error", out);
            return;
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            // A chunk without choices: usage, or Azure's prompt filter results before the answer.
            return;
        };
        if !self.started {
            self.started = true;
            self.id = chunk
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            self.events.start(&chunk, out);
        }
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        for key in ["content", "refusal"] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                self.events.text(text, out);
                if key == "refusal" && !text.is_empty() {
                    self.refused = true;
                }
            }
        }
        for (position, call) in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = call
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(position as u64);
            let entry = self.calls.entry(index).or_default();
            for (field, pointer) in [(&mut entry.id, "/id"), (&mut entry.name, "/function/name")] {
                if let Some(value) = call.pointer(pointer).and_then(Value::as_str) {
                    if field.is_empty() {
                        value.clone_into(field);
                    }
                }
            }
            if let Some(arguments) = call.pointer("/function/arguments").and_then(Value::as_str) {
                entry.arguments.push_str(arguments);
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
            self.events.close(out);
            self.flush_calls(out);
        }
    }

    /// Feeds a chunk of the provider's stream; returns the client's events it completes.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in self.parser.push(chunk) {
            self.handle(&event, &mut out);
        }
        out
    }

    /// The provider's stream ended. One that gave its finish reason but no `[DONE]` is complete;
    /// one cut off before that fails, never silently.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(event) = self.parser.finish() {
            self.handle(&event, &mut out);
        }
        if !self.done {
            if self.finish_reason.is_some() {
                self.complete(&mut out);
            } else {
                self.fail(
                    "The provider's stream ended before the response was complete.",
                    "incomplete_stream",
                    &mut out,
                );
            }
        }
        out
    }
}

/// Test helpers shared by the translations' tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::sse::SseParser;
    use serde_json::{json, Value};

    /// A Chat stream with text, then a tool call in three deltas, its finish reason and usage.
    pub fn chat_stream() -> String {
        let mut s = String::new();
        for chunk in [
            json!({"id": "chatcmpl-7", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "chatcmpl-7", "model": "m", "choices": [{"index": 0, "delta": {"content": "Hello "}}]}),
            json!({"id": "chatcmpl-7", "model": "m", "choices": [{"index": 0, "delta": {"content": "world"}}]}),
            json!({"id": "chatcmpl-7", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]}}]}),
            json!({"id": "chatcmpl-7", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}}]}),
            json!({"id": "chatcmpl-7", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}}]}),
            json!({"id": "chatcmpl-7", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "chatcmpl-7", "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}),
        ] {
            s.push_str(&format!("data: {chunk}\n\n"));
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    /// Named SSE events, parsed.
    pub fn events(stream: &[u8]) -> Vec<(String, Value)> {
        let mut parser = SseParser::new();
        let mut all = parser.push(stream);
        all.extend(parser.finish());
        all.into_iter()
            .map(|e| {
                (
                    e.event.unwrap_or_default(),
                    serde_json::from_str(&e.data).unwrap_or(Value::Null),
                )
            })
            .collect()
    }
}
