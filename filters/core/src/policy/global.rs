//! Global limits: limits counted by a rate-limit service shared by every Envoy replica, spoken to in
//! Envoy's standard protocol (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), so
//! envoyproxy/ratelimit, Limitador or the bundled reference service can count.
//!
//! The numbers stay in the filter configuration: each descriptor carries its limit as a `limit`
//! override, and its own `hits_addend` (0 = check without counting, N = count N). See
//! docs/global-limits.md for the descriptors and how to point them at a service.

use crate::config::ConfigError;
use crate::ratelimit::Outcome;
use prost::Message;
use serde::Deserialize;
use std::time::Duration;

/// gRPC service and method of the rate-limit protocol.
pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// `service.ratelimit.v3.RateLimitRequest` (the fields the filters send).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<Descriptor>,
    /// Left 0 ("one hit"): the per-descriptor `hits_addend` says what each descriptor counts.
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

/// `extensions.common.ratelimit.v3.RateLimitDescriptor`.
#[derive(Clone, PartialEq, Message)]
pub struct Descriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<LimitOverride>,
    /// A wrapper, so that 0 (check only) is told apart from "not set" (one hit).
    #[prost(message, optional, tag = "3")]
    pub hits_addend: Option<UInt64Value>,
    /// `hits_addend` gives hits back (a reservation's unused part) instead of adding them.
    #[prost(bool, tag = "4")]
    pub is_negative_hits: bool,
}

#[derive(Clone, PartialEq, Eq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct LimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct UInt64Value {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// `service.ratelimit.v3.RateLimitResponse` (the fields the filters read; others are skipped).
#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<CurrentLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CurrentLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

#[derive(Clone, Copy, PartialEq, Eq, Message)]
pub struct ProtoDuration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `config.core.v3.GrpcService` with `envoy_grpc.cluster_name`: what `dispatch_grpc_call` takes to
/// reach a cluster (a bare cluster name works too, unless it happens to parse as this message).
#[derive(Clone, PartialEq, Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
}

#[derive(Clone, PartialEq, Message)]
struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    cluster_name: String,
}

/// `RateLimitResponse.Code`.
pub const CODE_OK: i32 = 1;
pub const CODE_OVER_LIMIT: i32 = 2;

/// Where the filters find the rate-limit service (`rate_limit_service` in their configuration).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// An Envoy cluster speaking HTTP/2 to the service.
    pub cluster: String,
    /// The rate-limit domain (`domain` in envoyproxy/ratelimit's config, Limitador's namespace).
    #[serde(default = "default_domain")]
    pub domain: String,
    /// How long a request waits for the service before its limit's `on_service_error` applies.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The service honours `is_negative_hits` (the bundled llm-ratelimit does): token limits and
    /// budgets then reserve each request's estimate at admission and give back what it did not use.
    /// Without it they are checked with `hits_addend` 0 and charged afterwards.
    #[serde(default)]
    pub refunds: bool,
}

fn default_domain() -> String {
    "llm".to_string()
}
fn default_timeout_ms() -> u64 {
    100
}

/// What a request gets when the service cannot answer (down, slow, erroring).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum OnServiceError {
    /// Let the request through uncounted (a metric and a log line record it).
    Allow,
    /// Answer 503.
    Deny,
}

/// Where a limit is counted.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In this Envoy's shared data: exact per Envoy, multiplied by the number of replicas.
    #[default]
    Local,
    /// In the rate-limit service: one count across every replica.
    Global,
}

/// The compiled service settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The Envoy cluster of the service.
    pub cluster: String,
    /// Serialized `GrpcService` naming the cluster (ASCII, so it passes as proxy-wasm's string).
    pub target: String,
    pub domain: String,
    pub timeout: Duration,
    /// See [`ServiceConfig::refunds`].
    pub refunds: bool,
}

