//! OpenAI-compatible endpoints: chat completions (JSON and SSE), completions, embeddings,
//! moderations, models.

use crate::reply::{self, data_event, Api, Body, StreamFaults};
use crate::{guard, text};
use base64::Engine;
use hyper::Response;
use serde_json::{json, Value};

/// Per-request settings the handlers need besides the body.
#[derive(Default)]
pub struct Call {
    pub id: String,
    pub created: u64,
    pub faults: StreamFaults,
    pub cached_tokens: u64,
    pub no_usage: bool,
    /// `x-mock-reply`: the text to answer instead of the echo.
    pub reply: Option<String>,
}

const MAX_STREAM_PIECES: usize = 64;

fn bad_request(message: &str) -> Response<Body> {
    reply::error(Api::OpenAi, 400, message)
}

fn model_of(body: &Value) -> Result<String, Response<Body>> {
    match body.get("model") {
        Some(Value::String(model)) => Ok(model.clone()),
        Some(_) => Err(bad_request("`model` must be a string.")),
        None => Err(bad_request("you must provide a model parameter")),
    }
}

fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached.min(prompt), "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

fn stream_error_event() -> String {
    data_event(&json!({"error": {
        "message": "The server had an error while processing your request (mock stream error).",
        "type": "server_error", "param": null, "code": null
    }}))
}

fn declared_tools(body: &Value) -> Vec<String> {
    body.get("tools")
        .and_then(Value::as_array)
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub fn chat_completions(body: &Value, call: &Call) -> Response<Body> {
    let model = match model_of(body) {
        Ok(model) => model,
        Err(response) => return response,
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return bad_request("`messages` must be a non-empty array.");
    };
    if messages.is_empty() {
        return bad_request("`messages` must be a non-empty array.");
    }
    let max_tokens = body
        .get("max_completion_tokens")
        .or_else(|| body.get("max_tokens"))
        .and_then(Value::as_u64);
    let prompt_tokens = text::prompt_tokens(messages, None);
    // A scripted answer (the test's `x-mock-reply`, else a Llama Guard verdict) replaces the echo
    // and any tool call: the prompt's markers are not meant for it.
    let scripted = call
        .reply
        .clone()
        .or_else(|| guard::is_llama_guard(&model).then(|| guard::llama_guard_verdict(messages)));
    let (prompt, tool) = match scripted {
        Some(text) => (text, None),
        None => {
            let prompt = text::last_user_text(messages);
            let tool = text::tool_request(&prompt, &declared_tools(body));
            (prompt, tool)
        }
    };

    let (reply_text, finish_reason, completion_tokens, tool_call) = match tool {
        Some((name, rest)) => {
            let arguments = json!({ "text": rest }).to_string();
            let tokens = text::tokens(&arguments) + text::tokens(&name);
            (None, "tool_calls", tokens, Some((name, arguments)))
        }
        None => {
            let (reply, cut) = text::truncate_to_tokens(&prompt, max_tokens);
            let tokens = text::tokens(&reply);
            (
                Some(reply),
                if cut { "length" } else { "stop" },
                tokens,
                None,
            )
        }
    };
    let usage = usage(prompt_tokens, completion_tokens, call.cached_tokens);
    let call_id = format!("call_{}", call.id);

    if !wants_stream(body) {
        let mut message = json!({"role": "assistant", "content": reply_text, "refusal": null});
        if let Some((name, arguments)) = &tool_call {
            message["tool_calls"] = json!([{
                "id": call_id, "type": "function",
                "function": {"name": name, "arguments": arguments}
            }]);
        }
        let mut response = json!({
            "id": format!("chatcmpl-{}", call.id),
            "object": "chat.completion",
            "created": call.created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        });
        if !call.no_usage {
            response["usage"] = usage;
        }
        return reply::json(200, &response);
    }

    let with_usage = include_usage(body) && !call.no_usage;
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut chunk = json!({
            "id": format!("chatcmpl-{}", call.id),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage {
            chunk["usage"] = Value::Null;
        }
        data_event(&chunk)
    };
    let mut events = Vec::new();
    match (&reply_text, &tool_call) {
        (_, Some((name, arguments))) => {
            events.push(chunk(json!({"role": "assistant", "content": null}), None));
            events.push(chunk(
                json!({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                       "function": {"name": name, "arguments": ""}}]}),
                None,
            ));
            for piece in text::split_even(arguments, 3) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
        }
        (Some(reply_text), None) => {
            events.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ));
            for piece in text::stream_pieces(reply_text, MAX_STREAM_PIECES) {
                events.push(chunk(json!({"content": piece}), None));
            }
        }
        (None, None) => {}
    }
    events.push(chunk(json!({}), Some(finish_reason)));
    if with_usage {
        events.push(data_event(&json!({
            "id": format!("chatcmpl-{}", call.id),
            "object": "chat.completion.chunk",
            "created": call.created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": usage,
        })));
    }
    events.push("data: [DONE]\n\n".to_string());
    reply::sse(events, stream_error_event(), call.faults)
}

