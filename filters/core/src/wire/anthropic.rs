//! OpenAI Chat Completions ⇄ Anthropic Messages translation: requests one way, responses (JSON, SSE and
//! errors) the other, so an OpenAI client can be served by an Anthropic-format provider.

use crate::api::{ApiFlavor, ErrorKind};
use crate::sse::{SseEvent, SseParser};
use serde_json::{json, Map, Value};

/// What the translation needs besides the body.
#[derive(Debug, Clone, Copy)]
pub struct RequestOptions<'a> {
    /// Model to send instead of the request's (a provider's `model_map`).
    pub model: Option<&'a str>,
    /// `max_tokens` when the request sets none (Anthropic requires it).
    pub default_max_tokens: u64,
}

/// The translated request and what the response translation must know.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedRequest {
    pub body: Vec<u8>,
    pub stream: bool,
    pub include_usage: bool,
}

/// The text of a content: a string, or parts (blocks) whose `text` counts, joined by newlines.
pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn image_block(url: &str) -> Result<Value, String> {
    if let Some(data_url) = url.strip_prefix("data:") {
        let (meta, data) = data_url
            .split_once(',')
            .ok_or("an image data URL has no `,`")?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or("image data URLs must be base64 (`data:image/png;base64,...`)")?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}),
        );
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err("`image_url.url` must be an http(s) URL or a base64 data URL".to_string())
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, String> {
    match content {
        Value::String(text) => Ok(if text.is_empty() {
            Vec::new()
        } else {
            vec![json!({"type": "text", "text": text})]
        }),
        Value::Array(parts) => {
            let mut blocks = Vec::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                        if !text.is_empty() {
                            blocks.push(json!({"type": "text", "text": text}));
                        }
                    }
                    Some("image_url") => {
                        let url = part
                            .pointer("/image_url/url")
                            .or_else(|| part.get("image_url"))
                            .and_then(Value::as_str)
                            .ok_or("an `image_url` part needs `image_url.url`")?;
                        blocks.push(image_block(url)?);
                    }
                    Some(other) => {
                        return Err(format!(
                            "content parts of type `{other}` are not supported by Anthropic-format providers"
                        ))
                    }
                    None => return Err("every content part needs a `type`".to_string()),
                }
            }
            Ok(blocks)
        }
        Value::Null => Ok(Vec::new()),
        _ => Err("`content` must be a string or an array of parts".to_string()),
    }
}

/// Appends `blocks` as a `role` message, merging into the previous message of the same role (Anthropic
/// wants user and assistant turns to alternate; OpenAI allows runs, e.g. several tool results).
fn push_turn(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut() {
        if last.get("role").and_then(Value::as_str) == Some(role) {
            if let Some(content) = last.get_mut("content").and_then(Value::as_array_mut) {
                content.extend(blocks);
                return;
            }
        }
    }
    messages.push(json!({"role": role, "content": blocks}));
}

fn tool_choice(choice: &Value, disable_parallel: bool) -> Result<Option<Value>, String> {
    let mut mapped = match choice {
        Value::Null => {
            if !disable_parallel {
                return Ok(None);
            }
            json!({"type": "auto"})
        }
        Value::String(kind) => match kind.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            other => return Err(format!("`tool_choice` `{other}` is not supported")),
        },
        Value::Object(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or("`tool_choice.function.name` is required")?;
            json!({"type": "tool", "name": name})
        }
        _ => return Err("`tool_choice` must be a string or an object".to_string()),
    };
    if disable_parallel {
        if let Some(object) = mapped.as_object_mut() {
            object.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    Ok(Some(mapped))
}

/// Translates an OpenAI `/v1/chat/completions` body into an Anthropic `/v1/messages` body. Errors are
/// messages for a 400 (what is unsupported and how to fix it).
pub fn chat_request_to_messages(
    body: &[u8],
    options: RequestOptions<'_>,
) -> Result<TranslatedRequest, String> {
    chat_object_to_messages(&json_object(body)?, options)
}

/// A request body as a JSON object, or the message for a 400.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err("The request body must be a JSON object.".to_string()),
        Err(_) => Err("The request body is not valid JSON.".to_string()),
    }
}

