//! Envoy CPU per request of llm_guard's local checks inside llm_gateway (one Wasm module) and inside
//! the native module: a clean 2 KB chat request through router, guard and usage against the same
//! chain without the guard. The guard runs as the demo configures it, without remote checks: the
//! injection detector, structural limits and a deny pattern.
//!
//! One Envoy worker, one keep-alive client sending sequential requests, the mock provider upstream.
//! CPU comes from the Envoy process's per-thread schedstat. Rounds are interleaved; medians are
//! reported. Usage: guard-cost [rounds] [requests-per-round]

use integration::{to_native, Envoy, EnvoyOptions, MockProvider};
use llm_bench::{chat_body, envoy_config, measure_requests, median, ROUTER_CONFIG};

const USAGE: &str = r#"{"prices":[{"model":"*","input":1,"output":1}]}"#;
const GUARD: &str = r#"{"defaults":{"injection":{"action":"block","threshold":1.0},"limits":{"max_messages":256,"max_total_chars":400000,"max_tools":128},"deny":[{"name":"internal_host","pattern":"(?i)\\b[a-z0-9-]+\\.corp\\.internal\\b"}]}}"#;

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
    let without = format!(r#"{{"router":{ROUTER_CONFIG},"usage":{USAGE}}}"#);
    let with = format!(r#"{{"router":{ROUTER_CONFIG},"guard":{GUARD},"usage":{USAGE}}}"#);
    let body = chat_body("gpt-4o-mini", 2 * 1024);
    println!("| 2 KB chat request | Envoy CPU µs/request | wall µs/request | added by the guard |");
    println!("|---|---|---|---|");
    let mut summary = Vec::new();
    for (packaging, native) in [("llm_gateway.wasm", false), ("libllm_gateway.so", true)] {
        let plain = gateway(&without, native);
        let guarded = gateway(&with, native);
        let (mut cpu, mut wall) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..rounds {
            for (i, envoy) in [&plain, &guarded].into_iter().enumerate() {
                let (c, w) = measure_requests(envoy, requests, &mut || body.clone());
                cpu[i].push(c);
                wall[i].push(w);
            }
        }
        let c = [median(&mut cpu[0]), median(&mut cpu[1])];
        let w = [median(&mut wall[0]), median(&mut wall[1])];
        println!(
            "| {packaging} (router, usage) | {:.1} | {:.1} | |",
            c[0], w[0]
        );
        println!(
            "| {packaging} (router, guard, usage) | {:.1} | {:.1} | {:+.1} µs |",
            c[1],
            w[1],
            c[1] - c[0]
        );
        summary.push((packaging, c[1] - c[0]));
    }
    println!();
    for (packaging, added) in summary {
        println!("{packaging}: the guard's local checks add {added:.0} µs of Envoy CPU to a clean 2 KB request.");
    }
}
