//! OpenAI Responses clients on providers that do not serve `/v1/responses`: the request becomes a
//! Chat Completions request (and, for Anthropic-format providers, a Messages request from that), and
//! the answer (JSON or SSE) comes back as a response object or Responses stream events.
//!
//! The translation is stateless: whatever needs the provider to keep state between requests
//! (`previous_response_id`, `conversation`, `background`, item references, hosted tools) is refused
//! with a 400 naming it; a client that sends the whole conversation in `input` needs none of it.

use crate::anthropic::{
    chat_object_to_messages, json_object, set_field, text_of, write_event, RequestOptions,
    TranslatedRequest,
};
use crate::usage::estimate_tokens;
use crate::wire::chat_stream::{call_id, ChatEvents, ChatStream, ChatUsage, StreamEnd, ToolCall};
use serde_json::{json, Map, Value};

/// What the answer's translation needs from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesContext {
    pub stream: bool,
    /// The request's settings, echoed in the response object as the Responses API does.
    echo: Map<String, Value>,
    request_bytes: usize,
}

/// The Chat Completions request, and the context for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsesRequest {
    pub chat: Vec<u8>,
    pub context: ResponsesContext,
}

/// Request fields that need state on the provider's side, and why they cannot be translated.
const STATEFUL: [(&str, &str); 4] = [
    (
        "previous_response_id",
        "continues a response stored by the provider",
    ),
    (
        "conversation",
        "reads a conversation stored by the provider",
    ),
    ("prompt", "expands a prompt template stored by the provider"),
    (
        "background",
        "runs the response in the provider's background",
    ),
];

fn stateful_error(field: &str, why: &str) -> String {
    format!(
        "`{field}` {why}, and this model's provider does not serve the Responses API: the gateway translates the request statelessly. Send the whole conversation in `input` instead, or use a model whose provider serves /v1/responses."
    )
}

/// A message item's content as Chat content: a string, or parts (text, images, files).
fn message_content(content: &Value, role: &str) -> Result<Value, String> {
    let parts = match content {
        Value::String(_) => return Ok(content.clone()),
        Value::Array(parts) => parts,
        Value::Null => return Ok(Value::String(String::new())),
        _ => return Err("`content` must be a string or an array of parts".to_string()),
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type": "text", "text": text}));
            }
            Some("refusal") => {
                let text = part.get("refusal").and_then(Value::as_str).unwrap_or("");
                out.push(json!({"type": "text", "text": text}));
            }
            Some("input_image") => {
                let url = part
                    .get("image_url")
                    .and_then(Value::as_str)
                    .ok_or("an `input_image` needs `image_url` (file ids need provider state)")?;
                let mut image = json!({"url": url});
                if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                    set_field(&mut image, "detail", detail.clone());
                }
                out.push(json!({"type": "image_url", "image_url": image}));
            }
            Some("input_file") => {
                let mut file = Map::new();
                for key in ["file_data", "file_id", "filename"] {
                    if let Some(value) = part.get(key).filter(|v| v.is_string()) {
                        file.insert(key.into(), value.clone());
                    }
                }
                if !file.contains_key("file_data") && !file.contains_key("file_id") {
                    return Err("an `input_file` needs `file_data` or `file_id`".to_string());
                }
                out.push(json!({"type": "file", "file": file}));
            }
            Some(other) => {
                return Err(format!("content parts of type `{other}` are not supported"))
            }
            None => return Err("every content part needs a `type`".to_string()),
        }
    }
    // Assistant turns in Chat are text: join the parts.
    if role == "assistant" {
        let text: Vec<&str> = out
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        return Ok(Value::String(text.join("")));
    }
    Ok(Value::Array(out))
}

/// The text of a `function_call_output`'s `output`: a string, or parts whose text counts; anything
/// else as the JSON it is.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(_) | Value::Array(_) | Value::Null => text_of(output),
        other => other.to_string(),
    }
}

