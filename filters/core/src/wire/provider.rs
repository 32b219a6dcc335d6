//! `llm_provider`: adapts each upstream attempt to the provider Envoy chose for it (wire format,
//! credential, path and host), so one pool can fail over between OpenAI- and Anthropic-format providers.

use crate::anthropic::{chat_request_to_messages, RequestOptions};
use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind, LocalReply};
use crate::bedrock::{chat_request_to_converse, AwsCredentials};
use crate::config::ConfigError;
use crate::count_tokens::count_tokens_reply;
use crate::gemini::chat_request_to_gemini;
use crate::messages_via_chat::messages_request_to_chat;
use crate::pattern::Pattern;
use crate::request::{read_fields, replace_model};
use crate::responses::{responses_request_to_chat, responses_request_to_messages};
pub use crate::translate::{AnswerTranslation, ChatSource, StreamTranslation};
use crate::vertex::{ServiceAccount, TokenEndpoint};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The filter's configuration, as written in Envoy's `configuration` field.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Providers by name: the value of an endpoint's `metadata.filter_metadata.llm.provider`.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderEntry>,
    /// Provider for endpoints without that metadata.
    #[serde(default)]
    pub default_provider: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// OpenAI and OpenAI-compatible servers (vLLM, Ollama, ...).
    Openai,
    AzureOpenai,
    Anthropic,
    /// Google's Gemini API (`generateContent`), every client API translated through Chat.
    Gemini,
    /// AWS Bedrock's Converse API, SigV4-signed (or a Bedrock API key), every client API
    /// translated through Chat.
    Bedrock,
    /// Google Vertex AI: Gemini models (as `gemini`) and Claude models (as `anthropic`, on
    /// `rawPredict`), with OAuth2 access tokens from a service-account key.
    VertexAi,
}

/// Bedrock: the environment variables holding the AWS credentials SigV4 signs with. Without the
/// object, AWS's own names (the session token's too); an object names its variables, and a session
/// token only when it names one.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentialsEnv {
    #[serde(default = "default_access_key_id_env")]
    pub access_key_id: String,
    #[serde(default = "default_secret_access_key_env")]
    pub secret_access_key: String,
    /// Temporary credentials' session token; used when the variable is set.
    #[serde(default)]
    pub session_token: Option<String>,
}

fn default_access_key_id_env() -> String {
    "AWS_ACCESS_KEY_ID".into()
}

fn default_secret_access_key_env() -> String {
    "AWS_SECRET_ACCESS_KEY".into()
}

impl Default for AwsCredentialsEnv {
    fn default() -> Self {
        AwsCredentialsEnv {
            access_key_id: default_access_key_id_env(),
            secret_access_key: default_secret_access_key_env(),
            session_token: Some("AWS_SESSION_TOKEN".into()),
        }
    }
}

/// How `/v1/responses` reaches an OpenAI-format provider.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResponsesApi {
    /// Passed through: the provider serves the Responses API itself (OpenAI, Azure OpenAI), with its
    /// server-side state and hosted tools.
    #[default]
    Native,
    /// Translated to Chat Completions (for OpenAI-compatible servers without the Responses API;
    /// stateless).
    Translate,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub format: WireFormat,
    /// Environment variable (in the Wasm VM) holding the provider's API key. None: send no credential.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `:authority` to send (the provider's host name).
    #[serde(default)]
    pub host: Option<String>,
    /// Replaces the `/v1` prefix of the path, e.g. `/openai/v1` or `/api/v1`.
    #[serde(default)]
    pub base_path: Option<String>,
    /// Model names to send this provider instead of the requested ones.
    #[serde(default)]
    pub model_map: BTreeMap<String, String>,
    /// Azure OpenAI: the `api-version` query parameter (required for azure_openai).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Azure OpenAI: deployment per model (default: the model name).
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// Anthropic: `anthropic-version` header (default 2023-06-01).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Anthropic: `max_tokens` when an OpenAI request sets none (Anthropic requires it).
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
    /// Client headers to pass on besides [`FORWARDED_BY_DEFAULT`]: names, or prefixes ending in `*`
    /// (`anthropic-beta`, `openai-organization`, `x-mock-*`). Every other client header is removed.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// OpenAI and Azure OpenAI: `native` (the default) passes `/v1/responses` through to a provider
    /// that serves it; `translate` turns it into Chat Completions.
    #[serde(default)]
    pub responses_api: Option<ResponsesApi>,
    /// The most output tokens each model (a name or a glob, e.g. `gpt-4o*`) produces: a translated
    /// request asking for more is capped (Claude Code asks for 32,000; gpt-4o refuses more than
    /// 16,384). Beside these, OpenAI's published limits for GPT-4o, GPT-4.1 and GPT-3.5 apply.
    #[serde(default)]
    pub max_output_tokens: BTreeMap<String, u64>,
    /// Bedrock: the AWS region (required), e.g. `us-east-1`; the host defaults to
    /// `bedrock-runtime.{region}.amazonaws.com`.
    #[serde(default)]
    pub region: Option<String>,
    /// Bedrock: where the SigV4 credentials are (default: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, and `AWS_SESSION_TOKEN` when set). With `api_key_env` instead, a
    /// Bedrock API key is sent as a bearer token and nothing is signed.
    #[serde(default)]
    pub aws_credentials_env: Option<AwsCredentialsEnv>,
    /// Vertex AI: the Google Cloud project (required).
    #[serde(default)]
    pub project: Option<String>,
    /// Vertex AI: the location (required), e.g. `us-central1`, `us-east5` or `global`; the host
    /// defaults to `{location}-aiplatform.googleapis.com`.
    #[serde(default)]
    pub location: Option<String>,
    /// Vertex AI: the environment variable holding the service-account key file's JSON (required).
    #[serde(default)]
    pub service_account_env: Option<String>,
    /// Vertex AI: the Envoy cluster that reaches the key's token endpoint (required), e.g. one
    /// for `oauth2.googleapis.com:443` with TLS.
    #[serde(default)]
    pub token_cluster: Option<String>,
}

/// Client headers every provider receives: content negotiation, the SDKs' own telemetry, request
/// ids and trace context. Everything else a client sends (`openai-organization`, `openai-project`,
/// `anthropic-beta`, billing and feature headers among them) reaches the provider only when its
/// `forward_headers` names it: the gateway's key must not be steered by the client. Envoy's own
/// `x-envoy-*` headers (the access log reads `x-envoy-original-path`) and the pseudo-headers stay;
/// `x-forwarded-*` (client addresses, internal topology) go to no third party unless listed.
pub const FORWARDED_BY_DEFAULT: [&str; 14] = [
    "content-type",
    "content-length",
    "accept",
    "user-agent",
    "anthropic-version",
    "idempotency-key",
    "x-request-id",
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-*",
    "x-stainless-*",
    "x-envoy-*",
];

/// A header name, or a prefix when it ends in `*`.
fn header_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// A credential: never printed, not even in debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The credential itself, for the header or signature that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
struct Provider {
    name: String,
    format: WireFormat,
    api_key: Option<Secret>,
    host: Option<String>,
    base_path: Option<String>,
    model_map: HashMap<String, String>,
    api_version: String,
    deployments: HashMap<String, String>,
    anthropic_version: String,
    default_max_tokens: u64,
    forward_headers: Vec<String>,
    responses_api: ResponsesApi,
    max_output_tokens: Vec<(Pattern, u64)>,
    /// Bedrock: the region requests are signed for.
    region: String,
    /// Bedrock: SigV4 credentials (None with a Bedrock API key).
    aws: Option<AwsCredentials>,
    /// Vertex AI: where requests go and how tokens are got.
    vertex: Option<VertexSettings>,
}

#[derive(Debug, Clone)]
struct VertexSettings {
    project: String,
    location: String,
    account: ServiceAccount,
    token_cluster: String,
}

/// Where a Vertex AI provider's access tokens come from, for the filter's background refresh.
#[derive(Debug, Clone)]
pub struct TokenSource {
    pub provider: String,
    /// The shared-data key its current token is kept under (one for every worker).
    pub shared_key: String,
    pub cluster: String,
    pub endpoint: TokenEndpoint,
    pub account: ServiceAccount,
}

/// OpenAI's published output limits, for models whose requests may arrive from clients written for
/// other models (a Messages client's `max_tokens` is chosen for Claude).
fn known_output_limit(model: &str) -> Option<u64> {
    let model = model.rsplit('/').next().unwrap_or(model);
    if model.starts_with("gpt-4o") || model.starts_with("chatgpt-4o") {
        Some(16_384)
    } else if model.starts_with("gpt-4.1") {
        Some(32_768)
    } else if model.starts_with("gpt-3.5-turbo") || model.starts_with("gpt-4-turbo") {
        Some(4_096)
    } else {
        None
    }
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Providers {
    providers: Vec<Provider>,
    by_name: HashMap<String, usize>,
    default: Option<usize>,
}

/// The API the client spoke, from the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientApi {
    Chat,
    Completions,
    Embeddings,
    Responses,
    Messages,
    CountTokens,
    /// Anything else (e.g. `GET /v1/models`): credentials and path mapping only.
    Other,
}

