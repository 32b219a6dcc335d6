//! `llm_auth`: who is calling (API key digest or JWT identity), which models they may use, and their
//! request rate limit.

use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind, LocalReply};
use crate::config::ConfigError;
use crate::global::{GlobalLimit, OnServiceError, Scope, Service, ServiceConfig, Unit};
use crate::pattern::Pattern;
use crate::ratelimit::{limited_reply, retry_after_seconds, LimitUnit, Outcome, RateLimit};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The filter's configuration, as written in Envoy's `configuration` field.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Consumers identified by API key.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Identity from a JWT that Envoy's `jwt_authn` filter verified earlier in the chain.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// The rate-limit service that counts `scope: global` limits across Envoy replicas.
    #[serde(default)]
    pub rate_limit_service: Option<ServiceConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Published as `x-llm-consumer`; letters, digits and `-_.@:`.
    pub name: String,
    /// The consumer's keys (several, for rotation), as SHA-256 digests.
    pub keys: Vec<KeyConfig>,
    /// Free-form facts (team, tenant) for access logs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Model names or globs this consumer may use (default: all).
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Hex SHA-256 of the key (`make hash-key`). The key itself never appears in config.
    pub sha256: String,
    /// RFC 3339 time after which the key is refused, e.g. `2027-01-31T00:00:00Z`.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests: u32,
    #[serde(default = "sixty")]
    pub window_seconds: u32,
    /// `local` (this Envoy's shared data) or `global` (the rate-limit service, across replicas).
    #[serde(default)]
    pub scope: Scope,
    /// For a global limit, when the service cannot answer: `deny` (default, 503) or `allow`.
    #[serde(default)]
    pub on_service_error: Option<OnServiceError>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Where `jwt_authn` put the verified payload: `payload_in_metadata` under this namespace.
    #[serde(default = "jwt_namespace")]
    pub metadata_namespace: String,
    /// `jwt_authn`'s `payload_in_metadata` name.
    #[serde(default = "jwt_payload_key")]
    pub payload_key: String,
    /// The claim whose value names the consumer.
    #[serde(default = "jwt_subject")]
    pub consumer_claim: String,
    /// Put before the claim's value to make the consumer's name (`jwt:alice`), so a token's subject
    /// can never share an API-key consumer's limits, budget and metrics. With `""` names are used
    /// as they are, and a token whose subject names an API-key consumer is refused.
    #[serde(default = "jwt_consumer_prefix")]
    pub consumer_prefix: String,
    /// The first policy whose `claims` all match applies; a verified identity matching none gets 403.
    pub policies: Vec<JwtPolicy>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwtPolicy {
    /// Claim name to required (string) value; empty matches every identity.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
    #[serde(default = "all_models")]
    pub models: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
}

fn all_models() -> Vec<String> {
    vec!["*".to_string()]
}
fn sixty() -> u32 {
    60
}
fn jwt_namespace() -> String {
    "envoy.filters.http.jwt_authn".to_string()
}
fn jwt_payload_key() -> String {
    "jwt_payload".to_string()
}
fn jwt_subject() -> String {
    "sub".to_string()
}
fn jwt_consumer_prefix() -> String {
    "jwt:".to_string()
}

/// How a caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
    Jwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiKey => "api_key",
            AuthMethod::Jwt => "jwt",
        }
    }
}

/// What a consumer or JWT policy allows.
#[derive(Debug, Clone)]
pub struct Grant {
    models: Vec<Pattern>,
    model_names: Vec<String>,
    unrestricted: bool,
    /// A limit counted in this Envoy's shared data.
    pub rate_limit: Option<RateLimit>,
    /// A limit counted by the rate-limit service.
    pub global_limit: Option<GlobalLimit>,
}