fn input_items(input: &Value, messages: &mut Vec<Value>) -> Result<(), String> {
    let items = match input {
        Value::String(text) => {
            messages.push(json!({"role": "user", "content": text}));
            return Ok(());
        }
        Value::Array(items) => items,
        _ => return Err("`input` must be a string or an array of items".to_string()),
    };
    for (index, item) in items.iter().enumerate() {
        let at = |e: String| format!("input[{index}]: {e}");
        let kind =
            item.get("type")
                .and_then(Value::as_str)
                .unwrap_or(if item.get("role").is_some() {
                    "message"
                } else {
                    ""
                });
        match kind {
            "message" => {
                let role = item.get("role").and_then(Value::as_str).unwrap_or("");
                let role = match role {
                    "user" | "assistant" | "system" => role,
                    "developer" => "system",
                    other => return Err(at(format!("role `{other}` is not supported"))),
                };
                let content = message_content(item.get("content").unwrap_or(&Value::Null), role)
                    .map_err(at)?;
                // Text after a turn's calls (before their outputs) belongs to that turn: Chat wants
                // the tool messages right after the assistant message that called.
                let joins = role == "assistant"
                    && messages.last().is_some_and(|m| {
                        m.get("role").and_then(Value::as_str) == Some("assistant")
                            && m.get("tool_calls").is_some()
                    });
                match messages.last_mut().filter(|_| joins) {
                    Some(last) => {
                        let before = last.get("content").and_then(Value::as_str).unwrap_or("");
                        let text = content.as_str().unwrap_or("");
                        let joined = match (before.is_empty(), text.is_empty()) {
                            (true, _) => text.to_string(),
                            (false, true) => before.to_string(),
                            (false, false) => format!("{before}\n{text}"),
                        };
                        set_field(last, "content", Value::String(joined));
                    }
                    None => messages.push(json!({"role": role, "content": content})),
                }
            }
            "function_call" => {
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| at("a `function_call` needs `call_id`".into()))?;
                let call = json!({"id": call_id, "type": "function", "function": {
                    "name": item.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": item.get("arguments").and_then(Value::as_str).unwrap_or("{}"),
                }});
                // Chat wants a turn's tool calls on one assistant message.
                let joins = messages
                    .last()
                    .is_some_and(|m| m.get("role").and_then(Value::as_str) == Some("assistant"));
                match messages.last_mut().filter(|_| joins) {
                    Some(last) => {
                        if let Some(calls) =
                            last.get_mut("tool_calls").and_then(Value::as_array_mut)
                        {
                            calls.push(call);
                        } else {
                            set_field(last, "tool_calls", json!([call]));
                        }
                    }
                    None => messages
                        .push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| at("a `function_call_output` needs `call_id`".into()))?;
                messages.push(json!({"role": "tool", "tool_call_id": call_id,
                    "content": output_text(item.get("output").unwrap_or(&Value::Null))}));
            }
            // An earlier answer's reasoning is opaque to any other model.
            "reasoning" => {}
            "item_reference" => {
                return Err(at(stateful_error(
                    "item_reference",
                    "points at an item stored by the provider",
                )))
            }
            "" => return Err(at("every item needs a `type`".into())),
            other => {
                return Err(at(format!(
                    "items of type `{other}` need a provider that serves the Responses API"
                )))
            }
        }
    }
    Ok(())
}

/// Translates a `/v1/responses` body into a `/v1/chat/completions` body. `model` replaces the
/// request's (a provider's `model_map`); `max_output` caps `max_output_tokens` at what the
/// provider's model can produce. Errors are messages for a 400.
pub fn responses_request_to_chat(
    body: &[u8],
    model: Option<&str>,
    max_output: Option<u64>,
) -> Result<ResponsesRequest, String> {
    let (chat, context) =
        responses_object_to_chat(&json_object(body)?, model, max_output, body.len())?;
    let chat = serde_json::to_vec(&Value::Object(chat)).map_err(|e| e.to_string())?;
    Ok(ResponsesRequest { chat, context })
}

