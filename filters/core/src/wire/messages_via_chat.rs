//! Anthropic Messages clients on OpenAI-format providers: a `/v1/messages` request becomes a Chat
//! Completions request, and the answer (JSON, SSE, errors) comes back as Anthropic's, so Claude Code
//! and the anthropic SDK reach every model.

use crate::anthropic::{json_object, set_field, text_of, write_event};
use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind};
use crate::usage::estimate_tokens;
use crate::wire::chat_stream::{call_id, ChatEvents, ChatStream, ChatUsage, StreamEnd, ToolCall};
use serde_json::{json, Map, Value};

/// The Chat Completions request, and what translating its answer needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub body: Vec<u8>,
    pub stream: bool,
}

fn image_url(source: &Value) -> Result<String, String> {
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or("an image `source` needs `media_type`")?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or("an image `source` needs `data`")?;
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| "an image `source` of type url needs `url`".to_string()),
        Some(other) => Err(format!(
            "image sources of type `{other}` are not supported by OpenAI-format providers"
        )),
        None => Err("an image needs `source.type`".to_string()),
    }
}

/// A `document` block as a Chat content part: plain text inline, a base64 PDF as a file part.
fn document_part(block: &Value) -> Result<Value, String> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let text = match source.get("type").and_then(Value::as_str) {
        Some("text") => source
            .get("data")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        Some("content") => text_of(source.get("content").unwrap_or(&Value::Null)),
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("application/pdf");
            let data = source.get("data").and_then(Value::as_str).unwrap_or("");
            let name = block
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            return Ok(json!({"type": "file", "file": {
                "filename": name, "file_data": format!("data:{media};base64,{data}")}}));
        }
        other => {
            return Err(format!(
                "documents with source type `{}` are not supported by OpenAI-format providers",
                other.unwrap_or("none")
            ))
        }
    };
    let title = block.get("title").and_then(Value::as_str);
    Ok(json!({"type": "text", "text": match title {
        Some(title) => format!("{title}\n\n{text}"),
        None => text,
    }}))
}

/// A user turn's blocks: tool results become `tool` messages (they answer the previous assistant
/// turn, so they come first), everything else one user message.
fn user_turn(content: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let blocks = match content {
        Value::String(text) => {
            out.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err("`content` must be a string or an array of blocks".to_string()),
    };
    let mut parts = Vec::new();
    // Images a tool returned: Chat's tool messages carry text only, so they follow as user content.
    let mut tool_images = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") => {
                let url = image_url(block.get("source").unwrap_or(&Value::Null))?;
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("document") => parts.push(document_part(block)?),
            Some("search_result") => {
                let mut text = String::new();
                for key in ["title", "source"] {
                    if let Some(value) = block.get(key).and_then(Value::as_str) {
                        text.push_str(value);
                        text.push('\n');
                    }
                }
                text.push_str(&text_of(block.get("content").unwrap_or(&Value::Null)));
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("tool_result") => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or("a `tool_result` block needs `tool_use_id`")?;
                let content = block.get("content").unwrap_or(&Value::Null);
                let mut text = text_of(content);
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text = format!("Error: {text}");
                }
                for image in content.as_array().into_iter().flatten() {
                    if image.get("type").and_then(Value::as_str) == Some("image") {
                        let url = image_url(image.get("source").unwrap_or(&Value::Null))?;
                        tool_images.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                }
                out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
            }
            // Reasoning from an earlier Anthropic answer: no Chat counterpart.
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(format!(
                    "content blocks of type `{other}` are not supported by OpenAI-format providers"
                ))
            }
            None => return Err("every content block needs a `type`".to_string()),
        }
    }
    if !tool_images.is_empty() {
        tool_images.insert(
            0,
            json!({"type": "text", "text": "(images returned by the tool above)"}),
        );
        out.push(json!({"role": "user", "content": tool_images}));
    }
    if !parts.is_empty() {
        out.push(json!({"role": "user", "content": parts}));
    }
    Ok(())
}

