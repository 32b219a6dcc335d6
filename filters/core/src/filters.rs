//! Configuration of each filter. Every type rejects unknown fields, so a typo in Envoy's YAML makes Envoy
//! refuse the config with a log line naming the field, instead of silently doing less than asked.

pub use crate::auth::AuthConfig;

pub use crate::router::RouterConfig;

pub use crate::cache::CacheConfig;

#[cfg(feature = "regex")]
pub use crate::guarding::guard::GuardConfig;

#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub use crate::pii::PiiConfig;

pub use crate::accounting::UsageConfig;

pub use crate::provider::ProviderConfig;

use crate::config::{parse, ConfigError};
#[cfg(any(feature = "regex", feature = "regex-lite"))]
use serde::Deserialize;

/// `llm_gateway`: the downstream filters in one Wasm module (one VM, one context per request), for
/// deployments that want the lowest overhead and accept one failure policy for all of them. Each
/// section is that filter's own configuration; the filters run in the order of the fields.
#[cfg(any(feature = "regex", feature = "regex-lite"))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub auth: Option<AuthConfig>,
    pub router: Option<RouterConfig>,
    #[cfg(feature = "regex")]
    pub guard: Option<GuardConfig>,
    pub cache: Option<CacheConfig>,
    pub pii: Option<PiiConfig>,
    pub usage: Option<UsageConfig>,
}

#[cfg(any(feature = "regex", feature = "regex-lite"))]
impl GatewayConfig {
    /// A module that runs nothing is a mistake in the config, not a choice.
    pub fn check(&self) -> Result<(), ConfigError> {
        #[cfg(feature = "regex")]
        let guard = self.guard.is_some();
        #[cfg(not(feature = "regex"))]
        let guard = false;
        if self.auth.is_none()
            && self.router.is_none()
            && !guard
            && self.cache.is_none()
            && self.pii.is_none()
            && self.usage.is_none()
        {
            return Err(ConfigError::new(
                "",
                "configure at least one of `auth`, `router`, `guard`, `cache`, `pii`, `usage`",
            ));
        }
        Ok(())
    }
}

/// Compiles one section of [`GatewayConfig`] (absent: `None`), its errors naming the section.
pub fn compile_section<C, T>(
    section: &str,
    config: Option<C>,
    compile: impl FnOnce(C) -> Result<T, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    config
        .map(compile)
        .transpose()
        .map_err(|err| err.within(section))
}

/// Checks a filter's `configuration` as the filter does when Envoy loads it (parse, then compile),
/// outside Envoy: for manifests that carry filter configs (Istio, Envoy Gateway). `filter` is the
/// filter's name (`llm_auth`, ...); `env` answers the environment variables llm_provider reads.
pub fn validate(
    filter: &str,
    json: &[u8],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match filter {
        "llm_auth" => crate::auth::Auth::compile(parse(json)?).map(drop),
        "llm_router" => crate::router::Router::compile(parse(json)?).map(drop),
        "llm_cache" => crate::cache::Cache::compile(parse(json)?, env).map(drop),
        #[cfg(feature = "regex")]
        "llm_guard" => crate::guarding::guard::Guard::compile(parse(json)?, env).map(drop),
        #[cfg(any(feature = "regex", feature = "regex-lite"))]
        "llm_pii" => crate::pii::Pii::compile(parse(json)?).map(drop),
        "llm_usage" => crate::accounting::Accounting::compile(parse(json)?).map(drop),
        "llm_provider" => crate::provider::Providers::compile(parse(json)?, env).map(drop),
        #[cfg(any(feature = "regex", feature = "regex-lite"))]
        "llm_gateway" => {
            let config: GatewayConfig = parse(json)?;
            config.check()?;
            compile_section("auth", config.auth, crate::auth::Auth::compile)?;
            compile_section("router", config.router, crate::router::Router::compile)?;
            #[cfg(feature = "regex")]
            compile_section("guard", config.guard, |c| {
                crate::guarding::guard::Guard::compile(c, env)
            })?;
            compile_section("cache", config.cache, |c| {
                crate::cache::Cache::compile(c, env)
            })?;
            compile_section("pii", config.pii, crate::pii::Pii::compile)?;
            compile_section(
                "usage",
                config.usage,
                crate::accounting::Accounting::compile,
            )?;
            Ok(())
        }
        other => Err(ConfigError::new("", format!("no filter named {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn every_filter_accepts_empty_and_rejects_unknown_fields() {
        fn check<T: serde::de::DeserializeOwned + std::fmt::Debug>() {
            parse::<T>(b"").unwrap();
            parse::<T>(b"{}").unwrap();
            let err = parse::<T>(br#"{"bogus":1}"#).unwrap_err();
            assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        }
        check::<RouterConfig>();
    }

    #[test]
    fn validate_runs_each_filters_own_checks() {
        let no_env = |_: &str| None;
        assert!(validate("llm_usage", b"{}", &no_env).is_ok());
        let err = validate("llm_usage", br#"{"max_label_sets":0}"#, &no_env).unwrap_err();
        assert_eq!(err.path, "max_label_sets");
        assert_eq!(
            validate("llm_auth", b"{}", &no_env).unwrap_err().path,
            "consumers"
        );
        assert!(validate("llm_nope", b"{}", &no_env).is_err());
    }

    #[test]
    fn gateway_errors_name_the_section_and_field() {
        let no_env = |_: &str| None;
        let err =
            validate("llm_gateway", br#"{"usage":{"max_label_sets":0}}"#, &no_env).unwrap_err();
        assert_eq!(err.path, "usage.max_label_sets");
        let err = validate("llm_gateway", br#"{"router":{"bogus":1}}"#, &no_env).unwrap_err();
        assert_eq!(err.path, "router.bogus");
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
        let err = validate("llm_gateway", br#"{"auth":{}}"#, &no_env).unwrap_err();
        assert_eq!(err.path, "auth.consumers");
        let err = validate("llm_gateway", br#"{"provider":{}}"#, &no_env).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `provider`"),
            "{err}"
        );
        let err = validate("llm_gateway", b"{}", &no_env).unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
        assert!(validate("llm_gateway", br#"{"router":{},"usage":{}}"#, &no_env).is_ok());
    }
}
