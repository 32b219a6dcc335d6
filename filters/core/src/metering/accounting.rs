//! `llm_usage` configuration and decisions: prices, token limits and USD budgets.

use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind, LocalReply};
use crate::config::ConfigError;
use crate::global::{GlobalLimit, OnServiceError, Scope, Service, ServiceConfig, Unit};
use crate::pattern::Pattern;
use crate::ratelimit::{
    format_reset, limited_reply, retry_after_seconds, LimitUnit, Outcome, Period, RateLimit,
    TokenBucket,
};
use crate::usage::Usage;
use serde::Deserialize;
use std::time::Duration;

pub const DEFAULT_MAX_LABEL_SETS: usize = 500;

/// The filter's configuration, as written in Envoy's `configuration` field.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UsageConfig {
    /// Prices in USD per million tokens, by the model the provider reports (first match wins).
    #[serde(default)]
    pub prices: Vec<PriceEntry>,
    /// Token limits and USD budgets.
    #[serde(default)]
    pub limits: Vec<LimitEntry>,
    /// At most this many (consumer, model, provider) label sets per metric; later ones are counted
    /// under `other`, so a flood of model names cannot blow up Prometheus.
    #[serde(default)]
    pub max_label_sets: Option<usize>,
    /// The rate-limit service that counts `scope: global` limits across Envoy replicas.
    #[serde(default)]
    pub rate_limit_service: Option<ServiceConfig>,
    /// Output tokens reserved at admission for a request that sets no `max_tokens` (or
    /// `max_completion_tokens`, `max_output_tokens`), against local token limits and budgets.
    #[serde(default)]
    pub reserve_output_tokens: Option<u64>,
}