impl ClientApi {
    pub fn from_path(path: &str) -> Self {
        match path.split('?').next().unwrap_or(path) {
            "/v1/chat/completions" => ClientApi::Chat,
            "/v1/completions" => ClientApi::Completions,
            "/v1/embeddings" => ClientApi::Embeddings,
            "/v1/responses" => ClientApi::Responses,
            "/v1/messages" => ClientApi::Messages,
            "/v1/messages/count_tokens" => ClientApi::CountTokens,
            _ => ClientApi::Other,
        }
    }

    fn flavor(self) -> ApiFlavor {
        match self {
            ClientApi::Messages | ClientApi::CountTokens => ApiFlavor::Anthropic,
            _ => ApiFlavor::OpenAi,
        }
    }
}

/// One attempt: which provider, which client API, which path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    provider: usize,
    pub api: ClientApi,
    path: String,
}

/// Header changes for an attempt. Headers persist across attempts, so every credential header is
/// removed and the one this provider needs set again: replace semantics, never add.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderPlan {
    pub path: Option<String>,
    pub authority: Option<String>,
    pub remove: Vec<&'static str>,
    pub set: Vec<(&'static str, String)>,
    /// Set only when the request does not carry the header already (the client's value wins).
    pub set_if_absent: Vec<(&'static str, String)>,
}

/// The body for an attempt, and how to treat the response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BodyPlan {
    pub new_body: Option<Vec<u8>>,
    /// The model this provider will see.
    pub model: Option<String>,
    /// Set when the provider answers in another API than the client's.
    pub translate_response: Option<AnswerTranslation>,
    /// The gateway answers this attempt itself (token counting for providers without the endpoint).
    pub answer: Option<LocalReply>,
    /// The request streams though nothing is translated (a Messages request to Claude on Vertex
    /// AI, whose path says so).
    pub stream: bool,
}

/// The API a translated attempt sends to its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Chat,
    Messages,
    Gemini,
    Converse,
    /// Vertex AI: Gemini or Messages, by the model's publisher.
    Vertex,
}

/// Credential headers: all removed on every attempt before the provider's own is set.
pub const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "x-amz-security-token",
];