impl Service {
    pub fn compile(path: &str, config: &ServiceConfig) -> Result<Service, ConfigError> {
        // Short ASCII names keep every byte of the serialized message below 0x80 (valid UTF-8).
        if config.cluster.is_empty() || config.cluster.len() > 120 || !config.cluster.is_ascii() {
            return Err(ConfigError::new(
                format!("{path}.cluster"),
                "name the Envoy cluster of the rate-limit service (1-120 ASCII characters)",
            ));
        }
        if config.domain.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.domain"),
                "must not be empty",
            ));
        }
        if !(1..=60_000).contains(&config.timeout_ms) {
            return Err(ConfigError::new(
                format!("{path}.timeout_ms"),
                "must be between 1 and 60000",
            ));
        }
        let target = GrpcService {
            envoy_grpc: Some(EnvoyGrpc {
                cluster_name: config.cluster.clone(),
            }),
        }
        .encode_to_vec();
        let target = String::from_utf8(target)
            .map_err(|_| ConfigError::new(format!("{path}.cluster"), "must be ASCII"))?;
        Ok(Service {
            cluster: config.cluster.clone(),
            target,
            domain: config.domain.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            refunds: config.refunds,
        })
    }

    /// The filter's optional `rate_limit_service` block.
    pub fn compile_optional(
        config: Option<&ServiceConfig>,
    ) -> Result<Option<Service>, ConfigError> {
        config
            .map(|service| Service::compile("rate_limit_service", service))
            .transpose()
    }

    /// The encoded `RateLimitRequest` for `descriptors`.
    pub fn request(&self, descriptors: Vec<Descriptor>) -> Vec<u8> {
        RateLimitRequest {
            domain: self.domain.clone(),
            descriptors,
            hits_addend: 0,
        }
        .encode_to_vec()
    }
}

/// The time units of the protocol (`RateLimitResponse.RateLimit.Unit`) that the filters use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Month,
}

impl Unit {
    pub fn proto(self) -> i32 {
        match self {
            Unit::Second => 1,
            Unit::Minute => 2,
            Unit::Hour => 3,
            Unit::Day => 4,
            Unit::Month => 5,
        }
    }

    /// The unit whose length is exactly `seconds`, if any (months have no fixed length).
    pub fn of_window(seconds: u32) -> Option<Unit> {
        match seconds {
            1 => Some(Unit::Second),
            60 => Some(Unit::Minute),
            3600 => Some(Unit::Hour),
            86_400 => Some(Unit::Day),
            _ => None,
        }
    }
}

/// One limit as the service sees it: a `kind` (`requests`, `tokens_per_minute`, `usd_per_day`, ...),
/// the consumer, optionally the configured model pattern, and the limit per unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLimit {
    pub kind: &'static str,
    pub amount: u32,
    pub unit: Unit,
    /// The `model` pattern of the configuration entry, when it has one (one counter for all its models).
    pub model: Option<String>,
    pub on_error: OnServiceError,
}

impl GlobalLimit {
    /// `amount` must fit the protocol's 32-bit `requests_per_unit`.
    pub fn amount(path: &str, amount: u64, unit_name: &str) -> Result<u32, ConfigError> {
        u32::try_from(amount).map_err(|_| {
            ConfigError::new(
                path,
                format!(
                    "a global limit is at most 4294967295 {unit_name} (the protocol's requests_per_unit is 32-bit)"
                ),
            )
        })
    }

    /// The descriptor for `consumer`, counting `hits` (0: check only).
    pub fn descriptor(&self, consumer: &str, hits: u64) -> Descriptor {
        let mut entries = vec![
            Entry {
                key: "llm_limit".to_string(),
                value: self.kind.to_string(),
            },
            Entry {
                key: "consumer".to_string(),
                value: consumer.to_string(),
            },
        ];
        if let Some(model) = &self.model {
            entries.push(Entry {
                key: "model".to_string(),
                value: model.clone(),
            });
        }
        Descriptor {
            entries,
            limit: Some(LimitOverride {
                requests_per_unit: self.amount,
                unit: self.unit.proto(),
            }),
            hits_addend: Some(UInt64Value { value: hits }),
            is_negative_hits: false,
        }
    }

    /// The descriptor that gives `hits` back to `consumer`'s count (a reservation's unused part).
    pub fn refund(&self, consumer: &str, hits: u64) -> Descriptor {
        Descriptor {
            is_negative_hits: true,
            ..self.descriptor(consumer, hits)
        }
    }

    /// What settles a reservation of `reserved` for a request that used `used`: the rest as hits,
    /// the unused part as a refund, or nothing.
    pub fn settlement(&self, consumer: &str, reserved: u64, used: u64) -> Option<Descriptor> {
        match used.cmp(&reserved) {
            std::cmp::Ordering::Greater => Some(self.descriptor(consumer, used - reserved)),
            std::cmp::Ordering::Less => Some(self.refund(consumer, reserved - used)),
            std::cmp::Ordering::Equal => None,
        }
    }
}

/// What the service said about one descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub over_limit: bool,
    pub remaining: u64,
    pub reset: Duration,
}

