//! Google's Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`) from
//! and to Chat Completions: a Chat client on a Gemini provider, and through Chat the Messages and
//! Responses clients.
//!
//! Requests: `messages` become `contents` (roles `user` and `model`; system and developer messages
//! `systemInstruction`), tool calls `functionCall` parts and tool results `functionResponse` parts
//! (named after the call they answer), images inline data, tools `functionDeclarations`
//! (`parametersJsonSchema`: JSON Schema as written), and the sampling fields `generationConfig`.
//! Answers: candidates become choices, `usageMetadata` usage (thinking tokens are output), finish
//! reasons OpenAI's (SAFETY and the other blocks: `content_filter`).

use crate::anthropic::json_object;
use crate::sse::SseParser;
use crate::wire::via_chat::{
    self, assistant_calls, function_tools, max_tokens, push_turn, refuse_unexpressible, set,
    stop_sequences, stream_flags, ChunkWriter, ContentRules, TranslatedRequest,
};
use serde_json::{json, Map, Value};

/// The translated request (its body, stream flags).
pub type GeminiRequest = TranslatedRequest;

/// The Gemini path of a request for `model` (`/v1beta` unless the provider's `base_path` says).
pub fn path(base: &str, model: &str, stream: bool) -> String {
    let model = model.trim_start_matches("models/");
    let encoded: String = model
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        .collect();
    if stream {
        format!("{base}/models/{encoded}:streamGenerateContent?alt=sse")
    } else {
        format!("{base}/models/{encoded}:generateContent")
    }
}