fn assistant_turn(content: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let blocks = match content {
        Value::String(text) => {
            out.push(json!({"role": "assistant", "content": text}));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err("`content` must be a string or an array of blocks".to_string()),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").and_then(Value::as_str).unwrap_or(""),
                "type": "function",
                "function": {
                    "name": block.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            Some("thinking" | "redacted_thinking") => {}
            Some(other) => {
                return Err(format!(
                    "assistant blocks of type `{other}` are not supported by OpenAI-format providers"
                ))
            }
            None => return Err("every content block needs a `type`".to_string()),
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) }});
    if !calls.is_empty() {
        set_field(&mut message, "tool_calls", Value::Array(calls));
    }
    out.push(message);
    Ok(())
}

fn tool_choice(choice: &Value) -> Result<(Option<Value>, bool), String> {
    let disable_parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true);
    let mapped = match choice.get("type").and_then(Value::as_str) {
        None => None,
        Some("auto") => Some(json!("auto")),
        Some("any") => Some(json!("required")),
        Some("none") => Some(json!("none")),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or("`tool_choice.name` is required for type `tool`")?;
            Some(json!({"type": "function", "function": {"name": name}}))
        }
        Some(other) => return Err(format!("`tool_choice` type `{other}` is not supported")),
    };
    Ok((mapped, disable_parallel))
}

/// Translates an Anthropic `/v1/messages` body into an OpenAI `/v1/chat/completions` body. `model`
/// replaces the request's (a provider's `model_map`); `max_output` caps `max_tokens` at what the
/// provider's model can produce (Claude Code asks for 32,000; gpt-4o stops at 16,384 and refuses
/// more). Errors are messages for a 400.
pub fn messages_request_to_chat(
    body: &[u8],
    model: Option<&str>,
    max_output: Option<u64>,
) -> Result<ChatRequest, String> {
    let (chat, stream) = messages_object_to_chat(&json_object(body)?, model, max_output)?;
    let body = serde_json::to_vec(&Value::Object(chat)).map_err(|e| e.to_string())?;
    Ok(ChatRequest { body, stream })
}

