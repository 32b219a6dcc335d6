//! llm_pii in a real Envoy: providers see placeholders, clients get their values back (JSON and
//! streams cut into 1-byte chunks), block and redact modes, and clean bodies arrive untouched.

use integration::http::{self, post_json, sse_data, sse_events, sse_text};
use integration::{require_envoy, set_filter_config, Demo};
use serde_json::{json, Value};

const KEY: (&str, &str) = ("authorization", "Bearer sk-demo-team-a");
const PROMPT: &str = "Mail jane.doe@example.com, call +1 415 555 2671, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, again jane.doe@example.com";
const MASKED: &str =
    "Mail <EMAIL_1>, call <PHONE_1>, card <CREDIT_CARD_1>, IBAN <IBAN_1>, again <EMAIL_1>";

#[test]
fn providers_see_placeholders_and_clients_get_their_values_back() {
    require_envoy!();
    let demo = Demo::start();
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["choices"][0]["message"]["content"], PROMPT);
    let sent = &demo.openai.requests()[0];
    assert_eq!(sent["json"]["messages"][0]["content"], MASKED);
    assert!(!sent["body"].as_str().unwrap().contains("jane.doe"));
    let prometheus = demo.envoy.prometheus();
    assert!(
        prometheus.contains("llm_pii_detections_total{entity=\"email\",action=\"mask\"} 2"),
        "{prometheus}"
    );
    assert!(
        prometheus.contains("llm_pii_detections_total{entity=\"credit_card\",action=\"mask\"} 1")
    );
    assert_eq!(
        demo.envoy.access_log(1)[0]["pii"],
        "credit_card=1,email=2,iban=1,phone=1"
    );
}

#[test]
fn streams_cut_into_single_bytes_are_restored() {
    require_envoy!();
    let demo = Demo::start();
    let short = "Write to jane.doe@example.com or +1 415 555 2671";
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"] {
        let response = demo.chat(&[("x-mock-chunk-bytes", "1"), ("x-mock-chunk-delay-ms", "1")],
            &json!({"model": model, "stream": true, "messages": [{"role": "user", "content": short}]}),
        );
        assert_eq!(response.status, 200, "{model}: {}", response.body);
        let data = sse_data(&response.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{model}");
        let text = sse_text(&response.body);
        assert_eq!(text, short, "{model}");
        assert!(
            !response.body.contains("<EMAIL_1>") && !response.body.contains("<PHONE_1>"),
            "{model}"
        );
    }
    // The native Anthropic API, streaming.
    let native = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-chunk-bytes", "7"),
        ],
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 200, "stream": true,
                "messages": [{"role": "user", "content": short}]})
        .to_string(),
    );
    let text: String = sse_events(&native.body)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.pointer("/delta/text")?.as_str().map(String::from))
        .collect();
    assert_eq!(text, short);
    let sent = demo.anthropic.requests();
    assert!(sent
        .iter()
        .all(|r| !r["body"].as_str().unwrap().contains("jane.doe")));
}

#[test]
fn secrets_are_blocked_and_terms_redacted() {
    require_envoy!();
    let demo = Demo::start();
    let blocked = demo.chat(
        &[],
        &json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "use key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"}]}),
    );
    assert_eq!(blocked.status, 400);
    assert_eq!(blocked.json()["error"]["code"], "pii_blocked");
    assert!(blocked.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("secret"));
    assert!(
        !blocked.body.contains("sk-proj-"),
        "the value must never be echoed"
    );
    assert!(demo.openai.requests().is_empty());

    let redacted = demo.chat(
        &[],
        &json!({"model": "gpt-4o-mini", "messages": [
        {"role": "user", "content": "status of Project Falcon?"}]}),
    );
    assert_eq!(redacted.status, 200);
    assert_eq!(
        demo.openai.requests()[0]["json"]["messages"][0]["content"],
        "status of [PROJECT]?"
    );
    // Redaction is irreversible: the echo comes back redacted.
    assert_eq!(
        redacted.json()["choices"][0]["message"]["content"],
        "status of [PROJECT]?"
    );
}