/// Output tokens reserved for a request without an output limit of its own.
pub const DEFAULT_RESERVE_OUTPUT_TOKENS: u64 = 1024;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// Model name or glob, matched against the model the provider reports (else the one routed).
    pub model: String,
    pub input: f64,
    pub output: f64,
    /// Cache reads (default: `input`).
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Anthropic cache writes (default: `input`).
    #[serde(default)]
    pub cache_write: Option<f64>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenCount {
    #[default]
    Total,
    Input,
    Output,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitEntry {
    /// Consumer name (`x-llm-consumer`), or `*` for every consumer, each on its own.
    pub consumer: String,
    /// Only requests for models matching this name or glob (default: all).
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// Which tokens count against `tokens_per_minute`.
    #[serde(default)]
    pub count: TokenCount,
    #[serde(default)]
    pub usd_per_day: Option<f64>,
    #[serde(default)]
    pub usd_per_month: Option<f64>,
    /// `local` (this Envoy's shared data) or `global` (the rate-limit service, across replicas).
    #[serde(default)]
    pub scope: Scope,
    /// For a global limit, when the service cannot answer: `allow` (default) or `deny` (503).
    #[serde(default)]
    pub on_service_error: Option<OnServiceError>,
}

#[derive(Debug, Clone, PartialEq)]
struct Price {
    model: Pattern,
    /// nano-USD per token: USD per million tokens × 1000.
    input: f64,
    output: f64,
    cached_input: f64,
    cache_write: f64,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitKind {
    Tokens {
        bucket: TokenBucket,
        count: TokenCount,
    },
    Budget {
        period: Period,
        nano_usd: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub index: usize,
    consumer: Option<String>,
    model: Option<Pattern>,
    pub kind: LimitKind,
    /// Set for `scope: global`: the service counts, `kind` only says what.
    pub global: Option<GlobalLimit>,
}

impl Limit {
    /// The shared-data key of this limit's counter for `consumer`.
    pub fn key(&self, consumer: &str) -> String {
        format!("llm_usage.limit{}.{consumer}", self.index)
    }

    /// What this request adds to the limit: tokens, or micro-USD for budgets (rounded up).
    pub fn hits(&self, usage: &Usage, cost_nano_usd: Option<u64>) -> u64 {
        match self.kind {
            LimitKind::Tokens { .. } => self.tokens(usage),
            LimitKind::Budget { .. } => cost_nano_usd.unwrap_or(0).div_ceil(1000),
        }
    }

    /// The tokens of `usage` this limit counts.
    pub fn tokens(&self, usage: &Usage) -> u64 {
        match self.kind {
            LimitKind::Tokens {
                count: TokenCount::Input,
                ..
            } => usage.input,
            LimitKind::Tokens {
                count: TokenCount::Output,
                ..
            } => usage.output,
            _ => usage.total(),
        }
    }
}

/// The compiled configuration.
#[derive(Debug, Clone)]
pub struct Accounting {
    prices: Vec<Price>,
    limits: Vec<Limit>,
    pub max_label_sets: usize,
    reserve_output_tokens: u64,
    /// Where `scope: global` limits are counted.
    pub service: Option<Service>,
}

const NANO_PER_USD: f64 = 1e9;

fn check_price(path: &str, value: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value * 1000.0)
    } else {
        Err(ConfigError::new(
            path,
            "must be a non-negative number (USD per million tokens)",
        ))
    }
}

impl Accounting {
    pub fn compile(config: UsageConfig) -> Result<Accounting, ConfigError> {
        let mut prices = Vec::new();
        for (i, entry) in config.prices.iter().enumerate() {
            let at = |f: &str| format!("prices[{i}].{f}");
            if entry.model.is_empty() {
                return Err(ConfigError::new(at("model"), "must not be empty"));
            }
            let input = check_price(&at("input"), entry.input)?;
            prices.push(Price {
                model: Pattern::new(&entry.model),
                input,
                output: check_price(&at("output"), entry.output)?,
                cached_input: match entry.cached_input {
                    Some(v) => check_price(&at("cached_input"), v)?,
                    None => input,
                },
                cache_write: match entry.cache_write {
                    Some(v) => check_price(&at("cache_write"), v)?,
                    None => input,
                },
            });
        }
        let mut limits = Vec::new();
        for (i, entry) in config.limits.iter().enumerate() {
            let at = |f: &str| format!("limits[{i}].{f}");
            if entry.consumer.is_empty() {
                return Err(ConfigError::new(
                    at("consumer"),
                    "a consumer name, or \"*\" for each consumer",
                ));
            }
            let set = usize::from(entry.tokens_per_minute.is_some())
                + usize::from(entry.usd_per_day.is_some())
                + usize::from(entry.usd_per_month.is_some());
            if set != 1 {
                return Err(ConfigError::new(
                    format!("limits[{i}]"),
                    "set exactly one of `tokens_per_minute`, `usd_per_day` or `usd_per_month`",
                ));
            }
            let budget = |field: &str, usd: f64| -> Result<u64, ConfigError> {
                if usd.is_finite() && usd > 0.0 {
                    Ok((usd * NANO_PER_USD).round() as u64)
                } else {
                    Err(ConfigError::new(
                        at(field),
                        "must be a positive amount of USD",
                    ))
                }
            };
            let kind = if let Some(tokens) = entry.tokens_per_minute {
                if tokens == 0 {
                    return Err(ConfigError::new(
                        at("tokens_per_minute"),
                        "must be greater than 0",
                    ));
                }
                LimitKind::Tokens {
                    bucket: TokenBucket {
                        limit: RateLimit::new(tokens, Duration::from_secs(60)),
                    },
                    count: entry.count,
                }
            } else if let Some(usd) = entry.usd_per_day {
                LimitKind::Budget {
                    period: Period::Day,
                    nano_usd: budget("usd_per_day", usd)?,
                }
            } else {
                let usd = entry.usd_per_month.unwrap_or_default();
                LimitKind::Budget {
                    period: Period::Month,
                    nano_usd: budget("usd_per_month", usd)?,
                }
            };
            if entry.count != TokenCount::Total && entry.tokens_per_minute.is_none() {
                return Err(ConfigError::new(
                    at("count"),
                    "only valid with `tokens_per_minute`",
                ));
            }
            let global = match entry.scope {
                Scope::Local => {
                    if entry.on_service_error.is_some() {
                        return Err(ConfigError::new(
                            at("on_service_error"),
                            "only for `scope: global`",
                        ));
                    }
                    None
                }
                Scope::Global => {
                    if config.rate_limit_service.is_none() {
                        return Err(ConfigError::new(
                            at("scope"),
                            "a global limit needs `rate_limit_service`",
                        ));
                    }
                    let (descriptor_kind, field, amount, unit, unit_name) = match kind {
                        LimitKind::Tokens { bucket, count } => (
                            match count {
                                TokenCount::Total => "tokens_per_minute",
                                TokenCount::Input => "input_tokens_per_minute",
                                TokenCount::Output => "output_tokens_per_minute",
                            },
                            "tokens_per_minute",
                            bucket.limit.limit,
                            Unit::Minute,
                            "tokens",
                        ),
                        LimitKind::Budget { period, nano_usd } => match period {
                            Period::Day => (
                                "usd_per_day",
                                "usd_per_day",
                                nano_usd / 1000,
                                Unit::Day,
                                "micro-USD",
                            ),
                            Period::Month => (
                                "usd_per_month",
                                "usd_per_month",
                                nano_usd / 1000,
                                Unit::Month,
                                "micro-USD",
                            ),
                        },
                    };
                    Some(GlobalLimit {
                        kind: descriptor_kind,
                        amount: GlobalLimit::amount(&at(field), amount, unit_name)?,
                        unit,
                        model: entry.model.clone(),
                        on_error: entry.on_service_error.unwrap_or(OnServiceError::Allow),
                    })
                }
            };
            limits.push(Limit {
                index: i,
                consumer: (entry.consumer != "*").then(|| entry.consumer.clone()),
                model: entry.model.as_deref().map(Pattern::new),
                kind,
                global,
            });
        }
        let max_label_sets = config.max_label_sets.unwrap_or(DEFAULT_MAX_LABEL_SETS);
        if max_label_sets == 0 {
            return Err(ConfigError::new("max_label_sets", "must be greater than 0"));
        }
        let service = Service::compile_optional(config.rate_limit_service.as_ref())?;
        Ok(Accounting {
            prices,
            limits,
            max_label_sets,
            reserve_output_tokens: config
                .reserve_output_tokens
                .unwrap_or(DEFAULT_RESERVE_OUTPUT_TOKENS),
            service,
        })
    }

    pub fn has_limits(&self) -> bool {
        !self.limits.is_empty()
    }

    /// The limits that apply to a request of `consumer` for `model`.
    pub fn limits_for<'a>(
        &'a self,
        consumer: &'a str,
        model: &'a str,
    ) -> impl Iterator<Item = &'a Limit> + 'a {
        self.limits.iter().filter(move |limit| {
            limit.consumer.as_deref().is_none_or(|c| c == consumer)
                && limit.model.as_ref().is_none_or(|m| m.matches(model))
        })
    }

    /// The limits of named consumers with the counter each starts from, so they can be created
    /// before traffic (Envoy does not compare-and-swap the first write of a shared-data key).
    pub fn named_limits(&self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.limits.iter().filter_map(|limit| {
            if limit.global.is_some() {
                return None;
            }
            let consumer = limit.consumer.as_deref()?;
            let initial = match limit.kind {
                LimitKind::Tokens { bucket, .. } => bucket.full().encode().to_vec(),
                LimitKind::Budget { .. } => crate::ratelimit::Spend {
                    window: 0,
                    spent: 0,
                }
                .encode()
                .to_vec(),
            };
            Some((limit.key(consumer), initial))
        })
    }

    /// What a request is reserved at admission: input estimated from its size in bytes, output its
    /// own limit (the provider stops there) or `reserve_output_tokens`; none for embeddings.
    pub fn reservation(
        &self,
        request_bytes: usize,
        max_output_tokens: Option<u64>,
        produces_output: bool,
    ) -> Usage {
        Usage {
            input: crate::usage::estimate_tokens(request_bytes),
            output: if produces_output {
                max_output_tokens.unwrap_or(self.reserve_output_tokens)
            } else {
                0
            },
            estimated: true,
            ..Usage::default()
        }
    }

    /// The cost of `usage` in nano-USD (1e-9 USD), or None when no price matches.
    pub fn cost_nano_usd(&self, models: &[&str], usage: &Usage) -> Option<u64> {
        let price = models
            .iter()
            .find_map(|model| self.prices.iter().find(|p| p.model.matches(model)))?;
        let cached = usage.cached_input.min(usage.input);
        let written = usage.cache_creation.min(usage.input - cached);
        let uncached = usage.input - cached - written;
        let nano = uncached as f64 * price.input
            + cached as f64 * price.cached_input
            + written as f64 * price.cache_write
            + usage.output as f64 * price.output;
        Some(nano.round() as u64)
    }
}

