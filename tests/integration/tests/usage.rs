//! llm_usage in a real Envoy: exact token and cost metrics, the invisible injected usage chunk,
//! access-log fields, token limits that recover, and budgets charged exactly across two workers.

use integration::http::{self, post_json, sse_data};
use integration::{require_envoy, set_filter_config, Demo};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn chat(demo: &Demo, key: &str, body: &Value) -> http::Response {
    post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {key}"))],
        &body.to_string(),
    )
}

fn ask(model: &str, content: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": content}]})
}

#[test]
fn exact_tokens_and_cost_in_prometheus_and_the_access_log() {
    require_envoy!();
    let demo = Demo::start();
    // The mock's rule: ceil(chars / 4) tokens; the reply echoes the prompt.
    let prompt = "x".repeat(400); // 100 tokens in, 100 out
    assert_eq!(
        chat(&demo, "sk-demo-team-a", &ask("gpt-4o-mini", &prompt)).status,
        200
    );
    let mut streaming = ask("gpt-4o-mini", &"y ".repeat(100)); // 200 chars: 50 tokens in, 50 out
    streaming["stream"] = json!(true);
    assert_eq!(chat(&demo, "sk-demo-team-a", &streaming).status, 200);
    let anthropic = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-cached-tokens", "20"),
        ],
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 500, "stream": true,
                "messages": [{"role": "user", "content": "z".repeat(160)}]})
        .to_string(),
    );
    assert_eq!(anthropic.status, 200);

    let log = demo.envoy.access_log(3);
    let prometheus = demo.envoy.prometheus();
    let series = |name: &str, model: &str, provider: &str| {
        format!("{name}{{consumer=\"team-a\",model=\"{model}\",provider=\"{provider}\"}}")
    };
    let value = |series: String| -> f64 {
        prometheus
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{series} "))?.parse().ok())
            .unwrap_or_else(|| panic!("{series} missing from\n{prometheus}"))
    };
    assert_eq!(
        value(series("llm_input_tokens_total", "gpt-4o-mini", "openai")),
        150.0
    );
    assert_eq!(
        value(series("llm_output_tokens_total", "gpt-4o-mini", "openai")),
        150.0
    );
    // gpt-4o-mini at 0.15 / 0.60 USD per million: 150 × 150 + 150 × 600 nano-USD.
    assert_eq!(
        value(series("llm_cost_nanousd_total", "gpt-4o-mini", "openai")),
        112_500.0
    );
    // Claude: 40 prompt tokens of which 20 cached, 40 out at 3 / 0.30 / 15 USD per million.
    assert_eq!(
        value(series(
            "llm_input_tokens_total",
            "claude-sonnet-4-5",
            "anthropic"
        )),
        40.0
    );
    assert_eq!(
        value(series(
            "llm_cached_input_tokens_total",
            "claude-sonnet-4-5",
            "anthropic"
        )),
        20.0
    );
    assert_eq!(
        value(series(
            "llm_cost_nanousd_total",
            "claude-sonnet-4-5",
            "anthropic"
        )),
        20.0 * 3000.0 + 20.0 * 300.0 + 40.0 * 15000.0
    );
    assert!(prometheus.contains("llm_requests_total{consumer=\"team-a\",model=\"gpt-4o-mini\",provider=\"openai\",status_class=\"2xx\"} 2"));

    let first = &log[0];
    assert_eq!(first["consumer"], "team-a");
    assert_eq!(first["model"], "gpt-4o-mini");
    assert_eq!(first["provider"], "openai");
    assert_eq!(first["input_tokens"], "100");
    assert_eq!(first["output_tokens"], "100");
    assert_eq!(first["cost_usd"], "0.000075000");
    assert_eq!(first["stream"], "false");
    assert_eq!(first["usage_estimated"], "false");
    assert!(first["ttft_ms"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(log[1]["stream"], "true");
    assert_eq!(log[1]["output_tokens"], "50");
    assert_eq!(log[2]["path"], "/v1/messages");
    assert_eq!(log[2]["cached_tokens"], "20");

    // Histograms appear after Envoy's stats flush.
    let deadline = Instant::now() + Duration::from_secs(12);
    while !demo
        .envoy
        .prometheus()
        .contains("llm_time_to_first_token_ms_bucket{model=\"gpt-4o-mini\",provider=\"openai\"")
    {
        assert!(
            Instant::now() < deadline,
            "no time-to-first-token histogram"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn injected_usage_is_invisible_to_a_client_that_did_not_ask() {
    require_envoy!();
    let demo = Demo::start();
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"] {
        let mut body = ask(model, "count my tokens please");
        body["stream"] = json!(true);
        let response = chat(&demo, "sk-demo-team-a", &body);
        assert_eq!(response.status, 200);
        let data = sse_data(&response.body);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        for event in &data[..data.len() - 1] {
            let chunk: Value = serde_json::from_str(event).unwrap();
            assert!(chunk.get("usage").is_none(), "{model}: {event}");
            assert!(
                !chunk["choices"].as_array().unwrap().is_empty(),
                "{model}: usage-only chunk {event}"
            );
        }
        let text: String = data[..data.len() - 1]
            .iter()
            .filter_map(|d| {
                serde_json::from_str::<Value>(d).ok()?["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        assert_eq!(text, "count my tokens please");
    }
    // The provider was asked for usage, and the gateway counted it.
    assert_eq!(
        demo.openai.requests()[0]["json"]["stream_options"]["include_usage"],
        true
    );
    let log = demo.envoy.access_log(2);
    assert!(
        log.iter()
            .all(|l| l["output_tokens"] == "6" && l["usage_estimated"] == "false"),
        "{log:?}"
    );

    // A client that asked for usage still gets it.
    let mut asked = ask("gpt-4o-mini", "mine");
    asked["stream"] = json!(true);
    asked["stream_options"] = json!({"include_usage": true});
    let data = sse_data(&chat(&demo, "sk-demo-team-a", &asked).body);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 1);
}

#[test]
fn missing_usage_is_estimated_and_marked() {
    require_envoy!();
    let demo = Demo::start();
    let response = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer sk-demo-team-a"),
            ("x-mock-no-usage", "1"),
        ],
        &ask("gpt-4o-mini", &"w".repeat(40)).to_string(),
    );
    assert_eq!(response.status, 200);
    let line = demo.envoy.access_log(1).remove(0);
    assert_eq!(line["usage_estimated"], "true");
    assert_eq!(line["output_tokens"], "10");
    assert!(demo.envoy.prometheus().contains("llm_estimated_usage_total{consumer=\"team-a\",model=\"gpt-4o-mini\",provider=\"openai\"} 1"));
}

#[test]
fn the_tiny_consumer_runs_out_of_tokens() {
    require_envoy!();
    let demo = Demo::start_fresh(); // sk-demo-tiny's limit windows: none spent by an earlier test
                                    // 4,400 characters: 1,100 tokens in and 1,100 out, over sk-demo-tiny's 2,000 a minute.
    let first = chat(
        &demo,
        "sk-demo-tiny",
        &ask("gpt-4o-mini", &"t".repeat(4400)),
    );
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("2000"));
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), Some("2000"));
    let limited = chat(&demo, "sk-demo-tiny", &ask("gpt-4o-mini", "again"));
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"]["code"], "rate_limit_exceeded");
    assert!(limited.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("2000 tokens per minute"));
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (4..=7).contains(&retry_after),
        "200 tokens of debt at 2,000 a minute: {retry_after}"
    );
    assert_eq!(limited.header("x-ratelimit-remaining-tokens"), Some("0"));
    assert_eq!(demo.openai.requests().len(), 1);
    assert!(demo
        .envoy
        .prometheus()
        .contains("llm_usage_limited_total{consumer=\"tiny\",kind=\"tokens\"} 1"));
}

