//! The mock provider behaves like the APIs it imitates, deterministically, and injects faults on demand.
//! These talk to the mock directly (no Envoy): every other test relies on what is checked here.

use base64::Engine as _;
use integration::http::{self, post_json, sse_data, sse_events};
use integration::MockProvider;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn chat_body(content: &str, extra: Value) -> String {
    let mut body = json!({"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content}
    ]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string()
}

fn anthropic_headers() -> Vec<(&'static str, &'static str)> {
    vec![("anthropic-version", "2023-06-01")]
}

#[test]
fn chat_completion_echoes_and_counts_by_the_documented_rule() {
    let mock = MockProvider::start("m", &[]);
    let response = post_json(
        &mock.url("/v1/chat/completions"),
        &[],
        &chat_body("hello world!", json!({})),
    );
    assert_eq!(response.status, 200);
    let body = response.json();
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["content"], "hello world!");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // ceil(8/4) for "be brief" + ceil(12/4) for "hello world!"
    assert_eq!(body["usage"]["prompt_tokens"], 2 + 3);
    assert_eq!(body["usage"]["completion_tokens"], 3);
    assert_eq!(body["usage"]["total_tokens"], 8);
    assert_eq!(response.header("x-mock-instance"), Some("m"));
}

#[test]
fn chat_stream_with_and_without_include_usage() {
    let mock = MockProvider::start("m", &[]);
    let url = mock.url("/v1/chat/completions");
    let with = post_json(
        &url,
        &[],
        &chat_body(
            "a b c",
            json!({"stream": true, "stream_options": {"include_usage": true}}),
        ),
    );
    assert_eq!(with.header("content-type"), Some("text/event-stream"));
    let data = sse_data(&with.body);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "a b c");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 2);
    assert!(chunks.len() >= 5, "several chunks: {}", chunks.len());

    let without = post_json(&url, &[], &chat_body("a b c", json!({"stream": true})));
    let data = sse_data(&without.body);
    assert!(data.iter().all(|d| !d.contains("\"usage\"")), "{data:?}");
    assert_eq!(data.last().unwrap(), "[DONE]");
}