impl Grant {
    fn compile(
        path: &str,
        models: &[String],
        rate_limit: Option<RateLimitConfig>,
        has_service: bool,
    ) -> Result<Grant, ConfigError> {
        if models.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.models"),
                "list at least one model or glob (\"*\" for all)",
            ));
        }
        if let Some((i, _)) = models.iter().enumerate().find(|(_, m)| m.is_empty()) {
            return Err(ConfigError::new(
                format!("{path}.models[{i}]"),
                "must not be empty",
            ));
        }
        let mut global_limit = None;
        let rate_limit = match rate_limit {
            None => None,
            Some(limit) => {
                if limit.requests == 0 {
                    return Err(ConfigError::new(
                        format!("{path}.rate_limit.requests"),
                        "must be greater than 0 (remove `rate_limit` for no limit)",
                    ));
                }
                if limit.window_seconds == 0 || limit.window_seconds > 31 * 86_400 {
                    return Err(ConfigError::new(
                        format!("{path}.rate_limit.window_seconds"),
                        "must be between 1 and 2678400 (31 days)",
                    ));
                }
                if limit.scope == Scope::Global {
                    if !has_service {
                        return Err(ConfigError::new(
                            format!("{path}.rate_limit.scope"),
                            "a global limit needs `rate_limit_service`",
                        ));
                    }
                    let unit = Unit::of_window(limit.window_seconds).ok_or_else(|| {
                        ConfigError::new(
                            format!("{path}.rate_limit.window_seconds"),
                            "a global limit's window is 1, 60, 3600 or 86400 seconds (the protocol's units)",
                        )
                    })?;
                    global_limit = Some(GlobalLimit {
                        kind: "requests",
                        amount: limit.requests,
                        unit,
                        model: None,
                        on_error: limit.on_service_error.unwrap_or(OnServiceError::Deny),
                    });
                    None
                } else if limit.on_service_error.is_some() {
                    return Err(ConfigError::new(
                        format!("{path}.rate_limit.on_service_error"),
                        "only for `scope: global`",
                    ));
                } else {
                    Some(RateLimit::new(
                        u64::from(limit.requests),
                        Duration::from_secs(u64::from(limit.window_seconds)),
                    ))
                }
            }
        };
        Ok(Grant {
            unrestricted: models.iter().any(|m| m == "*"),
            models: models.iter().map(|m| Pattern::new(m)).collect(),
            model_names: models.to_vec(),
            rate_limit,
            global_limit,
        })
    }

    /// True when every model is allowed: the filter then never needs to read the body.
    pub fn unrestricted(&self) -> bool {
        self.unrestricted
    }

    pub fn allows(&self, model: &str) -> bool {
        self.unrestricted || self.models.iter().any(|p| p.matches(model))
    }
}

#[derive(Debug, Clone)]
struct Consumer {
    name: String,
    metadata: BTreeMap<String, String>,
    grant: usize,
}

#[derive(Debug, Clone)]
struct Key {
    digest: [u8; 32],
    consumer: usize,
    expires_at: Option<u64>,
}

#[derive(Debug, Clone)]
struct Jwt {
    config: JwtConfig,
    /// (required claims, index into `Auth::grants`), in policy order.
    policies: Vec<(BTreeMap<String, String>, usize)>,
}

/// The compiled, validated configuration.
#[derive(Debug, Clone)]
pub struct Auth {
    consumers: Vec<Consumer>,
    keys: Vec<Key>,
    jwt: Option<Jwt>,
    grants: Vec<Grant>,
    /// Where `scope: global` limits are counted.
    pub service: Option<Service>,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal<'a> {
    pub name: Cow<'a, str>,
    pub method: AuthMethod,
    pub metadata: Option<&'a BTreeMap<String, String>>,
    pub grant: &'a Grant,
    /// Stable handle of `grant` ([`Auth::grant`]), for contexts that outlive the borrow.
    pub grant_id: usize,
}

/// The credentials a request presented, from its headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub api_key: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// The API key: `Authorization: Bearer` (what the OpenAI SDKs and Anthropic's `auth_token` send),
    /// else `x-api-key` (Anthropic SDKs), else `api-key` (Azure OpenAI clients).
    pub fn api_key(&self) -> Option<&'a str> {
        let bearer = self.authorization.and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        [bearer, self.x_api_key, self.api_key]
            .into_iter()
            .flatten()
            .map(str::trim)
            .find(|key| !key.is_empty())
    }
}

/// Headers that carry client credentials: removed before the request goes upstream.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// Consumer names go into a header, access logs and metric labels: keep them plain.
fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'))
}

fn check_consumer_name(path: &str, name: &str) -> Result<(), ConfigError> {
    if is_plain_name(name) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            "consumer names are 1-128 letters, digits, '-', '_', '.', '@' or ':'",
        ))
    }
}