/// [`chat_request_to_messages`] on a parsed body (a translation from another API hands its Chat
/// request over without writing and reading it again).
pub(crate) fn chat_object_to_messages(
    request: &Map<String, Value>,
    options: RequestOptions<'_>,
) -> Result<TranslatedRequest, String> {
    let model = match options.model {
        Some(model) => model.to_string(),
        None => request
            .get("model")
            .and_then(Value::as_str)
            .ok_or("You must provide a model parameter.")?
            .to_string(),
    };
    let input = request
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or("`messages` must be a non-empty array.")?;
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return Err(
            "`n` greater than 1 is not supported by Anthropic-format providers.".to_string(),
        );
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err("`logprobs` is not supported by Anthropic-format providers.".to_string());
    }
    if let Some(format) = request
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
    {
        if format != "text" {
            return Err(format!(
                "`response_format` `{format}` is not supported by Anthropic-format providers; ask for JSON in the prompt or use a tool."
            ));
        }
    }

    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for (index, message) in input.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let text = text_of(content);
                if !text.is_empty() {
                    system.push(text);
                }
            }
            "user" => {
                let blocks = user_blocks(content).map_err(|e| format!("messages[{index}]: {e}"))?;
                push_turn(&mut messages, "user", blocks);
            }
            "assistant" => {
                let mut blocks = Vec::new();
                let text = text_of(content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in message.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                    let id = call.get("id").and_then(Value::as_str).unwrap_or("");
                    let name = call.pointer("/function/name").and_then(Value::as_str).unwrap_or("");
                    let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or("");
                    let input: Value = if arguments.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(arguments).map_err(|_| {
                            format!("messages[{index}]: tool call arguments must be a JSON object")
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                push_turn(&mut messages, "assistant", blocks);
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("messages[{index}]: a `tool` message needs `tool_call_id`"))?;
                push_turn(
                    &mut messages,
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text_of(content)})],
                );
            }
            other => {
                return Err(format!(
                    "messages[{index}]: role `{other}` is not supported (use system, user, assistant or tool)."
                ))
            }
        }
    }
    if messages.is_empty() {
        return Err("`messages` needs at least one user or assistant message.".to_string());
    }

    let max_tokens = request
        .get("max_completion_tokens")
        .or_else(|| request.get("max_tokens"))
        .and_then(Value::as_u64)
        .unwrap_or(options.default_max_tokens);
    let stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    out.insert("max_tokens".into(), json!(max_tokens));
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    for field in ["temperature", "top_p"] {
        if let Some(value) = request.get(field).filter(|v| v.is_number()) {
            out.insert(field.into(), value.clone());
        }
    }
    match request.get("stop") {
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".into(), json!([stop]));
        }
        Some(Value::Array(stops)) if !stops.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(stops.clone()));
        }
        _ => {}
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    if let Some(user) = request.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let mut mapped = Vec::with_capacity(tools.len());
        for (index, tool) in tools.iter().enumerate() {
            let function = tool
                .get("function")
                .ok_or_else(|| format!("tools[{index}]: only `function` tools are supported"))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tools[{index}].function.name is required"))?;
            let mut entry = json!({
                "name": name,
                "input_schema": function.get("parameters").cloned()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
            if let Some(description) = function.get("description") {
                set_field(&mut entry, "description", description.clone());
            }
            mapped.push(entry);
        }
        if !mapped.is_empty() {
            out.insert("tools".into(), Value::Array(mapped));
        }
    }
    let disable_parallel =
        request.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    if let Some(choice) = tool_choice(
        request.get("tool_choice").unwrap_or(&Value::Null),
        disable_parallel,
    )? {
        out.insert("tool_choice".into(), choice);
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())?;
    Ok(TranslatedRequest {
        body,
        stream,
        include_usage,
    })
}

fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop", // end_turn, stop_sequence, pause_turn
    }
}

/// Token counts from an Anthropic `usage`, in OpenAI's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub output: u64,
}