/// [`messages_request_to_chat`] on a parsed body: the Chat request and whether it streams.
pub(crate) fn messages_object_to_chat(
    request: &Map<String, Value>,
    model: Option<&str>,
    max_output: Option<u64>,
) -> Result<(Map<String, Value>, bool), String> {
    let model = match model {
        Some(model) => model.to_string(),
        None => request
            .get("model")
            .and_then(Value::as_str)
            .ok_or("model: Field required")?
            .to_string(),
    };
    let input = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("messages: must be a non-empty array")?;

    let mut messages = Vec::with_capacity(input.len() + 1);
    let system = match request.get("system") {
        Some(Value::String(text)) => text.clone(),
        Some(system @ Value::Array(_)) => text_of(system),
        _ => String::new(),
    };
    if !system.is_empty() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for (index, message) in input.iter().enumerate() {
        let content = message.get("content").unwrap_or(&Value::Null);
        let turn = match message.get("role").and_then(Value::as_str) {
            Some("user") => user_turn(content, &mut messages),
            Some("assistant") => assistant_turn(content, &mut messages),
            // Mid-conversation instructions (Claude Code sends them): a Chat system message.
            Some("system") => {
                messages.push(json!({"role": "system", "content": text_of(content)}));
                Ok(())
            }
            other => Err(format!(
                "role `{}` is not supported (use user, assistant or system)",
                other.unwrap_or("")
            )),
        };
        turn.map_err(|e| format!("messages.{index}: {e}"))?;
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    out.insert("messages".into(), Value::Array(messages));
    // OpenAI's current name for the limit (reasoning models refuse `max_tokens`).
    if let Some(max) = request.get("max_tokens").and_then(Value::as_u64) {
        let max = max_output.map_or(max, |cap| max.min(cap));
        out.insert("max_completion_tokens".into(), json!(max));
    }
    for field in ["temperature", "top_p"] {
        if let Some(value) = request.get(field).filter(|v| v.is_number()) {
            out.insert(field.into(), value.clone());
        }
    }
    if let Some(stops) = request
        .get("stop_sequences")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    {
        out.insert("stop".into(), Value::Array(stops.clone()));
    }
    if let Some(user) = request
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        // OpenAI takes a short end-user id; Claude Code sends a JSON document of session ids.
        .filter(|user| user.len() <= 64)
    {
        out.insert("user".into(), Value::String(user.to_string()));
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let mut mapped = Vec::with_capacity(tools.len());
        for (index, tool) in tools.iter().enumerate() {
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(other) => {
                    return Err(format!(
                        "tools.{index}: Anthropic server tool `{other}` is not supported by OpenAI-format providers; declare it as a custom tool"
                    ))
                }
            }
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tools.{index}.name: Field required"))?;
            let mut function = json!({
                "name": name,
                "parameters": tool.get("input_schema").cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(description) = tool.get("description") {
                set_field(&mut function, "description", description.clone());
            }
            mapped.push(json!({"type": "function", "function": function}));
        }
        if !mapped.is_empty() {
            out.insert("tools".into(), Value::Array(mapped));
        }
    }
    if let Some(choice) = request.get("tool_choice") {
        let (mapped, disable_parallel) = tool_choice(choice)?;
        if let Some(mapped) = mapped {
            out.insert("tool_choice".into(), mapped);
        }
        if disable_parallel && out.contains_key("tools") {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        // The usage chunk feeds `message_delta.usage`; the client never sees it.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok((out, stream))
}

/// Anthropic's stop reason for Chat's finish reason: a refusal is `refusal`, and an answer that
/// called tools is `tool_use` even from servers that say `stop` then.
fn stop_reason(finish_reason: Option<&str>, refused: bool, called_tools: bool) -> &'static str {
    match finish_reason {
        Some("length") => "max_tokens",
        _ if refused => "refusal",
        Some("content_filter") => "refusal",
        Some("tool_calls" | "function_call") => "tool_use",
        _ if called_tools => "tool_use",
        _ => "end_turn",
    }
}

/// `msg_...` from a `chatcmpl-...` id.
fn message_id(chat_id: &str) -> String {
    format!(
        "msg_{}",
        chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id)
    )
}

/// Chat usage in Anthropic's shape: Anthropic's `input_tokens` excludes cached tokens.
fn anthropic_usage(usage: Option<&Value>, estimate: (u64, u64)) -> Value {
    let ChatUsage {
        input,
        output,
        cached,
        estimated,
        ..
    } = ChatUsage::read(usage, estimate);
    let mut usage = json!({
        "input_tokens": input - cached,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": output,
    });
    if estimated {
        // llm_usage reads it: the charge is marked estimated, as for any provider without usage.
        set_field(&mut usage, "estimated", Value::Bool(true));
    }
    usage
}

/// Translates a Chat Completions JSON answer into an Anthropic message. `request_bytes` estimates the
/// input when the provider reports no usage.
pub fn chat_response_to_messages(body: &[u8], request_bytes: usize) -> Result<Vec<u8>, String> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| "the provider's response is not valid JSON".to_string())?;
    let choice = response
        .pointer("/choices/0")
        .ok_or("the provider's response has no choices")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    let mut output_chars = 0;
    for key in ["content", "refusal"] {
        if let Some(text) = message
            .get(key)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            output_chars += text.chars().count();
            content.push(json!({"type": "text", "text": text}));
        }
    }
    let chat_id = response.get("id").and_then(Value::as_str).unwrap_or("");
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (position, call) in calls.into_iter().flatten().enumerate() {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        output_chars += arguments.chars().count();
        content.push(json!({
            "type": "tool_use",
            "id": call_id(call.get("id").and_then(Value::as_str), chat_id, position),
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
            "input": tool_input(arguments),
        }));
    }
    let refused = message
        .get("refusal")
        .and_then(Value::as_str)
        .is_some_and(|r| !r.is_empty());
    let reason = stop_reason(
        choice.get("finish_reason").and_then(Value::as_str),
        refused,
        calls.is_some_and(|c| !c.is_empty()),
    );
    let out = json!({
        "id": message_id(chat_id),
        "type": "message",
        "role": "assistant",
        "model": response.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": null,
        "usage": anthropic_usage(
            response.get("usage"),
            (estimate_tokens(request_bytes), estimate_tokens(output_chars)),
        ),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// Tool arguments as Anthropic's `input` object. Arguments that are not a JSON object (a model's
/// malformed output) are kept whole under `arguments` rather than dropped.
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(value @ Value::Object(_)) => value,
        _ => json!({ "arguments": arguments }),
    }
}

