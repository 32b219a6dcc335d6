//! The added latency of a global request limit: llm_auth alone with a local limit vs the same limit
//! counted by the reference rate-limit service (llm-ratelimit over Redis), one Envoy worker, one
//! keep-alive client sending sequential 2 KB chat requests. Rounds are interleaved; medians reported.
//! Usage: global-check [rounds] [requests-per-round]

use integration::http::Client;
use integration::{add_grpc_cluster, Envoy, EnvoyOptions, MockProvider, RateLimitService, Redis};
use llm_bench::{chat_body, envoy_config, median, process_cpu_ns};
use std::time::Instant;

const KEY: &str = "sk-bench";

fn auth_config(scope: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"{{"consumers":[{{"name":"bench","keys":[{{"sha256":"{digest}"}}],"rate_limit":{{"requests":100000000,"window_seconds":60,"scope":"{scope}"}}}}],"rate_limit_service":{{"cluster":"ratelimit","timeout_ms":1000}}}}"#
    )
}

/// (Envoy CPU µs, wall µs, p99 wall µs) per request.
fn measure(envoy: &Envoy, body: &str, requests: usize) -> (f64, f64, f64) {
    let client = Client::default();
    let url = envoy.url("/v1/chat/completions");
    let headers = [("authorization", "Bearer sk-bench")];
    for _ in 0..50 {
        client.post_json(&url, &headers, body);
    }
    let cpu_before = process_cpu_ns(envoy.pid());
    let mut walls = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let response = client.post_json(&url, &headers, body);
        walls.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let cpu = (process_cpu_ns(envoy.pid()) - cpu_before) as f64 / 1e3 / requests as f64;
    walls.sort_by(f64::total_cmp);
    let p99 = walls[(walls.len() * 99 / 100).min(walls.len() - 1)];
    (cpu, median(&mut walls), p99)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let mock = MockProvider::start("bench", &["--api", "openai", "--max-recorded", "0"]);
    let redis = Redis::start();
    let service = RateLimitService::start(&redis);
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warning",
        ..EnvoyOptions::default()
    };
    let start = |scope: &str| {
        let config = envoy_config(Some(("llm_auth", &auth_config(scope))), mock.port());
        Envoy::start(
            &add_grpc_cluster(&config, "ratelimit", service.port()),
            &options,
        )
    };
    let variants = [
        ("local limit", start("local")),
        ("global limit", start("global")),
    ];
    let body = chat_body("gpt-4o-mini", 2 * 1024);
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, envoy)) in variants.iter().enumerate() {
            results[i].push(measure(envoy, &body, requests));
        }
    }
    let summary: Vec<(f64, f64, f64)> = results
        .iter_mut()
        .map(|r| {
            let mut cpu: Vec<f64> = r.iter().map(|m| m.0).collect();
            let mut wall: Vec<f64> = r.iter().map(|m| m.1).collect();
            let mut p99: Vec<f64> = r.iter().map(|m| m.2).collect();
            (median(&mut cpu), median(&mut wall), median(&mut p99))
        })
        .collect();
    println!(
        "global check added latency: {:+.0} µs median per request ({:+.0} µs p99)\n",
        summary[1].1 - summary[0].1,
        summary[1].2 - summary[0].2
    );
    println!("| llm_auth with | Envoy CPU µs/request | wall µs/request (median) | wall p99 µs |");
    println!("|---|---|---|---|");
    for ((name, _), (cpu, wall, p99)) in variants.iter().zip(&summary) {
        println!("| {name} | {cpu:.1} | {wall:.1} | {p99:.1} |");
    }
    println!(
        "\n{rounds} interleaved rounds of {requests} sequential requests; the service (llm-ratelimit, \
         Redis on loopback) runs on the same machine: its own CPU is not in the Envoy column."
    );
}
