//! Pure logic shared by the LLM gateway filters.
//!
//! Nothing here depends on proxy-wasm: filter crates read what they need from the host, call into this
//! crate, and apply the data it returns. That keeps the logic testable on the host and under wasm.

pub mod accounting;
pub mod anthropic;
pub mod api;
pub mod auth;
pub mod config;
pub mod filters;
pub mod global;
pub mod metrics;
pub mod pattern;
// PII detection needs a regex engine; filters that do not scan for PII build without one.
#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub mod pii;
#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub mod pii_detect;

/// The regex engine behind the PII detectors (see the `regex` / `regex-lite` features).
#[cfg(feature = "regex")]
pub(crate) use regex as regex_engine;
#[cfg(all(feature = "regex-lite", not(feature = "regex")))]
pub(crate) use regex_lite as regex_engine;
pub mod provider;
pub mod ratelimit;
pub mod request;
pub mod router;
pub mod sse;
pub mod usage;