/// A `/v1/responses` body translated to an Anthropic `/v1/messages` body, through Chat Completions
/// without writing and reading the intermediate request.
pub fn responses_request_to_messages(
    body: &[u8],
    options: RequestOptions<'_>,
    max_output: Option<u64>,
) -> Result<(TranslatedRequest, ResponsesContext), String> {
    let (chat, context) =
        responses_object_to_chat(&json_object(body)?, options.model, max_output, body.len())?;
    Ok((chat_object_to_messages(&chat, options)?, context))
}

/// [`responses_request_to_chat`] on a parsed body of `request_bytes` bytes.
fn responses_object_to_chat(
    request: &Map<String, Value>,
    model: Option<&str>,
    max_output: Option<u64>,
    request_bytes: usize,
) -> Result<(Map<String, Value>, ResponsesContext), String> {
    for (field, why) in STATEFUL {
        let set = match request.get(field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        };
        if set {
            return Err(stateful_error(field, why));
        }
    }
    let model = match model {
        Some(model) => model.to_string(),
        None => request
            .get("model")
            .and_then(Value::as_str)
            .ok_or("Missing required parameter: 'model'.")?
            .to_string(),
    };
    let mut messages = Vec::new();
    if let Some(instructions) = request
        .get("instructions")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
    {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    input_items(
        request
            .get("input")
            .ok_or("Missing required parameter: 'input'.")?,
        &mut messages,
    )?;
    if !messages
        .iter()
        .any(|m| m.get("role") != Some(&json!("system")))
    {
        return Err("`input` needs at least one item.".to_string());
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model));
    out.insert("messages".into(), Value::Array(messages));
    if let Some(max) = request.get("max_output_tokens").and_then(Value::as_u64) {
        let max = max_output.map_or(max, |cap| max.min(cap));
        out.insert("max_completion_tokens".into(), json!(max));
    }
    for field in ["temperature", "top_p"] {
        if let Some(value) = request.get(field).filter(|v| v.is_number()) {
            out.insert(field.into(), value.clone());
        }
    }
    if let Some(value) = request
        .get("parallel_tool_calls")
        .filter(|v| v.is_boolean())
    {
        out.insert("parallel_tool_calls".into(), value.clone());
    }
    if let Some(user) = request
        .get("safety_identifier")
        .or_else(|| request.get("user"))
        .filter(|v| v.is_string())
    {
        out.insert("user".into(), user.clone());
    }
    if let Some(effort) = request
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|v| v.is_string())
    {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if let Some(format) = request.get("text").and_then(|t| t.get("format")) {
        match format.get("type").and_then(Value::as_str) {
            None | Some("text") => {}
            Some("json_object") => {
                out.insert("response_format".into(), json!({"type": "json_object"}));
            }
            Some("json_schema") => {
                let mut schema = Map::new();
                for key in ["name", "schema", "strict", "description"] {
                    if let Some(value) = format.get(key) {
                        schema.insert(key.into(), value.clone());
                    }
                }
                out.insert(
                    "response_format".into(),
                    json!({"type": "json_schema", "json_schema": schema}),
                );
            }
            Some(other) => return Err(format!("`text.format` type `{other}` is not supported.")),
        }
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let mut mapped = Vec::with_capacity(tools.len());
        for (index, tool) in tools.iter().enumerate() {
            let kind = tool.get("type").and_then(Value::as_str).unwrap_or("");
            if kind != "function" {
                return Err(format!(
                    "tools[{index}]: `{kind}` tools run on the provider and need one that serves the Responses API; only `function` tools are translated."
                ));
            }
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("tools[{index}].name is required"))?;
            let mut function = json!({"name": name,
                "parameters": tool.get("parameters").cloned()
                    .filter(|p| !p.is_null())
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}))});
            for key in ["description", "strict"] {
                if let Some(value) = tool.get(key).filter(|v| !v.is_null()) {
                    set_field(&mut function, key, value.clone());
                }
            }
            mapped.push(json!({"type": "function", "function": function}));
        }
        if !mapped.is_empty() {
            out.insert("tools".into(), Value::Array(mapped));
        }
    }
    match request.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(Value::String(choice)) => {
            out.insert("tool_choice".into(), Value::String(choice.clone()));
        }
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("function") => {
                let name = choice
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("`tool_choice.name` is required")?;
                out.insert(
                    "tool_choice".into(),
                    json!({"type": "function", "function": {"name": name}}),
                );
            }
            other => {
                return Err(format!(
                    "`tool_choice` type `{}` is not supported by this translation.",
                    other.unwrap_or("")
                ))
            }
        },
    }
    let stream = request.get("stream").and_then(Value::as_bool) == Some(true);
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }

    let mut echo = Map::new();
    let defaults = [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", Value::Bool(true)),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("temperature", json!(1.0)),
        ("text", json!({"format": {"type": "text"}})),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_p", json!(1.0)),
        ("user", Value::Null),
    ];
    for (key, default) in defaults {
        let value = request
            .get(key)
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or(default);
        echo.insert(key.into(), value);
    }
    echo.insert("previous_response_id".into(), Value::Null);
    // Nothing is stored: a translated response cannot be retrieved later.
    echo.insert("store".into(), Value::Bool(false));
    echo.insert("truncation".into(), json!("disabled"));
    Ok((
        out,
        ResponsesContext {
            stream,
            echo,
            request_bytes,
        },
    ))
}

