//! Token usage from provider responses: OpenAI and Anthropic, JSON and SSE, extracted as the bytes pass.

use crate::sse::SseParser;
use serde_json::value::RawValue;
use serde_json::Value;

/// Tokens one request used. OpenAI counts cached tokens inside `input`; Anthropic reports them apart
/// (its `input_tokens` excludes them), so Anthropic's numbers are folded into the same shape here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All prompt tokens, cached ones included.
    pub input: u64,
    pub output: u64,
    /// Prompt tokens served from the provider's cache (priced as cached input).
    pub cached_input: u64,
    /// Anthropic: prompt tokens written to the cache.
    pub cache_creation: u64,
    /// OpenAI: reasoning tokens (already inside `output`).
    pub reasoning: u64,
    /// The provider sent no usage; these numbers are estimates.
    pub estimated: bool,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    fn from_openai(usage: &Value) -> Option<Usage> {
        let object = usage.as_object()?;
        let get = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        let input = get(object
            .get("prompt_tokens")
            .or_else(|| object.get("input_tokens")));
        let output = get(object
            .get("completion_tokens")
            .or_else(|| object.get("output_tokens")));
        Some(Usage {
            input,
            output,
            cached_input: get(usage.pointer("/prompt_tokens_details/cached_tokens"))
                .max(get(usage.pointer("/input_tokens_details/cached_tokens"))),
            cache_creation: 0,
            reasoning: get(usage.pointer("/completion_tokens_details/reasoning_tokens"))
                .max(get(usage.pointer("/output_tokens_details/reasoning_tokens"))),
            estimated: marked_estimated(usage.get("estimated")),
        })
    }

    /// Merges an Anthropic `usage` object (fields present override).
    fn absorb_anthropic(&mut self, usage: &Value) {
        let get = |name: &str| usage.get(name).and_then(Value::as_u64);
        let uncached = get("input_tokens");
        if let Some(v) = get("cache_read_input_tokens") {
            self.cached_input = v;
        }
        if let Some(v) = get("cache_creation_input_tokens") {
            self.cache_creation = v;
        }
        if let Some(v) = uncached {
            self.input = v + self.cached_input + self.cache_creation;
        }
        if let Some(v) = get("output_tokens") {
            self.output = v;
        }
        if marked_estimated(usage.get("estimated")) {
            self.estimated = true;
        }
    }
}

/// The response format, from the API the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFormat {
    OpenAi,
    Anthropic,
    /// OpenAI's Responses API: `usage` as in OpenAI's answers, streams of `response.*` events.
    Responses,
}

impl ResponseFormat {
    /// The format of the answer to a request on `path`.
    pub fn for_path(path: &str) -> ResponseFormat {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        if path == "/v1/responses" {
            ResponseFormat::Responses
        } else if crate::api::ApiFlavor::from_path(path) == crate::api::ApiFlavor::Anthropic {
            ResponseFormat::Anthropic
        } else {
            ResponseFormat::OpenAi
        }
    }
}

/// Usage (and the model the provider reports) from a complete JSON response.
pub fn from_json(format: ResponseFormat, body: &[u8]) -> (Option<Usage>, Option<String>) {
    let (usage, model, _) = from_json_with_facts(format, body);
    (usage, model)
}

/// [`from_json`] and the answer's facts for traces (id, finish reasons), in one parse.
pub fn from_json_with_facts(
    format: ResponseFormat,
    body: &[u8],
) -> (Option<Usage>, Option<String>, crate::genai::AnswerFacts) {
    /// Only `model`, `usage` and the facts' fields are read: serde skips the rest (the answer's
    /// text) without building it, and reads `usage` into typed fields rather than a map (measured:
    /// 7.8 µs for a 1.5 KB answer through a `Value`, most of it building the usage maps).
    /// (Not `#[serde(flatten)]`: it would buffer every other field, the answer's text included.)
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(default)]
        model: Option<Value>,
        #[serde(default)]
        usage: Option<IfObject<UsageFields>>,
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
    let nothing = (None, None, crate::genai::AnswerFacts::default());
    // serde's derived visitor would also accept an array (positional fields): only objects count.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return nothing;
    }
    let Ok(probe) = serde_json::from_slice::<Probe<'_>>(body) else {
        // A fact's field given twice fails this probe: usage alone, as before the facts.
        return match serde_json::from_slice::<UsageProbe>(body) {
            Ok(probe) => {
                let model = probe.model();
                (probe.usage(format), model, nothing.2)
            }
            Err(_) => nothing,
        };
    };
    let model = probe
        .model
        .as_ref()
        .and_then(Value::as_str)
        .map(str::to_string);
    let usage = probe.usage.and_then(|u| u.0).map(|fields| match format {
        ResponseFormat::OpenAi | ResponseFormat::Responses => fields.openai(),
        ResponseFormat::Anthropic => fields.anthropic(),
    });
    let facts = crate::genai::FactFields {
        id: probe.id,
        choices: probe.choices,
        stop_reason: probe.stop_reason,
        status: probe.status,
        incomplete_details: probe.incomplete_details,
    };
    (usage, model, facts.facts(format))
}

