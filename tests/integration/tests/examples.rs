//! The shipped examples agree with what is tested: the docker-compose demo runs the same Envoy version,
//! config, ports and keys as `make run`, and its Dockerfile builds the mock provider. (No Docker engine
//! here: this checks that the files parse and agree, not that containers start.)

use integration::{demo_config, repo_root, DEMO_ANTHROPIC_KEY, DEMO_OPENAI_KEY};
use yaml_rust2::{Yaml, YamlLoader};

fn strings(value: &Yaml) -> Vec<String> {
    value
        .as_vec()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The official Envoy image at the version the Makefile pins (the tested one).
fn pinned_envoy_image() -> String {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
    let pinned = makefile
        .lines()
        .find_map(|l| l.strip_prefix("ENVOY_VERSION := "))
        .expect("ENVOY_VERSION in the Makefile");
    format!("envoyproxy/envoy:v{pinned}")
}

#[test]
fn docker_compose_matches_the_demo() {
    let text =
        std::fs::read_to_string(repo_root().join("examples/docker-compose/docker-compose.yml"))
            .unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("docker-compose.yml is valid YAML");
    let services = &docs[0]["services"];
    // Envoy: the tested version, the demo config, the repository mounted.
    let envoy = &services["envoy"];
    assert_eq!(envoy["image"].as_str(), Some(pinned_envoy_image().as_str()));
    let command = strings(&envoy["command"]);
    let config = &command[command.iter().position(|a| a == "-c").unwrap() + 1];
    assert!(repo_root().join(config).exists(), "{config}");
    assert!(strings(&envoy["volumes"])
        .iter()
        .any(|v| v.starts_with("../..:")));
    // Mocks: the ports and required keys envoy/demo.yaml expects.
    let demo = demo_config();
    for (service, port, key) in [
        ("mock-openai", "18080", Some(DEMO_OPENAI_KEY)),
        ("mock-anthropic", "18081", Some(DEMO_ANTHROPIC_KEY)),
        ("mock-unavailable", "18082", None),
        ("mock-gemini", "18083", Some(integration::DEMO_GEMINI_KEY)),
        ("mock-bedrock", "18084", None),
    ] {
        let args = strings(&services[service]["command"]);
        let listen = &args[args.iter().position(|a| a == "--listen").unwrap() + 1];
        assert_eq!(listen, &format!("127.0.0.1:{port}"), "{service}");
        assert!(
            demo.contains(&format!("port_value: {port} ")),
            "{service}: port {port} not in demo.yaml"
        );
        if let Some(key) = key {
            assert!(
                args.windows(2)
                    .any(|w| w[0] == "--require-key" && w[1] == key),
                "{service}: {args:?}"
            );
            assert!(
                demo.contains(key),
                "{service}: demo.yaml does not inject {key}"
            );
        }
        assert_eq!(services[service]["network_mode"].as_str(), Some("host"));
    }
    // Bedrock's mock checks SigV4 with the key pair demo.yaml signs with.
    let args = strings(&services["mock-bedrock"]["command"]);
    let pair = format!(
        "{}:{}",
        integration::DEMO_AWS_ACCESS_KEY_ID,
        integration::DEMO_AWS_SECRET_ACCESS_KEY
    );
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--aws-credentials" && w[1] == pair),
        "{args:?}"
    );
    assert!(demo.contains(integration::DEMO_AWS_SECRET_ACCESS_KEY));
    // The mock image is built from the Dockerfile this repository ships.
    let build = &services["mock-openai"]["build"];
    let dockerfile = repo_root()
        .join("examples/docker-compose")
        .join(build["context"].as_str().unwrap())
        .join(build["dockerfile"].as_str().unwrap());
    let dockerfile =
        std::fs::read_to_string(dockerfile).expect("the compose file's Dockerfile exists");
    let instructions: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let keywords = [
        "FROM",
        "WORKDIR",
        "COPY",
        "RUN",
        "ENTRYPOINT",
        "CMD",
        "ENV",
        "ARG",
    ];
    for line in &instructions {
        let keyword = line.split_whitespace().next().unwrap();
        assert!(
            keywords.contains(&keyword),
            "not a Dockerfile instruction: {line}"
        );
    }
    assert!(instructions
        .iter()
        .any(|l| l.contains("cargo build --release -p mock-provider")));
    assert!(instructions
        .last()
        .unwrap()
        .starts_with("ENTRYPOINT [\"/usr/local/bin/mock-provider\"]"));
}

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const DOWNSTREAM_ORDER: [&str; 6] = [
    "llm_auth",
    "llm_router",
    "llm_guard",
    "llm_cache",
    "llm_pii",
    "llm_usage",
];

