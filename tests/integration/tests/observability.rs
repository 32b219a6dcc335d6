//! The Grafana dashboard only queries metrics that the filters really emit (checked on a live Envoy).

use integration::http::{self, post_json};
use integration::{repo_root, require_envoy, Demo};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn metric_names(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("llm_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_dashboard_metric_is_emitted() {
    require_envoy!();
    let text =
        std::fs::read_to_string(repo_root().join("examples/observability/grafana-dashboard.json"))
            .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let names = metric_names(&dashboard);
    assert!(names.len() >= 10, "{names:?}");

    let demo = Demo::start_fresh(); // sk-demo-tiny's limit windows: none spent by an earlier test
    let url = demo.envoy.url("/v1/chat/completions");
    let chat = |key: &str, body: Value, extra: &[(&str, &str)]| {
        let auth = format!("Bearer {key}");
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        post_json(&url, &headers, &body.to_string())
    };
    let ask = |model: &str, content: &str| json!({"model": model, "messages": [{"role": "user", "content": content}]});
    // Traffic that makes every filter report: PII, failover, translation, estimation, rejections.
    assert_eq!(
        chat(
            "sk-demo-team-a",
            ask("gpt-4o", "mail jane@example.com"),
            &[]
        )
        .status,
        200
    );
    assert_eq!(
        chat(
            "sk-demo-team-a",
            ask("gpt-4o-mini", "no usage"),
            &[("x-mock-no-usage", "1")]
        )
        .status,
        200
    );
    assert_eq!(chat("sk-wrong", ask("gpt-4o-mini", "x"), &[]).status, 401);
    assert_eq!(
        chat("sk-demo-team-a", ask("no-such-model", "x"), &[]).status,
        404
    );
    assert_eq!(
        chat("sk-demo-tiny", ask("gpt-4o-mini", &"t".repeat(8400)), &[]).status,
        200
    );
    assert_eq!(
        chat("sk-demo-tiny", ask("gpt-4o-mini", "again"), &[]).status,
        429
    );
    let _ = http::get(
        &demo.envoy.url("/v1/models"),
        &[("authorization", "Bearer sk-demo-team-a")],
    );

    // Histograms appear after the stats flush.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let prometheus = demo.envoy.prometheus();
        let missing: Vec<&String> = names
            .iter()
            .filter(|name| !prometheus.lines().any(|l| l.starts_with(name.as_str())))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard queries metrics nobody emits: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