impl Usage {
    fn absorb(&mut self, usage: &Value) {
        let get = |name: &str| usage.get(name).and_then(Value::as_u64);
        if let Some(v) = get("input_tokens") {
            self.input = v;
        }
        if let Some(v) = get("cache_read_input_tokens") {
            self.cache_read = v;
        }
        if let Some(v) = get("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
        if let Some(v) = get("output_tokens") {
            self.output = v;
        }
    }

    /// OpenAI counts cached tokens inside `prompt_tokens`; Anthropic reports them apart.
    pub fn to_openai(self) -> Value {
        let prompt = self.input + self.cache_read + self.cache_creation;
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output,
            "total_tokens": prompt + self.output,
            "prompt_tokens_details": {"cached_tokens": self.cache_read},
        })
    }
}

fn chat_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

/// Translates an Anthropic Messages JSON response into an OpenAI chat completion.
pub fn messages_response_to_chat(body: &[u8], created: u64) -> Result<Vec<u8>, String> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| "the provider's response is not valid JSON".to_string())?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in response
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {} // thinking and other blocks have no OpenAI counterpart
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::String(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        set_field(&mut message, "tool_calls", Value::Array(tool_calls));
    }
    let mut usage = Usage::default();
    if let Some(u) = response.get("usage") {
        usage.absorb(u);
    }
    let mut out = json!({
        "id": chat_id(response.get("id").and_then(Value::as_str).unwrap_or("")),
        "object": "chat.completion",
        "created": created,
        "model": response.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(response.get("stop_reason").and_then(Value::as_str)),
        }],
    });
    if response.get("usage").is_some() {
        set_field(&mut out, "usage", usage.to_openai());
    }
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// Translates a provider error (Anthropic shape, or anything) into OpenAI's, with the status an OpenAI
/// client expects: Anthropic's 529 (overloaded) becomes 503.
pub fn error_to_openai(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let provider_type = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("The provider answered with status {status}."));
    let status = if status == 529 { 503 } else { status };
    let kind = match status {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::Authentication,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::RequestTooLarge,
        429 => ErrorKind::RateLimited,
        503 => ErrorKind::Unavailable,
        500..=599 => ErrorKind::BadGateway,
        _ => ErrorKind::InvalidRequest,
    };
    let mut reply = crate::api::error_reply(
        ApiFlavor::OpenAi,
        kind,
        &message,
        crate::api::ErrorDetail {
            code: provider_type.as_deref(),
            param: None,
        },
    );
    reply.status = status;
    (status, reply.body.into_bytes())
}

/// Turns an Anthropic Messages SSE stream into OpenAI `chat.completion.chunk` events as it arrives.
#[derive(Debug)]
pub struct StreamTranslator {
    parser: SseParser,
    include_usage: bool,
    created: u64,
    id: String,
    model: Value,
    /// Anthropic content block index → OpenAI tool call index (None for text blocks).
    tool_index: Vec<Option<usize>>,
    tools: usize,
    usage: Usage,
    done: bool,
}

impl StreamTranslator {
    pub fn new(include_usage: bool, created: u64) -> Self {
        StreamTranslator {
            parser: SseParser::new(),
            include_usage,
            created,
            id: chat_id(""),
            model: Value::Null,
            tool_index: Vec::new(),
            tools: 0,
            usage: Usage::default(),
            done: false,
        }
    }