/// A Chat Completions request body as a Gemini `GenerateContentRequest`.
pub fn chat_request_to_gemini(body: &[u8]) -> Result<GeminiRequest, String> {
    let request = json_object(body)?;
    // candidateCount > 1 is refused by most Gemini models with tools; kept simple: one.
    refuse_unexpressible(&request, "Gemini")?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;

    // Tool results name their call by id; Gemini wants the function's name.
    let mut call_names: Map<String, Value> = Map::new();
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content");
        let (gemini_role, parts) = match role {
            "system" | "developer" => {
                system.extend(text_parts(content, i)?);
                continue;
            }
            "user" => ("user", user_parts(content, i)?),
            "assistant" => {
                let mut parts = text_parts(content, i)?;
                for call in assistant_calls(message, i)? {
                    if let Some(id) = call.id {
                        call_names.insert(id.to_string(), Value::String(call.name.to_string()));
                    }
                    parts
                        .push(json!({"functionCall": {"name": call.name, "args": call.arguments}}));
                }
                ("model", parts)
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let name = call_names
                    .get(id)
                    .and_then(Value::as_str)
                    .ok_or(format!(
                        "`messages[{i}]` answers a tool call this conversation did not make"
                    ))?
                    .to_string();
                let text = crate::anthropic::text_of(content.unwrap_or(&Value::Null));
                // A JSON object result goes as it is; anything else under `content`.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(object)) => Value::Object(object),
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => return Err(format!("`messages[{i}].role` `{other}` is not supported")),
        };
        // Gemini wants turns to alternate: consecutive messages of one role are one turn.
        push_turn(&mut contents, gemini_role, "parts", parts);
    }
    if contents.is_empty() {
        return Err("`messages` needs a user or assistant message".into());
    }

    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let mut declarations = Vec::new();
    for tool in function_tools(&request, "Gemini")? {
        let mut declaration = Map::new();
        declaration.insert("name".into(), json!(tool.name));
        if let Some(description) = tool.description {
            declaration.insert("description".into(), json!(description));
        }
        if let Some(parameters) = tool.parameters {
            declaration.insert("parametersJsonSchema".into(), parameters.clone());
        }
        declarations.push(Value::Object(declaration));
    }
    if !declarations.is_empty() {
        out.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    if let Some(choice) = request.get("tool_choice") {
        let config = match choice {
            Value::String(mode) => match mode.as_str() {
                "auto" => json!({"mode": "AUTO"}),
                "none" => json!({"mode": "NONE"}),
                "required" => json!({"mode": "ANY"}),
                other => return Err(format!("`tool_choice` `{other}` is not supported")),
            },
            Value::Object(_) => {
                let name = choice
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .ok_or("`tool_choice.function.name` is missing")?;
                json!({"mode": "ANY", "allowedFunctionNames": [name]})
            }
            _ => return Err("`tool_choice` must be a string or an object".into()),
        };
        out.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }

    let mut generation = Map::new();
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(value) = request.get(from).filter(|v| v.is_number()) {
            generation.insert(to.into(), value.clone());
        }
    }
    if let Some(max) = max_tokens(&request) {
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(stops) = stop_sequences(&request) {
        generation.insert("stopSequences".into(), stops);
    }
    if let Some(format) = request.get("response_format") {
        match format.get("type").and_then(Value::as_str) {
            Some("json_object") => {
                generation.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                generation.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    generation.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            Some("text") | None => {}
            Some(other) => return Err(format!("`response_format` `{other}` is not supported")),
        }
    }
    if let Some(effort) = request.get("reasoning_effort").and_then(Value::as_str) {
        // `minimal` keeps the smallest budget every thinking model accepts (2.5 Pro refuses 0).
        let budget = match effort {
            "none" => 0,
            "minimal" => 128,
            "low" => 1024,
            "medium" => 8192,
            "high" => 24576,
            other => return Err(format!("`reasoning_effort` `{other}` is not supported")),
        };
        generation.insert("thinkingConfig".into(), json!({ "thinkingBudget": budget }));
    }
    if !generation.is_empty() {
        out.insert("generationConfig".into(), Value::Object(generation));
    }
    let (stream, include_usage) = stream_flags(&request);
    Ok(GeminiRequest {
        body: Value::Object(out).to_string().into_bytes(),
        stream,
        include_usage,
    })
}

/// Gemini refuses empty text parts.
fn blank(text: &str) -> bool {
    text.is_empty()
}

fn text_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    via_chat::text_parts(content, i, blank)
}

/// A user content: text, and images as inline data (Gemini does not fetch URLs).
fn user_parts(content: Option<&Value>, i: usize) -> Result<Vec<Value>, String> {
    let image = |mime: &str, data: &str, _: usize| {
        Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
    };
    let rules = ContentRules {
        provider: "Gemini",
        blank,
        image: &image,
    };
    via_chat::user_parts(content, i, &rules)
}

/// OpenAI's finish reason for a Gemini one.
fn finish_reason(reason: Option<&str>, called_a_tool: bool) -> Option<&'static str> {
    let reason = reason?;
    Some(match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ if called_a_tool => "tool_calls",
        _ => "stop", // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED
    })
}

