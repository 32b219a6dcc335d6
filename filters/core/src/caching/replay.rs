//! Answers in and out of the cache. Every entry holds the answer in its API's non-streaming JSON
//! shape (an OpenAI `chat.completion`, an Anthropic `message`): a streamed answer is assembled into
//! that shape before it is stored, and a hit is replayed as JSON or as a stream synthesised from it,
//! whichever the new request asked for.

use super::key::CacheApi;
use crate::sse::{SseEvent, SseParser};
use serde_json::{json, Map, Value};

/// A complete answer, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complete {
    pub answer: Vec<u8>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// The tokens an answer reports: (input incl. cached, output).
pub fn tokens(api: CacheApi, answer: &Value) -> (u64, u64) {
    let usage = &at(answer, "usage");
    let n = |field: &str| at(usage, field).as_u64().unwrap_or(0);
    match api {
        CacheApi::ChatCompletions => (n("prompt_tokens"), n("completion_tokens")),
        CacheApi::Messages => (
            n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens"),
            n("output_tokens"),
        ),
    }
}

/// The JSON answer `body` if it is a complete one worth storing: every choice finished (OpenAI), or
/// the message stopped (Anthropic).
pub fn complete_json(api: CacheApi, body: &[u8]) -> Option<Complete> {
    // Typed and skipping what it does not need: a miss pays for this on every answer, so no DOM.
    use serde::de::IgnoredAny;
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct Usage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
        cache_read_input_tokens: Option<u64>,
        cache_creation_input_tokens: Option<u64>,
    }
    #[derive(Deserialize)]
    struct Choice {
        finish_reason: Option<String>,
        message: Option<IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Answer {
        choices: Option<Vec<Choice>>,
        #[serde(rename = "type")]
        kind: Option<String>,
        stop_reason: Option<String>,
        usage: Option<Usage>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    let complete = match api {
        CacheApi::ChatCompletions => answer.choices.as_ref().is_some_and(|choices| {
            !choices.is_empty()
                && choices
                    .iter()
                    .all(|c| c.finish_reason.is_some() && c.message.is_some())
        }),
        CacheApi::Messages => {
            answer.kind.as_deref() == Some("message") && answer.stop_reason.is_some()
        }
    };
    if !complete {
        return None;
    }
    let n = |v: Option<u64>| v.unwrap_or(0);
    let (input_tokens, output_tokens) = match (&answer.usage, api) {
        (None, _) => (0, 0),
        (Some(u), CacheApi::ChatCompletions) => (n(u.prompt_tokens), n(u.completion_tokens)),
        (Some(u), CacheApi::Messages) => (
            n(u.input_tokens) + n(u.cache_read_input_tokens) + n(u.cache_creation_input_tokens),
            n(u.output_tokens),
        ),
    };
    Some(Complete {
        answer: body.to_vec(),
        input_tokens,
        output_tokens,
    })
}

/// A stored answer as a JSON reply: a fresh `id` (and `created`, on OpenAI), the rest as stored.
pub fn replay_json(api: CacheApi, stored: &[u8], id: &str, now_s: u64) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(stored).ok()?;
    let object = value.as_object_mut()?;
    object.insert("id".into(), Value::String(id.to_string()));
    if api == CacheApi::ChatCompletions {
        object.insert("created".into(), json!(now_s));
    }
    serde_json::to_vec(&value).ok()
}

/// A stored answer as the event stream the API would have sent for it. `include_usage` (OpenAI's
/// `stream_options.include_usage`) adds the final usage chunk; Anthropic streams always carry usage.
pub fn replay_stream(
    api: CacheApi,
    stored: &[u8],
    id: &str,
    now_s: u64,
    include_usage: bool,
) -> Option<Vec<u8>> {
    let value: Value = serde_json::from_slice(stored).ok()?;
    let mut out = Vec::with_capacity(stored.len() * 2);
    match api {
        CacheApi::ChatCompletions => openai_stream(&value, id, now_s, include_usage, &mut out)?,
        CacheApi::Messages => anthropic_stream(&value, id, &mut out)?,
    }
    Some(out)
}