pub fn completions(body: &Value, call: &Call) -> Response<Body> {
    let model = match model_of(body) {
        Ok(model) => model,
        Err(response) => return response,
    };
    let (prompt, prompt_tokens) = match body.get("prompt") {
        Some(Value::String(prompt)) => (prompt.clone(), text::tokens(prompt)),
        Some(Value::Array(prompts)) if prompts.iter().all(Value::is_string) => {
            let texts: Vec<&str> = prompts.iter().filter_map(Value::as_str).collect();
            let tokens = texts.iter().map(|t| text::tokens(t)).sum();
            (texts.last().copied().unwrap_or("").to_string(), tokens)
        }
        _ => return bad_request("`prompt` must be a string or an array of strings."),
    };
    let reply_source = call.reply.as_deref().unwrap_or(&prompt);
    let (reply_text, cut) =
        text::truncate_to_tokens(reply_source, body.get("max_tokens").and_then(Value::as_u64));
    let finish_reason = if cut { "length" } else { "stop" };
    let completion_tokens = text::tokens(&reply_text);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    let envelope = |choices: Value| {
        json!({
            "id": format!("cmpl-{}", call.id),
            "object": "text_completion",
            "created": call.created,
            "model": model,
            "choices": choices,
        })
    };
    if !wants_stream(body) {
        let mut response = envelope(json!([{
            "text": reply_text, "index": 0, "logprobs": null, "finish_reason": finish_reason
        }]));
        if !call.no_usage {
            response["usage"] = usage;
        }
        return reply::json(200, &response);
    }
    let mut events: Vec<String> = text::stream_pieces(&reply_text, MAX_STREAM_PIECES)
        .into_iter()
        .map(|piece| {
            data_event(&envelope(json!([{
                "text": piece, "index": 0, "logprobs": null, "finish_reason": null
            }])))
        })
        .collect();
    events.push(data_event(&envelope(json!([{
        "text": "", "index": 0, "logprobs": null, "finish_reason": finish_reason
    }]))));
    if include_usage(body) && !call.no_usage {
        let mut last = envelope(json!([]));
        last["usage"] = usage;
        events.push(data_event(&last));
    }
    events.push("data: [DONE]\n\n".to_string());
    reply::sse(events, stream_error_event(), call.faults)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A deterministic vector for token-array inputs: FNV-1a of the ids seeds an xorshift generator.
fn seeded_vector(seed_bytes: &[u8], dimensions: usize) -> Vec<f32> {
    let mut state = fnv1a(seed_bytes);
    (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Top 24 bits to a float in [-1, 1).
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

/// The embedding of a text: a normalised hashed bag of words. Each lowercased word (a run of
/// letters and digits) adds ±1 to the dimension its FNV-1a hash picks (the sign from another bit of
/// the hash), and the sum is scaled to unit length. Texts sharing most of their words are close
/// (cosine ≈ shared words / words, with enough dimensions that words rarely collide); texts with
/// no word in common are near 0. A text without words gets the first axis.
fn bag_of_words_vector(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector = vec![0f32; dimensions];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = fnv1a(word.to_lowercase().as_bytes());
        let index = (hash % dimensions as u64) as usize;
        let sign = if (hash >> 63) == 1 { -1.0 } else { 1.0 };
        vector[index] += sign;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        vector[0] = 1.0;
        return vector;
    }
    vector.iter().map(|x| x / norm).collect()
}

enum Input {
    Text(String),
    Tokens(Vec<u8>),
}

pub fn embeddings(body: &Value, call: &Call) -> Response<Body> {
    let model = match model_of(body) {
        Ok(model) => model,
        Err(response) => return response,
    };
    // Inputs as (text or seed bytes, tokens): strings, or token arrays (whose length is their token
    // count).
    let token_array = |v: &Value| -> Option<(Input, u64)> {
        let ids = v.as_array()?;
        let mut seed = Vec::with_capacity(ids.len() * 8);
        for id in ids {
            seed.extend_from_slice(&id.as_u64()?.to_le_bytes());
        }
        Some((Input::Tokens(seed), ids.len() as u64))
    };
    let inputs: Vec<(Input, u64)> = match body.get("input") {
        Some(Value::String(s)) => vec![(Input::Text(s.clone()), text::tokens(s))],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_string) {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| (Input::Text(s.to_string()), text::tokens(s)))
                    .collect()
            } else if items.iter().all(Value::is_u64) {
                token_array(&Value::Array(items.clone()))
                    .into_iter()
                    .collect()
            } else {
                match items.iter().map(token_array).collect::<Option<Vec<_>>>() {
                    Some(arrays) => arrays,
                    None => {
                        return bad_request(
                            "`input` must be a string, an array of strings, or token arrays.",
                        )
                    }
                }
            }
        }
        _ => return bad_request("`input` must be a non-empty string or array."),
    };
    let dimensions = match body.get("dimensions") {
        None => 8,
        Some(d) => match d.as_u64() {
            Some(d @ 1..=4096) => d as usize,
            _ => return bad_request("`dimensions` must be an integer between 1 and 4096."),
        },
    };
    let base64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => return bad_request("`encoding_format` must be `float` or `base64`."),
    };
    let mut prompt_tokens = 0;
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (seed, tokens))| {
            prompt_tokens += tokens;
            let vector = match seed {
                Input::Text(text) => bag_of_words_vector(text, dimensions),
                Input::Tokens(ids) => seeded_vector(ids, dimensions),
            };
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let mut response = json!({"object": "list", "data": data, "model": model});
    if !call.no_usage {
        response["usage"] = json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens});
    }
    reply::json(200, &response)
}

