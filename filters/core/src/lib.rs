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
mod swar;
#[cfg(test)]
mod test_rng;

/// Wire formats and translation.
pub mod wire {
    pub mod anthropic;
    pub mod api;
    pub mod bedrock;
    pub(crate) mod chat_stream;
    pub mod count_tokens;
    pub mod gemini;
    pub mod json_out;
    pub mod messages_via_chat;
    pub mod provider;
    pub mod request;
    pub mod responses;
    pub mod sse;
    pub mod translate;
    pub mod vertex;
    pub(crate) mod via_chat;
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
    pub mod genai;
    pub mod metrics;
    pub mod usage;
}

pub use caching::cache;
pub use metering::{accounting, genai, metrics, usage};
pub use policy::{auth, global, ratelimit, router};
#[cfg(any(feature = "regex", feature = "regex-lite"))]
pub use privacy::{pii, pii_detect};
pub use wire::{
    anthropic, api, bedrock, count_tokens, gemini, json_out, messages_via_chat, provider, request,
    responses, sse, translate, vertex,
};

/// OpenAI's tokenizer, built on first use.
#[cfg(feature = "tokenizers")]
pub(crate) mod tokenizers {
    use std::sync::OnceLock;

    /// Text is tokenized in pieces of at most this many bytes (cut after whitespace where
    /// possible): the tokenizer's pre-splitting regex gives up, and panics, on runs of a million
    /// spaces, and long unbroken runs cost it more than linear time. A cut inside a word changes
    /// the count by a token at most; the count is an estimate of the provider's anyway.
    const PIECE: usize = 8 * 1024;

    static O200K: OnceLock<Option<tiktoken_rs::CoreBPE>> = OnceLock::new();

    /// o200k_base tokens of `text`; None if the tokenizer could not be built.
    pub fn o200k(text: &str) -> Option<u64> {
        let bpe = O200K
            .get_or_init(|| tiktoken_rs::o200k_base().ok())
            .as_ref()?;
        let mut total = 0u64;
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            if end < rest.len() {
                let window = end.saturating_sub(256);
                if let Some(space) = rest
                    .get(window..end)
                    .and_then(|w| w.rfind(char::is_whitespace))
                {
                    end = (window + space).max(1);
                    while !rest.is_char_boundary(end) {
                        end += 1;
                    }
                }
            }
            let (piece, tail) = rest.split_at(end);
            total += bpe.encode_ordinary(piece).len() as u64;
            rest = tail;
        }
        Some(total)
    }
}

/// The regex engine behind the PII detectors (see the `regex` / `regex-lite` features).
#[cfg(feature = "regex")]
pub(crate) use regex as regex_engine;
#[cfg(all(feature = "regex-lite", not(feature = "regex")))]
pub(crate) use regex_lite as regex_engine;