fn data(value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

fn event(name: &str, value: &Value, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    data(value, out);
}

fn openai_stream(
    answer: &Value,
    id: &str,
    now_s: u64,
    include_usage: bool,
    out: &mut Vec<u8>,
) -> Option<()> {
    let model = at(answer, "model").clone();
    let fingerprint = answer.get("system_fingerprint").cloned();
    let chunk = |choices: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": now_s,
            "model": model,
            "choices": choices,
        });
        if let Some(fingerprint) = &fingerprint {
            set(&mut chunk, "system_fingerprint", fingerprint.clone());
        }
        chunk
    };
    let choice = |index: &Value, delta: Value, finish: &Value| json!([{"index": index, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    for stored in at(answer, "choices").as_array()? {
        let index = &at(stored, "index");
        let message = &at(stored, "message");
        let mut first = json!({"role": "assistant", "content": ""});
        if let Some(refusal) = at(message, "refusal").as_str() {
            set(&mut first, "refusal", json!(refusal));
        }
        data(&chunk(choice(index, first, &Value::Null)), out);
        if let Some(text) = at(message, "content").as_str().filter(|t| !t.is_empty()) {
            data(
                &chunk(choice(index, json!({"content": text}), &Value::Null)),
                out,
            );
        }
        for (position, call) in at(message, "tool_calls")
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let start = json!({"tool_calls": [{
                "index": position,
                "id": at(call, "id"),
                "type": "function",
                "function": {"name": at(at(call, "function"), "name"), "arguments": ""},
            }]});
            data(&chunk(choice(index, start, &Value::Null)), out);
            if let Some(arguments) = at(at(call, "function"), "arguments").as_str() {
                let args = json!({"tool_calls": [{
                    "index": position,
                    "function": {"arguments": arguments},
                }]});
                data(&chunk(choice(index, args, &Value::Null)), out);
            }
        }
        data(
            &chunk(choice(index, json!({}), at(stored, "finish_reason"))),
            out,
        );
    }
    if include_usage && at(answer, "usage").is_object() {
        let mut last = chunk(json!([]));
        set(&mut last, "usage", at(answer, "usage").clone());
        data(&last, out);
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Some(())
}

fn anthropic_stream(answer: &Value, id: &str, out: &mut Vec<u8>) -> Option<()> {
    let blocks = at(answer, "content").as_array()?;
    let mut start_usage = at(answer, "usage").clone();
    if let Some(usage) = start_usage.as_object_mut() {
        usage.insert("output_tokens".into(), json!(0));
    }
    let message = json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": at(answer, "model"),
        "content": [],
        "stop_reason": null,
        "stop_sequence": null,
        "usage": start_usage,
    });
    event(
        "message_start",
        &json!({"type": "message_start", "message": message}),
        out,
    );
    for (index, block) in blocks.iter().enumerate() {
        let delta = |delta: Value, out: &mut Vec<u8>| {
            event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                out,
            );
        };
        let start = match at(block, "type").as_str() {
            Some("text") => json!({"type": "text", "text": ""}),
            Some("tool_use") => json!({
                "type": "tool_use", "id": at(block, "id"), "name": at(block, "name"), "input": {}
            }),
            Some("thinking") => json!({"type": "thinking", "thinking": ""}),
            _ => block.clone(),
        };
        event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
            out,
        );
        match at(block, "type").as_str() {
            Some("text") => {
                delta(
                    json!({"type": "text_delta", "text": at(block, "text")}),
                    out,
                );
            }
            Some("tool_use") => {
                let input = at(block, "input").to_string();
                delta(
                    json!({"type": "input_json_delta", "partial_json": input}),
                    out,
                );
            }
            Some("thinking") => {
                delta(
                    json!({"type": "thinking_delta", "thinking": at(block, "thinking")}),
                    out,
                );
                if at(block, "signature").is_string() {
                    delta(
                        json!({"type": "signature_delta", "signature": at(block, "signature")}),
                        out,
                    );
                }
            }
            _ => {}
        }
        event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
            out,
        );
    }
    let mut usage = json!({"output_tokens": at(at(answer, "usage"), "output_tokens")});
    for field in [
        "input_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ] {
        if let Some(n) = at(answer, "usage").get(field) {
            set(&mut usage, field, n.clone());
        }
    }
    event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": at(answer, "stop_reason"), "stop_sequence": at(answer, "stop_sequence")},
            "usage": usage,
        }),
        out,
    );
    event("message_stop", &json!({"type": "message_stop"}), out);
    Some(())
}

