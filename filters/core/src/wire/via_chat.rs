//! What the translations to providers reached through Chat Completions (Gemini, Bedrock) share:
//! reading a Chat request's common fields, and writing `chat.completion.chunk` events.

use serde_json::{json, Map, Value};

/// Chat fields no such provider can express: refused with 400 rather than dropped.
pub(crate) fn refuse_unexpressible(
    request: &Map<String, Value>,
    provider: &str,
) -> Result<(), String> {
    let unsupported = |what: &str| Err(format!("{what} is not supported on {provider} providers"));
    if request
        .get("n")
        .and_then(Value::as_u64)
        .is_some_and(|n| n > 1)
    {
        return unsupported("`n` above 1");
    }
    if request.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return unsupported("`logprobs`");
    }
    if request.get("audio").is_some_and(|a| !a.is_null()) {
        return unsupported("audio output");
    }
    Ok(())
}

/// `max_completion_tokens`, else `max_tokens`.
pub(crate) fn max_tokens(request: &Map<String, Value>) -> Option<u64> {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|f| request.get(*f).and_then(Value::as_u64))
}

/// `stop` as a non-empty array of sequences.
pub(crate) fn stop_sequences(request: &Map<String, Value>) -> Option<Value> {
    match request.get("stop") {
        Some(Value::String(stop)) if !stop.is_empty() => Some(json!([stop])),
        Some(Value::Array(stops)) if !stops.is_empty() => Some(Value::Array(stops.clone())),
        _ => None,
    }
}

/// Whether the client asked for a stream, and for its usage chunk.
pub(crate) fn stream_flags(request: &Map<String, Value>) -> (bool, bool) {
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    (stream, include_usage)
}

/// A tool call of an assistant message.
pub(crate) struct AssistantCall<'a> {
    pub id: Option<&'a str>,
    pub name: &'a str,
    /// The arguments parsed: an object as written; anything else a model wrote inside one.
    pub arguments: Value,
}

/// The tool calls of `messages[i]` (an assistant message).
pub(crate) fn assistant_calls(message: &Value, i: usize) -> Result<Vec<AssistantCall<'_>>, String> {
    let mut calls = Vec::new();
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or(format!("`messages[{i}].tool_calls` need a function name"))?;
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let arguments = match serde_json::from_str::<Value>(arguments) {
            Ok(Value::Object(object)) => Value::Object(object),
            _ if arguments.trim().is_empty() => json!({}),
            _ => json!({ "arguments": arguments }),
        };
        calls.push(AssistantCall {
            id: call.get("id").and_then(Value::as_str),
            name,
            arguments,
        });
    }
    Ok(calls)
}

/// A function tool of the request.
pub(crate) struct FunctionTool<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub parameters: Option<&'a Value>,
}

/// The request's tools, all of them functions (others are refused, naming the provider).
pub(crate) fn function_tools<'a>(
    request: &'a Map<String, Value>,
    provider: &str,
) -> Result<Vec<FunctionTool<'a>>, String> {
    let mut tools = Vec::new();
    for (i, tool) in request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(format!(
                "`tools[{i}]`: only function tools are supported on {provider} providers"
            ));
        }
        let function = tool
            .get("function")
            .ok_or(format!("`tools[{i}].function` is missing"))?;
        tools.push(FunctionTool {
            name: function
                .get("name")
                .and_then(Value::as_str)
                .ok_or(format!("`tools[{i}].function.name` is missing"))?,
            description: function
                .get("description")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty()),
            parameters: function.get("parameters").filter(|p| p.is_object()),
        });
    }
    Ok(tools)
}

/// Appends a turn of `role`, or its parts to the last turn when that has the same role: these
/// providers want roles to alternate. `key` names the turn's parts (`parts`, `content`).
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.get("role").and_then(Value::as_str) == Some(role) => {
            if let Some(existing) = last.get_mut(key).and_then(Value::as_array_mut) {
                existing.extend(parts);
            }
        }
        _ => {
            let mut turn = Map::new();
            turn.insert("role".into(), json!(role));
            turn.insert(key.into(), Value::Array(parts));
            turns.push(Value::Object(turn));
        }
    }
}

/// A Chat request translated for such a provider, and what its answer's translation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct TranslatedRequest {
    pub body: Vec<u8>,
    pub stream: bool,
    pub include_usage: bool,
}