#[test]
fn tool_calls_on_marker_json_and_stream() {
    let mock = MockProvider::start("m", &[]);
    let url = mock.url("/v1/chat/completions");
    let tools = json!({"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]});
    let body = post_json(&url, &[], &chat_body("!tool Paris", tools.clone())).json();
    let call = &body["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"text":"Paris"}"#);
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");

    let mut stream_extra = tools;
    stream_extra["stream"] = json!(true);
    let streamed = post_json(&url, &[], &chat_body("!tool Paris", stream_extra));
    let arguments: String = sse_data(&streamed.body)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(arguments, r#"{"text":"Paris"}"#);
}

#[test]
fn max_tokens_truncates_with_finish_reason_length() {
    let mock = MockProvider::start("m", &[]);
    let body = post_json(
        &mock.url("/v1/chat/completions"),
        &[],
        &chat_body("abcdefghijkl", json!({"max_completion_tokens": 2})),
    )
    .json();
    assert_eq!(body["choices"][0]["message"]["content"], "abcdefgh");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[test]
fn completions_embeddings_and_models() {
    let mock = MockProvider::start("m", &["--models", "a,b"]);
    let completion = post_json(
        &mock.url("/v1/completions"),
        &[],
        r#"{"model":"m","prompt":"say this"}"#,
    )
    .json();
    assert_eq!(completion["choices"][0]["text"], "say this");
    assert_eq!(completion["usage"]["prompt_tokens"], 2);

    let floats = post_json(
        &mock.url("/v1/embeddings"),
        &[],
        r#"{"model":"e","input":["x","y"],"dimensions":4}"#,
    )
    .json();
    assert_eq!(floats["data"].as_array().unwrap().len(), 2);
    let vector: Vec<f32> = floats["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(vector.len(), 4);

    let encoded = post_json(
        &mock.url("/v1/embeddings"),
        &[],
        r#"{"model":"e","input":"x","dimensions":4,"encoding_format":"base64"}"#,
    )
    .json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        decoded, vector,
        "base64 carries the same little-endian f32 vector"
    );

    let bad = post_json(
        &mock.url("/v1/embeddings"),
        &[],
        r#"{"model":"e","input":"x","encoding_format":"hex"}"#,
    );
    assert_eq!(bad.status, 400);

    let models = http::get(&mock.url("/v1/models"), &[]).json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(http::get(&mock.url("/v1/models/zzz"), &[]).status, 404);
}

#[test]
fn anthropic_messages_json_and_event_sequence() {
    let mock = MockProvider::start("m", &["--api", "anthropic"]);
    let url = mock.url("/v1/messages");
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "system": "be brief",
                         "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]});
    let body = post_json(&url, &anthropic_headers(), &request.to_string()).json();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "hi there");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["usage"]["input_tokens"], 2 + 2);
    assert_eq!(body["usage"]["output_tokens"], 2);

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    let events = sse_events(&post_json(&url, &anthropic_headers(), &streaming.to_string()).body);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names.contains(&"content_block_delta"));
    let (_, delta) = &events[events.len() - 2];
    let delta: Value = serde_json::from_str(delta).unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 2);

    // The real API's requirements hold here too.
    let no_version = post_json(&url, &[], &request.to_string());
    assert_eq!(no_version.status, 400);
    assert_eq!(no_version.json()["type"], "error");
    let mut no_max = request.clone();
    no_max.as_object_mut().unwrap().remove("max_tokens");
    assert_eq!(
        post_json(&url, &anthropic_headers(), &no_max.to_string()).status,
        400
    );
    // An Anthropic-only instance does not serve OpenAI paths.
    assert_eq!(
        post_json(
            &mock.url("/v1/chat/completions"),
            &[],
            &chat_body("x", json!({}))
        )
        .status,
        404
    );
}

#[test]
fn anthropic_tool_use_block() {
    let mock = MockProvider::start("m", &[]);
    let request = json!({"model": "c", "max_tokens": 50, "tools": [{"name": "lookup", "input_schema": {}}],
                         "messages": [{"role": "user", "content": "!tool:lookup the answer"}]});
    let body = post_json(
        &mock.url("/v1/messages"),
        &anthropic_headers(),
        &request.to_string(),
    )
    .json();
    assert_eq!(body["content"][0]["type"], "tool_use");
    assert_eq!(body["content"][0]["name"], "lookup");
    assert_eq!(body["content"][0]["input"], json!({"text": "the answer"}));
    assert_eq!(body["stop_reason"], "tool_use");
}

#[test]
fn forced_status_and_delay_headers() {
    let mock = MockProvider::start("m", &[]);
    let limited = post_json(
        &mock.url("/v1/chat/completions"),
        &[("x-mock-status", "429")],
        "{}",
    );
    assert_eq!(limited.status, 429);
    assert_eq!(limited.header("retry-after"), Some("1"));
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let overloaded = post_json(&mock.url("/v1/messages"), &[("x-mock-status", "529")], "{}");
    assert_eq!(overloaded.status, 529);
    assert_eq!(overloaded.json()["error"]["type"], "overloaded_error");

    let started = Instant::now();
    let delayed = post_json(
        &mock.url("/v1/chat/completions"),
        &[("x-mock-delay-ms", "300")],
        &chat_body("x", json!({})),
    );
    assert_eq!(delayed.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
fn stream_faults_error_event_and_reset() {
    let mock = MockProvider::start("m", &[]);
    let url = mock.url("/v1/chat/completions");
    let body = chat_body("one two three four five", json!({"stream": true}));
    let errored = post_json(&url, &[("x-mock-stream-error-after", "2")], &body);
    let data = sse_data(&errored.body);
    assert_eq!(data.len(), 3, "{data:?}");
    assert!(data[2].contains("\"error\""));
    assert!(errored.body_error.is_none());

    let reset = post_json(&url, &[("x-mock-stream-reset-after", "2")], &body);
    assert_eq!(reset.status, 200);
    assert!(
        reset.body_error.is_some(),
        "the client must see the stream break: {:?}",
        reset.body
    );
    assert_eq!(sse_data(&reset.body).len(), 2);

    let started = Instant::now();
    let slow = post_json(&url, &[("x-mock-chunk-delay-ms", "50")], &body);
    assert!(
        started.elapsed() >= Duration::from_millis(50 * 6),
        "{} events",
        sse_data(&slow.body).len()
    );
}

#[test]
fn always_failing_and_key_requiring_instances() {
    let unavailable = MockProvider::start("down", &["--always-status", "503"]);
    let response = post_json(
        &unavailable.url("/v1/chat/completions"),
        &[],
        &chat_body("x", json!({})),
    );
    assert_eq!(response.status, 503);
    assert_eq!(
        unavailable.requests().len(),
        1,
        "failed requests are recorded too"
    );

    let keyed = MockProvider::start("keyed", &["--require-key", "sk-provider"]);
    let url = keyed.url("/v1/chat/completions");
    assert_eq!(post_json(&url, &[], &chat_body("x", json!({}))).status, 401);
    assert_eq!(
        post_json(
            &url,
            &[("authorization", "Bearer wrong")],
            &chat_body("x", json!({}))
        )
        .status,
        401
    );
    assert_eq!(
        post_json(
            &url,
            &[("authorization", "Bearer sk-provider")],
            &chat_body("x", json!({}))
        )
        .status,
        200
    );
    assert_eq!(
        post_json(
            &url,
            &[("x-api-key", "sk-provider")],
            &chat_body("x", json!({}))
        )
        .status,
        200
    );
    assert_eq!(
        post_json(
            &url,
            &[("api-key", "sk-provider")],
            &chat_body("x", json!({}))
        )
        .status,
        200
    );
}

#[test]
fn request_log_records_and_clears() {
    let mock = MockProvider::start("m", &[]);
    post_json(
        &mock.url("/v1/chat/completions?x=1"),
        &[("x-custom", "v")],
        &chat_body("x", json!({})),
    );
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["method"], "POST");
    assert_eq!(requests[0]["path"], "/v1/chat/completions?x=1");
    assert_eq!(requests[0]["headers"]["x-custom"], "v");
    assert_eq!(requests[0]["json"]["model"], "gpt-4o-mini");
    mock.clear();
    assert!(mock.requests().is_empty());
}

#[test]
fn azure_deployment_paths_need_api_version() {
    let mock = MockProvider::start("m", &[]);
    let base = mock.url("/openai/deployments/my-gpt/chat/completions");
    assert_eq!(
        post_json(&base, &[], &chat_body("x", json!({}))).status,
        400
    );
    let ok = post_json(
        &format!("{base}?api-version=2024-10-21"),
        &[],
        &chat_body("x", json!({})),
    );
    assert_eq!(ok.status, 200);
}

#[test]
fn malformed_bodies_get_provider_shaped_400s() {
    let mock = MockProvider::start("m", &[]);
    let openai = post_json(&mock.url("/v1/chat/completions"), &[], "{not json");
    assert_eq!(openai.status, 400);
    assert_eq!(openai.json()["error"]["type"], "invalid_request_error");
    let no_model = post_json(&mock.url("/v1/chat/completions"), &[], r#"{"messages":[]}"#);
    assert_eq!(no_model.status, 400);
    let anthropic = post_json(&mock.url("/v1/messages"), &anthropic_headers(), "[1,2]");
    assert_eq!(anthropic.status, 400);
    assert_eq!(anthropic.json()["type"], "error");
}
