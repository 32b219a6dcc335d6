//! docs/existing-envoy.md as a user follows it: an Envoy that already serves other traffic (a health
//! check, an app route, a default route) gets `llm-config generate --fragments` merged in the way
//! the guide says. The existing routes must keep working without a key; the LLM API must be
//! protected. Runs in every packaging (`LLM_SINGLE_MODULE=1`, `LLM_NATIVE=1`), and the bootstraps
//! for real providers (TLS, DNS, a cross-provider pool, gRPC and JWKS services) pass
//! `envoy --mode validate` in each.

use integration::http::{self, post_json};
use integration::{
    native, repo_root, require_envoy, single_module, validate_config_with_env, Envoy, EnvoyOptions,
    MockProvider, DEMO_OPENAI_KEY,
};
use llm_config::spec::yaml_to_json;
use llm_config::{generate, Output, Packaging};
use serde_json::{json, Value};

fn packaging() -> Packaging {
    if native() {
        Packaging::Native
    } else if single_module() {
        Packaging::Gateway
    } else {
        Packaging::Modules
    }
}

/// A team's Envoy before the LLM gateway: a health check, an app behind /app, a default route.
fn existing_envoy(app_port: u16, dead_port: u16) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: main
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: main
          http_filters:
          - name: envoy.filters.http.health_check
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck
              pass_through_mode: false
              headers: [{{ name: ":path", string_match: {{ exact: /healthz }} }}]
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
          route_config:
            virtual_hosts:
            - name: main
              domains: ["*"]
              routes:
              - match: {{ path: /status }}
                direct_response: {{ status: 200, body: {{ inline_string: up }} }}
              - match: {{ prefix: /mock/ }}
                route: {{ cluster: app }}
              - match: {{ prefix: /dead/ }}
                route: {{ cluster: dead }}
              - match: {{ prefix: / }}
                direct_response: {{ status: 200, body: {{ inline_string: home }} }}
  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {app_port} }} }} }}
  - name: dead
    type: STATIC
    connect_timeout: 0.5s
    load_assignment:
      cluster_name: dead
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {dead_port} }} }} }}
"#
    )
}

fn gateway_file(openai_port: u16) -> String {
    format!(
        r#"
envoy:
  modules: {modules}
providers:
  openai:
    url: http://127.0.0.1:{openai_port}
    format: openai
    api_key_env: MOCK_OPENAI_KEY
    api_key: {DEMO_OPENAI_KEY}
models:
- {{ name: gpt-4o-mini, route: openai }}
consumers:
- name: team-a
  keys: [{{ sha256: 50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e }}]
  usage_limits: [{{ tokens_per_minute: 100000 }}]
pii:
  entities: {{ email: mask }}
usage:
  prices: [{{ model: "gpt-4o-mini*", input: 0.15, output: 0.6 }}]
"#,
        modules = repo_root().join("target/wasm32-wasip1/release").display()
    )
}

fn list(value: &mut Value, pointer: &str) -> Vec<Value> {
    match value.pointer_mut(pointer).map(Value::take) {
        Some(Value::Array(items)) => items,
        other => panic!("{pointer}: {other:?}"),
    }
}

