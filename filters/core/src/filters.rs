//! Configuration of each filter. Every type rejects unknown fields, so a typo in Envoy's YAML makes Envoy
//! refuse the config with a log line naming the field, instead of silently doing less than asked.

pub use crate::auth::AuthConfig;

pub use crate::router::RouterConfig;

#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub use crate::pii::PiiConfig;

pub use crate::accounting::UsageConfig;

pub use crate::provider::ProviderConfig;

use crate::config::{parse, ConfigError};

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
        #[cfg(any(feature = "regex", feature = "regex-lite"))]
        "llm_pii" => crate::pii::Pii::compile(parse(json)?).map(drop),
        "llm_usage" => crate::accounting::Accounting::compile(parse(json)?).map(drop),
        "llm_provider" => crate::provider::Providers::compile(parse(json)?, env).map(drop),
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
}
