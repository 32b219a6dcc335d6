//! Envoy CPU per request with one filter vs bare Envoy, for 2 KB and 200 KB chat bodies: llm_router,
//! llm_pii, and (2 KB only) llm_auth and llm_usage.
//!
//! One Envoy worker, one keep-alive client sending sequential requests, the mock provider upstream.
//! CPU comes from the Envoy process's per-thread schedstat (ns). Rounds are interleaved and the median
//! is reported. Usage: envoy-cost [rounds] [requests-per-round-for-2KB]
//!
//! `LLM_PII_BASELINE_WASM=<path>` adds a variant "llm_pii baseline" with that module (e.g. built
//! from the previous commit), measured in the same rounds: a before/after figure from one run.

use integration::http::Client;
use integration::{Envoy, EnvoyOptions, MockProvider};
use llm_bench::{
    chat_body, chat_body_with_pii, chat_body_with_pii_values, envoy_config, median, process_cpu_ns,
    PII_CONFIG, ROUTER_CONFIG,
};
use std::time::Instant;

/// Every request carries a key; only llm_auth looks at it.
const AUTH: (&str, &str) = ("authorization", "Bearer sk-bench-key");

fn auth_config() -> String {
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(b"sk-bench-key"));
    format!(r#"{{"consumers":[{{"name":"bench","keys":[{{"sha256":"{digest}"}}]}}]}}"#)
}

const USAGE_CONFIG: &str = r#"{"prices":[{"model":"*","input":1,"output":1}]}"#;

struct Variant {
    name: &'static str,
    envoy: Envoy,
}

fn measure(envoy: &Envoy, body: &str, requests: usize) -> (f64, f64) {
    let client = Client::default();
    let url = envoy.url("/v1/chat/completions");
    for _ in 0..20 {
        client.post_json(&url, &[AUTH], body);
    }
    let cpu_before = process_cpu_ns(envoy.pid());
    let started = Instant::now();
    for _ in 0..requests {
        let response = client.post_json(&url, &[AUTH], body);
        assert_eq!(response.status, 200, "{}", response.body);
    }
    let wall = started.elapsed().as_secs_f64() * 1e6 / requests as f64;
    let cpu = (process_cpu_ns(envoy.pid()) - cpu_before) as f64 / 1e3 / requests as f64;
    (cpu, wall)
}

/// Which (body, request, variant) rows are worth measuring: the alias only matters to the router, PII
/// only to llm_pii; auth and usage do the same work whatever the prompt, so they get the plain 2 KB row.
fn relevant(label: &str, model: &str, variant: &str) -> bool {
    !matches!(
        (label, model, variant),
        (
            _,
            "fast",
            "bare Envoy" | "llm_pii" | "llm_pii baseline" | "llm_auth" | "llm_usage"
        ) | (
            _,
            "with PII" | "100 PII values",
            "llm_router" | "llm_auth" | "llm_usage"
        ) | ("2 KB", "100 PII values", _)
            | ("200 KB", _, "llm_auth" | "llm_usage")
    )
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let small_requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let mock = MockProvider::start("bench", &["--api", "openai", "--max-recorded", "0"]);
    let options = EnvoyOptions {
        concurrency: 1,
        log_level: "warning",
        ..EnvoyOptions::default()
    };
    let start = |filter: Option<(&str, &str)>| {
        let started = Instant::now();
        let envoy = Envoy::start(&envoy_config(filter, mock.port()), &options);
        (envoy, started.elapsed())
    };
    let (bare, bare_ready) = start(None);
    let (router, router_ready) = start(Some(("llm_router", ROUTER_CONFIG)));
    let (pii, pii_ready) = start(Some(("llm_pii", PII_CONFIG)));
    let auth_json = auth_config();
    let (auth, _) = start(Some(("llm_auth", &auth_json)));
    let (usage, _) = start(Some(("llm_usage", USAGE_CONFIG)));
    let baseline = std::env::var("LLM_PII_BASELINE_WASM").ok().map(|path| {
        let config = envoy_config(Some(("llm_pii", PII_CONFIG)), mock.port())
            .replace("target/wasm32-wasip1/release/llm_pii.wasm", &path);
        assert!(
            config.contains(&path),
            "LLM_PII_WASM and LLM_PII_BASELINE_WASM are exclusive"
        );
        Envoy::start(&config, &options)
    });
    println!(
        "Envoy start to /ready: bare {} ms, with llm_router {} ms, with llm_pii {} ms\n",
        bare_ready.as_millis(),
        router_ready.as_millis(),
        pii_ready.as_millis()
    );
    let mut variants = vec![
        Variant {
            name: "bare Envoy",
            envoy: bare,
        },
        Variant {
            name: "llm_router",
            envoy: router,
        },
        Variant {
            name: "llm_pii",
            envoy: pii,
        },
        Variant {
            name: "llm_auth",
            envoy: auth,
        },
        Variant {
            name: "llm_usage",
            envoy: usage,
        },
    ];
    if let Some(envoy) = baseline {
        variants.push(Variant {
            name: "llm_pii baseline",
            envoy,
        });
    }
    println!("| body | request | variant | Envoy CPU µs/request | wall µs/request | added CPU µs vs bare |");
    println!("|---|---|---|---|---|---|");
    for (label, size, requests) in [
        ("2 KB", 2 * 1024, small_requests),
        ("200 KB", 200 * 1024, small_requests / 10),
    ] {
        for model in ["gpt-4o-mini", "fast", "with PII", "100 PII values"] {
            if label == "2 KB" && model == "100 PII values" {
                continue;
            }
            let body = match model {
                "with PII" => chat_body_with_pii("gpt-4o-mini", size),
                "100 PII values" => chat_body_with_pii_values("gpt-4o-mini", size, 100),
                _ => chat_body(model, size),
            };
            let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
            let mut wall: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
            for _ in 0..rounds {
                for (i, variant) in variants.iter().enumerate() {
                    // Bare Envoy is always measured: it is the baseline of every row.
                    if i > 0 && !relevant(label, model, variant.name) {
                        continue;
                    }
                    let (c, w) = measure(&variant.envoy, &body, requests);
                    cpu[i].push(c);
                    wall[i].push(w);
                }
            }
            let medians: Vec<(f64, f64)> = (0..variants.len())
                .map(|i| (median(&mut cpu[i]), median(&mut wall[i])))
                .collect();
            for (i, variant) in variants.iter().enumerate() {
                if !relevant(label, model, variant.name) {
                    continue;
                }
                let (c, w) = medians[i];
                println!(
                    "| {label} | {model} | {} | {c:.1} | {w:.1} | {:+.1} |",
                    variant.name,
                    c - medians[0].0
                );
            }
        }
    }
}