/// `model` and `usage` only.
#[derive(serde::Deserialize)]
struct UsageProbe {
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    usage: Option<IfObject<UsageFields>>,
}

impl UsageProbe {
    fn model(&self) -> Option<String> {
        self.model
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    fn usage(self, format: ResponseFormat) -> Option<Usage> {
        self.usage.and_then(|u| u.0).map(|fields| match format {
            ResponseFormat::OpenAi | ResponseFormat::Responses => fields.openai(),
            ResponseFormat::Anthropic => fields.anthropic(),
        })
    }
}

/// The counts a `usage` object may carry, under OpenAI's and Anthropic's names. Each count is read as
/// [`Value::as_u64`] reads it: anything but a non-negative integer counts as absent.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct UsageFields {
    // Present even when null: as with a map, a null `prompt_tokens` hides `input_tokens`.
    #[serde(deserialize_with = "present")]
    prompt_tokens: Option<Value>,
    input_tokens: Option<Value>,
    #[serde(deserialize_with = "present")]
    completion_tokens: Option<Value>,
    output_tokens: Option<Value>,
    prompt_tokens_details: Option<IfObject<Details>>,
    input_tokens_details: Option<IfObject<Details>>,
    completion_tokens_details: Option<IfObject<Details>>,
    output_tokens_details: Option<IfObject<Details>>,
    cache_read_input_tokens: Option<Value>,
    cache_creation_input_tokens: Option<Value>,
    /// Set by llm_provider's translations when the provider reported no usage.
    estimated: Option<Value>,
}

/// Whether a `usage` object says its counts are estimates (`"estimated": true`).
fn marked_estimated(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool) == Some(true)
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Details {
    cached_tokens: Option<Value>,
    reasoning_tokens: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(deserializer).map(Some)
}

fn count(value: &Option<Value>) -> Option<u64> {
    value.as_ref().and_then(Value::as_u64)
}

fn detail(details: &Option<IfObject<Details>>, pick: fn(&Details) -> &Option<Value>) -> u64 {
    details
        .as_ref()
        .and_then(|d| d.0.as_ref())
        .and_then(|d| count(pick(d)))
        .unwrap_or(0)
}

impl UsageFields {
    /// As [`Usage::from_openai`] reads the same object.
    fn openai(&self) -> Usage {
        Usage {
            input: count(&self.prompt_tokens)
                .or(if self.prompt_tokens.is_some() {
                    None
                } else {
                    count(&self.input_tokens)
                })
                .unwrap_or(0),
            output: count(&self.completion_tokens)
                .or(if self.completion_tokens.is_some() {
                    None
                } else {
                    count(&self.output_tokens)
                })
                .unwrap_or(0),
            cached_input: detail(&self.prompt_tokens_details, |d| &d.cached_tokens)
                .max(detail(&self.input_tokens_details, |d| &d.cached_tokens)),
            cache_creation: 0,
            reasoning: detail(&self.completion_tokens_details, |d| &d.reasoning_tokens)
                .max(detail(&self.output_tokens_details, |d| &d.reasoning_tokens)),
            estimated: marked_estimated(self.estimated.as_ref()),
        }
    }

    /// As [`Usage::absorb_anthropic`] reads the same object into an empty [`Usage`].
    fn anthropic(&self) -> Usage {
        let cached_input = count(&self.cache_read_input_tokens).unwrap_or(0);
        let cache_creation = count(&self.cache_creation_input_tokens).unwrap_or(0);
        Usage {
            input: count(&self.input_tokens).map_or(0, |v| v + cached_input + cache_creation),
            output: count(&self.output_tokens).unwrap_or(0),
            cached_input,
            cache_creation,
            estimated: marked_estimated(self.estimated.as_ref()),
            ..Usage::default()
        }
    }
}

/// `T` when the value is an object; any other value is skipped and reads as nothing, never as an
/// error, so an odd `usage` does not cost the rest of the answer (as with a `Value`).
#[derive(Debug)]
struct IfObject<T>(Option<T>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for IfObject<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct ObjectOnly<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for ObjectOnly<T> {
            type Value = IfObject<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| IfObject(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IfObject(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(IfObject(None))
            }
        }
        deserializer.deserialize_any(ObjectOnly(std::marker::PhantomData))
    }
}