/// nano-USD as a USD decimal string, e.g. `0.000123450`.
pub fn format_usd(nano: u64) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

/// 429 for a spent token limit.
pub fn tokens_exhausted(flavor: ApiFlavor, consumer: &str, outcome: &Outcome) -> LocalReply {
    limited_reply(
        flavor,
        LimitUnit::Tokens,
        &format!(
            "Token rate limit reached for consumer `{consumer}`: {} tokens per minute. Retry in {} s.",
            outcome.limit,
            retry_after_seconds(outcome.retry_after)
        ),
        outcome,
    )
}

/// 429 for a spent USD budget.
pub fn budget_exhausted(
    flavor: ApiFlavor,
    consumer: &str,
    period: Period,
    budget: u64,
    resets_in: Duration,
) -> LocalReply {
    let retry_after = retry_after_seconds(resets_in);
    let window = match period {
        Period::Day => "day (UTC)",
        Period::Month => "month (UTC)",
    };
    let mut reply = error_reply(
        flavor,
        ErrorKind::RateLimited,
        &format!(
            "Budget of {} USD per {window} spent for consumer `{consumer}`. It resets in {}.",
            format_usd(budget)
                .trim_end_matches('0')
                .trim_end_matches('.'),
            format_reset(resets_in)
        ),
        ErrorDetail {
            code: Some("budget_exceeded"),
            param: None,
        },
    );
    reply
        .headers
        .push(("retry-after".into(), retry_after.to_string()));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn accounting(json: &str) -> Accounting {
        Accounting::compile(parse::<UsageConfig>(json.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn cost_arithmetic() {
        let a = accounting(
            r#"{"prices":[
            {"model":"gpt-4o-mini*","input":0.15,"output":0.60,"cached_input":0.075},
            {"model":"claude-sonnet-4-5*","input":3,"output":15,"cached_input":0.3,"cache_write":3.75},
            {"model":"*","input":1,"output":2}]}"#,
        );
        let usage = Usage {
            input: 1000,
            output: 500,
            cached_input: 200,
            ..Default::default()
        };
        // 800 × 150 + 200 × 75 + 500 × 600 nano-USD
        assert_eq!(
            a.cost_nano_usd(&["gpt-4o-mini-2024-07-18"], &usage),
            Some(120_000 + 15_000 + 300_000)
        );
        let anthropic = Usage {
            input: 1000,
            output: 100,
            cached_input: 600,
            cache_creation: 300,
            ..Default::default()
        };
        // 100 × 3000 + 600 × 300 + 300 × 3750 + 100 × 15000
        assert_eq!(
            a.cost_nano_usd(&["claude-sonnet-4-5"], &anthropic),
            Some(300_000 + 180_000 + 1_125_000 + 1_500_000)
        );
        // The reported model first, then the fallbacks.
        assert_eq!(
            a.cost_nano_usd(&["unknown", "gpt-4o-mini"], &usage),
            Some(1000 * 1000 - 200 * 1000 + 200 * 1000 + 500 * 2000)
        );
        assert_eq!(accounting("{}").cost_nano_usd(&["x"], &usage), None);
        assert_eq!(format_usd(435_000), "0.000435000");
        assert_eq!(format_usd(12_500_000_000), "12.500000000");
    }

    #[test]
    fn limits_apply_by_consumer_and_model() {
        let a = accounting(
            r#"{"limits":[
            {"consumer":"tiny","tokens_per_minute":2000},
            {"consumer":"*","model":"gpt-4o*","usd_per_day":5},
            {"consumer":"team-b","usd_per_month":100,"model":"claude-*"}]}"#,
        );
        let indexes = |c, m| a.limits_for(c, m).map(|l| l.index).collect::<Vec<_>>();
        assert_eq!(indexes("tiny", "gpt-4o-mini"), vec![0, 1]);
        assert_eq!(indexes("team-a", "gpt-4o"), vec![1]);
        assert_eq!(indexes("team-b", "claude-sonnet-4-5"), vec![2]);
        assert!(indexes("team-a", "claude-x").is_empty());
        let limit = a.limits_for("tiny", "x").next().unwrap();
        assert_eq!(limit.key("tiny"), "llm_usage.limit0.tiny");
        assert_eq!(
            limit.tokens(&Usage {
                input: 3,
                output: 4,
                ..Default::default()
            }),
            7
        );
        let named: Vec<String> = a.named_limits().map(|(key, _)| key).collect();
        assert_eq!(
            named,
            vec!["llm_usage.limit0.tiny", "llm_usage.limit2.team-b"]
        );
    }

    #[test]
    fn replies() {
        let outcome = Outcome {
            allowed: false,
            limit: 2000,
            remaining: 0,
            retry_after: Duration::from_millis(15_200),
            reset: Duration::from_secs(75),
        };
        let reply = tokens_exhausted(ApiFlavor::OpenAi, "tiny", &outcome);
        assert_eq!(reply.status, 429);
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("retry-after").as_deref(), Some("16"));
        assert_eq!(header("x-ratelimit-reset-tokens").as_deref(), Some("1m15s"));
        let budget = budget_exhausted(
            ApiFlavor::Anthropic,
            "team-b",
            Period::Day,
            5_000_000_000,
            Duration::from_secs(3600),
        );
        assert!(
            budget.body.contains("Budget of 5 USD per day (UTC)"),
            "{}",
            budget.body
        );
        assert!(budget.body.contains("\"type\":\"error\""));
    }

    #[test]
    fn config_errors_name_the_field() {
        for (json, path) in [
            (
                r#"{"prices":[{"model":"","input":1,"output":1}]}"#,
                "prices[0].model",
            ),
            (
                r#"{"prices":[{"model":"m","input":-1,"output":1}]}"#,
                "prices[0].input",
            ),
            (r#"{"limits":[{"consumer":"a"}]}"#, "limits[0]"),
            (
                r#"{"limits":[{"consumer":"a","tokens_per_minute":1,"usd_per_day":1}]}"#,
                "limits[0]",
            ),
            (
                r#"{"limits":[{"consumer":"","tokens_per_minute":1}]}"#,
                "limits[0].consumer",
            ),
            (
                r#"{"limits":[{"consumer":"a","tokens_per_minute":0}]}"#,
                "limits[0].tokens_per_minute",
            ),
            (
                r#"{"limits":[{"consumer":"a","usd_per_day":0}]}"#,
                "limits[0].usd_per_day",
            ),
            (
                r#"{"limits":[{"consumer":"a","usd_per_month":1,"count":"input"}]}"#,
                "limits[0].count",
            ),
            (r#"{"max_label_sets":0}"#, "max_label_sets"),
            (
                r#"{"limits":[{"consumer":"a","tokens_per_minute":1,"scope":"global"}]}"#,
                "limits[0].scope",
            ),
            (
                r#"{"limits":[{"consumer":"a","tokens_per_minute":1,"on_service_error":"deny"}]}"#,
                "limits[0].on_service_error",
            ),
            (
                r#"{"rate_limit_service":{"cluster":"rls"},"limits":[{"consumer":"a","usd_per_month":5000,"scope":"global"}]}"#,
                "limits[0].usd_per_month",
            ),
            (
                r#"{"rate_limit_service":{"cluster":"","domain":"llm"}}"#,
                "rate_limit_service.cluster",
            ),
        ] {
            let err =
                Accounting::compile(parse::<UsageConfig>(json.as_bytes()).unwrap()).unwrap_err();
            assert_eq!(err.path, path, "{json}: {err}");
        }
        assert_eq!(
            parse::<UsageConfig>(
                br#"{"limits":[{"consumer":"a","tokens_per_minute":1,"count":"all"}]}"#
            )
            .unwrap_err()
            .path,
            "limits[0].count"
        );
    }

    #[test]
    fn global_limits_become_descriptors_with_their_numbers() {
        let a = accounting(
            r#"{"rate_limit_service":{"cluster":"rls"},
            "prices":[{"model":"*","input":1000,"output":1000}],
            "limits":[
              {"consumer":"*","model":"gpt-4o*","tokens_per_minute":2000,"count":"output","scope":"global"},
              {"consumer":"team-b","usd_per_day":5,"scope":"global","on_service_error":"deny"},
              {"consumer":"team-b","tokens_per_minute":50}]}"#,
        );
        assert!(
            a.named_limits().count() == 1,
            "only the local limit has shared data"
        );
        let limits: Vec<&Limit> = a.limits_for("team-b", "gpt-4o-mini").collect();
        assert_eq!(limits.len(), 3);
        let tokens = limits[0].global.as_ref().unwrap();
        assert_eq!(tokens.kind, "output_tokens_per_minute");
        assert_eq!(tokens.amount, 2000);
        assert_eq!(tokens.on_error, OnServiceError::Allow);
        let d = tokens.descriptor("team-b", 0);
        let entries: Vec<(&str, &str)> = d
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            entries,
            [
                ("llm_limit", "output_tokens_per_minute"),
                ("consumer", "team-b"),
                ("model", "gpt-4o*")
            ]
        );
        let budget = limits[1].global.as_ref().unwrap();
        assert_eq!((budget.kind, budget.amount), ("usd_per_day", 5_000_000));
        assert_eq!(budget.on_error, OnServiceError::Deny);
        assert!(limits[2].global.is_none());
        let usage = Usage {
            input: 10,
            output: 3,
            ..Default::default()
        };
        // 13 tokens at 1000 USD per million: 13,000 micro-USD; the token limit counts output only.
        let cost = a.cost_nano_usd(&["gpt-4o-mini"], &usage);
        assert_eq!(limits[0].hits(&usage, cost), 3);
        assert_eq!(limits[1].hits(&usage, cost), 13_000);
        assert_eq!(
            limits[1].hits(&usage, Some(1)),
            1,
            "a fraction of a micro-USD rounds up"
        );
    }
}
