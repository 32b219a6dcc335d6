//! OpenTelemetry traces and access-log records with the filters' facts, in the GenAI semantic
//! conventions.
//!
//! The filters cannot touch spans (neither proxy-wasm nor the dynamic-module ABI has a tracing
//! call); they publish facts as filter state, and Envoy's tracer reads them through custom tags
//! whose `value` is an access-log format string (Envoy 1.37+). Envoy applies the HCM's custom tags
//! to the request's span and to each upstream attempt's span, and evaluates them when the span
//! ends; a tag whose filter state is absent is left out, so other routes of the listener get none.

use std::fmt::Write;

/// Span attributes: (attribute, access-log format). GenAI's conventions first, ours under `llm.`.
/// Envoy's custom tags are strings, so counts and numbers arrive as their decimal text.
pub const SPAN_ATTRIBUTES: [(&str, &str); 26] = [
    (
        "gen_ai.operation.name",
        "%FILTER_STATE(wasm.llm_operation:PLAIN)%",
    ),
    (
        "gen_ai.provider.name",
        "%UPSTREAM_METADATA(llm:gen_ai_provider)%",
    ),
    (
        "gen_ai.request.model",
        "%FILTER_STATE(wasm.llm_model:PLAIN)%",
    ),
    (
        "gen_ai.request.max_tokens",
        "%FILTER_STATE(wasm.llm_request_max_tokens:PLAIN)%",
    ),
    (
        "gen_ai.request.temperature",
        "%FILTER_STATE(wasm.llm_request_temperature:PLAIN)%",
    ),
    (
        "gen_ai.request.top_p",
        "%FILTER_STATE(wasm.llm_request_top_p:PLAIN)%",
    ),
    (
        "gen_ai.response.model",
        "%FILTER_STATE(wasm.llm_response_model:PLAIN)%",
    ),
    (
        "gen_ai.response.id",
        "%FILTER_STATE(wasm.llm_response_id:PLAIN)%",
    ),
    (
        "gen_ai.response.finish_reasons",
        "%FILTER_STATE(wasm.llm_finish_reasons:PLAIN)%",
    ),
    (
        "gen_ai.usage.input_tokens",
        "%FILTER_STATE(wasm.llm_input_tokens:PLAIN)%",
    ),
    (
        "gen_ai.usage.output_tokens",
        "%FILTER_STATE(wasm.llm_output_tokens:PLAIN)%",
    ),
    // Only with llm_pii's `capture_content`: the prompt and answer as llm_pii masked them.
    (
        "gen_ai.input.messages",
        "%FILTER_STATE(wasm.llm_input_messages:PLAIN)%",
    ),
    (
        "gen_ai.output.messages",
        "%FILTER_STATE(wasm.llm_output_messages:PLAIN)%",
    ),
    ("llm.consumer", "%FILTER_STATE(wasm.llm_consumer:PLAIN)%"),
    (
        "llm.auth_method",
        "%FILTER_STATE(wasm.llm_auth_method:PLAIN)%",
    ),
    ("llm.route", "%FILTER_STATE(wasm.llm_route:PLAIN)%"),
    ("llm.provider", "%UPSTREAM_METADATA(llm:provider)%"),
    (
        "llm.upstream_model",
        "%FILTER_STATE(wasm.llm_upstream_model:PLAIN)%",
    ),
    ("llm.stream", "%FILTER_STATE(wasm.llm_stream:PLAIN)%"),
    (
        "llm.cached_input_tokens",
        "%FILTER_STATE(wasm.llm_cached_tokens:PLAIN)%",
    ),
    ("llm.cost_usd", "%FILTER_STATE(wasm.llm_cost_usd:PLAIN)%"),
    (
        "llm.usage_estimated",
        "%FILTER_STATE(wasm.llm_usage_estimated:PLAIN)%",
    ),
    (
        "llm.time_to_first_token_ms",
        "%FILTER_STATE(wasm.llm_ttft_ms:PLAIN)%",
    ),
    ("llm.cache", "%FILTER_STATE(wasm.llm_cache:PLAIN)%"),
    ("llm.guard", "%FILTER_STATE(wasm.llm_guard:PLAIN)%"),
    ("llm.pii", "%FILTER_STATE(wasm.llm_pii:PLAIN)%"),
];

/// The span name GenAI's conventions ask for (`chat gpt-4o`), published by llm_router. Where it
/// is absent (other routes, requests refused before llm_router) the formatted name is empty and
/// Envoy keeps its own name for the span.
pub const SPAN_NAME: &str = "%FILTER_STATE(wasm.llm_span_name:PLAIN)%";

/// Where the spans and records go, and how many requests are traced.
#[derive(Debug, Clone)]
pub struct Tracing {
    /// The Envoy cluster of the OTLP/gRPC collector.
    pub cluster: String,
    /// `service.name` of the gateway's spans and records.
    pub service_name: String,
    /// Percent of requests traced when the client's trace context has not decided.
    pub sampling_percent: f64,
    /// Also send an OpenTelemetry access-log record per request (Envoy's OTel access logger).
    pub access_log: bool,
}

