//! AWS Bedrock's Converse API (`/model/{modelId}/converse`, `/converse-stream`) from and to Chat
//! Completions: a Chat client on a Bedrock provider, and through Chat the Messages and Responses
//! clients. Requests are signed per attempt with SigV4 (the `aws-sigv4` crate, as AWS's SDKs do).
//!
//! Requests: `messages` become Converse messages (system and developer messages `system`), tool
//! calls `toolUse` blocks and tool results `toolResult` blocks (in the user turn that follows),
//! images `image` blocks with their bytes, tools `toolConfig.tools[].toolSpec`, and the sampling
//! fields `inferenceConfig`. Answers: the output message becomes one choice, `usage` OpenAI's usage
//! (cache reads and writes are prompt tokens; reads are cached), `stopReason` a finish reason.
//! Streams: ConverseStream's binary event stream (each frame's prelude and message CRC32s checked)
//! becomes Chat chunks frame by frame.

use crate::anthropic::json_object;
use crate::provider::Secret;
use crate::wire::via_chat::{
    self, assistant_calls, function_tools, max_tokens, push_turn, refuse_unexpressible, set,
    stop_sequences, stream_flags, ChunkWriter, ContentRules, TranslatedRequest,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// The translated request (its body, stream flags).
pub type ConverseRequest = TranslatedRequest;

/// An AWS event-stream message may not be longer than this (AWS's own limit is 16 MiB): a prelude
/// announcing more is refused rather than buffered.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// An event-stream frame starts with its total length, its headers' length and the prelude's CRC.
const PRELUDE_BYTES: usize = 12;

/// `/model/{modelId}/converse` (or `converse-stream`), the model id percent-encoded as the AWS SDKs
/// encode a URI label (`:` and `/` of inference-profile ids and ARNs included).
pub fn path(base: &str, model: &str, stream: bool) -> String {
    let mut encoded = String::with_capacity(model.len() + 8);
    for byte in model.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let operation = if stream {
        "converse-stream"
    } else {
        "converse"
    };
    format!("{base}/model/{encoded}/{operation}")
}

/// A tool-use id as Converse accepts it (`[a-zA-Z0-9_-]+`, at most 64 characters). The same
/// function names a call and the result answering it, so they keep matching.
fn tool_use_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "tooluse".to_string()
    } else {
        cleaned
    }
}