/// Merges the fragments into the existing bootstrap exactly where their comments say.
fn merge(existing: &str, fragments: &str) -> String {
    let mut config = yaml_to_json(existing).unwrap();
    let mut pieces = yaml_to_json(fragments).unwrap();
    let listener = "/static_resources/listeners/0";
    let hcm = format!("{listener}/filter_chains/0/filters/0/typed_config");
    config.pointer_mut(listener).unwrap()["per_connection_buffer_limit_bytes"] =
        pieces["listener"]["per_connection_buffer_limit_bytes"].take();
    // The LLM filters go before the router, after the filters already there.
    let mut filters = list(&mut config, &format!("{hcm}/http_filters"));
    let router = filters.pop().unwrap();
    assert_eq!(router["name"], "envoy.filters.http.router");
    filters.extend(list(&mut pieces, "/http_filters"));
    filters.push(router);
    let manager = config.pointer_mut(&hcm).unwrap();
    manager["http_filters"] = Value::Array(filters);
    manager["local_reply_config"] = pieces["local_reply_config"].take();
    manager["access_log"] = pieces["access_log"].take();
    manager["route_config"]["request_headers_to_remove"] =
        pieces["route_config"]["request_headers_to_remove"].take();
    // The LLM routes first; every existing route opts out of the LLM filters.
    let opt_out = pieces["per_route_opt_out"]["typed_per_filter_config"].take();
    let vhost = "/route_config/virtual_hosts/0/routes";
    let mut existing_routes = list(manager, vhost);
    for route in &mut existing_routes {
        route["typed_per_filter_config"] = opt_out.clone();
    }
    let mut routes = list(&mut pieces, "/routes");
    routes.extend(existing_routes);
    *manager.pointer_mut(vhost).unwrap() = Value::Array(routes);
    config["stats_config"] = json!({ "stats_tags": pieces["stats_tags"].take() });
    let mut clusters = list(&mut config, "/static_resources/clusters");
    clusters.extend(list(&mut pieces, "/clusters"));
    config["static_resources"]["clusters"] = Value::Array(clusters);
    // Envoy reads JSON as YAML; the native module's `# env` lines come along for the harness.
    let env: String = fragments
        .lines()
        .filter(|l| l.starts_with("# env "))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{env}{}", serde_json::to_string_pretty(&config).unwrap())
}

#[test]
fn existing_routes_keep_working_while_the_llm_api_is_protected() {
    require_envoy!();
    let provider = MockProvider::start(
        "openai",
        &["--api", "openai", "--require-key", DEMO_OPENAI_KEY],
    );
    let app = MockProvider::start("app", &[]);
    let fragments = generate(
        &gateway_file(provider.port()),
        "gateway.yaml",
        packaging(),
        Output::Fragments,
    )
    .unwrap();
    let config = merge(
        &existing_envoy(app.port(), integration::free_port()),
        &fragments,
    );
    let envoy = Envoy::start(&config, &EnvoyOptions::default());

    // What was there before still answers, without any key: the health-check filter (before the
    // LLM filters), and the routes the LLM filters step aside on.
    let health = http::get(&envoy.url("/healthz"), &[]);
    assert_eq!(health.status, 200, "{}", health.body);
    let status = http::get(&envoy.url("/status"), &[]);
    assert_eq!((status.status, status.body.as_str()), (200, "up"));
    let home = http::get(&envoy.url("/"), &[]);
    assert_eq!((home.status, home.body.as_str()), (200, "home"));
    let app_answer = http::get(&envoy.url("/mock/requests"), &[]);
    assert_eq!(app_answer.status, 200, "{}", app_answer.body);
    // Envoy's own errors on those routes stay Envoy's (the LLM error shape is for LLM requests).
    let dead = http::get(&envoy.url("/dead/x"), &[]);
    assert_eq!(dead.status, 503, "{}", dead.body);
    assert!(
        !dead.body.contains("could not get an answer"),
        "{}",
        dead.body
    );

    // The LLM API needs a key, in the caller's API shape.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi, I am ann@example.com"}]});
    let denied = post_json(&envoy.url("/v1/chat/completions"), &[], &chat.to_string());
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert!(
        denied.json()["error"]["message"].is_string(),
        "{}",
        denied.body
    );
    // A client cannot reach an LLM route by naming it on another path.
    let spoofed = http::get(&envoy.url("/mock/requests"), &[("x-llm-route", "openai")]);
    assert_eq!(spoofed.status, 401, "{}", spoofed.body);

    let answer = post_json(
        &envoy.url("/v1/chat/completions"),
        &[("authorization", "Bearer sk-demo-team-a")],
        &chat.to_string(),
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["object"],
        "chat.completion",
        "{}",
        answer.body
    );
    let models = http::get(
        &envoy.url("/v1/models"),
        &[("authorization", "Bearer sk-demo-team-a")],
    );
    assert_eq!(models.status, 200, "{}", models.body);
    assert_eq!(models.json()["data"][0]["id"], "gpt-4o-mini");

    // The provider got the provider's key, the prompt masked, and nothing of the client's key.
    let requests = provider.requests();
    let sent = requests
        .iter()
        .find(|r| r["path"] == "/v1/chat/completions")
        .expect("the chat request reached the provider");
    assert_eq!(
        sent["headers"]["authorization"],
        format!("Bearer {DEMO_OPENAI_KEY}")
    );
    let prompt = sent["json"]["messages"][0]["content"].as_str().unwrap();
    assert!(!prompt.contains("ann@example.com"), "{prompt}");
    // The app saw neither LLM request.
    let app_paths: Vec<Value> = app.requests().iter().map(|r| r["path"].clone()).collect();
    assert!(
        app_paths.iter().all(|p| p == "/mock/requests"),
        "{app_paths:?}"
    );

    // Usage is counted with Prometheus labels from the stats_tags fragment.
    let stats = http::get(&envoy.admin_url("/stats/prometheus"), &[]).body;
    let stats = if native() {
        integration::wasm_metric_names(&stats)
    } else {
        stats
    };
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("llm_requests_total{") && l.contains("consumer=\"team-a\"")),
        "no llm_requests_total for team-a in\n{stats}"
    );
}