/// What a provider does with a user's content parts: which text it refuses (`blank`), and its
/// image part for a data URL (`image(mime, base64 data)`).
pub(crate) struct ContentRules<'a> {
    pub provider: &'a str,
    pub blank: fn(&str) -> bool,
    pub image: &'a dyn Fn(&str, &str, usize) -> Result<Value, String>,
}

/// Text parts of a system or assistant content (a string, or text parts), blank ones left out.
pub(crate) fn text_parts(
    content: Option<&Value>,
    i: usize,
    blank: fn(&str) -> bool,
) -> Result<Vec<Value>, String> {
    Ok(match content {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) if blank(text) => Vec::new(),
        Some(Value::String(text)) => vec![json!({ "text": text })],
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .filter(|text| !blank(text))
            .map(|text| json!({ "text": text }))
            .collect(),
        Some(_) => return Err(format!("`messages[{i}].content` must be a string or parts")),
    })
}

/// A user content: text, and images from data URLs (these providers fetch no links).
pub(crate) fn user_parts(
    content: Option<&Value>,
    i: usize,
    rules: &ContentRules<'_>,
) -> Result<Vec<Value>, String> {
    let Some(Value::Array(items)) = content else {
        return text_parts(content, i, rules.blank);
    };
    let provider = rules.provider;
    let mut parts = Vec::new();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = item.get("text").and_then(Value::as_str).unwrap_or("");
                if !(rules.blank)(text) {
                    parts.push(json!({ "text": text }));
                }
            }
            Some("image_url") => {
                let url = item
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let Some((mime, data)) = data_url(url) else {
                    return Err(format!(
                        "`messages[{i}]`: {provider} providers take images as data: URLs (base64), not links"
                    ));
                };
                parts.push((rules.image)(mime, data, i)?);
            }
            Some(other) => {
                return Err(format!(
                    "`messages[{i}]`: content parts of type `{other}` are not supported on {provider} providers"
                ))
            }
            None => return Err(format!("`messages[{i}]`: a content part has no `type`")),
        }
    }
    Ok(parts)
}

/// `(mime type, base64 data)` of a `data:` URL; None for a link.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    url.strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"))
}

/// Writes a translated stream's `chat.completion.chunk` events: the role with the first delta, the
/// finish reason once, the usage chunk when asked for, `[DONE]`.
#[derive(Debug)]
pub(crate) struct ChunkWriter {
    pub id: String,
    pub model: String,
    pub created: u64,
    include_usage: bool,
    started: bool,
    /// The answer ended (a finish reason or an error was sent).
    pub finished: bool,
    /// The provider's usage, as OpenAI's `usage`, for the last chunk.
    pub usage: Option<Value>,
}

impl ChunkWriter {
    pub(crate) fn new(id: String, model: &str, include_usage: bool, created: u64) -> Self {
        ChunkWriter {
            id,
            model: model.to_string(),
            created,
            include_usage,
            started: false,
            finished: false,
            usage: None,
        }
    }

    fn chunk(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// A chunk with `delta` (and `reason`, which ends the answer).
    pub(crate) fn emit(&mut self, mut delta: Value, reason: Option<&str>, out: &mut Vec<u8>) {
        if !self.started {
            set(&mut delta, "role", json!("assistant"));
            self.started = true;
        }
        let choice = json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": reason});
        let chunk = self.chunk(vec![choice]);
        push_event(&chunk, out);
        if reason.is_some() {
            self.finished = true;
        }
    }

    /// An error event of its own, as OpenAI streams carry errors; it ends the answer.
    pub(crate) fn error(&mut self, message: &str, code: Option<&str>, out: &mut Vec<u8>) {
        if self.finished {
            return;
        }
        let mut error = json!({"message": message, "type": "server_error"});
        if let Some(code) = code {
            set(&mut error, "code", json!(code));
        }
        push_event(&json!({ "error": error }), out);
        self.finished = true;
    }

    /// The stream's end: the answer closed if the provider did not, the usage chunk, `[DONE]`.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.finished {
            self.emit(json!({}), Some("stop"), out);
        }
        if self.include_usage {
            if let Some(usage) = self.usage.take() {
                let mut chunk = self.chunk(Vec::new());
                set(&mut chunk, "usage", usage);
                push_event(&chunk, out);
            }
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// `value[key] = new` for an object this crate built (indexing could panic on anything else).
pub(crate) fn set(value: &mut Value, key: &str, new: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_string(), new);
    }
}

pub(crate) fn push_event(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}