#[test]
fn a_clean_body_arrives_byte_identical() {
    require_envoy!();
    let demo = Demo::start();
    // Odd spacing, key order and number formats a re-serialization would change.
    let body = "{ \"model\" : \"gpt-4o-mini\",\n  \"temperature\": 0.70, \"messages\": [{\"role\":\"user\",\"content\":\"Version 1.2.3, order ORD-2024-558812, at 12:30:45 on 2024-01-15\"}] }";
    let response = http::request(
        "POST",
        &demo.envoy.url("/v1/chat/completions"),
        &[KEY, ("content-type", "application/json")],
        Some(body),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(demo.openai.requests()[0]["body"], body);
    assert!(!demo
        .envoy
        .prometheus()
        .contains("llm_pii_detections_total{"));
}

/// The caps on one request's scan: past `max_findings` a block policy refuses the request before any
/// provider sees it (no value in the error); a pass policy masks what fits and counts the rest.
#[test]
fn requests_over_the_scan_caps_are_refused_or_counted() {
    require_envoy!();
    let five = (1..=5)
        .map(|i| format!("user{i}@example.com"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": five}]});
    let block = Demo::start_with(|config| {
        set_filter_config(&config, "llm_pii", r#"{"limits": {"max_findings": 3}}"#)
    });
    let refused = block.chat(&[], &body);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "pii_scan_limit");
    assert!(!refused.body.contains("example.com"), "{}", refused.body);
    assert!(block.openai.requests().is_empty());
    assert_eq!(
        block
            .envoy
            .prometheus_value(r#"llm_pii_scan_limited_total{action="block",reason="findings"}"#),
        Some(1.0)
    );

    let pass = Demo::start_with(|config| {
        set_filter_config(
            &config,
            "llm_pii",
            r#"{"limits": {"max_findings": 3, "on_limit": "pass"}}"#,
        )
    });
    let answered = pass.chat(&[], &body);
    assert_eq!(answered.status, 200, "{}", answered.body);
    assert_eq!(answered.json()["choices"][0]["message"]["content"], five);
    let sent = pass.openai.requests()[0]["json"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        sent,
        "<EMAIL_1>, <EMAIL_2>, <EMAIL_3>, user4@example.com, user5@example.com"
    );
    assert_eq!(
        pass.envoy
            .prometheus_value(r#"llm_pii_scan_limited_total{action="pass",reason="findings"}"#),
        Some(1.0)
    );
}

/// Fields beyond the messages reach providers too: `user`, names, metadata, tool descriptions,
/// Anthropic's `metadata.user_id` and document sources leave masked; ids and models do not change.
#[test]
fn every_string_a_provider_reads_leaves_masked() {
    require_envoy!();
    let demo = Demo::start();
    let mail = "jane.doe@example.com";
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o-mini", "user": mail, "metadata": {"owner": mail},
                "messages": [{"role": "user", "name": mail, "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "send",
                           "description": format!("mails {mail}"), "parameters": {"type": "object"}}}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let sent = &demo.openai.requests()[0];
    assert!(
        !sent["body"].as_str().unwrap().contains("jane.doe"),
        "{sent}"
    );
    assert_eq!(sent["json"]["user"], "<EMAIL_1>");
    assert_eq!(sent["json"]["model"], "gpt-4o-mini");
    assert_eq!(
        sent["json"]["tools"][0]["function"]["parameters"]["type"],
        "object"
    );

    let native = post_json(
        &demo.envoy.url("/v1/messages"),
        &[KEY, ("anthropic-version", "2023-06-01")],
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 20, "metadata": {"user_id": mail},
                "messages": [{"role": "user", "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": format!("memo for {mail}")}},
                    {"type": "text", "text": "summarize"}]}]})
        .to_string(),
    );
    assert_eq!(native.status, 200, "{}", native.body);
    let sent = &demo.anthropic.requests()[0];
    assert!(
        !sent["body"].as_str().unwrap().contains("jane.doe"),
        "{sent}"
    );
}

#[test]
fn national_numbers_near_a_phone_word_and_pasted_line_breaks_are_masked() {
    require_envoy!();
    let demo = Demo::start();
    // A contact block pasted with its line breaks escaped, numbers in three countries' formats, and
    // an order number that must stay as it is.
    let prompt =
        r"Reach Anna:\nmobile 06-82237745\n(73) 4746-3459 office\nOrder 8240084271 shipped.";
    let response = demo.chat(
        &[],
        &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}),
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["choices"][0]["message"]["content"], prompt);
    let sent = &demo.openai.requests()[0];
    assert_eq!(
        sent["json"]["messages"][0]["content"],
        r"Reach Anna:\nmobile <PHONE_1>\n<PHONE_2> office\nOrder 8240084271 shipped."
    );
    assert_eq!(demo.envoy.access_log(1)[0]["pii"], "phone=2");
}

/// Answers: values the prompt did not contain are counted for team-a and redacted for team-b, in
/// JSON and in a stream cut into single bytes; the prompt's own value comes back.
#[test]
fn answers_are_scanned_for_pii_the_prompt_did_not_contain() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        set_filter_config(
            &config,
            "llm_pii",
            r#"{"answers": {"action": "count", "consumers": {"team-b": "redact"}}}"#,
        )
    });
    let prompt = "Who else should I write to than jane.doe@example.com?";
    // What the model answers (it saw the placeholder, and knows another address and a number).
    let reply = "Write to <EMAIL_1>, or to bob@corp.example, or call +1 415 555 2671.";
    let as_sent = "Write to jane.doe@example.com, or to bob@corp.example, or call +1 415 555 2671.";
    let redacted = "Write to jane.doe@example.com, or to [EMAIL], or call [PHONE].";
    let url = demo.envoy.url("/v1/chat/completions");
    for (key, expected) in [("sk-demo-team-a", as_sent), ("sk-demo-team-b", redacted)] {
        let auth = format!("Bearer {key}");
        for stream in [false, true] {
            let body = json!({"model": "gpt-4o-mini", "stream": stream,
                              "messages": [{"role": "user", "content": prompt}]});
            let response = post_json(
                &url,
                &[
                    ("authorization", auth.as_str()),
                    ("x-mock-reply", reply),
                    ("x-mock-chunk-bytes", "1"),
                ],
                &body.to_string(),
            );
            assert_eq!(response.status, 200, "{key}: {}", response.body);
            let text = match stream {
                false => response.json()["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                true => sse_text(&response.body),
            };
            assert_eq!(text, expected, "{key}, stream: {stream}");
            if key == "sk-demo-team-b" {
                assert!(!response.body.contains("bob@") && !response.body.contains("2671"));
            }
        }
    }
    for (entity, action) in [
        ("email", "count"),
        ("phone", "count"),
        ("email", "redact"),
        ("phone", "redact"),
    ] {
        let metric =
            format!(r#"llm_pii_answer_detections_total{{entity="{entity}",action="{action}"}}"#);
        assert_eq!(demo.envoy.prometheus_value(&metric), Some(2.0), "{metric}");
    }
    // The provider never saw the prompt's address.
    assert!(demo
        .openai
        .requests()
        .iter()
        .all(|r| !r["body"].as_str().unwrap_or_default().contains("jane.doe")));
}
