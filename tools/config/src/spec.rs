//! The gateway file: one concise YAML (or JSON) document describing providers, pools, models,
//! consumers and the filters' policies, from which the Envoy configuration is generated.
//!
//! The filter sections (`auth`, `router`, `guard`, `cache`, `pii`, `usage`) are each filter's own
//! configuration, exactly as its README documents it; the generator adds what it derives (the
//! model routes, the consumers, the providers) and checks the result with the filters' own code.

use llm_core::config::{parse, ConfigError};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The gateway file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default)]
    pub envoy: EnvoySettings,
    /// Providers by name: where each is and how llm_provider talks to it.
    pub providers: Map<String, Value>,
    /// llm_provider's provider for endpoints without `llm.provider` metadata.
    #[serde(default)]
    pub default_provider: Option<String>,
    /// Failover pools: one cluster whose priorities are providers, tried in order.
    #[serde(default)]
    pub pools: Map<String, Value>,
    /// Other upstreams the filters call (moderation, embeddings, Chroma, the rate-limit
    /// service, a JWKS server): plain clusters by name.
    #[serde(default)]
    pub services: Map<String, Value>,
    /// llm_router's model table; each `route` names a provider or a pool.
    pub models: Vec<Value>,
    /// Consumers for llm_auth; `usage_limits` of each go to llm_usage's `limits`.
    #[serde(default)]
    pub consumers: Vec<Value>,
    #[serde(default)]
    pub auth: Option<Map<String, Value>>,
    #[serde(default)]
    pub router: Option<Map<String, Value>>,
    #[serde(default)]
    pub guard: Option<Map<String, Value>>,
    #[serde(default)]
    pub cache: Option<Map<String, Value>>,
    #[serde(default)]
    pub pii: Option<Map<String, Value>>,
    #[serde(default)]
    pub usage: Option<Map<String, Value>>,
}

/// The Envoy around the filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvoySettings {
    /// `address:port` of the LLM listener.
    #[serde(default = "default_listener")]
    pub listener: String,
    /// `address:port` of Envoy's admin interface (bootstrap only).
    #[serde(default = "default_admin")]
    pub admin: String,
    /// Directory of the `.wasm` modules as Envoy sees it.
    #[serde(default = "default_modules")]
    pub modules: String,
    /// Route timeout for LLM requests (Envoy's default of 15 s cuts long answers).
    #[serde(default = "default_route_timeout")]
    pub route_timeout: String,
    /// Connect timeout of the generated clusters.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Largest request and answer Envoy buffers for the filters (its default is 1 MiB).
    #[serde(default = "default_buffer_bytes")]
    pub buffer_bytes: u64,
    /// gzip answers for clients that ask, after every filter has read them.
    #[serde(default = "yes")]
    pub compression: bool,
    /// The JSON access log on stdout, with the filters' facts.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// CA bundle for TLS to providers and services.
    #[serde(default = "default_ca_file")]
    pub ca_file: String,
    /// Envoy's jwt_authn in front of llm_auth, for JWT identities.
    #[serde(default)]
    pub jwt: Option<JwtSettings>,
    /// A gateway without llm_auth lets every client spend the provider keys: only on purpose.
    #[serde(default)]
    pub unauthenticated: bool,
    /// OpenTelemetry traces (and access-log records) to an OTLP/gRPC collector.
    #[serde(default)]
    pub tracing: Option<TracingSettings>,
}

/// Where OpenTelemetry spans go; the generator writes the tracer, its custom tags and a cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// `http(s)://host:port` of the collector's OTLP/gRPC endpoint (4317 by convention).
    pub collector: String,
    /// The collector's Envoy cluster name.
    #[serde(default = "default_collector_cluster")]
    pub cluster: String,
    /// `service.name` of the spans and records.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Percent of requests traced when the client's trace context has not decided (0-100).
    #[serde(default = "default_sampling_percent")]
    pub sampling_percent: f64,
    /// Also an OpenTelemetry access-log record per request, linked to its span.
    #[serde(default)]
    pub access_log: bool,
}

fn default_collector_cluster() -> String {
    "otel_collector".into()
}
fn default_service_name() -> String {
    "llm-gateway".into()
}
fn default_sampling_percent() -> f64 {
    100.0
}

impl Default for EnvoySettings {
    fn default() -> Self {
        EnvoySettings {
            listener: default_listener(),
            admin: default_admin(),
            modules: default_modules(),
            route_timeout: default_route_timeout(),
            connect_timeout: default_connect_timeout(),
            buffer_bytes: default_buffer_bytes(),
            compression: true,
            access_log: true,
            ca_file: default_ca_file(),
            jwt: None,
            unauthenticated: false,
            tracing: None,
        }
    }
}

