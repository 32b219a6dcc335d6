//! llm_cache in a real Envoy: what the client got, what reached the provider, and Envoy's stats.

use integration::http::{self, post_json, sse_text};
use integration::{require_envoy, set_filter_config, ChromaServer, Demo};
use serde_json::{json, Value};
use std::time::Duration;

const TEAM_A: (&str, &str) = ("authorization", "Bearer sk-demo-team-a");
const TEAM_B: (&str, &str) = ("authorization", "Bearer sk-demo-team-b");

fn ask(demo: &Demo, key: (&str, &str), extra: &[(&str, &str)], body: &Value) -> http::Response {
    let mut headers = vec![key];
    headers.extend_from_slice(extra);
    post_json(
        &demo.envoy.url("/v1/chat/completions"),
        &headers,
        &body.to_string(),
    )
}

fn prompt(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The chat requests a mock received (the semantic tier's embeddings calls left out).
fn chats(mock: &integration::MockProvider) -> usize {
    mock.requests()
        .iter()
        .filter(|r| r["path"] != "/v1/embeddings")
        .count()
}

/// Sends `count` different prompts (`template` with `{n}` numbered); each must be a 200 miss with
/// the provider's own answer.
fn all_answered_as_misses(demo: &Demo, template: &str, count: usize) {
    for n in 0..count {
        let text = template.replace("{n}", &n.to_string());
        let response = ask(demo, TEAM_A, &[], &prompt("gpt-4o-mini", &text));
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.header("x-llm-cache"), Some("miss"));
        assert_eq!(response.json()["choices"][0]["message"]["content"], text);
    }
}

/// A series' value (0 when absent); an unlabeled one is found with or without its empty `{}`.
fn counter(demo: &Demo, series: &str) -> f64 {
    demo.envoy
        .prometheus_value(series)
        .or_else(|| demo.envoy.prometheus_value(&format!("{series}{{}}")))
        .unwrap_or(0.0)
}

#[test]
fn a_repeated_request_is_served_from_the_cache_and_the_provider_sees_it_once() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    let body = prompt("gpt-4o-mini", "what is the capital of France?");
    let first = ask(&demo, TEAM_A, &[], &body);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-llm-cache"), Some("miss"));
    // Same question, keys in another order, a number spelled differently, a transport field added.
    let same = r#"{"messages":[{"content":"what is the capital of France?","role":"user"}],"model":"gpt-4o-mini","user":"u-17"}"#;
    let second = post_json(&demo.envoy.url("/v1/chat/completions"), &[TEAM_A], same);
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("x-llm-cache"), Some("hit"));
    assert!(second.header("age").is_some());
    let (a, b) = (first.json(), second.json());
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(a["usage"], b["usage"]);
    assert_ne!(a["id"], b["id"], "a replay gets a fresh id");
    // The alias resolves to the same model and shares the entry.
    let alias = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("fast", "what is the capital of France?"),
    );
    assert_eq!(alias.header("x-llm-cache"), Some("hit"));
    assert_eq!(chats(&demo.openai), 1, "the provider saw one request");

    let log = demo.envoy.access_log(3);
    let statuses: Vec<&str> = log
        .iter()
        .map(|e| e["cache"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["miss", "hit", "hit"]);
    // A hit never reaches llm_usage: no tokens are charged, and the access log has none.
    assert_eq!(log[1]["output_tokens"], Value::Null, "{:?}", log[1]);
    assert_eq!(
        counter(
            &demo,
            "llm_cache_hits_total{model=\"gpt-4o-mini\",kind=\"exact\"}"
        ),
        2.0,
        "{}",
        demo.envoy.prometheus()
    );
    assert_eq!(
        counter(&demo, "llm_cache_stores_total{model=\"gpt-4o-mini\"}"),
        1.0
    );
    // What the store holds, as gauges.
    assert_eq!(counter(&demo, "llm_cache_entries"), 1.0);
    assert!(counter(&demo, "llm_cache_bytes") > 0.0);
    assert!(
        counter(
            &demo,
            "llm_cache_saved_tokens_total{model=\"gpt-4o-mini\",kind=\"output\"}"
        ) > 0.0
    );
    assert_eq!(
        counter(
            &demo,
            "llm_output_tokens_total{consumer=\"team-a\",model=\"gpt-4o-mini\",provider=\"openai\"}"
        ),
        a["usage"]["completion_tokens"].as_f64().unwrap(),
        "only the miss was charged"
    );
}