/// Converse's image formats, by MIME type.
fn image_format(mime: &str) -> Option<&'static str> {
    match mime {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// Extended thinking budgets for Claude models on Bedrock, by `reasoning_effort`.
fn thinking_budget(effort: &str) -> Result<Option<u64>, String> {
    Ok(match effort {
        "none" | "minimal" => None,
        "low" => Some(1024),
        "medium" => Some(4096),
        "high" => Some(16384),
        other => return Err(format!("`reasoning_effort` `{other}` is not supported")),
    })
}

/// A Chat Completions request body as a Converse request for `model` (the id in the path; Converse
/// bodies carry no model).
pub fn chat_request_to_converse(body: &[u8], model: &str) -> Result<ConverseRequest, String> {
    let request = json_object(body)?;
    let unsupported = |what: &str| Err(format!("{what} is not supported on Bedrock providers"));
    refuse_unexpressible(&request, "Bedrock")?;
    if let Some(kind) = request
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        .filter(|kind| *kind != "text")
    {
        return unsupported(&format!("`response_format` `{kind}`"));
    }
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;

    let mut system = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    // Tools the conversation called: Converse wants a toolConfig naming them whenever the
    // messages hold tool blocks, even if this request declares no tools.
    let mut called: BTreeSet<String> = BTreeSet::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content");
        let (converse_role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, i)?);
                continue;
            }
            "user" => ("user", user_blocks(content, i)?),
            "assistant" => {
                let mut blocks = text_blocks(content, i)?;
                for call in assistant_calls(message, i)? {
                    called.insert(call.name.to_string());
                    blocks.push(json!({"toolUse": {
                        "toolUseId": tool_use_id(call.id.unwrap_or("")),
                        "name": call.name,
                        "input": call.arguments,
                    }}));
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or(format!("`messages[{i}].tool_call_id` is missing"))?;
                let text = crate::anthropic::text_of(content.unwrap_or(&Value::Null));
                // A JSON object or array result goes as JSON; anything else as text.
                let result = match serde_json::from_str::<Value>(&text) {
                    Ok(value @ (Value::Object(_) | Value::Array(_))) => json!({ "json": value }),
                    _ => json!({ "text": text }),
                };
                (
                    "user",
                    vec![json!({"toolResult": {
                        "toolUseId": tool_use_id(id),
                        "content": [result],
                    }})],
                )
            }
            other => return Err(format!("`messages[{i}].role` `{other}` is not supported")),
        };
        // Consecutive messages of one role are one turn (tool results and the user's next words
        // among them).
        push_turn(&mut turns, converse_role, "content", blocks);
    }
    if turns.is_empty() {
        return Err("`messages` needs a user or assistant message".into());
    }

    let mut out = Map::new();
    out.insert("messages".into(), Value::Array(turns));
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }

    let mut tools = Vec::new();
    let mut declared = BTreeSet::new();
    for tool in function_tools(&request, "Bedrock")? {
        let mut spec = Map::new();
        spec.insert("name".into(), json!(tool.name));
        if let Some(description) = tool.description {
            spec.insert("description".into(), json!(description));
        }
        let schema = tool
            .parameters
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        spec.insert("inputSchema".into(), json!({ "json": schema }));
        declared.insert(tool.name.to_string());
        tools.push(json!({ "toolSpec": spec }));
    }
    let choice = match request.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => Some(json!({"auto": {}})),
            "required" => Some(json!({"any": {}})),
            "none" => {
                if !called.is_empty() {
                    return unsupported("`tool_choice` `none` in a conversation with tool calls");
                }
                // Converse has no "none": a request without tools cannot call one.
                tools.clear();
                None
            }
            other => return Err(format!("`tool_choice` `{other}` is not supported")),
        },
        Some(choice @ Value::Object(_)) => {
            let name = choice
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or("`tool_choice.function.name` is missing")?;
            Some(json!({"tool": {"name": name}}))
        }
        Some(_) => return Err("`tool_choice` must be a string or an object".into()),
    };
    for name in called.iter().filter(|name| !declared.contains(*name)) {
        // The conversation called a tool this request no longer declares: Converse refuses tool
        // blocks without a toolConfig naming them.
        tools.push(json!({"toolSpec": {
            "name": name,
            "inputSchema": {"json": {"type": "object"}},
        }}));
    }
    if !tools.is_empty() {
        let mut config = Map::new();
        config.insert("tools".into(), Value::Array(tools));
        if let Some(choice) = choice {
            config.insert("toolChoice".into(), choice);
        }
        out.insert("toolConfig".into(), Value::Object(config));
    }

    let mut inference = Map::new();
    let mut max_tokens = max_tokens(&request);
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(value) = request.get(from).filter(|v| v.is_number()) {
            inference.insert(to.into(), value.clone());
        }
    }
    if let Some(stops) = stop_sequences(&request) {
        inference.insert("stopSequences".into(), stops);
    }
    let budget = match request.get("reasoning_effort").and_then(Value::as_str) {
        Some(effort) => thinking_budget(effort)?,
        None => None,
    };
    if budget.is_some()
        && !model.contains("anthropic.claude")
        && !model.contains(":application-inference-profile/")
    {
        return unsupported("`reasoning_effort` on models other than Claude");
    }
    // Claude wants its thinking blocks back with a tool loop's next turn and refuses thinking with
    // a forced tool; answers through Chat Completions do not carry thinking, so a conversation
    // with tool calls, or a forced tool, goes without it.
    let forced_tool = out
        .get("toolConfig")
        .and_then(|c| c.get("toolChoice"))
        .is_some_and(|c| c.get("any").is_some() || c.get("tool").is_some());
    let budget = budget.filter(|_| called.is_empty() && !forced_tool);
    if let Some(budget) = budget {
        // Claude's thinking counts inside max tokens, which must exceed the budget; and it
        // refuses a temperature or top_p with thinking on.
        if max_tokens.is_none_or(|max| max <= budget) {
            max_tokens = Some(budget + 1024);
        }
        inference.remove("temperature");
        inference.remove("topP");
        out.insert(
            "additionalModelRequestFields".into(),
            json!({"thinking": {"type": "enabled", "budget_tokens": budget}}),
        );
    }
    if let Some(max) = max_tokens {
        inference.insert("maxTokens".into(), json!(max));
    }
    if !inference.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let (stream, include_usage) = stream_flags(&request);
    Ok(ConverseRequest {
        body: Value::Object(out).to_string().into_bytes(),
        stream,
        include_usage,
    })
}

/// Converse refuses blank text.
fn blank(text: &str) -> bool {
    text.trim().is_empty()
}