impl Auth {
    pub fn compile(config: AuthConfig) -> Result<Auth, ConfigError> {
        if config.consumers.is_empty() && config.jwt.is_none() {
            return Err(ConfigError::new(
                "consumers",
                "configure at least one consumer (or `jwt`): without them every request is refused",
            ));
        }
        let service = Service::compile_optional(config.rate_limit_service.as_ref())?;
        let has_service = service.is_some();
        let mut consumers = Vec::new();
        let mut grants = Vec::new();
        let mut keys = Vec::new();
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        for (c, consumer) in config.consumers.iter().enumerate() {
            let path = format!("consumers[{c}]");
            check_consumer_name(&format!("{path}.name"), &consumer.name)?;
            if !names.insert(consumer.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    "this consumer is listed twice",
                ));
            }
            if consumer.keys.is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.keys"),
                    "list at least one key digest",
                ));
            }
            for (k, key) in consumer.keys.iter().enumerate() {
                let key_path = format!("{path}.keys[{k}]");
                let digest = parse_digest(&key.sha256).ok_or_else(|| {
                    ConfigError::new(
                        format!("{key_path}.sha256"),
                        "must be 64 hex characters: the SHA-256 of the key (`make hash-key`), never the key",
                    )
                })?;
                if !digests.insert(digest) {
                    return Err(ConfigError::new(
                        format!("{key_path}.sha256"),
                        "this key digest is listed twice",
                    ));
                }
                let expires_at = match &key.expires_at {
                    None => None,
                    Some(text) => Some(parse_time(text).ok_or_else(|| {
                        ConfigError::new(
                            format!("{key_path}.expires_at"),
                            "must be an RFC 3339 time such as 2027-01-31T00:00:00Z",
                        )
                    })?),
                };
                keys.push(Key {
                    digest,
                    consumer: c,
                    expires_at,
                });
            }
            grants.push(Grant::compile(
                &path,
                &consumer.models,
                consumer.rate_limit,
                has_service,
            )?);
            consumers.push(Consumer {
                name: consumer.name.clone(),
                metadata: consumer.metadata.clone(),
                grant: grants.len() - 1,
            });
        }
        let jwt = match config.jwt {
            None => None,
            Some(jwt) => {
                for (field, value) in [
                    ("jwt.metadata_namespace", &jwt.metadata_namespace),
                    ("jwt.payload_key", &jwt.payload_key),
                    ("jwt.consumer_claim", &jwt.consumer_claim),
                ] {
                    if value.is_empty() {
                        return Err(ConfigError::new(field, "must not be empty"));
                    }
                }
                if !jwt.consumer_prefix.is_empty() && !is_plain_name(&jwt.consumer_prefix) {
                    return Err(ConfigError::new(
                        "jwt.consumer_prefix",
                        "use 1-128 letters, digits or `-_.@:` (or \"\" for none)",
                    ));
                }
                if !jwt.consumer_prefix.is_empty() {
                    if let Some(c) = consumers
                        .iter()
                        .position(|c| c.name.starts_with(&jwt.consumer_prefix))
                    {
                        return Err(ConfigError::new(
                            format!("consumers[{c}].name"),
                            "starts with `jwt.consumer_prefix`, which names JWT identities; rename the consumer or change the prefix",
                        ));
                    }
                }
                if jwt.policies.is_empty() {
                    return Err(ConfigError::new(
                        "jwt.policies",
                        "list at least one policy (`{}` matches every verified identity)",
                    ));
                }
                let mut policies = Vec::new();
                for (p, policy) in jwt.policies.iter().enumerate() {
                    let path = format!("jwt.policies[{p}]");
                    if policy.claims.keys().any(String::is_empty) {
                        return Err(ConfigError::new(
                            format!("{path}.claims"),
                            "claim names must not be empty",
                        ));
                    }
                    grants.push(Grant::compile(
                        &path,
                        &policy.models,
                        policy.rate_limit,
                        has_service,
                    )?);
                    policies.push((policy.claims.clone(), grants.len() - 1));
                }
                Some(Jwt {
                    config: jwt,
                    policies,
                })
            }
        };
        Ok(Auth {
            consumers,
            keys,
            jwt,
            grants,
            service,
        })
    }

    /// Every API-key consumer with a rate limit: their buckets can be created before traffic arrives,
    /// so no request ever races on the first write of a bucket.
    pub fn api_key_limits(&self) -> impl Iterator<Item = (&str, RateLimit)> + '_ {
        self.consumers.iter().filter_map(|consumer| {
            let limit = self.grants.get(consumer.grant)?.rate_limit?;
            Some((consumer.name.as_str(), limit))
        })
    }

    /// The grant behind [`Principal::grant_id`].
    pub fn grant(&self, id: usize) -> Option<&Grant> {
        self.grants.get(id)
    }

    /// The metadata path of a JWT claim, for the glue to read with `get_property`.
    pub fn jwt_claim_path<'a>(&'a self, claim: &'a str) -> Option<[&'a str; 5]> {
        let jwt = &self.jwt.as_ref()?.config;
        Some([
            "metadata",
            "filter_metadata",
            &jwt.metadata_namespace,
            &jwt.payload_key,
            claim,
        ])
    }

    /// Every claim the policies look at (plus the consumer claim).
    pub fn jwt_claims(&self) -> Vec<&str> {
        let Some(jwt) = &self.jwt else {
            return Vec::new();
        };
        let mut claims: Vec<&str> = vec![jwt.config.consumer_claim.as_str()];
        for (required, _) in &jwt.policies {
            claims.extend(required.keys().map(String::as_str));
        }
        claims.sort_unstable();
        claims.dedup();
        claims
    }

    /// Authenticates a request. `claim` reads a claim of a JWT verified by `jwt_authn` (None without
    /// one); `now_secs` is the Unix time, for key expiry.
    pub fn authenticate<'a>(
        &'a self,
        flavor: ApiFlavor,
        credentials: &Credentials<'_>,
        claim: &dyn Fn(&str) -> Option<String>,
        now_secs: u64,
    ) -> Result<Principal<'a>, LocalReply> {
        if let Some(jwt) = &self.jwt {
            if let Some(subject) = claim(&jwt.config.consumer_claim) {
                let grant = jwt
                    .policies
                    .iter()
                    .find(|(required, _)| {
                        required
                            .iter()
                            .all(|(name, value)| claim(name).as_deref() == Some(value))
                    })
                    .and_then(|(_, id)| Some((*id, self.grants.get(*id)?)));
                let subject = format!("{}{subject}", jwt.config.consumer_prefix);
                if !is_plain_name(&subject) {
                    // It would be published as a header and a label: refuse rather than mangle.
                    return Err(invalid_identity(flavor));
                }
                if self.consumers.iter().any(|c| c.name == subject) {
                    // Only possible without a prefix: never merge a token into a key's consumer.
                    return Err(error_reply(
                        flavor,
                        ErrorKind::PermissionDenied,
                        "Your token's identity is also the name of an API-key consumer of this gateway; the gateway keeps the two apart. Ask its operators to set `jwt.consumer_prefix`.",
                        ErrorDetail { code: Some("identity_conflict"), param: None },
                    ));
                }
                return match grant {
                    Some((grant_id, grant)) => Ok(Principal {
                        name: Cow::Owned(subject),
                        method: AuthMethod::Jwt,
                        metadata: None,
                        grant,
                        grant_id,
                    }),
                    None => Err(error_reply(
                        flavor,
                        ErrorKind::PermissionDenied,
                        "Your token is valid, but no access policy of this gateway matches its claims.",
                        ErrorDetail { code: Some("no_policy"), param: None },
                    )),
                };
            }
        }
        let Some(key) = credentials.api_key() else {
            return Err(unauthorized(
                flavor,
                "Missing API key. Send it as `Authorization: Bearer <key>` (or in the `x-api-key` header).",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every digest in constant time, so timing does not tell which one matched.
        let mut found: Option<&Key> = None;
        for candidate in &self.keys {
            if bool::from(candidate.digest.ct_eq(&digest)) {
                found = Some(candidate);
            }
        }
        let Some(found) = found else {
            if looks_like_jwt(key) && self.jwt.is_some() {
                return Err(unauthorized(
                    flavor,
                    "The bearer token is a JWT that did not verify (expired, wrong issuer or audience, or bad signature).",
                ));
            }
            return Err(unauthorized(
                flavor,
                "Incorrect API key provided. Check the key, or ask the gateway's operators for one.",
            ));
        };
        let consumer = self
            .consumers
            .get(found.consumer)
            .ok_or_else(|| unauthorized(flavor, "Incorrect API key provided."))?;
        if found.expires_at.is_some_and(|at| now_secs >= at) {
            return Err(unauthorized(
                flavor,
                "This API key has expired. Use its replacement, or ask the gateway's operators for one.",
            ));
        }
        let grant = self
            .grants
            .get(consumer.grant)
            .ok_or_else(|| unauthorized(flavor, "Incorrect API key provided."))?;
        Ok(Principal {
            name: Cow::Borrowed(&consumer.name),
            method: AuthMethod::ApiKey,
            metadata: Some(&consumer.metadata),
            grant,
            grant_id: consumer.grant,
        })
    }
}

/// 403 for a model outside the caller's grant. Names the consumer and what it may use, never a key.
pub fn model_not_allowed(
    flavor: ApiFlavor,
    consumer: &str,
    grant: &Grant,
    model: &str,
) -> LocalReply {
    let shown: String = model.chars().take(100).collect();
    let allowed = grant.model_names.join(", ");
    error_reply(
        flavor,
        ErrorKind::PermissionDenied,
        &format!("Consumer `{consumer}` may not use model `{shown}`. Allowed models: {allowed}."),
        ErrorDetail {
            code: Some("model_not_allowed"),
            param: Some("model"),
        },
    )
}

/// 429 with `retry-after` and the request rate-limit headers.
pub fn rate_limited(flavor: ApiFlavor, consumer: &str, outcome: &Outcome) -> LocalReply {
    limited_reply(
        flavor,
        LimitUnit::Requests,
        &format!(
            "Rate limit reached for consumer `{consumer}`: {} requests per window. Retry in {} s.",
            outcome.limit,
            retry_after_seconds(outcome.retry_after)
        ),
        outcome,
    )
}

/// A `GET /v1/models` list without the models `grant` does not allow; None when nothing changes.
pub fn filter_model_list(body: &[u8], grant: &Grant) -> Option<Vec<u8>> {
    let mut list: serde_json::Value = serde_json::from_slice(body).ok()?;
    let data = list.get_mut("data")?.as_array_mut()?;
    let before = data.len();
    data.retain(|model| {
        model
            .get("id")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|id| grant.allows(id))
    });
    if data.len() == before {
        return None;
    }
    serde_json::to_vec(&list).ok()
}