/// Assembles a streamed answer, chunk by chunk, into the JSON answer the API would have sent. It
/// keeps at most `max_bytes` of event data; past that, or on an error event or a malformed event, it
/// gives up (nothing is stored).
#[derive(Debug)]
pub struct Assembler {
    api: CacheApi,
    parser: SseParser,
    max_bytes: usize,
    seen: usize,
    failed: bool,
    done: bool,
    /// OpenAI: the answer so far; Anthropic: the message.
    answer: Map<String, Value>,
    /// OpenAI: choices by index; Anthropic: content blocks by index.
    parts: Vec<Value>,
    /// Anthropic: the `partial_json` of each tool_use block.
    partial_json: Vec<String>,
}

impl Assembler {
    pub fn new(api: CacheApi, max_bytes: usize) -> Self {
        Assembler {
            api,
            parser: SseParser::new(),
            max_bytes,
            seen: 0,
            failed: false,
            done: false,
            answer: Map::new(),
            parts: Vec::new(),
            partial_json: Vec::new(),
        }
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.failed {
            return;
        }
        self.seen += chunk.len();
        if self.seen > self.max_bytes {
            self.fail();
            return;
        }
        for event in self.parser.push(chunk) {
            if self.failed {
                return;
            }
            if self.handle(&event).is_none() {
                self.fail();
            }
        }
    }

    fn fail(&mut self) {
        self.failed = true;
        self.answer = Map::new();
        self.parts = Vec::new();
        self.partial_json = Vec::new();
    }

    /// The assembled answer, if the stream ended as a complete answer does.
    pub fn finish(mut self) -> Option<Complete> {
        if let Some(event) = self.parser.finish() {
            self.handle(&event)?;
        }
        if self.failed || !self.done {
            return None;
        }
        let api = self.api;
        let answer = match api {
            CacheApi::ChatCompletions => {
                if self.parts.is_empty()
                    || self
                        .parts
                        .iter()
                        .any(|c| !at(c, "finish_reason").is_string())
                {
                    return None;
                }
                let mut answer = self.answer;
                answer.insert("object".into(), json!("chat.completion"));
                answer.insert("choices".into(), Value::Array(self.parts));
                Value::Object(answer)
            }
            CacheApi::Messages => {
                let mut blocks = self.parts;
                for (block, partial) in blocks.iter_mut().zip(&self.partial_json) {
                    if at(block, "type") == "tool_use" {
                        let input: Value = if partial.trim().is_empty() {
                            json!({})
                        } else {
                            serde_json::from_str(partial).ok()?
                        };
                        set(block, "input", input);
                    }
                }
                let mut answer = self.answer;
                answer.insert("content".into(), Value::Array(blocks));
                if !answer.get("stop_reason").is_some_and(Value::is_string) {
                    return None;
                }
                Value::Object(answer)
            }
        };
        let (input_tokens, output_tokens) = tokens(api, &answer);
        Some(Complete {
            answer: serde_json::to_vec(&answer).ok()?,
            input_tokens,
            output_tokens,
        })
    }

    fn handle(&mut self, event: &SseEvent) -> Option<()> {
        if self.done {
            return Some(()); // nothing after the end counts (OpenAI sends nothing; Anthropic pings)
        }
        match self.api {
            CacheApi::ChatCompletions => self.openai(event),
            CacheApi::Messages => self.anthropic(event),
        }
    }

    fn openai(&mut self, event: &SseEvent) -> Option<()> {
        let data = event.data.trim();
        if data.is_empty() {
            return Some(());
        }
        if data == "[DONE]" {
            self.done = true;
            return Some(());
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if chunk.get("error").is_some() {
            return None;
        }
        for field in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(value) = chunk.get(field).filter(|v| !v.is_null()) {
                self.answer
                    .entry(field.to_string())
                    .or_insert_with(|| value.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.answer.insert("usage".into(), usage.clone());
        }
        for delta_choice in at(&chunk, "choices")
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let index = usize::try_from(at(delta_choice, "index").as_u64()?).ok()?;
            if index > 127 {
                return None;
            }
            while self.parts.len() <= index {
                let n = self.parts.len();
                self.parts.push(json!({
                    "index": n,
                    "message": {"role": "assistant", "content": null},
                    "logprobs": null,
                    "finish_reason": null,
                }));
            }
            let choice = self.parts.get_mut(index)?;
            let delta = &at(delta_choice, "delta");
            let message = choice.get_mut("message")?;
            for field in ["content", "refusal"] {
                if let Some(text) = at(delta, field).as_str() {
                    append(message, field, text);
                }
            }
            for call in at(delta, "tool_calls")
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                let position = usize::try_from(at(call, "index").as_u64()?).ok()?;
                if position > 1023 {
                    return None;
                }
                let calls = message
                    .as_object_mut()?
                    .entry("tool_calls")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()?;
                while calls.len() <= position {
                    calls.push(json!({"id": "", "type": "function",
                        "function": {"name": "", "arguments": ""}}));
                }
                let stored = calls.get_mut(position)?;
                if let Some(id) = at(call, "id").as_str() {
                    set(stored, "id", json!(id));
                }
                let function = stored.get_mut("function")?;
                for field in ["name", "arguments"] {
                    if let Some(text) = at(at(call, "function"), field).as_str() {
                        append(function, field, text);
                    }
                }
            }
            if let Some(finish) = at(delta_choice, "finish_reason").as_str() {
                set(choice, "finish_reason", json!(finish));
            }
        }
        Some(())
    }