#[test]
fn what_changes_the_answer_is_a_miss() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    let base = prompt("gpt-4o-mini", "tell me a fact");
    assert_eq!(
        ask(&demo, TEAM_A, &[], &base).header("x-llm-cache"),
        Some("miss")
    );
    let mut warmer = base.clone();
    warmer["temperature"] = json!(0.9);
    let mut tools = base.clone();
    tools["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    for (what, body, key) in [
        ("temperature", warmer, TEAM_A),
        ("tools", tools, TEAM_A),
        (
            "model",
            prompt("claude-sonnet-4-5", "tell me a fact"),
            TEAM_A,
        ),
        ("consumer", base.clone(), TEAM_B),
    ] {
        let response = ask(&demo, key, &[], &body);
        assert_eq!(response.status, 200, "{what}: {}", response.body);
        assert_eq!(response.header("x-llm-cache"), Some("miss"), "{what}");
    }
    // A model without caching in the demo is passed by (bypass) and never stored.
    let pool = ask(&demo, TEAM_A, &[], &prompt("gpt-4o", "tell me a fact"));
    assert_eq!(pool.header("x-llm-cache"), Some("bypass"));
    let again = ask(&demo, TEAM_A, &[], &prompt("gpt-4o", "tell me a fact"));
    assert_eq!(again.header("x-llm-cache"), Some("bypass"));
    // cache-control: no-store keeps the cache out; no-cache asks the provider and stores.
    let fresh = ask(&demo, TEAM_A, &[("cache-control", "no-cache")], &base);
    assert_eq!(fresh.header("x-llm-cache"), Some("bypass"));
    let skip = ask(&demo, TEAM_A, &[("cache-control", "no-store")], &base);
    assert_eq!(skip.header("x-llm-cache"), Some("bypass"));
    assert_eq!(
        ask(&demo, TEAM_A, &[], &base).header("x-llm-cache"),
        Some("hit")
    );
    // base, temperature, tools, team-b, no-cache and no-store; the last one was a hit.
    assert_eq!(chats(&demo.openai), 6);
}

#[test]
fn streams_are_stored_and_replayed_in_either_shape() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    let mut streamed = prompt("gpt-4o-mini", "stream this answer once");
    streamed["stream"] = json!(true);
    let first = ask(&demo, TEAM_A, &[], &streamed);
    assert_eq!(
        first.status,
        200,
        "{} {:?}",
        first.body,
        demo.openai.requests()
    );
    assert_eq!(first.header("x-llm-cache"), Some("miss"));
    assert_eq!(sse_text(&first.body), "stream this answer once");
    // The stored stream answers a JSON request...
    let json_hit = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "stream this answer once"),
    );
    assert_eq!(json_hit.header("x-llm-cache"), Some("hit"));
    assert_eq!(
        json_hit.json()["choices"][0]["message"]["content"],
        "stream this answer once"
    );
    // ...and a stream again, without the usage chunk the client did not ask for.
    let stream_hit = ask(&demo, TEAM_A, &[], &streamed);
    assert_eq!(stream_hit.header("x-llm-cache"), Some("hit"));
    assert_eq!(stream_hit.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse_text(&stream_hit.body), "stream this answer once");
    assert!(
        !stream_hit.body.contains("\"usage\""),
        "{}",
        stream_hit.body
    );
    assert!(stream_hit.body.ends_with("data: [DONE]\n\n"));
    assert_eq!(chats(&demo.openai), 1);

    // Anthropic Messages, JSON then stream.
    let messages = |stream: bool| {
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
               "messages": [{"role": "user", "content": "claude, once please"}]})
        .to_string()
    };
    let url = demo.envoy.url("/v1/messages");
    let key = [
        ("x-api-key", "sk-demo-team-a"),
        ("anthropic-version", "2023-06-01"),
    ];
    let miss = post_json(&url, &key, &messages(false));
    assert_eq!(miss.status, 200, "{}", miss.body);
    assert_eq!(miss.header("x-llm-cache"), Some("miss"));
    let hit = post_json(&url, &key, &messages(true));
    assert_eq!(hit.header("x-llm-cache"), Some("hit"));
    let events = http::sse_events(&hit.body);
    let names: Vec<&str> = events.iter().filter_map(|(n, _)| n.as_deref()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(chats(&demo.anthropic), 1);
}