/// 404 for `GET /v1/models/{id}` outside the caller's grant: to this caller the model does not exist.
pub fn model_not_visible(consumer: &str, model: &str) -> LocalReply {
    let shown: String = model.chars().take(100).collect();
    error_reply(
        ApiFlavor::OpenAi,
        ErrorKind::NotFound,
        &format!("The model `{shown}` does not exist or consumer `{consumer}` may not use it."),
        ErrorDetail {
            code: Some("model_not_found"),
            param: Some("model"),
        },
    )
}

/// The shared-data key of a consumer's request bucket.
pub fn bucket_key(method: AuthMethod, consumer: &str) -> String {
    format!("llm_auth.requests.{}.{consumer}", method.as_str())
}

/// A compact JWS: three base64url segments, the first a JSON object (`eyJ` is `{"`).
fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim()).ok()?;
    bytes.try_into().ok()
}

fn parse_time(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339_weak(text.trim()).ok()?;
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn unauthorized(flavor: ApiFlavor, message: &str) -> LocalReply {
    error_reply(
        flavor,
        ErrorKind::Authentication,
        message,
        ErrorDetail {
            code: Some("invalid_api_key"),
            param: None,
        },
    )
}

fn invalid_identity(flavor: ApiFlavor) -> LocalReply {
    unauthorized(
        flavor,
        "The token's identity claim is not a usable consumer name.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use serde_json::Value;

    fn digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn auth(json: &str) -> Auth {
        Auth::compile(parse::<AuthConfig>(json.as_bytes()).unwrap()).unwrap()
    }

    fn demo() -> Auth {
        auth(&format!(
            r#"{{"consumers":[
                {{"name":"team-a","keys":[{{"sha256":"{}"}},{{"sha256":"{}","expires_at":"2020-01-01T00:00:00Z"}}],
                  "metadata":{{"team":"a"}}}},
                {{"name":"team-b","keys":[{{"sha256":"{}"}}],"models":["gpt-4o-mini","fast"]}},
                {{"name":"tiny","keys":[{{"sha256":"{}"}}],"rate_limit":{{"requests":5,"window_seconds":60}}}}
            ],
            "jwt":{{"policies":[{{"claims":{{"org":"acme"}},"models":["claude-*"]}},{{"claims":{{"org":"beta"}}}}]}}}}"#,
            digest("sk-a"),
            digest("sk-a-old"),
            digest("sk-b").to_uppercase(),
            digest("sk-tiny"),
        ))
    }

    fn no_jwt(_: &str) -> Option<String> {
        None
    }

    /// The principal behind an `x-api-key` (which must be valid).
    fn by_key<'a>(auth: &'a Auth, key: &str) -> Principal<'a> {
        let credentials = Credentials {
            x_api_key: Some(key),
            ..Default::default()
        };
        auth.authenticate(ApiFlavor::OpenAi, &credentials, &no_jwt, 0)
            .unwrap()
    }

    fn with_key(auth: &Auth, header: &str, value: &str) -> Result<String, u16> {
        let mut credentials = Credentials::default();
        match header {
            "authorization" => credentials.authorization = Some(value),
            "x-api-key" => credentials.x_api_key = Some(value),
            _ => credentials.api_key = Some(value),
        }
        auth.authenticate(ApiFlavor::OpenAi, &credentials, &no_jwt, 1_800_000_000)
            .map(|p| p.name.into_owned())
            .map_err(|reply| reply.status)
    }

    #[test]
    fn keys_from_every_header_form() {
        let a = demo();
        assert_eq!(
            with_key(&a, "authorization", "Bearer sk-a"),
            Ok("team-a".into())
        );
        assert_eq!(
            with_key(&a, "authorization", "bearer   sk-b "),
            Ok("team-b".into())
        );
        assert_eq!(with_key(&a, "x-api-key", "sk-tiny"), Ok("tiny".into()));
        assert_eq!(with_key(&a, "api-key", "sk-a"), Ok("team-a".into()));
        assert_eq!(with_key(&a, "authorization", "Basic c2stYQ=="), Err(401));
        assert_eq!(with_key(&a, "authorization", "Bearer sk-wrong"), Err(401));
        assert_eq!(with_key(&a, "authorization", "Bearer "), Err(401));
    }

    #[test]
    fn expired_keys_are_refused_with_a_clear_message() {
        let a = demo();
        let credentials = Credentials {
            x_api_key: Some("sk-a-old"),
            ..Default::default()
        };
        let err = a
            .authenticate(ApiFlavor::Anthropic, &credentials, &no_jwt, 1_800_000_000)
            .unwrap_err();
        assert_eq!(err.status, 401);
        assert!(err.body.contains("expired"), "{}", err.body);
        assert!(!err.body.contains("sk-a-old"));
        let body: Value = serde_json::from_str(&err.body).unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
        // Before its expiry the same key works.
        assert!(a
            .authenticate(ApiFlavor::OpenAi, &credentials, &no_jwt, 1_500_000_000)
            .is_ok());
    }

    #[test]
    fn missing_and_wrong_keys_never_echo_the_key() {
        let a = demo();
        let missing = a
            .authenticate(ApiFlavor::OpenAi, &Credentials::default(), &no_jwt, 0)
            .unwrap_err();
        assert_eq!(missing.status, 401);
        assert!(missing.body.contains("Missing API key"));
        let wrong = Credentials {
            authorization: Some("Bearer sk-secret-guess"),
            ..Default::default()
        };
        let err = a
            .authenticate(ApiFlavor::OpenAi, &wrong, &no_jwt, 0)
            .unwrap_err();
        assert!(!err.body.contains("sk-secret-guess"));
        let body: Value = serde_json::from_str(&err.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }

    #[test]
    fn model_grants() {
        let a = demo();
        let b = by_key(&a, "sk-b");
        assert!(!b.grant.unrestricted());
        assert!(b.grant.allows("gpt-4o-mini") && b.grant.allows("fast"));
        assert!(!b.grant.allows("gpt-4o"));
        let reply = model_not_allowed(ApiFlavor::OpenAi, &b.name, b.grant, "gpt-4o");
        assert_eq!(reply.status, 403);
        assert!(
            reply.body.contains("team-b") && reply.body.contains("gpt-4o-mini, fast"),
            "{}",
            reply.body
        );
        let team_a = by_key(&a, "sk-a");
        assert!(team_a.grant.unrestricted());
        assert_eq!(team_a.metadata.unwrap()["team"], "a");
    }

    #[test]
    fn model_lists_are_filtered_by_grant() {
        let a = demo();
        let b = by_key(&a, "sk-b");
        let list =
            br#"{"object":"list","data":[{"id":"gpt-4o-mini"},{"id":"gpt-4o"},{"id":"fast"}]}"#;
        let filtered: Value =
            serde_json::from_slice(&filter_model_list(list, b.grant).unwrap()).unwrap();
        let ids: Vec<&str> = filtered["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o-mini", "fast"]);
        assert_eq!(filtered["object"], "list");
        let team_a = by_key(&a, "sk-a");
        assert_eq!(
            filter_model_list(list, team_a.grant),
            None,
            "nothing to remove"
        );
        assert_eq!(filter_model_list(b"not json", b.grant), None);
        let reply = model_not_visible("team-b", "gpt-4o");
        assert_eq!(reply.status, 404);
        assert!(reply.body.contains("model_not_found"));
    }

    /// A token whose subject is an API-key consumer's name never shares that consumer's limits,
    /// budget and metrics: prefixed by default; refused when the operator turned the prefix off.
    #[test]
    fn jwt_identities_never_merge_with_api_key_consumers() {
        let claims = |name: &str| match name {
            "sub" => Some("team-a".to_string()),
            "org" => Some("beta".to_string()),
            _ => None,
        };
        let none = Credentials::default();
        let prefixed = demo();
        let principal = prefixed
            .authenticate(ApiFlavor::OpenAi, &none, &claims, 0)
            .unwrap();
        assert_eq!(principal.name, "jwt:team-a");
        assert_eq!(principal.method, AuthMethod::Jwt);

        let bare = auth(&format!(
            r#"{{"consumers":[{{"name":"team-a","keys":[{{"sha256":"{}"}}]}}],
                "jwt":{{"consumer_prefix":"","policies":[{{}}]}}}}"#,
            digest("sk-a")
        ));
        let refused = bare
            .authenticate(ApiFlavor::OpenAi, &none, &claims, 0)
            .unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(
            refused.body.contains("identity_conflict"),
            "{}",
            refused.body
        );
        let other = |name: &str| (name == "sub").then(|| "someone".to_string());
        assert_eq!(
            bare.authenticate(ApiFlavor::OpenAi, &none, &other, 0)
                .unwrap()
                .name,
            "someone"
        );
    }

    #[test]
    fn jwt_identity_and_policies() {
        let a = demo();
        let claims = |org: &'static str, sub: &'static str| {
            move |name: &str| match name {
                "sub" => Some(sub.to_string()),
                "org" => Some(org.to_string()),
                _ => None,
            }
        };
        let none = Credentials::default();
        let acme = a
            .authenticate(ApiFlavor::OpenAi, &none, &claims("acme", "alice@acme"), 0)
            .unwrap();
        assert_eq!(
            acme.name, "jwt:alice@acme",
            "JWT identities have their own namespace"
        );
        assert_eq!(acme.method, AuthMethod::Jwt);
        assert!(acme.grant.allows("claude-sonnet-4-5") && !acme.grant.allows("gpt-4o"));
        let beta = a
            .authenticate(ApiFlavor::OpenAi, &none, &claims("beta", "bob"), 0)
            .unwrap();
        assert!(beta.grant.unrestricted());
        let other = a
            .authenticate(ApiFlavor::OpenAi, &none, &claims("other", "eve"), 0)
            .unwrap_err();
        assert_eq!(other.status, 403);
        let odd = a
            .authenticate(
                ApiFlavor::OpenAi,
                &none,
                &claims("beta", "bob\r\nx-evil: 1"),
                0,
            )
            .unwrap_err();
        assert_eq!(odd.status, 401);
        // A verified JWT wins over an API key in the same request.
        let both = Credentials {
            x_api_key: Some("sk-a"),
            ..Default::default()
        };
        assert_eq!(
            a.authenticate(ApiFlavor::OpenAi, &both, &claims("beta", "bob"), 0)
                .unwrap()
                .name,
            "jwt:bob"
        );
        assert_eq!(a.jwt_claims(), vec!["org", "sub"]);
        // A JWT that jwt_authn did not verify is not mistaken for a wrong API key.
        let failed = Credentials {
            authorization: Some("Bearer eyJhbGciOi.eyJzdWIi.c2ln"),
            ..Default::default()
        };
        let err = a
            .authenticate(ApiFlavor::OpenAi, &failed, &no_jwt, 0)
            .unwrap_err();
        assert!(err.body.contains("did not verify"), "{}", err.body);
        assert_eq!(
            a.jwt_claim_path("sub").unwrap(),
            [
                "metadata",
                "filter_metadata",
                "envoy.filters.http.jwt_authn",
                "jwt_payload",
                "sub"
            ]
        );
    }

    #[test]
    fn rate_limit_replies() {
        let a = demo();
        let tiny = by_key(&a, "sk-tiny");
        let limit = tiny.grant.rate_limit.unwrap();
        let mut state = None;
        for _ in 0..5 {
            state = Some(limit.take(state, 0, 1).1);
        }
        let (outcome, _) = limit.take(state, 0, 1);
        let reply = rate_limited(ApiFlavor::OpenAi, &tiny.name, &outcome);
        assert_eq!(reply.status, 429);
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("retry-after"), Some("12"));
        assert_eq!(header("x-ratelimit-limit-requests"), Some("5"));
        assert_eq!(header("x-ratelimit-remaining-requests"), Some("0"));
        assert_eq!(header("x-ratelimit-reset-requests"), Some("1m0s"));
        assert_eq!(
            bucket_key(tiny.method, &tiny.name),
            "llm_auth.requests.api_key.tiny"
        );
        assert!(std::ptr::eq(a.grant(tiny.grant_id).unwrap(), tiny.grant));
        let limited: Vec<&str> = a.api_key_limits().map(|(name, _)| name).collect();
        assert_eq!(limited, vec!["tiny"]);
    }

    #[test]
    fn config_errors_name_the_field() {
        let d = digest("k");
        let cases = [
            ("{}".to_string(), "consumers", "at least one consumer"),
            (
                format!(r#"{{"consumers":[{{"name":"a b","keys":[{{"sha256":"{d}"}}]}}]}}"#),
                "consumers[0].name",
                "letters",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}]}},{{"name":"a","keys":[{{"sha256":"{}"}}]}}]}}"#,
                    digest("j")
                ),
                "consumers[1].name",
                "twice",
            ),
            (
                r#"{"consumers":[{"name":"a","keys":[]}]}"#.to_string(),
                "consumers[0].keys",
                "at least one",
            ),
            (
                r#"{"consumers":[{"name":"a","keys":[{"sha256":"sk-plaintext-key"}]}]}"#
                    .to_string(),
                "consumers[0].keys[0].sha256",
                "64 hex",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}},{{"sha256":"{d}"}}]}}]}}"#
                ),
                "consumers[0].keys[1].sha256",
                "twice",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}","expires_at":"tomorrow"}}]}}]}}"#
                ),
                "consumers[0].keys[0].expires_at",
                "RFC 3339",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}],"models":[]}}]}}"#
                ),
                "consumers[0].models",
                "at least one",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}],"rate_limit":{{"requests":0}}}}]}}"#
                ),
                "consumers[0].rate_limit.requests",
                "greater than 0",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}],"rate_limit":{{"requests":5,"scope":"global"}}}}]}}"#
                ),
                "consumers[0].rate_limit.scope",
                "needs `rate_limit_service`",
            ),
            (
                format!(
                    r#"{{"rate_limit_service":{{"cluster":"rls"}},"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}],"rate_limit":{{"requests":5,"window_seconds":90,"scope":"global"}}}}]}}"#
                ),
                "consumers[0].rate_limit.window_seconds",
                "1, 60, 3600 or 86400",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}],"rate_limit":{{"requests":5,"on_service_error":"allow"}}}}]}}"#
                ),
                "consumers[0].rate_limit.on_service_error",
                "only for `scope: global`",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"a","keys":[{{"sha256":"{d}"}}],"rate_limit":{{"requests":1,"window_seconds":0}}}}]}}"#
                ),
                "consumers[0].rate_limit.window_seconds",
                "between",
            ),
            (
                r#"{"jwt":{"policies":[]}}"#.to_string(),
                "jwt.policies",
                "at least one",
            ),
            (
                r#"{"jwt":{"consumer_prefix":"jwt user/","policies":[{}]}}"#.to_string(),
                "jwt.consumer_prefix",
                "letters, digits",
            ),
            (
                format!(
                    r#"{{"consumers":[{{"name":"jwt:ops","keys":[{{"sha256":"{}"}}]}}],"jwt":{{"policies":[{{}}]}}}}"#,
                    digest("k")
                ),
                "consumers[0].name",
                "consumer_prefix",
            ),
            (
                r#"{"jwt":{"consumer_claim":"","policies":[{}]}}"#.to_string(),
                "jwt.consumer_claim",
                "empty",
            ),
        ];
        for (json, path, message) in cases {
            let err = Auth::compile(parse::<AuthConfig>(json.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
            assert!(err.message.contains(message), "{json}: {err}");
            assert!(!err.to_string().contains("sk-plaintext-key"));
        }
        let err = parse::<AuthConfig>(br#"{"consumers":[{"name":"a","key":[]}]}"#).unwrap_err();
        assert_eq!(err.path, "consumers[0].key");
    }

    #[test]
    fn digests_compare_in_constant_time_over_all_keys() {
        // Same answer whichever position the matching key has.
        let keys: Vec<String> = (0..50).map(|i| format!("sk-{i}")).collect();
        let consumers: Vec<String> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!(r#"{{"name":"c{i}","keys":[{{"sha256":"{}"}}]}}"#, digest(k)))
            .collect();
        let a = auth(&format!(r#"{{"consumers":[{}]}}"#, consumers.join(",")));
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(with_key(&a, "x-api-key", key), Ok(format!("c{i}")));
        }
    }
}
