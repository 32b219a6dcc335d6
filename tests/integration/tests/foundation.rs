//! The foundation: every filter loads and is on the request path, the demo config works in a real
//! Envoy, bad filter config is refused, every shipped Envoy YAML validates, nothing is left running.

use integration::http::{self, sse_data};
use integration::{require_envoy, set_filter_config, Demo, Envoy, EnvoyOptions};
use serde_json::{json, Value};

const FILTERS: [&str; 5] = ["auth", "router", "pii", "usage", "provider"];

fn chat(demo: &Demo, extra_headers: &[(&str, &str)], body: &str) -> http::Response {
    let mut headers = vec![("authorization", "Bearer sk-demo-team-a")];
    headers.extend_from_slice(extra_headers);
    http::post_json(&demo.envoy.url("/v1/chat/completions"), &headers, body)
}

#[test]
fn chat_completion_passes_through_all_five_filters() {
    require_envoy!();
    let demo = Demo::start();
    let response = chat(
        &demo,
        &[],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello gateway"}]}"#,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "hello gateway");
    assert_eq!(body["usage"]["prompt_tokens"], 4);
    assert_eq!(response.header("x-mock-instance"), Some("openai"));

    let received = demo.openai.requests();
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0]["path"], "/v1/chat/completions");
    assert_eq!(received[0]["json"]["model"], "gpt-4o-mini");

    for filter in FILTERS {
        let series = format!("llm_filter_requests_total{{filter=\"{filter}\"}}");
        assert_eq!(
            demo.envoy.prometheus_value(&series),
            Some(1.0),
            "{series} in\n{}",
            demo.envoy.prometheus()
        );
    }
    // The JSON access log goes to stdout, which the harness captures in the log.
    let access_line = demo
        .envoy
        .log()
        .lines()
        .find(|l| l.starts_with('{') && l.contains("/v1/chat/completions"))
        .map(|l| serde_json::from_str::<Value>(l).expect("access log line is JSON"))
        .expect("an access log line");
    assert_eq!(access_line["status"], 200);
    assert_eq!(access_line["upstream_cluster"], "mock_openai");
}

#[test]
fn streaming_arrives_event_by_event_through_the_chain() {
    require_envoy!();
    let demo = Demo::start();
    let response = chat(
        &demo,
        &[],
        r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"one two three four"}]}"#,
    );
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let data = sse_data(&response.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "one two three four");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
}

#[test]
fn failover_pool_moves_to_the_second_priority() {
    require_envoy!();
    let demo = Demo::start();
    // llm_router sends gpt-4o to the pool; Envoy's retry moves from priority 0 to priority 1.
    let response = chat(
        &demo,
        &[],
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
    );
    // The second attempt reached the Anthropic-format mock: exactly one request each.
    assert_eq!(demo.unavailable.requests().len(), 1);
    assert_eq!(demo.anthropic.requests().len(), 1);
    assert_eq!(response.header("x-mock-instance"), Some("anthropic"));
    assert_eq!(
        demo.envoy.stat("cluster.pool_gpt_4o.upstream_rq_retry"),
        Some(1)
    );
    // The upstream filter runs once per attempt.
    assert_eq!(
        demo.envoy
            .prometheus_value("llm_filter_requests_total{filter=\"provider\"}"),
        Some(2.0)
    );
}

#[test]
fn invalid_filter_config_is_refused_naming_the_filter_and_field() {
    require_envoy!();
    let base = integration::demo_config();
    for filter in FILTERS {
        let root_id = format!("llm_{filter}");
        let config = set_filter_config(&base, &root_id, r#"{"bogus_field":"sk-secret-value-123"}"#);
        let exit = Envoy::start_expecting_exit(&config, &EnvoyOptions::default());
        assert!(
            !exit.status.success(),
            "{root_id}: Envoy accepted a bad config"
        );
        let lines: Vec<&str> = exit
            .log
            .lines()
            .filter(|l| l.contains("invalid configuration"))
            .collect();
        assert!(
            !lines.is_empty(),
            "{root_id}: no error line in\n{}",
            exit.log
        );
        assert!(
            lines[0].contains(&format!(
                "{root_id}: invalid configuration: field `bogus_field`"
            )),
            "{root_id}: {}",
            lines[0]
        );
        // One name per line: Envoy's prefix names the plugin, the message does not repeat it.
        assert!(
            !lines[0].contains(&format!("{root_id}: {root_id}:")),
            "{}",
            lines[0]
        );
        assert!(
            !exit.log.contains("sk-secret-value-123"),
            "{root_id}: the config value leaked into the log"
        );
    }
}

#[test]
fn every_shipped_envoy_config_validates() {
    require_envoy!();
    if integration::single_module() || integration::native() {
        // The shipped configs are the same whichever packaging this run tests: checked once.
        return;
    }
    let configs = integration::shipped_envoy_configs();
    assert!(!configs.is_empty(), "no Envoy configs found under envoy/");
    for config in configs {
        let (ok, output) = integration::validate_config(&config);
        assert!(ok, "{} failed validation:\n{output}", config.display());
    }
}

#[test]
fn a_reused_demo_starts_each_test_clean() {
    require_envoy!();
    let ask = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "pool"}]});
    // A config no other test asks for, so the second start is sure to get the first one's demo.
    let this_test_only = |config: String| config + "# a_reused_demo_starts_each_test_clean\n";
    let envoy_pid = {
        let demo = Demo::start_with(this_test_only);
        assert_eq!(demo.chat(&[], &ask).status, 200);
        assert_eq!(demo.openai.requests().len(), 1);
        assert_eq!(demo.envoy.access_log(1).len(), 1);
        demo.envoy.pid()
    };
    let demo = Demo::start_with(this_test_only);
    assert_eq!(demo.envoy.pid(), envoy_pid, "the demo was reused");
    assert!(demo.openai.requests().is_empty());
    assert!(demo.envoy.access_log(0).is_empty());
    assert_eq!(
        demo.envoy.stat("http.llm.downstream_rq_completed"),
        Some(0),
        "counters reset"
    );
    assert_eq!(demo.chat(&[], &ask).status, 200);
    assert_eq!(demo.envoy.access_log(1).len(), 1);
}

#[test]
fn dropping_the_demo_leaves_no_process_behind() {
    require_envoy!();
    // A pooled demo outlives its test (its processes die with the test binary); this one does not.
    let demo = Demo::start_fresh();
    let pids = [
        demo.envoy.pid(),
        demo.openai.pid(),
        demo.anthropic.pid(),
        demo.unavailable.pid(),
    ];
    drop(demo);
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "process {pid} is still running");
    }
}