    /// The usage seen so far (input from `message_start`, output from `message_delta`).
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn chunk(&self, delta: Value, finish: Option<&str>, out: &mut Vec<u8>) {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            set_field(&mut chunk, "usage", Value::Null);
        }
        write_data(&chunk, out);
    }

    fn handle(&mut self, event: &SseEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return;
        };
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .or(event.event.as_deref())
            .unwrap_or("");
        match kind {
            "message_start" => {
                let message = data.get("message").unwrap_or(&Value::Null);
                self.id = chat_id(message.get("id").and_then(Value::as_str).unwrap_or(""));
                self.model = message.get("model").cloned().unwrap_or(Value::Null);
                if let Some(usage) = message.get("usage") {
                    self.usage.absorb(usage);
                }
                self.chunk(json!({"role": "assistant", "content": ""}), None, out);
            }
            "content_block_start" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let block = data.get("content_block").unwrap_or(&Value::Null);
                if self.tool_index.len() <= index {
                    self.tool_index.resize(index + 1, None);
                }
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let tool = self.tools;
                    self.tools += 1;
                    if let Some(slot) = self.tool_index.get_mut(index) {
                        *slot = Some(tool);
                    }
                    self.chunk(
                        json!({"tool_calls": [{
                            "index": tool,
                            "id": block.get("id"),
                            "type": "function",
                            "function": {"name": block.get("name"), "arguments": ""},
                        }]}),
                        None,
                        out,
                    );
                }
            }
            "content_block_delta" => {
                let index = data.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                let delta = data.get("delta").unwrap_or(&Value::Null);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").and_then(Value::as_str).unwrap_or("");
                        self.chunk(json!({"content": text}), None, out);
                    }
                    Some("input_json_delta") => {
                        if let Some(Some(tool)) = self.tool_index.get(index) {
                            let partial = delta
                                .get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            self.chunk(
                                json!({"tool_calls": [{"index": tool, "function": {"arguments": partial}}]}),
                                None,
                                out,
                            );
                        }
                    }
                    _ => {} // thinking deltas and signatures have no OpenAI counterpart
                }
            }
            "message_delta" => {
                if let Some(usage) = data.get("usage") {
                    self.usage.absorb(usage);
                }
                let stop = data.pointer("/delta/stop_reason").and_then(Value::as_str);
                self.chunk(json!({}), Some(finish_reason(stop)), out);
            }
            "message_stop" => {
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": self.usage.to_openai(),
                    });
                    write_data(&chunk, out);
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let message = data
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("The provider reported an error mid-stream.");
                let code = data.pointer("/error/type").cloned().unwrap_or(Value::Null);
                write_data(
                    &json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}}),
                    out,
                );
                self.done = true;
            }
            _ => {} // ping, content_block_stop
        }
    }

    /// Feeds a chunk of the provider's stream; returns the OpenAI events it completes (maybe none).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in self.parser.push(chunk) {
            self.handle(&event, &mut out);
        }
        out
    }

    /// The provider's stream ended. If it ended before `message_stop`, the client gets an error event
    /// rather than a stream that silently stops.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(event) = self.parser.finish() {
            self.handle(&event, &mut out);
        }
        if !self.done {
            write_data(
                &json!({"error": {
                    "message": "The provider's stream ended before the response was complete.",
                    "type": "server_error", "param": null, "code": "incomplete_stream",
                }}),
                &mut out,
            );
            self.done = true;
        }
        out
    }
}

/// Sets `key` on a JSON object (a no-op on anything else, where `value[key] = ...` would panic).
pub(crate) fn set_field(value: &mut Value, key: &str, field: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_string(), field);
    }
}