/// OpenAI's `usage` for Gemini's `usageMetadata`: thinking tokens are output tokens.
fn usage(metadata: &Value) -> Value {
    let get = |key: &str| metadata.get(key).and_then(Value::as_u64).unwrap_or(0);
    let prompt = get("promptTokenCount").saturating_add(get("toolUsePromptTokenCount"));
    let thoughts = get("thoughtsTokenCount");
    let completion = get("candidatesTokenCount").saturating_add(thoughts);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt.saturating_add(completion),
        "prompt_tokens_details": {"cached_tokens": get("cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// A candidate's text (thought summaries left out) and tool calls.
fn candidate_content(
    candidate: &Value,
    calls_so_far: usize,
    response_id: &str,
) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(piece) = part.get("text").and_then(Value::as_str) {
            text.push_str(piece);
        }
        if let Some(call) = part.get("functionCall") {
            let index = calls_so_far + calls.len();
            // Distinct across turns: clients answer a call by its id.
            let id = crate::wire::chat_stream::call_id(
                call.get("id").and_then(Value::as_str),
                response_id,
                index,
            );
            let arguments = call.get("args").cloned().unwrap_or(json!({})).to_string();
            calls.push(json!({
                "id": id,
                "type": "function",
                "function": {
                    "name": call.get("name").and_then(Value::as_str).unwrap_or(""),
                    "arguments": arguments,
                },
            }));
        }
    }
    (text, calls)
}

/// `chatcmpl-{responseId}`; without one, made unique enough by the time (tool-call ids derive
/// from it).
fn chat_id(response: &Value, created: u64) -> String {
    match response.get("responseId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => format!("chatcmpl-{}", capped_id(id)),
        _ => format!("chatcmpl-gemini-{created}"),
    }
}

/// A provider id as it may appear in ids and paths of our own: plain characters, capped.
fn capped_id(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .take(96)
        .collect()
}

fn model_of(response: &Value, model: &str) -> String {
    response
        .get("modelVersion")
        .and_then(Value::as_str)
        .unwrap_or(model)
        .to_string()
}

/// A complete `GenerateContentResponse` as a `chat.completion`; `model` is the one asked for.
pub fn gemini_response_to_chat(body: &[u8], model: &str, created: u64) -> Result<Vec<u8>, String> {
    let response: Value = serde_json::from_slice(body)
        .map_err(|_| "the provider's response is not valid JSON".to_string())?;
    if !response.is_object() {
        return Err("the provider's response is not a JSON object".into());
    }
    let id = chat_id(&response, created);
    let mut choices = Vec::new();
    for (index, candidate) in response
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (text, calls) = candidate_content(candidate, 0, &id);
        let reason = finish_reason(
            candidate.get("finishReason").and_then(Value::as_str),
            !calls.is_empty(),
        )
        .unwrap_or("stop");
        let mut message = json!({"role": "assistant", "content": text, "refusal": null});
        if !calls.is_empty() {
            set(&mut message, "tool_calls", Value::Array(calls));
        }
        choices.push(json!({
            "index": index,
            "message": message,
            "logprobs": null,
            "finish_reason": reason,
        }));
    }
    if choices.is_empty() {
        // The prompt itself was blocked (`promptFeedback.blockReason`): no candidate at all.
        choices.push(json!({
            "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": null},
            "logprobs": null,
            "finish_reason": "content_filter",
        }));
    }
    let mut chat = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model_of(&response, model),
        "choices": choices,
    });
    if let Some(metadata) = response.get("usageMetadata") {
        set(&mut chat, "usage", usage(metadata));
    }
    Ok(chat.to_string().into_bytes())
}

/// Gemini's SSE stream (`alt=sse`: each event a `GenerateContentResponse`) as Chat Completions
/// chunks, event by event.
#[derive(Debug)]
pub struct GeminiToChatStream {
    parser: SseParser,
    writer: ChunkWriter,
    /// The answer's id and model were read from its first event.
    identified: bool,
    /// Tool calls sent so far (their chunk indexes).
    calls: usize,
}

