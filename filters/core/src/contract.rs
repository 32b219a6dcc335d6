//! The contract between the filters: the `x-llm-*` request headers one filter publishes for the
//! filters after it (and for Envoy's route matching), and the filter-state keys the access log reads
//! (`%FILTER_STATE(wasm.<key>:PLAIN)%`). Every `x-llm-*` header a client sends is deleted by llm_auth
//! before anything reads it, and by llm_provider before a request leaves.

/// The prefix of every header in the contract.
pub const HEADER_PREFIX: &str = "x-llm-";

/// llm_auth: the authenticated consumer.
pub const CONSUMER: &str = "x-llm-consumer";
/// llm_router: the model as the client named it (after aliases).
pub const MODEL: &str = "x-llm-model";
/// llm_router: the route Envoy matches to pick the cluster.
pub const ROUTE: &str = "x-llm-route";
/// llm_router: `true` or `false`, whether the client asked for a stream.
pub const STREAM: &str = "x-llm-stream";
/// llm_router: the request's output-token cap, for llm_usage's reservations.
pub const MAX_TOKENS: &str = "x-llm-max-tokens";

/// The headers llm_router publishes (a client-sent value is deleted before anything reads it).
pub const ROUTER_HEADERS: [&str; 4] = [MODEL, ROUTE, STREAM, MAX_TOKENS];

/// Filter-state keys (access-log fields), by the filter that sets them.
pub mod state {
    // llm_auth
    pub const CONSUMER: &str = "llm_consumer";
    pub const AUTH_METHOD: &str = "llm_auth_method";
    pub const CONSUMER_METADATA: &str = "llm_consumer_metadata";
    // llm_router
    pub const MODEL: &str = "llm_model";
    pub const ROUTE: &str = "llm_route";
    pub const UPSTREAM_MODEL: &str = "llm_upstream_model";
    pub const STREAM: &str = "llm_stream";
    /// `gen_ai.operation.name`: chat, text_completion or embeddings.
    pub const OPERATION: &str = "llm_operation";
    /// The span name GenAI's conventions ask for: `{operation} {model}` (`chat gpt-4o`).
    pub const SPAN_NAME: &str = "llm_span_name";
    /// The request's output limit and sampling settings, as sent.
    pub const REQUEST_MAX_TOKENS: &str = "llm_request_max_tokens";
    pub const REQUEST_TEMPERATURE: &str = "llm_request_temperature";
    pub const REQUEST_TOP_P: &str = "llm_request_top_p";
    // llm_guard: pass, `flagged <guard:category>,...` or `blocked <guard:category>`
    pub const GUARD: &str = "llm_guard";
    // llm_cache: hit, miss or bypass
    pub const CACHE: &str = "llm_cache";
    // llm_pii
    pub const PII: &str = "llm_pii";
    /// With `capture_content`: the prompt as it left and the answer as it came (masked), as
    /// OpenTelemetry's `gen_ai.input.messages` / `gen_ai.output.messages` JSON.
    pub const INPUT_MESSAGES: &str = "llm_input_messages";
    pub const OUTPUT_MESSAGES: &str = "llm_output_messages";
    // llm_usage
    pub const PROVIDER: &str = "llm_provider";
    pub const INPUT_TOKENS: &str = "llm_input_tokens";
    pub const OUTPUT_TOKENS: &str = "llm_output_tokens";
    pub const CACHED_TOKENS: &str = "llm_cached_tokens";
    pub const COST_USD: &str = "llm_cost_usd";
    pub const TTFT_MS: &str = "llm_ttft_ms";
    pub const RESPONSE_MODEL: &str = "llm_response_model";
    pub const STREAMED: &str = "llm_streamed";
    pub const USAGE_ESTIMATED: &str = "llm_usage_estimated";
    /// The answer's id and finish reasons (comma-separated), for traces.
    pub const RESPONSE_ID: &str = "llm_response_id";
    pub const FINISH_REASONS: &str = "llm_finish_reasons";
}
