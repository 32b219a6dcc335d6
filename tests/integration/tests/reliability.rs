//! The reliability battery: failures outside the gateway (an upstream that times out, refuses
//! connections or resets mid-stream) and load (64 concurrent connections) each get a clear answer in
//! the caller's API shape and leave Envoy serving; so do header values that are not UTF-8. Malformed,
//! oversized and invalid-UTF-8 bodies are covered in router.rs, spoofed headers in auth.rs and router.rs.

use integration::http::{self, post_json};
use integration::{require_envoy, Demo};
use serde_json::{json, Value};

const KEY: (&str, &str) = ("authorization", "Bearer sk-demo-team-a");

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]})
}

/// The demo with 1 s route timeouts instead of 300 s.
fn demo_with_short_timeouts() -> Demo {
    Demo::start_with(|config| {
        assert!(config.contains("timeout: 300s"));
        config.replace("timeout: 300s", "timeout: 1s")
    })
}

#[test]
fn upstream_timeouts_and_failures_answer_in_the_callers_shape() {
    require_envoy!();
    let mut demo = demo_with_short_timeouts();
    let slow = [KEY, ("x-mock-delay-ms", "3000")];
    let openai = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &slow,
        &ask("gpt-4o-mini").to_string(),
    );
    assert_eq!(openai.status, 504, "{}", openai.body);
    assert_eq!(openai.header("content-type"), Some("application/json"));
    let error = &openai.json()["error"];
    assert_eq!(error["type"], "server_error");
    assert_eq!(error["code"], "response_timeout");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("upstream request timeout"));

    let anthropic = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-delay-ms", "3000"),
        ],
        r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(anthropic.status, 504, "{}", anthropic.body);
    assert_eq!(anthropic.json()["type"], "error");
    assert_eq!(anthropic.json()["error"]["type"], "api_error");

    // A provider that is gone: connection refused, answered in the same shape.
    demo.openai.stop();
    let refused = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[KEY],
        &ask("gpt-4o-mini").to_string(),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.json()["error"]["type"], "server_error");
    // Envoy still serves the other provider.
    let claude = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[KEY],
        &ask("claude-sonnet-4-5").to_string(),
    );
    assert_eq!(claude.status, 200, "{}", claude.body);
}

#[test]
fn an_upstream_reset_mid_stream_ends_that_stream_only() {
    require_envoy!();
    let demo = Demo::start();
    let mut streaming = ask("gpt-4o-mini");
    streaming["stream"] = json!(true);
    streaming["messages"][0]["content"] = json!("one two three four five six seven eight");
    let cut = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[KEY, ("x-mock-stream-reset-after", "2")],
        &streaming.to_string(),
    );
    assert_eq!(cut.status, 200);
    assert!(
        cut.body_error.is_some() || !cut.body.contains("[DONE]"),
        "a reset stream must not look complete: {}",
        cut.body
    );
    // Through the Claude translation the client gets an explicit error event.
    let mut claude = streaming.clone();
    claude["model"] = json!("claude-sonnet-4-5");
    let translated = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[KEY, ("x-mock-stream-reset-after", "2")],
        &claude.to_string(),
    );
    assert!(
        translated.body_error.is_some() || !translated.body.contains("[DONE]"),
        "{}",
        translated.body
    );
    // The next requests are served normally, by both providers.
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"] {
        let mut again = streaming.clone();
        again["model"] = json!(model);
        let ok = post_json(
            &demo.envoy.url("/v1/chat/completions"),
            &[KEY],
            &again.to_string(),
        );
        assert_eq!(ok.status, 200, "{model}: {}", ok.body);
        assert!(ok.body.contains("[DONE]"), "{model}: {}", ok.body);
    }
}