/// The HttpConnectionManager's `tracing` block (at column 0).
pub fn hcm_tracing(tracing: &Tracing) -> String {
    let mut out = format!(
        r#"# OpenTelemetry traces: a span per request and one per upstream attempt (a failover shows
# both), with the filters' facts as GenAI attributes. A client's W3C traceparent is continued
# and the provider receives the attempt's span context.
tracing:
  provider:
    name: envoy.tracers.opentelemetry
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
      grpc_service: {{ envoy_grpc: {{ cluster_name: {cluster} }}, timeout: 5s }}
      service_name: {service}
  random_sampling: {{ value: {sampling} }}
  spawn_upstream_span: true
  operation: "{SPAN_NAME}"
  upstream_operation: "{SPAN_NAME}"
  custom_tags:
"#,
        cluster = tracing.cluster,
        service = quoted(&tracing.service_name),
        sampling = tracing.sampling_percent,
    );
    for (tag, value) in SPAN_ATTRIBUTES {
        let _ = writeln!(out, "  - {{ tag: {tag}, value: \"{value}\" }}");
    }
    out
}

/// Envoy's OpenTelemetry tracer exports a batch every 5 spans (or 5 s) unless told otherwise; a
/// batch of 100 costs a traced request about half the CPU (bench/tracing.md). A bootstrap's
/// `layered_runtime` (for an existing Envoy: its runtime, the same key).
pub const RUNTIME: &str = r#"# Envoy's OpenTelemetry tracer sends a batch every 5 spans by default; batches of 100 (or every
# 5 s) halve what tracing adds to a request's CPU (bench/tracing.md).
layered_runtime:
  layers:
  - name: tracing
    static_layer:
      tracing.opentelemetry.min_flush_spans: 100
"#;

/// An `access_log` list item: Envoy's OpenTelemetry access logger with the same attributes. Envoy
/// links each record to the request's span (trace and span ids) when the request is traced.
pub fn otel_access_log(tracing: &Tracing) -> String {
    let mut out = format!(
        r#"- name: envoy.access_loggers.open_telemetry
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig
    grpc_service: {{ envoy_grpc: {{ cluster_name: {cluster} }}, timeout: 5s }}
    log_name: llm_gateway
    resource_attributes:
      values:
      - {{ key: service.name, value: {{ string_value: {service} }} }}
    body: {{ string_value: "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %RESPONSE_CODE%" }}
    attributes:
      values:
      - {{ key: http.response.status_code, value: {{ string_value: "%RESPONSE_CODE%" }} }}
      - {{ key: llm.duration_ms, value: {{ string_value: "%DURATION%" }} }}
      - {{ key: llm.response_flags, value: {{ string_value: "%RESPONSE_FLAGS%" }} }}
      - {{ key: llm.attempts, value: {{ string_value: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%" }} }}
"#,
        cluster = tracing.cluster,
        service = quoted(&tracing.service_name),
    );
    for (key, value) in SPAN_ATTRIBUTES {
        let _ = writeln!(
            out,
            "      - {{ key: {key}, value: {{ string_value: \"{value}\" }} }}"
        );
    }
    out
}

/// Test and bench helper: `config` (a generated bootstrap without tracing) with tracing to an
/// OTLP/gRPC collector on 127.0.0.1:`port`.
pub fn add_tracing(config: &str, tracing: &Tracing, port: u16) -> Result<String, String> {
    let hcm_anchor = "\n          stat_prefix: llm\n";
    if !config.contains(hcm_anchor) {
        return Err("no `stat_prefix: llm` HttpConnectionManager in the config".into());
    }
    let mut out = config.replacen(
        hcm_anchor,
        &format!(
            "{hcm_anchor}{}",
            crate::packaging::indent(&hcm_tracing(tracing), 10)
        ),
        1,
    );
    if tracing.access_log {
        let log_anchor = "\n          access_log:\n";
        if !out.contains(log_anchor) {
            return Err("no access_log list in the HttpConnectionManager".into());
        }
        out = out.replacen(
            log_anchor,
            &format!(
                "{log_anchor}{}",
                crate::packaging::indent(&otel_access_log(tracing), 10)
            ),
            1,
        );
    }
    let clusters_anchor = "\n  clusters:\n";
    if !out.contains(clusters_anchor) {
        return Err("no static clusters in the config".into());
    }
    let cluster = format!(
        r#"  - name: {name}
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}
"#,
        name = tracing.cluster
    );
    Ok(out.replacen(clusters_anchor, &format!("{clusters_anchor}{cluster}"), 1))
}

/// Test and bench helper: a traced `config` that exports every `flush_ms` (under a second)
/// rather than Envoy's defaults (spans every 5 s or 5 spans, log records every second).
pub fn flush_every(config: &str, flush_ms: u32) -> Result<String, String> {
    let flush_ms = flush_ms.clamp(1, 999);
    let generated = "      tracing.opentelemetry.min_flush_spans: 100\n";
    let config = if config.contains(generated) {
        // The generator's runtime layer: replaced by the one below.
        let start = config
            .find("# Envoy's OpenTelemetry tracer sends a batch")
            .unwrap_or(config.len());
        let end = config
            .find(generated)
            .map_or(config.len(), |i| i + generated.len());
        format!("{}{}", &config[..start], &config[end..])
    } else {
        config.to_string()
    };
    if config.contains("\nlayered_runtime:") {
        return Err("the config already has a layered_runtime".into());
    }
    let mut out = String::with_capacity(config.len() + 256);
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim() == "log_name: llm_gateway" {
            let indent = &line[..line.len() - line.trim_start().len()];
            let _ = writeln!(out, "{indent}buffer_flush_interval: 0.{flush_ms:03}s");
        }
    }
    let _ = write!(
        out,
        "\nlayered_runtime:\n  layers:\n  - name: tracing\n    static_layer:\n      tracing.opentelemetry.flush_interval_ms: {flush_ms}\n      tracing.opentelemetry.min_flush_spans: 1\n"
    );
    Ok(out)
}

fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}
