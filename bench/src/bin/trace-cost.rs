//! What OpenTelemetry tracing adds to a request's Envoy CPU and latency: the demo gateway (llm_auth,
//! llm_router, llm_pii, llm_usage, llm_provider; the Wasm modules) without tracing, with tracing at
//! 100 % and 1 % sampling, with the OpenTelemetry access log too, and with a collector that is down
//! or slow. Spans go to the test OTLP/gRPC receiver (tests/otel/collector.py) in batches of 100
//! spans as llm-config configures Envoy (and, for comparison, Envoy's default of 5).
//!
//! One Envoy worker, one keep-alive client sending sequential 2 KB chat requests. Rounds are
//! interleaved and the median is reported. Usage: trace-cost [rounds] [requests-per-round]

use integration::http::Client;
use integration::{Demo, EnvoyOptions, OtlpCollector};
use llm_bench::{chat_body, median, process_cpu_ns};
use llm_config::tracing::{self, add_tracing, Tracing};

const TEAM_A: (&str, &str) = ("authorization", "Bearer sk-demo-team-a");

/// The demo without the request-rate limit in the way of a benchmark.
fn unlimited(config: String) -> String {
    config.replace(
        r#""rate_limit": {"requests": 1000, "window_seconds": 60}"#,
        r#""rate_limit": {"requests": 1000000000, "window_seconds": 60}"#,
    )
}

/// Envoy CPU and wall time per request (µs) of `requests` sequential keep-alive requests.
fn measure(demo: &Demo, body: &str, requests: usize) -> (f64, f64) {
    let client = Client::default();
    let url = demo.envoy.url("/v1/chat/completions");
    for _ in 0..20 {
        client.post_json(&url, &[TEAM_A], body);
    }
    let cpu_before = process_cpu_ns(demo.envoy.pid());
    let started = std::time::Instant::now();
    for _ in 0..requests {
        let response = client.post_json(&url, &[TEAM_A], body);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let wall = started.elapsed().as_secs_f64() * 1e6 / requests as f64;
    let cpu = (process_cpu_ns(demo.envoy.pid()) - cpu_before) as f64 / 1e3 / requests as f64;
    (cpu, wall)
}

fn traced(port: u16, sampling_percent: f64, access_log: bool) -> impl FnOnce(String) -> String {
    move |config: String| {
        let tracing = Tracing {
            cluster: "otel_collector".into(),
            service_name: "llm-gateway-bench".into(),
            sampling_percent,
            access_log,
        };
        add_tracing(&unlimited(config), &tracing, port).expect("tracing added")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let collector = OtlpCollector::start(&[]);
    let slow = OtlpCollector::start(&["--delay-ms", "2000"]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let collector_port = collector.port;
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "error",
        fresh: true,
        ..EnvoyOptions::default()
    };
    // As llm-config generates it: batches of 100 spans (its `layered_runtime`), unless `default`.
    let batched = |edit: Box<dyn FnOnce(String) -> String>| {
        move |config: String| format!("{}\n{}", edit(config), tracing::RUNTIME)
    };
    let variants: Vec<(&str, Demo)> = vec![
        ("no tracing", Demo::start_with_options(unlimited, &options)),
        (
            "tracing 100 %, Envoy's default batches (5 spans)",
            Demo::start_with_options(traced(collector.port, 100.0, false), &options),
        ),
        (
            "tracing 100 %",
            Demo::start_with_options(
                batched(Box::new(traced(collector.port, 100.0, false))),
                &options,
            ),
        ),
        (
            "tracing 100 %, without the 26 custom tags",
            Demo::start_with_options(
                batched(Box::new(move |config: String| {
                    let config = traced(collector_port, 100.0, false)(config);
                    let start = config
                        .find("            custom_tags:\n")
                        .expect("custom tags");
                    let end = config[start..]
                        .find("          http_filters:")
                        .map_or(config.len(), |i| start + i);
                    let kept: String = config[start..end]
                        .lines()
                        .filter(|l| !l.contains("{ tag: ") && !l.contains("custom_tags:"))
                        .map(|l| format!("{l}\n"))
                        .collect();
                    format!("{}{kept}{}", &config[..start], &config[end..])
                })),
                &options,
            ),
        ),
        (
            "tracing 1 %",
            Demo::start_with_options(
                batched(Box::new(traced(collector.port, 1.0, false))),
                &options,
            ),
        ),
        (
            "tracing 100 % + OTel access log",
            Demo::start_with_options(
                batched(Box::new(traced(collector.port, 100.0, true))),
                &options,
            ),
        ),
        (
            "tracing 100 % + OTel access log, collector down",
            Demo::start_with_options(batched(Box::new(traced(dead, 100.0, true))), &options),
        ),
        (
            "tracing 100 % + OTel access log, collector answers in 2 s",
            Demo::start_with_options(batched(Box::new(traced(slow.port, 100.0, true))), &options),
        ),
    ];
    let body = chat_body("gpt-4o-mini", 2 * 1024);
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut wall: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, demo)) in variants.iter().enumerate() {
            let (c, w) = measure(demo, &body, requests);
            cpu[i].push(c);
            wall[i].push(w);
        }
    }
    let medians: Vec<(f64, f64)> = (0..variants.len())
        .map(|i| (median(&mut cpu[i]), median(&mut wall[i])))
        .collect();
    println!("| variant | Envoy CPU µs/request | wall µs/request | added CPU µs | added wall µs |");
    println!("|---|---|---|---|---|");
    for (i, (name, _)) in variants.iter().enumerate() {
        let (c, w) = medians[i];
        println!(
            "| {name} | {c:.1} | {w:.1} | {:+.1} | {:+.1} |",
            c - medians[0].0,
            w - medians[0].1
        );
    }
    let spans = collector
        .records()
        .iter()
        .filter(|r| r["signal"] == "span")
        .count();
    println!("\nspans received by the collector: {spans}");
}
