//! Global limits across two Envoy replicas, each asking its own instance of the bundled rate-limit
//! service (llm-ratelimit), both instances counting in one real Redis: request limits, token limits
//! charged on one replica and enforced on the other, and Redis or the services going away mid-test.

use integration::http::{self, post_json};
use integration::{
    add_grpc_cluster, require_envoy, set_filter_config, Demo, Envoy, EnvoyOptions,
    RateLimitService, Redis,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TEAM_A_DIGEST: &str = "50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e";
const TINY_DIGEST: &str = "893f74a20440edb553081b44356004410d389628c6cece575472262a851b7b3d";
const REQUEST_LIMIT: usize = 10;
const TOKEN_LIMIT: u64 = 100;

/// Two replicas of the demo whose team-a request limit and tiny token limit are global. Replica a
/// asks service instance 0, replica b instance 1: every count crosses both instances.
struct Replicas {
    a: Demo,
    b: Envoy,
    services: [RateLimitService; 2],
    redis: Redis,
}

fn start() -> Replicas {
    start_with_usage(json!({
        "prices": [{"model": "*", "input": 1, "output": 2}],
        "limits": [{"consumer": "tiny", "tokens_per_minute": TOKEN_LIMIT, "scope": "global"}],
        "rate_limit_service": {"cluster": "ratelimit", "timeout_ms": 500}
    }))
}

fn start_with_usage(usage: Value) -> Replicas {
    let redis = Redis::start();
    let services = [
        RateLimitService::start(&redis),
        RateLimitService::start(&redis),
    ];
    let auth = json!({
        "consumers": [
            {"name": "team-a", "keys": [{"sha256": TEAM_A_DIGEST}],
             "rate_limit": {"requests": REQUEST_LIMIT, "window_seconds": 60, "scope": "global"}},
            {"name": "tiny", "keys": [{"sha256": TINY_DIGEST}]}
        ],
        "rate_limit_service": {"cluster": "ratelimit", "timeout_ms": 500}
    });
    let ports = [services[0].port(), services[1].port()];
    let a = Demo::start_with(|config| {
        let config = add_grpc_cluster(&config, "ratelimit", ports[0]);
        let config = set_filter_config(&config, "llm_auth", &auth.to_string());
        set_filter_config(&config, "llm_usage", &usage.to_string())
    });
    let b_config = a.config.replacen(
        &format!("port_value: {} }}", ports[0]),
        &format!("port_value: {} }}", ports[1]),
        1,
    );
    assert_ne!(
        b_config, a.config,
        "replica b's service port was not replaced"
    );
    let b = Envoy::start(&b_config, &EnvoyOptions::default());
    // The service counts in fixed windows aligned to the minute (Redis's clock, this machine's):
    // requests straddling a boundary would see two windows' worth admitted.
    integration::away_from_window_end(Duration::from_secs(60), Duration::from_secs(30));
    Replicas {
        a,
        b,
        services,
        redis,
    }
}

fn chat(envoy: &Envoy, key: &str, body: &Value) -> http::Response {
    post_json(
        &envoy.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {key}"))],
        &body.to_string(),
    )
}

fn ask(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

/// Retries `attempt` until it returns true or `within` passes.
fn eventually(within: Duration, mut attempt: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if attempt() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_request_limit_admits_exactly_its_limit_across_both_replicas() {
    require_envoy!();
    let r = start();
    let urls = [r.a.envoy.url(""), r.b.url("")];
    // 40 concurrent requests, alternating replicas (and so service instances), from 8 threads.
    let statuses: Vec<(usize, u16, http::Response)> = http::concurrently(8, 5, |client, t, i| {
        let replica = (t + i) % 2;
        let response = client.post_json(
            &format!("{}/v1/chat/completions", urls[replica]),
            &[("authorization", "Bearer sk-demo-team-a")],
            &ask("hi").to_string(),
        );
        (replica, response.status, response)
    });
    let admitted = statuses.iter().filter(|(_, s, _)| *s == 200).count();
    let limited: Vec<_> = statuses.iter().filter(|(_, s, _)| *s == 429).collect();
    assert_eq!(
        admitted,
        REQUEST_LIMIT,
        "statuses: {:?}",
        statuses.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    assert_eq!(limited.len(), 40 - REQUEST_LIMIT);
    for replica in [0, 1] {
        assert!(
            statuses.iter().any(|(r, s, _)| *r == replica && *s == 200),
            "replica {replica} admitted nothing: the test would not show sharing"
        );
    }
    let (_, _, refused) = limited[0];
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.header("x-ratelimit-limit-requests"), Some("10"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests"), Some("0"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "retry-after {retry}");
    // The provider saw exactly the admitted requests.
    assert_eq!(r.a.openai.requests().len(), REQUEST_LIMIT);
    let admitted_response = &statuses.iter().find(|(_, s, _)| *s == 200).unwrap().2;
    assert_eq!(
        admitted_response.header("x-ratelimit-limit-requests"),
        Some("10")
    );
}

#[test]
fn tokens_charged_through_one_replica_block_the_consumer_on_the_other() {
    require_envoy!();
    let r = start();
    // The mock's rule: ceil(chars / 4) tokens, the reply echoes the prompt.
    assert_eq!(chat(&r.b, "sk-demo-tiny", &ask("hello")).status, 200);
    // ~150 tokens in and out, streamed: the report is sent when the stream ends.
    let mut big = ask(&"word ".repeat(120));
    big["stream"] = json!(true);
    let streamed = chat(&r.a.envoy, "sk-demo-tiny", &big);
    assert_eq!(streamed.status, 200, "{}", streamed.body);
    assert!(streamed.body.contains("[DONE]"));
    // The report reaches the service within ~50 ms. At most 5 small requests on b: far too few
    // (about 6 tokens each) to spend b's limit by themselves, so only the shared count can block them.
    let mut last = None;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(300));
        let response = chat(&r.b, "sk-demo-tiny", &ask("hi"));
        let status = response.status;
        last = Some(response);
        if status == 429 {
            break;
        }
    }
    let last = last.unwrap();
    assert_eq!(last.status, 429, "replica b still admits: {}", last.body);
    let error = &last.json()["error"];
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Token rate limit reached for consumer `tiny`: 100 tokens per minute"),
        "{error}"
    );
    assert_eq!(last.header("x-ratelimit-limit-tokens"), Some("100"));
    // And on replica a too: it is one count.
    assert_eq!(
        chat(&r.a.envoy, "sk-demo-tiny", &ask("and here")).status,
        429
    );
    // team-a has no token limit: unaffected.
    assert_eq!(chat(&r.b, "sk-demo-team-a", &ask("hi")).status, 200);
}

#[test]
fn redis_outage_fails_closed_for_request_limits_and_open_for_token_limits_then_recovers() {
    require_envoy!();
    let mut r = start();
    assert_eq!(chat(&r.a.envoy, "sk-demo-team-a", &ask("hi")).status, 200);
    assert_eq!(chat(&r.b, "sk-demo-tiny", &ask("hi")).status, 200);

    r.redis.stop();
    let started = Instant::now();
    let closed = chat(&r.a.envoy, "sk-demo-team-a", &ask("hi"));
    assert_eq!(closed.status, 503, "{}", closed.body);
    assert_eq!(closed.json()["error"]["type"], "server_error");
    assert!(closed.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("could not check your rate limit"));
    let open = chat(&r.b, "sk-demo-tiny", &ask("hi"));
    assert_eq!(
        open.status, 200,
        "budgets and token limits fail open: {}",
        open.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an outage must not hang requests"
    );
    let stat = |envoy: &Envoy, series: &str| envoy.prometheus_value(series).unwrap_or(0.0);
    assert!(
        stat(
            &r.a.envoy,
            r#"llm_global_limit_errors_total{filter="auth",action="deny"}"#
        ) >= 1.0,
        "{}",
        r.a.envoy.prometheus()
    );
    assert!(
        stat(
            &r.b,
            r#"llm_global_limit_errors_total{filter="usage",action="allow"}"#
        ) >= 1.0
    );
    assert!(r.a.envoy.log().contains("rate-limit service unavailable"));

    r.redis.restart();
    let recovered = eventually(Duration::from_secs(10), || {
        chat(&r.a.envoy, "sk-demo-team-a", &ask("hi")).status == 200
    });
    assert!(recovered, "team-a still refused after Redis came back");
    // Counting works again: the fresh Redis starts from zero, so the limit admits REQUEST_LIMIT - 1 more.
    let mut admitted = 1;
    while chat(&r.b, "sk-demo-team-a", &ask("hi")).status == 200 {
        admitted += 1;
        assert!(admitted <= REQUEST_LIMIT, "the limit no longer holds");
    }
    assert_eq!(admitted, REQUEST_LIMIT);

    // The services themselves gone: the same policy, still within the timeout.
    for service in &r.services {
        let _ = std::process::Command::new("kill")
            .args(["-9", &service.pid().to_string()])
            .status();
    }
    let started = Instant::now();
    assert_eq!(chat(&r.a.envoy, "sk-demo-team-a", &ask("hi")).status, 503);
    assert_eq!(chat(&r.a.envoy, "sk-demo-tiny", &ask("hi")).status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// With a service that takes refunds (`refunds: true`; llm-ratelimit honours `is_negative_hits`),
/// a global token limit reserves each request's estimate at admission, across replicas: of four
/// concurrent ~1,100-token requests against 2,000 tokens a minute only one fits, and the unused part
/// of its reservation comes back, so the count ends exact.
#[test]
fn global_reservations_hold_across_replicas_and_settle_exactly() {
    require_envoy!();
    let r = start_with_usage(json!({
        "limits": [{"consumer": "tiny", "tokens_per_minute": 2000, "scope": "global"}],
        "rate_limit_service": {"cluster": "ratelimit", "timeout_ms": 500, "refunds": true}
    }));
    let urls = [r.a.envoy.url(""), r.b.url("")];
    let mut big = ask(&"w".repeat(2200)); // 550 tokens in and out
    big["max_tokens"] = json!(550);
    let statuses: Vec<u16> = http::concurrently(4, 1, |client, t, _| {
        client
            .post_json(
                &format!("{}/v1/chat/completions", urls[t % 2]),
                &[
                    ("authorization", "Bearer sk-demo-tiny"),
                    ("x-mock-delay-ms", "1000"),
                ],
                &big.to_string(),
            )
            .status
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    // 1,100 tokens used; the refused requests' reservations and the unused 23 or so came back. A
    // request reserving ~920 more does not fit (2,020 > 2,000), one reserving ~820 does.
    let fits = |max_tokens: u64| {
        let mut body = ask("x");
        body["max_tokens"] = json!(max_tokens);
        body
    };
    let mut settled = false;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        if chat(&r.b, "sk-demo-tiny", &fits(1)).status == 200 {
            settled = true;
            break;
        }
    }
    assert!(settled, "the refused reservations were not given back");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chat(&r.a.envoy, "sk-demo-tiny", &fits(900)).status, 429);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(chat(&r.b, "sk-demo-tiny", &fits(800)).status, 200);
}