#[test]
fn sixty_four_concurrent_connections_see_no_gateway_errors() {
    require_envoy!();
    let demo = Demo::start();
    let url = demo.envoy.url("/v1/chat/completions");
    let statuses: Vec<u16> = http::concurrently(64, 6, |client, t, i| {
        let model = if (t + i) % 3 == 0 {
            "claude-sonnet-4-5"
        } else {
            "gpt-4o-mini"
        };
        let mut body = ask(model);
        body["stream"] = json!(i % 2 == 0);
        body["messages"][0]["content"] =
            json!(format!("request {t}-{i}: write to jane{t}@example.com"));
        client.post_json(&url, &[KEY], &body.to_string()).status
    });
    assert_eq!(statuses.len(), 64 * 6);
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    assert!(failed.is_empty(), "non-200 answers under load: {failed:?}");
    let prometheus = demo.envoy.prometheus();
    for series in [
        "llm_auth_rejected_total{reason=\"unavailable\"} 0",
        "llm_requests_total{consumer=\"team-a\",model=\"gpt-4o-mini\",provider=\"openai\",status_class=\"2xx\"}",
    ] {
        assert!(prometheus.contains(series), "{series} missing");
    }
    assert!(
        !demo.envoy.log().contains("panicked"),
        "a filter panicked under load"
    );
}

/// What each shipped `failure_policy` does when its filter panics, with modules built with the test-only
/// `fault-injection` feature (`make build-fault`): llm_usage (FAIL_OPEN) is skipped afterwards and requests
/// go on; llm_auth (FAIL_CLOSED) refuses everything afterwards, and Envoy itself keeps running.
#[test]
fn a_panicking_filter_follows_its_failure_policy() {
    require_envoy!();
    if integration::single_module() {
        // One module, one policy: tests/integration/tests/gateway.rs checks llm_gateway's.
        return;
    }
    if integration::native() {
        return a_panic_in_the_native_module_is_a_500_and_the_worker_goes_on();
    }
    let fault = |name: &str| format!("target/fault/wasm32-wasip1/wasm-fault/{name}.wasm");
    for name in ["llm_auth", "llm_usage"] {
        assert!(
            integration::repo_root().join(fault(name)).exists(),
            "{} is missing: run `make build-fault`",
            fault(name)
        );
    }
    let options = integration::EnvoyOptions {
        concurrency: 1, // one VM per filter, so "the VM is dead" is observable
        fresh: true,    // and a dead VM never serves another test
        ..integration::EnvoyOptions::default()
    };
    let demo = Demo::start_with_options(
        |config| {
            config
                .replace(
                    "target/wasm32-wasip1/release/llm_auth.wasm",
                    &fault("llm_auth"),
                )
                .replace(
                    "target/wasm32-wasip1/release/llm_usage.wasm",
                    &fault("llm_usage"),
                )
        },
        &options,
    );
    let send = |fault: Option<&str>| chat_with_fault(&demo, fault);
    assert_eq!(send(None).status, 200, "the fault builds work normally");

    // llm_usage fails open: the panicking request fails, later ones pass without it.
    assert_eq!(send(Some("llm_usage")).status, 503);
    for _ in 0..3 {
        let response = send(None);
        assert_eq!(response.status, 200, "FAIL_OPEN: {}", response.body);
    }
    // llm_auth fails closed: from the panic on, nothing gets through to a provider.
    assert_eq!(send(Some("llm_auth")).status, 503);
    let before = demo.openai.requests().len();
    for _ in 0..3 {
        assert_eq!(send(None).status, 503, "FAIL_CLOSED");
    }
    assert_eq!(
        demo.openai.requests().len(),
        before,
        "nothing reached the provider"
    );
    // Envoy itself is fine.
    assert_eq!(http::get(&demo.envoy.admin_url("/ready"), &[]).status, 200);
    assert!(demo
        .envoy
        .log()
        .contains("fault injected by x-fault-inject"));
}

