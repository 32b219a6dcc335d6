//! llm_router in a real Envoy: the model in the body picks the cluster.

use integration::http::{self, post_json, sse_data};
use integration::{require_envoy, set_filter_config, Demo};
use serde_json::{json, Value};

const KEY: (&str, &str) = ("authorization", "Bearer sk-demo-team-a");

fn chat_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "route me"}]}).to_string()
}

fn chat(demo: &Demo, headers: &[(&str, &str)], body: &str) -> http::Response {
    let mut all = vec![KEY];
    all.extend_from_slice(headers);
    post_json(&demo.envoy.url("/v1/chat/completions"), &all, body)
}

fn only_request(requests: Vec<Value>) -> Value {
    assert_eq!(requests.len(), 1, "{requests:#?}");
    requests.into_iter().next().unwrap()
}

#[test]
fn each_demo_model_reaches_its_cluster() {
    require_envoy!();
    let demo = Demo::start();

    let direct = chat(&demo, &[], &chat_body("gpt-4o-mini"));
    assert_eq!(direct.status, 200, "{}", direct.body);
    let received = only_request(demo.openai.requests());
    assert_eq!(received["json"]["model"], "gpt-4o-mini");
    let entry = demo.envoy.access_log(1).remove(0);
    assert_eq!(
        (entry["route"].as_str(), entry["upstream_cluster"].as_str()),
        (Some("openai"), Some("mock_openai"))
    );
    demo.openai.clear();

    // The alias is rewritten in the body; everything else in the body is byte-for-byte the client's.
    let client_body = r#"{"model":"fast", "messages":[{"role":"user","content":"caf\u00e9 \"quoted\""}],"temperature":0.5}"#;
    let alias = chat(&demo, &[], client_body);
    assert_eq!(alias.status, 200, "{}", alias.body);
    assert_eq!(
        alias.json()["choices"][0]["message"]["content"],
        "café \"quoted\""
    );
    let received = only_request(demo.openai.requests());
    assert_eq!(
        received["body"],
        client_body.replacen(r#""model":"fast""#, r#""model":"gpt-4o-mini""#, 1)
    );
    let entry = demo.envoy.access_log(2).remove(1);
    assert_eq!(
        (entry["model"].as_str(), entry["upstream_model"].as_str()),
        (Some("fast"), Some("gpt-4o-mini"))
    );
    assert_eq!(
        received["headers"]["content-length"],
        received["body"].as_str().unwrap().len().to_string()
    );
    demo.openai.clear();

    let embeddings = post_json(
        &demo.envoy.url("/v1/embeddings"),
        &[KEY],
        r#"{"model":"text-embedding-3-small","input":"hello"}"#,
    );
    assert_eq!(embeddings.status, 200, "{}", embeddings.body);
    assert_eq!(
        only_request(demo.openai.requests())["path"],
        "/v1/embeddings"
    );

    // Claude goes to the Anthropic-format cluster (llm_provider translates there).
    chat(&demo, &[], &chat_body("claude-sonnet-4-5"));
    let received = only_request(demo.anthropic.requests());
    assert_eq!(received["json"]["model"], "claude-sonnet-4-5");
    let entry = demo.envoy.access_log(4).remove(3);
    assert_eq!(
        (entry["route"].as_str(), entry["upstream_cluster"].as_str()),
        (Some("anthropic"), Some("mock_anthropic"))
    );
    demo.anthropic.clear();

    // gpt-4o goes to the failover pool: the always-503 priority first, then the Anthropic-format one.
    chat(&demo, &[], &chat_body("gpt-4o"));
    assert_eq!(
        only_request(demo.unavailable.requests())["json"]["model"],
        "gpt-4o"
    );
    // llm_provider's model_map gives the Anthropic-format attempt its own model name.
    assert_eq!(
        only_request(demo.anthropic.requests())["json"]["model"],
        "claude-sonnet-4-5"
    );

    let stats = demo.envoy.prometheus();
    for (model, route, count) in [
        ("gpt-4o-mini", "openai", 2),
        ("text-embedding-3-small", "openai", 1),
        ("claude-sonnet-4-5", "anthropic", 1),
        ("gpt-4o", "gpt-4o-pool", 1),
    ] {
        let series =
            format!("llm_router_requests_total{{model=\"{model}\",route=\"{route}\"}} {count}");
        assert!(stats.contains(&series), "{series} missing from\n{stats}");
    }
}

#[test]
fn anthropic_messages_route_natively() {
    require_envoy!();
    let demo = Demo::start();
    let response = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
        ],
        r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"bonjour"}]}"#,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["content"][0]["text"], "bonjour");
    assert_eq!(demo.anthropic.requests().len(), 1);
    assert!(demo.openai.requests().is_empty());
}