fn text_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    via_chat::text_parts(content, i, blank)
}

/// A user content: text, and images with their bytes (Converse does not fetch links).
fn user_blocks(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    let image = |mime: &str, data: &str, i: usize| {
        let format = image_format(mime).ok_or(format!(
            "`messages[{i}]`: image type `{mime}` is not supported on Bedrock providers (png, jpeg, gif, webp)"
        ))?;
        Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
    };
    let rules = ContentRules {
        provider: "Bedrock",
        blank,
        image: &image,
    };
    via_chat::user_parts(content, i, &rules)
}

/// OpenAI's finish reason for a Converse stop reason.
fn finish_reason(reason: &str, called_a_tool: bool) -> &'static str {
    match reason {
        "tool_use" => "tool_calls",
        "max_tokens" | "model_context_window_exceeded" => "length",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        _ if called_a_tool => "tool_calls",
        _ => "stop", // end_turn, stop_sequence
    }
}

/// OpenAI's `usage` for Converse's: cache reads and writes are prompt tokens besides
/// `inputTokens`; reads are the cached ones.
fn usage(usage: &Value) -> Value {
    let get = |key: &str| usage.get(key).and_then(Value::as_u64).unwrap_or(0);
    let cached = get("cacheReadInputTokens");
    let prompt = get("inputTokens")
        .saturating_add(cached)
        .saturating_add(get("cacheWriteInputTokens"));
    let completion = get("outputTokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// The id of a translated answer: from the provider's request id (`x-amzn-requestid`), else the
/// time (tool calls carry Bedrock's own ids).
pub fn chat_id(request_id: Option<&str>, created: u64) -> String {
    let plain: String = request_id
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(64)
        .collect();
    if plain.is_empty() {
        format!("chatcmpl-bedrock-{created}")
    } else {
        format!("chatcmpl-{plain}")
    }
}

/// A Converse response as a `chat.completion`; `model` is the one asked for.
pub fn converse_response_to_chat(
    body: &[u8],
    model: &str,
    request_id: Option<&str>,
    created: u64,
) -> Result<Vec<u8>, String> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| "the provider's response is not valid JSON".to_string())?;
    let message = response
        .pointer("/output/message")
        .ok_or("the provider's response has no output message")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(piece) = block.get("text").and_then(Value::as_str) {
            text.push_str(piece);
        }
        if let Some(call) = block.get("toolUse") {
            calls.push(json!({
                "id": call.get("toolUseId").and_then(Value::as_str).unwrap_or(""),
                "type": "function",
                "function": {
                    "name": call.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": call.get("input").cloned().unwrap_or(json!({})).to_string(),
                },
            }));
        }
        // reasoningContent: the model's thinking is not part of a Chat answer (its tokens are
        // in outputTokens).
    }
    let reason = finish_reason(
        response
            .get("stopReason")
            .and_then(Value::as_str)
            .unwrap_or("end_turn"),
        !calls.is_empty(),
    );
    let mut chat_message = json!({"role": "assistant", "content": text, "refusal": null});
    if !calls.is_empty() {
        set(&mut chat_message, "tool_calls", Value::Array(calls));
    }
    let mut chat = json!({
        "id": chat_id(request_id, created),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": chat_message,
            "logprobs": null,
            "finish_reason": reason,
        }],
    });
    if let Some(counts) = response.get("usage") {
        set(&mut chat, "usage", usage(counts));
    }
    Ok(chat.to_string().into_bytes())
}

/// A Bedrock error (`{"message": ...}`, its type in `x-amzn-errortype`) in the shape the other
/// translations read: `{"error": {"type", "message"}}`.
pub fn error_as_openai_shape(body: &[u8], error_type: Option<&str>) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v.get("message").or_else(|| v.get("Message")))
        .and_then(Value::as_str);
    // `ThrottlingException:http://internal.amazon.com/coral/...`: the name before the colon.
    let kind = error_type
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v.get("__type"))
                .and_then(Value::as_str)
        })
        .map(|t| {
            let t = t.split(':').next().unwrap_or(t);
            t.rsplit('#').next().unwrap_or(t).to_string()
        });
    let mut error = Map::new();
    // AWS explains a refused signature with the canonical request, which lists the signed headers'
    // values (the session token among them): the client gets the gateway's own words instead.
    let signature = kind.as_deref().is_some_and(|k| {
        matches!(
            k,
            "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "IncompleteSignatureException"
                | "UnrecognizedClientException"
                | "ExpiredTokenException"
        )
    });
    if let Some(kind) = kind.filter(|k| !k.is_empty()) {
        error.insert("type".into(), json!(kind));
    }
    if signature {
        error.insert(
            "message".into(),
            json!("Bedrock refused the gateway's credentials or request signature: the gateway's AWS credentials or region need attention."),
        );
    } else if let Some(message) = message {
        error.insert("message".into(), json!(message));
    }
    json!({ "error": error }).to_string().into_bytes()
}