    fn anthropic(&mut self, event: &SseEvent) -> Option<()> {
        if event.data.trim().is_empty() {
            return Some(());
        }
        let value: Value = serde_json::from_str(&event.data).ok()?;
        match at(&value, "type").as_str()? {
            "message_start" => {
                self.answer = at(&value, "message").as_object()?.clone();
                self.answer.insert("content".into(), json!([]));
            }
            "content_block_start" => {
                let index = usize::try_from(at(&value, "index").as_u64()?).ok()?;
                if index != self.parts.len() {
                    return None;
                }
                let mut block = at(&value, "content_block").clone();
                if at(&block, "type") == "tool_use" {
                    set(&mut block, "input", json!({}));
                }
                self.parts.push(block);
                self.partial_json.push(String::new());
            }
            "content_block_delta" => {
                let index = usize::try_from(at(&value, "index").as_u64()?).ok()?;
                let block = self.parts.get_mut(index)?;
                let delta = &at(&value, "delta");
                match at(delta, "type").as_str()? {
                    "text_delta" => append(block, "text", at(delta, "text").as_str()?),
                    "thinking_delta" => append(block, "thinking", at(delta, "thinking").as_str()?),
                    "signature_delta" => {
                        append(block, "signature", at(delta, "signature").as_str()?)
                    }
                    "input_json_delta" => self
                        .partial_json
                        .get_mut(index)?
                        .push_str(at(delta, "partial_json").as_str()?),
                    "citations_delta" => block
                        .as_object_mut()?
                        .entry("citations")
                        .or_insert_with(|| json!([]))
                        .as_array_mut()?
                        .push(at(delta, "citation").clone()),
                    _ => return None,
                }
            }
            "content_block_stop" | "ping" => {}
            "message_delta" => {
                for field in ["stop_reason", "stop_sequence"] {
                    if let Some(v) = at(&value, "delta").get(field) {
                        self.answer.insert(field.to_string(), v.clone());
                    }
                }
                if let Some(usage) = at(&value, "usage").as_object() {
                    let stored = self
                        .answer
                        .entry("usage")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()?;
                    for (field, n) in usage {
                        if !n.is_null() {
                            stored.insert(field.clone(), n.clone());
                        }
                    }
                }
            }
            "message_stop" => {
                if self.answer.is_empty() {
                    return None;
                }
                self.done = true;
            }
            _ => return None, // `error`, or an event this assembler does not know: do not store
        }
        Some(())
    }
}

/// `value[key]` without the panic of indexing: `Null` when absent or not an object.
fn at<'a>(value: &'a Value, key: &str) -> &'a Value {
    value.get(key).unwrap_or(&Value::Null)
}

/// Sets `key` on a JSON object (a no-op on anything else, where `value[key] = ...` would panic).
fn set(value: &mut Value, key: &str, field: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert(key.to_string(), field);
    }
}