/// YAML to JSON (the manifests only use strings, numbers, booleans, lists and maps).
fn to_json(value: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Yaml::Real(s) => s
            .parse::<f64>()
            .map_or(Value::Null, |f| serde_json::json!(f)),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => serde_json::json!(i),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_string(), to_json(v))))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// Every Wasm filter (`{name, typed_config}` objects) in `value`, in document order.
fn wasm_filters(value: &serde_json::Value, found: &mut Vec<serde_json::Value>) {
    match value {
        serde_json::Value::Object(map) => {
            if map.get("typed_config").and_then(|t| t.get("@type")) == Some(&WASM_TYPE.into()) {
                found.push(value.clone());
                return;
            }
            map.values().for_each(|v| wasm_filters(v, found));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| wasm_filters(v, found)),
        _ => {}
    }
}

fn manifest_filters(dir: &str) -> Vec<(String, serde_json::Value)> {
    let mut filters = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!docs.is_empty(), "{}", file.display());
        for doc in &docs {
            assert!(
                doc["spec"].as_hash().is_some(),
                "{}: every document is a Kubernetes object (or patch) with a spec",
                file.display()
            );
            let mut found = Vec::new();
            wasm_filters(&to_json(doc), &mut found);
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            filters.extend(found.into_iter().map(|f| (name.clone(), f)));
        }
    }
    filters
}

/// Istio and Envoy Gateway manifests: every filter configuration passes the filter's own validation,
/// every filter can hold headers for its body, the downstream filters run in the documented order, and
/// Envoy itself accepts the patched filters (`envoy --mode validate`, modules swapped for the built ones).
#[test]
fn istio_and_envoy_gateway_manifests_carry_valid_filter_configs() {
    integration::require_envoy!();
    for dir in ["examples/istio", "examples/envoy-gateway"] {
        let filters = manifest_filters(dir);
        let names: Vec<&str> = filters
            .iter()
            .map(|(_, f)| f["typed_config"]["config"]["root_id"].as_str().unwrap())
            .collect();
        let downstream: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| *n != "llm_provider")
            .collect();
        assert_eq!(downstream, DOWNSTREAM_ORDER, "{dir}");
        assert_eq!(
            names.iter().filter(|n| **n == "llm_provider").count(),
            2,
            "{dir}: llm_provider on both provider clusters"
        );
        let mut http_filters = Vec::new();
        let mut provider_filters = Vec::new();
        for (file, filter) in &filters {
            let config = &filter["typed_config"]["config"];
            let root_id = config["root_id"].as_str().unwrap();
            assert_eq!(filter["name"], root_id, "{file}");
            assert_eq!(
                config["allow_on_headers_stop_iteration"], true,
                "{file} {root_id}"
            );
            assert_eq!(config["vm_config"]["vm_id"], root_id, "{file}: own VM");
            let filename = config["vm_config"]["code"]["local"]["filename"]
                .as_str()
                .unwrap_or_else(|| panic!("{file} {root_id}: module from the proxy's disk"));
            assert_eq!(filename, format!("/var/lib/llm-filters/{root_id}.wasm"));
            let json = config["configuration"]["value"].as_str().unwrap();
            llm_core::filters::validate(root_id, json.as_bytes(), &|_| {
                Some("placeholder".to_string())
            })
            .unwrap_or_else(|e| panic!("{file} {root_id}: {e}"));
            if root_id == "llm_guard" {
                // The pattern survives YAML and JSON escaping: it still matches a leaked key.
                use llm_core::guarding::guard::{Guard, GuardConfig};
                let config: GuardConfig = serde_json::from_str(json).unwrap();
                let guard = Guard::compile(config, &|_| None).unwrap();
                let policy = guard.policy("gpt-4o-mini", "team-a");
                let leak = "the key is sk-abcdefghijklmnopqrstuvwxyz0123";
                assert!(
                    !guard.check_answer(&policy, leak).is_empty(),
                    "{file}: api_key never matches"
                );
            }
            // For Envoy's own validation: the same filter, loading the module built here.
            let mut local = filter.clone();
            local["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] =
                format!("target/wasm32-wasip1/release/{root_id}.wasm").into();
            if root_id == "llm_provider" {
                provider_filters.push(local);
            } else {
                http_filters.push(local);
            }
        }
        http_filters.push(
            serde_json::json!({"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}),
        );
        let clusters: Vec<serde_json::Value> = provider_filters
            .into_iter()
            .enumerate()
            .map(|(i, provider)| serde_json::json!({
                "name": format!("provider{i}"), "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http_protocol_options": {}},
                        "http_filters": [provider, {"name": "envoy.filters.http.upstream_codec", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]}},
                "load_assignment": {"cluster_name": format!("provider{i}"), "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9}}}}]}]}
            }))
            .collect();
        let bootstrap = serde_json::json!({"static_resources": {
            "listeners": [{"name": "llm", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "llm",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "provider0"}}]}]},
                        "http_filters": http_filters}}]}]}],
            "clusters": clusters}});
        let dir_tmp = tempfile::tempdir().unwrap();
        let path = dir_tmp.path().join("manifest-filters.json");
        std::fs::write(&path, serde_json::to_string_pretty(&bootstrap).unwrap()).unwrap();
        let (ok, log) = integration::validate_config_with_env(
            &path,
            &[
                ("OPENAI_API_KEY", "validate-placeholder"),
                ("ANTHROPIC_API_KEY", "validate-placeholder"),
            ],
        );
        assert!(
            ok,
            "{dir}: envoy --mode validate refused the filters:\n{log}"
        );
    }
}