/// `POST /v1/moderations`: one result per input string, or one for an array of text and image
/// parts (as the real API answers multimodal input). Verdicts follow the markers in guard.rs.
pub fn moderations(body: &Value, call: &Call) -> Response<Body> {
    let model = match body.get("model") {
        None | Some(Value::Null) => "omni-moderation-latest".to_string(),
        Some(Value::String(model)) => model.clone(),
        Some(_) => return bad_request("`model` must be a string."),
    };
    let invalid =
        "`input` must be a string, a non-empty array of strings, or a non-empty array of \
                   `text` and `image_url` parts.";
    let results: Vec<Value> = match body.get("input") {
        Some(Value::String(text)) => vec![guard::moderation_result(text, true, false)],
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(|text| guard::moderation_result(text, true, false))
                .collect()
        }
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => {
            let (mut texts, mut has_image) = (Vec::new(), false);
            for item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => match item.get("text").and_then(Value::as_str) {
                        Some(text) => texts.push(text),
                        None => return bad_request("a `text` part needs a string `text`."),
                    },
                    Some("image_url")
                        if item.pointer("/image_url/url").is_some_and(Value::is_string) =>
                    {
                        has_image = true
                    }
                    _ => return bad_request(invalid),
                }
            }
            vec![guard::moderation_result(
                &texts.join("\n"),
                !texts.is_empty(),
                has_image,
            )]
        }
        _ => return bad_request(invalid),
    };
    reply::json(
        200,
        &json!({"id": format!("modr-{}", call.id), "model": model, "results": results}),
    )
}

pub fn models(models: &[String]) -> Response<Body> {
    let data: Vec<Value> = models.iter().map(|id| model_object(id)).collect();
    reply::json(200, &json!({"object": "list", "data": data}))
}

pub fn model(models: &[String], id: &str) -> Response<Body> {
    if models.iter().any(|m| m == id) {
        reply::json(200, &model_object(id))
    } else {
        reply::error(
            Api::OpenAi,
            404,
            &format!("The model `{id}` does not exist or you do not have access to it."),
        )
    }
}

