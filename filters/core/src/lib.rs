//! Pure logic shared by the LLM gateway filters.
//!
//! Nothing here depends on a host: filter crates read what they need through llm_host's interface,
//! call into this crate, and apply the data it returns. That keeps the logic testable on the host and
//! under wasm. The folders follow a request's journey:
//! - `wire/`: the wire formats clients and providers speak, and the translation between them;
//! - `policy/`: who is calling, what it may use, where it goes, and its limits;
//! - `caching/`: the response cache;
//! - `guarding/`: guardrails (injection detection, content rules, moderation services);
//! - `privacy/`: PII detection, masking and restoring;
//! - `metering/`: usage, cost, token limits and budgets, and the metrics that report them.
//!
//! Each module is also re-exported at the crate root (`llm_core::api`, ...).

pub mod config;
pub mod contract;
pub mod filters;
pub mod pattern;

/// Wire formats and translation.
pub mod wire {
    pub mod anthropic;
    pub mod api;
    pub mod count_tokens;
    pub mod messages_via_chat;
    pub mod provider;
    pub mod request;
    pub mod responses;
    pub mod sse;
    pub mod translate;
}

/// Identity, access, routing and limits.
pub mod policy {
    pub mod auth;
    pub mod global;
    pub mod ratelimit;
    pub mod router;
}

/// PII detection, masking and restoring. It needs a regex engine; filters that do not scan for PII
/// build without one.
#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub mod privacy {
    pub mod pii;
    pub mod pii_detect;
}

/// Response caching: keys, the shared-data store, and replaying answers in the caller's shape.
pub mod caching {
    pub mod cache;
    pub mod chroma;
    pub mod key;
    pub mod replay;
    pub mod semantic;
    pub mod store;
}

/// Guardrails: prompt-injection detection, content rules and moderation services. The detector's
/// rule sets need the full regex engine.
#[cfg(feature = "regex")]
pub mod guarding {
    pub mod guard;
    pub mod injection;
    pub mod normalize;
    pub mod remote;
    pub mod stream;
}

/// Usage, cost, token limits, budgets and metrics.
pub mod metering {
    pub mod accounting;
    pub mod metrics;
    pub mod usage;
}

pub use caching::cache;
pub use metering::{accounting, metrics, usage};
pub use policy::{auth, global, ratelimit, router};
#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub use privacy::{pii, pii_detect};
pub use wire::{
    anthropic, api, count_tokens, messages_via_chat, provider, request, responses, sse, translate,
};

/// The regex engine behind the PII detectors (see the `regex` / `regex-lite` features).
#[cfg(feature = "regex")]
pub(crate) use regex as regex_engine;
#[cfg(all(feature = "regex-lite", not(feature = "regex")))]
pub(crate) use regex_lite as regex_engine;