/// Reads a `RateLimitResponse`: one verdict per descriptor sent (`expected` of them). A response that
/// does not decode, or has no per-descriptor statuses while saying over limit, is an error: the
/// caller then applies `on_service_error`.
pub fn read_response(bytes: &[u8], expected: usize) -> Result<Vec<Verdict>, &'static str> {
    let response = RateLimitResponse::decode(bytes).map_err(|_| "undecodable response")?;
    let overall_over = match response.overall_code {
        CODE_OK => false,
        CODE_OVER_LIMIT => true,
        _ => return Err("response code UNKNOWN"),
    };
    if response.statuses.len() != expected {
        // Statuses are optional in the protocol: without them only the overall code is known.
        if response.statuses.is_empty() {
            return Ok(vec![
                Verdict {
                    over_limit: overall_over,
                    remaining: 0,
                    reset: Duration::ZERO,
                };
                expected
            ]);
        }
        return Err("response statuses do not match the descriptors");
    }
    Ok(response
        .statuses
        .iter()
        .map(|status| Verdict {
            over_limit: status.code == CODE_OVER_LIMIT,
            remaining: u64::from(status.limit_remaining),
            reset: status.duration_until_reset.map_or(Duration::ZERO, |d| {
                Duration::new(
                    u64::try_from(d.seconds).unwrap_or(0),
                    u32::try_from(d.nanos).unwrap_or(0),
                )
            }),
        })
        .collect())
}

/// The 429's rate-limit headers from a global verdict, in the local limits' terms.
pub fn outcome(limit: &GlobalLimit, verdict: &Verdict) -> Outcome {
    Outcome {
        allowed: !verdict.over_limit,
        limit: u64::from(limit.amount),
        remaining: verdict.remaining,
        retry_after: if verdict.over_limit {
            verdict.reset
        } else {
            Duration::ZERO
        },
        reset: verdict.reset,
    }
}