fn suffix(chat_id: &str) -> &str {
    chat_id.strip_prefix("chatcmpl-").unwrap_or(chat_id)
}

/// Chat usage as Responses usage; estimated from what was sent and delivered when there is none.
fn responses_usage(usage: Option<&Value>, estimate: (u64, u64)) -> Value {
    let usage = ChatUsage::read(usage, estimate);
    let mut out = json!({
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.total(),
    });
    if usage.estimated {
        // llm_usage reads it: the charge is marked estimated, as for any provider without usage.
        set_field(&mut out, "estimated", Value::Bool(true));
    }
    out
}

/// `status` and `incomplete_details` from Chat's finish reason.
fn status_of(finish_reason: Option<&str>) -> (&'static str, Value) {
    match finish_reason {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

impl ResponsesContext {
    /// A response object with the request's settings echoed.
    fn response(&self, fields: ResponseFields<'_>) -> Value {
        let mut object = Map::new();
        object.insert("id".into(), json!(format!("resp_{}", fields.id)));
        object.insert("object".into(), json!("response"));
        object.insert("created_at".into(), json!(fields.created));
        object.insert("status".into(), json!(fields.status));
        object.insert("error".into(), fields.error);
        object.insert("incomplete_details".into(), fields.incomplete);
        object.insert("model".into(), fields.model.clone());
        object.insert("output".into(), Value::Array(fields.output.to_vec()));
        for (key, value) in &self.echo {
            object.insert(key.clone(), value.clone());
        }
        object.insert("usage".into(), fields.usage);
        Value::Object(object)
    }
}

struct ResponseFields<'a> {
    id: &'a str,
    created: u64,
    status: &'a str,
    model: &'a Value,
    output: &'a [Value],
    usage: Value,
    incomplete: Value,
    error: Value,
}

fn message_item(id: &str, status: &str, text: &str) -> Value {
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
           "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]})
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"id": format!("fc_{call_id}"), "type": "function_call", "status": status,
           "call_id": call_id, "name": name, "arguments": arguments})
}

