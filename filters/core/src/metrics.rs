//! Metric names with Prometheus labels.
//!
//! Wasm metrics have no labels, so labels are encoded in the name as `_<label>=.=<value>;.;` and Envoy's
//! bootstrap `stats_config.stats_tags` extracts them (one rule per label name; see envoy/demo.yaml).
//! `/stats/prometheus` then shows `llm_filter_requests_total{filter="auth"}`.

/// Label names that the shipped Envoy configs declare `stats_tags` for. A label outside this list would
/// stay glued to the metric name in Prometheus.
pub const KNOWN_LABELS: &[&str] = &[
    "filter",
    "consumer",
    "model",
    "route",
    "provider",
    "status_class",
    "entity",
    "action",
    "reason",
    "kind",
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

#[cfg(test)]
mod tests {
    use super::*;

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