#[test]
fn a_token_limit_recovers_as_the_window_refills() {
    require_envoy!();
    // 600 tokens a minute: 10 a second.
    let demo = Demo::start_with(|config| {
        set_filter_config(
            &config,
            "llm_usage",
            r#"{"limits":[{"consumer":"team-a","tokens_per_minute":600}]}"#,
        )
    });
    let spend = chat(
        &demo,
        "sk-demo-team-a",
        &ask("gpt-4o-mini", &"s".repeat(1200)),
    ); // 300 + 300
    assert_eq!(spend.status, 200);
    let limited = chat(&demo, "sk-demo-team-a", &ask("gpt-4o-mini", "more"));
    assert_eq!(limited.status, 429);
    std::thread::sleep(Duration::from_millis(1500));
    let recovered = chat(&demo, "sk-demo-team-a", &ask("gpt-4o-mini", "more"));
    assert_eq!(recovered.status, 200, "{}", recovered.body);
}

#[test]
fn two_workers_charge_one_budget_exactly() {
    require_envoy!();
    // Output at 1 USD per million tokens, input free: a 40-character prompt echoed back costs
    // 10 × 1,000 nano-USD, and `max_tokens: 10` makes the reservation at admission exactly that, so
    // the budget is exactly 24 such requests however many run at once.
    let demo = Demo::start_with(|config| {
        set_filter_config(
            &config,
            "llm_usage",
            r#"{"prices":[{"model":"*","input":0,"output":1}],"limits":[{"consumer":"team-a","usd_per_day":0.00024}]}"#,
        )
    });
    // A daily budget refills at 00:00 UTC.
    integration::away_from_window_end(Duration::from_secs(86_400), Duration::from_secs(60));
    let url = demo.envoy.url("/v1/chat/completions");
    let mut body = ask("gpt-4o-mini", &"b".repeat(40));
    body["max_tokens"] = json!(10);
    let body = body.to_string();
    let statuses: Vec<u16> = http::concurrently(6, 4, |client, _, _| {
        client
            .post_json(&url, &[("authorization", "Bearer sk-demo-team-a")], &body)
            .status
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Exactly the budget was charged: one more request is refused; had any charge been lost between
    // the workers, it would still pass.
    let refused = http::Client::default().post_json(
        &url,
        &[("authorization", "Bearer sk-demo-team-a")],
        &body,
    );
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.json()["error"]["code"], "budget_exceeded");
    let cost: f64 = demo
        .envoy
        .prometheus()
        .lines()
        .filter(|l| l.starts_with("llm_cost_nanousd_total{consumer=\"team-a\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(cost, 240_000.0);
}

/// A raw HTTP/1.1 exchange over `stream`: the request, then the response's status line and headers,
/// and its body as it arrives (chunked framing removed).
struct RawExchange {
    stream: std::net::TcpStream,
    raw: Vec<u8>,
    head: Option<String>,
    body_at: usize,
}

impl RawExchange {
    fn send(demo: &Demo, path: &str, headers: &[(&str, &str)], body: &str) -> RawExchange {
        use std::io::Write;
        let mut request =
            format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        let mut stream = std::net::TcpStream::connect(&demo.envoy.listener).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        RawExchange {
            stream,
            raw: Vec::new(),
            head: None,
            body_at: 0,
        }
    }

    /// Reads more; false at the end of the response.
    fn read_more(&mut self) -> bool {
        use std::io::Read;
        let mut buffer = [0u8; 8192];
        let n = self.stream.read(&mut buffer).unwrap_or(0);
        self.raw.extend_from_slice(&buffer[..n]);
        if self.head.is_none() {
            if let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                self.head = Some(String::from_utf8_lossy(&self.raw[..end]).to_lowercase());
                self.body_at = end + 4;
            }
        }
        n > 0 && !self.complete()
    }

    /// The body bytes received so far, without the chunked framing, and whether the last chunk came.
    fn body(&self) -> (Vec<u8>, bool) {
        let raw = &self.raw[self.body_at.min(self.raw.len())..];
        let chunked = self
            .head
            .as_deref()
            .is_some_and(|h| h.contains("transfer-encoding: chunked"));
        if !chunked {
            return (raw.to_vec(), false);
        }
        let (mut out, mut at) = (Vec::new(), 0);
        while let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(
                std::str::from_utf8(&raw[at..at + line_end]).unwrap().trim(),
                16,
            )
            .unwrap();
            if size == 0 {
                return (out, true);
            }
            let start = at + line_end + 2;
            if raw.len() < start + size + 2 {
                break;
            }
            out.extend_from_slice(&raw[start..start + size]);
            at = start + size + 2;
        }
        (out, false)
    }

    fn complete(&self) -> bool {
        self.body().1
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.as_deref()?.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim().to_string())
        })
    }
}