#[test]
fn streaming_requests_route_the_same_way() {
    require_envoy!();
    let demo = Demo::start();
    let response = chat(
        &demo,
        &[],
        r#"{"model":"fast","stream":true,"messages":[{"role":"user","content":"a b c"}]}"#,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let data = sse_data(&response.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let received = only_request(demo.openai.requests());
    assert_eq!(received["json"]["model"], "gpt-4o-mini");
    assert_eq!(received["json"]["stream"], true);
    // The access log is written when the stream ends, possibly just after the client saw its end.
    let line = demo
        .envoy
        .access_log(1)
        .into_iter()
        .find(|l| l["path"] == "/v1/chat/completions")
        .expect("access log line");
    assert_eq!(line["model"], "fast");
    assert_eq!(line["upstream_model"], "gpt-4o-mini");
    assert_eq!(line["route"], "openai");
    assert_eq!(line["stream"], "true");
}

#[test]
fn spoofed_routing_headers_are_ignored() {
    require_envoy!();
    let demo = Demo::start();
    let response = chat(
        &demo,
        &[
            ("x-llm-route", "anthropic"),
            ("x-llm-model", "claude-sonnet-4-5"),
        ],
        &chat_body("gpt-4o-mini"),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert!(demo.anthropic.requests().is_empty());
    only_request(demo.openai.requests());
    let entry = demo.envoy.access_log(1).remove(0);
    assert_eq!(
        (entry["route"].as_str(), entry["model"].as_str()),
        (Some("openai"), Some("gpt-4o-mini"))
    );

    // A spoofed route on a request the router does not route (unknown path) is deleted too.
    let other = http::request(
        "POST",
        &demo.envoy.url("/v1/files"),
        &[KEY, ("x-llm-route", "openai")],
        Some("{}"),
    );
    assert_eq!(other.status, 404);
    assert_eq!(other.json()["error"]["code"], "unknown_url");
    assert_eq!(demo.openai.requests().len(), 1);
}

#[test]
fn unknown_and_malformed_requests_are_rejected_in_the_callers_shape() {
    require_envoy!();
    let demo = Demo::start();
    let unknown = chat(&demo, &[], &chat_body("llama-9"));
    assert_eq!(unknown.status, 404);
    let error = &unknown.json()["error"];
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("gpt-4o-mini, fast, claude-sonnet-4-5"));

    let anthropic_unknown = post_json(
        &demo.envoy.url("/v1/messages"),
        &[KEY, ("anthropic-version", "2023-06-01")],
        r#"{"model":"claude-9","max_tokens":5,"messages":[]}"#,
    );
    assert_eq!(anthropic_unknown.status, 404);
    assert_eq!(anthropic_unknown.json()["type"], "error");
    assert_eq!(anthropic_unknown.json()["error"]["type"], "not_found_error");

    let url = demo.envoy.url("/v1/chat/completions");
    let valid_body = chat_body("gpt-4o-mini");
    let cases: [(&str, Option<&str>, &str); 8] = [
        ("application/json", Some("{\"model\":"), "not valid JSON"),
        ("application/json", Some("[1,2]"), "JSON object"),
        (
            "application/json",
            Some(r#"{"messages":[]}"#),
            "model parameter",
        ),
        (
            "application/json",
            Some(r#"{"model":42}"#),
            "must be a string",
        ),
        (
            "application/json",
            Some(r#"{"model":"a","model":"gpt-4o-mini"}"#),
            "more than one",
        ),
        ("text/plain", Some(&valid_body), "Content-Type"),
        ("application/json", None, "body is empty"),
        (
            "application/json",
            Some("\u{0}\u{1}garbage"),
            "not valid JSON",
        ),
    ];
    for (content_type, body, expected) in cases {
        let headers = [KEY, ("content-type", content_type)];
        let response = http::request("POST", &url, &headers, body);
        assert_eq!(response.status, 400, "{body:?}: {}", response.body);
        let message = response.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(expected), "{body:?}: {message}");
    }
    let invalid_body: &[u8] = b"{\"model\":\"\xff\xfe\"}";
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-demo-team-a\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        invalid_body.len()
    )
    .into_bytes();
    request.extend_from_slice(invalid_body);
    let invalid_utf8 = http::raw(&demo.envoy.listener, &request);
    assert!(invalid_utf8.starts_with("HTTP/1.1 400"), "{invalid_utf8}");
    // Invalid UTF-8 in the prompt (not the model) is refused too, not forwarded.
    let in_prompt: &[u8] =
        b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}";
    let mut request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-demo-team-a\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        in_prompt.len()
    )
    .into_bytes();
    request.extend_from_slice(in_prompt);
    let prompt_utf8 = http::raw(&demo.envoy.listener, &request);
    assert!(prompt_utf8.starts_with("HTTP/1.1 400"), "{prompt_utf8}");
    assert!(prompt_utf8.contains("invalid UTF-8"), "{prompt_utf8}");
    assert!(
        demo.openai.requests().is_empty(),
        "nothing rejected may reach a provider"
    );
    assert!(demo.anthropic.requests().is_empty());
    assert!(demo
        .envoy
        .prometheus()
        .contains("llm_router_rejected_total{reason=\"invalid_request\"} 10"));
}

