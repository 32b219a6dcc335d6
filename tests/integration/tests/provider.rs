//! llm_provider in a real Envoy: per-attempt translation to Anthropic's format, credential injection,
//! Azure path mapping, error mapping, and cross-format failover by Envoy's own retries.

use integration::http::{post_json, sse_data, sse_text};
use integration::{
    require_envoy, set_filter_config, Demo, Envoy, EnvoyOptions, MockProvider, DEMO_ANTHROPIC_KEY,
    DEMO_OPENAI_KEY,
};
use serde_json::{json, Value};

const KEY: (&str, &str) = ("authorization", "Bearer sk-demo-team-a");

fn chunks(body: &str) -> Vec<Value> {
    sse_data(body)
        .iter()
        .map(|d| {
            if d == "[DONE]" {
                json!("[DONE]")
            } else {
                serde_json::from_str(d).unwrap()
            }
        })
        .collect()
}

#[test]
fn claude_through_the_openai_api() {
    require_envoy!();
    let demo = Demo::start();
    let response = demo.chat(&[],
        &json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 50,
            "temperature": 0.2,
            "stop": ["END"],
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello claude"}]
        }),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "hello claude");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 2 + 3);
    assert_eq!(body["usage"]["total_tokens"], 5 + 3);

    let sent = &demo.anthropic.requests()[0];
    assert_eq!(sent["path"], "/v1/messages");
    assert_eq!(sent["headers"]["x-api-key"], DEMO_ANTHROPIC_KEY);
    assert_eq!(sent["headers"]["anthropic-version"], "2023-06-01");
    assert!(sent["headers"].get("authorization").is_none());
    assert!(sent["headers"]
        .as_object()
        .unwrap()
        .keys()
        .all(|h| !h.starts_with("x-llm-")));
    assert_eq!(
        sent["json"],
        json!({
            "model": "claude-sonnet-4-5", "max_tokens": 50, "system": "be brief", "temperature": 0.2,
            "stop_sequences": ["END"],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hello claude"}]}]
        })
    );
    assert_eq!(
        demo.envoy
            .prometheus_value("llm_provider_translated_total{provider=\"anthropic\"}"),
        Some(1.0)
    );
}

#[test]
fn claude_streaming_with_usage() {
    require_envoy!();
    let demo = Demo::start();
    let response = demo.chat(
        &[("x-mock-chunk-delay-ms", "5")],
        &json!({
            "model": "claude-sonnet-4-5", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "one two three four five"}]
        }),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let events = chunks(&response.body);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    assert_eq!(events[0]["choices"][0]["delta"]["role"], "assistant");
    let text = sse_text(&response.body);
    assert_eq!(text, "one two three four five");
    let usage = &events[events.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert!(events
        .iter()
        .all(|e| e == &json!("[DONE]") || e["object"] == "chat.completion.chunk"));
}

