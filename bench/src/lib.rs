//! Shared pieces of the benchmarks: realistic request bodies and Envoy configs built around one filter.

use serde_json::json;

/// An OpenAI chat request of about `size` bytes: a system prompt, some turns, and a user message padded
/// with ordinary prose to reach the size.
pub fn chat_body(model: &str, size: usize) -> String {
    let mut messages = vec![
        json!({"role": "system", "content": "You are a helpful assistant. Answer briefly and cite sources."}),
        json!({"role": "user", "content": "What is the capital of France?"}),
        json!({"role": "assistant", "content": "Paris is the capital of France."}),
    ];
    let base = json!({"model": model, "messages": messages, "temperature": 0.2, "max_tokens": 256})
        .to_string()
        .len();
    let sentence = "The quick brown fox jumps over the lazy dog while the gateway counts tokens. ";
    let padding: String = sentence
        .chars()
        .cycle()
        .take(size.saturating_sub(base + 40))
        .collect();
    messages.push(json!({"role": "user", "content": padding}));
    json!({"model": model, "messages": messages, "temperature": 0.2, "max_tokens": 256}).to_string()
}

/// The PII values the benchmark prompts carry, in turn.
const PII_ITEMS: [&str; 4] = [
    "Contact jane.doe@example.com about it. ",
    "Call +1 415 555 2671 after five. ",
    "Pay with 4111 1111 1111 1111 please. ",
    "IBAN DE89 3704 0044 0532 0130 00 is ours. ",
];

/// A chat request of about `size` bytes with `count` PII values spread evenly through clean prose
/// (emails, phones, cards, IBANs in turn).
pub fn chat_body_with_pii_values(model: &str, size: usize, count: usize) -> String {
    let items = PII_ITEMS;
    let filler = "The quick brown fox jumps over the lazy dog while the gateway scans the prompt. ";
    let gap = size / count.max(1);
    let mut prompt = String::new();
    for i in 0..count {
        while prompt.len() + filler.len() < (i + 1) * gap - items[i % items.len()].len() {
            prompt.push_str(filler);
        }
        prompt.push_str(items[i % items.len()]);
    }
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
        .to_string()
}

/// A chat request of about `size` bytes with PII sprinkled through the prompt (about one item per
/// 500 bytes: emails, phones, cards, IBANs).
pub fn chat_body_with_pii(model: &str, size: usize) -> String {
    let items = PII_ITEMS;
    let filler =
        "The quick brown fox jumps over the lazy dog while the gateway scans the prompt for data. ";
    let mut prompt = String::new();
    let mut i = 0;
    while prompt.len() + 300 < size {
        prompt.push_str(filler);
        prompt.push_str(filler);
        prompt.push_str(filler);
        prompt.push_str(items[i % items.len()]);
        i += 1;
    }
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
        .to_string()
}

/// The `llm_router` model table used by the benchmarks.
pub const ROUTER_CONFIG: &str = r#"{"models":[{"name":"gpt-4o-mini","route":"openai"},{"name":"fast","alias_of":"gpt-4o-mini"}]}"#;

/// The `llm_pii` configuration used by the benchmarks: every built-in type masked.
pub const PII_CONFIG: &str = r#"{"entities":{"secret":"mask"}}"#;

/// An Envoy bootstrap: one listener on a free port, one worker's worth of config, an optional Wasm filter
/// (`filter` = (name, configuration JSON)), and one cluster pointing at the mock provider.
pub fn envoy_config(filter: Option<(&str, &str)>, mock_port: u16) -> String {
    let wasm = match filter {
        None => String::new(),
        Some((name, configuration)) => {
            // A module built elsewhere (e.g. another regex engine) can be measured via <NAME>_WASM.
            let file = std::env::var(format!("{}_WASM", name.to_ascii_uppercase()))
                .unwrap_or_else(|_| format!("target/wasm32-wasip1/release/{name}.wasm"));
            format!(
                r#"
          - name: {name}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {name}
                root_id: {name}
                vm_config:
                  vm_id: {name}
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {file} }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{configuration}'
                failure_policy: FAIL_CLOSED
                allow_on_headers_stop_iteration: true"#
            )
        }
    };
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    per_connection_buffer_limit_bytes: 8388608
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          http_filters:{wasm}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: / }}
                route: {{ cluster: mock, timeout: 60s }}
  clusters:
  - name: mock
    type: STATIC
    connect_timeout: 2s
    per_connection_buffer_limit_bytes: 8388608
    load_assignment:
      cluster_name: mock
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {mock_port} }} }} }}
"#
    )
}

/// CPU time (user + system) consumed so far by every thread of process `pid`, in nanoseconds.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Envoy CPU and wall time per request (µs) of `requests` sequential keep-alive chat requests
/// (after 20 to warm up), each body from `next`; every answer must be a 200.
pub fn measure_requests(
    envoy: &integration::Envoy,
    requests: usize,
    next: &mut dyn FnMut() -> String,
) -> (f64, f64) {
    let client = integration::http::Client::default();
    let url = envoy.url("/v1/chat/completions");
    for _ in 0..20 {
        client.post_json(&url, &[], &next());
    }
    let cpu_before = process_cpu_ns(envoy.pid());
    let started = std::time::Instant::now();
    for _ in 0..requests {
        let response = client.post_json(&url, &[], &next());
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let wall = started.elapsed().as_secs_f64() * 1e6 / requests as f64;
    let cpu = (process_cpu_ns(envoy.pid()) - cpu_before) as f64 / 1e3 / requests as f64;
    (cpu, wall)
}
