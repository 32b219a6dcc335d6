//! Metric names with Prometheus labels.
//!
//! Wasm metrics have no labels, so labels are encoded in the name as `_<label>=.=<value>;.;` and Envoy's
//! bootstrap `stats_config.stats_tags` extracts them (one rule per label name; see envoy/demo.yaml).
//! `/stats/prometheus` then shows `llm_filter_requests_total{filter="auth"}`.

/// Label names that the shipped Envoy configs declare `stats_tags` for (llm-config writes one rule
/// per name, in this order, which is the order Prometheus shows them in). A label outside this list
/// would stay glued to the metric name in Prometheus.
pub const KNOWN_LABELS: &[&str] = &[
    "filter",
    "consumer",
    "model",
    "route",
    "provider",
    "status_class",
    "entity",
    "guard",
    "category",
    "action",
    "reason",
    "kind",
    "direction",
    "result",
];

/// Builds `base` with each `(label, value)` encoded for Envoy's `stats_tags`.
///
/// Values are sanitized: `;` and `=` (the delimiters), whitespace and control characters become `_`, and an
/// empty value becomes `none`, so no value can break out of its label.
pub fn labeled_name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut name = String::with_capacity(base.len() + labels.len() * 24);
    name.push_str(base);
    for (label, value) in labels {
        name.push('_');
        name.push_str(label);
        name.push_str("=.=");
        if value.is_empty() {
            name.push_str("none");
        }
        for ch in value.chars() {
            if ch == ';' || ch == '=' || ch.is_whitespace() || ch.is_control() {
                name.push('_');
            } else {
                name.push(ch);
            }
        }
        name.push_str(";.;");
    }
    name
}

/// Every metric family the filters report: name, whether it is a histogram, and its labels in the
/// order Prometheus shows them (the shipped `stats_tags` order for the Wasm modules). Hosts that must declare metrics before traffic (Envoy's dynamic
/// modules freeze definitions once a filter config is loaded) declare these; proxy-wasm needs none.
/// What a family is: its series accumulate (counter), record values (histogram), or hold one
/// (gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
    Gauge,
}

pub const FAMILIES: &[(&str, Kind, &[&str])] = &[
    ("llm_filter_requests_total", Kind::Counter, &["filter"]),
    ("llm_auth_rejected_total", Kind::Counter, &["reason"]),
    ("llm_auth_requests_total", Kind::Counter, &["kind"]),
    (
        "llm_global_limit_errors_total",
        Kind::Counter,
        &["filter", "action"],
    ),
    (
        "llm_router_requests_total",
        Kind::Counter,
        &["model", "route"],
    ),
    ("llm_router_rejected_total", Kind::Counter, &["reason"]),
    (
        "llm_guard_requests_total",
        Kind::Counter,
        &["direction", "result"],
    ),
    (
        "llm_guard_findings_total",
        Kind::Counter,
        &["guard", "category", "action"],
    ),
    (
        "llm_guard_checks_total",
        Kind::Counter,
        &["guard", "result"],
    ),
    ("llm_guard_callout_duration_ms", Kind::Histogram, &["guard"]),
    ("llm_cache_lookups_total", Kind::Counter, &["model"]),
    ("llm_cache_hits_total", Kind::Counter, &["model", "kind"]),
    ("llm_cache_misses_total", Kind::Counter, &["model"]),
    ("llm_cache_stores_total", Kind::Counter, &["model"]),
    (
        "llm_cache_saved_tokens_total",
        Kind::Counter,
        &["model", "kind"],
    ),
    ("llm_cache_bypass_total", Kind::Counter, &["reason"]),
    ("llm_cache_not_stored_total", Kind::Counter, &["reason"]),
    ("llm_cache_evictions_total", Kind::Counter, &[]),
    ("llm_cache_store_errors_total", Kind::Counter, &[]),
    ("llm_cache_callout_errors_total", Kind::Counter, &["kind"]),
    ("llm_cache_entries", Kind::Gauge, &[]),
    ("llm_cache_bytes", Kind::Gauge, &[]),
    (
        "llm_pii_detections_total",
        Kind::Counter,
        &["entity", "action"],
    ),
    (
        "llm_pii_answer_detections_total",
        Kind::Counter,
        &["entity", "action"],
    ),
    (
        "llm_pii_scan_limited_total",
        Kind::Counter,
        &["action", "reason"],
    ),
    ("llm_provider_attempts_total", Kind::Counter, &["provider"]),
    (
        "llm_provider_translated_total",
        Kind::Counter,
        &["provider"],
    ),
    (
        "llm_provider_token_refreshes_total",
        Kind::Counter,
        &["provider", "result"],
    ),
    (
        "llm_provider_token_unavailable_total",
        Kind::Counter,
        &["provider"],
    ),
    (
        "llm_input_tokens_total",
        Kind::Counter,
        &["consumer", "model", "provider"],
    ),
    (
        "llm_output_tokens_total",
        Kind::Counter,
        &["consumer", "model", "provider"],
    ),
    (
        "llm_cached_input_tokens_total",
        Kind::Counter,
        &["consumer", "model", "provider"],
    ),
    (
        "llm_cost_nanousd_total",
        Kind::Counter,
        &["consumer", "model", "provider"],
    ),
    (
        "llm_estimated_usage_total",
        Kind::Counter,
        &["consumer", "model", "provider"],
    ),
    (
        "llm_requests_total",
        Kind::Counter,
        &["consumer", "model", "provider", "status_class"],
    ),
    (
        "llm_usage_limited_total",
        Kind::Counter,
        &["consumer", "kind"],
    ),
    (
        "llm_request_duration_ms",
        Kind::Histogram,
        &["model", "provider"],
    ),
    (
        "llm_time_to_first_token_ms",
        Kind::Histogram,
        &["model", "provider"],
    ),
];