/// The text a JSON response carries, for estimating output tokens when the provider sent no usage.
pub fn output_text_len(format: ResponseFormat, body: &[u8]) -> usize {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let mut chars = 0;
    match format {
        ResponseFormat::OpenAi => {
            for choice in value
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for text in [choice.pointer("/message/content"), choice.get("text")]
                    .into_iter()
                    .flatten()
                {
                    chars += text.as_str().map_or(0, |t| t.chars().count());
                }
            }
        }
        ResponseFormat::Anthropic => {
            for block in value
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                chars += block
                    .get("text")
                    .and_then(Value::as_str)
                    .map_or(0, |t| t.chars().count());
            }
        }
        ResponseFormat::Responses => {
            for item in value
                .get("output")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                chars += item
                    .get("arguments")
                    .and_then(Value::as_str)
                    .map_or(0, |t| t.chars().count());
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    chars += part
                        .get("text")
                        .and_then(Value::as_str)
                        .map_or(0, |t| t.chars().count());
                }
            }
        }
    }
    chars
}

/// The usual rule of thumb, used only when a provider reports nothing: four characters a token.
pub fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Follows an SSE response as it streams: usage, the reported model, when the first content arrives,
/// and (when the gateway asked for usage on the client's behalf) removes what the client did not ask for.
#[derive(Debug)]
pub struct StreamUsage {
    format: ResponseFormat,
    parser: SseParser,
    /// Drop the usage-only chunk and the `usage: null` fields: the client did not ask for usage.
    hide_usage: bool,
    usage: Option<Usage>,
    /// The provider's final usage arrived (OpenAI's usage chunk, Anthropic's `message_delta`): the
    /// stream's usage is complete. Until then Anthropic's `message_start` says 1 output token.
    final_usage: bool,
    model: Option<String>,
    output_chars: usize,
    saw_content: bool,
    /// The answer's id and finish reasons, for traces.
    facts: crate::metering::genai::AnswerFacts,
}

impl StreamUsage {
    pub fn new(format: ResponseFormat, hide_usage: bool) -> Self {
        StreamUsage {
            format,
            parser: SseParser::new(),
            hide_usage,
            usage: None,
            final_usage: false,
            model: None,
            output_chars: 0,
            saw_content: false,
            facts: Default::default(),
        }
    }

    /// What the stream is charged. With the provider's final usage, that; a stream that ended before
    /// it (the client went away, the upstream reset) is charged at least what was delivered: the
    /// larger of the reported and the estimated output, and the reported input (estimated from
    /// `request_bytes` when none was). `None`: nothing reported and nothing delivered to go by.
    pub fn charged(&self, request_bytes: usize) -> Option<Usage> {
        if self.final_usage {
            return self.usage;
        }
        let delivered = estimate_tokens(self.output_chars);
        match self.usage {
            Some(reported) => {
                let input = if reported.input > 0 {
                    reported.input
                } else {
                    estimate_tokens(request_bytes)
                };
                Some(Usage {
                    input,
                    output: reported.output.max(delivered),
                    estimated: reported.estimated
                        || delivered > reported.output
                        || input != reported.input,
                    ..reported
                })
            }
            None => None,
        }
    }

    /// Feeds a chunk. Returns whether the first content arrived in it, and, when hiding usage, the
    /// chunk to send instead (only complete events; an unfinished one is held until it completes).
    pub fn push(&mut self, chunk: &[u8]) -> (bool, Option<Vec<u8>>) {
        let before = self.saw_content;
        if !self.hide_usage {
            for event in self.parser.push(chunk) {
                self.observe(&event.data, event.event.as_deref());
            }
            return (!before && self.saw_content, None);
        }
        let mut out = Vec::with_capacity(chunk.len());
        for event in self.parser.push(chunk) {
            if let Some(rewritten) = self.observe(&event.data, event.event.as_deref()) {
                out.extend_from_slice(&rewritten);
            }
        }
        (!before && self.saw_content, Some(out))
    }