impl GeminiToChatStream {
    pub fn new(model: &str, include_usage: bool, created: u64) -> Self {
        GeminiToChatStream {
            parser: SseParser::new(),
            writer: ChunkWriter::new("chatcmpl-gemini".into(), model, include_usage, created),
            identified: false,
            calls: 0,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for event in self.parser.push(chunk) {
            self.event(&event.data, &mut out);
        }
        out
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(event) = self.parser.finish() {
            self.event(&event.data, &mut out);
        }
        self.writer.finish(&mut out);
        out
    }

    fn event(&mut self, data: &str, out: &mut Vec<u8>) {
        let Ok(response) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if self.writer.finished {
            // Usage may come after the finish reason, in a last event of its own.
            if let Some(metadata) = response.get("usageMetadata") {
                self.writer.usage = Some(usage(metadata));
            }
            return;
        }
        if !self.identified {
            self.identified = true;
            self.writer.id = chat_id(&response, self.writer.created);
            self.writer.model = model_of(&response, &self.writer.model);
        }
        if let Some(error) = response.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("The provider's stream failed.");
            self.writer.error(message, None, out);
            return;
        }
        if let Some(metadata) = response.get("usageMetadata") {
            self.writer.usage = Some(usage(metadata));
        }
        let candidate = response.pointer("/candidates/0");
        let Some(candidate) = candidate else {
            if response.pointer("/promptFeedback/blockReason").is_some() {
                self.writer
                    .emit(json!({"content": ""}), Some("content_filter"), out);
            }
            return;
        };
        let response_id = self.writer.id.clone();
        let (text, calls) = candidate_content(candidate, self.calls, &response_id);
        if !text.is_empty() {
            self.writer.emit(json!({ "content": text }), None, out);
        }
        for call in &calls {
            let mut call = call.clone();
            set(&mut call, "index", json!(self.calls));
            self.calls += 1;
            self.writer.emit(json!({ "tool_calls": [call] }), None, out);
        }
        let reason = finish_reason(
            candidate.get("finishReason").and_then(Value::as_str),
            self.calls > 0,
        );
        if let Some(reason) = reason {
            self.writer.emit(json!({}), Some(reason), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(body: Value) -> Value {
        let request = chat_request_to_gemini(body.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn a_chat_request_becomes_generate_content() {
        let gemini = translated(json!({
            "model": "gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "What is in it?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\":21}"},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "temperature": 0.2, "top_p": 0.9, "max_tokens": 100, "stop": "END", "seed": 7,
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
        }));
        assert_eq!(
            gemini["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        let contents = gemini["contents"].as_array().unwrap();
        assert_eq!(contents.len(), 3, "{contents:#?}");
        assert_eq!(contents[0]["role"], "user");
        assert_eq!(
            contents[0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0K"}})
        );
        assert_eq!(
            contents[1],
            json!({"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]})
        );
        // Both results in one user turn, each named after its call.
        assert_eq!(
            contents[2]["parts"],
            json!([
                {"functionResponse": {"name": "weather", "response": {"temp": 21}}},
                {"functionResponse": {"name": "weather", "response": {"content": "sunny"}}}
            ])
        );
        let declaration = &gemini["tools"][0]["functionDeclarations"][0];
        assert_eq!(declaration["name"], "weather");
        assert_eq!(
            declaration["parametersJsonSchema"]["additionalProperties"],
            false
        );
        assert_eq!(
            gemini["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
        );
        let config = &gemini["generationConfig"];
        assert_eq!(config["temperature"], 0.2);
        assert_eq!(config["topP"], 0.9);
        assert_eq!(config["maxOutputTokens"], 100);
        assert_eq!(config["stopSequences"], json!(["END"]));
        assert_eq!(config["seed"], 7);
        assert_eq!(config["responseMimeType"], "application/json");
        assert_eq!(config["responseJsonSchema"], json!({"type": "object"}));
    }

    #[test]
    fn what_gemini_cannot_take_is_refused_with_a_reason() {
        for (body, says) in [
            (
                json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
                "`n`",
            ),
            (
                json!({"messages": [{"role": "user", "content": [{"type": "image_url",
                "image_url": {"url": "https://example.com/a.png"}}]}]}),
                "data: URLs",
            ),
            (
                json!({"messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}),
                "did not make",
            ),
            (
                json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "web_search"}]}),
                "function tools",
            ),
            (json!({"messages": "hi"}), "`messages`"),
            (
                json!({"messages": [{"role": "system", "content": "only a system prompt"}]}),
                "user or assistant",
            ),
        ] {
            let err = chat_request_to_gemini(body.to_string().as_bytes()).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        assert!(chat_request_to_gemini(b"not json").is_err());
    }

    #[test]
    fn paths_and_streams() {
        assert_eq!(
            path("/v1beta", "gemini-2.5-flash", false),
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        assert_eq!(
            path("/v1beta", "models/gemini-2.5-pro", true),
            "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
        );
        // Nothing in a model name can change the path.
        assert_eq!(
            path("/v1beta", "../x?y#z", false),
            "/v1beta/models/..xyz:generateContent"
        );
        let request = chat_request_to_gemini(
            br#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(request.stream && request.include_usage);
    }

    #[test]
    fn an_answer_becomes_a_chat_completion() {
        let answer = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true},
                {"text": "It is "}, {"text": "sunny."},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7,
                              "cachedContentTokenCount": 4, "totalTokenCount": 22},
            "modelVersion": "gemini-2.5-flash-001", "responseId": "abc"
        });
        let chat: Value = serde_json::from_slice(
            &gemini_response_to_chat(answer.to_string().as_bytes(), "gemini-2.5-flash", 9).unwrap(),
        )
        .unwrap();
        assert_eq!(chat["id"], "chatcmpl-abc");
        assert_eq!(chat["model"], "gemini-2.5-flash-001");
        let choice = &chat["choices"][0];
        assert_eq!(choice["message"]["content"], "It is sunny.");
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["name"],
            "weather"
        );
        assert_eq!(
            choice["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Paris\"}"
        );
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(chat["usage"]["prompt_tokens"], 10);
        assert_eq!(chat["usage"]["completion_tokens"], 12);
        assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(
            chat["usage"]["completion_tokens_details"]["reasoning_tokens"],
            7
        );

        for (reason, expected) in [
            ("MAX_TOKENS", "length"),
            ("SAFETY", "content_filter"),
            ("RECITATION", "content_filter"),
        ] {
            let answer = json!({"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]});
            let chat: Value = serde_json::from_slice(
                &gemini_response_to_chat(answer.to_string().as_bytes(), "m", 1).unwrap(),
            )
            .unwrap();
            assert_eq!(chat["choices"][0]["finish_reason"], expected, "{reason}");
        }
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#;
        let chat: Value =
            serde_json::from_slice(&gemini_response_to_chat(blocked, "m", 1).unwrap()).unwrap();
        assert_eq!(chat["choices"][0]["finish_reason"], "content_filter");
        assert!(gemini_response_to_chat(b"<html>", "m", 1).is_err());
    }

    #[test]
    fn a_stream_becomes_chat_chunks_in_any_split() {
        let mut source = String::new();
        for event in [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}}], "responseId": "r1", "modelVersion": "gemini-2.5-flash"}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo"}]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}}),
        ] {
            source.push_str(&format!("data: {event}\r\n\r\n"));
        }
        for split in [1, 7, source.len()] {
            let mut stream = GeminiToChatStream::new("gemini-2.5-flash", true, 5);
            let mut out = Vec::new();
            for piece in source.as_bytes().chunks(split) {
                out.extend(stream.push(piece));
            }
            out.extend(stream.finish());
            let text = String::from_utf8(out).unwrap();
            let events: Vec<Value> = text
                .split("\n\n")
                .filter_map(|e| e.strip_prefix("data: "))
                .filter(|d| *d != "[DONE]")
                .map(|d| serde_json::from_str(d).unwrap())
                .collect();
            assert!(text.ends_with("data: [DONE]\n\n"));
            let content: String = events
                .iter()
                .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(content, "Hello", "split {split}");
            assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(events[0]["id"], "chatcmpl-r1");
            let call = events
                .iter()
                .find_map(|e| {
                    e["choices"][0]["delta"]["tool_calls"][0]
                        .as_object()
                        .cloned()
                })
                .unwrap();
            assert_eq!(call["function"]["arguments"], "{\"a\":1}");
            assert_eq!(call["index"], 0);
            let finish: Vec<&Value> = events
                .iter()
                .filter(|e| !e["choices"][0]["finish_reason"].is_null())
                .collect();
            assert_eq!(finish.len(), 1);
            assert_eq!(finish[0]["choices"][0]["finish_reason"], "tool_calls");
            let usage = &events.last().unwrap()["usage"];
            assert_eq!(usage["completion_tokens"], 4);
            assert_eq!(events.last().unwrap()["choices"], json!([]));
        }
        // Cut short: still closed, and nothing invented.
        let mut stream = GeminiToChatStream::new("m", false, 1);
        let mut out =
            stream.push(b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"par");
        out.extend(stream.finish());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"finish_reason\":\"stop\"") && text.ends_with("[DONE]\n\n"));
    }
}