/// A provider error (OpenAI shape, or anything) in Anthropic's shape, with the provider's status.
pub fn error_to_anthropic(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("The provider answered with status {status}."));
    let kind = match status {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        503 | 529 => ErrorKind::Unavailable,
        _ if status >= 500 => ErrorKind::BadGateway,
        _ => ErrorKind::InvalidRequest,
    };
    let reply = error_reply(ApiFlavor::Anthropic, kind, &message, ErrorDetail::default());
    (status, reply.body.into_bytes())
}

/// Turns a Chat Completions SSE stream into Anthropic Messages events as it arrives.
#[derive(Debug)]
pub struct ChatToMessagesStream(ChatStream<MessagesEvents>);

#[derive(Debug)]
struct MessagesEvents {
    request_bytes: usize,
    /// The open text block's index.
    open_text: Option<usize>,
    next_index: usize,
    output_chars: usize,
}

impl ChatToMessagesStream {
    /// `request_bytes` estimates the input when the provider reports no usage.
    pub fn new(request_bytes: usize) -> Self {
        ChatToMessagesStream(ChatStream::new(MessagesEvents {
            request_bytes,
            open_text: None,
            next_index: 0,
            output_chars: 0,
        }))
    }

    /// Feeds a chunk of the provider's stream; returns the Anthropic events it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.0.push(chunk)
    }

    /// The provider's stream ended: complete, or an `error` event if it was cut off.
    pub fn finish(&mut self) -> Vec<u8> {
        self.0.finish()
    }
}

impl MessagesEvents {
    fn open_block(&mut self, start: Value, out: &mut Vec<u8>) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        write_event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
            out,
        );
        index
    }

    fn usage(&self, end: &StreamEnd<'_>) -> Value {
        anthropic_usage(
            end.usage,
            (
                estimate_tokens(self.request_bytes),
                estimate_tokens(self.output_chars),
            ),
        )
    }
}