/// ConverseStream's event stream as Chat Completions chunks, frame by frame.
#[derive(Debug)]
pub struct ConverseToChatStream {
    /// Bytes of a frame not complete yet.
    pending: Vec<u8>,
    writer: ChunkWriter,
    /// Tool calls sent so far, by Converse content block index.
    calls: Vec<u64>,
    /// The stream broke (a frame failed its checks): nothing more is read.
    broken: bool,
}

impl ConverseToChatStream {
    pub fn new(model: &str, request_id: Option<&str>, include_usage: bool, created: u64) -> Self {
        ConverseToChatStream {
            pending: Vec::new(),
            writer: ChunkWriter::new(chat_id(request_id, created), model, include_usage, created),
            calls: Vec::new(),
            broken: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.broken {
            return out;
        }
        // Frames are read from the chunk itself; only an unfinished frame's bytes are kept.
        let mut owned = std::mem::take(&mut self.pending);
        let from_chunk = owned.is_empty();
        if !from_chunk {
            owned.extend_from_slice(chunk);
        }
        let bytes: &[u8] = if from_chunk { chunk } else { &owned };
        let mut offset = 0;
        loop {
            let rest = bytes.get(offset..).unwrap_or_default();
            let Some(prelude) = rest.get(..PRELUDE_BYTES) else {
                break;
            };
            let mut length = [0u8; 4];
            length.copy_from_slice(prelude.get(..4).unwrap_or(&[0; 4]));
            let total = u32::from_be_bytes(length) as usize;
            if !(16..=MAX_EVENT_BYTES).contains(&total) {
                self.fail(
                    "the provider's event stream announced a frame of an invalid length",
                    &mut out,
                );
                return out;
            }
            let Some(frame) = rest.get(..total) else {
                break;
            };
            match aws_smithy_eventstream::frame::read_message_from(frame) {
                Ok(message) => self.message(&message, &mut out),
                Err(_) => {
                    self.fail(
                        "the provider's event stream is corrupt (a frame failed its checks)",
                        &mut out,
                    );
                    return out;
                }
            }
            offset += total;
        }
        // One drain per chunk keeps the work linear in the stream.
        let consumed = offset.min(bytes.len());
        if from_chunk {
            self.pending = chunk.get(consumed..).unwrap_or_default().to_vec();
        } else {
            owned.drain(..consumed);
            self.pending = owned;
        }
        out
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.broken && !self.pending.is_empty() {
            self.fail("the provider's event stream ended inside a frame", &mut out);
        }
        self.writer.finish(&mut out);
        out
    }

    /// Nothing more is read; the client gets an error event unless its answer already ended.
    fn fail(&mut self, message: &str, out: &mut Vec<u8>) {
        self.broken = true;
        self.pending.clear();
        self.writer.error(message, None, out);
    }

    fn message(&mut self, message: &aws_smithy_types::event_stream::Message, out: &mut Vec<u8>) {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| h.value().as_string().ok())
                .map(|s| s.as_str().to_string())
        };
        let payload: Value = serde_json::from_slice(message.payload()).unwrap_or(Value::Null);
        match header(":message-type").as_deref() {
            Some("event") => {}
            Some("exception") | Some("error") => {
                let kind = header(":exception-type")
                    .or_else(|| header(":error-code"))
                    .unwrap_or_else(|| "error".into());
                let text = payload
                    .get("message")
                    .or_else(|| payload.get("Message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| header(":error-message"))
                    .unwrap_or_else(|| "The provider's stream failed.".into());
                self.writer.error(&text, Some(&kind), out);
                return;
            }
            _ => return,
        }
        let event = header(":event-type").unwrap_or_default();
        if event == "metadata" {
            // Usage comes after messageStop, in an event of its own.
            if let Some(counts) = payload.get("usage") {
                self.writer.usage = Some(usage(counts));
            }
            return;
        }
        if self.writer.finished {
            return;
        }
        let block = payload
            .get("contentBlockIndex")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match event.as_str() {
            "contentBlockStart" => {
                if let Some(tool) = payload.pointer("/start/toolUse") {
                    let index = self.calls.len();
                    self.calls.push(block);
                    let call = json!({
                        "index": index,
                        "id": tool.get("toolUseId").and_then(Value::as_str).unwrap_or(""),
                        "type": "function",
                        "function": {
                            "name": tool.get("name").and_then(Value::as_str).unwrap_or(""),
                            "arguments": "",
                        },
                    });
                    self.writer.emit(json!({ "tool_calls": [call] }), None, out);
                }
            }
            "contentBlockDelta" => {
                if let Some(text) = payload.pointer("/delta/text").and_then(Value::as_str) {
                    if !text.is_empty() {
                        self.writer.emit(json!({ "content": text }), None, out);
                    }
                } else if let Some(input) = payload
                    .pointer("/delta/toolUse/input")
                    .and_then(Value::as_str)
                {
                    if let Some(index) = self.calls.iter().position(|b| *b == block) {
                        let call = json!({"index": index, "function": {"arguments": input}});
                        self.writer.emit(json!({ "tool_calls": [call] }), None, out);
                    }
                }
                // reasoningContent deltas: thinking is not part of a Chat answer.
            }
            "messageStop" => {
                let reason = finish_reason(
                    payload
                        .get("stopReason")
                        .and_then(Value::as_str)
                        .unwrap_or("end_turn"),
                    !self.calls.is_empty(),
                );
                self.writer.emit(json!({}), Some(reason), out);
            }
            _ => {} // messageStart, contentBlockStop
        }
    }
}

/// AWS credentials for SigV4 (from the environment): never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// SigV4 headers (`authorization`, `x-amz-date`, and `x-amz-security-token` with a session token)
/// for a Bedrock request: `POST https://{host}{path}` with `body`, at `now` (Unix seconds). Signed:
/// `host`, `content-type` and the `x-amz-*` headers, so what Envoy adds after the filter (its own
/// `x-envoy-*`, `x-forwarded-*`) cannot break the signature.
pub fn sign(
    credentials: &AwsCredentials,
    region: &str,
    host: &str,
    path: &str,
    body: &[u8],
    now: u64,
) -> Result<Vec<(&'static str, String)>, String> {
    use aws_sigv4::http_request::{sign as sigv4, SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.expose(),
        credentials.secret_access_key.expose(),
        credentials
            .session_token
            .as_ref()
            .map(|t| t.expose().to_string()),
        None,
        "llm-provider",
    )
    .into();
    let settings = SigningSettings::default();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("bedrock")
        .time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(now))
        .settings(settings)
        .build()
        .map_err(|_| "the SigV4 signing parameters are incomplete".to_string())?
        .into();
    let url = format!("https://{host}{path}");
    let headers = [("host", host), ("content-type", "application/json")];
    let signable =
        SignableRequest::new("POST", &url, headers.into_iter(), SignableBody::Bytes(body))
            .map_err(|_| {
                "the request cannot be signed (its path or host is not valid)".to_string()
            })?;
    let (instructions, _) = sigv4(signable, &params)
        .map_err(|_| "the request could not be signed".to_string())?
        .into_parts();
    let mut out = Vec::new();
    for (name, value) in instructions.headers() {
        let name = match name.to_ascii_lowercase().as_str() {
            "authorization" => "authorization",
            "x-amz-date" => "x-amz-date",
            "x-amz-security-token" => "x-amz-security-token",
            "x-amz-content-sha256" => "x-amz-content-sha256",
            _ => continue,
        };
        out.push((name, value.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    use serde_json::Value;

    fn converse(chat: Value, model: &str) -> Value {
        let request = chat_request_to_converse(chat.to_string().as_bytes(), model).unwrap();
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn paths_encode_the_model_id_as_a_uri_label() {
        assert_eq!(
            path("", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", false),
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
        );
        assert_eq!(
            path("/proxy", "arn:aws:bedrock:us-east-1:1:inference-profile/x", true),
            "/proxy/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse-stream"
        );
    }

    #[test]
    fn a_chat_request_becomes_converse() {
        let body = converse(
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in this image?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                    ]},
                    {"role": "assistant", "content": "", "tool_calls": [
                        {"id": "call.1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call.1", "content": "{\"temp\": 21}"},
                    {"role": "tool", "tool_call_id": "call.1", "content": "plain words"},
                    {"role": "user", "content": "And tomorrow?"}
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": "required",
                "max_tokens": 100,
                "temperature": 0.5,
                "top_p": 0.9,
                "stop": "END",
                "seed": 7,
                "stream": true,
            }),
            "anthropic.claude-sonnet-4-5",
        );
        assert_eq!(body["system"], json!([{"text": "Be brief."}]));
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(
            messages.len(),
            3,
            "tool results and the next words share a user turn"
        );
        assert_eq!(messages[0]["content"][1]["image"]["format"], "png");
        assert_eq!(
            messages[0]["content"][1]["image"]["source"]["bytes"],
            "iVBORw0KGgo="
        );
        assert_eq!(messages[1]["role"], "assistant");
        assert_eq!(
            messages[1]["content"],
            json!([{"toolUse": {"toolUseId": "call_1", "name": "weather", "input": {"city": "Paris"}}}]),
            "blank text is left out; the id is one Converse accepts"
        );
        assert_eq!(
            messages[2]["content"][0]["toolResult"]["toolUseId"],
            "call_1"
        );
        assert_eq!(
            messages[2]["content"][0]["toolResult"]["content"],
            json!([{"json": {"temp": 21}}])
        );
        assert_eq!(
            messages[2]["content"][1]["toolResult"]["content"],
            json!([{"text": "plain words"}])
        );
        assert_eq!(messages[2]["content"][2]["text"], "And tomorrow?");
        assert_eq!(
            body["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["properties"]["city"]
                ["type"],
            "string"
        );
        assert_eq!(body["toolConfig"]["toolChoice"], json!({"any": {}}));
        assert_eq!(
            body["inferenceConfig"],
            json!({"maxTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]})
        );
        assert!(body.get("model").is_none() && body.get("seed").is_none());
    }

    #[test]
    fn tool_choices_reasoning_and_refusals() {
        let forced = converse(
            json!({"messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "m",
        );
        assert_eq!(
            forced["toolConfig"]["toolChoice"],
            json!({"tool": {"name": "f"}})
        );
        assert_eq!(
            forced["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["type"],
            "object"
        );
        let none = converse(
            json!({"messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": "none"}),
            "m",
        );
        assert!(none.get("toolConfig").is_none());
        // A conversation calling a tool the request no longer declares still names it.
        let history = converse(
            json!({"messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "g", "arguments": "not json"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "done"}
            ]}),
            "m",
        );
        assert_eq!(history["toolConfig"]["tools"][0]["toolSpec"]["name"], "g");
        assert_eq!(
            history["messages"][1]["content"][0]["toolUse"]["input"],
            json!({"arguments": "not json"})
        );
        let thinking = converse(
            json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low", "max_tokens": 100, "temperature": 1}),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
        );
        assert_eq!(
            thinking["additionalModelRequestFields"]["thinking"]["budget_tokens"],
            1024
        );
        assert_eq!(thinking["inferenceConfig"], json!({"maxTokens": 2048}));
        // A limit above the budget stays; a tool loop or a forced tool goes without thinking.
        let roomy = converse(
            json!({"messages": [{"role": "user", "content": "hi"}], "reasoning_effort": "low", "max_tokens": 1500}),
            "anthropic.claude-sonnet-4-5",
        );
        assert_eq!(roomy["inferenceConfig"], json!({"maxTokens": 1500}));
        let looping = converse(
            json!({"reasoning_effort": "high", "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c", "content": "r"}]}),
            "anthropic.claude-sonnet-4-5",
        );
        assert!(looping.get("additionalModelRequestFields").is_none());
        let forced = converse(
            json!({"reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}],
                   "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}),
            "anthropic.claude-sonnet-4-5",
        );
        assert!(forced.get("additionalModelRequestFields").is_none());

        for (request, model, expected) in [
            (
                json!({"messages": [{"role": "user", "content": "x"}], "n": 2}),
                "m",
                "`n` above 1",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}),
                "m",
                "response_format",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
                "m",
                "not links",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA=="}}]}]}),
                "m",
                "image/tiff",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "high"}),
                "meta.llama3",
                "other than Claude",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "max"}),
                "anthropic.claude",
                "`max`",
            ),
            (
                json!({"messages": [{"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]},
                    {"role": "tool", "tool_call_id": "c", "content": "r"}], "tool_choice": "none"}),
                "m",
                "tool_choice",
            ),
            (
                json!({"messages": [{"role": "tool", "content": "r"}]}),
                "m",
                "tool_call_id",
            ),
            (json!({"messages": []}), "m", "needs a user"),
            (json!({"messages": "hi"}), "m", "array"),
            (
                json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search"}]}),
                "m",
                "function tools",
            ),
        ] {
            let error =
                chat_request_to_converse(request.to_string().as_bytes(), model).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        assert!(chat_request_to_converse(b"[1]", "m").is_err());
        assert!(chat_request_to_converse(b"{not json", "m").is_err());
    }

    #[test]
    fn a_converse_answer_becomes_a_chat_completion() {
        let answer = json!({
            "output": {"message": {"role": "assistant", "content": [
                {"reasoningContent": {"reasoningText": {"text": "thinking", "signature": "s"}}},
                {"text": "Let me check."},
                {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}}
            ]}},
            "stopReason": "tool_use",
            "usage": {"inputTokens": 10, "outputTokens": 5, "totalTokens": 20, "cacheReadInputTokens": 4, "cacheWriteInputTokens": 1},
            "metrics": {"latencyMs": 100}
        });
        let chat: Value = serde_json::from_slice(
            &converse_response_to_chat(answer.to_string().as_bytes(), "claude", Some("req-1"), 9)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(chat["id"], "chatcmpl-req-1");
        assert_eq!(chat["model"], "claude");
        let choice = &chat["choices"][0];
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(choice["message"]["tool_calls"][0]["id"], "tooluse_1");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(chat["usage"]["prompt_tokens"], 15);
        assert_eq!(chat["usage"]["completion_tokens"], 5);
        assert_eq!(chat["usage"]["total_tokens"], 20);
        assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 4);

        for (reason, expected) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            let answer =
                json!({"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": reason});
            let chat: Value = serde_json::from_slice(
                &converse_response_to_chat(answer.to_string().as_bytes(), "m", None, 9).unwrap(),
            )
            .unwrap();
            assert_eq!(chat["choices"][0]["finish_reason"], expected);
            assert_eq!(chat["id"], "chatcmpl-bedrock-9");
        }
        assert!(converse_response_to_chat(b"{}", "m", None, 1).is_err());
        assert!(converse_response_to_chat(b"<html>", "m", None, 1).is_err());
    }

    #[test]
    fn errors_take_their_type_from_the_header() {
        let body = error_as_openai_shape(
            br#"{"message":"Too many requests, please wait before trying again."}"#,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "ThrottlingException");
        assert_eq!(
            body["error"]["message"],
            "Too many requests, please wait before trying again."
        );
        let body: Value = serde_json::from_slice(&error_as_openai_shape(b"oops", None)).unwrap();
        assert_eq!(body, json!({"error": {}}));
        // A refused signature's explanation lists the signed headers' values: never passed on.
        let body = error_as_openai_shape(
            br#"{"message":"The request signature we calculated does not match.\n\nThe Canonical String for this request should have been\nx-amz-security-token:SECRET-TOKEN"}"#,
            Some("InvalidSignatureException:http://internal.amazon.com/coral/com.amazon.coral.service/"),
        );
        let text = String::from_utf8(body).unwrap();
        assert!(!text.contains("SECRET-TOKEN"), "{text}");
        assert!(text.contains("InvalidSignatureException"));
    }

    fn frame(kind: &str, name: &str, payload: Value) -> Vec<u8> {
        let type_header = if kind == "event" {
            ":event-type"
        } else {
            ":exception-type"
        };
        let message = Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String(kind.to_string().into()),
            ))
            .add_header(Header::new(
                type_header,
                HeaderValue::String(name.to_string().into()),
            ))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ));
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut out).unwrap();
        out
    }

    fn sample_stream() -> Vec<u8> {
        [
            frame("event", "messageStart", json!({"role": "assistant", "p": "abc"})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}, "p": "a"})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "hmm"}}})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": " world"}})),
            frame("event", "contentBlockStop", json!({"contentBlockIndex": 0})),
            frame("event", "contentBlockStart", json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tooluse_9", "name": "f"}}})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":"}}})),
            frame("event", "contentBlockDelta", json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}})),
            frame("event", "contentBlockStop", json!({"contentBlockIndex": 1})),
            frame("event", "messageStop", json!({"stopReason": "tool_use"})),
            frame("event", "metadata", json!({"usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10}, "metrics": {"latencyMs": 5}})),
        ]
        .concat()
    }

    fn chunks(sse: &[u8]) -> Vec<Value> {
        let text = String::from_utf8(sse.to_vec()).unwrap();
        text.split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn the_event_stream_becomes_chat_chunks_in_every_split() {
        let stream = sample_stream();
        for size in [1, 7, 13, 64, stream.len()] {
            let mut translator = ConverseToChatStream::new("claude", Some("rid"), true, 3);
            let mut out = Vec::new();
            for piece in stream.chunks(size) {
                out.extend(translator.push(piece));
            }
            out.extend(translator.finish());
            assert!(out.ends_with(b"data: [DONE]\n\n"));
            let chunks = chunks(&out);
            let text: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(text, "Hello world", "split {size}");
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(chunks[0]["id"], "chatcmpl-rid");
            let arguments: String = chunks
                .iter()
                .filter_map(|c| {
                    c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
                })
                .collect();
            assert_eq!(arguments, "{\"a\":1}");
            let start = chunks
                .iter()
                .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "tooluse_9")
                .unwrap();
            assert_eq!(start["choices"][0]["delta"]["tool_calls"][0]["index"], 0);
            let finish = chunks
                .iter()
                .find_map(|c| c["choices"][0]["finish_reason"].as_str())
                .unwrap();
            assert_eq!(finish, "tool_calls");
            let usage = &chunks.last().unwrap()["usage"];
            assert_eq!(usage["prompt_tokens"], 7);
            assert_eq!(usage["completion_tokens"], 3);
        }
    }

    #[test]
    fn broken_streams_end_with_an_error_event() {
        // An exception frame from the provider.
        let mut stream = frame(
            "event",
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
        );
        stream.extend(frame(
            "exception",
            "throttlingException",
            json!({"message": "Too many tokens, please wait before trying again."}),
        ));
        let mut translator = ConverseToChatStream::new("m", None, false, 1);
        let mut out = translator.push(&stream);
        out.extend(translator.finish());
        let chunks = chunks(&out);
        let error = chunks.iter().find(|c| c.get("error").is_some()).unwrap();
        assert_eq!(error["error"]["code"], "throttlingException");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Too many tokens"));

        // A frame whose CRC does not match.
        let mut corrupt = sample_stream();
        let first = frame(
            "event",
            "messageStart",
            json!({"role": "assistant", "p": "abc"}),
        )
        .len();
        corrupt[first + 20] ^= 0xff;
        let mut translator = ConverseToChatStream::new("m", None, false, 1);
        let mut out = translator.push(&corrupt);
        out.extend(translator.finish());
        assert!(String::from_utf8_lossy(&out).contains("corrupt"));

        // A prelude announcing an impossible length is refused at once, nothing buffered.
        let mut translator = ConverseToChatStream::new("m", None, false, 1);
        let out = translator.push(&[0xff; 12]);
        assert!(String::from_utf8_lossy(&out).contains("invalid length"));
        assert!(translator.push(&[0; 1024]).is_empty());

        // Cut inside a frame.
        let whole = sample_stream();
        let mut translator = ConverseToChatStream::new("m", None, false, 1);
        let mut out = translator.push(&whole[..first + 30]);
        out.extend(translator.finish());
        assert!(String::from_utf8_lossy(&out).contains("ended inside a frame"));
    }

    #[test]
    fn sigv4_signs_the_request_as_it_leaves() {
        let credentials = AwsCredentials {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: Some(Secret::new("session")),
        };
        let host = "bedrock-runtime.us-east-1.amazonaws.com";
        let path = "/model/m%3A0/converse";
        let headers = sign(&credentials, "us-east-1", host, path, b"{}", 1_764_870_000).unwrap();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let authorization = get("authorization");
        assert!(authorization.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251204/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature="
        ), "{authorization}");
        assert_eq!(get("x-amz-date"), "20251204T174000Z");
        assert_eq!(get("x-amz-security-token"), "session");
        // The same request signs the same; another body, path or time does not.
        let again = sign(&credentials, "us-east-1", host, path, b"{}", 1_764_870_000).unwrap();
        assert_eq!(again, headers);
        for other in [
            sign(&credentials, "us-east-1", host, path, b"{ }", 1_764_870_000),
            sign(
                &credentials,
                "us-east-1",
                host,
                "/model/m/converse",
                b"{}",
                1_764_870_000,
            ),
            sign(&credentials, "us-west-2", host, path, b"{}", 1_764_870_000),
            sign(&credentials, "us-east-1", host, path, b"{}", 1_764_870_001),
        ] {
            assert_ne!(other.unwrap(), headers);
        }
        let text = format!("{credentials:?} {headers:?}");
        assert!(!text.contains("wJalrXUtnFEMI"));
    }
}