#[test]
fn official_sdks_parse_streams_synthesised_from_stored_answers() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    let out = integration::run_sdk_script("cache_sdks.py", &demo, "sk-demo-team-a");
    assert!(
        out.contains("ok: anthropic: tool_use id, name and input"),
        "{out}"
    );
    // Each case reached its provider once: the repeats were hits.
    assert_eq!(chats(&demo.openai), 2);
    assert_eq!(chats(&demo.anthropic), 2);
}

#[test]
fn entries_expire_after_their_ttl() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| {
        let mut cache = integration::filter_config(&config, "llm_cache");
        // Long enough for the repeat to land inside it on a loaded machine (three suites run at once).
        cache["models"]["gpt-4o-mini"]["ttl_seconds"] = json!(3);
        set_filter_config(&config, "llm_cache", &cache.to_string())
    });
    let body = prompt("gpt-4o-mini", "short lived");
    assert_eq!(
        ask(&demo, TEAM_A, &[], &body).header("x-llm-cache"),
        Some("miss")
    );
    assert_eq!(
        ask(&demo, TEAM_A, &[], &body).header("x-llm-cache"),
        Some("hit")
    );
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(
        ask(&demo, TEAM_A, &[], &body).header("x-llm-cache"),
        Some("miss")
    );
    assert_eq!(chats(&demo.openai), 2);
}

#[test]
fn eviction_under_a_byte_limit_never_serves_another_prompts_answer() {
    require_envoy!();
    // Room for about ten answers; forty prompts stored and re-read from eight threads at once.
    let demo = Demo::start_with_cache(|config| {
        let mut cache = integration::filter_config(&config, "llm_cache");
        cache["max_entry_bytes"] = json!(1024);
        cache["max_bytes"] = json!(8192);
        cache["max_entries"] = json!(64);
        // Exact hits only: these prompts differ in one word, which the semantic tier may not tell.
        cache["models"]["gpt-4o-mini"]["semantic_threshold"] = json!(0);
        set_filter_config(&config, "llm_cache", &cache.to_string())
    });
    let url = demo.envoy.url("/v1/chat/completions");
    let results = http::concurrently(8, 15, |client, thread, i| {
        let n = (thread * 7 + i) % 40;
        let text = format!("prompt number {n} for the eviction test");
        let response = client.post_json(&url, &[TEAM_A], &prompt("gpt-4o-mini", &text).to_string());
        (
            text,
            response.status,
            response.json()["choices"][0]["message"]["content"].clone(),
            response.header("x-llm-cache").map(str::to_string),
        )
    });
    let mut hits = 0;
    for (text, status, content, cache) in &results {
        assert_eq!(*status, 200);
        assert_eq!(content, text, "an answer served for another prompt");
        hits += usize::from(cache.as_deref() == Some("hit"));
    }
    let evictions = counter(&demo, "llm_cache_evictions_total");
    assert!(evictions > 0.0, "{}", demo.envoy.prometheus());
    assert_eq!(chats(&demo.openai) + hits, results.len());
}

