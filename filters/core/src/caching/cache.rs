//! llm_cache's configuration and decisions: which requests are cached, under which key, for how long.

use super::key::{self, CacheApi, Digest32, KeyParts};
use super::semantic::{Semantic, SemanticConfig, VectorStore};
use super::store::Store;
use crate::config::ConfigError;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Names this cache's shared data, so two caches in one Envoy (or one VM id) never mix entries.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Slots for entries (an upper bound on the number of entries).
    #[serde(default = "default_max_entries")]
    pub max_entries: u32,
    /// Bytes of stored entries; the oldest are evicted beyond it.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Answers larger than this are not stored.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// Settings for every model and consumer, unless `models` or `consumers` say otherwise.
    #[serde(default)]
    pub defaults: Settings,
    /// Per model (the resolved model name llm_router publishes).
    #[serde(default)]
    pub models: BTreeMap<String, Settings>,
    /// Per consumer (llm_auth's consumer name); wins over the model's settings.
    #[serde(default)]
    pub consumers: BTreeMap<String, Settings>,
    /// The semantic tier's embeddings service and local store (used where `semantic_threshold` is
    /// set).
    pub semantic: Option<SemanticConfig>,
}

fn default_namespace() -> String {
    "default".into()
}
fn default_max_entries() -> u32 {
    1_000
}
fn default_max_bytes() -> u64 {
    64 << 20
}
fn default_max_entry_bytes() -> u64 {
    1 << 20
}

/// Settings of one level (defaults, a model, a consumer); unset fields inherit.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub enabled: Option<bool>,
    pub ttl_seconds: Option<u64>,
    pub scope: Option<Scope>,
    /// Store and serve only requests with `temperature: 0`.
    pub only_deterministic: Option<bool>,
    /// Turns the semantic tier on: the least cosine similarity of a prompt to a stored one for its
    /// answer to be served (0 turns it off again, e.g. for one consumer).
    pub semantic_threshold: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Entries are the consumer's own (the default: the cache sees prompts before llm_pii masks them).
    Consumer,
    /// One entry serves every consumer asking the same thing.
    Shared,
}

/// The settings for one request, every level applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub enabled: bool,
    pub ttl_seconds: u64,
    pub scope: Scope,
    pub only_deterministic: bool,
    /// The semantic tier's threshold, when it is on.
    pub semantic_threshold: Option<f32>,
}

const DEFAULT_TTL_SECONDS: u64 = 300;
/// A day: longer-lived answers belong in a real store, not in Envoy's memory.
const MAX_TTL_SECONDS: u64 = 86_400;

impl Policy {
    fn apply(mut self, settings: &Settings) -> Self {
        if let Some(enabled) = settings.enabled {
            self.enabled = enabled;
        }
        if let Some(ttl) = settings.ttl_seconds {
            self.ttl_seconds = ttl;
        }
        if let Some(scope) = settings.scope {
            self.scope = scope;
        }
        if let Some(only) = settings.only_deterministic {
            self.only_deterministic = only;
        }
        if let Some(threshold) = settings.semantic_threshold {
            #[allow(clippy::cast_possible_truncation)]
            let threshold = threshold as f32;
            self.semantic_threshold = (threshold > 0.0).then_some(threshold);
        }
        self
    }
}