/// Reads a credential from the environment; a variable that is not set names `field`.
fn credential(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    field: String,
) -> Result<Secret, ConfigError> {
    if var.is_empty() {
        return Err(ConfigError::new(field, "must name an environment variable"));
    }
    match env(var).filter(|v| !v.trim().is_empty()) {
        Some(value) => Ok(Secret(value.trim().to_string())),
        None => Err(ConfigError::new(
            field,
            format!(
                "environment variable `{var}` is not set in the Wasm VM: export it and list it in vm_config.environment_variables.host_env_keys"
            ),
        )),
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Providers {
    /// `env` reads the VM's environment (`vm_config.environment_variables`).
    pub fn compile(
        config: ProviderConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Providers, ConfigError> {
        if config.providers.is_empty() {
            return Err(ConfigError::new(
                "providers",
                "configure at least one provider",
            ));
        }
        let mut providers = Vec::new();
        let mut by_name = HashMap::new();
        for (name, entry) in config.providers {
            let at = |field: &str| format!("providers.{name}.{field}");
            if !plain_name(&name) {
                return Err(ConfigError::new(
                    format!("providers.{name}"),
                    "provider names are letters, digits, '-', '_' or '.'",
                ));
            }
            let api_key = match &entry.api_key_env {
                None => None,
                Some(var) => Some(credential(env, var, at("api_key_env"))?),
            };
            let bedrock = entry.format == WireFormat::Bedrock;
            let vertex = if entry.format == WireFormat::VertexAi {
                if entry.api_key_env.is_some() {
                    return Err(ConfigError::new(
                        at("api_key_env"),
                        "not for vertex_ai, which takes a service account (service_account_env)",
                    ));
                }
                let required = |value: &Option<String>, field: &str, example: &str| {
                    value
                        .clone()
                        .filter(|v| crate::vertex::plain_segment(v))
                        .ok_or_else(|| {
                            ConfigError::new(
                                at(field),
                                format!("required for vertex_ai: {example} (lowercase letters, digits, '-')"),
                            )
                        })
                };
                let project = required(&entry.project, "project", "the Google Cloud project id")?;
                let location = required(
                    &entry.location,
                    "location",
                    "e.g. \"us-central1\" or \"global\"",
                )?;
                let var = entry.service_account_env.clone().ok_or_else(|| {
                    ConfigError::new(
                        at("service_account_env"),
                        "required for vertex_ai: the environment variable holding the service-account key file's JSON",
                    )
                })?;
                let key = credential(env, &var, at("service_account_env"))?;
                let account = ServiceAccount::parse(key.expose()).map_err(|problem| {
                    ConfigError::new(
                        at("service_account_env"),
                        format!("environment variable `{var}` {problem}"),
                    )
                })?;
                let token_cluster = entry
                    .token_cluster
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or_else(|| {
                        ConfigError::new(
                            at("token_cluster"),
                            "required for vertex_ai: the Envoy cluster of the token endpoint (oauth2.googleapis.com)",
                        )
                    })?;
                Some(VertexSettings {
                    project,
                    location,
                    account,
                    token_cluster,
                })
            } else {
                let stray = [
                    ("project", entry.project.is_some()),
                    ("location", entry.location.is_some()),
                    ("service_account_env", entry.service_account_env.is_some()),
                    ("token_cluster", entry.token_cluster.is_some()),
                ];
                if let Some((field, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::new(at(field), "only valid for vertex_ai"));
                }
                None
            };
            let (region, aws) = if bedrock {
                let region = entry.region.clone().unwrap_or_default();
                if region.is_empty()
                    || !region
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    return Err(ConfigError::new(
                        at("region"),
                        "required for bedrock: an AWS region such as \"us-east-1\"",
                    ));
                }
                let aws = match (&entry.api_key_env, &entry.aws_credentials_env) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::new(
                            at("aws_credentials_env"),
                            "give api_key_env (a Bedrock API key) or aws_credentials_env (SigV4), not both",
                        ))
                    }
                    (Some(_), None) => None,
                    (None, vars) => {
                        let vars = vars.clone().unwrap_or_default();
                        let field = |f: &str| at(&format!("aws_credentials_env.{f}"));
                        Some(AwsCredentials {
                            access_key_id: credential(
                                env,
                                &vars.access_key_id,
                                field("access_key_id"),
                            )?,
                            secret_access_key: credential(
                                env,
                                &vars.secret_access_key,
                                field("secret_access_key"),
                            )?,
                            session_token: vars
                                .session_token
                                .as_deref()
                                .and_then(env)
                                .map(|t| t.trim().to_string())
                                .filter(|t| !t.is_empty())
                                .map(Secret),
                        })
                    }
                };
                if let Some(host) = &entry.host {
                    let plain = !host.is_empty()
                        && host
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
                    if !plain {
                        return Err(ConfigError::new(
                            at("host"),
                            "a host name (and port), without scheme or path: it is signed",
                        ));
                    }
                }
                (region, aws)
            } else {
                if entry.region.is_some() || entry.aws_credentials_env.is_some() {
                    let field = if entry.region.is_some() {
                        "region"
                    } else {
                        "aws_credentials_env"
                    };
                    return Err(ConfigError::new(at(field), "only valid for bedrock"));
                }
                (String::new(), None)
            };
            if let Some(base) = &entry.base_path {
                if !base.starts_with('/') || base.ends_with('/') {
                    return Err(ConfigError::new(
                        at("base_path"),
                        "must start with '/' and not end with '/'",
                    ));
                }
            }
            let azure = entry.format == WireFormat::AzureOpenai;
            let anthropic = entry.format == WireFormat::Anthropic;
            if azure && entry.api_version.is_none() {
                return Err(ConfigError::new(
                    at("api_version"),
                    "required for azure_openai, e.g. \"2024-10-21\"",
                ));
            }
            if !azure && entry.api_version.is_some() {
                return Err(ConfigError::new(
                    at("api_version"),
                    "only valid for azure_openai",
                ));
            }
            if !azure && !entry.deployments.is_empty() {
                return Err(ConfigError::new(
                    at("deployments"),
                    "only valid for azure_openai",
                ));
            }
            if (anthropic || entry.format == WireFormat::Gemini || bedrock || vertex.is_some())
                && entry.responses_api.is_some()
            {
                return Err(ConfigError::new(
                    at("responses_api"),
                    "only valid for openai and azure_openai (Anthropic, Gemini, Bedrock and Vertex AI providers always get /v1/responses translated)",
                ));
            }
            if !anthropic
                && (entry.anthropic_version.is_some() || entry.default_max_tokens.is_some())
            {
                let field = if entry.anthropic_version.is_some() {
                    "anthropic_version"
                } else {
                    "default_max_tokens"
                };
                return Err(ConfigError::new(at(field), "only valid for anthropic"));
            }
            if entry.default_max_tokens == Some(0) {
                return Err(ConfigError::new(
                    at("default_max_tokens"),
                    "must be greater than 0",
                ));
            }
            let mut forward_headers = Vec::new();
            for (i, header) in entry.forward_headers.iter().enumerate() {
                let header = header.trim().to_ascii_lowercase();
                let stem = header.strip_suffix('*').unwrap_or(&header);
                let credential = CREDENTIAL_HEADERS
                    .iter()
                    .any(|c| header_matches(&header, c));
                if stem.is_empty()
                    || !stem
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    || credential
                    || header.starts_with(crate::contract::HEADER_PREFIX)
                {
                    return Err(ConfigError::new(
                        format!("providers.{name}.forward_headers[{i}]"),
                        "a header name or a prefix ending in `*` (letters, digits, '-', '_'); never a credential or x-llm-* header",
                    ));
                }
                forward_headers.push(header);
            }
            let mut max_output_tokens = Vec::new();
            for (model, limit) in entry.max_output_tokens {
                if model.is_empty() || limit == 0 {
                    return Err(ConfigError::new(
                        format!("providers.{name}.max_output_tokens.{model}"),
                        "a model name or glob, and a limit greater than 0",
                    ));
                }
                max_output_tokens.push((Pattern::new(&model), limit));
            }
            // Exact names before globs.
            max_output_tokens.sort_by_key(|(pattern, _)| pattern.is_glob());
            by_name.insert(name.clone(), providers.len());
            providers.push(Provider {
                name,
                format: entry.format,
                api_key,
                host: match (entry.host, &vertex) {
                    (None, _) if bedrock => Some(format!("bedrock-runtime.{region}.amazonaws.com")),
                    (None, Some(vertex)) => Some(crate::vertex::host(&vertex.location)),
                    (host, _) => host,
                },
                base_path: entry.base_path,
                model_map: entry.model_map.into_iter().collect(),
                api_version: entry.api_version.unwrap_or_default(),
                deployments: entry.deployments.into_iter().collect(),
                anthropic_version: entry
                    .anthropic_version
                    .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.to_string()),
                default_max_tokens: entry.default_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
                forward_headers,
                responses_api: entry.responses_api.unwrap_or_default(),
                max_output_tokens,
                region,
                aws,
                vertex,
            });
        }
        let default = match &config.default_provider {
            None => None,
            Some(name) => Some(*by_name.get(name).ok_or_else(|| {
                ConfigError::new("default_provider", "names no provider in `providers`")
            })?),
        };
        Ok(Providers {
            providers,
            by_name,
            default,
        })
    }

    fn provider(&self, attempt: &Attempt) -> Option<&Provider> {
        self.providers.get(attempt.provider)
    }

    /// Whether the client's header `name` (lowercase) may reach this attempt's provider.
    pub fn forwards(&self, attempt: &Attempt, name: &str) -> bool {
        name.starts_with(':')
            || FORWARDED_BY_DEFAULT
                .iter()
                .any(|pattern| header_matches(pattern, name))
            || self.provider(attempt).is_some_and(|p| {
                p.forward_headers
                    .iter()
                    .any(|pattern| header_matches(pattern, name))
            })
    }

    /// Starts an attempt on the endpoint whose metadata names `provider` (None: no metadata).
    pub fn attempt(&self, provider: Option<&str>, path: &str) -> Result<Attempt, LocalReply> {
        let api = ClientApi::from_path(path);
        let index = match provider {
            Some(name) => self.by_name.get(name).copied(),
            None => self.default,
        };
        let Some(index) = index else {
            let detail = match provider {
                Some(name) => format!("the chosen endpoint names provider `{name}`, which is not configured"),
                None => "the chosen endpoint has no `llm.provider` metadata and there is no `default_provider`".to_string(),
            };
            return Err(error_reply(
                api.flavor(),
                ErrorKind::BadGateway,
                &format!("The gateway cannot reach a provider for this request: {detail}."),
                ErrorDetail::default(),
            ));
        };
        let format = self.providers.get(index).map(|p| p.format);
        let name = self
            .providers
            .get(index)
            .map(|p| p.name.as_str())
            .unwrap_or("");
        let unsupported = |what: &str| {
            Err(error_reply(
                api.flavor(),
                ErrorKind::InvalidRequest,
                &format!("{what} (provider `{name}`)."),
                ErrorDetail::default(),
            ))
        };
        let refused = match (format, api) {
            (
                Some(WireFormat::Anthropic | WireFormat::Gemini),
                ClientApi::Completions | ClientApi::Embeddings,
            ) => true,
            // Bedrock's runtime serves Converse, and Vertex AI's endpoints generateContent and
            // rawPredict: nothing else a client of ours asks for.
            (Some(WireFormat::Bedrock | WireFormat::VertexAi), api) => matches!(
                api,
                ClientApi::Completions | ClientApi::Embeddings | ClientApi::Other
            ),
            _ => false,
        };
        if let (true, Some(format)) = (refused, format) {
            let kind = match format {
                WireFormat::Gemini => "Gemini",
                WireFormat::Bedrock => "Bedrock",
                WireFormat::VertexAi => "Vertex AI",
                _ => "Anthropic-format",
            };
            return unsupported(&format!(
                "`{}` is not supported by {kind} providers; use /v1/chat/completions, /v1/responses or /v1/messages",
                path.split('?').next().unwrap_or(path)
            ));
        }
        Ok(Attempt {
            provider: index,
            api,
            path: path.to_string(),
        })
    }

    /// The provider's name, for metrics and logs.
    pub fn name(&self, attempt: &Attempt) -> &str {
        self.provider(attempt).map_or("", |p| p.name.as_str())
    }

    /// The API this attempt must be translated to, when the provider does not speak the client's.
    fn target(&self, attempt: &Attempt) -> Option<Target> {
        let provider = self.provider(attempt)?;
        let anthropic = provider.format == WireFormat::Anthropic;
        let via_chat = match provider.format {
            WireFormat::Gemini => Some(Target::Gemini),
            WireFormat::Bedrock => Some(Target::Converse),
            WireFormat::VertexAi => Some(Target::Vertex),
            _ => None,
        };
        if let Some(target) = via_chat {
            return matches!(
                attempt.api,
                ClientApi::Chat | ClientApi::Messages | ClientApi::Responses
            )
            .then_some(target);
        }
        match attempt.api {
            ClientApi::Chat if anthropic => Some(Target::Messages),
            ClientApi::Responses if anthropic => Some(Target::Messages),
            ClientApi::Responses if provider.responses_api == ResponsesApi::Translate => {
                Some(Target::Chat)
            }
            ClientApi::Messages if !anthropic => Some(Target::Chat),
            _ => None,
        }
    }

    fn translates(&self, attempt: &Attempt) -> bool {
        self.target(attempt).is_some()
    }

    /// Token counting for a provider without the endpoint: the gateway answers it.
    fn counts_locally(&self, attempt: &Attempt) -> bool {
        attempt.api == ClientApi::CountTokens
            && self
                .provider(attempt)
                .is_some_and(|p| p.format != WireFormat::Anthropic)
    }

    /// Whether the body must be read before the headers can be finished (translation, a model to
    /// map, or an Azure deployment to pick). Otherwise the attempt streams straight through.
    pub fn needs_body(&self, attempt: &Attempt) -> bool {
        let Some(provider) = self.provider(attempt) else {
            return false;
        };
        let has_model = !matches!(attempt.api, ClientApi::Other);
        self.translates(attempt)
            || self.counts_locally(attempt)
            || (has_model && !provider.model_map.is_empty())
            || (has_model && provider.format == WireFormat::AzureOpenai)
    }

    /// The answer to a request without a body that this attempt would have to translate: a 400,
    /// rather than sending the provider something in another API (or, to Bedrock, unsigned).
    pub fn body_missing(&self, attempt: &Attempt) -> Option<LocalReply> {
        (self.translates(attempt) || self.counts_locally(attempt)).then(|| {
            error_reply(
                attempt.api.flavor(),
                ErrorKind::InvalidRequest,
                &format!(
                    "This request needs a JSON body (provider `{}` is reached through a translation).",
                    self.name(attempt)
                ),
                ErrorDetail::default(),
            )
        })
    }

    /// Reads (and if needed rewrites) the body: the model this provider sees, the translated request.
    pub fn body(&self, attempt: &Attempt, body: &[u8]) -> Result<BodyPlan, LocalReply> {
        let Some(provider) = self.provider(attempt) else {
            return Ok(BodyPlan::default());
        };
        let flavor = attempt.api.flavor();
        let invalid = |message: &str| {
            error_reply(
                flavor,
                ErrorKind::InvalidRequest,
                message,
                ErrorDetail::default(),
            )
        };
        let fields = read_fields(body).map_err(|e| crate::request::body_error_reply(flavor, &e))?;
        let mapped = fields
            .model
            .as_deref()
            .and_then(|m| provider.model_map.get(m))
            .cloned();
        let model = mapped.clone().or(fields.model.clone());
        if self.counts_locally(attempt) {
            return Ok(BodyPlan {
                answer: Some(count_tokens_reply(body, model.as_deref())),
                model,
                ..BodyPlan::default()
            });
        }
        let anthropic_options = RequestOptions {
            model: model.as_deref(),
            default_max_tokens: provider.default_max_tokens,
        };
        let max_output = model.as_deref().and_then(|model| {
            provider
                .max_output_tokens
                .iter()
                .find(|(pattern, _)| pattern.matches(model))
                .map(|(_, limit)| *limit)
                .or_else(|| {
                    (provider.format != WireFormat::Anthropic)
                        .then(|| known_output_limit(model))
                        .flatten()
                })
        });
        // A limitation of the translation names the provider: another model may not have it.
        let unsupported = |m: String| invalid(&format!("{m} (provider `{}`)", provider.name));
        // Vertex AI serves Gemini models in Gemini's API and Claude models in Anthropic's.
        let vertex_claude = provider.vertex.is_some()
            && crate::vertex::publisher(model.as_deref().unwrap_or(""))
                == crate::vertex::Publisher::Anthropic;
        let target = match self.target(attempt) {
            Some(Target::Vertex) if !vertex_claude => Some(Target::Gemini),
            Some(Target::Vertex) if attempt.api == ClientApi::Messages => None,
            Some(Target::Vertex) => Some(Target::Messages),
            other => other,
        };
        let (new_body, translation) = match (attempt.api, target) {
            (_, None) => {
                // Azure's Responses API takes the deployment as the body's model.
                let to = match (provider.format, attempt.api) {
                    (WireFormat::AzureOpenai, ClientApi::Responses) => model
                        .as_deref()
                        .and_then(|m| provider.deployments.get(m))
                        .cloned()
                        .or_else(|| mapped.clone()),
                    _ => mapped.clone(),
                };
                if vertex_claude {
                    // The model goes in the path; the body loses it (no mapping to write).
                    let (sent, stream) =
                        crate::vertex::messages_for_vertex(body).map_err(|m| invalid(&m))?;
                    return Ok(BodyPlan {
                        new_body: Some(sent),
                        model,
                        stream,
                        ..BodyPlan::default()
                    });
                }
                let new_body = match (to, fields.model_span) {
                    (Some(to), Some(span)) => replace_model(body, span, &to),
                    _ => None,
                };
                return Ok(BodyPlan {
                    new_body,
                    model,
                    ..BodyPlan::default()
                });
            }
            (api, Some(target @ (Target::Gemini | Target::Converse))) => {
                let asked = model.clone().unwrap_or_default();
                // Every client API reaches Gemini and Bedrock through Chat Completions.
                let (chat, context) = match api {
                    ClientApi::Messages => (
                        messages_request_to_chat(body, model.as_deref(), max_output)
                            .map_err(unsupported)?
                            .body,
                        None,
                    ),
                    ClientApi::Responses => {
                        let request = responses_request_to_chat(body, model.as_deref(), max_output)
                            .map_err(unsupported)?;
                        (request.chat, Some(request.context))
                    }
                    _ => (body.to_vec(), None),
                };
                let (body_out, stream, include_usage, source) = if target == Target::Gemini {
                    let gemini = chat_request_to_gemini(&chat).map_err(unsupported)?;
                    (
                        gemini.body,
                        gemini.stream,
                        gemini.include_usage,
                        ChatSource::Gemini,
                    )
                } else {
                    let converse = chat_request_to_converse(&chat, &asked).map_err(unsupported)?;
                    let source = ChatSource::Bedrock {
                        request_id: None,
                        error_type: None,
                    };
                    (
                        converse.body,
                        converse.stream,
                        converse.include_usage,
                        source,
                    )
                };
                let translation = match (api, context) {
                    (ClientApi::Messages, _) => AnswerTranslation::SourceToAnthropic {
                        source,
                        stream,
                        request_bytes: body.len(),
                        model: asked,
                    },
                    (_, Some(context)) => AnswerTranslation::SourceToResponses {
                        source,
                        context,
                        model: asked,
                    },
                    _ => AnswerTranslation::SourceToChat {
                        source,
                        stream,
                        include_usage,
                        model: asked,
                    },
                };
                (body_out, translation)
            }
            (ClientApi::Messages, Some(_)) => {
                let chat = messages_request_to_chat(body, model.as_deref(), max_output)
                    .map_err(unsupported)?;
                let translation = AnswerTranslation::ChatToAnthropic {
                    stream: chat.stream,
                    request_bytes: body.len(),
                };
                (chat.body, translation)
            }
            (ClientApi::Responses, Some(Target::Chat)) => {
                let request = responses_request_to_chat(body, model.as_deref(), max_output)
                    .map_err(unsupported)?;
                (
                    request.chat,
                    AnswerTranslation::ChatToResponses(request.context),
                )
            }
            (ClientApi::Responses, Some(Target::Messages)) => {
                let (messages, context) =
                    responses_request_to_messages(body, anthropic_options, max_output)
                        .map_err(unsupported)?;
                (
                    messages.body,
                    AnswerTranslation::AnthropicToResponses(context),
                )
            }
            (_, Some(_)) => {
                let translated =
                    chat_request_to_messages(body, anthropic_options).map_err(|m| invalid(&m))?;
                let translation = AnswerTranslation::AnthropicToChat {
                    stream: translated.stream,
                    include_usage: translated.include_usage,
                };
                (translated.body, translation)
            }
        };
        let new_body = if vertex_claude {
            crate::vertex::messages_for_vertex(&new_body)
                .map_err(|m| invalid(&m))?
                .0
        } else {
            new_body
        };
        Ok(BodyPlan {
            new_body: Some(new_body),
            model,
            translate_response: Some(translation),
            answer: None,
            stream: false,
        })
    }

    /// Header changes for this attempt; `model` is the body's model after mapping (for Azure).
    /// `stream`: the translated request streams (Gemini's path says so).
    pub fn headers(&self, attempt: &Attempt, model: Option<&str>, stream: bool) -> HeaderPlan {
        let Some(provider) = self.provider(attempt) else {
            return HeaderPlan::default();
        };
        let mut plan = HeaderPlan {
            remove: CREDENTIAL_HEADERS.to_vec(),
            ..HeaderPlan::default()
        };
        let (path, query) = match attempt.path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (attempt.path.as_str(), None),
        };
        let mut rest = path
            .strip_prefix("/v1")
            .filter(|r| r.is_empty() || r.starts_with('/'));
        let prefix = provider.base_path.as_deref().unwrap_or("/v1");
        let target = self.target(attempt);
        let mut query = query;
        if target == Some(Target::Chat) {
            // The client's query belongs to its API (Claude Code's `?beta=true`), not to Chat's.
            rest = Some("/chat/completions");
            query = None;
            plan.set
                .push(("content-type", "application/json".to_string()));
        }
        match provider.format {
            WireFormat::Openai => {
                if let Some(key) = &provider.api_key {
                    plan.set
                        .push(("authorization", format!("Bearer {}", key.0)));
                }
                if let Some(rest) = rest {
                    if provider.base_path.is_some() || target.is_some() {
                        plan.path = Some(with_query(format!("{prefix}{rest}"), query));
                    }
                }
                plan.remove.push("anthropic-version");
            }
            WireFormat::AzureOpenai => {
                if let Some(key) = &provider.api_key {
                    plan.set.push(("api-key", key.0.clone()));
                }
                if attempt.api == ClientApi::Responses && target.is_none() {
                    // Azure serves the Responses API on its v1 surface, the deployment in the body.
                    plan.path = Some("/openai/v1/responses".to_string());
                } else if let (Some(rest), Some(model)) = (rest, model) {
                    let deployment = provider
                        .deployments
                        .get(model)
                        .map_or(model, String::as_str);
                    let mut mapped = format!(
                        "/openai/deployments/{deployment}{rest}?api-version={}",
                        provider.api_version
                    );
                    if let Some(query) = query.filter(|q| !q.is_empty()) {
                        mapped.push('&');
                        mapped.push_str(query);
                    }
                    plan.path = Some(mapped);
                }
                plan.remove.push("anthropic-version");
            }
            WireFormat::Gemini => {
                if let Some(key) = &provider.api_key {
                    plan.set.push(("x-goog-api-key", key.0.clone()));
                }
                if let (Some(Target::Gemini), Some(model)) = (target, model) {
                    let base = provider.base_path.as_deref().unwrap_or("/v1beta");
                    plan.path = Some(crate::gemini::path(base, model, stream));
                    plan.set
                        .push(("content-type", "application/json".to_string()));
                }
                plan.remove.push("anthropic-version");
            }
            WireFormat::Bedrock => {
                if let Some(key) = &provider.api_key {
                    // A Bedrock API key; without one the attempt is SigV4-signed (`sign`).
                    plan.set
                        .push(("authorization", format!("Bearer {}", key.0)));
                }
                if let (Some(Target::Converse), Some(model)) = (target, model) {
                    let base = provider.base_path.as_deref().unwrap_or("");
                    plan.path = Some(crate::bedrock::path(base, model, stream));
                    plan.set
                        .push(("content-type", "application/json".to_string()));
                    let accept = if stream {
                        "application/vnd.amazon.eventstream"
                    } else {
                        "application/json"
                    };
                    plan.set.push(("accept", accept.to_string()));
                }
                plan.remove.push("anthropic-version");
            }
            WireFormat::VertexAi => {
                // The access token is the filter's to set: it comes from the background refresh.
                if let (Some(vertex), Some(model)) = (&provider.vertex, model) {
                    plan.path = Some(crate::vertex::path(
                        &vertex.project,
                        &vertex.location,
                        model,
                        stream,
                    ));
                    plan.set
                        .push(("content-type", "application/json".to_string()));
                }
                // Claude on Vertex takes its version in the body.
                plan.remove.push("anthropic-version");
            }
            WireFormat::Anthropic => {
                if let Some(key) = &provider.api_key {
                    plan.set.push(("x-api-key", key.0.clone()));
                }
                if self.translates(attempt) {
                    plan.set
                        .push(("anthropic-version", provider.anthropic_version.clone()));
                    plan.path = Some(format!("{prefix}/messages"));
                    plan.set
                        .push(("content-type", "application/json".to_string()));
                } else {
                    // The client speaks the Anthropic API itself: its own version header wins.
                    plan.set_if_absent
                        .push(("anthropic-version", provider.anthropic_version.clone()));
                    if let (Some(rest), Some(base)) = (rest, &provider.base_path) {
                        plan.path = Some(with_query(format!("{base}{rest}"), query));
                    }
                }
            }
        }
        // Every answer is read downstream (usage, PII restore, translation): ask for it
        // uncompressed on every attempt, whatever the client accepts.
        plan.remove.push("accept-encoding");
        plan.authority = provider.host.clone();
        plan
    }
}

