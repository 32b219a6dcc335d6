//! llm_gateway: the four downstream filters in one module. The filters' own test files run against it
//! too (`LLM_SINGLE_MODULE=1`, see the Makefile's `test-integration`); these are the cases that only
//! the single module has, or that stress how it orders its filters.

use integration::http::{self, post_json, sse_text};
use integration::{repo_root, require_envoy, to_single_module, Demo, Envoy, EnvoyOptions};
use serde_json::{json, Value};

#[test]
fn invalid_section_config_is_refused_naming_the_section_and_field() {
    require_envoy!();
    let demo = integration::demo_config();
    let single = to_single_module(&demo);
    let cases = [
        // serde's check, inside a section
        (
            r#""router": {"bogus_field": "sk-secret-value-123"}"#,
            "field `router.bogus_field`",
        ),
        // a section's compile step
        (
            r#""usage": {"max_label_sets": 0}"#,
            "field `usage.max_label_sets`",
        ),
        // a section that is not a filter of the module
        (
            r#""provider": {"providers": {}}"#,
            "field `provider`: unknown field `provider`",
        ),
    ];
    for (section, expected) in cases {
        let config =
            integration::set_filter_config(&single, "llm_gateway", &format!("{{{section}}}"));
        let exit = Envoy::start_expecting_exit(&config, &EnvoyOptions::default());
        assert!(!exit.status.success(), "{section}: Envoy accepted it");
        let line = exit
            .log
            .lines()
            .find(|l| l.contains("invalid configuration"))
            .unwrap_or_else(|| panic!("{section}: no error line in\n{}", exit.log));
        assert!(
            line.contains(&format!("llm_gateway: invalid configuration: {expected}")),
            "{section}: {line}"
        );
        assert!(
            !exit.log.contains("sk-secret-value-123"),
            "the value leaked"
        );
    }
}

/// The module with only some filters configured runs only those.
#[test]
fn a_module_with_only_router_and_usage_runs_just_those() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        let single = to_single_module(&config);
        let merged = integration::filter_config(&single, "llm_gateway");
        let partial = json!({"router": merged["router"], "usage": merged["usage"]});
        integration::set_filter_config(&single, "llm_gateway", &partial.to_string())
    });
    // No llm_auth: no key needed, and the consumer is anonymous.
    let response = http::post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[],
        &json!({"model": "fast", "messages": [{"role": "user", "content": "mail jane@example.com"}]})
            .to_string(),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    // No llm_pii: the prompt reaches the provider as sent.
    let sent = demo.openai.requests();
    assert_eq!(sent[0]["json"]["model"], "gpt-4o-mini");
    assert_eq!(
        sent[0]["json"]["messages"][0]["content"],
        "mail jane@example.com"
    );
    let entry = &demo.envoy.access_log(1)[0];
    assert_eq!(entry["model"], "fast");
    assert_eq!(entry["input_tokens"], "6");
    for (filter, expected) in [
        ("gateway", Some(1.0)),
        ("router", Some(1.0)),
        ("usage", Some(1.0)),
        ("auth", None),
    ] {
        let series = format!("llm_filter_requests_total{{filter=\"{filter}\"}}");
        assert_eq!(demo.envoy.prometheus_value(&series), expected, "{series}");
    }
}

/// A JSON answer in many small frames, restored by llm_pii (which holds it to the end) while
/// llm_usage, before it on the response path, reads each frame as it passes: usage must count each
/// byte once (it reads the provider's own usage, not an estimate) and the client gets every value back.
/// In the single module both read one buffer, so this checks that each filter sees only its own part.
#[test]
fn chunked_json_answer_is_restored_and_counted_once() {
    require_envoy!();
    let demo = Demo::start();
    let prompt = "Call +1 415 555 2671 or mail jane.doe@example.com about the invoice, please.";
    let response = demo.chat(
        &[("x-mock-chunk-bytes", "16"), ("x-mock-chunk-delay-ms", "1")],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["choices"][0]["message"]["content"], prompt);
    // What the provider saw and counted: the masked prompt.
    let sent = demo.openai.requests();
    let masked = sent[0]["json"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        masked.contains("<PHONE_1>") && masked.contains("<EMAIL_1>"),
        "{masked}"
    );
    let entry = &demo.envoy.access_log(1)[0];
    assert_eq!(entry["usage_estimated"], "false", "{entry}");
    assert_eq!(
        entry["input_tokens"],
        body["usage"]["prompt_tokens"].to_string(),
        "{entry}"
    );
    assert_eq!(entry["pii"], "email=1,phone=1");
}

/// A stream restored by llm_pii and rewritten by llm_usage (which hides the usage chunk it asked for
/// on the client's behalf), both in every frame.
#[test]
fn stream_with_hidden_usage_and_pii_is_rewritten_by_both() {
    require_envoy!();
    let demo = Demo::start();
    let prompt = "Mail jane.doe@example.com today";
    let response = demo.chat(
        &[("x-mock-chunk-bytes", "5")],
        &json!({"model": "gpt-4o-mini", "stream": true,
                "messages": [{"role": "user", "content": prompt}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(sse_text(&response.body), prompt);
    assert!(!response.body.contains("\"usage\""), "{}", response.body);
    let entry: Value = demo.envoy.access_log(1)[0].clone();
    assert_eq!(entry["usage_estimated"], "false", "{entry}");
    assert_eq!(entry["stream"], "true", "{entry}");
}

/// llm_gateway ships FAIL_CLOSED: after a panic in any of its filters nothing reaches a provider (a
/// module built with the test-only `fault-injection` feature, `make build-fault`), and Envoy runs on.
#[test]
fn a_panic_in_the_module_fails_closed() {
    require_envoy!();
    let fault = "target/fault/wasm32-wasip1/wasm-fault/llm_gateway.wasm";
    assert!(
        repo_root().join(fault).exists(),
        "{fault} is missing: run `make build-fault`"
    );
    let options = EnvoyOptions {
        concurrency: 1, // one VM, so "the VM is dead" is observable
        fresh: true,    // and a dead VM never serves another test
        ..EnvoyOptions::default()
    };
    let demo = Demo::start_with_options(
        |config| {
            to_single_module(&config)
                .replace("target/wasm32-wasip1/release/llm_gateway.wasm", fault)
        },
        &options,
    );
    let url = demo.envoy.url("/v1/chat/completions");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        .to_string();
    let send = |fault: Option<&str>| {
        let mut headers = vec![("authorization", "Bearer sk-demo-team-a")];
        if let Some(filter) = fault {
            headers.push(("x-fault-inject", filter));
        }
        post_json(&url, &headers, &body)
    };
    assert_eq!(send(None).status, 200, "the fault build works normally");
    assert_eq!(send(Some("llm_gateway")).status, 503);
    let before = demo.openai.requests().len();
    for _ in 0..3 {
        assert_eq!(send(None).status, 503, "FAIL_CLOSED");
    }
    assert_eq!(
        demo.openai.requests().len(),
        before,
        "nothing reached the provider"
    );
    assert_eq!(http::get(&demo.envoy.admin_url("/ready"), &[]).status, 200);
    assert!(demo
        .envoy
        .log()
        .contains("fault injected by x-fault-inject"));
}