pub(crate) fn write_data(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// An SSE event with its `event:` name, as Anthropic and the Responses API send them.
pub(crate) fn write_event(name: &str, value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    write_data(value, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(request: Value) -> Value {
        let options = RequestOptions {
            model: None,
            default_max_tokens: 4096,
        };
        let out = chat_request_to_messages(request.to_string().as_bytes(), options).unwrap();
        serde_json::from_slice(&out.body).unwrap()
    }

    fn translate_err(request: Value) -> String {
        let options = RequestOptions {
            model: None,
            default_max_tokens: 4096,
        };
        chat_request_to_messages(request.to_string().as_bytes(), options).unwrap_err()
    }

    #[test]
    fn request_basics_system_and_parameters() {
        let out = translate(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "no emojis"}]},
                {"role": "user", "content": "hi"}
            ],
            "max_completion_tokens": 100, "max_tokens": 5,
            "temperature": 0.3, "top_p": 0.9, "stop": "END", "user": "u-1",
            "presence_penalty": 0.5, "seed": 7
        }));
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "system": "be brief\n\nno emojis",
                "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "temperature": 0.3, "top_p": 0.9,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-1"}
            })
        );
    }

    #[test]
    fn default_max_tokens_model_override_and_stream_flags() {
        let options = RequestOptions {
            model: Some("claude-x"),
            default_max_tokens: 777,
        };
        let request = json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
                             "stop": ["a", "b"], "messages": [{"role": "user", "content": "x"}]});
        let out = chat_request_to_messages(request.to_string().as_bytes(), options).unwrap();
        assert!(out.stream && out.include_usage);
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["max_tokens"], 777);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stop_sequences"], json!(["a", "b"]));
    }

    #[test]
    fn images_become_image_blocks() {
        let out = translate(
            json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "high"}}
            ]}]}),
        );
        assert_eq!(
            out["messages"][0]["content"],
            json!([
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ])
        );
        let err = translate_err(
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
        );
        assert!(
            err.contains("messages[0]") && err.contains("http(s)"),
            "{err}"
        );
    }

    #[test]
    fn tools_tool_calls_and_tool_results_round_trip() {
        let out = translate(json!({
            "model": "m",
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
                      {"type": "function", "function": {"name": "noop"}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "messages": [
                {"role": "user", "content": "weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
                {"role": "user", "content": "thanks"}
            ]
        }));
        assert_eq!(
            out["tools"],
            json!([
                {"name": "get_weather", "description": "Weather",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "noop", "input_schema": {"type": "object", "properties": {}}}
            ])
        );
        assert_eq!(
            out["tool_choice"],
            json!({"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                // Consecutive tool results and the next user turn merge into one user message.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "rainy"},
                    {"type": "text", "text": "thanks"}
                ]}
            ])
        );
    }

    #[test]
    fn tool_choice_strings() {
        for (choice, expected) in [
            ("auto", json!({"type": "auto"})),
            ("none", json!({"type": "none"})),
            ("required", json!({"type": "any"})),
        ] {
            let out = translate(json!({"model": "m", "tool_choice": choice,
                                       "messages": [{"role": "user", "content": "x"}]}));
            assert_eq!(out["tool_choice"], expected, "{choice}");
        }
    }

    #[test]
    fn unsupported_requests_are_refused_with_a_reason() {
        for (request, needle) in [
            (
                json!({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
                "`n`",
            ),
            (
                json!({"model": "m", "logprobs": true, "messages": [{"role": "user", "content": "x"}]}),
                "logprobs",
            ),
            (
                json!({"model": "m", "response_format": {"type": "json_object"}, "messages": [{"role": "user", "content": "x"}]}),
                "response_format",
            ),
            (json!({"model": "m", "messages": []}), "non-empty"),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "only system"}]}),
                "at least one user",
            ),
            (
                json!({"model": "m", "messages": [{"role": "function", "content": "x"}]}),
                "role `function`",
            ),
            (
                json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]}),
                "tool_call_id",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "not json"}}]}]}),
                "JSON object",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "input_audio",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
        ] {
            let err = translate_err(request.clone());
            assert!(err.contains(needle), "{request}: {err}");
        }
        let options = RequestOptions {
            model: None,
            default_max_tokens: 1,
        };
        assert!(chat_request_to_messages(b"{oops", options).is_err());
        assert!(chat_request_to_messages(b"[1]", options).is_err());
    }

    #[test]
    fn response_text_and_usage() {
        let anthropic = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2, "output_tokens": 7}
        });
        let out: Value = serde_json::from_slice(
            &messages_response_to_chat(anthropic.to_string().as_bytes(), 1700).unwrap(),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "id": "chatcmpl-msg_1", "object": "chat.completion", "created": 1700, "model": "claude-sonnet-4-5",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there", "refusal": null},
                             "logprobs": null, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 17, "completion_tokens": 7, "total_tokens": 24,
                          "prompt_tokens_details": {"cached_tokens": 5}}
            })
        );
    }

    #[test]
    fn response_tool_use_becomes_tool_calls() {
        let anthropic = json!({
            "id": "msg_2", "model": "c", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "hmm"},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
            "usage": {"input_tokens": 1, "output_tokens": 2}
        });
        let out: Value = serde_json::from_slice(
            &messages_response_to_chat(anthropic.to_string().as_bytes(), 0).unwrap(),
        )
        .unwrap();
        let choice = &out["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert!(messages_response_to_chat(b"not json", 0).is_err());
    }

    #[test]
    fn errors_map_to_openai_shape_and_status() {
        let (status, body) = error_to_openai(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(status, 503);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["message"], "Overloaded");
        assert_eq!(body["error"]["code"], "overloaded_error");
        assert_eq!(body["error"]["type"], "server_error");
        let (status, body) = error_to_openai(400, br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too big"}}"#);
        assert_eq!(status, 400);
        assert_eq!(
            serde_json::from_slice::<Value>(&body).unwrap()["error"]["type"],
            "invalid_request_error"
        );
        let (status, body) = error_to_openai(502, b"<html>bad gateway</html>");
        assert_eq!(status, 502);
        assert!(String::from_utf8(body).unwrap().contains("status 502"));
    }

    const TEXT_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Bonjour \"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"à tous\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":4}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn chunks(out: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .map(|d| {
                if d == "[DONE]" {
                    json!("[DONE]")
                } else {
                    serde_json::from_str(d).unwrap()
                }
            })
            .collect()
    }

    fn run(stream: &str, include_usage: bool, splits: &[usize]) -> Vec<u8> {
        let mut translator = StreamTranslator::new(include_usage, 42);
        let bytes = stream.as_bytes();
        let mut out = Vec::new();
        let mut start = 0;
        for &split in splits.iter().chain(std::iter::once(&bytes.len())) {
            out.extend(translator.push(&bytes[start..split]));
            start = split;
        }
        out.extend(translator.finish());
        out
    }

    #[test]
    fn text_stream_becomes_chunks_with_usage() {
        let events = chunks(&run(TEXT_STREAM, true, &[]));
        assert_eq!(events.len(), 6, "{events:#?}");
        assert_eq!(
            events[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert_eq!(events[0]["id"], "chatcmpl-msg_9");
        assert_eq!(events[0]["model"], "claude-sonnet-4-5");
        assert_eq!(events[0]["object"], "chat.completion.chunk");
        assert_eq!(events[1]["choices"][0]["delta"]["content"], "Bonjour ");
        assert_eq!(events[2]["choices"][0]["delta"]["content"], "à tous");
        assert_eq!(events[3]["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[4]["choices"], json!([]));
        assert_eq!(
            events[4]["usage"],
            json!({"prompt_tokens": 15, "completion_tokens": 4, "total_tokens": 19,
                                              "prompt_tokens_details": {"cached_tokens": 3}})
        );
        assert_eq!(events[5], json!("[DONE]"));
        // Without include_usage: no usage chunk and no usage field.
        let plain = chunks(&run(TEXT_STREAM, false, &[]));
        assert_eq!(plain.len(), 5);
        assert!(plain.iter().all(|c| c.get("usage").is_none()));
    }

    #[test]
    fn every_split_of_the_stream_translates_identically() {
        let whole = run(TEXT_STREAM, true, &[]);
        for split in 0..=TEXT_STREAM.len() {
            assert_eq!(run(TEXT_STREAM, true, &[split]), whole, "split at {split}");
        }
        // Three-way splits at a coarser step.
        for a in (0..TEXT_STREAM.len()).step_by(37) {
            for b in (a..TEXT_STREAM.len()).step_by(53) {
                assert_eq!(run(TEXT_STREAM, true, &[a, b]), whole, "splits at {a}, {b}");
            }
        }
    }

    #[test]
    fn tool_use_stream_becomes_tool_call_deltas() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking.\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let events = chunks(&run(stream, false, &[]));
        let start = &events[2]["choices"][0]["delta"]["tool_calls"][0];
        assert_eq!(start["index"], 0);
        assert_eq!(start["id"], "toolu_1");
        assert_eq!(start["function"]["name"], "get_weather");
        let arguments: String = events
            .iter()
            .filter_map(|e| {
                e.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(arguments, "{\"city\":\"Paris\"}");
        assert_eq!(
            events[events.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
    }

    #[test]
    fn error_event_and_truncated_stream() {
        let errored = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}\n\n",
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        let events = chunks(&run(errored, true, &[]));
        assert_eq!(events.last().unwrap()["error"]["message"], "Overloaded");
        assert!(!events.contains(&json!("[DONE]")));
        let truncated = &TEXT_STREAM[..TEXT_STREAM.find("event: message_delta").unwrap()];
        let events = chunks(&run(truncated, true, &[]));
        assert_eq!(events.last().unwrap()["error"]["code"], "incomplete_stream");
    }
}