/// What a gzip stream decodes to so far (a stream flushed per chunk decodes as it arrives).
fn gunzip_so_far(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let _ = decoder.write_all(bytes);
    let _ = decoder.flush();
    String::from_utf8_lossy(decoder.get_ref()).into_owned()
}

/// Real providers gzip JSON answers for clients that accept it, as every official SDK does; the
/// mock does too. Usage is still counted exactly (the provider is asked for identity on every
/// attempt, so no filter ever sees compressed bytes), pass-through and translated alike; the client
/// gets its answer gzipped by Envoy's compressor filter (demo config), after the filters read it.
#[test]
fn answers_to_clients_that_accept_gzip_are_counted_exactly() {
    require_envoy!();
    let demo = Demo::start();
    let accept = ("accept-encoding", "gzip, deflate, br, zstd");
    let prompt = "x".repeat(400); // 100 tokens in, 100 out
    let exchange = |path: &str, headers: &[(&str, &str)], body: &str| {
        let mut exchange = RawExchange::send(&demo, path, headers, body);
        while exchange.read_more() {}
        assert!(
            exchange
                .head
                .as_deref()
                .unwrap()
                .starts_with("http/1.1 200"),
            "{:?}",
            exchange.head
        );
        assert_eq!(exchange.header("content-encoding").as_deref(), Some("gzip"));
        let decoded: Value = serde_json::from_str(&gunzip_so_far(&exchange.body().0)).unwrap();
        decoded
    };
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"] {
        let answer = exchange(
            "/v1/chat/completions",
            &[("authorization", "Bearer sk-demo-team-a"), accept],
            &ask(model, &prompt).to_string(),
        );
        assert_eq!(answer["usage"]["completion_tokens"], 100);
    }
    let native = exchange(
        "/v1/messages",
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            accept,
        ],
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 500,
                "messages": [{"role": "user", "content": prompt}]})
        .to_string(),
    );
    assert_eq!(native["usage"]["output_tokens"], 100);
    for mock in [&demo.openai, &demo.anthropic] {
        for request in mock.requests() {
            assert!(
                request["headers"].get("accept-encoding").is_none(),
                "the provider was offered compression: {request}"
            );
        }
    }
    assert_eq!(
        series(&demo, "llm_output_tokens_total", "gpt-4o-mini", "openai"),
        100.0
    );
    assert_eq!(
        series(
            &demo,
            "llm_output_tokens_total",
            "claude-sonnet-4-5",
            "anthropic"
        ),
        200.0
    );
    for (model, provider) in [
        ("gpt-4o-mini", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
    ] {
        assert_eq!(
            series(&demo, "llm_estimated_usage_total", model, provider),
            0.0,
            "{model}: usage was estimated"
        );
    }
}