impl Providers {
    /// The Vertex AI providers' token sources, for the filter's background refresh.
    pub fn token_sources(&self) -> Vec<TokenSource> {
        self.providers
            .iter()
            .filter_map(|p| {
                let vertex = p.vertex.as_ref()?;
                Some(TokenSource {
                    provider: p.name.clone(),
                    shared_key: token_key(&p.name, &vertex.account),
                    cluster: vertex.token_cluster.clone(),
                    endpoint: vertex.account.token_endpoint(),
                    account: vertex.account.clone(),
                })
            })
            .collect()
    }

    /// The shared-data key of the access token an attempt needs (Vertex AI providers).
    pub fn token_key(&self, attempt: &Attempt) -> Option<String> {
        let provider = self.provider(attempt)?;
        let vertex = provider.vertex.as_ref()?;
        Some(token_key(&provider.name, &vertex.account))
    }

    /// 503 for an attempt whose provider has no access token yet, saying why (`why` names no
    /// secret: the token endpoint's status and OAuth error at most).
    pub fn token_missing_reply(&self, attempt: &Attempt, why: &str) -> LocalReply {
        error_reply(
            attempt.api.flavor(),
            ErrorKind::Unavailable,
            &format!(
                "The gateway has no access token for provider `{}` yet: {why}.",
                self.name(attempt)
            ),
            ErrorDetail::default(),
        )
    }

