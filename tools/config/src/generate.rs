//! From a gateway file to Envoy YAML: a complete bootstrap, or the fragments to merge into an
//! existing one, for each packaging. The separate-modules form is written here; the other two are
//! derived from it (crate::packaging), so the three cannot say different things.

use crate::packaging::{
    indent, readable_json, to_native, to_single_module, wasm_filter_item, GATEWAY_SECTIONS,
    WASM_DIR_COMMENT,
};
use crate::spec::{
    self, GatewayFile, PoolMember, PoolSpec, ProviderPlacement, ServiceSpec, Url, PLACEMENT_FIELDS,
};
use crate::tracing;
use llm_core::config::{parse, ConfigError};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// How the filters are packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packaging {
    /// One Wasm module per filter (the default).
    Modules,
    /// llm_gateway.wasm for the downstream filters, llm_provider.wasm upstream.
    Gateway,
    /// libllm_gateway.so, Envoy's dynamic module, for every filter.
    Native,
}

impl Packaging {
    pub fn parse(name: &str) -> Option<Packaging> {
        match name {
            "modules" => Some(Packaging::Modules),
            "gateway" => Some(Packaging::Gateway),
            "native" => Some(Packaging::Native),
            _ => None,
        }
    }
}

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// A whole Envoy bootstrap.
    Bootstrap,
    /// The pieces to merge into an existing Envoy, as one YAML document.
    Fragments,
}

/// The paths llm_router serves; in fragments they get routes of their own, so that the filters
/// run for them even where an existing route opts out.
pub const API_PATHS: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/models",
    "/v1/messages",
];