/// A client that closes the connection after the last content block, before `message_delta`
/// (which carries the output count; `message_start` says 1), received everything: it is charged at
/// least what was delivered. Likewise an upstream reset mid-stream.
#[test]
fn streams_that_end_early_are_charged_what_was_delivered() {
    use std::io::{Read, Write};
    require_envoy!();
    let demo = Demo::start();
    let prompt = "z".repeat(2000); // the mock echoes it: 500 output tokens by its own count
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": true,
                      "messages": [{"role": "user", "content": prompt}]})
    .to_string();
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: sk-demo-team-a\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         x-mock-chunk-delay-ms: 300\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(&demo.envoy.listener).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("content_block_stop") {
        let n = stream.read(&mut buffer).unwrap();
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buffer[..n]);
    }
    assert!(!String::from_utf8_lossy(&seen).contains("message_delta"));
    drop(stream); // gone before message_delta

    let series = r#"llm_output_tokens_total{consumer="team-a",model="claude-sonnet-4-5",provider="anthropic"}"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut output = 0.0;
    while Instant::now() < deadline {
        output = demo.envoy.prometheus_value(series).unwrap_or(0.0);
        if output > 0.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        output >= 500.0,
        "charged {output} output tokens for 500 delivered"
    );
    assert_eq!(
        demo.envoy
            .prometheus_value(r#"llm_estimated_usage_total{consumer="team-a",model="claude-sonnet-4-5",provider="anthropic"}"#),
        Some(1.0)
    );

    // An upstream reset after a few events: what arrived is charged, not the 1 of message_start.
    let reset = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-stream-reset-after", "5"),
        ],
        &body,
    );
    let delivered: usize = http::sse_events(&reset.body)
        .iter()
        .filter_map(|(_, data)| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| {
            event
                .pointer("/delta/text")
                .and_then(Value::as_str)
                .map(|t| t.chars().count())
        })
        .sum();
    assert!(
        delivered > 0,
        "nothing delivered before the reset: {}",
        reset.body
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = output;
    while Instant::now() < deadline && after == output {
        after = demo.envoy.prometheus_value(series).unwrap_or(0.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        after - output >= (delivered as f64 / 4.0).ceil(),
        "charged {} for {delivered} delivered characters",
        after - output
    );
}

/// The official SDKs on their default headers (gzip offered), JSON and streaming, pass-through and
/// translated: exact tokens and cost in Prometheus.
#[test]
fn official_sdks_on_default_settings_are_charged_exactly() {
    require_envoy!();
    let demo = Demo::start_fresh(); // sk-demo-tiny's limit windows: none spent by an earlier test
    integration::run_sdk_script("usage_sdks.py", &demo, "sk-demo-team-a");
    let value = |name: &str, model: &str, provider: &str| series(&demo, name, model, provider);
    // Each model: 100 + 50 tokens in and out (JSON + stream); Claude also through its own API.
    assert_eq!(
        value("llm_input_tokens_total", "gpt-4o-mini", "openai"),
        150.0
    );
    assert_eq!(
        value("llm_output_tokens_total", "gpt-4o-mini", "openai"),
        150.0
    );
    assert_eq!(
        value("llm_input_tokens_total", "claude-sonnet-4-5", "anthropic"),
        300.0
    );
    assert_eq!(
        value("llm_output_tokens_total", "claude-sonnet-4-5", "anthropic"),
        300.0
    );
    // gpt-4o-mini at 0.15 / 0.60 USD and Claude at 3 / 15 USD per million tokens, in nano-USD.
    assert_eq!(
        value("llm_cost_nanousd_total", "gpt-4o-mini", "openai"),
        112_500.0
    );
    assert_eq!(
        value("llm_cost_nanousd_total", "claude-sonnet-4-5", "anthropic"),
        5_400_000.0
    );
    for (model, provider) in [
        ("gpt-4o-mini", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
    ] {
        assert!(
            value("llm_estimated_usage_total", model, provider) == 0.0,
            "{model}: usage was estimated"
        );
    }
    // The SDKs offered compression; the providers were asked for none.
    for request in demo
        .openai
        .requests()
        .iter()
        .chain(demo.anthropic.requests().iter())
    {
        assert!(
            request["headers"].get("accept-encoding").is_none(),
            "{request}"
        );
    }
}

/// Four requests of ~1,100 tokens arrive together against sk-demo-tiny's 2,000 tokens a minute.
/// Admission reserves each one's estimate (input from its size, output from `max_tokens`), so the
/// requests running beside it see it spent: two start, two get 429 (before reservations all four
/// passed). Settled at the end with what they used, the count is exact.
#[test]
fn concurrent_requests_cannot_overshoot_a_token_limit() {
    require_envoy!();
    let demo = Demo::start_fresh(); // sk-demo-tiny's limit windows: none spent by an earlier test
    let mut body = ask("gpt-4o-mini", &"w".repeat(2200)); // 550 tokens in, 550 out
    body["max_tokens"] = json!(550);
    let statuses: Vec<u16> = http::concurrently(4, 1, |client, _, _| {
        client
            .post_json(
                &demo.envoy.url("/v1/chat/completions"),
                &[
                    ("authorization", "Bearer sk-demo-tiny"),
                    ("x-mock-delay-ms", "1000"),
                ],
                &body.to_string(),
            )
            .status
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(demo.openai.requests().len(), 2);
    // What was used is what is counted: 2 × 1,100 tokens.
    let used = demo
        .envoy
        .prometheus_value(
            r#"llm_input_tokens_total{consumer="tiny",model="gpt-4o-mini",provider="openai"}"#,
        )
        .unwrap_or(0.0)
        + demo
            .envoy
            .prometheus_value(
                r#"llm_output_tokens_total{consumer="tiny",model="gpt-4o-mini",provider="openai"}"#,
            )
            .unwrap_or(0.0);
    assert_eq!(used, 2200.0);
    // The limit is spent (200 tokens of debt): the next request waits for the refill.
    let after = chat(&demo, "sk-demo-tiny", &ask("gpt-4o-mini", "again"));
    assert_eq!(after.status, 429, "{}", after.body);
}

/// A request the provider refused (here a 500) used nothing: its reservation is given back. One the
/// client abandoned after it was sent keeps its reservation (the provider may have run and billed).
#[test]
fn reservations_follow_what_the_provider_may_have_used() {
    require_envoy!();
    let demo = Demo::start_fresh(); // sk-demo-tiny's limit windows: none spent by an earlier test
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 900,
                      "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    // Each reserves ~930 of sk-demo-tiny's 2,000 tokens; kept, the third would be refused.
    for _ in 0..3 {
        let failed = post_json(
            &demo.envoy.url("/v1/chat/completions"),
            &[
                ("authorization", "Bearer sk-demo-tiny"),
                ("x-mock-status", "500"),
            ],
            &body,
        );
        assert_eq!(failed.status, 500, "{}", failed.body);
    }
    let ok = chat(&demo, "sk-demo-tiny", &ask("gpt-4o-mini", "still allowed"));
    assert_eq!(ok.status, 200, "{}", ok.body);

    // Now three requests sent to the provider and abandoned before its answer.
    for _ in 0..3 {
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-demo-tiny\r\n\
             content-type: application/json\r\nx-mock-delay-ms: 2000\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(&demo.envoy.listener).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(stream);
    }
    std::thread::sleep(Duration::from_millis(300));
    let refused = chat(&demo, "sk-demo-tiny", &ask("gpt-4o-mini", "over"));
    assert_eq!(refused.status, 429, "{}", refused.body);
}

/// A team-a series of llm_usage (0 when it does not exist yet).
fn series(demo: &Demo, name: &str, model: &str, provider: &str) -> f64 {
    demo.envoy
        .prometheus_value(&format!(
            "{name}{{consumer=\"team-a\",model=\"{model}\",provider=\"{provider}\"}}"
        ))
        .unwrap_or(0.0)
}

/// What real providers do besides answering: SSE comment and keep-alive lines, Anthropic `ping`
/// events, and HTTP/2 to the upstream. Usage and cost stay exact.
#[test]
fn keep_alive_comments_and_http2_upstreams_are_counted_exactly() {
    require_envoy!();
    let demo = Demo::start_with(|config| {
        // Every provider cluster (they share one anchor) speaks HTTP/2 to the mocks.
        config.replacen(
            "explicit_http_config: { http_protocol_options: {} }",
            "explicit_http_config: { http2_protocol_options: {} }",
            1,
        )
    });
    let prompt = "k".repeat(400); // 100 tokens in and out
    for model in ["gpt-4o-mini", "claude-sonnet-4-5"] {
        let mut body = ask(model, &prompt);
        assert_eq!(chat(&demo, "sk-demo-team-a", &body).status, 200);
        body["stream"] = json!(true);
        let streamed = post_json(
            &demo.envoy.url("/v1/chat/completions"),
            &[
                ("authorization", "Bearer sk-demo-team-a"),
                ("x-mock-sse-comments", "1"),
            ],
            &body.to_string(),
        );
        assert_eq!(streamed.status, 200, "{}", streamed.body);
        assert_eq!(http::sse_text(&streamed.body), prompt);
    }
    let native = post_json(
        &demo.envoy.url("/v1/messages"),
        &[
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            ("x-mock-sse-comments", "1"),
        ],
        &json!({"model": "claude-sonnet-4-5", "max_tokens": 500, "stream": true,
                "messages": [{"role": "user", "content": prompt}]})
        .to_string(),
    );
    assert_eq!(native.status, 200, "{}", native.body);
    assert!(native.body.contains("event: ping"), "{}", native.body);
    for request in demo
        .openai
        .requests()
        .iter()
        .chain(demo.anthropic.requests().iter())
    {
        assert_eq!(request["version"], "HTTP/2.0", "{request}");
    }
    assert_eq!(
        series(&demo, "llm_output_tokens_total", "gpt-4o-mini", "openai"),
        200.0
    );
    assert_eq!(
        series(&demo, "llm_input_tokens_total", "gpt-4o-mini", "openai"),
        200.0
    );
    assert_eq!(
        series(
            &demo,
            "llm_output_tokens_total",
            "claude-sonnet-4-5",
            "anthropic"
        ),
        300.0
    );
    // 200 × 150 + 200 × 600 nano-USD; Claude: 300 × 3,000 + 300 × 15,000.
    assert_eq!(
        series(&demo, "llm_cost_nanousd_total", "gpt-4o-mini", "openai"),
        150_000.0
    );
    assert_eq!(
        series(
            &demo,
            "llm_cost_nanousd_total",
            "claude-sonnet-4-5",
            "anthropic"
        ),
        5_400_000.0
    );
    for (model, provider) in [
        ("gpt-4o-mini", "openai"),
        ("claude-sonnet-4-5", "anthropic"),
    ] {
        assert_eq!(
            series(&demo, "llm_estimated_usage_total", model, provider),
            0.0
        );
    }
}

/// A provider's 429 reaches the client with its `retry-after` and rate-limit headers and costs
/// nothing; an error event mid-stream is charged what was delivered before it.
#[test]
fn provider_rate_limits_and_mid_stream_errors_are_charged_correctly() {
    require_envoy!();
    let demo = Demo::start();
    let limited = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer sk-demo-team-a"),
            ("x-mock-status", "429"),
        ],
        &ask("gpt-4o-mini", "hello").to_string(),
    );
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.header("retry-after"), Some("1"));
    // The x-ratelimit-* headers a client sees are the gateway's limits for it (llm_auth), never the
    // provider account's.
    assert_ne!(limited.header("x-ratelimit-limit-requests"), Some("500"));
    assert_eq!(limited.json()["error"]["type"], "rate_limit_error");
    let requests_4xx = demo
        .envoy
        .prometheus_value(r#"llm_requests_total{consumer="team-a",model="gpt-4o-mini",provider="openai",status_class="4xx"}"#);
    assert_eq!(requests_4xx, Some(1.0));
    assert_eq!(
        series(&demo, "llm_output_tokens_total", "gpt-4o-mini", "openai"),
        0.0
    );
    assert_eq!(
        series(&demo, "llm_cost_nanousd_total", "gpt-4o-mini", "openai"),
        0.0
    );

    let prompt = "word ".repeat(800); // streamed a few words an event
    let mut body = ask("gpt-4o-mini", &prompt);
    body["stream"] = json!(true);
    let cut = post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &[
            ("authorization", "Bearer sk-demo-team-a"),
            ("x-mock-stream-error-after", "3"),
        ],
        &body.to_string(),
    );
    assert_eq!(cut.status, 200);
    let delivered = http::sse_text(&cut.body).chars().count();
    assert!(delivered > 0 && delivered < 4000, "delivered {delivered}");
    let output = series(&demo, "llm_output_tokens_total", "gpt-4o-mini", "openai");
    assert!(
        output >= (delivered as f64 / 4.0).ceil(),
        "{output} output tokens for {delivered} characters delivered"
    );
    assert_eq!(
        series(&demo, "llm_estimated_usage_total", "gpt-4o-mini", "openai"),
        1.0
    );
}

/// A compressed stream is not held back: each event reaches the client as it comes (the compressor
/// flushes every chunk), so the first content decodes while the provider is still writing.
#[test]
fn compressed_streams_arrive_event_by_event() {
    require_envoy!();
    let demo = Demo::start();
    let mut body = ask(
        "gpt-4o-mini",
        "one two three four five six seven eight nine ten",
    );
    body["stream"] = json!(true);
    let mut exchange = RawExchange::send(
        &demo,
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer sk-demo-team-a"),
            ("accept-encoding", "gzip"),
            ("x-mock-chunk-delay-ms", "150"),
        ],
        &body.to_string(),
    );
    let mut first_content_while_streaming = false;
    while exchange.read_more() {
        let (bytes, done) = exchange.body();
        let text = gunzip_so_far(&bytes);
        if text.contains("\"content\":\"") && !text.contains("[DONE]") && !done {
            first_content_while_streaming = true;
            break;
        }
    }
    assert_eq!(exchange.header("content-encoding").as_deref(), Some("gzip"));
    assert!(
        first_content_while_streaming,
        "the first event only decoded with the end of the stream: the compressor buffered it"
    );
    while exchange.read_more() {}
    let text = gunzip_so_far(&exchange.body().0);
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}