/// Whether a request whose check failed goes through: denied when any of its limits says `deny`.
pub fn allow_on_error<'a>(limits: impl IntoIterator<Item = &'a GlobalLimit>) -> bool {
    limits
        .into_iter()
        .all(|limit| limit.on_error == OnServiceError::Allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(model: Option<&str>) -> GlobalLimit {
        GlobalLimit {
            kind: "tokens_per_minute",
            amount: 2000,
            unit: Unit::Minute,
            model: model.map(str::to_string),
            on_error: OnServiceError::Allow,
        }
    }

    #[test]
    fn request_encoding_matches_the_protocol_field_numbers() {
        let service = Service::compile(
            "rate_limit_service",
            &ServiceConfig {
                cluster: "rls".into(),
                domain: "llm".into(),
                timeout_ms: 100,
                refunds: false,
            },
        )
        .unwrap();
        // GrpcService{envoy_grpc{cluster_name:"rls"}}.
        assert_eq!(service.target.as_bytes(), b"\x0a\x05\x0a\x03rls");
        let bytes = service.request(vec![limit(None).descriptor("team-a", 0)]);
        let decoded = RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.domain, "llm");
        let d = &decoded.descriptors[0];
        assert_eq!(d.entries.len(), 2);
        assert_eq!(d.entries[1].value, "team-a");
        assert_eq!(d.hits_addend, Some(UInt64Value { value: 0 }));
        assert_eq!(
            d.limit,
            Some(LimitOverride {
                requests_per_unit: 2000,
                unit: 2
            })
        );
        // An explicit zero hits_addend is present on the wire (field 3, length 0), not dropped.
        assert!(bytes.windows(2).any(|w| w == [0x1a, 0x00]));
        let with_model = limit(Some("gpt-4o*")).descriptor("team-a", 7);
        assert_eq!(with_model.entries[2].key, "model");
        assert_eq!(with_model.entries[2].value, "gpt-4o*");
        assert!(!with_model.is_negative_hits);
        // A refund sets is_negative_hits (field 4, varint 1); a settlement adds or gives back.
        let refund = limit(None).refund("team-a", 40);
        assert!(refund.is_negative_hits);
        assert!(refund.encode_to_vec().windows(2).any(|w| w == [0x20, 0x01]));
        let l = limit(None);
        let more = l.settlement("a", 100, 130).unwrap();
        assert_eq!(
            (more.hits_addend.unwrap().value, more.is_negative_hits),
            (30, false)
        );
        let less = l.settlement("a", 100, 60).unwrap();
        assert_eq!(
            (less.hits_addend.unwrap().value, less.is_negative_hits),
            (40, true)
        );
        assert_eq!(l.settlement("a", 100, 100), None);
    }

    #[test]
    fn responses_become_verdicts_or_errors() {
        let response = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![
                DescriptorStatus {
                    code: CODE_OK,
                    limit_remaining: 5,
                    ..Default::default()
                },
                DescriptorStatus {
                    code: CODE_OVER_LIMIT,
                    limit_remaining: 0,
                    duration_until_reset: Some(ProtoDuration {
                        seconds: 12,
                        nanos: 500,
                    }),
                    ..Default::default()
                },
            ],
        }
        .encode_to_vec();
        let verdicts = read_response(&response, 2).unwrap();
        assert!(!verdicts[0].over_limit);
        assert_eq!(verdicts[0].remaining, 5);
        assert!(verdicts[1].over_limit);
        assert_eq!(verdicts[1].reset, Duration::new(12, 500));
        assert!(read_response(&response, 3).is_err());
        assert!(read_response(b"\xff\xff\xff", 1).is_err());
        let unknown = RateLimitResponse::default().encode_to_vec();
        assert!(read_response(&unknown, 1).is_err());
        let bare = RateLimitResponse {
            overall_code: CODE_OVER_LIMIT,
            statuses: vec![],
        }
        .encode_to_vec();
        assert!(read_response(&bare, 2)
            .unwrap()
            .iter()
            .all(|v| v.over_limit));
    }

    #[test]
    fn service_config_errors_name_the_field() {
        let bad = |cluster: &str, timeout_ms: u64| {
            Service::compile(
                "rate_limit_service",
                &ServiceConfig {
                    cluster: cluster.into(),
                    domain: "llm".into(),
                    timeout_ms,
                    refunds: false,
                },
            )
            .unwrap_err()
            .path
        };
        assert_eq!(bad("", 100), "rate_limit_service.cluster");
        assert_eq!(bad("rls", 0), "rate_limit_service.timeout_ms");
        assert_eq!(Unit::of_window(60), Some(Unit::Minute));
        assert_eq!(Unit::of_window(90), None);
        assert!(GlobalLimit::amount("x", 5_000_000_000, "micro-USD").is_err());
        let deny = GlobalLimit {
            on_error: OnServiceError::Deny,
            ..limit(None)
        };
        assert!(allow_on_error(&[limit(None)]));
        assert!(!allow_on_error(&[limit(None), deny]));
    }

    /// The messages declared here against envoy-types' generated ones: what the filters send decodes
    /// as the official `RateLimitRequest`, and the official `RateLimitResponse` decodes here.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn wire_compatible_with_the_official_protocol_types() {
        use envoy_types::pb::envoy::service::ratelimit::v3 as official;
        use official::rate_limit_response as response;
        let service = Service::compile(
            "s",
            &ServiceConfig {
                cluster: "rls".into(),
                domain: "llm".into(),
                timeout_ms: 100,
                refunds: false,
            },
        )
        .unwrap();
        let bytes = service.request(vec![
            limit(Some("gpt-4o")).descriptor("team-a", 0),
            limit(None).descriptor("team-a", 42),
            limit(None).refund("team-a", 9),
        ]);
        let request = official::RateLimitRequest::decode(bytes.as_slice()).unwrap();
        assert!(!request.descriptors[1].is_negative_hits);
        assert!(request.descriptors[2].is_negative_hits);
        assert_eq!(
            request.descriptors[2].hits_addend.as_ref().map(|h| h.value),
            Some(9)
        );
        assert_eq!(request.domain, "llm");
        let first = &request.descriptors[0];
        assert_eq!(first.entries[0].key, "llm_limit");
        assert_eq!(first.entries[2].value, "gpt-4o");
        assert_eq!(first.hits_addend.as_ref().map(|h| h.value), Some(0));
        assert_eq!(
            request.descriptors[1].hits_addend.as_ref().map(|h| h.value),
            Some(42)
        );
        let limit_override = first.limit.unwrap();
        assert_eq!(limit_override.requests_per_unit, 2000);
        assert_eq!(
            limit_override.unit,
            response::rate_limit::Unit::Minute as i32
        );
        let answer = official::RateLimitResponse {
            overall_code: response::Code::OverLimit as i32,
            statuses: vec![response::DescriptorStatus {
                code: response::Code::OverLimit as i32,
                limit_remaining: 3,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: 7,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        let verdicts = read_response(&answer, 1).unwrap();
        assert_eq!(
            verdicts[0],
            Verdict {
                over_limit: true,
                remaining: 3,
                reset: Duration::from_secs(7)
            }
        );
    }
}