#[test]
fn the_observability_stack_agrees_with_its_gateway_file() {
    let dir = repo_root().join("examples/observability");
    let compose = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    let compose = &YamlLoader::load_from_str(&compose).expect("valid YAML")[0];
    let services = &compose["services"];
    // Envoy runs the generated config at the tested version.
    let envoy = &services["envoy"];
    assert_eq!(envoy["image"].as_str(), Some(pinned_envoy_image().as_str()));
    let command = strings(&envoy["command"]);
    let config = &command[command.iter().position(|a| a == "-c").unwrap() + 1];
    assert_eq!(config, "examples/observability/envoy.yaml");
    let generated = std::fs::read_to_string(repo_root().join(config)).unwrap();
    // The collector listens where the gateway file sends spans, and hands them to Jaeger where
    // Jaeger listens.
    let gateway = std::fs::read_to_string(dir.join("gateway.yaml")).unwrap();
    assert!(gateway.contains("collector: http://127.0.0.1:4317"));
    assert!(generated.contains("port_value: 4317 "));
    let collector = std::fs::read_to_string(dir.join("otel-collector.yaml")).unwrap();
    let collector = &YamlLoader::load_from_str(&collector).expect("valid YAML")[0];
    assert_eq!(
        collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].as_str(),
        Some("127.0.0.1:4317")
    );
    let jaeger = services["jaeger"]["environment"]["COLLECTOR_OTLP_GRPC_HOST_PORT"]
        .as_str()
        .expect("Jaeger's OTLP port");
    assert_eq!(
        collector["exporters"]["otlp/jaeger"]["endpoint"].as_str(),
        Some(jaeger)
    );
    for pipeline in ["traces", "logs"] {
        assert!(
            strings(&collector["service"]["pipelines"][pipeline]["receivers"])
                .contains(&"otlp".to_string()),
            "{pipeline}"
        );
    }
    // The mocks are the demo's, as in examples/docker-compose.
    let demo_compose =
        std::fs::read_to_string(repo_root().join("examples/docker-compose/docker-compose.yml"))
            .unwrap();
    let demo_compose = &YamlLoader::load_from_str(&demo_compose).unwrap()[0];
    for mock in [
        "mock-openai",
        "mock-anthropic",
        "mock-unavailable",
        "mock-gemini",
    ] {
        assert_eq!(
            strings(&services[mock]["command"]),
            strings(&demo_compose["services"][mock]["command"]),
            "{mock}"
        );
    }
    // Grafana gets the dashboard the metrics test checks, and both data sources.
    let volumes = strings(&services["grafana"]["volumes"]);
    assert!(volumes
        .iter()
        .any(|v| v.starts_with("./grafana-dashboard.json:")));
    let datasources =
        std::fs::read_to_string(dir.join("grafana/provisioning/datasources/datasources.yml"))
            .unwrap();
    assert!(datasources.contains("uid: prometheus") && datasources.contains("uid: jaeger"));
}
