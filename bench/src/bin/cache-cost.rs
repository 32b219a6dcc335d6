//! Envoy CPU per request of llm_cache inside llm_gateway (one Wasm module) and inside the native
//! module: a 2 KB miss against the same chain without the cache, and a hit against a full miss
//! through the chain.
//!
//! One Envoy worker, one keep-alive client sending sequential requests, the mock provider upstream.
//! A miss sends a different prompt each time (same size); a hit repeats one. CPU comes from the Envoy
//! process's per-thread schedstat. Rounds are interleaved; medians are reported.
//! Usage: cache-cost [rounds] [requests-per-round]

use integration::{to_native, Envoy, EnvoyOptions, MockProvider};
use llm_bench::{chat_body, envoy_config, measure_requests, median, ROUTER_CONFIG};

const USAGE: &str = r#"{"prices":[{"model":"*","input":1,"output":1}]}"#;
const CACHE: &str = r#"{"models":{"gpt-4o-mini":{"enabled":true,"ttl_seconds":3600}},"max_entries":100000,"max_bytes":1073741824}"#;

/// The 2 KB request, its prompt made unique by `n` (every body has the same length).
fn body(template: &str, n: u64) -> String {
    template.replacen(
        "What is the capital of France?",
        &format!("What is the capital of France? {n:010}"),
        1,
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mock = MockProvider::start("bench", &["--api", "openai", "--max-recorded", "0"]);
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warning",
        ..EnvoyOptions::default()
    };
    let gateway = |sections: &str, native: bool| {
        let mut config = envoy_config(Some(("llm_gateway", sections)), mock.port());
        if native {
            config = to_native(&config);
        }
        Envoy::start(&config, &options)
    };
    let without_sections = format!(r#"{{"router":{ROUTER_CONFIG},"usage":{USAGE}}}"#);
    let with_sections = format!(r#"{{"router":{ROUTER_CONFIG},"cache":{CACHE},"usage":{USAGE}}}"#);
    let template = chat_body("gpt-4o-mini", 2 * 1024);
    let mut counter = 0u64;
    let mut unique = || {
        counter += 1;
        body(&template, counter)
    };
    let repeated = body(&template, 0);
    println!("| 2 KB chat request | Envoy CPU µs/request | wall µs/request | vs the chain without the cache |");
    println!("|---|---|---|---|");
    let mut summary = Vec::new();
    for (packaging, native) in [("llm_gateway.wasm", false), ("libllm_gateway.so", true)] {
        let without = gateway(&without_sections, native);
        let with = gateway(&with_sections, native);
        let mut rows: Vec<(String, Vec<f64>, Vec<f64>)> = [
            "router, usage: every prompt new",
            "router, cache, usage: miss (every prompt new)",
            "router, cache, usage: hit (one prompt repeated)",
        ]
        .iter()
        .map(|name| (format!("{packaging} ({name})"), Vec::new(), Vec::new()))
        .collect();
        for _ in 0..rounds {
            let results = [
                measure_requests(&without, requests, &mut unique),
                measure_requests(&with, requests, &mut unique),
                measure_requests(&with, requests, &mut || repeated.clone()),
            ];
            for (row, (cpu, wall)) in rows.iter_mut().zip(results) {
                row.1.push(cpu);
                row.2.push(wall);
            }
        }
        let medians: Vec<(f64, f64)> = rows
            .iter_mut()
            .map(|(_, cpu, wall)| (median(cpu), median(wall)))
            .collect();
        for ((name, _, _), (cpu, wall)) in rows.iter().zip(&medians) {
            println!(
                "| {name} | {cpu:.1} | {wall:.1} | {:+.1} µs |",
                cpu - medians[0].0
            );
        }
        summary.push((packaging, medians));
    }
    println!();
    for (packaging, medians) in summary {
        println!(
            "{packaging}: a miss adds {:.0} µs of Envoy CPU to the chain; a hit costs {:.0}% of a miss's Envoy CPU ({:.1} vs {:.1} µs) and {:.0}% of its wall time (the mock answers in microseconds, a real provider in seconds).",
            medians[1].0 - medians[0].0,
            100.0 * medians[2].0 / medians[1].0,
            medians[2].0,
            medians[1].0,
            100.0 * medians[2].1 / medians[1].1
        );
    }
}
