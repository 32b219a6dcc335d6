//! Configuration of each filter. Every type rejects unknown fields, so a typo in Envoy's YAML makes Envoy
//! refuse the config with a log line naming the field, instead of silently doing less than asked.

pub use crate::auth::AuthConfig;

pub use crate::router::RouterConfig;

#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub use crate::pii::PiiConfig;

pub use crate::accounting::UsageConfig;

pub use crate::provider::ProviderConfig;

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
}