#[test]
fn a_tool_call_round_trip_through_claude() {
    require_envoy!();
    let demo = Demo::start();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let first = demo.chat(
        &[],
        &json!({
            "model": "claude-sonnet-4-5", "tools": tools,
            "messages": [{"role": "user", "content": "!tool Paris"}]
        }),
    );
    assert_eq!(first.status, 200, "{}", first.body);
    let message = first.json()["choices"][0]["message"].clone();
    assert_eq!(first.json()["choices"][0]["finish_reason"], "tool_calls");
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], "{\"text\":\"Paris\"}");
    assert_eq!(
        demo.anthropic.requests()[0]["json"]["tools"][0]["input_schema"]["properties"]["city"]
            ["type"],
        "string"
    );

    // Streaming the same call gives the arguments in deltas.
    let streamed = demo.chat(
        &[],
        &json!({
            "model": "claude-sonnet-4-5", "tools": tools, "stream": true,
            "messages": [{"role": "user", "content": "!tool Paris"}]
        }),
    );
    let arguments: String = chunks(&streamed.body)
        .iter()
        .filter_map(|e| {
            e.pointer("/choices/0/delta/tool_calls/0/function/arguments")?
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(arguments, "{\"text\":\"Paris\"}");

    // Send the tool result back: it reaches Claude as a tool_result block, the answer echoes it.
    let second = demo.chat(
        &[],
        &json!({
            "model": "claude-sonnet-4-5", "tools": tools,
            "messages": [
                {"role": "user", "content": "!tool Paris"},
                message,
                {"role": "tool", "tool_call_id": call["id"], "content": "18 degrees and sunny"}
            ]
        }),
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        second.json()["choices"][0]["message"]["content"],
        "18 degrees and sunny"
    );
    let sent = &demo.anthropic.requests()[2]["json"]["messages"];
    assert_eq!(sent[1]["content"][0]["type"], "tool_use");
    assert_eq!(sent[1]["content"][0]["input"], json!({"text": "Paris"}));
    assert_eq!(
        sent[2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": call["id"], "content": "18 degrees and sunny"})
    );
}

#[test]
fn gpt_4o_fails_over_from_openai_format_to_anthropic_format() {
    require_envoy!();
    let demo = Demo::start();
    let plain = demo.chat(
        &[],
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "failover"}]}),
    );
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(plain.json()["object"], "chat.completion");
    assert_eq!(plain.json()["choices"][0]["message"]["content"], "failover");

    let streamed = demo.chat(&[],
        &json!({"model": "gpt-4o", "stream": true,
                                           "messages": [{"role": "user", "content": "failover stream"}]}),
    );
    assert_eq!(streamed.status, 200);
    let events = chunks(&streamed.body);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let text = sse_text(&streamed.body);
    assert_eq!(text, "failover stream");

    // Attempt 1 went to the OpenAI-format priority with the OpenAI key; attempt 2 to the
    // Anthropic-format one, translated, with the model mapped and only the Anthropic key.
    let first_attempts = demo.unavailable.requests();
    assert_eq!(first_attempts.len(), 2);
    assert!(first_attempts
        .iter()
        .all(|r| r["path"] == "/v1/chat/completions"
            && r["headers"]["authorization"] == format!("Bearer {DEMO_OPENAI_KEY}")
            && r["json"]["model"] == "gpt-4o"));
    let second_attempts = demo.anthropic.requests();
    assert_eq!(second_attempts.len(), 2);
    for request in &second_attempts {
        assert_eq!(request["path"], "/v1/messages");
        assert_eq!(request["json"]["model"], "claude-sonnet-4-5");
        assert_eq!(request["headers"]["x-api-key"], DEMO_ANTHROPIC_KEY);
        assert!(
            request["headers"].get("authorization").is_none(),
            "attempt 1's header leaked: {request}"
        );
    }
    assert_eq!(
        demo.envoy.stat("cluster.pool_gpt_4o.upstream_rq_retry"),
        Some(2)
    );
    let prometheus = demo.envoy.prometheus();
    assert!(
        prometheus.contains("llm_provider_attempts_total{provider=\"openai\"} 2"),
        "{prometheus}"
    );
    assert!(
        prometheus.contains("llm_provider_attempts_total{provider=\"anthropic\"} 2"),
        "{prometheus}"
    );
}