    /// The stream ended: a final event without its blank line still counts.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let event = self.parser.finish()?;
        let rewritten = self.observe(&event.data, event.event.as_deref());
        if self.hide_usage {
            rewritten
        } else {
            None
        }
    }

    /// Handles one event; returns its bytes to forward when hiding usage (None drops it).
    fn observe(&mut self, data: &str, name: Option<&str>) -> Option<Vec<u8>> {
        let parsed: Option<Value> = serde_json::from_str(data).ok();
        match self.format {
            ResponseFormat::OpenAi => {
                let Some(mut value) = parsed else {
                    return Some(format!("data: {data}\n\n").into_bytes()); // [DONE] and the like
                };
                if self.model.is_none() {
                    self.model = value
                        .get("model")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                }
                self.facts.set_id(value.get("id"));
                for choice in value
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.facts.add_reason(choice.get("finish_reason"));
                    let delta = choice.get("delta");
                    let content = delta
                        .and_then(|d| d.get("content"))
                        .and_then(Value::as_str)
                        .or_else(|| choice.get("text").and_then(Value::as_str))
                        .unwrap_or("");
                    self.output_chars += content.chars().count();
                    // Tool-call arguments are output too (estimates of cut-off streams need them).
                    for call in delta
                        .and_then(|d| d.get("tool_calls"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        self.output_chars += call
                            .pointer("/function/arguments")
                            .and_then(Value::as_str)
                            .map_or(0, |a| a.chars().count());
                    }
                    let tool = delta.and_then(|d| d.get("tool_calls")).is_some();
                    if !content.is_empty() || tool {
                        self.saw_content = true;
                    }
                }
                let usage_only = value
                    .get("choices")
                    .and_then(Value::as_array)
                    .is_some_and(Vec::is_empty);
                if let Some(usage) = value.get("usage").and_then(Usage::from_openai) {
                    self.usage = Some(usage);
                    self.final_usage = true;
                }
                if !self.hide_usage {
                    return None;
                }
                if usage_only && value.get("usage").is_some_and(|u| !u.is_null()) {
                    return None; // the chunk the client did not ask for
                }
                if let Some(object) = value.as_object_mut() {
                    if object.get("usage").is_some_and(Value::is_null) {
                        // shift_remove keeps the other fields in their order.
                        object.shift_remove("usage");
                    }
                }
                Some(format!("data: {value}\n\n").into_bytes())
            }
            ResponseFormat::Anthropic => {
                let value = parsed?;
                let kind = value
                    .get("type")
                    .and_then(Value::as_str)
                    .or(name)
                    .unwrap_or("");
                match kind {
                    "message_start" => {
                        let message = value.get("message");
                        self.facts.set_id(message.and_then(|m| m.get("id")));
                        self.model = message
                            .and_then(|m| m.get("model"))
                            .and_then(Value::as_str)
                            .map(str::to_string);
                        if let Some(usage) = message.and_then(|m| m.get("usage")) {
                            self.usage
                                .get_or_insert_with(Usage::default)
                                .absorb_anthropic(usage);
                        }
                    }
                    "content_block_delta" => {
                        let delta = value.get("delta");
                        let text = delta
                            .and_then(|d| d.get("text").or_else(|| d.get("partial_json")))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        self.output_chars += text.chars().count();
                        if !text.is_empty() {
                            self.saw_content = true;
                        }
                    }
                    "message_delta" => {
                        self.facts.add_reason(value.pointer("/delta/stop_reason"));
                        if let Some(usage) = value.get("usage") {
                            self.usage
                                .get_or_insert_with(Usage::default)
                                .absorb_anthropic(usage);
                            self.final_usage = true;
                        }
                    }
                    _ => {}
                }
                None
            }
            ResponseFormat::Responses => {
                let value = parsed?;
                let kind = value
                    .get("type")
                    .and_then(Value::as_str)
                    .or(name)
                    .unwrap_or("");
                match kind {
                    "response.output_text.delta"
                    | "response.refusal.delta"
                    | "response.function_call_arguments.delta" => {
                        let delta = value.get("delta").and_then(Value::as_str).unwrap_or("");
                        self.output_chars += delta.chars().count();
                        if !delta.is_empty() {
                            self.saw_content = true;
                        }
                    }
                    "response.created" | "response.in_progress" => {
                        self.facts.set_id(value.pointer("/response/id"));
                        if let Some(model) =
                            value.pointer("/response/model").and_then(Value::as_str)
                        {
                            self.model = Some(model.to_string());
                        }
                    }
                    "response.completed" | "response.incomplete" | "response.failed" => {
                        self.facts.absorb_response_object(value.get("response"));
                        if let Some(model) =
                            value.pointer("/response/model").and_then(Value::as_str)
                        {
                            self.model = Some(model.to_string());
                        }
                        if let Some(usage) = value
                            .pointer("/response/usage")
                            .and_then(Usage::from_openai)
                        {
                            self.usage = Some(usage);
                            self.final_usage = true;
                        }
                    }
                    _ => {}
                }
                None
            }
        }
    }

    /// What was reported, or `None` when the provider sent no usage.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn output_chars(&self) -> usize {
        self.output_chars
    }

    /// The answer's id and finish reasons as far as the stream has told them.
    pub fn facts(&self) -> &crate::metering::genai::AnswerFacts {
        &self.facts
    }
}

/// `Some(raw)` for a field that is present, `null` included (a plain `Option` reads `null` as absent).
fn present_raw<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<&'de serde_json::value::RawValue>, D::Error> {
    serde::Deserialize::deserialize(deserializer).map(Some)
}

