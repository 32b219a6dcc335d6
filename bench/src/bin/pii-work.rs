//! One `mask_request` per named body, for instruction counts under callgrind (deterministic where
//! timings on a shared machine are not): `valgrind --tool=callgrind target/release/pii-work mixed_1MB`.
//! A second argument: how many scans (default 1).
//! Bodies: clean_2KB, with_pii_2KB, clean_200KB, with_pii_200KB, values_100_200KB, ipv4_62KB, mixed_1MB.
use llm_bench::{chat_body, chat_body_with_pii, chat_body_with_pii_values, PII_CONFIG};
use llm_core::api::ApiFlavor;
use llm_core::pii::{Pii, PiiConfig, Vault};

fn chat(text: String) -> String {
    serde_json::json!({"model": "m", "messages": [{"role": "user", "content": text}]}).to_string()
}

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let body = match name.as_str() {
        "clean_2KB" => chat_body("gpt-4o-mini", 2 * 1024),
        "with_pii_2KB" => chat_body_with_pii("gpt-4o-mini", 2 * 1024),
        "clean_200KB" => chat_body("gpt-4o-mini", 200 * 1024),
        "with_pii_200KB" => chat_body_with_pii("gpt-4o-mini", 200 * 1024),
        "values_100_200KB" => chat_body_with_pii_values("gpt-4o-mini", 200 * 1024, 100),
        "ipv4_62KB" => chat(
            (0..5700u32)
                .map(|i| format!("10.{}.{}.{} ", i >> 16, (i >> 8) & 255, i & 255))
                .collect(),
        ),
        "mixed_1MB" => {
            let unit = "mail a.b@example.com or 10.0.0.1, card 4111 1111 1111 1111, call +1 415 555 2671; ";
            chat(unit.repeat(1024 * 1024 / unit.len()))
        }
        other => panic!("unknown body {other:?}"),
    };
    let config = r#"{"entities":{"secret":"mask"},"limits":{"max_findings":10000000,"max_scan_bytes":100000000}}"#;
    let _ = PII_CONFIG;
    let pii = Pii::compile(serde_json::from_str::<PiiConfig>(config).unwrap()).unwrap();
    // A first scan builds the regex engines' lazy state; the count of interest is the steady one:
    // subtract a run with `1` from a run with `11` and divide by 10.
    let runs: usize = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let mut outcome = None;
    for _ in 0..runs {
        let mut vault = Vault::default();
        outcome = Some(pii.mask_request(
            ApiFlavor::OpenAi,
            "/v1/chat/completions",
            body.as_bytes(),
            &mut vault,
        ));
    }
    let Some((masked, findings)) = outcome else {
        return;
    };
    println!(
        "{name}: {} bytes, {} findings, changed: {}",
        body.len(),
        findings.total,
        !matches!(masked, llm_core::pii::Masked::Unchanged)
    );
}