/// A gateway file for real providers: TLS, DNS, a pool across two providers, and the services the
/// filters call.
const REAL_PROVIDERS: &str = r#"
envoy:
  listener: 0.0.0.0:10000
  modules: target/wasm32-wasip1/release
  jwt: { issuer: "https://id.example.com", audiences: [llm], remote_jwks: "https://id.example.com/jwks.json", jwks_service: idp }
providers:
  openai: { url: "https://api.openai.com", format: openai, api_key_env: OPENAI_API_KEY }
  anthropic: { url: "https://api.anthropic.com", format: anthropic, api_key_env: ANTHROPIC_API_KEY, model_map: { gpt-4o: claude-sonnet-4-5 } }
  vllm: { url: "http://vllm.internal:8000", format: openai, responses_api: translate }
pools:
  gpt-4o: { failover: [openai, anthropic], retriable_status_codes: [429] }
services:
  idp: { url: "https://id.example.com" }
  chroma: { url: "http://chroma.internal:8000" }
  ratelimit: { url: "http://ratelimit.internal:8081", http2: true }
models:
- { name: gpt-4o-mini, route: openai }
- { name: gpt-4o, route: gpt-4o }
- { name: "claude-*", route: anthropic }
- { name: llama-3.1-8b, route: vllm }
consumers:
- { name: team-a, keys: [{ sha256: 50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e }], usage_limits: [{ usd_per_day: 20 }] }
auth:
  jwt: { consumer_claim: sub, policies: [{ models: ["*"] }] }
  rate_limit_service: { cluster: ratelimit }
guard:
  checks:
    moderation: { type: openai_moderation, cluster: openai, model: omni-moderation-latest, api_key_env: OPENAI_API_KEY }
cache:
  defaults: { enabled: true }
  semantic:
    embeddings: { cluster: openai, model: text-embedding-3-small }
    chroma: { cluster: chroma, collection: llm-cache }
pii: { entities: { email: mask } }
"#;

#[test]
fn bootstraps_for_real_providers_validate_in_envoy() {
    require_envoy!();
    let dir = tempfile::tempdir().unwrap();
    for output in [Output::Bootstrap, Output::Fragments] {
        let yaml = generate(REAL_PROVIDERS, "real.gateway.yaml", packaging(), output)
            .unwrap_or_else(|err| panic!("{err}"));
        if output == Output::Fragments {
            // Fragments are for merging, not for Envoy alone: they must at least be one YAML document.
            yaml_to_json(&yaml).unwrap();
            continue;
        }
        assert!(yaml.contains("sni: api.anthropic.com"), "{yaml}");
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, &yaml).unwrap();
        let (ok, log) = validate_config_with_env(&path, &[]);
        assert!(ok, "envoy --mode validate refused it:\n{log}\n---\n{yaml}");
    }
}