/// Makes a streaming OpenAI chat/completions request ask for usage
/// (`"stream_options":{"include_usage":true}`), whatever the client sent: no `stream_options`, an
/// object without `include_usage` or with `false`, `null`, a string, or the key twice (JSON parsers
/// keep the last one, so an appended key would lose to the client's). The common cases splice bytes
/// (the rest of the body is untouched); a duplicate key rewrites the body once, with one
/// `stream_options`. Returns None when nothing needs to change (not streaming, usage already asked
/// for, or not a JSON object).
pub fn inject_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        stream: Option<&'a serde_json::value::RawValue>,
        #[serde(borrow, default, deserialize_with = "present_raw")]
        stream_options: Option<&'a serde_json::value::RawValue>,
    }
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body.get(start) != Some(&b'{') {
        return None;
    }
    // Invalid UTF-8 is not JSON (serde would skip it inside ignored fields): leave such bodies alone.
    std::str::from_utf8(body).ok()?;
    let probe: Probe<'_> = match serde_json::from_slice(body) {
        Ok(probe) => probe,
        // A key given twice: the probe refuses it, the full parser keeps the last.
        Err(err) if err.to_string().starts_with("duplicate field") => {
            return rewrite_stream_options(body)
        }
        Err(_) => return None,
    };
    if probe.stream.map(|s| s.get()) != Some("true") {
        return None;
    }
    match probe.stream_options {
        None => {
            let mut out = Vec::with_capacity(body.len() + 40);
            out.extend_from_slice(body.get(..=start)?);
            out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
            let rest = body.get(start + 1..)?;
            // `{}` needs no comma; anything else does.
            if rest.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            Some(out)
        }
        Some(raw) => {
            // An object keeps its other options; `null`, a string or a number is replaced.
            let mut options: serde_json::Map<String, Value> =
                serde_json::from_str(raw.get()).unwrap_or_default();
            if options.get("include_usage").and_then(Value::as_bool) == Some(true) {
                return None;
            }
            options.insert("include_usage".into(), Value::Bool(true));
            let replacement = serde_json::to_vec(&options).ok()?;
            let offset = (raw.get().as_ptr() as usize).checked_sub(body.as_ptr() as usize)?;
            let mut out = Vec::with_capacity(body.len() + 24);
            out.extend_from_slice(body.get(..offset)?);
            out.extend_from_slice(&replacement);
            out.extend_from_slice(body.get(offset + raw.get().len()..)?);
            Some(out)
        }
    }
}