#[test]
fn fifty_identical_concurrent_requests_are_all_answered_and_none_is_coalesced() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    let url = demo.envoy.url("/v1/chat/completions");
    let body = prompt("gpt-4o-mini", "everyone asks this at once").to_string();
    let results = http::concurrently(10, 5, |client, _, _| {
        let r = client.post_json(&url, &[TEAM_A], &body);
        (
            r.status,
            r.json()["choices"][0]["message"]["content"].clone(),
        )
    });
    assert!(results
        .iter()
        .all(|(status, text)| *status == 200 && text == "everyone asks this at once"));
    // Requests that arrive before the first answer is stored all go to the provider (no
    // coalescing); the rest are hits. At least the first goes, at most all fifty.
    let sent = chats(&demo.openai);
    assert!((1..=50).contains(&sent), "{sent}");
    let hits = counter(
        &demo,
        "llm_cache_hits_total{model=\"gpt-4o-mini\",kind=\"exact\"}",
    ) + counter(
        &demo,
        "llm_cache_hits_total{model=\"gpt-4o-mini\",kind=\"semantic\"}",
    );
    assert_eq!(sent as f64 + hits, 50.0, "sent {sent}, hits {hits}");
}

#[test]
fn errors_are_never_stored() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    // The mock answers 400 to an empty message list; asked twice, the provider sees both.
    let bad = json!({"model": "gpt-4o-mini", "messages": []});
    for _ in 0..2 {
        let response = ask(&demo, TEAM_A, &[], &bad);
        assert_eq!(response.status, 400, "{}", response.body);
        assert_eq!(response.header("x-llm-cache"), Some("miss"));
    }
    assert_eq!(chats(&demo.openai), 2);
    assert_eq!(
        counter(&demo, "llm_cache_not_stored_total{reason=\"status\"}"),
        2.0
    );
}

#[test]
fn a_paraphrase_is_a_semantic_hit_and_an_unrelated_prompt_is_not() {
    require_envoy!();
    let demo = Demo::start_with_cache(|config| config);
    let first = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "What is the capital city of France?"),
    );
    assert_eq!(first.header("x-llm-cache"), Some("miss"));
    let paraphrase = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "what is the capital city of France, please"),
    );
    assert_eq!(paraphrase.status, 200, "{}", paraphrase.body);
    assert_eq!(paraphrase.header("x-llm-cache"), Some("hit"));
    let similarity: f64 = paraphrase
        .header("x-llm-cache-similarity")
        .expect("similarity header")
        .parse()
        .unwrap();
    assert!((0.9..1.0).contains(&similarity), "{similarity}");
    assert_eq!(
        paraphrase.json()["choices"][0]["message"]["content"],
        "What is the capital city of France?",
        "the stored answer, served for the paraphrase"
    );
    let unrelated = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "How do I bake sourdough bread?"),
    );
    assert_eq!(unrelated.header("x-llm-cache"), Some("miss"));
    assert_eq!(
        unrelated.json()["choices"][0]["message"]["content"],
        "How do I bake sourdough bread?"
    );
    // Another consumer never gets team-a's answer, however close the prompt.
    let other = ask(
        &demo,
        TEAM_B,
        &[],
        &prompt("gpt-4o-mini", "what is the capital city of France, please"),
    );
    assert_eq!(other.header("x-llm-cache"), Some("miss"));
    assert_eq!(chats(&demo.openai), 3);
    let embeddings = demo
        .openai
        .requests()
        .into_iter()
        .filter(|r| r["path"] == "/v1/embeddings")
        .count();
    assert_eq!(embeddings, 4, "one embedding per exact miss");
    assert_eq!(
        counter(
            &demo,
            "llm_cache_hits_total{model=\"gpt-4o-mini\",kind=\"semantic\"}"
        ),
        1.0
    );
}