#[test]
fn oversized_bodies_get_413_with_or_without_content_length() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        set_filter_config(
            &config,
            "llm_router",
            r#"{"models":[{"name":"gpt-4o-mini","route":"openai"}],"max_body_bytes":1000}"#,
        )
    });
    let big = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x".repeat(2000)}]}).to_string();
    let response = chat(&demo, &[], &big);
    assert_eq!(response.status, 413);
    assert!(response.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));

    // Chunked: no content-length, so the limit is enforced while the body streams in.
    let half = &big[..big.len() / 2];
    let rest = &big[big.len() / 2..];
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-demo-team-a\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{half}\r\n{:x}\r\n{rest}\r\n0\r\n\r\n",
        half.len(),
        rest.len()
    );
    let raw = http::raw(&demo.envoy.listener, request.as_bytes());
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("\"type\":\"invalid_request_error\""), "{raw}");
    assert!(demo.openai.requests().is_empty());

    // A chunked body under the limit is routed.
    let small = chat_body("gpt-4o-mini");
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-demo-team-a\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        small.len()
    );
    let raw = http::raw(&demo.envoy.listener, request.as_bytes());
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
}

#[test]
fn large_prompts_route() {
    require_envoy!();
    let demo = Demo::start();
    let prompt = "lorem ipsum ".repeat(20_000); // 240 KB
    let body =
        json!({"model": "fast", "messages": [{"role": "user", "content": prompt}]}).to_string();
    let response = chat(&demo, &[], &body);
    assert_eq!(response.status, 200);
    let received = only_request(demo.openai.requests());
    assert_eq!(received["json"]["model"], "gpt-4o-mini");
    assert_eq!(
        received["json"]["messages"][0]["content"]
            .as_str()
            .unwrap()
            .len(),
        prompt.len()
    );
}

#[test]
fn weighted_split_and_sticky_header_in_envoy() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        set_filter_config(
            &config,
            "llm_router",
            r#"{"models":[
                {"name":"split","targets":[{"route":"openai","weight":1,"model":"gpt-4o-mini"},
                                           {"route":"anthropic","weight":1,"model":"claude-sonnet-4-5"}]},
                {"name":"sticky","targets":[{"route":"openai","weight":1},{"route":"anthropic","weight":1}],
                 "sticky_header":"x-user"}]}"#
                .replace('\n', " ")
                .as_str(),
        )
    });
    for _ in 0..60 {
        chat(&demo, &[], &chat_body("split"));
    }
    let (openai, anthropic) = (demo.openai.requests(), demo.anthropic.requests());
    assert_eq!(openai.len() + anthropic.len(), 60);
    assert!(
        openai.len() >= 10 && anthropic.len() >= 10,
        "split {} / {}",
        openai.len(),
        anthropic.len()
    );
    assert!(openai.iter().all(|r| r["json"]["model"] == "gpt-4o-mini"));
    assert!(anthropic
        .iter()
        .all(|r| r["json"]["model"] == "claude-sonnet-4-5"));
    demo.openai.clear();
    demo.anthropic.clear();

    // Each user sticks to one target, and across users both targets are used.
    let mut targets = std::collections::HashSet::new();
    for user in 0..12 {
        let user = format!("user-{user}");
        for _ in 0..4 {
            chat(&demo, &[("x-user", &user)], &chat_body("sticky"));
        }
        let (o, a) = (
            demo.openai.requests().len(),
            demo.anthropic.requests().len(),
        );
        assert!(o == 4 || a == 4, "{user} was split: {o} / {a}");
        targets.insert(o == 4);
        demo.openai.clear();
        demo.anthropic.clear();
    }
    assert_eq!(targets.len(), 2, "all users landed on one target");
}

#[test]
fn models_endpoint_lists_the_demo_models() {
    require_envoy!();
    let demo = Demo::start();
    let list = http::get(&demo.envoy.url("/v1/models"), &[KEY]);
    assert_eq!(list.status, 200);
    assert_eq!(list.header("content-type"), Some("application/json"));
    let body = list.json();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for model in [
        "gpt-4o-mini",
        "fast",
        "claude-sonnet-4-5",
        "gpt-4o",
        "text-embedding-3-small",
    ] {
        assert!(ids.contains(&model), "{model} not in {ids:?}");
    }
    let one = http::get(&demo.envoy.url("/v1/models/claude-sonnet-4-5"), &[KEY]);
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["owned_by"], "anthropic");
    let missing = http::get(&demo.envoy.url("/v1/models/nope"), &[KEY]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "model_not_found");
    assert!(
        demo.openai.requests().is_empty(),
        "answered by the filter, not a provider"
    );
}