/// The inverse of [`labeled_name`]: the base name and the `(label, value)` pairs, or `None` when the
/// name does not parse (a label outside [`KNOWN_LABELS`]).
pub fn parse_labeled_name(name: &str) -> Option<(&str, Vec<(&str, &str)>)> {
    let Some(first) = name.find("=.=") else {
        return Some((name, Vec::new()));
    };
    let head = name.get(..first)?;
    let label = KNOWN_LABELS
        .iter()
        .filter(|label| head.ends_with(&format!("_{label}")))
        .max_by_key(|label| label.len())?;
    let base = head.get(..head.len() - label.len() - 1)?;
    let mut labels = Vec::new();
    let mut rest = name.get(base.len()..)?;
    while !rest.is_empty() {
        let body = rest.strip_prefix('_')?;
        let (label, tail) = body.split_once("=.=")?;
        let (value, tail) = tail.split_once(";.;")?;
        if !KNOWN_LABELS.contains(&label) {
            return None;
        }
        labels.push((label, value));
        rest = tail;
    }
    Some((base, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labeled_names_parse_back() {
        let name = labeled_name(
            "llm_requests_total",
            &[
                ("consumer", "team_a"),
                ("model", "gpt-4o"),
                ("status_class", "2xx"),
            ],
        );
        assert_eq!(
            parse_labeled_name(&name),
            Some((
                "llm_requests_total",
                vec![
                    ("consumer", "team_a"),
                    ("model", "gpt-4o"),
                    ("status_class", "2xx")
                ]
            ))
        );
        assert_eq!(parse_labeled_name("llm_x"), Some(("llm_x", vec![])));
        assert_eq!(parse_labeled_name("m_nolabel=.=x;.;"), None);
    }

    #[test]
    fn every_family_uses_known_labels() {
        for (name, _, labels) in FAMILIES {
            for label in *labels {
                assert!(KNOWN_LABELS.contains(label), "{name}: {label}");
            }
        }
    }

    #[test]
    fn encodes_labels_in_order() {
        assert_eq!(
            labeled_name(
                "llm_tokens_total",
                &[("model", "gpt-4o"), ("provider", "openai")]
            ),
            "llm_tokens_total_model=.=gpt-4o;.;_provider=.=openai;.;"
        );
    }

    #[test]
    fn no_labels_is_the_bare_name() {
        assert_eq!(labeled_name("llm_x", &[]), "llm_x");
    }

    #[test]
    fn values_cannot_break_out() {
        assert_eq!(
            labeled_name("m", &[("model", "a;.;_x=.=b c\n")]),
            "m_model=.=a_.__x_._b_c_;.;"
        );
        assert_eq!(
            labeled_name("m", &[("consumer", "")]),
            "m_consumer=.=none;.;"
        );
    }

    #[test]
    fn dots_survive() {
        assert_eq!(
            labeled_name("m", &[("model", "claude-sonnet-4.5")]),
            "m_model=.=claude-sonnet-4.5;.;"
        );
    }
}