#[test]
fn a_dead_embeddings_service_turns_semantic_lookups_into_misses() {
    require_envoy!();
    // The embeddings cluster points at a port nothing listens on.
    let demo = Demo::start_with_cache(|config| {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let mut cache = integration::filter_config(&config, "llm_cache");
        cache["semantic"]["embeddings"]["cluster"] = json!("dead_embeddings");
        let config = set_filter_config(&config, "llm_cache", &cache.to_string());
        integration::add_http_cluster(&config, "dead_embeddings", port)
    });
    all_answered_as_misses(&demo, "question {n} while the embedder is down", 4);
    // The exact tier still works.
    let again = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "question 0 while the embedder is down"),
    );
    assert_eq!(again.header("x-llm-cache"), Some("hit"));
    assert_eq!(
        counter(&demo, "llm_cache_callout_errors_total{kind=\"embeddings\"}"),
        4.0
    );
    let log = demo.envoy.log();
    assert!(
        log.matches("embeddings service failing").count() <= 2,
        "one line per outage (per worker)"
    );
}

/// The demo's cache with its semantic tier on Chroma at `port`.
fn on_chroma(config: String, port: u16) -> String {
    let config = integration::add_http_cluster(&config, "chroma", port);
    let mut cache = integration::filter_config(&config, "llm_cache");
    cache["semantic"]["chroma"] = json!({"cluster": "chroma", "timeout_ms": 2000});
    set_filter_config(&config, "llm_cache", &cache.to_string())
}

/// Waits until Chroma holds `n` records (stores go out from the root context, just after the answer).
fn wait_for_records(chroma: &ChromaServer, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while chroma.count("llm_cache_default") < n {
        assert!(
            std::time::Instant::now() < deadline,
            "Chroma never got {n} records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_envoys_share_answers_through_chroma() {
    require_envoy!();
    let chroma = ChromaServer::start();
    let a = Demo::start_with_cache(|config| on_chroma(config, chroma.port));
    let b = Demo::start_with_cache(|config| on_chroma(config, chroma.port));
    let question = prompt("gpt-4o-mini", "Which river runs through Paris?");
    let stored = ask(&a, TEAM_A, &[], &question);
    assert_eq!(stored.header("x-llm-cache"), Some("miss"));
    wait_for_records(&chroma, 1);

    // The same request through B: an exact hit from A's record.
    let shared = ask(&b, TEAM_A, &[], &question);
    assert_eq!(shared.status, 200, "{}", shared.body);
    assert_eq!(shared.header("x-llm-cache"), Some("hit"));
    assert_eq!(shared.header("x-llm-cache-similarity"), None);
    assert_eq!(
        shared.json()["choices"][0]["message"]["content"],
        stored.json()["choices"][0]["message"]["content"]
    );
    // A paraphrase through B: a semantic hit from A's record.
    let paraphrase = ask(
        &b,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "which river runs through Paris, please"),
    );
    assert_eq!(paraphrase.header("x-llm-cache"), Some("hit"));
    assert!(paraphrase.header("x-llm-cache-similarity").is_some());
    // Another consumer through B: never team-a's answer.
    let other = ask(&b, TEAM_B, &[], &question);
    assert_eq!(other.header("x-llm-cache"), Some("miss"));
    assert_eq!(chats(&a.openai), 1);
    assert_eq!(
        chats(&b.openai),
        1,
        "only team-b's request reached B's provider"
    );
}

#[test]
fn with_chroma_killed_every_request_is_still_answered() {
    require_envoy!();
    let mut chroma = ChromaServer::start();
    let demo = Demo::start_with_cache(|config| on_chroma(config, chroma.port));
    let first = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "before the outage"),
    );
    assert_eq!(first.status, 200);
    wait_for_records(&chroma, 1);
    chroma.kill();
    all_answered_as_misses(&demo, "asked during the outage, number {n}", 6);
    // The local exact tier still answers what this Envoy stored itself.
    let again = ask(
        &demo,
        TEAM_A,
        &[],
        &prompt("gpt-4o-mini", "before the outage"),
    );
    assert_eq!(again.header("x-llm-cache"), Some("hit"));
    assert!(counter(&demo, "llm_cache_callout_errors_total{kind=\"chroma\"}") >= 6.0);
    let log = demo.envoy.log();
    // One line per outage per thread that saw it: two workers, and (native) the main thread,
    // which sends the stores.
    assert!(
        (1..=3).contains(&log.matches("Chroma failing").count()),
        "one line per outage (per thread)"
    );
}