#[test]
fn provider_errors_arrive_in_openai_shape() {
    require_envoy!();
    let demo = Demo::start();
    let body =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "x"}]});
    let overloaded = demo.chat(&[("x-mock-status", "529")], &body);
    assert_eq!(overloaded.status, 503);
    assert_eq!(overloaded.json()["error"]["code"], "overloaded_error");
    assert_eq!(overloaded.header("content-type"), Some("application/json"));
    let invalid = demo.chat(&[("x-mock-status", "400")], &body);
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.json()["error"]["type"], "invalid_request_error");
    assert!(invalid.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock error"));

    // A stream that breaks mid-way ends with an OpenAI error event, not silence.
    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    let broken = demo.chat(&[("x-mock-stream-error-after", "4")], &streaming);
    let events = chunks(&broken.body);
    assert_eq!(events.last().unwrap()["error"]["code"], "overloaded_error");

    // What the Anthropic format cannot express is refused before it is sent.
    let unsupported = post_json(
        &demo.envoy.url("/v1/embeddings"),
        &[KEY],
        r#"{"model":"claude-sonnet-4-5","input":"x"}"#,
    );
    assert_eq!(unsupported.status, 400);
    assert!(unsupported.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not supported by Anthropic-format providers"));
    let n2 = demo.chat(&[],
        &json!({"model": "claude-sonnet-4-5", "n": 2, "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(n2.status, 400);
    assert_eq!(
        demo.anthropic.requests().len(),
        3,
        "only the three real attempts reached the provider"
    );
}

#[test]
fn azure_openai_path_and_key_mapping() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        // The OpenAI-format mock's endpoint becomes an Azure OpenAI deployment.
        let config = config.replacen(
            "metadata: { filter_metadata: { llm: { provider: openai, gen_ai_provider: openai } } }",
            "metadata: { filter_metadata: { llm: { provider: azure, gen_ai_provider: azure.ai.openai } } }",
            1,
        );
        set_filter_config(
            &config,
            "llm_provider",
            r#"{"default_provider":"openai","providers":{"openai":{"format":"openai","api_key_env":"MOCK_OPENAI_KEY","forward_headers":["x-mock-*"]},"anthropic":{"format":"anthropic","api_key_env":"MOCK_ANTHROPIC_KEY","forward_headers":["x-mock-*"]},"azure":{"format":"azure_openai","api_key_env":"MOCK_OPENAI_KEY","api_version":"2024-10-21","deployments":{"gpt-4o-mini":"mini-prod"},"forward_headers":["x-mock-*"]}}}"#,
        )
    });
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "azure"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let embeddings = post_json(
        &demo.envoy.url("/v1/embeddings"),
        &[KEY],
        r#"{"model":"text-embedding-3-small","input":"x"}"#,
    );
    assert_eq!(embeddings.status, 200, "{}", embeddings.body);
    let sent = demo.openai.requests();
    assert_eq!(
        sent[0]["path"],
        "/openai/deployments/mini-prod/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        sent[1]["path"],
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21"
    );
    for request in &sent {
        assert_eq!(request["headers"]["api-key"], DEMO_OPENAI_KEY);
        assert!(request["headers"].get("authorization").is_none());
    }
}

#[test]
fn a_missing_credential_variable_is_refused_at_startup() {
    require_envoy!();
    let config = set_filter_config(
        &integration::demo_config(),
        "llm_provider",
        r#"{"providers":{"openai":{"format":"openai","api_key_env":"NOT_SET_ANYWHERE"}}}"#,
    );
    let exit = Envoy::start_expecting_exit(&config, &EnvoyOptions::default());
    assert!(!exit.status.success());
    let line = exit
        .log
        .lines()
        .find(|l| l.contains("invalid configuration"))
        .unwrap_or_else(|| panic!("no error line in:\n{}", exit.log));
    assert!(
        line.contains("llm_provider: invalid configuration: field `providers.openai.api_key_env`"),
        "{line}"
    );
    assert!(line.contains("NOT_SET_ANYWHERE"), "{line}");
}

/// Headers that would let a client steer the gateway's provider account (organization, project,
/// beta features) or leak its cookies never reach the provider unless configured; trace context and
/// SDK telemetry do. A client-sent x-envoy-original-path is not trusted by the access log.
#[test]
fn only_allow_listed_client_headers_reach_the_provider() {
    require_envoy!();
    let demo = Demo::start();
    let response = demo.chat(
        &[
            ("openai-organization", "org-attacker"),
            ("openai-project", "proj-attacker"),
            ("anthropic-beta", "context-1m-2025-08-07"),
            ("cookie", "session=1"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-stainless-retry-count", "0"),
            ("x-envoy-original-path", "/forged"),
        ],
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let received = demo.anthropic.requests();
    let headers = &received[0]["headers"];
    for absent in [
        "openai-organization",
        "openai-project",
        "anthropic-beta",
        "cookie",
    ] {
        assert!(
            headers.get(absent).is_none(),
            "{absent} reached the provider: {headers}"
        );
    }
    assert_eq!(
        headers["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(headers["x-stainless-retry-count"], "0");
    assert_eq!(headers["x-envoy-original-path"], "/v1/chat/completions");
    let line = demo.envoy.access_log(1).into_iter().next().unwrap();
    assert_eq!(line["path"], "/v1/chat/completions", "{line}");
}

/// Envoy hands every attempt the same request headers, so what one attempt's llm_provider rewrote
/// (the path to `/v1/messages`, Anthropic's headers) is what the next attempt finds. A pool whose
/// first priority speaks Anthropic's format and fails must still reach the OpenAI-format second
/// priority with the client's own path and body.
#[test]
fn failover_from_an_anthropic_format_endpoint_to_an_openai_format_one() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        let openai_port = {
            let at = config.find("cluster_name: mock_openai").unwrap();
            let rest = &config[at..];
            let port = rest.find("port_value: ").unwrap() + "port_value: ".len();
            rest[port..].split(' ').next().unwrap().to_string()
        };
        let pool = config.find("cluster_name: pool_gpt_4o").unwrap();
        let (head, tail) = config.split_at(pool);
        // Priority 0 (the always-503 mock) now claims Anthropic's format; priority 1 is the
        // OpenAI-format mock.
        let tail = tail.replacen(
            "metadata: { filter_metadata: { llm: { provider: openai, gen_ai_provider: openai } } }",
            "metadata: { filter_metadata: { llm: { provider: anthropic, gen_ai_provider: anthropic } } }",
            1,
        );
        let second = tail.find("priority: 1").unwrap();
        let (first_part, second_part) = tail.split_at(second);
        let anthropic_port_at = second_part.find("port_value: ").unwrap() + "port_value: ".len();
        let anthropic_port = second_part[anthropic_port_at..].split(' ').next().unwrap();
        let second_part = second_part
            .replacen(
                &format!("port_value: {anthropic_port} "),
                &format!("port_value: {openai_port} "),
                1,
            )
            .replacen(
                "metadata: { filter_metadata: { llm: { provider: anthropic, gen_ai_provider: anthropic } } }",
                "metadata: { filter_metadata: { llm: { provider: openai, gen_ai_provider: openai } } }",
                1,
            );
        format!("{head}{first_part}{second_part}")
    });
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "failover"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("x-mock-instance"), Some("openai"));
    // The first attempt went out in Anthropic's format, the second in the client's own.
    let first = &demo.unavailable.requests()[0];
    assert_eq!(first["path"], "/v1/messages");
    let sent = demo.openai.requests();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["path"], "/v1/chat/completions");
    let body = &sent[0]["json"];
    assert_eq!(body["messages"][0]["role"], "system", "{body}");
    assert_eq!(body["model"], "gpt-4o", "{body}");
    let headers = sent[0]["headers"].to_string();
    assert!(!headers.contains("anthropic-version"), "{headers}");
    assert!(!headers.contains(DEMO_ANTHROPIC_KEY), "{headers}");
    assert!(headers.contains(DEMO_OPENAI_KEY), "{headers}");
}

