//! Micro-benchmarks of llm-core hot paths. Run with `make bench` (or `cargo bench -p llm-bench`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use llm_bench::{chat_body, ROUTER_CONFIG};
use llm_core::api::ApiFlavor;
use llm_core::config::parse;
use llm_core::router::{Router, RouterConfig};
use std::hint::black_box;

fn router_body(c: &mut Criterion) {
    let router = Router::compile(parse::<RouterConfig>(ROUTER_CONFIG.as_bytes()).unwrap()).unwrap();
    let no_sticky = |_: &str| None;
    let mut group = c.benchmark_group("router_on_body");
    for (label, size) in [("2KB", 2 * 1024), ("200KB", 200 * 1024)] {
        for model in ["gpt-4o-mini", "fast"] {
            let body = chat_body(model, size);
            group.throughput(Throughput::Bytes(body.len() as u64));
            let id = BenchmarkId::new(
                if model == "fast" {
                    "alias_rewrite"
                } else {
                    "no_rewrite"
                },
                label,
            );
            group.bench_with_input(id, body.as_bytes(), |b, body| {
                b.iter(|| {
                    router
                        .on_body(ApiFlavor::OpenAi, black_box(body), &no_sticky, "req-1")
                        .unwrap()
                })
            });
        }
        // What a full DOM parse of the same body would cost, for comparison.
        let body = chat_body("gpt-4o-mini", size);
        group.bench_with_input(
            BenchmarkId::new("serde_json_value_dom", label),
            body.as_bytes(),
            |b, body| {
                b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(body)).unwrap())
            },
        );
    }
    group.finish();
}

criterion_group!(benches, router_body);
criterion_main!(benches);
