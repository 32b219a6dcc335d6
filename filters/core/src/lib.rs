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
pub mod metrics;
pub mod pattern;
pub mod pii;
pub mod pii_detect;
pub mod provider;
pub mod ratelimit;
pub mod request;
pub mod router;
pub mod sse;
pub mod usage;