    /// SigV4 headers for an attempt on a Bedrock provider with AWS credentials, over the request
    /// as it leaves (`path` and `body` after translation; `now` in Unix seconds). Empty for every
    /// other provider.
    pub fn sign(
        &self,
        attempt: &Attempt,
        path: &str,
        body: &[u8],
        now: u64,
    ) -> Result<Vec<(&'static str, String)>, LocalReply> {
        let Some(provider) = self.provider(attempt) else {
            return Ok(Vec::new());
        };
        let (Some(credentials), Some(host)) = (&provider.aws, &provider.host) else {
            return Ok(Vec::new());
        };
        crate::bedrock::sign(credentials, &provider.region, host, path, body, now).map_err(
            |problem| {
                error_reply(
                    attempt.api.flavor(),
                    ErrorKind::BadGateway,
                    &format!(
                        "The gateway could not sign the request for provider `{}`: {problem}.",
                        provider.name
                    ),
                    ErrorDetail::default(),
                )
            },
        )
    }
}

/// Where a provider's token is shared between workers; another key file gets another entry.
fn token_key(provider: &str, account: &ServiceAccount) -> String {
    // '/' appears in none of the parts.
    format!(
        "llm_provider.access_token/{provider}/{}/{}",
        account.client_email(),
        account.key_id().replace('/', "_")
    )
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// The client's request line (and body length) as the first attempt saw it, by request id. Envoy hands every attempt
/// of a request (retries, failover) the same header map, so an attempt finds the path and authority
/// the previous attempt's provider needed (`/v1/messages`, say): each attempt starts again from the
/// client's. Bounded: the oldest entries go first (retries follow within seconds).
#[derive(Debug, Default)]
pub struct AttemptOrigins {
    by_request: HashMap<String, Origin>,
    order: std::collections::VecDeque<String>,
}

/// What the client sent, before any attempt rewrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub path: String,
    pub authority: Option<String>,
    /// The body each attempt starts from is the client's (Envoy replays it); its length too.
    pub content_length: Option<String>,
    /// The client's `accept` (a Bedrock attempt asks for its event stream).
    pub accept: Option<String>,
}

/// Requests remembered per worker: far more than a worker has in retry at once.
const MAX_ORIGINS: usize = 4096;

impl AttemptOrigins {
    /// The client's request line as recorded by an earlier attempt of `request_id` that rewrote it.
    pub fn previous(&self, request_id: &str) -> Option<&Origin> {
        self.by_request.get(request_id)
    }