/// Google's Gemini API behind every client API: what reached the Gemini mock, and what each client
/// got back in its own shape.
#[test]
fn gemini_through_every_client_api() {
    require_envoy!();
    let demo = Demo::start();
    let response = demo.chat(
        &[],
        &json!({
            "model": "gemini-2.5-flash", "max_tokens": 50, "temperature": 0.2,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello gemini"}]
        }),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gemini-2.5-flash");
    assert_eq!(body["choices"][0]["message"]["content"], "hello gemini");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);

    let sent = &demo.gemini.requests()[0];
    assert_eq!(
        sent["path"],
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        sent["headers"]["x-goog-api-key"],
        integration::DEMO_GEMINI_KEY
    );
    assert!(
        sent["headers"].get("authorization").is_none(),
        "the client's key stays"
    );
    assert_eq!(
        sent["json"],
        json!({
            "contents": [{"role": "user", "parts": [{"text": "hello gemini"}]}],
            "systemInstruction": {"parts": [{"text": "be brief"}]},
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50}
        })
    );

    // A stream, with usage asked for.
    let response = demo.chat(
        &[],
        &json!({"model": "gemini-2.5-flash", "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "stream these few words please"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(sse_text(&response.body), "stream these few words please");
    let events = chunks(&response.body);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let usage = &events[events.len() - 2]["usage"];
    assert!(
        usage["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{usage}"
    );
    assert!(demo.gemini.requests()[1]["path"]
        .as_str()
        .unwrap_or_default()
        .ends_with(":streamGenerateContent?alt=sse"));

    // Tools: the call comes back as a tool call, and its result goes back as a function response.
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]);
    let response = demo.chat(
        &[],
        &json!({"model": "gemini-2.5-flash", "tools": tools,
                "messages": [{"role": "user", "content": "!tool weather in Paris"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let call = response.json()["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(response.json()["choices"][0]["finish_reason"], "tool_calls");
    let response = demo.chat(
        &[],
        &json!({"model": "gemini-2.5-flash", "tools": tools, "messages": [
            {"role": "user", "content": "!tool weather in Paris"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\":21}"}
        ]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);

    // The Anthropic and Responses APIs on the same model.
    assert_messages_client_gets_its_answer(&demo, "gemini-2.5-flash");
    assert_responses_client_gets_its_answer(&demo, "gemini-2.5-flash");

    // Gemini's errors in the caller's shape, with the status it sent.
    let response = demo.chat(
        &[("x-mock-status", "429")],
        &json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "too fast"}]}),
    );
    assert_eq!(response.status, 429, "{}", response.body);
    assert!(response.json()["error"]["message"].is_string());
    // Embeddings are not translated to Gemini: 400, and nothing reaches it.
    let before = demo.gemini.requests().len();
    let response = post_json(
        &demo.envoy.url("/v1/embeddings"),
        &[KEY],
        &json!({"model": "gemini-2.5-flash", "input": "x"}).to_string(),
    );
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(demo.gemini.requests().len(), before);
    // Usage is counted under the Gemini provider.
    assert_output_tokens_counted(&demo, "gemini-2.5-flash", "gemini");

    // Every body Gemini received is one Google's own SDK types accept (they refuse unknown fields).
    let bodies: Vec<Value> = demo
        .gemini
        .requests()
        .into_iter()
        .map(|r| r["json"].clone())
        .collect();
    assert!(bodies.len() >= 6, "{bodies:?}");
    let checked = check_with_python("tests/sdk/gemini_request_schema.py", &Value::Array(bodies));
    assert!(checked.starts_with("ok "), "{checked}");
}

/// AWS Bedrock behind every client API: what reached the Bedrock mock (translated to Converse,
/// signed with SigV4, which the mock verifies as AWS does), and what each client got back.
#[test]
fn bedrock_through_every_client_api() {
    require_envoy!();
    let demo = Demo::start();
    const MODEL: &str = "bedrock-claude-sonnet-4-5";
    const PATH: &str = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0";
    let response = demo.chat(
        &[],
        &json!({
            "model": MODEL, "max_tokens": 50, "temperature": 0.2,
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello bedrock"}]
        }),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    // Converse answers name no model: the one the attempt asked Bedrock for.
    assert_eq!(
        body["model"],
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
    );
    assert_eq!(body["choices"][0]["message"]["content"], "hello bedrock");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap_or(0) > 0);

    let sent = &demo.bedrock.requests()[0];
    assert_eq!(sent["path"], format!("{PATH}/converse"));
    let authorization = sent["headers"]["authorization"]
        .as_str()
        .unwrap_or_default();
    assert!(
        authorization.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={}/",
            integration::DEMO_AWS_ACCESS_KEY_ID
        )),
        "{authorization}"
    );
    assert!(authorization.contains("/us-east-1/bedrock/aws4_request"));
    assert!(!authorization.contains(integration::DEMO_AWS_SECRET_ACCESS_KEY));
    assert_eq!(
        sent["headers"]["host"],
        "bedrock-runtime.us-east-1.amazonaws.com"
    );
    assert_eq!(
        sent["json"],
        json!({
            "messages": [{"role": "user", "content": [{"text": "hello bedrock"}]}],
            "system": [{"text": "be brief"}],
            "inferenceConfig": {"maxTokens": 50, "temperature": 0.2}
        })
    );

    // A stream, with usage asked for: AWS's binary event stream reaches the client as SSE.
    let response = demo.chat(
        &[],
        &json!({"model": MODEL, "stream": true, "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "stream these few words please"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(sse_text(&response.body), "stream these few words please");
    let events = chunks(&response.body);
    assert_eq!(events.last(), Some(&json!("[DONE]")));
    let usage = &events[events.len() - 2]["usage"];
    assert!(
        usage["completion_tokens"].as_u64().unwrap_or(0) > 0,
        "{usage}"
    );
    assert_eq!(
        demo.bedrock.requests()[1]["path"],
        format!("{PATH}/converse-stream")
    );

    // Tools: the call comes back as a tool call, and its result goes back as a toolResult.
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]);
    let response = demo.chat(
        &[],
        &json!({"model": MODEL, "tools": tools,
                "messages": [{"role": "user", "content": "!tool weather in Paris"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let call = response.json()["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(response.json()["choices"][0]["finish_reason"], "tool_calls");
    let response = demo.chat(
        &[],
        &json!({"model": MODEL, "tools": tools, "messages": [
            {"role": "user", "content": "!tool weather in Paris"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "{\"temp\":21}"}
        ]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    // The tool call streamed: its start and argument pieces as Chat tool-call deltas.
    let response = demo.chat(
        &[],
        &json!({"model": MODEL, "tools": tools, "stream": true,
                "messages": [{"role": "user", "content": "!tool weather in Paris"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let arguments: String = chunks(&response.body)
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).ok(),
        Some(json!({"text": "weather in Paris"})),
        "{arguments}"
    );

    // The Anthropic and Responses APIs on the same model, a Messages stream among them.
    assert_messages_client_gets_its_answer(&demo, MODEL);
    let response = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
        ],
        &json!({"model": MODEL, "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "streamed to claude code"}]})
        .to_string(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        response.body.contains("event: message_stop"),
        "{}",
        response.body
    );
    assert_responses_client_gets_its_answer(&demo, MODEL);

    // PII is masked on the way to Bedrock and restored in the answer.
    let response = demo.chat(
        &[],
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "mail jane.doe@example.com"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "mail jane.doe@example.com"
    );
    let last = demo.bedrock.requests().pop().unwrap_or_default();
    assert!(
        !last["body"]
            .as_str()
            .unwrap_or_default()
            .contains("jane.doe"),
        "{last}"
    );

    // Bedrock's errors in the caller's shape, with its status and exception name.
    let response = demo.chat(
        &[("x-mock-status", "429")],
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "too fast"}]}),
    );
    assert_eq!(response.status, 429, "{}", response.body);
    assert_eq!(response.json()["error"]["code"], "ThrottlingException");
    // An exception inside the event stream ends the client's stream with an error event.
    let response = demo.chat(
        &[("x-mock-stream-error-after", "2")],
        &json!({"model": MODEL, "stream": true,
                "messages": [{"role": "user", "content": "one two three four five six seven eight"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(
        chunks(&response.body)
            .iter()
            .any(|c| c.get("error").is_some()),
        "{}",
        response.body
    );
    // Embeddings are not Bedrock's to serve here: 400, and nothing reaches it.
    let before = demo.bedrock.requests().len();
    let response = post_json(
        &demo.envoy.url("/v1/embeddings"),
        &[KEY],
        &json!({"model": MODEL, "input": "x"}).to_string(),
    );
    assert_eq!(response.status, 400, "{}", response.body);
    assert_eq!(demo.bedrock.requests().len(), before);
    // Usage is counted under the Bedrock provider.
    assert_output_tokens_counted(&demo, MODEL, "bedrock");

    // AWS's own SDK: every body and signature the gateway sent is one botocore accepts (its
    // service model refuses unknown fields; its SigV4 signer recomputes each signature), and
    // botocore's client, talking to the mock directly, gets its JSON and event stream parsed by
    // botocore's own parsers.
    let requests: Vec<Value> = demo
        .bedrock
        .requests()
        .into_iter()
        .map(|r| {
            json!({"method": r["method"], "path": r["path"], "headers": r["headers"], "body": r["body"]})
        })
        .collect();
    assert!(requests.len() >= 9, "{requests:?}");
    let checked = check_with_python(
        "tests/sdk/bedrock_conformance.py",
        &json!({
            "mock_url": demo.bedrock.url(""),
            "region": integration::DEMO_AWS_REGION,
            "credentials": {
                "access_key_id": integration::DEMO_AWS_ACCESS_KEY_ID,
                "secret_access_key": integration::DEMO_AWS_SECRET_ACCESS_KEY,
                "session_token": null,
            },
            "requests": requests,
        }),
    );
    assert!(checked.starts_with("ok "), "{checked}");
}

/// A Messages client (Claude Code's shape) on `model` gets its echo back as a message.
/// team-a's output tokens for `model` are counted under `provider`.
fn assert_output_tokens_counted(demo: &Demo, model: &str, provider: &str) {
    let output = demo
        .envoy
        .prometheus_value(&format!(
            r#"llm_output_tokens_total{{consumer="team-a",model="{model}",provider="{provider}"}}"#
        ))
        .unwrap_or(0.0);
    assert!(
        output > 0.0,
        "no output tokens counted for {model} on {provider}"
    );
}

fn assert_messages_client_gets_its_answer(demo: &Demo, model: &str) {
    let response = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
        ],
        &json!({"model": model, "max_tokens": 50,
                "messages": [{"role": "user", "content": "hello from claude code"}]})
        .to_string(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["type"], "message");
    assert_eq!(
        response.json()["content"][0]["text"],
        "hello from claude code"
    );
}

/// A Responses client on `model` gets its echo back as a response.
fn assert_responses_client_gets_its_answer(demo: &Demo, model: &str) {
    let response = post_json(
        &demo.envoy.url("/v1/responses"),
        &[KEY],
        &json!({"model": model, "input": "hello responses"}).to_string(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["object"], "response");
    assert_eq!(
        response.json()["output"][0]["content"][0]["text"],
        "hello responses"
    );
}

/// Runs a script of tests/sdk with `.venv/bin/python`, `input` as JSON on stdin; its stdout.
fn check_with_python(script: &str, input: &Value) -> String {
    use std::io::Write;
    let root = integration::repo_root();
    let mut child = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join(script))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(".venv/bin/python (make setup)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the bodies");
    let out = child.wait_with_output().expect("the script ran");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The demo with the gpt-4o pool's second priority on `provider`'s mock (at its demo `port`),
/// gpt-4o mapped to `model` there.
fn gpt_4o_pool_failing_over_to(provider: &str, port: u16, gen_ai: &str, model: &str) -> Demo {
    let (provider, gen_ai, model) = (provider.to_string(), gen_ai.to_string(), model.to_string());
    Demo::start_with(move |config| {
        let pool = config
            .find("cluster_name: pool_gpt_4o")
            .expect("the demo's pool");
        let (head, tail) = config.split_at(pool);
        let tail = tail
            .replacen(
                "port_value: 18081 } } }\n          metadata: { filter_metadata: { llm: { provider: anthropic, gen_ai_provider: anthropic } } }",
                &format!("port_value: {port} }} }} }}\n          metadata: {{ filter_metadata: {{ llm: {{ provider: {provider}, gen_ai_provider: {gen_ai} }} }} }}"),
                1,
            );
        assert!(
            tail.contains(&format!("provider: {provider}")),
            "the pool's second priority"
        );
        let config = format!("{head}{tail}");
        let mut filter = integration::filter_config(&config, "llm_provider");
        filter["providers"][provider.as_str()]["model_map"] = json!({ "gpt-4o": model });
        set_filter_config(&config, "llm_provider", &filter.to_string())
    })
}

/// A failover pool whose second priority is Gemini: the first (OpenAI format) answers 503, Envoy
/// retries on the next priority, and the client still gets a chat completion.
#[test]
fn gpt_4o_fails_over_from_openai_format_to_gemini() {
    require_envoy!();
    let demo = gpt_4o_pool_failing_over_to("gemini", 18083, "gcp.gemini", "gemini-2.5-flash");
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "fail over to gemini"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["object"], "chat.completion");
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "fail over to gemini"
    );
    assert_eq!(
        demo.unavailable.requests().len(),
        1,
        "the first priority was tried"
    );
    let sent = demo.gemini.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["path"],
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert!(sent[0]["headers"].get("authorization").is_none());
}

/// The same pool failing over to Bedrock: the retry is translated to Converse and signed, the
/// stream comes back as SSE.
#[test]
fn gpt_4o_fails_over_from_openai_format_to_bedrock() {
    require_envoy!();
    let demo = gpt_4o_pool_failing_over_to(
        "bedrock",
        integration::DEMO_BEDROCK_PORT,
        "aws.bedrock",
        "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
    );
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o", "stream": true,
                "messages": [{"role": "user", "content": "fail over to bedrock"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(sse_text(&response.body), "fail over to bedrock");
    assert_eq!(demo.unavailable.requests().len(), 1);
    let sent = demo.bedrock.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0]["path"],
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
    );
    assert!(sent[0]["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .starts_with("AWS4-HMAC-SHA256 "));
}

/// The demo with a Vertex AI provider on `vertex` (a mock serving Vertex's routes and its token
/// endpoint, whose service-account key file is `key`): models `vertex-gemini` and `vertex-claude`.
fn demo_with_vertex(vertex: &MockProvider, key: &str) -> Demo {
    let port = vertex.port();
    // One line of JSON, as an environment variable holds it.
    let key: Value = serde_json::from_str(key).expect("the key file is JSON");
    let key = key.to_string();
    Demo::start_with(move |config| {
        let line = "MOCK_GEMINI_KEY: sk-mock-gemini-key\n";
        let at = config.find(line).expect("the demo's provider keys");
        let indent = &config[config[..at].rfind('\n').unwrap() + 1..at];
        let config = config.replacen(
            line,
            &format!("{line}{indent}MOCK_VERTEX_SERVICE_ACCOUNT: '{key}'\n"),
            1,
        );
        // A cluster and a route like the Gemini mock's, for the Vertex mock.
        let start = config.find("  - name: mock_gemini\n").unwrap();
        let end = start + config[start..].find("\n\n").unwrap() + 2;
        let cluster = config[start..end]
            .replace("mock_gemini", "mock_vertex")
            .replace("port_value: 18083 ", &format!("port_value: {port} "))
            .replace(
                "provider: gemini, gen_ai_provider: gcp.gemini",
                "provider: vertex, gen_ai_provider: gcp.vertex_ai",
            );
        let config = format!("{}{cluster}{}", &config[..end], &config[end..]);
        let route = "                  headers: [{ name: x-llm-route, string_match: { exact: gemini } }]\n                route: { cluster: mock_gemini, timeout: 300s }\n";
        let config = config.replacen(
            route,
            &format!(
                "{route}              - match:\n                  prefix: /\n{}",
                route.replace("gemini", "vertex")
            ),
            1,
        );
        let config = integration::add_http_cluster(&config, "google_oauth2", port);
        let mut router = integration::filter_config(&config, "llm_router");
        let models = router["models"].as_array_mut().unwrap();
        models.push(json!({"name": "vertex-gemini", "route": "vertex", "owned_by": "google"}));
        models.push(json!({"name": "vertex-claude", "route": "vertex", "owned_by": "anthropic"}));
        let config = set_filter_config(&config, "llm_router", &router.to_string());
        let mut provider = integration::filter_config(&config, "llm_provider");
        provider["providers"]["vertex"] = json!({
            "format": "vertex_ai", "project": "mock-project", "location": "us-central1",
            "service_account_env": "MOCK_VERTEX_SERVICE_ACCOUNT", "token_cluster": "google_oauth2",
            "model_map": {"vertex-gemini": "gemini-2.5-flash", "vertex-claude": "claude-sonnet-4-5@20250929"},
            "forward_headers": ["x-mock-*"]
        });
        set_filter_config(&config, "llm_provider", &provider.to_string())
    })
}

/// `body` sent as a chat until `done` says so (at most 10 s): the answer that was.
fn chat_until(
    demo: &Demo,
    body: &Value,
    done: impl Fn(&integration::http::Response) -> bool,
) -> integration::http::Response {
    let mut response = demo.chat(&[], body);
    for _ in 0..50 {
        if done(&response) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        response = demo.chat(&[], body);
    }
    response
}

/// A mock serving Vertex AI with a key file of its own making; the file's text.
fn vertex_mock(name: &str, extra: &[&str]) -> (MockProvider, String) {
    let path = std::env::temp_dir().join(format!(
        "llm-vertex-{name}-{}-{}.json",
        std::process::id(),
        integration::free_port()
    ));
    let path_text = path.to_string_lossy().to_string();
    let mut args = vec![
        "--api",
        "vertex",
        "--vertex-generate-service-account",
        &path_text,
    ];
    args.extend_from_slice(extra);
    let mock = MockProvider::start(name, &args);
    let key = std::fs::read_to_string(&path).expect("the mock wrote its key file");
    let _ = std::fs::remove_file(&path);
    (mock, key)
}

/// Google Vertex AI: Gemini and Claude models behind every client API, with OAuth2 access tokens
/// the gateway gets from a service-account key (an RS256 JWT the mock's token endpoint verifies)
/// in the background and sends on every attempt.
#[test]
fn vertex_ai_serves_gemini_and_claude_with_background_tokens() {
    require_envoy!();
    let (vertex, key) = vertex_mock("vertex", &[]);
    let demo = demo_with_vertex(&vertex, &key);
    // The first token is fetched in the background (within a second): until then, 503 saying so.
    let response = chat_until(
        &demo,
        &json!({"model": "vertex-gemini", "messages": [{"role": "user", "content": "hello vertex"}]}),
        |response| {
            assert!(
                response.status != 503 || response.body.contains("access token"),
                "{}",
                response.body
            );
            response.status != 503
        },
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.json()["choices"][0]["message"]["content"],
        "hello vertex"
    );
    let sent = vertex.requests();
    let tokens: Vec<&Value> = sent.iter().filter(|r| r["path"] == "/token").collect();
    assert!(!tokens.is_empty() && tokens.len() <= 2, "{tokens:?}");
    assert!(tokens[0]["body"].as_str().unwrap_or_default().starts_with(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
    ));
    let call = sent.iter().find(|r| r["path"] != "/token").unwrap();
    assert_eq!(
        call["path"],
        "/v1/projects/mock-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert!(call["headers"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .starts_with("Bearer ya29.mock-"));

    // Claude on Vertex: rawPredict and streamRawPredict, the model in the path only.
    let response = demo.chat(
        &[],
        &json!({"model": "vertex-claude", "stream": true,
                "messages": [{"role": "user", "content": "claude on vertex"}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(sse_text(&response.body), "claude on vertex");
    assert_messages_client_gets_its_answer(&demo, "vertex-claude");
    let response = post_json(
        &demo.envoy.url("/v1/responses"),
        &[KEY],
        &json!({"model": "vertex-gemini", "input": "hello responses"}).to_string(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.json()["output"][0]["content"][0]["text"],
        "hello responses"
    );
    let sent = vertex.requests();
    let claude: Vec<&Value> = sent
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or_default()
                .contains("/publishers/anthropic/models/claude-sonnet-4-5@20250929:")
        })
        .collect();
    assert_eq!(claude.len(), 2, "{sent:?}");
    assert!(claude[0]["path"]
        .as_str()
        .unwrap()
        .ends_with(":streamRawPredict"));
    assert!(claude[1]["path"].as_str().unwrap().ends_with(":rawPredict"));
    for call in &claude {
        assert_eq!(call["json"]["anthropic_version"], "vertex-2023-10-16");
        assert!(call["json"].get("model").is_none());
    }
    // Tokens are not fetched per request.
    let tokens = sent.iter().filter(|r| r["path"] == "/token").count();
    assert!(tokens <= 2, "{tokens} token requests");
    let refreshed: f64 = ["ok"]
        .iter()
        .filter_map(|result| {
            demo.envoy.prometheus_value(&format!(
                r#"llm_provider_token_refreshes_total{{provider="vertex",result="{result}"}}"#
            ))
        })
        .sum();
    assert!(refreshed >= 1.0, "no token refresh counted");
    // Usage is counted under the Vertex AI provider, for both kinds of model.
    for model in ["vertex-gemini", "vertex-claude"] {
        assert_output_tokens_counted(&demo, model, "vertex");
    }
    // The Gemini bodies Vertex received are ones Google's own SDK types accept.
    let bodies: Vec<Value> = sent
        .iter()
        .filter(|r| {
            r["path"]
                .as_str()
                .unwrap_or_default()
                .contains("/publishers/google/")
        })
        .map(|r| r["json"].clone())
        .collect();
    assert!(bodies.len() >= 2, "{bodies:?}");
    let checked = check_with_python("tests/sdk/gemini_request_schema.py", &Value::Array(bodies));
    assert!(checked.starts_with("ok "), "{checked}");
    // The key and the tokens stay out of Envoy's log.
    let log = demo.envoy.log();
    assert!(!log.contains("BEGIN PRIVATE KEY") && !log.contains("ya29.mock-"));
}

/// A token endpoint that refuses the gateway's JWT (a key it does not know): every request gets a
/// 503 saying why, the failures are counted, and nothing reaches Vertex AI.
#[test]
fn vertex_ai_token_failures_answer_503_with_the_reason() {
    require_envoy!();
    // The gateway holds one mock's key; the endpoint it calls knows another.
    let (stale, key) = vertex_mock("vertex-old-key", &[]);
    drop(stale);
    let (vertex, _) = vertex_mock("vertex", &[]);
    let demo = demo_with_vertex(&vertex, &key);
    let response = chat_until(
        &demo,
        &json!({"model": "vertex-gemini", "messages": [{"role": "user", "content": "x"}]}),
        |response| response.body.contains("invalid_grant"),
    );
    assert_eq!(response.status, 503, "{}", response.body);
    assert!(
        response
            .body
            .contains("invalid_grant: Invalid JWT Signature."),
        "{}",
        response.body
    );
    assert!(vertex.requests().iter().all(|r| r["path"] == "/token"));
    let failed = demo
        .envoy
        .prometheus_value(r#"llm_provider_token_refreshes_total{provider="vertex",result="error"}"#)
        .unwrap_or(0.0);
    assert!(failed >= 1.0);
    let unavailable = demo
        .envoy
        .prometheus_value(r#"llm_provider_token_unavailable_total{provider="vertex"}"#)
        .unwrap_or(0.0);
    assert!(unavailable >= 1.0);
    assert!(demo.envoy.log().contains("access token refresh failed"));
}