impl ChatEvents for MessagesEvents {
    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        let id = message_id(chunk.get("id").and_then(Value::as_str).unwrap_or(""));
        // The input is known only at the end; until then, what was sent, estimated.
        write_event(
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": id, "type": "message", "role": "assistant", "content": [],
                "model": chunk.get("model").cloned().unwrap_or(Value::Null),
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": estimate_tokens(self.request_bytes), "output_tokens": 0},
            }}),
            out,
        );
    }

    fn text(&mut self, text: &str, out: &mut Vec<u8>) {
        if text.is_empty() {
            return;
        }
        self.output_chars += text.chars().count();
        let index = match self.open_text {
            Some(index) => index,
            None => {
                let index = self.open_block(json!({"type": "text", "text": ""}), out);
                self.open_text = Some(index);
                index
            }
        };
        write_event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": text}}),
            out,
        );
    }

    fn tool_call(&mut self, call: &ToolCall, out: &mut Vec<u8>) {
        let index = self.open_block(
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": {}}),
            out,
        );
        if !call.arguments.is_empty() {
            self.output_chars += call.arguments.chars().count();
            write_event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": call.arguments}}),
                out,
            );
        }
        write_event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
            out,
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(index) = self.open_text.take() {
            write_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
                out,
            );
        }
    }

    /// The end of the message: stop reason and usage, then `message_stop`.
    fn complete(&mut self, end: &StreamEnd<'_>, out: &mut Vec<u8>) {
        self.close(out);
        let reason = stop_reason(end.finish_reason, end.refused, end.called_tools);
        write_event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": null},
                    "usage": self.usage(end)}),
            out,
        );
        write_event("message_stop", &json!({"type": "message_stop"}), out);
    }

    fn fail(&mut self, message: &str, _code: &str, _end: &StreamEnd<'_>, out: &mut Vec<u8>) {
        write_event(
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
            out,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::chat_stream::fixtures::{chat_stream, events};

    fn translate(request: Value) -> Value {
        let out = messages_request_to_chat(request.to_string().as_bytes(), None, None).unwrap();
        serde_json::from_slice(&out.body).unwrap()
    }

    #[test]
    fn request_with_system_tools_images_and_tool_results() {
        let chat = translate(json!({
            "model": "gpt-4o-mini", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "metadata": {"user_id": "u-1"},
            "stop_sequences": ["END"], "temperature": 0.2, "top_k": 5,
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "x"},
                    {"type": "text", "text": "Calling."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "Thanks"}]}
            ]
        }));
        assert_eq!(chat["model"], "gpt-4o-mini");
        assert_eq!(chat["max_completion_tokens"], 100);
        assert_eq!(chat["stop"], json!(["END"]));
        assert_eq!(chat["user"], "u-1");
        assert_eq!(chat["stream_options"]["include_usage"], true);
        assert_eq!(chat["tool_choice"], "required");
        assert_eq!(chat["parallel_tool_calls"], false);
        assert!(chat.get("top_k").is_none());
        assert_eq!(chat["tools"][0]["function"]["name"], "get_weather");
        let messages = chat["messages"].as_array().unwrap();
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            messages[1]["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAA"
        );
        assert_eq!(messages[2]["content"], "Calling.");
        assert_eq!(
            messages[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(
            messages[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"})
        );
        assert_eq!(messages[4]["role"], "user");
        assert_eq!(messages.len(), 5);
    }

    #[test]
    fn unsupported_inputs_name_the_field() {
        for (request, expect) in [
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                       "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools.0",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "container_upload"}]}]}),
                "messages.0",
            ),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "role `tool`",
            ),
        ] {
            let err =
                messages_request_to_chat(request.to_string().as_bytes(), None, None).unwrap_err();
            assert!(err.contains(expect), "{err}");
        }
        assert!(messages_request_to_chat(b"{", None, None).is_err());
        assert!(messages_request_to_chat(b"[]", None, None).is_err());
    }

    #[test]
    fn json_answer_with_tool_calls_and_cached_usage() {
        let chat = json!({
            "id": "chatcmpl-9", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check.",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                               {"id": "call_2", "type": "function",
                                "function": {"name": "broken", "arguments": "{not json"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27,
                      "prompt_tokens_details": {"cached_tokens": 5}}
        });
        let out: Value = serde_json::from_slice(
            &chat_response_to_messages(chat.to_string().as_bytes(), 0).unwrap(),
        )
        .unwrap();
        assert_eq!(out["id"], "msg_9");
        assert_eq!(out["type"], "message");
        assert_eq!(out["stop_reason"], "tool_use");
        assert_eq!(
            out["content"][0],
            json!({"type": "text", "text": "Let me check."})
        );
        assert_eq!(out["content"][1]["input"], json!({"city": "Paris"}));
        assert_eq!(
            out["content"][2]["input"],
            json!({"arguments": "{not json"})
        );
        assert_eq!(out["usage"]["input_tokens"], 15);
        assert_eq!(out["usage"]["cache_read_input_tokens"], 5);
        assert_eq!(out["usage"]["output_tokens"], 7);
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        for (finish, stop) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
            ("content_filter", "refusal"),
        ] {
            let chat = json!({"id": "chatcmpl-1", "choices": [{"finish_reason": finish,
                "message": {"role": "assistant", "content": "x"}}]});
            let out: Value = serde_json::from_slice(
                &chat_response_to_messages(chat.to_string().as_bytes(), 400).unwrap(),
            )
            .unwrap();
            assert_eq!(out["stop_reason"], stop);
            // No usage from the provider: estimated, never zero.
            assert_eq!(out["usage"]["input_tokens"], 100);
            assert_eq!(out["usage"]["output_tokens"], 1);
        }
    }

    #[test]
    fn errors_take_anthropics_shape() {
        let (status, body) = error_to_anthropic(
            429,
            br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(status, 429);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "rate_limit_error");
        assert_eq!(body["error"]["message"], "Rate limit reached");
        let (status, body) = error_to_anthropic(502, b"<html>bad gateway</html>");
        assert_eq!(status, 502);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "api_error");
    }

    #[test]
    fn stream_becomes_the_full_event_sequence_whatever_the_chunking() {
        let source = chat_stream();
        let mut whole = ChatToMessagesStream::new(0);
        let mut expected = whole.push(source.as_bytes());
        expected.extend(whole.finish());
        let names: Vec<String> = events(&expected).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        let parsed = events(&expected);
        assert_eq!(parsed[0].1["message"]["id"], "msg_7");
        assert_eq!(parsed[5].1["content_block"]["type"], "tool_use");
        assert_eq!(parsed[5].1["content_block"]["id"], "call_1");
        assert_eq!(parsed[5].1["index"], 1);
        // A tool call goes out whole: its arguments in one delta.
        assert_eq!(parsed[6].1["delta"]["partial_json"], "{\"a\":1}");
        assert_eq!(parsed[8].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(parsed[8].1["usage"]["output_tokens"], 9);
        assert_eq!(parsed[8].1["usage"]["input_tokens"], 12);
        assert!(parsed[8].1["usage"].get("estimated").is_none());
        // Split at every byte: the same events.
        for split in 1..source.len() {
            let mut t = ChatToMessagesStream::new(0);
            let mut out = t.push(&source.as_bytes()[..split]);
            out.extend(t.push(&source.as_bytes()[split..]));
            out.extend(t.finish());
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn a_cut_stream_ends_in_an_error_event_and_an_error_chunk_is_relayed() {
        let mut t = ChatToMessagesStream::new(0);
        let mut out = t.push(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n");
        out.extend(t.finish());
        let parsed = events(&out);
        let last = parsed.last().unwrap();
        assert_eq!(last.0, "error");
        assert_eq!(last.1["error"]["type"], "api_error");

        let mut t = ChatToMessagesStream::new(0);
        let mut out = t.push(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n");
        out.extend(t.finish());
        let parsed = events(&out);
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1["error"]["message"], "overloaded");

        // A finish reason without usage or [DONE]: complete, with estimated usage.
        let mut t = ChatToMessagesStream::new(40);
        let mut out = t.push(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":\"length\"}]}\n\n");
        out.extend(t.finish());
        let parsed = events(&out);
        let delta = &parsed[parsed.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
        assert_eq!(delta["usage"]["input_tokens"], 10);
        assert_eq!(delta["usage"]["output_tokens"], 2);
    }

    /// What real servers send besides OpenAI's own stream: Azure's first chunk (no choices, empty
    /// id, prompt filter results), parallel calls whose deltas interleave, ids repeated on every
    /// delta, `null` or missing ids, and `stop` as the finish reason of an answer that called tools.
    #[test]
    fn provider_quirks_still_make_whole_tool_calls() {
        let chunks = [
            json!({"id": "", "model": "", "choices": [], "prompt_filter_results": [{"prompt_index": 0}]}),
            json!({"id": "chatcmpl-9", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
                {"index": 0, "id": "call_a", "function": {"name": "f", "arguments": ""}},
                {"index": 1, "id": null, "function": {"name": "g", "arguments": "{\"y\":"}}]}}]}),
            json!({"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 0, "id": "call_a", "function": {"arguments": "{\"x\":1}"}}]}}]}),
            json!({"id": "chatcmpl-9", "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": 1, "function": {"arguments": "2}"}}]}, "finish_reason": "stop"}]}),
        ];
        let stream: String = chunks
            .iter()
            .map(|c| format!("data: {c}\n\n"))
            .collect::<String>()
            + "data: [DONE]\n\n";
        let mut t = ChatToMessagesStream::new(100);
        let mut out = t.push(stream.as_bytes());
        out.extend(t.finish());
        let parsed = events(&out);
        assert_eq!(parsed[0].1["message"]["id"], "msg_9");
        assert_eq!(parsed[0].1["message"]["model"], "gpt-4o");
        assert_eq!(
            parsed[0].1["message"]["usage"]["input_tokens"], 25,
            "estimated until the end"
        );
        let starts: Vec<&Value> = parsed
            .iter()
            .filter(|(n, _)| n == "content_block_start")
            .map(|(_, v)| &v["content_block"])
            .collect();
        assert_eq!(starts.len(), 2);
        assert_eq!(starts[0]["id"], "call_a");
        assert_eq!(
            starts[1]["id"], "call_9_1",
            "a made-up id for the call without one"
        );
        let arguments: Vec<&str> = parsed
            .iter()
            .filter_map(|(_, v)| v.pointer("/delta/partial_json").and_then(Value::as_str))
            .collect();
        assert_eq!(arguments, ["{\"x\":1}", "{\"y\":2}"]);
        let delta = &parsed[parsed.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            delta["usage"]["estimated"], true,
            "no usage from the provider"
        );
    }
}