    /// Records `origin` for `request_id` before an attempt rewrites the request line or the body
    /// (a later attempt then starts again from it). The first record wins: it is the client's.
    pub fn record(&mut self, request_id: &str, origin: Origin) {
        if self.by_request.contains_key(request_id) {
            return;
        }
        if self.order.len() >= MAX_ORIGINS {
            if let Some(oldest) = self.order.pop_front() {
                self.by_request.remove(&oldest);
            }
        }
        self.order.push_back(request_id.to_string());
        self.by_request.insert(request_id.to_string(), origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use serde_json::{json, Value};

    fn env(name: &str) -> Option<String> {
        match name {
            "OPENAI_API_KEY" => Some("sk-openai-secret".into()),
            "ANTHROPIC_API_KEY" => Some("sk-ant-secret".into()),
            "AZURE_KEY" => Some("azure-secret".into()),
            "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("aws-secret-value".into()),
            "BEDROCK_KEY" => Some("bedrock-api-key".into()),
            "VERTEX_SA" => Some(crate::vertex::test_key_file()),
            "NOT_A_KEY" => {
                Some("{\"type\": \"service_account\", \"private_key\": \"secret-bytes\"}".into())
            }
            _ => None,
        }
    }

    fn providers(json: &str) -> Providers {
        Providers::compile(parse::<ProviderConfig>(json.as_bytes()).unwrap(), &env).unwrap()
    }

    fn demo() -> Providers {
        providers(
            r#"{
            "default_provider": "openai",
            "providers": {
                "openai": {"format": "openai", "api_key_env": "OPENAI_API_KEY", "host": "api.openai.com"},
                "anthropic": {"format": "anthropic", "api_key_env": "ANTHROPIC_API_KEY", "host": "api.anthropic.com",
                              "model_map": {"gpt-4o": "claude-sonnet-4-5"}, "default_max_tokens": 1000},
                "azure": {"format": "azure_openai", "api_key_env": "AZURE_KEY", "api_version": "2024-10-21",
                          "deployments": {"gpt-4o-mini": "mini-deploy"}},
                "vllm": {"format": "openai", "base_path": "/api/v1"}
            }}"#,
        )
    }

    fn header<'a>(plan: &'a HeaderPlan, name: &str) -> Option<&'a str> {
        plan.set
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Headers that steer the gateway's account (organization, project, beta features) reach a
    /// provider only when the operator lists them for it; trace context and SDK telemetry always do.
    #[test]
    fn client_headers_pass_an_allow_list_per_provider() {
        let p = providers(
            r#"{"providers": {
                "openai": {"format": "openai", "forward_headers": ["OpenAI-Organization", "x-mock-*"]},
                "anthropic": {"format": "anthropic"}
            }}"#,
        );
        let openai = p.attempt(Some("openai"), "/v1/chat/completions").unwrap();
        let anthropic = p.attempt(Some("anthropic"), "/v1/messages").unwrap();
        for always in [
            ":path",
            "content-type",
            "user-agent",
            "traceparent",
            "x-stainless-retry-count",
            "x-request-id",
            "x-envoy-expected-rq-timeout-ms",
            "anthropic-version",
        ] {
            assert!(
                p.forwards(&openai, always) && p.forwards(&anthropic, always),
                "{always}"
            );
        }
        for never in [
            "openai-project",
            "anthropic-beta",
            "openai-beta",
            "authorization",
            "x-api-key",
            "cookie",
            "x-custom",
            "x-forwarded-for",
        ] {
            assert!(!p.forwards(&anthropic, never), "{never}");
        }
        assert!(p.forwards(&openai, "openai-organization"));
        assert!(!p.forwards(&anthropic, "openai-organization"));
        assert!(p.forwards(&openai, "x-mock-delay-ms"));
        assert!(!p.forwards(&openai, "openai-project"));
        for bad in [
            "authorization",
            "x-api-*",
            "x-llm-consumer",
            "*",
            "bad header",
        ] {
            let json = format!(
                r#"{{"providers": {{"o": {{"format": "openai", "forward_headers": ["{bad}"]}}}}}}"#
            );
            let err = Providers::compile(parse::<ProviderConfig>(json.as_bytes()).unwrap(), &env)
                .unwrap_err();
            assert_eq!(err.path, "providers.o.forward_headers[0]", "{bad}");
        }
    }

    #[test]
    fn openai_passthrough_injects_bearer() {
        let p = demo();
        let attempt = p.attempt(Some("openai"), "/v1/chat/completions").unwrap();
        assert!(!p.needs_body(&attempt));
        let plan = p.headers(&attempt, None, false);
        assert_eq!(
            header(&plan, "authorization"),
            Some("Bearer sk-openai-secret")
        );
        assert_eq!(plan.path, None);
        assert_eq!(plan.authority.as_deref(), Some("api.openai.com"));
        for credential in CREDENTIAL_HEADERS {
            assert!(plan.remove.contains(&credential));
        }
        // No metadata: the default provider.
        assert_eq!(
            p.name(&p.attempt(None, "/v1/embeddings").unwrap()),
            "openai"
        );
    }

    #[test]
    fn anthropic_translation_attempt() {
        let p = demo();
        let attempt = p
            .attempt(Some("anthropic"), "/v1/chat/completions")
            .unwrap();
        assert!(p.needs_body(&attempt));
        let body = br#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
        let plan = p.body(&attempt, body).unwrap();
        assert_eq!(plan.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(
            plan.translate_response,
            Some(AnswerTranslation::AnthropicToChat {
                stream: true,
                include_usage: true
            })
        );
        let sent: Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
        assert_eq!(sent["model"], "claude-sonnet-4-5");
        assert_eq!(sent["max_tokens"], 1000);
        let headers = p.headers(&attempt, plan.model.as_deref(), false);
        assert_eq!(headers.path.as_deref(), Some("/v1/messages"));
        assert_eq!(header(&headers, "x-api-key"), Some("sk-ant-secret"));
        assert_eq!(header(&headers, "anthropic-version"), Some("2023-06-01"));
        assert!(
            headers.remove.contains(&"authorization")
                && headers.remove.contains(&"accept-encoding")
        );
        // Native Anthropic API: no translation, just the credential.
        let native = p.attempt(Some("anthropic"), "/v1/messages").unwrap();
        assert!(p.needs_body(&native), "model_map applies");
        let plan = p
            .body(
                &native,
                br#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#,
            )
            .unwrap();
        assert_eq!(plan.new_body, None);
        assert_eq!(plan.translate_response, None);
        let native_headers = p.headers(&native, None, false);
        assert_eq!(native_headers.path, None);
        assert_eq!(
            native_headers.set_if_absent,
            vec![("anthropic-version", "2023-06-01".to_string())]
        );
        assert_eq!(header(&native_headers, "x-api-key"), Some("sk-ant-secret"));
    }

    #[test]
    fn azure_paths_and_api_key() {
        let p = demo();
        let attempt = p.attempt(Some("azure"), "/v1/chat/completions").unwrap();
        assert!(p.needs_body(&attempt));
        let plan = p.headers(&attempt, Some("gpt-4o-mini"), false);
        assert_eq!(
            plan.path.as_deref(),
            Some("/openai/deployments/mini-deploy/chat/completions?api-version=2024-10-21")
        );
        assert_eq!(header(&plan, "api-key"), Some("azure-secret"));
        let other = p.headers(
            &p.attempt(Some("azure"), "/v1/embeddings?x=1").unwrap(),
            Some("text-embedding-3-small"),
            false,
        );
        assert_eq!(
            other.path.as_deref(),
            Some(
                "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21&x=1"
            )
        );
    }

    #[test]
    fn openai_compatible_base_path_and_no_credential() {
        let p = demo();
        let attempt = p.attempt(Some("vllm"), "/v1/chat/completions").unwrap();
        let plan = p.headers(&attempt, None, false);
        assert_eq!(plan.path.as_deref(), Some("/api/v1/chat/completions"));
        assert!(plan.set.is_empty());
        assert!(
            plan.remove.contains(&"authorization"),
            "the client's key never goes to a keyless provider"
        );
    }

    #[test]
    fn model_map_rewrites_only_the_model() {
        let p = providers(
            r#"{"providers":{"o":{"format":"openai","model_map":{"fast":"gpt-4o-mini"}}}}"#,
        );
        let attempt = p.attempt(Some("o"), "/v1/chat/completions").unwrap();
        let plan = p.body(&attempt, br#"{"model":"fast","x":1}"#).unwrap();
        assert_eq!(
            plan.new_body.as_deref(),
            Some(&br#"{"model":"gpt-4o-mini","x":1}"#[..])
        );
        let untouched = p.body(&attempt, br#"{"model":"other"}"#).unwrap();
        assert_eq!(untouched.new_body, None);
    }

    #[test]
    fn unsupported_combinations_and_unknown_providers() {
        let p = demo();
        let err = p.attempt(Some("anthropic"), "/v1/embeddings").unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err
            .body
            .contains("not supported by Anthropic-format providers"));
        let attempt = p.attempt(Some("openai"), "/v1/messages").unwrap();
        let err = p
            .body(
                &attempt,
                br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"tools":[{"type":"bash_20250124","name":"bash"}]}"#,
            )
            .unwrap_err();
        let body: Value = serde_json::from_str(&err.body).unwrap();
        assert_eq!(
            body["type"], "error",
            "Anthropic shape for an Anthropic client"
        );
        assert!(err.body.contains("bash_20250124") && err.body.contains("provider `openai`"));
        let err = p.attempt(Some("nope"), "/v1/chat/completions").unwrap_err();
        assert_eq!(err.status, 502);
        assert!(err.body.contains("`nope`"));
        let attempt = p
            .attempt(Some("anthropic"), "/v1/chat/completions")
            .unwrap();
        let err = p
            .body(
                &attempt,
                br#"{"model":"m","n":3,"messages":[{"role":"user","content":"x"}]}"#,
            )
            .unwrap_err();
        assert_eq!(err.status, 400);
        assert!(p.body(&attempt, b"{").is_err());
    }

    /// Every client API reaches every provider format: Messages on OpenAI and Azure, Responses
    /// translated (or native where configured), token counting answered locally.
    #[test]
    fn every_api_on_every_format() {
        let p = providers(
            r#"{"providers": {
                "openai": {"format": "openai", "api_key_env": "OPENAI_API_KEY", "responses_api": "native"},
                "compat": {"format": "openai", "base_path": "/api/v1", "max_output_tokens": {"llama*": 2048}},
                "anthropic": {"format": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"},
                "azure": {"format": "azure_openai", "api_key_env": "AZURE_KEY", "api_version": "2024-10-21",
                          "deployments": {"gpt-4o-mini": "mini-deploy", "gpt-4o-2024-08-06": "prod"},
                          "model_map": {"gpt-4o": "gpt-4o-2024-08-06"}, "responses_api": "native"},
                "azure_old": {"format": "azure_openai", "api_key_env": "AZURE_KEY", "api_version": "2024-10-21",
                              "responses_api": "translate"}
            }}"#,
        );
        let messages = br#"{"model":"gpt-4o-mini","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let responses = br#"{"model":"gpt-4o-mini","input":"hi"}"#;

        // Messages on an OpenAI-compatible server: Chat at its base path, the query dropped.
        let attempt = p.attempt(Some("compat"), "/v1/messages?beta=true").unwrap();
        assert!(p.needs_body(&attempt));
        let plan = p.body(&attempt, messages).unwrap();
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::ChatToAnthropic { stream: true, .. })
        ));
        let sent: Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
        assert_eq!(sent["stream_options"]["include_usage"], true);
        // Output limits: Claude Code's 32,000 is more than gpt-4o-mini produces (OpenAI refuses
        // it); the configured limit of another model; none for a model without one.
        for (model, expected) in [
            ("gpt-4o-mini", 16_384),
            ("llama-3.1-70b", 2048),
            ("mistral", 32_000),
        ] {
            let request = json!({"model": model, "max_tokens": 32_000,
                                 "messages": [{"role": "user", "content": "hi"}]});
            let plan = p.body(&attempt, request.to_string().as_bytes()).unwrap();
            let sent: Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
            assert_eq!(sent["max_completion_tokens"], expected, "{model}");
        }
        let headers = p.headers(&attempt, plan.model.as_deref(), false);
        assert_eq!(headers.path.as_deref(), Some("/api/v1/chat/completions"));
        assert!(headers.remove.contains(&"anthropic-version"));

        // Messages on Azure: the deployment's chat path.
        let attempt = p.attempt(Some("azure"), "/v1/messages").unwrap();
        let plan = p.body(&attempt, messages).unwrap();
        assert!(plan.translate_response.is_some());
        assert_eq!(
            p.headers(&attempt, plan.model.as_deref(), false)
                .path
                .as_deref(),
            Some("/openai/deployments/mini-deploy/chat/completions?api-version=2024-10-21")
        );

        // Responses: native on OpenAI (untouched) and Azure (v1 surface, deployment as model).
        let attempt = p.attempt(Some("openai"), "/v1/responses").unwrap();
        assert!(!p.needs_body(&attempt));
        assert_eq!(p.headers(&attempt, None, false).path, None);
        let attempt = p.attempt(Some("azure"), "/v1/responses").unwrap();
        let plan = p.body(&attempt, responses).unwrap();
        assert_eq!(plan.translate_response, None);
        let sent: Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
        assert_eq!(sent["model"], "mini-deploy");
        assert_eq!(
            p.headers(&attempt, plan.model.as_deref(), false)
                .path
                .as_deref(),
            Some("/openai/v1/responses")
        );
        // The deployment of the mapped model.
        let plan = p
            .body(&attempt, br#"{"model":"gpt-4o","input":"hi"}"#)
            .unwrap();
        let sent: Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
        assert_eq!(sent["model"], "prod");
        // Translated elsewhere: to Chat, or to Messages for Anthropic.
        let attempt = p.attempt(Some("azure_old"), "/v1/responses").unwrap();
        let plan = p.body(&attempt, responses).unwrap();
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::ChatToResponses(_))
        ));
        assert_eq!(
            p.headers(&attempt, plan.model.as_deref(), false)
                .path
                .as_deref(),
            Some("/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21")
        );
        let attempt = p.attempt(Some("anthropic"), "/v1/responses").unwrap();
        let plan = p.body(&attempt, responses).unwrap();
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::AnthropicToResponses(_))
        ));
        let sent: Value = serde_json::from_slice(&plan.new_body.unwrap()).unwrap();
        assert_eq!(sent["messages"][0]["content"][0]["text"], "hi");
        assert!(sent["max_tokens"].as_u64().is_some());
        let headers = p.headers(&attempt, plan.model.as_deref(), false);
        assert_eq!(headers.path.as_deref(), Some("/v1/messages"));
        // Stateful requests: a 400 naming the field and the provider; native providers take them.
        let stateful = br#"{"model":"gpt-4o-mini","input":"hi","previous_response_id":"resp_1"}"#;
        let err = p.body(&attempt, stateful).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(
            err.body.contains("previous_response_id") && err.body.contains("provider `anthropic`")
        );
        let native = p.attempt(Some("azure"), "/v1/responses").unwrap();
        assert!(p.body(&native, stateful).is_ok());

        // Token counting: passed to Anthropic, answered for the others.
        let count =
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}"#;
        let attempt = p
            .attempt(Some("anthropic"), "/v1/messages/count_tokens")
            .unwrap();
        assert_eq!(p.body(&attempt, count).unwrap().answer, None);
        let attempt = p
            .attempt(Some("openai"), "/v1/messages/count_tokens")
            .unwrap();
        assert!(p.needs_body(&attempt));
        let answer = p.body(&attempt, count).unwrap().answer.unwrap();
        assert_eq!(answer.status, 200);
        let counted: Value = serde_json::from_str(&answer.body).unwrap();
        assert!(counted["input_tokens"].as_u64().unwrap() > 2);

        // Configuration: the setting is for OpenAI formats only.
        let err = Providers::compile(
            parse::<ProviderConfig>(
                br#"{"providers":{"a":{"format":"anthropic","responses_api":"native"}}}"#,
            )
            .unwrap(),
            &env,
        )
        .unwrap_err();
        assert_eq!(err.path, "providers.a.responses_api");
        assert!(parse::<ProviderConfig>(
            br#"{"providers":{"a":{"format":"openai","responses_api":"sometimes"}}}"#
        )
        .is_err());
    }

    #[test]
    fn secrets_never_appear_in_debug_or_errors() {
        let p = demo();
        assert!(!format!("{p:?}").contains("secret"));
        let err = Providers::compile(
            parse::<ProviderConfig>(
                br#"{"providers":{"x":{"format":"openai","api_key_env":"MISSING_KEY"}}}"#,
            )
            .unwrap(),
            &env,
        )
        .unwrap_err();
        assert_eq!(err.path, "providers.x.api_key_env");
        assert!(err.message.contains("MISSING_KEY") && err.message.contains("host_env_keys"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let cases = [
            (json!({}), "providers"),
            (
                json!({"providers": {"a b": {"format": "openai"}}}),
                "providers.a b",
            ),
            (
                json!({"providers": {"a": {"format": "azure_openai"}}}),
                "providers.a.api_version",
            ),
            (
                json!({"providers": {"a": {"format": "openai", "api_version": "1"}}}),
                "providers.a.api_version",
            ),
            (
                json!({"providers": {"a": {"format": "openai", "deployments": {"x": "y"}}}}),
                "providers.a.deployments",
            ),
            (
                json!({"providers": {"a": {"format": "openai", "anthropic_version": "1"}}}),
                "providers.a.anthropic_version",
            ),
            (
                json!({"providers": {"a": {"format": "anthropic", "default_max_tokens": 0}}}),
                "providers.a.default_max_tokens",
            ),
            (
                json!({"providers": {"a": {"format": "openai", "base_path": "v1/"}}}),
                "providers.a.base_path",
            ),
            (
                json!({"providers": {"a": {"format": "openai"}}, "default_provider": "b"}),
                "default_provider",
            ),
        ];
        for (config, path) in cases {
            let err = Providers::compile(
                parse::<ProviderConfig>(config.to_string().as_bytes()).unwrap(),
                &env,
            )
            .unwrap_err();
            assert_eq!(err.path, path, "{config}: {err}");
        }
        let err = parse::<ProviderConfig>(br#"{"providers":{"a":{"format":"palm"}}}"#).unwrap_err();
        assert_eq!(err.path, "providers.a.format");
    }

    #[test]
    fn bedrock_attempts_are_translated_and_signed() {
        let p = providers(
            r#"{"providers": {
                "bedrock": {"format": "bedrock", "region": "eu-west-1",
                            "model_map": {"claude": "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"}},
                "keyed": {"format": "bedrock", "region": "us-east-1", "api_key_env": "BEDROCK_KEY",
                          "host": "bedrock.internal"}
            }}"#,
        );
        let attempt = p.attempt(Some("bedrock"), "/v1/chat/completions").unwrap();
        assert!(p.needs_body(&attempt));
        let plan = p
            .body(
                &attempt,
                br#"{"model":"claude","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            )
            .unwrap();
        let model = plan.model.as_deref();
        assert_eq!(model, Some("eu.anthropic.claude-sonnet-4-5-20250929-v1:0"));
        let body: Value = serde_json::from_slice(plan.new_body.as_ref().unwrap()).unwrap();
        assert_eq!(body["messages"][0]["content"][0]["text"], "hi");
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::SourceToChat {
                source: ChatSource::Bedrock { .. },
                stream: true,
                ..
            })
        ));
        let headers = p.headers(&attempt, model, true);
        let path = headers.path.clone().unwrap();
        assert_eq!(
            path,
            "/model/eu.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream"
        );
        assert_eq!(
            headers.authority.as_deref(),
            Some("bedrock-runtime.eu-west-1.amazonaws.com")
        );
        assert_eq!(
            header(&headers, "accept"),
            Some("application/vnd.amazon.eventstream")
        );
        assert!(headers.remove.contains(&"authorization"));
        assert_eq!(header(&headers, "authorization"), None);
        let signed = p
            .sign(
                &attempt,
                &path,
                plan.new_body.as_ref().unwrap(),
                1_764_870_000,
            )
            .unwrap();
        let authorization = &signed
            .iter()
            .find(|(n, _)| *n == "authorization")
            .unwrap()
            .1;
        assert!(authorization
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251204/eu-west-1/bedrock/"));
        assert!(!format!("{p:?}").contains("aws-secret-value"));

        // A Bedrock API key: a bearer token, nothing signed.
        let keyed = p.attempt(Some("keyed"), "/v1/messages").unwrap();
        let plan = p
            .body(
                &keyed,
                br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#,
            )
            .unwrap();
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::SourceToAnthropic { .. })
        ));
        let headers = p.headers(&keyed, Some("m"), false);
        assert_eq!(
            header(&headers, "authorization"),
            Some("Bearer bedrock-api-key")
        );
        assert_eq!(headers.path.as_deref(), Some("/model/m/converse"));
        assert_eq!(headers.authority.as_deref(), Some("bedrock.internal"));
        assert!(p
            .sign(&keyed, "/model/m/converse", b"{}", 1)
            .unwrap()
            .is_empty());

        // What Converse does not serve is refused before it leaves.
        for path in ["/v1/embeddings", "/v1/completions", "/v1/models"] {
            let reply = p.attempt(Some("bedrock"), path).unwrap_err();
            assert_eq!(reply.status, 400);
            assert!(reply.body.contains("Bedrock"), "{}", reply.body);
        }
        let reply = p
            .body(
                &attempt,
                br#"{"model":"claude","messages":[{"role":"user","content":"x"}],"n":3}"#,
            )
            .unwrap_err();
        assert!(reply.body.contains("provider `bedrock`"), "{}", reply.body);
    }

    #[test]
    fn vertex_attempts_reach_gemini_and_claude_at_vertex_paths() {
        let p = providers(
            r#"{"providers": {"vertex": {"format": "vertex_ai", "project": "my-proj",
                "location": "us-east5", "service_account_env": "VERTEX_SA",
                "token_cluster": "google_oauth2",
                "model_map": {"claude": "claude-sonnet-4-5@20250929"}}}}"#,
        );
        let sources = p.token_sources();
        assert_eq!(sources.len(), 1);
        assert_eq!(sources[0].cluster, "google_oauth2");
        assert_eq!(sources[0].endpoint.path, "/token");
        assert!(!format!("{sources:?}").contains("PRIVATE"));

        // Gemini models: the Gemini translation, at Vertex's path.
        let chat = p.attempt(Some("vertex"), "/v1/chat/completions").unwrap();
        let plan = p
            .body(
                &chat,
                br#"{"model":"gemini-2.5-flash","messages":[{"role":"user","content":"hi"}],"stream":true}"#,
            )
            .unwrap();
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::SourceToChat {
                source: ChatSource::Gemini,
                ..
            })
        ));
        let headers = p.headers(&chat, plan.model.as_deref(), true);
        assert_eq!(
            headers.path.as_deref(),
            Some("/v1/projects/my-proj/locations/us-east5/publishers/google/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
        );
        assert_eq!(
            headers.authority.as_deref(),
            Some("us-east5-aiplatform.googleapis.com")
        );
        assert!(headers.remove.contains(&"authorization"));
        assert_eq!(
            p.token_key(&chat).unwrap(),
            "llm_provider.access_token/vertex/gw@p.iam.gserviceaccount.com/kid1"
        );

        // Claude models: Anthropic's API on rawPredict, the model in the path only.
        let plan = p
            .body(
                &chat,
                br#"{"model":"claude","messages":[{"role":"user","content":"hi"}]}"#,
            )
            .unwrap();
        assert!(matches!(
            plan.translate_response,
            Some(AnswerTranslation::AnthropicToChat { .. })
        ));
        let sent: Value = serde_json::from_slice(plan.new_body.as_ref().unwrap()).unwrap();
        assert_eq!(sent.get("model"), None);
        assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
        assert_eq!(sent["messages"][0]["content"][0]["text"], "hi");
        let headers = p.headers(&chat, plan.model.as_deref(), false);
        assert_eq!(
            headers.path.as_deref(),
            Some("/v1/projects/my-proj/locations/us-east5/publishers/anthropic/models/claude-sonnet-4-5@20250929:rawPredict")
        );
        // A Messages client goes through untranslated, streaming by its body.
        let messages = p.attempt(Some("vertex"), "/v1/messages").unwrap();
        let plan = p
            .body(
                &messages,
                br#"{"model":"claude","max_tokens":9,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
            )
            .unwrap();
        assert!(plan.translate_response.is_none());
        assert!(plan.stream);
        let sent: Value = serde_json::from_slice(plan.new_body.as_ref().unwrap()).unwrap();
        assert_eq!(sent.get("model"), None);
        assert_eq!(sent["max_tokens"], 9);
        let headers = p.headers(&messages, plan.model.as_deref(), plan.stream);
        assert!(headers.path.unwrap().ends_with(":streamRawPredict"));
        assert!(headers.remove.contains(&"anthropic-version"));

        let reply = p.token_missing_reply(&chat, "the token endpoint answered 400 invalid_grant");
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("provider `vertex`"), "{}", reply.body);
        assert_eq!(
            p.attempt(Some("vertex"), "/v1/embeddings")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn vertex_config_errors_name_the_field_and_never_the_key() {
        let base = json!({"format": "vertex_ai", "project": "p", "location": "us-central1",
                          "service_account_env": "VERTEX_SA", "token_cluster": "oauth"});
        for (field, value, path) in [
            ("project", Value::Null, "providers.v.project"),
            ("location", json!("US Central"), "providers.v.location"),
            (
                "service_account_env",
                json!("UNSET_VAR"),
                "providers.v.service_account_env",
            ),
            (
                "service_account_env",
                json!("NOT_A_KEY"),
                "providers.v.service_account_env",
            ),
            ("token_cluster", Value::Null, "providers.v.token_cluster"),
            (
                "api_key_env",
                json!("BEDROCK_KEY"),
                "providers.v.api_key_env",
            ),
        ] {
            let mut entry = base.clone();
            entry[field] = value;
            let config = json!({"providers": {"v": entry}});
            let err = Providers::compile(
                parse::<ProviderConfig>(config.to_string().as_bytes()).unwrap(),
                &env,
            )
            .unwrap_err();
            assert_eq!(err.path, path, "{config}: {err}");
            assert!(!err.to_string().contains("secret-bytes"), "{err}");
        }
        let config = json!({"providers": {"o": {"format": "openai", "token_cluster": "x"}}});
        let err = Providers::compile(
            parse::<ProviderConfig>(config.to_string().as_bytes()).unwrap(),
            &env,
        )
        .unwrap_err();
        assert_eq!(err.path, "providers.o.token_cluster");
    }

    #[test]
    fn bedrock_config_errors_name_the_field() {
        let no_env = |_: &str| None;
        type Env<'a> = &'a dyn Fn(&str) -> Option<String>;
        let cases: [(Value, &str, Env); 6] = [
            (json!({"format": "bedrock"}), "providers.b.region", &env),
            (
                json!({"format": "bedrock", "region": "US East"}),
                "providers.b.region",
                &env,
            ),
            (
                json!({"format": "bedrock", "region": "us-east-1"}),
                "providers.b.aws_credentials_env.access_key_id",
                &no_env,
            ),
            (
                json!({"format": "bedrock", "region": "us-east-1", "api_key_env": "BEDROCK_KEY", "aws_credentials_env": {}}),
                "providers.b.aws_credentials_env",
                &env,
            ),
            (
                json!({"format": "openai", "region": "us-east-1"}),
                "providers.b.region",
                &env,
            ),
            (
                json!({"format": "bedrock", "region": "us-east-1", "responses_api": "native"}),
                "providers.b.responses_api",
                &env,
            ),
        ];
        for (entry, path, env) in cases {
            let config = json!({"providers": {"b": entry}});
            let err = Providers::compile(
                parse::<ProviderConfig>(config.to_string().as_bytes()).unwrap(),
                env,
            )
            .unwrap_err();
            assert_eq!(err.path, path, "{config}: {err}");
            assert!(!err.to_string().contains("aws-secret-value"));
        }
        let custom = |name: &str| match name {
            "MY_ID" => Some("AKID2".into()),
            "MY_SECRET" => Some("s".into()),
            _ => None,
        };
        let config = r#"{"providers": {"b": {"format": "bedrock", "region": "us-east-1",
            "aws_credentials_env": {"access_key_id": "MY_ID", "secret_access_key": "MY_SECRET"}}}}"#;
        assert!(
            Providers::compile(parse::<ProviderConfig>(config.as_bytes()).unwrap(), &custom)
                .is_ok()
        );
    }

    #[test]
    fn a_retry_starts_from_the_clients_request_line() {
        let mut origins = AttemptOrigins::default();
        let client = Origin {
            path: "/v1/chat/completions".into(),
            authority: Some("gateway".into()),
            content_length: Some("120".into()),
            accept: Some("application/json".into()),
        };
        assert_eq!(origins.previous("r1"), None);
        origins.record("r1", client.clone());
        // A later attempt's record never replaces the client's.
        let rewritten = Origin {
            path: "/v1/messages".into(),
            authority: Some("api.anthropic.com".into()),
            content_length: Some("98".into()),
            accept: Some("application/vnd.amazon.eventstream".into()),
        };
        origins.record("r1", rewritten);
        assert_eq!(origins.previous("r1"), Some(&client));
        // Bounded: the oldest request is forgotten first.
        for i in 0..MAX_ORIGINS {
            origins.record(
                &format!("other-{i}"),
                Origin {
                    path: "/".into(),
                    authority: None,
                    content_length: None,
                    accept: None,
                },
            );
        }
        assert_eq!(origins.by_request.len(), MAX_ORIGINS);
        assert!(!origins.by_request.contains_key("r1"));
    }
}