fn check_settings(path: &str, settings: &Settings, semantic: bool) -> Result<(), ConfigError> {
    if let Some(threshold) = settings.semantic_threshold {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ConfigError::new(
                format!("{path}.semantic_threshold"),
                "must be between 0 and 1 (a cosine similarity; 0 turns the semantic tier off)",
            ));
        }
        if threshold > 0.0 && !semantic {
            return Err(ConfigError::new(
                format!("{path}.semantic_threshold"),
                "needs the `semantic` section (the embeddings service)",
            ));
        }
    }
    if let Some(ttl) = settings.ttl_seconds {
        if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
            return Err(ConfigError::new(
                format!("{path}.ttl_seconds"),
                format!("must be between 1 and {MAX_TTL_SECONDS}"),
            ));
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct Cache {
    store: Store,
    max_entry_bytes: u64,
    defaults: Policy,
    models: BTreeMap<String, Settings>,
    consumers: BTreeMap<String, Settings>,
    semantic: Option<Semantic>,
    namespace: String,
}

impl Cache {
    /// `env` answers the environment variables the config names (the embeddings service's key).
    pub fn compile(
        config: CacheConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let namespace_ok = !config.namespace.is_empty()
            && config.namespace.len() <= 64
            && config
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !namespace_ok {
            return Err(ConfigError::new(
                "namespace",
                "use 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        if !(1..=100_000).contains(&config.max_entries) {
            return Err(ConfigError::new(
                "max_entries",
                "must be between 1 and 100000",
            ));
        }
        if !(1024..=(16 << 20)).contains(&config.max_entry_bytes) {
            return Err(ConfigError::new(
                "max_entry_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if config.max_bytes < config.max_entry_bytes || config.max_bytes > (4 << 30) {
            return Err(ConfigError::new(
                "max_bytes",
                "must be at least max_entry_bytes and at most 4294967296",
            ));
        }
        let semantic = config
            .semantic
            .map(|semantic| Semantic::compile(semantic, &config.namespace, env))
            .transpose()?;
        let has_semantic = semantic.is_some();
        check_settings("defaults", &config.defaults, has_semantic)?;
        for (model, settings) in &config.models {
            check_settings(&format!("models.{model}"), settings, has_semantic)?;
        }
        for (consumer, settings) in &config.consumers {
            check_settings(&format!("consumers.{consumer}"), settings, has_semantic)?;
        }
        let defaults = Policy {
            enabled: true,
            ttl_seconds: DEFAULT_TTL_SECONDS,
            scope: Scope::Consumer,
            only_deterministic: false,
            semantic_threshold: None,
        }
        .apply(&config.defaults);
        Ok(Cache {
            store: Store::new(&config.namespace, config.max_entries, config.max_bytes),
            max_entry_bytes: config.max_entry_bytes,
            defaults,
            models: config.models,
            consumers: config.consumers,
            semantic,
            namespace: config.namespace,
        })
    }

    pub fn semantic(&self) -> Option<&Semantic> {
        self.semantic.as_ref()
    }

    /// The local vector store of `model`: one per configured model, one for all others.
    pub fn vector_store(&self, model: &str) -> Option<VectorStore> {
        let semantic = self.semantic.as_ref()?;
        let name = self
            .models
            .keys()
            .position(|m| m == model)
            .map_or_else(|| "default".to_string(), |i| i.to_string());
        Some(VectorStore::new(
            &self.namespace,
            &name,
            semantic.max_vectors,
        ))
    }

    /// Every vector store the config can use (to create them before traffic).
    pub fn vector_stores(&self) -> Vec<VectorStore> {
        let Some(semantic) = &self.semantic else {
            return Vec::new();
        };
        (0..self.models.len())
            .map(|i| i.to_string())
            .chain(["default".to_string()])
            .map(|name| VectorStore::new(&self.namespace, &name, semantic.max_vectors))
            .collect()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn max_entry_bytes(&self) -> usize {
        usize::try_from(self.max_entry_bytes).unwrap_or(usize::MAX)
    }

    /// The settings for `model` asked by `consumer`: defaults, then the model's, then the consumer's.
    pub fn policy(&self, model: &str, consumer: &str) -> Policy {
        let mut policy = self.defaults;
        if let Some(settings) = self.models.get(model) {
            policy = policy.apply(settings);
        }
        if let Some(settings) = self.consumers.get(consumer) {
            policy = policy.apply(settings);
        }
        policy
    }

    /// The models named in the config (for metric labels: client input never makes a label).
    pub fn configured_models(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }
}

/// What the client's `cache-control` asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Look up and store.
    Normal,
    /// `no-cache`: do not answer from the cache, but store the fresh answer.
    Refresh,
    /// `no-store`: neither look up nor store.
    Skip,
}

pub fn directive(cache_control: Option<&str>) -> Directive {
    let Some(value) = cache_control else {
        return Directive::Normal;
    };
    let mut result = Directive::Normal;
    for token in value.split(',') {
        let name = token.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("no-store") {
            return Directive::Skip;
        }
        if name.eq_ignore_ascii_case("no-cache")
            || name.eq_ignore_ascii_case("max-age") && token.trim().ends_with("=0")
        {
            result = Directive::Refresh;
        }
    }
    result
}

/// A request the cache can serve or store.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheRequest {
    pub api: CacheApi,
    pub digest: Digest32,
    /// The client asked for a stream.
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`.
    pub include_usage: bool,
    pub deterministic: bool,
}

/// A request body the cache can key: a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedBody(serde_json::Map<String, Value>);

/// Reads a request body for the cache; `None` when it is not a JSON object (the cache stays out).
pub fn parse_body(body: &[u8]) -> Option<ParsedBody> {
    match serde_json::from_slice(body).ok()? {
        Value::Object(map) => Some(ParsedBody(map)),
        _ => None,
    }
}

impl ParsedBody {
    pub fn fields(&self) -> &serde_json::Map<String, Value> {
        &self.0
    }

    /// The body's `model`: after llm_router, the model the provider will be asked for.
    pub fn model(&self) -> &str {
        self.0
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn request(&self, parts: &KeyParts<'_>) -> CacheRequest {
        let object = &self.0;
        let stream = object.get("stream").and_then(Value::as_bool) == Some(true);
        let include_usage = object
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        CacheRequest {
            api: parts.api,
            digest: key::digest(parts, object),
            stream,
            include_usage,
            deterministic: key::is_deterministic(object),
        }
    }
}

/// A fresh answer id for a replay (`chatcmpl-...` or `msg_...`), unique per digest and time.
pub fn fresh_id(api: CacheApi, digest: &Digest32, now_ns: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(digest);
    hasher.update(now_ns.to_le_bytes());
    let hash = hasher.finalize();
    let suffix = hex::encode(hash.get(..12).unwrap_or_default());
    match api {
        CacheApi::ChatCompletions => format!("chatcmpl-cache{suffix}"),
        CacheApi::Messages => format!("msg_cache{suffix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn compile(json: &str) -> Result<Cache, ConfigError> {
        parse::<CacheConfig>(json.as_bytes()).and_then(|c| Cache::compile(c, &|_| None))
    }

    #[test]
    fn settings_inherit_defaults_then_model_then_consumer() {
        let cache = compile(
            r#"{"defaults": {"enabled": false},
                "models": {"gpt-4o-mini": {"enabled": true, "ttl_seconds": 60}},
                "consumers": {"team-b": {"enabled": false}, "team-c": {"scope": "shared"}}}"#,
        )
        .unwrap();
        assert!(!cache.policy("other", "team-a").enabled);
        let p = cache.policy("gpt-4o-mini", "team-a");
        assert!(p.enabled);
        assert_eq!(p.ttl_seconds, 60);
        assert_eq!(p.scope, Scope::Consumer);
        assert!(!cache.policy("gpt-4o-mini", "team-b").enabled);
        assert_eq!(cache.policy("gpt-4o-mini", "team-c").scope, Scope::Shared);
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |json: &str| compile(json).unwrap_err().to_string();
        assert!(err(r#"{"models": {"m": {"ttl_seconds": 0}}}"#).contains("models.m.ttl_seconds"));
        assert!(err(r#"{"max_entries": 0}"#).contains("max_entries"));
        assert!(err(r#"{"max_bytes": 10}"#).contains("max_bytes"));
        assert!(err(r#"{"namespace": "a b"}"#).contains("namespace"));
        assert!(err(r#"{"defaults": {"scope": "global"}}"#).contains("scope"));
        assert!(err(r#"{"ttl": 5}"#).contains("ttl"));
        assert!(err(r#"{"models": {"m": {"semantic_threshold": 0.9}}}"#)
            .contains("models.m.semantic_threshold`: needs the `semantic` section"));
        let semantic = r#""semantic": {"embeddings": {"cluster": "e", "model": "x"}}"#;
        assert!(err(&format!(
            r#"{{{semantic}, "defaults": {{"semantic_threshold": 1.5}}}}"#
        ))
        .contains("defaults.semantic_threshold"));
        let cache = compile(&format!(
            r#"{{{semantic}, "models": {{"a": {{"semantic_threshold": 0.9}}, "b": {{}}}},
                "consumers": {{"c": {{"semantic_threshold": 0}}}}}}"#
        ))
        .unwrap();
        assert_eq!(cache.policy("a", "x").semantic_threshold, Some(0.9));
        assert_eq!(cache.policy("a", "c").semantic_threshold, None);
        assert_eq!(cache.policy("b", "x").semantic_threshold, None);
        assert_eq!(cache.vector_stores().len(), 3);
    }

    #[test]
    fn cache_control() {
        assert_eq!(directive(None), Directive::Normal);
        assert_eq!(directive(Some("No-Cache")), Directive::Refresh);
        assert_eq!(directive(Some("max-age=0")), Directive::Refresh);
        assert_eq!(directive(Some("no-cache, no-store")), Directive::Skip);
        assert_eq!(directive(Some("private")), Directive::Normal);
    }

    #[test]
    fn analysis() {
        let parts = KeyParts {
            api: CacheApi::ChatCompletions,
            route: "r",
            model: "m",
            scope: "s",
        };
        let body = parse_body(
            br#"{"model":"m1","stream":true,"stream_options":{"include_usage":true},"temperature":0,"messages":[]}"#,
        )
        .unwrap();
        assert_eq!(body.model(), "m1");
        let r = body.request(&parts);
        assert!(r.stream && r.include_usage && r.deterministic);
        assert!(parse_body(b"[1]").is_none());
        assert!(parse_body(b"{bad").is_none());
        let a = fresh_id(CacheApi::ChatCompletions, &r.digest, 1);
        assert!(a.starts_with("chatcmpl-cache"));
        assert_ne!(a, fresh_id(CacheApi::ChatCompletions, &r.digest, 2));
    }
}