/// Translates a Chat Completions JSON answer into a response object.
pub fn chat_response_to_responses(
    body: &[u8],
    context: &ResponsesContext,
    created: u64,
) -> Result<Vec<u8>, String> {
    let chat: Value = serde_json::from_slice(body)
        .map_err(|_| "the provider's response is not valid JSON".to_string())?;
    let choice = chat
        .pointer("/choices/0")
        .ok_or("the provider's response has no choices")?;
    let chat_id = chat.get("id").and_then(Value::as_str).unwrap_or("");
    let id = suffix(chat_id);
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut output = Vec::new();
    let mut output_chars = 0;
    // A refusal is the answer's text, as in streams.
    let text: String = ["content", "refusal"]
        .iter()
        .filter_map(|key| message.get(*key).and_then(Value::as_str))
        .collect();
    if !text.is_empty() {
        output_chars += text.chars().count();
        output.push(message_item(&format!("msg_{id}"), "completed", &text));
    }
    let calls = message.get("tool_calls").and_then(Value::as_array);
    for (position, call) in calls.into_iter().flatten().enumerate() {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        output_chars += arguments.chars().count();
        output.push(call_item(
            &call_id(call.get("id").and_then(Value::as_str), chat_id, position),
            call.pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
            arguments,
            "completed",
        ));
    }
    let (status, incomplete) = status_of(choice.get("finish_reason").and_then(Value::as_str));
    let response = context.response(ResponseFields {
        id,
        created,
        status,
        model: chat.get("model").unwrap_or(&Value::Null),
        output: &output,
        usage: responses_usage(
            chat.get("usage"),
            (
                estimate_tokens(context.request_bytes),
                estimate_tokens(output_chars),
            ),
        ),
        incomplete,
        error: Value::Null,
    });
    serde_json::to_vec(&response).map_err(|e| e.to_string())
}

/// A provider error in OpenAI's shape (the Responses API's too): OpenAI-shaped errors pass unchanged,
/// anything else (Anthropic's shape, HTML from a proxy) is rewritten.
pub fn error_to_responses(status: u16, body: &[u8]) -> (u16, Vec<u8>) {
    let openai_shaped = serde_json::from_slice::<Value>(body).is_ok_and(|v| {
        v.pointer("/error/message").is_some_and(Value::is_string) && v.get("type").is_none()
    });
    if openai_shaped && status != 529 {
        return (status, body.to_vec());
    }
    crate::anthropic::error_to_openai(status, body)
}

/// The message item being streamed: its output index, id and text so far.
#[derive(Debug)]
struct OpenMessage {
    index: usize,
    id: String,
    text: String,
}

/// Turns a Chat Completions SSE stream into Responses events (each with its `sequence_number`).
#[derive(Debug)]
pub struct ChatToResponsesStream(ChatStream<ResponsesEvents>);

#[derive(Debug)]
struct ResponsesEvents {
    context: ResponsesContext,
    created: u64,
    id: String,
    model: Value,
    sequence: u64,
    started: bool,
    output: Vec<Value>,
    open: Option<OpenMessage>,
    output_chars: usize,
}

impl ChatToResponsesStream {
    pub fn new(context: ResponsesContext, created: u64) -> Self {
        ChatToResponsesStream(ChatStream::new(ResponsesEvents {
            context,
            created,
            id: String::new(),
            model: Value::Null,
            sequence: 0,
            started: false,
            output: Vec::new(),
            open: None,
            output_chars: 0,
        }))
    }

    /// Feeds a chunk of the Chat stream; returns the Responses events it completes.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.0.push(chunk)
    }

    /// The Chat stream ended: complete when it gave a finish reason, `response.failed` otherwise.
    pub fn finish(&mut self) -> Vec<u8> {
        self.0.finish()
    }
}

impl ResponsesEvents {
    fn emit(&mut self, kind: &str, mut payload: Value, out: &mut Vec<u8>) {
        if let Some(object) = payload.as_object_mut() {
            object.insert("type".into(), json!(kind));
            object.insert("sequence_number".into(), json!(self.sequence));
        }
        self.sequence += 1;
        write_event(kind, &payload, out);
    }