/// The JSON access log's fields: Envoy's own, then the filters' facts (filter state).
const ACCESS_LOG_FIELDS: [(&str, &str); 29] = [
    ("time", "%START_TIME%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("consumer", "%FILTER_STATE(wasm.llm_consumer:PLAIN)%"),
    ("auth", "%FILTER_STATE(wasm.llm_auth_method:PLAIN)%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("status", "%RESPONSE_CODE%"),
    ("flags", "%RESPONSE_FLAGS%"),
    ("duration_ms", "%DURATION%"),
    ("bytes_in", "%BYTES_RECEIVED%"),
    ("bytes_out", "%BYTES_SENT%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    ("attempts", "%UPSTREAM_REQUEST_ATTEMPT_COUNT%"),
    ("model", "%FILTER_STATE(wasm.llm_model:PLAIN)%"),
    (
        "upstream_model",
        "%FILTER_STATE(wasm.llm_upstream_model:PLAIN)%",
    ),
    ("route", "%FILTER_STATE(wasm.llm_route:PLAIN)%"),
    ("stream", "%FILTER_STATE(wasm.llm_stream:PLAIN)%"),
    ("provider", "%FILTER_STATE(wasm.llm_provider:PLAIN)%"),
    (
        "response_model",
        "%FILTER_STATE(wasm.llm_response_model:PLAIN)%",
    ),
    (
        "input_tokens",
        "%FILTER_STATE(wasm.llm_input_tokens:PLAIN)%",
    ),
    (
        "output_tokens",
        "%FILTER_STATE(wasm.llm_output_tokens:PLAIN)%",
    ),
    (
        "cached_tokens",
        "%FILTER_STATE(wasm.llm_cached_tokens:PLAIN)%",
    ),
    ("cost_usd", "%FILTER_STATE(wasm.llm_cost_usd:PLAIN)%"),
    ("ttft_ms", "%FILTER_STATE(wasm.llm_ttft_ms:PLAIN)%"),
    (
        "usage_estimated",
        "%FILTER_STATE(wasm.llm_usage_estimated:PLAIN)%",
    ),
    ("pii", "%FILTER_STATE(wasm.llm_pii:PLAIN)%"),
    ("guard", "%FILTER_STATE(wasm.llm_guard:PLAIN)%"),
    ("cache", "%FILTER_STATE(wasm.llm_cache:PLAIN)%"),
];

/// A provider as the generator resolved it.
struct Provider {
    name: String,
    cluster: String,
    url: Url,
    http2: Option<bool>,
    api_key: Option<(String, String)>,
    api_key_env: Option<String>,
    /// Credential variables besides `api_key_env` (Bedrock's AWS keys, Vertex AI's service
    /// account), with their values in a demo file.
    credential_env: Vec<(String, Option<String>)>,
    /// `gen_ai.provider.name` of its endpoints, in their metadata for traces.
    gen_ai_provider: String,
    entry: Map<String, Value>,
}

/// A cluster to write.
struct Cluster {
    name: String,
    /// Where the gateway file declares it (for errors).
    origin: String,
    comment: Option<String>,
    /// (provider metadata, url) per priority; provider is None for services.
    endpoints: Vec<(Option<String>, Url)>,
    http2: Option<bool>,
    connect_timeout: String,
    llm_provider: bool,
}

/// A route from an `x-llm-route` value to a cluster.
struct Route {
    value: String,
    cluster: String,
    retry: Option<(u32, String, Vec<u16>)>,
    comment: Option<String>,
}

/// Everything resolved and checked, ready to write.
pub struct Plan {
    file: GatewayFile,
    source: String,
    providers: Vec<Provider>,
    clusters: Vec<Cluster>,
    routes: Vec<Route>,
    /// (filter, configuration) of the downstream filters, in chain order.
    filters: Vec<(&'static str, Value)>,
    /// The environment variables each downstream filter reads.
    filter_env: Vec<(&'static str, Vec<String>)>,
    provider_config: Value,
    jwt_payload_key: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(path, message)
}

/// Reads and checks a gateway file; `source` names it in the output's header.
pub fn plan(text: &str, source: &str) -> Result<Plan, ConfigError> {
    let file = spec::load(text)?;
    spec::socket(&file.envoy.listener, "envoy.listener")?;
    spec::socket(&file.envoy.admin, "envoy.admin")?;
    spec::duration(&file.envoy.route_timeout, "envoy.route_timeout")?;
    spec::duration(&file.envoy.connect_timeout, "envoy.connect_timeout")?;

    let mut providers = Vec::new();
    for (name, value) in &file.providers {
        let path = format!("providers.{name}");
        spec::plain_name(name, &path)?;
        let Value::Object(fields) = value else {
            return Err(err(path, "must be an object"));
        };
        let mut entry = fields.clone();
        let mut placement = Map::new();
        for field in PLACEMENT_FIELDS {
            if let Some(v) = entry.shift_remove(field) {
                placement.insert(field.to_string(), v);
            }
        }
        let placement: ProviderPlacement =
            parse(&serde_json::to_vec(&placement).unwrap_or_default())
                .map_err(|e| e.within(&path))?;
        let url = Url::parse(&placement.url, &format!("{path}.url"))?;
        if let Some(cluster) = &placement.cluster {
            spec::plain_name(cluster, &format!("{path}.cluster"))?;
        }
        if !url.is_ip() && !entry.contains_key("host") {
            entry.insert("host".into(), Value::String(url.host.clone()));
        }
        let api_key_env = entry
            .get("api_key_env")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(env) = &api_key_env {
            spec::env_name(env, &format!("{path}.api_key_env"))?;
        }
        let api_key = match (placement.api_key, &api_key_env) {
            (Some(key), Some(env)) => Some((env.clone(), key)),
            (Some(_), None) => {
                return Err(err(
                    format!("{path}.api_key"),
                    "needs `api_key_env`: the variable llm_provider reads it from",
                ))
            }
            (None, _) => None,
        };
        let bedrock = entry.get("format").and_then(Value::as_str) == Some("bedrock");
        let mut credential_env = if bedrock && api_key_env.is_none() {
            // As llm_provider reads them: AWS's names without the object, and a session token
            // only when the object names one.
            let mut names = llm_core::provider::AwsCredentialsEnv::default();
            if entry.contains_key("aws_credentials_env") {
                names.session_token = None;
            }
            // A variable named, or null (not read), or the default.
            let named = |field: &str, default: Option<String>| match entry
                .get("aws_credentials_env")
                .and_then(|e| e.get(field))
            {
                Some(Value::String(var)) => Some(var.clone()),
                Some(_) => None,
                None => default,
            };
            let demo = placement.aws_credentials.as_ref();
            let mut vars = Vec::new();
            for (field, default, value) in [
                (
                    "access_key_id",
                    Some(names.access_key_id),
                    demo.map(|d| d.access_key_id.clone()),
                ),
                (
                    "secret_access_key",
                    Some(names.secret_access_key),
                    demo.map(|d| d.secret_access_key.clone()),
                ),
                ("session_token", names.session_token, None),
            ] {
                if let Some(var) = named(field, default) {
                    spec::env_name(&var, &format!("{path}.aws_credentials_env.{field}"))?;
                    vars.push((var, value));
                }
            }
            vars
        } else {
            if placement.aws_credentials.is_some() {
                return Err(err(
                    format!("{path}.aws_credentials"),
                    "only for a bedrock provider signing with SigV4 (no api_key_env)",
                ));
            }
            Vec::new()
        };
        if let Some(var) = entry.get("service_account_env").and_then(Value::as_str) {
            spec::env_name(var, &format!("{path}.service_account_env"))?;
            credential_env.push((var.to_string(), None));
        }
        let gen_ai_provider = match placement.gen_ai_provider {
            Some(named) => {
                spec::plain_name(&named, &format!("{path}.gen_ai_provider"))?;
                named
            }
            None => {
                spec::gen_ai_provider(entry.get("format").and_then(Value::as_str).unwrap_or(""))
                    .to_string()
            }
        };
        providers.push(Provider {
            gen_ai_provider,
            name: name.clone(),
            cluster: placement.cluster.unwrap_or_else(|| name.clone()),
            url,
            http2: placement.http2,
            api_key,
            api_key_env,
            credential_env,
            entry,
        });
    }
    if providers.is_empty() {
        return Err(err("providers", "name at least one provider"));
    }

    let connect_timeout = file.envoy.connect_timeout.clone();
    let mut clusters: Vec<Cluster> = providers
        .iter()
        .map(|p| Cluster {
            name: p.cluster.clone(),
            origin: format!("providers.{}", p.name),
            comment: None,
            endpoints: vec![(Some(p.name.clone()), p.url.clone())],
            http2: p.http2,
            connect_timeout: connect_timeout.clone(),
            llm_provider: true,
        })
        .collect();
    let mut routes: Vec<Route> = providers
        .iter()
        .map(|p| Route {
            value: p.name.clone(),
            cluster: p.cluster.clone(),
            retry: None,
            comment: None,
        })
        .collect();

    for (name, value) in &file.pools {
        let path = format!("pools.{name}");
        spec::plain_name(name, &path)?;
        if providers.iter().any(|p| &p.name == name) {
            return Err(err(
                path,
                "a provider has this name: routes name providers and pools alike",
            ));
        }
        let pool: PoolSpec =
            parse(&serde_json::to_vec(value).unwrap_or_default()).map_err(|e| e.within(&path))?;
        if pool.failover.is_empty() {
            return Err(err(
                format!("{path}.failover"),
                "name at least one provider",
            ));
        }
        let mut endpoints = Vec::new();
        let mut http2 = None;
        for (i, member) in pool.failover.iter().enumerate() {
            let member_path = format!("{path}.failover[{i}]");
            let (provider, url) = match member {
                PoolMember::Name(provider) => (provider, None),
                PoolMember::At(at) => (&at.provider, Some(&at.url)),
            };
            let known = providers
                .iter()
                .find(|p| &p.name == provider)
                .ok_or_else(|| err(&member_path, "names no provider in `providers`"))?;
            let url = match url {
                Some(url) => Url::parse(url, &format!("{member_path}.url"))?,
                None => known.url.clone(),
            };
            // llm_provider sets the Host header from the provider's `host`: another host needs
            // a provider entry of its own.
            let host = known.entry.get("host").and_then(Value::as_str);
            if host.is_some_and(|h| h != url.host) {
                return Err(err(
                    format!("{member_path}.url"),
                    "is not at the provider's host; give that endpoint a provider entry of its own",
                ));
            }
            if http2.is_some() && known.http2.is_some() && http2 != known.http2 {
                return Err(err(
                    &member_path,
                    "its `http2` differs from another member's; one cluster speaks one protocol",
                ));
            }
            http2 = http2.or(known.http2);
            endpoints.push((Some(provider.clone()), url));
        }
        if endpoints.iter().any(|(_, u)| u.tls) && endpoints.iter().any(|(_, u)| !u.tls) {
            return Err(err(
                format!("{path}.failover"),
                "mixes http:// and https:// members; one cluster speaks one transport",
            ));
        }
        let cluster = pool.cluster.clone().unwrap_or_else(|| name.clone());
        if let Some(cluster) = &pool.cluster {
            spec::plain_name(cluster, &format!("{path}.cluster"))?;
        }
        // One retry per further member: with previous_priorities each goes one priority down.
        let further = u32::try_from(pool.failover.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let retries = pool.retries.unwrap_or(further.max(1));
        let retry_on = pool
            .retry_on
            .clone()
            .unwrap_or_else(|| "5xx,reset,connect-failure".into());
        let retry_on = if pool.retriable_status_codes.is_empty()
            || retry_on.contains("retriable-status-codes")
        {
            retry_on
        } else {
            format!("{retry_on},retriable-status-codes")
        };
        let order: Vec<String> = pool
            .failover
            .iter()
            .map(|m| match m {
                PoolMember::Name(p) => p.clone(),
                PoolMember::At(at) => at.provider.clone(),
            })
            .collect();
        routes.push(Route {
            value: name.clone(),
            cluster: cluster.clone(),
            retry: Some((retries, retry_on, pool.retriable_status_codes.clone())),
            comment: Some(format!(
                "{name}: {}, in that order (priorities); each attempt in that provider's format.",
                order.join(", then ")
            )),
        });
        clusters.push(Cluster {
            name: cluster,
            origin: path.clone(),
            comment: None,
            endpoints,
            http2,
            connect_timeout: connect_timeout.clone(),
            llm_provider: true,
        });
    }

    for (name, value) in &file.services {
        let path = format!("services.{name}");
        spec::plain_name(name, &path)?;
        let service: ServiceSpec =
            parse(&serde_json::to_vec(value).unwrap_or_default()).map_err(|e| e.within(&path))?;
        let url = Url::parse(&service.url, &format!("{path}.url"))?;
        if let Some(timeout) = &service.connect_timeout {
            spec::duration(timeout, &format!("{path}.connect_timeout"))?;
        }
        clusters.push(Cluster {
            name: name.clone(),
            origin: path.clone(),
            comment: None,
            endpoints: vec![(None, url)],
            http2: service.http2,
            connect_timeout: service
                .connect_timeout
                .unwrap_or_else(|| connect_timeout.clone()),
            llm_provider: false,
        });
    }
    if let Some(tracing) = &file.envoy.tracing {
        let path = "envoy.tracing";
        let url = Url::parse(&tracing.collector, &format!("{path}.collector"))?;
        spec::plain_name(&tracing.cluster, &format!("{path}.cluster"))?;
        if !(0.0..=100.0).contains(&tracing.sampling_percent) {
            return Err(err(
                format!("{path}.sampling_percent"),
                "must be between 0 and 100",
            ));
        }
        if tracing.service_name.is_empty() || tracing.service_name.chars().any(char::is_control) {
            return Err(err(format!("{path}.service_name"), "must be a plain name"));
        }
        clusters.push(Cluster {
            name: tracing.cluster.clone(),
            origin: format!("{path}.cluster"),
            comment: Some(
                "The OpenTelemetry collector (OTLP/gRPC) that receives spans and log records."
                    .into(),
            ),
            endpoints: vec![(None, url)],
            http2: Some(true),
            connect_timeout: connect_timeout.clone(),
            llm_provider: false,
        });
    }
    let mut names = BTreeSet::new();
    for cluster in &clusters {
        if !names.insert(cluster.name.as_str()) {
            return Err(err(
                &cluster.origin,
                "its cluster has the name of another (providers, pools and services share names)",
            ));
        }
    }

    // llm_router: the models, each routed to a provider or a pool.
    let route_names: BTreeSet<&str> = routes.iter().map(|r| r.value.as_str()).collect();
    for (i, model) in file.models.iter().enumerate() {
        if let Some(route) = model.get("route") {
            if !route.as_str().is_some_and(|r| route_names.contains(r)) {
                return Err(err(
                    format!("models[{i}].route"),
                    "names no provider or pool (`providers`, `pools`)",
                ));
            }
        }
    }
    let mut router = file.router.clone().unwrap_or_default();
    if router.contains_key("models") {
        return Err(err(
            "router.models",
            "write the models in the top-level `models`",
        ));
    }
    let mut router_config = Map::new();
    router_config.insert("models".into(), Value::Array(file.models.clone()));
    router_config.append(&mut router);

    // llm_auth: the consumers; their usage limits go to llm_usage.
    let mut consumers = Vec::new();
    let mut consumer_limits = Vec::new();
    for (i, consumer) in file.consumers.iter().enumerate() {
        let Value::Object(fields) = consumer else {
            return Err(err(format!("consumers[{i}]"), "must be an object"));
        };
        let mut fields = fields.clone();
        if let Some(limits) = fields.shift_remove("usage_limits") {
            let name = fields.get("name").cloned().unwrap_or(Value::Null);
            let Value::Array(limits) = limits else {
                return Err(err(
                    format!("consumers[{i}].usage_limits"),
                    "must be a list",
                ));
            };
            for (j, limit) in limits.into_iter().enumerate() {
                let Value::Object(mut limit) = limit else {
                    return Err(err(
                        format!("consumers[{i}].usage_limits[{j}]"),
                        "must be an object",
                    ));
                };
                if limit.contains_key("consumer") {
                    return Err(err(
                        format!("consumers[{i}].usage_limits[{j}].consumer"),
                        "is the consumer it is written under",
                    ));
                }
                let mut entry = Map::new();
                entry.insert("consumer".into(), name.clone());
                entry.append(&mut limit);
                consumer_limits.push(Value::Object(entry));
            }
        }
        consumers.push(Value::Object(fields));
    }
    let auth_config = if consumers.is_empty() && file.auth.is_none() {
        if !file.envoy.unauthenticated {
            return Err(err(
                "consumers",
                "none, and no `auth`: every client could spend the provider keys \
                 (write `envoy: {unauthenticated: true}` if that is what you want)",
            ));
        }
        None
    } else {
        let mut auth = file.auth.clone().unwrap_or_default();
        if auth.contains_key("consumers") {
            return Err(err(
                "auth.consumers",
                "write the consumers in the top-level `consumers`",
            ));
        }
        let mut config = Map::new();
        config.insert("consumers".into(), Value::Array(consumers));
        config.append(&mut auth);
        Some(Value::Object(config))
    };
    let usage_config = match (file.usage.clone(), consumer_limits.is_empty()) {
        (None, true) => None,
        (usage, _) => {
            let mut usage = usage.unwrap_or_default();
            if !consumer_limits.is_empty() {
                let mut limits = match usage.shift_remove("limits") {
                    Some(Value::Array(limits)) => limits,
                    Some(_) => return Err(err("usage.limits", "must be a list")),
                    None => Vec::new(),
                };
                limits.extend(consumer_limits);
                usage.insert("limits".into(), Value::Array(limits));
            }
            Some(Value::Object(usage))
        }
    };

    let mut filters: Vec<(&'static str, Value)> = Vec::new();
    for (section, filter) in GATEWAY_SECTIONS {
        let config = match section {
            "auth" => auth_config.clone(),
            "router" => Some(Value::Object(router_config.clone())),
            "guard" => file.guard.clone().map(Value::Object),
            "cache" => file.cache.clone().map(Value::Object),
            "pii" => file.pii.clone().map(Value::Object),
            _ => usage_config.clone(),
        };
        if let Some(config) = config {
            filters.push((filter, config));
        }
    }

    let mut provider_entries = Map::new();
    for p in &providers {
        provider_entries.insert(p.name.clone(), Value::Object(p.entry.clone()));
    }
    let mut provider_config = Map::new();
    if let Some(default) = &file.default_provider {
        if !providers.iter().any(|p| &p.name == default) {
            return Err(err("default_provider", "names no provider in `providers`"));
        }
        provider_config.insert("default_provider".into(), Value::String(default.clone()));
    }
    provider_config.insert("providers".into(), Value::Object(provider_entries));
    let provider_config = Value::Object(provider_config);

    // Vertex AI's key files are parsed at load: their variables get a throwaway key for the check.
    let service_accounts: Vec<String> = providers
        .iter()
        .filter_map(|p| p.entry.get("service_account_env").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    // The filters' own checks, as Envoy would run them when loading the config. The environment
    // variables each asks for (service keys) go into its VM's host_env_keys.
    let mut filter_env: Vec<(&'static str, Vec<String>)> = Vec::new();
    for (filter, config) in filters
        .iter()
        .map(|(f, c)| (*f, c))
        .chain([("llm_provider", &provider_config)])
    {
        let asked = std::cell::RefCell::new(Vec::new());
        let placeholder = |name: &str| {
            asked.borrow_mut().push(name.to_string());
            if service_accounts.iter().any(|var| var == name) {
                return placeholder_service_account();
            }
            Some("llm-config-check".to_string())
        };
        let bytes = serde_json::to_vec(config).unwrap_or_default();
        let checked = llm_core::filters::validate(filter, &bytes, &placeholder);
        let mut asked = asked.into_inner();
        asked.sort();
        asked.dedup();
        if filter != "llm_provider" {
            for name in &asked {
                spec::env_name(name, filter.trim_start_matches("llm_"))?;
            }
            filter_env.push((filter, asked));
        }
        checked.map_err(|e| {
            let section = filter.trim_start_matches("llm_");
            let top_level = match section {
                "auth" => e.path.starts_with("consumers"),
                "router" => e.path.starts_with("models"),
                "provider" => true,
                _ => false,
            };
            if top_level {
                e
            } else {
                e.within(section)
            }
        })?;
    }

    // Clusters the filters call must exist.
    let cluster_names: BTreeSet<String> = clusters.iter().map(|c| c.name.clone()).collect();
    for p in &providers {
        if let Some(cluster) = p.entry.get("token_cluster").and_then(Value::as_str) {
            if !cluster_names.contains(cluster) {
                return Err(err(
                    format!("providers.{}.token_cluster", p.name),
                    "names no cluster: declare the token endpoint under `services` (e.g. google_oauth2: { url: https://oauth2.googleapis.com })",
                ));
            }
        }
    }
    for (filter, config) in &filters {
        let mut missing = Vec::new();
        find_cluster_refs(
            config,
            filter.trim_start_matches("llm_"),
            &cluster_names,
            &mut missing,
        );
        if let Some(path) = missing.into_iter().next() {
            return Err(err(
                path,
                "names no cluster: declare it under `services` (or `providers`)",
            ));
        }
    }
    // jwt_authn and llm_auth's jwt section go together, and agree on where the payload is.
    let auth_jwt = file.auth.as_ref().and_then(|a| a.get("jwt"));
    let jwt_payload_key = match (&file.envoy.jwt, auth_jwt) {
        (None, None) => "jwt_payload".to_string(),
        (Some(_), None) => {
            return Err(err(
                "auth.jwt",
                "missing: `envoy.jwt` verifies tokens, `auth.jwt` says who they name",
            ))
        }
        (None, Some(_)) => {
            return Err(err(
                "envoy.jwt",
                "missing: llm_auth reads tokens that Envoy's jwt_authn verified",
            ))
        }
        (Some(_), Some(auth)) => {
            let namespace = auth.get("metadata_namespace").and_then(Value::as_str);
            if namespace.is_some_and(|n| n != "envoy.filters.http.jwt_authn") {
                return Err(err(
                    "auth.jwt.metadata_namespace",
                    "jwt_authn writes under envoy.filters.http.jwt_authn",
                ));
            }
            let key = auth
                .get("payload_key")
                .and_then(Value::as_str)
                .unwrap_or("jwt_payload");
            spec::plain_name(key, "auth.jwt.payload_key")?;
            key.to_string()
        }
    };
    if let Some(jwt) = &file.envoy.jwt {
        if let Some(service) = &jwt.jwks_service {
            spec::plain_name(service, "envoy.jwt.jwks_service")?;
        }
        match (&jwt.local_jwks, &jwt.remote_jwks, &jwt.jwks_service) {
            (Some(_), None, None) => {}
            (None, Some(_), Some(service)) if cluster_names.contains(service) => {}
            (None, Some(_), Some(_)) => {
                return Err(err(
                    "envoy.jwt.jwks_service",
                    "names no service under `services`",
                ))
            }
            _ => {
                return Err(err(
                    "envoy.jwt",
                    "give `local_jwks`, or `remote_jwks` with `jwks_service`",
                ))
            }
        }
    }

    Ok(Plan {
        file,
        source: source.to_string(),
        providers,
        clusters,
        routes,
        filters,
        filter_env,
        provider_config,
        jwt_payload_key,
    })
}

/// A service-account key file with a fresh key that signs nothing (the check parses it).
fn placeholder_service_account() -> Option<String> {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).ok()?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).ok()?;
    Some(
        serde_json::json!({
            "type": "service_account",
            "private_key": pem.as_str(),
            "client_email": "llm-config-check@placeholder.iam.gserviceaccount.com",
        })
        .to_string(),
    )
}

fn find_cluster_refs(
    value: &Value,
    path: &str,
    known: &BTreeSet<String>,
    missing: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let child = format!("{path}.{key}");
                match (key.as_str(), v) {
                    ("cluster", Value::String(name)) if !known.contains(name) => {
                        missing.push(child)
                    }
                    _ => find_cluster_refs(v, &child, known, missing),
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                find_cluster_refs(v, &format!("{path}[{i}]"), known, missing);
            }
        }
        _ => {}
    }
}

/// Generates the Envoy YAML for a gateway file.
pub fn generate(
    text: &str,
    source: &str,
    packaging: Packaging,
    output: Output,
) -> Result<String, ConfigError> {
    let plan = plan(text, source)?;
    let modules = match output {
        Output::Bootstrap => plan.bootstrap(),
        Output::Fragments => plan.fragments(packaging),
    };
    let packaged = match packaging {
        Packaging::Modules => Ok(modules),
        Packaging::Gateway => to_single_module(&modules),
        Packaging::Native => to_single_module(&modules).and_then(|c| to_native(&c)),
    };
    packaged.map_err(|message| err("", message))
}

/// Why each filter fails open or closed.
fn failure_policy(filter: &str) -> (&'static str, &'static str) {
    match filter {
        "llm_auth" => ("FAIL_CLOSED", "auth fails closed: an unauthenticated request must never reach a provider."),
        "llm_router" => ("FAIL_CLOSED", "router fails closed: without it no model is resolved and the request cannot be routed."),
        "llm_guard" => ("FAIL_CLOSED", "guard fails closed: a prompt it cannot check must not reach a cache or a provider."),
        "llm_cache" => ("FAIL_OPEN", "cache fails open: without it every request is a miss, which is slower, not wrong."),
        "llm_pii" => ("FAIL_CLOSED", "pii fails closed: if it cannot mask, the prompt must not leave."),
        "llm_usage" => ("FAIL_OPEN", "usage fails open: losing accounting for a while is better than refusing all traffic."),
        _ => ("FAIL_CLOSED", "provider fails closed: an untranslated request or a missing key would only earn a provider error."),
    }
}

impl Plan {
    fn modules_dir(&self) -> &str {
        self.file.envoy.modules.trim_end_matches('/')
    }

    /// A Wasm filter (`- name:` item) with its JSON configuration; `vm_extra` lines go in vm_config.
    fn wasm_filter(&self, filter: &str, config: &Value, vm_extra: &str) -> String {
        let (policy, why) = failure_policy(filter);
        let mut json = String::new();
        readable_json(config, 10, 10, &mut json);
        wasm_filter_item(
            &format!("# {why}"),
            filter,
            &yaml_scalar(&format!("{}/{filter}.wasm", self.modules_dir())),
            vm_extra,
            &json,
            policy,
        )
    }

    /// The downstream HTTP filters, `envoy.filters.http.router` excluded. Fragments leave the
    /// compressor out: an Envoy that compresses has its own, and it would change other routes.
    fn http_filters(&self, fragments: bool) -> String {
        let mut out = String::new();
        if self.file.envoy.compression && !fragments {
            out.push_str(COMPRESSOR);
        }
        if let Some(jwt) = &self.file.envoy.jwt {
            let audiences: Vec<String> = jwt.audiences.iter().map(|a| yaml_scalar(a)).collect();
            let audiences = audiences.join(", ");
            let jwks = match (&jwt.local_jwks, &jwt.remote_jwks, &jwt.jwks_service) {
                (Some(inline), _, _) => format!(
                    "        # A key written here: fine for a demo; in production use remote_jwks.\n        local_jwks:\n          inline_string: '{}'\n",
                    inline.replace('\'', "''")
                ),
                (None, Some(uri), Some(service)) => format!(
                    "        remote_jwks:\n          http_uri: {{ uri: {}, cluster: {service}, timeout: 5s }}\n          cache_duration: 600s\n",
                    quoted(uri)
                ),
                _ => String::new(),
            };
            let _ = write!(
                out,
                r#"# JWT identity: Envoy verifies the token and puts its payload in metadata for llm_auth.
# Requests without a (valid) JWT go on to llm_auth, which then looks for an API key.
- name: envoy.filters.http.jwt_authn
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
    providers:
      llm:
        issuer: {issuer}
        audiences: [{audiences}]
{jwks}        payload_in_metadata: {payload}
        forward: false
    rules:
    - match: {{ prefix: / }}
      requires: {{ allow_missing_or_failed: {{}} }}
"#,
                issuer = yaml_scalar(&jwt.issuer),
                payload = self.jwt_payload_key,
            );
        }
        out.push_str(
            "# Each filter has its own vm_id: a panic in one VM must not take the others down.\n",
        );
        for (filter, config) in &self.filters {
            let env = self
                .filter_env
                .iter()
                .find(|(f, _)| f == filter)
                .map(|(_, names)| names.join(", "))
                .unwrap_or_default();
            let vm_extra = if env.is_empty() {
                String::new()
            } else {
                format!("        environment_variables: {{ host_env_keys: [{env}] }}\n")
            };
            out.push_str(&self.wasm_filter(filter, config, &vm_extra));
        }
        out
    }

    fn local_reply_config(&self) -> String {
        LOCAL_REPLY.to_string()
    }

    /// The `access_log` list: the JSON lines on stdout, and OpenTelemetry records when asked.
    fn access_log(&self, stdout: bool) -> String {
        let mut out = String::from("access_log:\n");
        if stdout {
            out.push_str(ACCESS_LOG_HEAD);
            for (field, value) in ACCESS_LOG_FIELDS {
                let _ = writeln!(out, "        {field}: \"{value}\"");
            }
        }
        if let Some(tracing) = self.tracing().filter(|t| t.access_log) {
            out.push_str(&tracing::otel_access_log(&tracing));
        }
        out
    }

    fn tracing(&self) -> Option<tracing::Tracing> {
        self.file.envoy.tracing.as_ref().map(|t| tracing::Tracing {
            cluster: t.cluster.clone(),
            service_name: t.service_name.clone(),
            sampling_percent: t.sampling_percent,
            access_log: t.access_log,
        })
    }

    fn stats_tags(&self) -> String {
        let mut out = String::new();
        for tag in llm_core::metrics::KNOWN_LABELS {
            let _ = writeln!(
                out,
                "- {{ tag_name: {tag}, regex: '(_{tag}=\\.=(.+?);\\.;)' }}"
            );
        }
        out
    }

    /// The routes from `x-llm-route` values to clusters, and (fragments) the API paths' own routes.
    fn routes(&self, fragments: bool) -> String {
        let timeout = &self.file.envoy.route_timeout;
        let mut out = String::from(
            "# llm_router publishes x-llm-route; these routes turn it into a cluster.\n",
        );
        for route in &self.routes {
            if let Some(comment) = &route.comment {
                let _ = writeln!(out, "# {comment}");
            }
            let _ = write!(
                out,
                "- match:\n    prefix: /\n    headers: [{{ name: x-llm-route, string_match: {{ exact: {} }} }}]\n",
                yaml_scalar(&route.value)
            );
            match &route.retry {
                None => {
                    let _ = writeln!(
                        out,
                        "  route: {{ cluster: {}, timeout: {timeout} }}",
                        route.cluster
                    );
                }
                Some((retries, retry_on, codes)) => {
                    let codes = if codes.is_empty() {
                        String::new()
                    } else {
                        let list: Vec<String> = codes.iter().map(u16::to_string).collect();
                        format!("      retriable_status_codes: [{}]\n", list.join(", "))
                    };
                    let _ = write!(
                        out,
                        r#"  route:
    cluster: {cluster}
    timeout: {timeout}
    retry_policy:
      retry_on: {retry_on}
{codes}      num_retries: {retries}
      retry_priority:
        name: envoy.retry_priorities.previous_priorities
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig
          update_frequency: 1
"#,
                        cluster = route.cluster,
                    );
                }
            }
        }
        if fragments {
            out.push_str(
                "# The API's paths: the LLM filters run for them (llm_router then sets x-llm-route).\n\
                 # Reached only when llm_router routed nothing, which it answers itself.\n",
            );
            for path in API_PATHS {
                let _ = writeln!(
                    out,
                    "- match: {{ prefix: {path} }}\n{}",
                    indent(UNKNOWN_PATH_REPLY, 2).trim_end()
                );
            }
        } else {
            out.push_str("# Everything llm_router did not route: not an LLM API path.\n- match: { prefix: / }\n");
            out.push_str(&indent(UNKNOWN_PATH_REPLY, 2));
        }
        out
    }

    /// One cluster. `anchor` (bootstraps only) lets clusters share one protocol-options block as a
    /// YAML anchor; fragments repeat it, so each cluster can be copied alone.
    fn cluster(&self, cluster: &Cluster, anchor: Option<&mut Option<(String, String)>>) -> String {
        let tls = cluster.endpoints.iter().any(|(_, u)| u.tls);
        let dns = cluster.endpoints.iter().any(|(_, u)| !u.is_ip());
        let kind = match (dns, cluster.endpoints.len()) {
            (false, _) => "STATIC",
            (true, 1) => "LOGICAL_DNS",
            (true, _) => "STRICT_DNS",
        };
        let mut out = String::new();
        if let Some(comment) = &cluster.comment {
            let _ = writeln!(out, "# {comment}");
        }
        let _ = writeln!(out, "- name: {}\n  type: {kind}", cluster.name);
        if dns {
            out.push_str("  dns_lookup_family: V4_PREFERRED\n");
        }
        let _ = writeln!(out, "  connect_timeout: {}", cluster.connect_timeout);
        if cluster.llm_provider {
            let _ = writeln!(
                out,
                "  per_connection_buffer_limit_bytes: {}",
                self.file.envoy.buffer_bytes
            );
        }
        // The ALPN offered must agree with the codec: a forced HTTP/1.1 cluster that offered h2
        // would get h2 from the server and fail with a protocol error.
        let (protocol, alpn) = match (cluster.http2, tls) {
            (Some(true), _) => (
                "explicit_http_config: { http2_protocol_options: {} }",
                "[h2]",
            ),
            (Some(false), _) | (None, false) => (
                "explicit_http_config: { http_protocol_options: {} }",
                "[http/1.1]",
            ),
            // Over TLS, whatever the provider offers by ALPN (h2 where it can).
            (None, true) => (
                "auto_config: { http2_protocol_options: {}, http_protocol_options: {} }",
                "[h2, http/1.1]",
            ),
        };
        if cluster.llm_provider {
            let block = self.provider_protocol_options(protocol);
            let mut none = None;
            let shared = anchor.is_some();
            let anchor = anchor.unwrap_or(&mut none);
            match anchor {
                _ if !shared => {
                    let _ = write!(
                        out,
                        "  typed_extension_protocol_options:\n{}",
                        indent(&block, 4)
                    );
                }
                Some((text, name)) if *text == block => {
                    let _ = writeln!(out, "  typed_extension_protocol_options: *{name}");
                }
                _ => {
                    let name = if anchor.is_none() {
                        "llm_provider_upstream".to_string()
                    } else {
                        format!(
                            "llm_provider_upstream_{}",
                            cluster.name.replace(['.', '-'], "_")
                        )
                    };
                    let _ = write!(
                        out,
                        "  typed_extension_protocol_options: &{name}\n{}",
                        indent(&block, 4)
                    );
                    *anchor = Some((block, name));
                }
            }
        } else if protocol.contains("http2") {
            let _ = write!(
                out,
                "  typed_extension_protocol_options:\n    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n      \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n      {protocol}\n"
            );
        }
        let _ = write!(
            out,
            "  load_assignment:\n    cluster_name: {}\n    endpoints:\n",
            cluster.name
        );
        let pooled = cluster.endpoints.len() > 1;
        for (priority, (provider, url)) in cluster.endpoints.iter().enumerate() {
            if pooled {
                let _ = writeln!(out, "    - priority: {priority}\n      lb_endpoints:");
            } else {
                out.push_str("    - lb_endpoints:\n");
            }
            let _ = writeln!(
                out,
                "      - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}",
                yaml_scalar(&url.host),
                url.port
            );
            let mut metadata = Vec::new();
            if let Some(provider) = provider {
                let gen_ai = self
                    .providers
                    .iter()
                    .find(|p| &p.name == provider)
                    .map_or("openai", |p| p.gen_ai_provider.as_str());
                metadata.push(format!(
                    "llm: {{ provider: {}, gen_ai_provider: {} }}",
                    yaml_scalar(provider),
                    yaml_scalar(gen_ai)
                ));
            }
            if tls && pooled {
                metadata.push(format!(
                    "envoy.transport_socket_match: {{ host: {} }}",
                    yaml_scalar(&url.host)
                ));
            }
            if !metadata.is_empty() {
                let _ = writeln!(
                    out,
                    "        metadata: {{ filter_metadata: {{ {} }} }}",
                    metadata.join(", ")
                );
            }
        }
        if tls {
            let mut hosts: Vec<&Url> = Vec::new();
            for (_, url) in &cluster.endpoints {
                if !hosts.iter().any(|h| h.host == url.host) {
                    hosts.push(url);
                }
            }
            if pooled {
                // One TLS context per provider host: SNI and the certificate name differ. The
                // default is the first one (Envoy wants an ALPN-capable default for auto_config).
                if let Some(host) = hosts.first() {
                    out.push_str(&indent(&self.tls_socket(host, alpn), 2));
                }
                out.push_str("  transport_socket_matches:\n");
                for host in hosts {
                    let name = yaml_scalar(&host.host);
                    let _ = write!(
                        out,
                        "  - name: {name}\n    match: {{ host: {name} }}\n{}",
                        indent(&self.tls_socket(host, alpn), 4)
                    );
                }
            } else if let Some(host) = hosts.first() {
                out.push_str(&indent(&self.tls_socket(host, alpn), 2));
            }
        }
        out
    }

    /// TLS to `url`'s host: SNI and the certificate's DNS name, or for an IP address no SNI and
    /// the certificate's IP address.
    fn tls_socket(&self, url: &Url, alpn: &str) -> String {
        let host = yaml_scalar(&url.host);
        let (sni, san_type) = if url.is_ip() {
            (String::new(), "IP_ADDRESS")
        } else {
            (format!("    sni: {host}\n"), "DNS")
        };
        format!(
            r#"transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
{sni}    common_tls_context:
      alpn_protocols: {alpn}
      validation_context:
        trusted_ca: {{ filename: {ca} }}
        match_typed_subject_alt_names:
        - san_type: {san_type}
          matcher: {{ exact: {host} }}
"#,
            ca = yaml_scalar(&self.file.envoy.ca_file)
        )
    }

    /// HttpProtocolOptions with llm_provider as upstream filter.
    fn provider_protocol_options(&self, protocol: &str) -> String {
        let mut key_values = String::new();
        let mut written: Vec<&str> = Vec::new();
        let mut host_env = Vec::new();
        for p in &self.providers {
            match (&p.api_key, &p.api_key_env) {
                (Some((env, key)), _) if !written.contains(&env.as_str()) => {
                    written.push(env);
                    let _ = writeln!(key_values, "          {env}: {}", yaml_scalar(key));
                }
                (Some(_), _) => {}
                (None, Some(env)) => host_env.push(env.clone()),
                (None, None) => {}
            }
            for (env, value) in &p.credential_env {
                match value {
                    Some(value) if !written.contains(&env.as_str()) => {
                        written.push(env);
                        let _ = writeln!(key_values, "          {env}: {}", yaml_scalar(value));
                    }
                    Some(_) => {}
                    None => host_env.push(env.clone()),
                }
            }
        }
        host_env.sort();
        host_env.dedup();
        host_env.retain(|env| !written.contains(&env.as_str()));
        let mut vm_extra = String::new();
        if !key_values.is_empty() {
            vm_extra.push_str(
                "        # DEMO ONLY: keys written here. Real keys come from Envoy's environment\n        # (host_env_keys), never from this file.\n        environment_variables:\n",
            );
            if !host_env.is_empty() {
                let _ = writeln!(
                    vm_extra,
                    "          host_env_keys: [{}]",
                    host_env.join(", ")
                );
            }
            let _ = write!(
                vm_extra,
                "          key_values:\n{}",
                indent(&key_values, 2)
            );
        } else if !host_env.is_empty() {
            let _ = writeln!(
                vm_extra,
                "        # Keys are read from Envoy's own environment; they never appear in this file.\n        environment_variables: {{ host_env_keys: [{}] }}",
                host_env.join(", ")
            );
        }
        let filter = self.wasm_filter("llm_provider", &self.provider_config, &vm_extra);
        format!(
            r#"envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
  "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
  {protocol}
  # llm_provider runs once per attempt, on the endpoint Envoy chose: each provider's wire format
  # and key (endpoint metadata llm.provider).
  http_filters:
{filter}  - name: envoy.filters.http.upstream_codec
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec
"#,
            filter = indent(&filter, 2)
        )
    }

    fn clusters(&self, fragments: bool) -> String {
        let mut anchor = None;
        let parts: Vec<String> = self
            .clusters
            .iter()
            .map(|c| self.cluster(c, (!fragments).then_some(&mut anchor)))
            .collect();
        parts.join("\n")
    }

    fn header(&self, what: &str) -> String {
        format!(
            "# {what}, generated by llm-config from {}.\n# Edit that file and generate again rather than editing this one.\n",
            self.source
        )
    }

    fn bootstrap_header(&self) -> String {
        let envoy = &self.file.envoy;
        let mut out = self.header("The LLM gateway's Envoy bootstrap");
        let _ = write!(
            out,
            "{WASM_DIR_COMMENT}{dir}/ (a relative path is from Envoy's working directory).\n#\n\
             #   LLM API      http://{listener}  ({paths})\n\
             #   Envoy admin  http://{admin}  (/stats/prometheus, /ready, ...)\n",
            dir = self.modules_dir(),
            listener = envoy.listener,
            paths = API_PATHS.map(|p| p.trim_start_matches("/v1")).join(" "),
            admin = envoy.admin,
        );
        for p in &self.providers {
            let scheme = if p.url.tls { "https" } else { "http" };
            let _ = writeln!(
                out,
                "#   provider     {} at {scheme}://{}:{} ({} format)",
                p.name,
                p.url.host,
                p.url.port,
                p.entry.get("format").and_then(Value::as_str).unwrap_or("?")
            );
        }
        out
    }

    /// A whole Envoy bootstrap.
    pub fn bootstrap(&self) -> String {
        let envoy = &self.file.envoy;
        let (listen_address, listen_port) =
            spec::socket(&envoy.listener, "").unwrap_or(("0.0.0.0".into(), 10000));
        let (admin_address, admin_port) =
            spec::socket(&envoy.admin, "").unwrap_or(("127.0.0.1".into(), 9901));
        let mut hcm = String::new();
        hcm.push_str(&self.local_reply_config());
        if let Some(tracing) = self.tracing() {
            hcm.push_str(&tracing::hcm_tracing(&tracing));
        }
        if envoy.access_log || self.tracing().is_some_and(|t| t.access_log) {
            hcm.push_str(&self.access_log(envoy.access_log));
        }
        hcm.push_str("http_filters:\n");
        hcm.push_str(&self.http_filters(false));
        hcm.push_str("- name: envoy.filters.http.router\n  typed_config:\n    \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\n");
        let _ = write!(
            hcm,
            "route_config:\n  name: llm_routes\n{}  virtual_hosts:\n  - name: llm\n    domains: [\"*\"]\n    routes:\n{}",
            indent(ORIGINAL_PATH, 2),
            indent(&self.routes(false), 4)
        );
        format!(
            r#"{header}
admin:
  address:
    socket_address: {{ address: {admin_scalar}, port_value: {admin_port} }}

# The filters' metrics carry labels in their names (`_model=.=gpt-4o;.;`); one rule per label turns
# them into real Prometheus labels.
stats_config:
  stats_tags:
{stats_tags}
static_resources:
  listeners:
  - name: llm
    address:
      socket_address: {{ address: {listen_scalar}, port_value: {listen_port} }}
    # Filters buffer request bodies; Envoy's default 1 MiB limit would answer 413 to long prompts.
    per_connection_buffer_limit_bytes: {buffer}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: llm
{hcm}
  clusters:
{clusters}"#,
            header = self.bootstrap_header(),
            admin_scalar = yaml_scalar(&admin_address),
            listen_scalar = yaml_scalar(&listen_address),
            stats_tags = indent(&self.stats_tags(), 2),
            buffer = envoy.buffer_bytes,
            hcm = indent(&hcm, 10),
            clusters = indent(&self.clusters(false), 2),
        ) + &self
            .tracing()
            .map_or(String::new(), |_| format!("\n{}", tracing::RUNTIME))
    }

    /// The pieces to merge into an existing Envoy, each under a key that says where it goes.
    pub fn fragments(&self, packaging: Packaging) -> String {
        let envoy = &self.file.envoy;
        let mut out = self.header("Fragments to merge into an existing Envoy");
        let _ = write!(
            out,
            r#"# Each key below is one piece; its comment says where it goes (docs/existing-envoy.md).

# The listener that serves the LLM API: filters read whole bodies, which Envoy buffers up to this.
listener:
  per_connection_buffer_limit_bytes: {buffer}

# In the HttpConnectionManager, before `envoy.filters.http.router`, in this order. (To gzip
# answers, put Envoy's compressor before them, with text/event-stream among its content types.)
http_filters:
{filters}
# In the HttpConnectionManager's route_config (top level):
route_config:
{original_path}
# First in the virtual host that serves the LLM API, before the routes already there.
routes:
{routes}
# On each existing route of that virtual host, never on the virtual host itself (the routes
# above would lose their filters too): the LLM filters step aside, so those routes need no key.
per_route_opt_out:
  typed_per_filter_config:
{opt_out}
# In the HttpConnectionManager: Envoy's own errors (timeouts, no healthy upstream) in the
# caller's API shape. Merge with your mappers if you have some.
{local_reply}
# In the HttpConnectionManager's access_log list (optional): one JSON line per request with the
# filters' facts{otel_log}.
{access_log}
{tracing}# In the bootstrap's stats_config.stats_tags: the filters' metric labels for Prometheus.
stats_tags:
{stats_tags}
# In static_resources.clusters (or your cluster source).
clusters:
{clusters}"#,
            buffer = envoy.buffer_bytes,
            filters = self.http_filters(true),
            original_path = indent(ORIGINAL_PATH, 2),
            routes = self.routes(true),
            opt_out = indent(&self.opt_out(packaging), 4),
            local_reply = self.local_reply_config().trim_end(),
            access_log = self.access_log(true).trim_end(),
            otel_log = if self.tracing().is_some_and(|t| t.access_log) {
                ", and an OpenTelemetry record"
            } else {
                ""
            },
            tracing = self.tracing().map_or(String::new(), |t| format!(
                "# In the HttpConnectionManager (top level): spans with the filters' facts. Where the\n# filters' facts are absent (your other routes) the tags and the span name are Envoy's own.\n# In your runtime: tracing.opentelemetry.min_flush_spans: 100 (batches of 100 spans).\n{}",
                tracing::hcm_tracing(&t)
            )),
            stats_tags = self.stats_tags(),
            clusters = self.clusters(true),
        );
        out
    }

    /// `typed_per_filter_config` entries that disable every downstream LLM filter on a route.
    fn opt_out(&self, packaging: Packaging) -> String {
        let mut out = String::new();
        let merged = [("llm_gateway", Value::Null)];
        let filters = match packaging {
            Packaging::Modules => &self.filters[..],
            Packaging::Gateway | Packaging::Native => &merged[..],
        };
        // jwt_authn too: it would take valid tokens of the same issuer off the app's requests.
        let jwt = self
            .file
            .envoy
            .jwt
            .as_ref()
            .map(|_| "envoy.filters.http.jwt_authn");
        for filter in jwt.into_iter().chain(filters.iter().map(|(f, _)| *f)) {
            let _ = writeln!(
                out,
                "{filter}: {{ \"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true }}"
            );
        }
        out
    }
}

/// A YAML plain scalar when safe, else double-quoted.
fn yaml_scalar(text: &str) -> String {
    // Plain only when no YAML reader (Envoy's yaml-cpp included) could take it for anything but
    // a string: a letter first, then letters, digits and `-_./`, and none of YAML 1.1's words.
    let reserved = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "nan", "inf",
    ];
    if text.parse::<std::net::Ipv4Addr>().is_ok() {
        return text.to_string();
    }
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !reserved.contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset of it).
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

const COMPRESSOR: &str = r#"# Compresses answers for clients that ask (accept-encoding: gzip) after every LLM filter has
# read them: llm_usage and llm_provider ask providers for uncompressed answers, so usage is
# counted from every answer. Streams are compressed chunk by chunk (each flushed as it goes).
- name: envoy.filters.http.compressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    response_direction_config:
      common_config:
        content_type: [application/json, text/event-stream]
    request_direction_config:
      common_config:
        enabled: { default_value: false, runtime_key: llm_request_compression_enabled }
    compressor_library:
      name: gzip
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip
"#;

const LOCAL_REPLY: &str = r#"# Errors Envoy itself produces (upstream timeout, connection failure, no healthy host, retries
# exhausted) answered in the caller's API shape instead of Envoy's plain text, on the API's paths
# only: other routes of the listener keep Envoy's answers. The filters' own errors carry no
# response flag and are left as they are.
local_reply_config:
  mappers:
  - filter:
      and_filter:
        filters:
        - response_flag_filter: { flags: [UT, UF, UH, UO, URX, UC, UMSDR] }
        - header_filter: { header: { name: ":path", string_match: { prefix: /v1/messages } } }
    body_format_override:
      json_format:
        type: error
        error: { type: api_error, message: "The gateway could not get an answer from the provider: %LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)" }
  - filter:
      and_filter:
        filters:
        - response_flag_filter: { flags: [UT, UF, UH, UO, URX, UC, UMSDR] }
        - or_filter:
            filters:
            - header_filter: { header: { name: ":path", string_match: { prefix: /v1/chat/completions } } }
            - header_filter: { header: { name: ":path", string_match: { prefix: /v1/completions } } }
            - header_filter: { header: { name: ":path", string_match: { prefix: /v1/embeddings } } }
            - header_filter: { header: { name: ":path", string_match: { prefix: /v1/responses } } }
            - header_filter: { header: { name: ":path", string_match: { prefix: /v1/models } } }
    body_format_override:
      json_format:
        error: { type: server_error, code: "%RESPONSE_CODE_DETAILS%", message: "The gateway could not get an answer from the provider: %LOCAL_REPLY_BODY%" }
"#;

const ACCESS_LOG_HEAD: &str = r#"- name: envoy.access_loggers.stdout
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
    log_format:
      json_format:
"#;

const ORIGINAL_PATH: &str = "# A client must not choose what the access log shows as its path (llm_provider sets this\n# header itself when it rewrites the path).\nrequest_headers_to_remove: [x-envoy-original-path]\n";

const UNKNOWN_PATH_REPLY: &str = r#"direct_response:
  status: 404
  body:
    inline_string: '{"error":{"message":"Unknown path. This gateway serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses, /v1/models and /v1/messages.","type":"invalid_request_error","param":null,"code":"unknown_url"}}'
response_headers_to_add:
- header: { key: content-type, value: application/json }
  append_action: OVERWRITE_IF_EXISTS_OR_ADD
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::yaml_to_json;

    const REAL: &str = r#"
providers:
  openai: { url: "https://api.openai.com", format: openai, api_key_env: OPENAI_API_KEY }
  anthropic: { url: "https://api.anthropic.com", format: anthropic, api_key_env: ANTHROPIC_API_KEY }
  local: { url: "http://10.0.0.5:8000", format: openai, host: vllm.internal }
pools:
  smart: { failover: [openai, anthropic], retriable_status_codes: [429] }
services:
  limits: { url: "http://127.0.0.1:8081", http2: true }
models:
- { name: gpt-4o, route: smart }
- { name: llama, route: local }
consumers:
- { name: a, keys: [{ sha256: 50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e }], usage_limits: [{ usd_per_day: 1 }] }
usage: { limits: [{ consumer: b, tokens_per_minute: 100 }] }
"#;

    fn bootstrap(text: &str) -> Value {
        let yaml = generate(text, "t.yaml", Packaging::Modules, Output::Bootstrap).unwrap();
        yaml_to_json(&yaml).unwrap()
    }

    fn cluster<'a>(config: &'a Value, name: &str) -> &'a Value {
        config["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no cluster {name}"))
    }

    fn filter_json(config: &Value, name: &str) -> Value {
        let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let filter = hcm["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap();
        serde_json::from_str(
            filter["typed_config"]["config"]["configuration"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn tracing_writes_the_tracer_its_tags_the_logger_and_the_collector() {
        let text = format!(
            "envoy:\n  tracing: {{ collector: \"http://otel.observability:4317\", sampling_percent: 5, access_log: true }}\n{REAL}"
        );
        let config = bootstrap(&text);
        let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let tracing = &hcm["tracing"];
        assert_eq!(tracing["provider"]["name"], "envoy.tracers.opentelemetry");
        let otel = &tracing["provider"]["typed_config"];
        assert_eq!(
            otel["grpc_service"]["envoy_grpc"]["cluster_name"],
            "otel_collector"
        );
        assert_eq!(otel["service_name"], "llm-gateway");
        assert_eq!(tracing["random_sampling"]["value"], 5);
        assert_eq!(tracing["spawn_upstream_span"], true);
        assert_eq!(tracing["operation"], tracing::SPAN_NAME);
        let tags = tracing["custom_tags"].as_array().unwrap();
        assert_eq!(tags.len(), tracing::SPAN_ATTRIBUTES.len());
        assert!(tags.iter().any(|t| t["tag"] == "gen_ai.usage.output_tokens"
            && t["value"] == "%FILTER_STATE(wasm.llm_output_tokens:PLAIN)%"));
        let loggers: Vec<&Value> = hcm["access_log"].as_array().unwrap().iter().collect();
        assert_eq!(loggers.len(), 2);
        assert_eq!(loggers[1]["name"], "envoy.access_loggers.open_telemetry");
        let collector = cluster(&config, "otel_collector");
        assert_eq!(collector["type"], "LOGICAL_DNS");
        assert!(collector["typed_extension_protocol_options"]
            .to_string()
            .contains("http2_protocol_options"));
        // Each provider's endpoints name their GenAI provider for the attempt spans.
        let openai = cluster(&config, "openai");
        let metadata = &openai["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"];
        assert_eq!(
            metadata["filter_metadata"]["llm"]["gen_ai_provider"],
            "openai"
        );
        let anthropic = cluster(&config, "anthropic");
        let metadata = &anthropic["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["metadata"];
        assert_eq!(
            metadata["filter_metadata"]["llm"]["gen_ai_provider"],
            "anthropic"
        );

        // Without the section: no tracer, no collector.
        let config = bootstrap(REAL);
        assert!(!config.to_string().contains("\"tracing\""));
        for (field, text) in [
            ("envoy.tracing.sampling_percent", "envoy:\n  tracing: { collector: \"http://127.0.0.1:4317\", sampling_percent: 150 }\n"),
            ("envoy.tracing.collector", "envoy:\n  tracing: { collector: \"grpc://x:4317\" }\n"),
            ("envoy.tracing.cluster", "envoy:\n  tracing: { collector: \"http://127.0.0.1:4317\", cluster: \"a b\" }\n"),
        ] {
            let err = generate(&format!("{text}{REAL}"), "t.yaml", Packaging::Modules, Output::Bootstrap)
                .unwrap_err();
            assert_eq!(err.path, field, "{err}");
        }
    }

    #[test]
    fn upstreams_get_the_transport_and_protocol_they_speak() {
        let config = bootstrap(REAL);
        let openai = cluster(&config, "openai");
        assert_eq!(openai["type"], "LOGICAL_DNS");
        let tls = &openai["transport_socket"]["typed_config"];
        assert_eq!(tls["sni"], "api.openai.com");
        let options = &openai["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(options["auto_config"].is_object(), "{options}");
        // A plain-HTTP server gets HTTP/1.1, never HTTP/2 it may not speak.
        let local = cluster(&config, "local");
        assert_eq!(local["type"], "STATIC");
        let options = &local["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(
            options["explicit_http_config"]["http_protocol_options"].is_object(),
            "{options}"
        );
        // A pool of two TLS providers: a TLS context per host, chosen by endpoint metadata.
        let pool = cluster(&config, "smart");
        assert_eq!(pool["type"], "STRICT_DNS");
        let matches = pool["transport_socket_matches"].as_array().unwrap();
        assert_eq!(matches.len(), 2);
        assert_eq!(
            matches[1]["transport_socket"]["typed_config"]["sni"],
            "api.anthropic.com"
        );
        let endpoints = pool["load_assignment"]["endpoints"].as_array().unwrap();
        assert_eq!(endpoints[1]["priority"], 1);
        let metadata = &endpoints[1]["lb_endpoints"][0]["metadata"]["filter_metadata"];
        assert_eq!(metadata["llm"]["provider"], "anthropic");
        assert_eq!(
            metadata["envoy.transport_socket_match"]["host"],
            "api.anthropic.com"
        );
        // gRPC service: HTTP/2, no llm_provider.
        let limits = cluster(&config, "limits");
        let options = &limits["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(options["explicit_http_config"]["http2_protocol_options"].is_object());
        assert!(options.get("http_filters").is_none());
    }

    #[test]
    fn pools_retry_on_the_next_priority() {
        let config = bootstrap(REAL);
        let hcm = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        let smart = routes
            .iter()
            .find(|r| r["match"]["headers"][0]["string_match"]["exact"] == "smart")
            .unwrap();
        let retry = &smart["route"]["retry_policy"];
        assert_eq!(retry["num_retries"], 1);
        assert_eq!(
            retry["retry_on"],
            "5xx,reset,connect-failure,retriable-status-codes"
        );
        assert_eq!(retry["retriable_status_codes"], serde_json::json!([429]));
        assert_eq!(
            retry["retry_priority"]["name"],
            "envoy.retry_priorities.previous_priorities"
        );
        assert_eq!(routes.last().unwrap()["direct_response"]["status"], 404);
    }

    #[test]
    fn filter_configs_are_assembled_from_the_file() {
        let config = bootstrap(REAL);
        let usage = filter_json(&config, "llm_usage");
        assert_eq!(usage["limits"][0]["consumer"], "b");
        assert_eq!(
            usage["limits"][1],
            serde_json::json!({"consumer": "a", "usd_per_day": 1})
        );
        let auth = filter_json(&config, "llm_auth");
        assert!(auth["consumers"][0].get("usage_limits").is_none());
        let router = filter_json(&config, "llm_router");
        assert_eq!(router["models"][0]["route"], "smart");
        // No section, no filter.
        let names: Vec<String> = config["static_resources"]["listeners"][0]["filter_chains"][0]
            ["filters"][0]["typed_config"]["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "envoy.filters.http.compressor",
                "llm_auth",
                "llm_router",
                "llm_usage",
                "envoy.filters.http.router"
            ]
        );
        // llm_provider learns each provider's host from its URL, unless the file names one.
        let openai = cluster(&config, "openai");
        let filters = &openai["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"];
        let provider: Value = serde_json::from_str(
            filters[0]["typed_config"]["config"]["configuration"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(provider["providers"]["openai"]["host"], "api.openai.com");
        assert_eq!(provider["providers"]["local"]["host"], "vllm.internal");
        assert_eq!(
            filters[0]["typed_config"]["config"]["vm_config"]["environment_variables"]
                ["host_env_keys"],
            serde_json::json!(["ANTHROPIC_API_KEY", "OPENAI_API_KEY"])
        );
    }

    #[test]
    fn fragments_opt_out_the_filters_of_the_packaging() {
        for (packaging, names) in [
            (
                Packaging::Modules,
                vec!["llm_auth", "llm_router", "llm_usage"],
            ),
            (Packaging::Gateway, vec!["llm_gateway"]),
            (Packaging::Native, vec!["llm_gateway"]),
        ] {
            let yaml = generate(REAL, "t.yaml", packaging, Output::Fragments).unwrap();
            let fragments = yaml_to_json(&yaml).unwrap();
            let opt_out = fragments["per_route_opt_out"]["typed_per_filter_config"]
                .as_object()
                .unwrap();
            let keys: Vec<&str> = opt_out.keys().map(String::as_str).collect();
            assert_eq!(keys, names, "{packaging:?}");
            let filters: Vec<&str> = fragments["http_filters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap())
                .collect();
            for name in names {
                assert!(filters.contains(&name), "{packaging:?}: {filters:?}");
            }
            // Every API path has a route of its own, after the x-llm-route ones.
            let routes = fragments["routes"].as_array().unwrap();
            for path in API_PATHS {
                assert!(
                    routes.iter().any(|r| r["match"]["prefix"] == path),
                    "{path}"
                );
            }
            assert!(!routes
                .iter()
                .any(|r| r["match"]["prefix"] == "/" && r.get("direct_response").is_some()));
        }
    }

    #[test]
    fn mistakes_are_named_by_field() {
        let base = "providers: {p: {url: 'http://127.0.0.1:1', format: openai}}\n";
        let consumer = "\nconsumers: [{name: c, keys: [{sha256: 50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e}]}]";
        let cases = [
            ("models: [{name: m, route: q}]", "models[0].route"),
            ("models: []\npools: {p: {failover: [p]}}", "pools.p"),
            (
                "models: []\npools: {q: {failover: [nope]}}",
                "pools.q.failover[0]",
            ),
            ("models: []\nrouter: {models: []}", "router.models"),
            ("models: []\nauth: {consumers: []}", "auth.consumers"),
            ("models: []", "consumers"),
            (
                "models: []\nservices: {p: {url: 'http://127.0.0.1:2'}}",
                "services.p",
            ),
            (
                "models: []\nservices: {'a b': {url: 'http://127.0.0.1:2'}}",
                "services.a b",
            ),
            (
                "models: []\nenvoy: {listener: 'localhost:80'}",
                "envoy.listener",
            ),
            (
                "models: []\nenvoy: {route_timeout: 5m}",
                "envoy.route_timeout",
            ),
            (
                "models: []\nconsumers: [{name: a, keys: [], usage_limits: [{consumer: b}]}]",
                "consumers[0].usage_limits[0].consumer",
            ),
        ];
        let with_consumer = [
            ("models: []\ndefault_provider: nope", "default_provider"),
            ("models: []\nenvoy: {jwt: {issuer: x, local_jwks: '{}'}}", "auth.jwt"),
            ("models: []\nauth: {jwt: {policies: [{}]}}", "envoy.jwt"),
            ("models: []\nenvoy: {jwt: {issuer: x}}\nauth: {jwt: {policies: [{}]}}", "envoy.jwt"),
            ("models: []\nguard: {checks: {m: {type: openai_moderation, cluster: p, model: x, api_key_env: 'A-B'}}}", "guard"),
        ];
        let all = cases
            .iter()
            .map(|(rest, path)| (rest.to_string(), *path))
            .chain(
                with_consumer
                    .iter()
                    .map(|(rest, path)| (format!("{rest}{consumer}"), *path)),
            );
        for (rest, path) in all {
            let err = plan(&format!("{base}{rest}"), "t")
                .err()
                .unwrap_or_else(|| panic!("{rest}"));
            assert_eq!(err.path, path, "{rest}: {err}");
        }
        let pool = |members: &str| {
            format!(
                "providers: {{a: {{url: 'http://127.0.0.1:1', format: openai}}, b: {{url: 'https://x.example', format: openai, http2: true}}, \
                 c: {{url: 'https://y.example', format: openai, http2: false}}}}\nmodels: []{consumer}\npools: {{p: {{failover: {members}}}}}"
            )
        };
        assert_eq!(
            plan(&pool("[a, b]"), "t").err().unwrap().path,
            "pools.p.failover"
        );
        assert_eq!(
            plan(&pool("[b, c]"), "t").err().unwrap().path,
            "pools.p.failover[1]"
        );
        // Another host for a provider whose Host header llm_provider sets.
        let moved = pool("[b, {provider: b, url: 'https://z.example'}]");
        assert_eq!(
            plan(&moved, "t").err().unwrap().path,
            "pools.p.failover[1].url"
        );
        let key = "providers: {a: {url: 'http://127.0.0.1:1', format: openai, api_key: sk-x}}\nmodels: []";
        let err = plan(key, "t").err().unwrap();
        assert_eq!(err.path, "providers.a.api_key");
        assert!(!err.to_string().contains("sk-x"), "{err}");
        // On purpose, a gateway without llm_auth.
        let open = "providers: {p: {url: 'http://127.0.0.1:1', format: openai}}\nmodels: []\nenvoy: {unauthenticated: true}";
        assert!(plan(open, "t").is_ok());
    }

    #[test]
    fn tls_offers_the_protocols_the_cluster_speaks() {
        let text = |http2: &str| {
            format!(
                "providers: {{p: {{url: 'https://api.example.com', format: openai{http2}}}, \
                 ip: {{url: 'https://10.1.2.3', format: openai}}}}\nmodels: []\nenvoy: {{unauthenticated: true}}"
            )
        };
        for (http2, alpn) in [
            ("", vec!["h2", "http/1.1"]),
            (", http2: true", vec!["h2"]),
            (", http2: false", vec!["http/1.1"]),
        ] {
            let config = bootstrap(&text(http2));
            let tls = &cluster(&config, "p")["transport_socket"]["typed_config"];
            assert_eq!(
                tls["common_tls_context"]["alpn_protocols"],
                serde_json::json!(alpn),
                "{http2}"
            );
        }
        // An IP address: no SNI, the certificate's IP checked.
        let config = bootstrap(&text(""));
        let tls = &cluster(&config, "ip")["transport_socket"]["typed_config"];
        assert!(tls.get("sni").is_none(), "{tls}");
        let san =
            &tls["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0];
        assert_eq!(san["san_type"], "IP_ADDRESS");
        assert_eq!(san["matcher"]["exact"], "10.1.2.3");
    }

    #[test]
    fn service_keys_reach_the_filters_that_read_them() {
        let text = "providers: {p: {url: 'http://127.0.0.1:1', format: openai}}\nmodels: []\n\
            envoy: {unauthenticated: true, listener: '[::]:10000'}\n\
            guard: {checks: {m: {type: openai_moderation, cluster: p, model: x, api_key_env: MODERATION_KEY}}}";
        let config = bootstrap(text);
        let hcm = &config["static_resources"]["listeners"][0];
        assert_eq!(hcm["address"]["socket_address"]["address"], "::");
        let guard = hcm["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "llm_guard")
            .unwrap();
        assert_eq!(
            guard["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"],
            serde_json::json!(["MODERATION_KEY"])
        );
        for packaging in [Packaging::Gateway, Packaging::Native] {
            let yaml = generate(text, "t", packaging, Output::Bootstrap).unwrap();
            let expected = match packaging {
                Packaging::Native => "# env MODERATION_KEY\n",
                _ => "host_env_keys: [MODERATION_KEY]",
            };
            assert!(yaml.contains(expected), "{packaging:?}:\n{yaml}");
        }
    }

    #[test]
    fn scalars() {
        assert_eq!(yaml_scalar("openai"), "openai");
        assert_eq!(yaml_scalar("127.0.0.1"), "127.0.0.1");
        assert_eq!(
            yaml_scalar("/etc/envoy/llm/llm_auth.wasm"),
            "/etc/envoy/llm/llm_auth.wasm"
        );
        for odd in [
            "true", "Yes", "ON", "n", "NULL", "12", "0x1f", ".inf", "::1", "a b", "it's", "a: b",
            "#x", "",
        ] {
            let scalar = yaml_scalar(odd);
            assert_ne!(scalar, odd, "{odd}");
            let parsed = yaml_to_json(&format!("k: {scalar}")).unwrap();
            assert_eq!(parsed["k"], odd, "{odd}");
        }
    }
}