/// One JWT issuer, verified by Envoy's jwt_authn; its payload reaches llm_auth as metadata.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    pub issuer: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    /// A JWKS document written inline (tests and demos).
    #[serde(default)]
    pub local_jwks: Option<String>,
    /// The issuer's JWKS URL, fetched through the service named `jwks_service`.
    #[serde(default)]
    pub remote_jwks: Option<String>,
    #[serde(default)]
    pub jwks_service: Option<String>,
}

fn default_listener() -> String {
    "0.0.0.0:10000".into()
}
fn default_admin() -> String {
    "127.0.0.1:9901".into()
}
fn default_modules() -> String {
    "/etc/envoy/llm".into()
}
fn default_route_timeout() -> String {
    "300s".into()
}
fn default_connect_timeout() -> String {
    "5s".into()
}
fn default_buffer_bytes() -> u64 {
    8 * 1024 * 1024
}
fn default_ca_file() -> String {
    "/etc/ssl/certs/ca-certificates.crt".into()
}
fn yes() -> bool {
    true
}

/// The generator's own fields of a provider; the rest of the entry is llm_provider's.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderPlacement {
    /// `http(s)://host[:port]` of the provider.
    pub url: String,
    /// The Envoy cluster's name (default: the provider's name).
    #[serde(default)]
    pub cluster: Option<String>,
    /// DEMO ONLY: the key itself, given to the filter as `api_key_env`'s variable.
    #[serde(default)]
    pub api_key: Option<String>,
    /// HTTP/2 to the provider; default: negotiated by ALPN over TLS, HTTP/1.1 without TLS.
    #[serde(default)]
    pub http2: Option<bool>,
    /// `gen_ai.provider.name` in traces (default from `format`: openai, azure.ai.openai,
    /// anthropic); name the real provider behind an OpenAI-compatible server (e.g. `groq`).
    #[serde(default)]
    pub gen_ai_provider: Option<String>,
    /// DEMO ONLY (bedrock): the AWS key pair itself, given to the filter as
    /// `aws_credentials_env`'s variables.
    #[serde(default)]
    pub aws_credentials: Option<DemoAwsCredentials>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoAwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for DemoAwsCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoAwsCredentials(<redacted>)")
    }
}

/// Generator fields taken out of a provider entry before the rest goes to llm_provider.
pub const PLACEMENT_FIELDS: [&str; 6] = [
    "url",
    "cluster",
    "api_key",
    "http2",
    "gen_ai_provider",
    "aws_credentials",
];

/// `gen_ai.provider.name` (OpenTelemetry's well-known values) for an llm_provider wire format.
pub fn gen_ai_provider(format: &str) -> &'static str {
    match format {
        "azure_openai" => "azure.ai.openai",
        "anthropic" => "anthropic",
        "gemini" => "gcp.gemini",
        "bedrock" => "aws.bedrock",
        "vertex_ai" => "gcp.vertex_ai",
        _ => "openai",
    }
}

/// A failover pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    #[serde(default)]
    pub cluster: Option<String>,
    /// Providers in the order they are tried: a name, or `{provider, url}` for the same provider
    /// at another endpoint.
    pub failover: Vec<PoolMember>,
    /// Retries after the first attempt (default: one per further member).
    #[serde(default)]
    pub retries: Option<u32>,
    /// Envoy's `retry_on` (default `5xx,reset,connect-failure`).
    #[serde(default)]
    pub retry_on: Option<String>,
    /// Status codes that also move to the next member (`retriable-status-codes`), e.g. [429].
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PoolMember {
    Name(String),
    At(PoolEndpoint),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolEndpoint {
    pub provider: String,
    pub url: String,
}

/// A plain upstream the filters call.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub url: String,
    /// HTTP/2 (gRPC services such as llm-ratelimit); default: as for providers.
    #[serde(default)]
    pub http2: Option<bool>,
    #[serde(default)]
    pub connect_timeout: Option<String>,
}

/// Reads a gateway file (YAML 1.2, which includes JSON). Errors name the line or the field.
pub fn load(text: &str) -> Result<GatewayFile, ConfigError> {
    let json = yaml_to_json(text)?;
    let bytes = serde_json::to_vec(&json).map_err(|err| ConfigError::new("", err.to_string()))?;
    parse(&bytes)
}