    fn snapshot(&self, status: &str, usage: Value, incomplete: Value, error: Value) -> Value {
        self.context.response(ResponseFields {
            id: &self.id,
            created: self.created,
            status,
            model: &self.model,
            output: &self.output,
            usage,
            incomplete,
            error,
        })
    }

    fn usage(&self, end: &StreamEnd<'_>) -> Value {
        responses_usage(
            end.usage,
            (
                estimate_tokens(self.context.request_bytes),
                estimate_tokens(self.output_chars),
            ),
        )
    }
}

impl ChatEvents for ResponsesEvents {
    fn start(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        self.started = true;
        self.id = suffix(chunk.get("id").and_then(Value::as_str).unwrap_or("")).to_string();
        self.model = chunk.get("model").cloned().unwrap_or(Value::Null);
        let response = self.snapshot("in_progress", Value::Null, Value::Null, Value::Null);
        self.emit(
            "response.created",
            json!({"response": response.clone()}),
            out,
        );
        self.emit("response.in_progress", json!({"response": response}), out);
    }

    fn text(&mut self, delta: &str, out: &mut Vec<u8>) {
        if delta.is_empty() {
            return;
        }
        self.output_chars += delta.chars().count();
        if self.open.is_none() {
            self.close(out);
            let index = self.output.len();
            let id = format!("msg_{}", self.id);
            let id = if self.output.is_empty() {
                id
            } else {
                format!("{id}_{index}")
            };
            self.emit(
                "response.output_item.added",
                json!({"output_index": index, "item": {"id": id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
                out,
            );
            self.emit(
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
                out,
            );
            self.open = Some(OpenMessage {
                index,
                id,
                text: String::new(),
            });
        }
        if let Some(OpenMessage { index, id, text }) = &mut self.open {
            text.push_str(delta);
            let payload = json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []});
            self.emit("response.output_text.delta", payload, out);
        }
    }

    fn tool_call(&mut self, call: &ToolCall, out: &mut Vec<u8>) {
        self.close(out);
        let index = self.output.len();
        let id = format!("fc_{}", call.id);
        self.emit(
            "response.output_item.added",
            json!({"output_index": index, "item": call_item(&call.id, &call.name, "", "in_progress")}),
            out,
        );
        if !call.arguments.is_empty() {
            self.output_chars += call.arguments.chars().count();
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": call.arguments}),
                out,
            );
        }
        self.emit(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "name": call.name, "arguments": call.arguments}),
            out,
        );
        let item = call_item(&call.id, &call.name, &call.arguments, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
            out,
        );
        self.output.push(item);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some(OpenMessage { index, id, text }) = self.open.take() {
            {
                self.emit(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                    out,
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0,
                           "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}}),
                    out,
                );
                let item = message_item(&id, "completed", &text);
                self.emit(
                    "response.output_item.done",
                    json!({"output_index": index, "item": item.clone()}),
                    out,
                );
                self.output.push(item);
            }
        }
    }

    fn complete(&mut self, end: &StreamEnd<'_>, out: &mut Vec<u8>) {
        self.close(out);
        let (status, incomplete) = status_of(end.finish_reason);
        let response = self.snapshot(status, self.usage(end), incomplete, Value::Null);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(kind, json!({"response": response}), out);
    }

    fn fail(&mut self, message: &str, code: &str, end: &StreamEnd<'_>, out: &mut Vec<u8>) {
        if !self.started {
            self.start(&Value::Null, out);
        }
        self.close(out);
        let error = json!({"code": code, "message": message});
        let response = self.snapshot("failed", self.usage(end), Value::Null, error);
        self.emit("response.failed", json!({"response": response}), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::chat_stream::fixtures::{chat_stream, events};

    fn translate(request: Value) -> (Value, ResponsesContext) {
        let out = responses_request_to_chat(request.to_string().as_bytes(), None, None).unwrap();
        (serde_json::from_slice(&out.chat).unwrap(), out.context)
    }

    #[test]
    fn items_instructions_tools_and_settings() {
        let (chat, context) = translate(json!({
            "model": "gpt-4o-mini", "instructions": "Be brief.", "stream": true,
            "max_output_tokens": 200, "temperature": 0.3, "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "name": "get_weather", "description": "W", "parameters": {"type": "object"}, "strict": false}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "see"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]},
                {"type": "function_call", "call_id": "call_3", "name": "get_weather", "arguments": "{}"},
                {"type": "message", "role": "assistant", "content": "Checking once more."},
                {"type": "function_call_output", "call_id": "call_3", "output": "dry"}
            ]
        }));
        assert!(context.stream);
        let messages = chat["messages"].as_array().unwrap();
        assert_eq!(
            messages[0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(messages[1], json!({"role": "user", "content": "weather?"}));
        assert_eq!(messages[2]["content"][1]["image_url"]["detail"], "low");
        assert_eq!(messages[3]["role"], "assistant");
        assert_eq!(messages[3]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(
            messages[4],
            json!({"role": "tool", "tool_call_id": "call_1", "content": "sunny"})
        );
        assert_eq!(messages[5]["content"], "rain");
        // Text between a call and its output joins the calling turn: the output stays right after.
        assert_eq!(messages[6]["content"], "Sunny.\nChecking once more.");
        assert_eq!(messages[6]["tool_calls"][0]["id"], "call_3");
        assert_eq!(messages[7]["role"], "tool");
        assert_eq!(messages.len(), 8);
        assert_eq!(chat["max_completion_tokens"], 200);
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        assert_eq!(chat["tools"][0]["function"]["strict"], false);
        assert_eq!(chat["tool_choice"]["function"]["name"], "get_weather");
        assert_eq!(chat["stream_options"]["include_usage"], true);
    }

    #[test]
    fn state_on_the_provider_is_refused_by_name() {
        for (extra, name) in [
            (
                json!({"previous_response_id": "resp_1"}),
                "previous_response_id",
            ),
            (json!({"conversation": "conv_1"}), "conversation"),
            (json!({"background": true}), "background"),
            (json!({"prompt": {"id": "pmpt_1"}}), "prompt"),
            (json!({"tools": [{"type": "web_search"}]}), "web_search"),
            (
                json!({"input": [{"type": "item_reference", "id": "msg_1"}]}),
                "item_reference",
            ),
        ] {
            let mut request = json!({"model": "m", "input": "hi"});
            for (k, v) in extra.as_object().unwrap() {
                request[k] = v.clone();
            }
            let err =
                responses_request_to_chat(request.to_string().as_bytes(), None, None).unwrap_err();
            assert!(err.contains(name), "{err}");
        }
        // Not stateful: accepted.
        for extra in [
            json!({"store": true}),
            json!({"previous_response_id": null, "background": false}),
        ] {
            let mut request = json!({"model": "m", "input": "hi"});
            for (k, v) in extra.as_object().unwrap() {
                request[k] = v.clone();
            }
            assert!(responses_request_to_chat(request.to_string().as_bytes(), None, None).is_ok());
        }
        assert!(responses_request_to_chat(br#"{"model":"m"}"#, None, None).is_err());
        assert!(responses_request_to_chat(br#"{"model":"m","input":[]}"#, None, None).is_err());
        assert!(responses_request_to_chat(b"nope", None, None).is_err());
    }

    #[test]
    fn json_answer_becomes_a_response_object() {
        let (_, context) =
            translate(json!({"model": "gpt-4o-mini", "input": "hi", "instructions": "Be brief."}));
        let chat = json!({"id": "chatcmpl-5", "model": "gpt-4o-mini-2024", "choices": [{
            "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 2},
                      "completion_tokens_details": {"reasoning_tokens": 1}}});
        let out: Value = serde_json::from_slice(
            &chat_response_to_responses(chat.to_string().as_bytes(), &context, 7).unwrap(),
        )
        .unwrap();
        assert_eq!(out["id"], "resp_5");
        assert_eq!(out["object"], "response");
        assert_eq!(out["status"], "completed");
        assert_eq!(out["created_at"], 7);
        assert_eq!(out["instructions"], "Be brief.");
        assert_eq!(out["store"], false);
        assert_eq!(out["output"][0]["content"][0]["text"], "Checking.");
        assert_eq!(out["output"][1]["type"], "function_call");
        assert_eq!(out["output"][1]["call_id"], "call_9");
        assert_eq!(out["usage"]["input_tokens"], 10);
        assert_eq!(out["usage"]["input_tokens_details"]["cached_tokens"], 2);
        assert_eq!(out["usage"]["output_tokens_details"]["reasoning_tokens"], 1);
        assert_eq!(out["usage"]["total_tokens"], 14);

        let cut = json!({"id": "chatcmpl-6", "choices": [{"finish_reason": "length",
            "message": {"role": "assistant", "content": "abcd"}}]});
        let out: Value = serde_json::from_slice(
            &chat_response_to_responses(cut.to_string().as_bytes(), &context, 7).unwrap(),
        )
        .unwrap();
        assert_eq!(out["status"], "incomplete");
        assert_eq!(out["incomplete_details"]["reason"], "max_output_tokens");
        assert!(out["usage"]["input_tokens"].as_u64().unwrap() > 0);
    }

    #[test]
    fn errors_keep_openais_shape() {
        let body =
            br#"{"error":{"message":"bad","type":"invalid_request_error","param":"x","code":"c"}}"#;
        assert_eq!(error_to_responses(400, body), (400, body.to_vec()));
        let (status, out) = error_to_responses(
            529,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
        );
        assert_eq!(status, 503);
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["error"]["message"], "busy");
    }

    #[test]
    fn stream_events_in_order_with_sequence_numbers() {
        let (_, context) = translate(json!({"model": "m", "input": "hi", "stream": true}));
        let source = chat_stream();
        let mut whole = ChatToResponsesStream::new(context.clone(), 1);
        let mut expected = whole.push(source.as_bytes());
        expected.extend(whole.finish());
        let parsed = events(&expected);
        let names: Vec<&str> = parsed.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, (name, data)) in parsed.iter().enumerate() {
            assert_eq!(data["sequence_number"], i as u64);
            assert_eq!(data["type"], name.as_str());
        }
        assert_eq!(parsed[6].1["text"], "Hello world");
        assert_eq!(parsed[11].1["arguments"], "{\"a\":1}");
        let done = &parsed[13].1["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"].as_array().unwrap().len(), 2);
        assert_eq!(done["usage"]["output_tokens"], 9);
        for split in 1..source.len() {
            let mut t = ChatToResponsesStream::new(context.clone(), 1);
            let mut out = t.push(&source.as_bytes()[..split]);
            out.extend(t.push(&source.as_bytes()[split..]));
            out.extend(t.finish());
            assert_eq!(out, expected, "split at {split}");
        }
    }

    #[test]
    fn cut_and_failed_streams() {
        let (_, context) = translate(json!({"model": "m", "input": "hi", "stream": true}));
        let mut t = ChatToResponsesStream::new(context.clone(), 1);
        let mut out = t.push(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n");
        out.extend(t.finish());
        let parsed = events(&out);
        let last = &parsed.last().unwrap().1;
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], "incomplete_stream");
        // The text delivered before the cut is in the failed response's output.
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "Hi");

        let mut t = ChatToResponsesStream::new(context, 1);
        let mut out = t.push(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n");
        out.extend(t.finish());
        let parsed = events(&out);
        let last = &parsed.last().unwrap().1;
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(
            last["response"]["incomplete_details"]["reason"],
            "max_output_tokens"
        );
    }
}