/// The body re-serialised with one `stream_options` asking for usage, for bodies with a duplicate
/// key (read as every JSON parser reads them: the last value of a key wins).
fn rewrite_stream_options(body: &[u8]) -> Option<Vec<u8>> {
    let mut request: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    if request.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    let mut options = match request.remove("stream_options") {
        Some(Value::Object(options)) => options,
        _ => serde_json::Map::new(),
    };
    options.insert("include_usage".into(), Value::Bool(true));
    request.insert("stream_options".into(), Value::Object(options));
    serde_json::to_vec(&request).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `from_json` read before it used typed fields: the reference its answers must equal.
    fn from_json_through_values(
        format: ResponseFormat,
        body: &[u8],
    ) -> (Option<Usage>, Option<String>) {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(default)]
            model: Option<Value>,
            #[serde(default)]
            usage: Option<Value>,
        }
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return (None, None);
        }
        let Ok(probe) = serde_json::from_slice::<Probe>(body) else {
            return (None, None);
        };
        let model = probe
            .model
            .as_ref()
            .and_then(Value::as_str)
            .map(str::to_string);
        let usage = match (format, probe.usage.as_ref()) {
            (ResponseFormat::OpenAi, Some(usage)) => Usage::from_openai(usage),
            (ResponseFormat::Anthropic, Some(usage)) => {
                let mut u = Usage::default();
                u.absorb_anthropic(usage);
                Some(u)
            }
            _ => None,
        };
        (usage, model)
    }

    #[test]
    fn typed_usage_reads_exactly_what_the_value_reading_did() {
        let usages = [
            r#"{"prompt_tokens":470,"completion_tokens":256,"total_tokens":726,"prompt_tokens_details":{"cached_tokens":7,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":9}}"#,
            r#"{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1},"output_tokens_details":{"reasoning_tokens":2}}"#,
            r#"{"input_tokens":10,"cache_read_input_tokens":5,"cache_creation_input_tokens":2,"output_tokens":8}"#,
            r#"{"input_tokens":10,"output_tokens":8,"estimated":true}"#,
            r#"{"input_tokens":10,"output_tokens":8,"estimated":"yes"}"#,
            r#"{"prompt_tokens":null,"input_tokens":5,"completion_tokens":null,"output_tokens":6}"#,
            r#"{"prompt_tokens":1.5,"input_tokens":5,"completion_tokens":-2,"output_tokens":"6"}"#,
            r#"{"prompt_tokens_details":"none","completion_tokens_details":[1,2],"input_tokens_details":null}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":{"n":1}},"output_tokens_details":{"reasoning_tokens":true}}"#,
            r#"{"prompt_tokens":18446744073709551615,"completion_tokens":0,"extra":{"deep":[{"a":null}]}}"#,
            r#"{}"#,
            r#"null"#,
            r#"12"#,
            r#""usage""#,
            r#"[{"prompt_tokens":1}]"#,
            r#"true"#,
        ];
        let models = [r#""gpt-4o-mini""#, "null", "7", r#"{"name":"x"}"#];
        for usage in usages {
            for model in models {
                for body in [
                    format!(
                        r#"{{"model":{model},"choices":[{{"message":{{"content":"a \"usage\": {{}}"}}}}],"usage":{usage}}}"#
                    ),
                    format!(r#"{{"usage":{usage},"model":{model}}}"#),
                    format!(r#"{{"model":{model}}}"#),
                ] {
                    for format in [ResponseFormat::OpenAi, ResponseFormat::Anthropic] {
                        let (usage_read, model_read) = from_json(format, body.as_bytes());
                        let (reference, model_reference) =
                            from_json_through_values(format, body.as_bytes());
                        assert_eq!(model_read, model_reference, "{format:?} {body}");
                        // The one intended change: an Anthropic `usage` that is not an object used
                        // to read as zero tokens; now it reads as absent, so usage is estimated.
                        let not_an_object = !usage.starts_with('{') && usage != "null";
                        if format == ResponseFormat::Anthropic
                            && not_an_object
                            && body.contains("\"usage\":")
                        {
                            assert_eq!(usage_read, None, "{body}");
                        } else {
                            assert_eq!(usage_read, reference, "{format:?} {body}");
                        }
                    }
                }
            }
        }
    }
    use serde_json::json;

    #[test]
    fn openai_json() {
        let body = json!({"model": "gpt-4o-mini-2024", "choices": [{"message": {"content": "hello"}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                      "prompt_tokens_details": {"cached_tokens": 4},
                      "completion_tokens_details": {"reasoning_tokens": 2}}});
        let (usage, model) = from_json(ResponseFormat::OpenAi, body.to_string().as_bytes());
        assert_eq!(
            usage,
            Some(Usage {
                input: 12,
                output: 5,
                cached_input: 4,
                reasoning: 2,
                ..Default::default()
            })
        );
        assert_eq!(model.as_deref(), Some("gpt-4o-mini-2024"));
        assert_eq!(
            output_text_len(ResponseFormat::OpenAi, body.to_string().as_bytes()),
            5
        );
    }

    #[test]
    fn embeddings_and_responses_api_json() {
        let (usage, _) = from_json(
            ResponseFormat::OpenAi,
            br#"{"usage":{"prompt_tokens":8,"total_tokens":8}}"#,
        );
        assert_eq!(usage.unwrap().input, 8);
        let (usage, _) = from_json(ResponseFormat::OpenAi, br#"{"usage":{"input_tokens":3,"output_tokens":4,"input_tokens_details":{"cached_tokens":1}}}"#);
        assert_eq!(
            usage,
            Some(Usage {
                input: 3,
                output: 4,
                cached_input: 1,
                ..Default::default()
            })
        );
    }

    #[test]
    fn responses_streams_are_read_from_their_final_event() {
        assert_eq!(
            ResponseFormat::for_path("/v1/responses?x=1"),
            ResponseFormat::Responses
        );
        assert_eq!(
            ResponseFormat::for_path("/v1/messages"),
            ResponseFormat::Anthropic
        );
        assert_eq!(
            ResponseFormat::for_path("/v1/chat/completions"),
            ResponseFormat::OpenAi
        );
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4o-mini\",\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello there\"}\n\n",
            "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"delta\":\"{}\"}\n\n",
        );
        let mut usage = StreamUsage::new(ResponseFormat::Responses, false);
        let (first, out) = usage.push(stream.as_bytes());
        assert!(first && out.is_none());
        assert_eq!(usage.output_chars(), 13);
        assert_eq!(usage.model(), Some("gpt-4o-mini"));
        // Cut before the final event: charged what was delivered, estimated.
        assert!(usage.usage().is_none());
        let done = "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4o-mini\",\"usage\":{\"input_tokens\":12,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\n\n";
        usage.push(done.as_bytes());
        let charged = usage.charged(400).unwrap();
        assert_eq!(
            (
                charged.input,
                charged.output,
                charged.cached_input,
                charged.reasoning
            ),
            (12, 5, 4, 1)
        );
        assert!(!charged.estimated);
        let json = br#"{"model":"m","output":[{"type":"message","content":[{"type":"output_text","text":"abcd"}]},{"type":"function_call","arguments":"{}"}],"usage":{"input_tokens":3,"output_tokens":2}}"#;
        assert_eq!(output_text_len(ResponseFormat::Responses, json), 6);
        assert_eq!(
            from_json(ResponseFormat::Responses, json).0.unwrap().input,
            3
        );
    }

    #[test]
    fn anthropic_json_folds_cache_tokens_into_input() {
        let body = json!({"model": "claude-sonnet-4-5", "content": [{"type": "text", "text": "hi!"}],
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5, "output_tokens": 7}});
        let (usage, model) = from_json(ResponseFormat::Anthropic, body.to_string().as_bytes());
        assert_eq!(
            usage,
            Some(Usage {
                input: 45,
                output: 7,
                cached_input: 30,
                cache_creation: 5,
                ..Default::default()
            })
        );
        assert_eq!(model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(
            output_text_len(ResponseFormat::Anthropic, body.to_string().as_bytes()),
            3
        );
    }

    #[test]
    fn no_usage_and_garbage() {
        assert_eq!(
            from_json(ResponseFormat::OpenAi, br#"{"choices":[]}"#).0,
            None
        );
        assert_eq!(from_json(ResponseFormat::OpenAi, b"not json"), (None, None));
        // A fact's field twice costs the facts, not the usage.
        let (usage, _, facts) = from_json_with_facts(
            ResponseFormat::OpenAi,
            br#"{"id":"a","id":"b","usage":{"prompt_tokens":2,"completion_tokens":3}}"#,
        );
        assert_eq!(usage.map(|u| u.output), Some(3));
        assert_eq!(facts.id, None);
        assert_eq!(
            from_json(ResponseFormat::OpenAi, br#"[{"prompt_tokens":1}]"#),
            (None, None)
        );
        // A non-string model does not hide the usage.
        let (usage, model) = from_json(
            ResponseFormat::OpenAi,
            br#"{"model":null,"usage":{"prompt_tokens":2}}"#,
        );
        assert_eq!((usage.map(|u| u.input), model), (Some(2), None));
        assert_eq!(estimate_tokens(9), 3);
    }

    const OPENAI_STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"héllo \"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"world\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n",
        "data: [DONE]\n\n",
    );

    fn feed(
        stream: &str,
        format: ResponseFormat,
        hide: bool,
        splits: &[usize],
    ) -> (StreamUsage, Vec<u8>, usize) {
        let mut tracker = StreamUsage::new(format, hide);
        let bytes = stream.as_bytes();
        let mut out = Vec::new();
        let mut first_at = usize::MAX;
        let mut start = 0;
        for (n, &end) in splits
            .iter()
            .chain(std::iter::once(&bytes.len()))
            .enumerate()
        {
            let (first, rewritten) = tracker.push(&bytes[start..end]);
            if first && first_at == usize::MAX {
                first_at = n;
            }
            out.extend(rewritten.unwrap_or_default());
            start = end;
        }
        out.extend(tracker.finish().unwrap_or_default());
        (tracker, out, first_at)
    }

    #[test]
    fn openai_stream_usage_at_every_split() {
        for split in 0..=OPENAI_STREAM.len() {
            let (tracker, _, _) = feed(OPENAI_STREAM, ResponseFormat::OpenAi, false, &[split]);
            assert_eq!(
                tracker.usage().map(|u| (u.input, u.output)),
                Some((9, 3)),
                "split {split}"
            );
            assert_eq!(tracker.output_chars(), 11);
            assert_eq!(tracker.model(), Some("gpt-4o-mini"));
        }
    }

    #[test]
    fn hidden_usage_is_removed_exactly() {
        let expected = concat!(
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"héllo \"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"world\"}}]}\n\n",
            "data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        for split in 0..=OPENAI_STREAM.len() {
            let (tracker, out, _) = feed(OPENAI_STREAM, ResponseFormat::OpenAi, true, &[split]);
            assert_eq!(String::from_utf8(out).unwrap(), expected, "split {split}");
            assert_eq!(tracker.usage().unwrap().total(), 12);
        }
    }

    #[test]
    fn first_content_is_detected_in_the_chunk_that_carries_it() {
        let second_event = OPENAI_STREAM.find("data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"h").unwrap();
        let (_, _, first_at) = feed(
            OPENAI_STREAM,
            ResponseFormat::OpenAi,
            false,
            &[second_event, second_event + 20],
        );
        assert_eq!(
            first_at, 2,
            "the role-only chunk is not content; the event completes in the third piece"
        );
    }

    #[test]
    fn anthropic_stream_at_every_split() {
        let stream = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":10,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":6}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        for split in 0..=stream.len() {
            let (tracker, out, _) = feed(stream, ResponseFormat::Anthropic, false, &[split]);
            assert!(out.is_empty());
            assert_eq!(
                tracker.usage(),
                Some(Usage {
                    input: 12,
                    output: 6,
                    cached_input: 2,
                    ..Default::default()
                }),
                "split {split}"
            );
            assert_eq!(tracker.model(), Some("claude-sonnet-4-5"));
        }
    }

    /// A stream cut before the provider's final usage (a client that disconnects after the last
    /// content block, an upstream reset) is charged at least what was delivered, in both formats.
    #[test]
    fn a_stream_cut_before_its_final_usage_is_charged_what_was_delivered() {
        let text = "x".repeat(2000); // 500 tokens by the estimate
        let anthropic = format!(
            concat!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"model\":\"claude-sonnet-4-5\",\"usage\":{{\"input_tokens\":10,\"output_tokens\":1}}}}}}\n\n",
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{}\"}}}}\n\n",
                "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n",
            ),
            text
        );
        let (tracker, _, _) = feed(&anthropic, ResponseFormat::Anthropic, false, &[]);
        let charged = tracker.charged(4000).unwrap();
        assert_eq!((charged.input, charged.output), (10, 500));
        assert!(charged.estimated);
        // With message_delta the provider's numbers stand, even when below the estimate.
        let complete = format!(
            "{anthropic}event: message_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":480}}}}\n\n"
        );
        let (tracker, _, _) = feed(&complete, ResponseFormat::Anthropic, false, &[]);
        let charged = tracker.charged(4000).unwrap();
        assert_eq!(
            (charged.input, charged.output, charged.estimated),
            (10, 480, false)
        );

        // OpenAI: content and tool-call arguments without the usage chunk; the glue estimates the
        // input from the request (None here), the output counts both.
        let openai = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\ndata: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{}\"}}}}]}}}}]}}\n\n",
            &text[..1000],
            &text[..400]
        );
        let (tracker, _, _) = feed(&openai, ResponseFormat::OpenAi, false, &[]);
        assert_eq!(tracker.charged(100), None);
        assert_eq!(tracker.output_chars(), 1400);
    }

    #[test]
    fn include_usage_injection() {
        let inject = |body: &str| {
            inject_include_usage(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
        };
        // Regression (fuzzing): invalid UTF-8 in an ignored field is not JSON; nothing is injected.
        assert_eq!(
            inject_include_usage(b"{\"stream\":true,\"messages\":[{\"\xffrole\":1}]}"),
            None
        );
        assert_eq!(
            inject(r#"{"model":"m","stream":true,"messages":[]}"#).as_deref(),
            Some(
                r#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
            )
        );
        assert_eq!(
            inject(r#" {"stream":true,"stream_options":{"include_usage":false,"x":1}}"#).as_deref(),
            Some(r#" {"stream":true,"stream_options":{"include_usage":true,"x":1}}"#)
        );
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            None
        );
        assert_eq!(inject(r#"{"model":"m","messages":[]}"#), None);
        assert_eq!(inject(r#"{"stream":false}"#), None);
        assert_eq!(inject("[1]"), None);
        assert_eq!(inject("{oops"), None);
        let injected = inject(r#"{"stream":true}"#).unwrap();
        let parsed: Value = serde_json::from_str(&injected).unwrap();
        assert_eq!(parsed["stream_options"]["include_usage"], true);
    }

    /// Usage dodges: whatever the client puts in `stream_options`, the provider is asked for usage,
    /// and the body has exactly one `stream_options` (a parser that keeps the first and one that keeps
    /// the last read the same request).
    #[test]
    fn include_usage_wins_over_null_strings_and_duplicates() {
        for body in [
            r#"{"stream":true,"stream_options":null,"messages":[]}"#,
            r#"{"stream":true,"stream_options":"no","messages":[]}"#,
            r#"{"stream":true,"stream_options":7}"#,
            r#"{"stream":true,"stream_options":[]}"#,
            r#"{"stream":true,"stream\u005foptions":null}"#,
            r#"{"stream_options":{"include_usage":true},"stream":true,"stream_options":null}"#,
            r#"{"stream_options":{"include_usage":true},"stream":true,"stream_options":{"include_usage":false}}"#,
            r#"{"stream":false,"stream":true,"stream_options":null}"#,
        ] {
            let injected = inject_include_usage(body.as_bytes())
                .unwrap_or_else(|| panic!("nothing injected into {body}"));
            let text = String::from_utf8(injected).unwrap();
            let parsed: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                parsed["stream_options"]["include_usage"], true,
                "{body} -> {text}"
            );
            let keys = text.matches("stream_options").count()
                + text.matches("stream\\u005foptions").count();
            assert_eq!(keys, 1, "{body} -> {text}");
        }
        // Other options survive; a non-streaming request with duplicates is left alone.
        let kept = inject_include_usage(
            br#"{"stream":true,"stream_options":{"x":1},"stream_options":{"y":2}}"#,
        )
        .unwrap();
        let parsed: Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(
            parsed["stream_options"],
            serde_json::json!({"y": 2, "include_usage": true})
        );
        assert_eq!(
            inject_include_usage(br#"{"stream":true,"stream":false,"stream_options":null}"#),
            None
        );
    }
}