fn append(object: &mut Value, field: &str, text: &str) {
    match object.get_mut(field) {
        Some(Value::String(existing)) => existing.push_str(text),
        _ => set(object, field, json!(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;

    const MESSAGE: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":4}}"#;

    fn reassemble(api: CacheApi, stream: &[u8], chunk: usize) -> Value {
        let mut assembler = Assembler::new(api, 1 << 20);
        for piece in stream.chunks(chunk) {
            assembler.push(piece);
        }
        let complete = assembler.finish().expect("complete");
        serde_json::from_slice(&complete.answer).unwrap()
    }

    #[test]
    fn an_openai_answer_survives_a_stream_round_trip_in_any_chunking() {
        let stream =
            replay_stream(CacheApi::ChatCompletions, CHAT.as_bytes(), "c-2", 9, true).unwrap();
        let text = String::from_utf8(stream.clone()).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(
            text.contains(r#""usage":{"completion_tokens":7"#)
                || text.contains(r#""usage":{"prompt_tokens":5"#)
        );
        for chunk in [1, 7, 64, stream.len()] {
            let back = reassemble(CacheApi::ChatCompletions, &stream, chunk);
            let original: Value = serde_json::from_str(CHAT).unwrap();
            assert_eq!(back["choices"], original["choices"], "chunk {chunk}");
            assert_eq!(back["usage"], original["usage"]);
            assert_eq!(back["id"], "c-2");
        }
        let without =
            replay_stream(CacheApi::ChatCompletions, CHAT.as_bytes(), "c", 9, false).unwrap();
        assert!(!String::from_utf8(without).unwrap().contains("usage"));
    }

    #[test]
    fn an_anthropic_answer_survives_a_stream_round_trip() {
        let stream =
            replay_stream(CacheApi::Messages, MESSAGE.as_bytes(), "msg_2", 9, false).unwrap();
        let text = String::from_utf8(stream.clone()).unwrap();
        assert!(text.starts_with("event: message_start\n"));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        for chunk in [1, 13, stream.len()] {
            let back = reassemble(CacheApi::Messages, &stream, chunk);
            let original: Value = serde_json::from_str(MESSAGE).unwrap();
            assert_eq!(back["content"], original["content"]);
            assert_eq!(back["stop_reason"], "tool_use");
            assert_eq!(back["usage"]["output_tokens"], 4);
            assert_eq!(back["usage"]["input_tokens"], 9);
        }
    }

    #[test]
    fn json_replay_refreshes_id_and_created_only() {
        let out = replay_json(CacheApi::ChatCompletions, CHAT.as_bytes(), "new", 42).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let original: Value = serde_json::from_str(CHAT).unwrap();
        assert_eq!(out["id"], "new");
        assert_eq!(out["created"], 42);
        assert_eq!(out["choices"], original["choices"]);
        let out = replay_json(CacheApi::Messages, MESSAGE.as_bytes(), "msg_n", 42).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["id"], "msg_n");
        assert!(out.get("created").is_none());
    }

    #[test]
    fn incomplete_or_broken_streams_are_not_stored() {
        let stream =
            replay_stream(CacheApi::ChatCompletions, CHAT.as_bytes(), "c", 9, true).unwrap();
        let text = String::from_utf8(stream).unwrap();
        // Truncated before [DONE].
        let cut = text.replace("data: [DONE]\n\n", "");
        let mut a = Assembler::new(CacheApi::ChatCompletions, 1 << 20);
        a.push(cut.as_bytes());
        assert!(a.finish().is_none());
        // An error event mid-stream.
        let mut a = Assembler::new(CacheApi::ChatCompletions, 1 << 20);
        a.push(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\ndata: [DONE]\n\n");
        assert!(a.finish().is_none());
        // Garbage.
        let mut a = Assembler::new(CacheApi::Messages, 1 << 20);
        a.push(b"event: message_start\ndata: {not json\n\n");
        assert!(a.failed());
        // Too large.
        let mut a = Assembler::new(CacheApi::ChatCompletions, 10);
        a.push(text.as_bytes());
        assert!(a.failed());
        // Anthropic without message_stop.
        let stream = replay_stream(CacheApi::Messages, MESSAGE.as_bytes(), "m", 9, false).unwrap();
        let text = String::from_utf8(stream).unwrap();
        let cut = text.split("event: message_stop").next().unwrap();
        let mut a = Assembler::new(CacheApi::Messages, 1 << 20);
        a.push(cut.as_bytes());
        assert!(a.finish().is_none());
    }

    #[test]
    fn only_finished_json_answers_are_complete() {
        assert!(complete_json(CacheApi::ChatCompletions, CHAT.as_bytes()).is_some());
        let c = complete_json(CacheApi::Messages, MESSAGE.as_bytes()).unwrap();
        assert_eq!((c.input_tokens, c.output_tokens), (9, 4));
        assert!(complete_json(CacheApi::ChatCompletions, br#"{"choices":[]}"#).is_none());
        assert!(complete_json(
            CacheApi::ChatCompletions,
            br#"{"choices":[{"message":{},"finish_reason":null}]}"#
        )
        .is_none());
        assert!(complete_json(CacheApi::Messages, br#"{"type":"error"}"#).is_none());
        assert!(complete_json(CacheApi::Messages, b"not json").is_none());
    }
}