/// The native module has no failure policy (it runs in Envoy's process): a panic is caught at the
/// FFI boundary, that request gets a 500 in OpenAI shape, and the same worker serves the next ones.
fn a_panic_in_the_native_module_is_a_500_and_the_worker_goes_on() {
    let fault_dir = integration::repo_root().join("target/fault/native");
    assert!(
        fault_dir.join("libllm_gateway.so").exists(),
        "{}/libllm_gateway.so is missing: run `make build-fault`",
        fault_dir.display()
    );
    let options = integration::EnvoyOptions {
        concurrency: 1,
        fresh: true, // the log must hold this test's panic alone
        ..integration::EnvoyOptions::default()
    };
    let demo = Demo::start_with_options(
        |config| {
            // The module built with the test-only `fault-injection` feature.
            format!(
                "# env ENVOY_DYNAMIC_MODULES_SEARCH_PATH={}\n{config}",
                fault_dir.display()
            )
        },
        &options,
    );
    let send = |fault: Option<&str>| chat_with_fault(&demo, fault);
    assert_eq!(send(None).status, 200, "the fault build works normally");
    let before = demo.openai.requests().len();
    for _ in 0..2 {
        let failed = send(Some("llm_gateway"));
        assert_eq!(failed.status, 500, "{}", failed.body);
        assert_eq!(failed.json()["error"]["code"], "internal_error");
    }
    assert_eq!(
        demo.openai.requests().len(),
        before,
        "nothing reached the provider"
    );
    for _ in 0..3 {
        let response = send(None);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(http::get(&demo.envoy.admin_url("/ready"), &[]).status, 200);
    let log = demo.envoy.log();
    assert_eq!(
        log.matches("a filter panicked").count(),
        1,
        "logged once: {log}"
    );
}

/// A small chat request with the demo key, asking `fault` (a filter's name) to panic if set.
fn chat_with_fault(demo: &Demo, fault: Option<&str>) -> http::Response {
    let mut headers = vec![KEY];
    if let Some(filter) = fault {
        headers.push(("x-fault-inject", filter));
    }
    post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &headers,
        &ask("gpt-4o-mini").to_string(),
    )
}

/// A POST of a small chat request with `extra` header lines (raw bytes) and the demo key unless
/// `extra` brings its own authorization.
fn raw_chat(demo: &Demo, extra: &[u8]) -> String {
    let body = ask("gpt-4o-mini").to_string();
    let mut request =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            .to_vec();
    if !extra.starts_with(b"authorization:") {
        request.extend_from_slice(b"authorization: Bearer sk-demo-team-a\r\n");
    }
    request.extend_from_slice(extra);
    request.extend_from_slice(
        format!(
            "content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    http::raw(&demo.envoy.listener, &request)
}

#[test]
fn header_values_that_are_not_utf8_never_take_a_filter_down() {
    require_envoy!();
    let demo = Demo::start();
    // HTTP allows obs-text (bytes 0x80-0xFF) in values; the SDK's string getters panic on them, which
    // used to kill llm_auth's VM (fail closed: every later request 503).
    let latin1 = raw_chat(&demo, b"x-note: caf\xe9\r\n");
    assert!(latin1.starts_with("HTTP/1.1 200"), "{latin1}");
    let bad_key = raw_chat(&demo, b"authorization: Bearer sk-caf\xe9\r\n");
    assert!(bad_key.starts_with("HTTP/1.1 401"), "{bad_key}");
    assert!(bad_key.contains("invalid_api_key"), "{bad_key}");
    let content_type = raw_chat(&demo, b"x-llm-model: \xff\r\naccept: \xfe\r\n");
    assert!(content_type.starts_with("HTTP/1.1 200"), "{content_type}");
    // Header names are tokens: Envoy's codec refuses other bytes before any filter runs.
    let bad_name = raw_chat(&demo, b"x-caf\xe9: 1\r\n");
    assert!(bad_name.starts_with("HTTP/1.1 400"), "{bad_name}");
    // Every filter is still serving.
    for _ in 0..3 {
        let response = post_json(
            &demo.envoy.url("/v1/chat/completions"),
            &[KEY],
            &ask("gpt-4o-mini").to_string(),
        );
        assert_eq!(response.status, 200, "{}", response.body);
    }
    assert_eq!(demo.openai.requests().len(), 5);
}