fn model_object(id: &str) -> Value {
    json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "mock-provider"})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(reply: Option<&str>) -> Call {
        Call {
            id: "t1".to_string(),
            reply: reply.map(str::to_string),
            ..Call::default()
        }
    }

    async fn answer(response: Response<Body>) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = reply::body_text(response).await;
        (status, serde_json::from_str(&text).unwrap())
    }

    /// The assistant text a chat completion stream carries, joined.
    async fn streamed_content(response: Response<Body>) -> (String, usize) {
        let text = reply::body_text(response).await;
        let mut content = String::new();
        let mut pieces = 0;
        for event in text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")) {
            let Ok(chunk) = serde_json::from_str::<Value>(event) else {
                continue; // [DONE]
            };
            if let Some(piece) = chunk
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                content.push_str(piece);
                pieces += usize::from(!piece.is_empty());
            }
        }
        (content, pieces)
    }

    #[tokio::test]
    async fn moderations_endpoint() {
        let (status, body) = answer(moderations(
            &json!({"input": "I will [flag:violence] you"}),
            &call(None),
        ))
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], "modr-t1");
        assert_eq!(body["model"], "omni-moderation-latest");
        assert_eq!(body["results"].as_array().unwrap().len(), 1);
        assert_eq!(body["results"][0]["flagged"], true);
        assert_eq!(body["results"][0]["categories"]["violence"], true);
        assert_eq!(body["results"][0]["category_scores"]["violence"], 0.97);

        let (_, body) = answer(moderations(
            &json!({"model": "text-moderation-stable", "input": ["hi", "[score:hate=0.7]", "x"]}),
            &call(None),
        ))
        .await;
        assert_eq!(body["model"], "text-moderation-stable");
        let flagged: Vec<bool> = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["flagged"].as_bool().unwrap())
            .collect();
        assert_eq!(flagged, [false, true, false]);

        // Parts: one result for the text parts, images noted in the applied input types.
        let (_, body) = answer(moderations(
            &json!({"input": [
                {"type": "text", "text": "a [flag:hate]"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                {"type": "text", "text": "[score:sexual=0.6]"}
            ]}),
            &call(None),
        ))
        .await;
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0]["categories"]["hate"], true);
        assert_eq!(results[0]["categories"]["sexual"], true);
        assert_eq!(
            results[0]["category_applied_input_types"]["sexual"],
            json!(["text", "image"])
        );

        for bad in [
            json!({}),
            json!({"input": 5}),
            json!({"input": []}),
            json!({"input": ["a", {"type": "text", "text": "b"}]}),
            json!({"input": [{"type": "input_audio"}]}),
            json!({"input": [{"type": "text"}]}),
            json!({"input": [{"type": "image_url", "image_url": "x"}]}),
            json!({"model": 3, "input": "x"}),
        ] {
            let (status, body) = answer(moderations(&bad, &call(None))).await;
            assert_eq!(status, 400, "{bad}");
            assert_eq!(body["error"]["type"], "invalid_request_error", "{bad}");
        }
    }

    #[tokio::test]
    async fn llama_guard_chat_completions() {
        let request = json!({
            "model": "Llama-Guard-3-8B",
            "messages": [{"role": "user", "content": "Task... User: [flag:violence] !tool [unsafe:S9]"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
        });
        let (status, body) = answer(chat_completions(&request, &call(None))).await;
        assert_eq!(status, 200);
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["model"], "Llama-Guard-3-8B");
        assert_eq!(body["choices"][0]["message"]["content"], "unsafe\nS1,S9");
        assert_eq!(body["choices"][0]["message"].get("tool_calls"), None);
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        assert_eq!(
            body["usage"]["completion_tokens"],
            text::tokens("unsafe\nS1,S9")
        );

        let request = json!({
            "model": "llama-guard-4-12b", "stream": true,
            "messages": [{"role": "user", "content": "hello"}],
        });
        let (content, _) = streamed_content(chat_completions(&request, &call(None))).await;
        assert_eq!(content, "safe");
    }

    #[tokio::test]
    async fn reply_header_replaces_the_echo() {
        let said = "the model says this";
        // It wins over tool markers and the Llama Guard rule, so tests can script any answer.
        for model in ["gpt-4o-mini", "llama-guard-3-8b"] {
            let request = json!({
                "model": model,
                "messages": [{"role": "user", "content": "!tool [unsafe:S1] prompt"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            });
            let (_, body) = answer(chat_completions(&request, &call(Some(said)))).await;
            assert_eq!(body["choices"][0]["message"]["content"], said, "{model}");
            assert_eq!(body["usage"]["completion_tokens"], text::tokens(said));

            let mut streaming = request.clone();
            streaming["stream"] = json!(true);
            let (content, pieces) =
                streamed_content(chat_completions(&streaming, &call(Some(said)))).await;
            assert_eq!((content.as_str(), pieces), (said, 4), "{model}");
        }
        let request = json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
                             "max_tokens": 2});
        let (_, body) = answer(chat_completions(&request, &call(Some(said)))).await;
        assert_eq!(body["choices"][0]["message"]["content"], "the mode");
        assert_eq!(body["choices"][0]["finish_reason"], "length");

        let (_, body) = answer(completions(
            &json!({"model": "m", "prompt": "x"}),
            &call(Some(said)),
        ))
        .await;
        assert_eq!(body["choices"][0]["text"], said);
    }

    #[test]
    fn embeddings_are_deterministic_and_in_range() {
        let a = seeded_vector(b"hello", 16);
        assert_eq!(a, seeded_vector(b"hello", 16));
        assert_ne!(a, seeded_vector(b"hellp", 16));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
    }

    #[test]
    fn text_embeddings_put_paraphrases_close_and_unrelated_texts_apart() {
        let cosine = |a: &str, b: &str| -> f32 {
            let (a, b) = (bag_of_words_vector(a, 256), bag_of_words_vector(b, 256));
            a.iter().zip(&b).map(|(x, y)| x * y).sum()
        };
        let paraphrase = cosine(
            "What is the capital city of France?",
            "what is the capital city of France, please",
        );
        assert!(paraphrase > 0.9, "{paraphrase}");
        let unrelated = cosine(
            "What is the capital city of France?",
            "How do I bake sourdough bread",
        );
        assert!(unrelated < 0.3, "{unrelated}");
        assert!((cosine("Same words", "same WORDS!") - 1.0).abs() < 1e-6);
    }
}
