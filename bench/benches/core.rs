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

fn pii_scan(c: &mut Criterion) {
    use llm_bench::{chat_body_with_pii, PII_CONFIG};
    use llm_core::pii::{Pii, PiiConfig, Vault};
    let pii = Pii::compile(parse::<PiiConfig>(PII_CONFIG.as_bytes()).unwrap()).unwrap();
    let engine = if cfg!(feature = "regex") {
        "regex"
    } else {
        "regex-lite"
    };
    let mut group = c.benchmark_group(format!("pii_mask_request_{engine}"));
    for (label, size) in [("2KB", 2 * 1024), ("200KB", 200 * 1024)] {
        for (kind, body) in [
            ("clean", chat_body("gpt-4o-mini", size)),
            ("with_pii", chat_body_with_pii("gpt-4o-mini", size)),
        ] {
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new(kind, label), body.as_bytes(), |b, body| {
                b.iter(|| {
                    let mut vault = Vault::default();
                    pii.mask_request(
                        ApiFlavor::OpenAi,
                        "/v1/chat/completions",
                        black_box(body),
                        &mut vault,
                    )
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, router_body, pii_scan);
criterion_main!(benches);