/// A YAML document as JSON (keys in order). Anchors and aliases resolve; tags are ignored.
pub fn yaml_to_json(text: &str) -> Result<Value, ConfigError> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text)
        .map_err(|err| ConfigError::new("", format!("not valid YAML: {err}")))?;
    let mut docs = docs.into_iter();
    let doc = docs.next().unwrap_or(Yaml::Null);
    if docs.next().is_some() {
        return Err(ConfigError::new(
            "",
            "one YAML document expected, found several",
        ));
    }
    fn convert(yaml: Yaml, path: &str) -> Result<Value, ConfigError> {
        Ok(match yaml {
            Yaml::Null => Value::Null,
            Yaml::Boolean(b) => Value::Bool(b),
            Yaml::Integer(i) => Value::from(i),
            Yaml::Real(text) => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| ConfigError::new(path, "not a finite number"))?,
            Yaml::String(s) => Value::String(s),
            Yaml::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| convert(item, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Yaml::Hash(map) => {
                let mut out = Map::new();
                for (key, value) in map {
                    let key = match key {
                        Yaml::String(s) => s,
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => return Err(ConfigError::new(path, "a key that is not a string")),
                    };
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let value = convert(value, &child)?;
                    out.insert(key, value);
                }
                Value::Object(out)
            }
            Yaml::Alias(_) | Yaml::BadValue => {
                return Err(ConfigError::new(path, "an unresolved alias or a bad value"))
            }
        })
    }
    convert(doc, "")
}

/// A parsed `http(s)://host[:port]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Url {
    pub fn parse(text: &str, path: &str) -> Result<Url, ConfigError> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(ConfigError::new(
                path,
                "must start with http:// or https://",
            ));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(ConfigError::new(
                path,
                "scheme, host and port only (a path prefix goes in the provider's `base_path`)",
            ));
        }
        // `[v6]` or `[v6]:port`; otherwise the last `:` separates the port.
        let split = if rest.starts_with('[') {
            rest.rsplit_once("]:")
                .map(|(h, p)| (h.trim_start_matches('['), p))
        } else {
            rest.rsplit_once(':')
        };
        let (host, port) = match split {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ConfigError::new(path, "port must be 1 to 65535"))?;
                (host, port)
            }
            _ => (rest, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !valid {
            return Err(ConfigError::new(
                path,
                "host is not a DNS name or an IP address",
            ));
        }
        Ok(Url {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// An IP literal, for which Envoy needs no DNS (a STATIC cluster).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }
}

/// A name Envoy's YAML takes as it is: a cluster, provider, pool or service name.
pub fn plain_name(text: &str, path: &str) -> Result<(), ConfigError> {
    let valid = !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            "use 1-128 letters, digits, `_`, `-` or `.`",
        ))
    }
}

/// An Envoy duration in seconds (`300s`, `0.5s`).
pub fn duration(text: &str, path: &str) -> Result<(), ConfigError> {
    let number = text.strip_suffix('s').unwrap_or("");
    let valid = !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.parse::<f64>().is_ok_and(|v| v > 0.0);
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            "a duration in seconds, like `300s` or `0.5s`",
        ))
    }
}

/// An environment variable's name.
pub fn env_name(text: &str, path: &str) -> Result<(), ConfigError> {
    let mut chars = text.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(path, "not an environment variable name"))
    }
}

/// `address:port` of a listener or the admin interface.
pub fn socket(text: &str, path: &str) -> Result<(String, u16), ConfigError> {
    let (address, port) = text
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::new(path, "must be address:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ConfigError::new(path, "port must be 0 to 65535"))?;
    let address = address.trim_start_matches('[').trim_end_matches(']');
    if address.parse::<std::net::IpAddr>().is_err() {
        return Err(ConfigError::new(path, "address must be an IP address"));
    }
    Ok((address.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let url = Url::parse("https://api.openai.com", "u").unwrap();
        assert_eq!(
            (url.tls, url.host.as_str(), url.port),
            (true, "api.openai.com", 443)
        );
        let url = Url::parse("http://127.0.0.1:18080/", "u").unwrap();
        assert_eq!((url.tls, url.port, url.is_ip()), (false, 18080, true));
        let url = Url::parse("http://[::1]:8000", "u").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8000));
        for bad in [
            "api.openai.com",
            "https://api.openai.com/v1",
            "http://h:0",
            "http://h:x",
            "ftp://h",
        ] {
            assert!(Url::parse(bad, "u").is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases_resolve() {
        let json = yaml_to_json("a: &x {b: 1}\nc: *x\n").unwrap();
        assert_eq!(json["c"]["b"], 1);
    }

    #[test]
    fn yaml_errors_name_the_place() {
        let err = load("providers: {}\nmodels: []\nenvoy: {listner: x}\n").unwrap_err();
        assert_eq!(err.path, "envoy.listner");
        let err = load("providers: [\n").unwrap_err();
        assert!(err.message.contains("not valid YAML"), "{err}");
    }
}
