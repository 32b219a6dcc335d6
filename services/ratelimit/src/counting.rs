//! Fixed-window counting in Redis: one Lua script counts every limited descriptor of a call, so a call
//! is one atomic round trip and concurrent calls from any number of service instances never interleave
//! between a check and its increment.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tonic::Status;

/// Descriptors in one call, entries in one descriptor, bytes in one counter key: the filters send far
/// less; a caller sending more gets INVALID_ARGUMENT instead of unbounded Redis work.
const MAX_DESCRIPTORS: usize = 64;
const MAX_ENTRIES: usize = 16;
const MAX_KEY_BYTES: usize = 1024;
const MAX_HITS: i64 = 1 << 53;

/// KEYS: one counter per limited descriptor, without its window. ARGV: per key, the hits to add
/// (negative: a refund, `is_negative_hits`, never below zero) and the window length in seconds. Windows are aligned to the epoch in Redis's own clock (`TIME`), so
/// every service instance agrees on them whatever its own clock says. Returns, per key, the count
/// after this call and the seconds until its window ends.
const SCRIPT: &str = r"
-- Redis 3.2-4 refuse writes after TIME unless effects are replicated (the default from 5 on).
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call('TIME')[1])
local out = {}
for i, base in ipairs(KEYS) do
  local hits = tonumber(ARGV[2 * i - 1])
  local unit = tonumber(ARGV[2 * i])
  local window = now - (now % unit)
  local key = base .. ':' .. window
  local count
  if hits > 0 then
    count = redis.call('INCRBY', key, hits)
    if count == hits then
      redis.call('EXPIREAT', key, window + unit)
    end
  elseif hits < 0 then
    count = tonumber(redis.call('GET', key) or '0')
    local refund = math.min(count, -hits)
    if refund > 0 then
      count = redis.call('DECRBY', key, refund)
    end
  else
    count = tonumber(redis.call('GET', key) or '0')
  end
  out[2 * i - 1] = count
  out[2 * i] = window + unit - now
end
return out
";

/// What one limited descriptor asks of the counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub key: String,
    /// Negative for a refund (`is_negative_hits`).
    pub hits: i64,
    pub limit: u32,
    pub unit: i32,
    pub unit_seconds: u64,
}

/// The count of one descriptor after a call, and the seconds until its window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub count: u64,
    pub reset_seconds: u64,
}

pub struct Counter {
    script: redis::Script,
}

impl Default for Counter {
    fn default() -> Self {
        Counter::new()
    }
}

impl Counter {
    pub fn new() -> Counter {
        Counter {
            script: redis::Script::new(SCRIPT),
        }
    }

    /// Counts `hits` in one EVALSHA (the script is loaded again by itself after a Redis restart).
    pub async fn count<'a>(
        &self,
        redis: &mut redis::aio::ConnectionManager,
        hits: impl Iterator<Item = &'a Hit>,
    ) -> redis::RedisResult<Vec<Count>> {
        let mut invocation = self.script.prepare_invoke();
        for hit in hits {
            invocation.key(&hit.key).arg(hit.hits).arg(hit.unit_seconds);
        }
        let flat: Vec<i64> = invocation.invoke_async(redis).await?;
        Ok(flat
            .chunks(2)
            .map(|pair| {
                let at = |i: usize| pair.get(i).copied().unwrap_or(0).max(0).unsigned_abs();
                Count {
                    count: at(0),
                    reset_seconds: at(1),
                }
            })
            .collect())
    }
}

pub fn unit_seconds(unit: i32) -> Option<u64> {
    Some(match Unit::try_from(unit).ok()? {
        Unit::Second => 1,
        Unit::Minute => 60,
        Unit::Hour => 3_600,
        Unit::Day => 86_400,
        Unit::Week => 7 * 86_400,
        Unit::Month => 30 * 86_400,
        Unit::Year => 365 * 86_400,
        Unit::Unknown => return None,
    })
}

/// Appends `part` length-prefixed, so no value can forge another descriptor's key.
fn push_part(key: &mut String, part: &str) {
    key.push_str(&part.len().to_string());
    key.push(':');
    key.push_str(part);
}

/// The counter key of a descriptor: the domain, every entry, and the window length. The limit's value
/// is not part of it (as in envoyproxy/ratelimit): changing a limit keeps the window's count.
pub fn counter_key(
    domain: &str,
    descriptor: &RateLimitDescriptor,
    unit_seconds: u64,
) -> Result<String, Status> {
    if descriptor.entries.len() > MAX_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "a descriptor has more than {MAX_ENTRIES} entries"
        )));
    }
    let mut key = String::from("llm-ratelimit|");
    push_part(&mut key, domain);
    for entry in &descriptor.entries {
        push_part(&mut key, &entry.key);
        push_part(&mut key, &entry.value);
    }
    key.push('|');
    key.push_str(&unit_seconds.to_string());
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "a descriptor's entries are longer than {MAX_KEY_BYTES} bytes"
        )));
    }
    Ok(key)
}

/// Per descriptor, what to count: `None` for a descriptor without a `limit` override (this service
/// only counts the filters' overrides, so such a descriptor is never limited).
pub fn hits_of(request: &RateLimitRequest) -> Result<Vec<Option<Hit>>, Status> {
    if request.domain.is_empty() {
        return Err(Status::invalid_argument("domain must not be empty"));
    }
    if request.descriptors.is_empty() {
        return Err(Status::invalid_argument("no descriptors"));
    }
    if request.descriptors.len() > MAX_DESCRIPTORS {
        return Err(Status::invalid_argument(format!(
            "more than {MAX_DESCRIPTORS} descriptors"
        )));
    }
    // envoyproxy/ratelimit: a request-level hits_addend of 0 means 1.
    let default_hits = u64::from(request.hits_addend.max(1));
    request
        .descriptors
        .iter()
        .map(|descriptor| {
            let Some(limit) = descriptor.limit else {
                return Ok(None);
            };
            let unit_seconds = unit_seconds(limit.unit)
                .ok_or_else(|| Status::invalid_argument("limit override without a time unit"))?;
            let hits = descriptor
                .hits_addend
                .map_or(default_hits, |wrapped| wrapped.value);
            // Lua numbers are doubles: amounts beyond 2^53 would lose precision, so refuse them.
            let hits = i64::try_from(hits)
                .ok()
                .filter(|h| *h <= MAX_HITS)
                .ok_or_else(|| Status::invalid_argument("hits_addend above 2^53"))?;
            Ok(Some(Hit {
                key: counter_key(&request.domain, descriptor, unit_seconds)?,
                hits: if descriptor.is_negative_hits {
                    -hits
                } else {
                    hits
                },
                limit: limit.requests_per_unit,
                unit: limit.unit,
                unit_seconds,
            }))
        })
        .collect()
}

/// The answer for `hits` given the `counts` Redis returned for the limited ones, in order.
pub fn response(hits: &[Option<Hit>], counts: &[Count]) -> RateLimitResponse {
    let mut counts = counts.iter();
    let statuses: Vec<DescriptorStatus> = hits
        .iter()
        .map(|hit| {
            let Some(hit) = hit else {
                return DescriptorStatus {
                    code: Code::Ok as i32,
                    ..Default::default()
                };
            };
            let count = counts.next().copied().unwrap_or(Count {
                count: 0,
                reset_seconds: hit.unit_seconds,
            });
            let over = count.count > u64::from(hit.limit);
            let remaining = u64::from(hit.limit).saturating_sub(count.count);
            DescriptorStatus {
                code: if over { Code::OverLimit } else { Code::Ok } as i32,
                current_limit: Some(RateLimit {
                    name: String::new(),
                    requests_per_unit: hit.limit,
                    unit: hit.unit,
                }),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(ProtoDuration {
                    seconds: i64::try_from(count.reset_seconds).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                ..Default::default()
            }
        })
        .collect();
    let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
    RateLimitResponse {
        overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
        statuses,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
        Entry, RateLimitOverride,
    };
    use envoy_types::pb::google::protobuf::UInt64Value;

    fn descriptor(entries: &[(&str, &str)], limit: Option<(u32, Unit)>) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            limit: limit.map(|(n, unit)| RateLimitOverride {
                requests_per_unit: n,
                unit: unit as i32,
            }),
            hits_addend: None,
            is_negative_hits: false,
        }
    }

    fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
        RateLimitRequest {
            domain: "llm".to_string(),
            descriptors,
            hits_addend: 0,
        }
    }

    #[test]
    fn keys_cannot_be_forged_by_values_that_contain_separators() {
        let a = descriptor(&[("consumer", "a:1:b")], None);
        let b = descriptor(&[("consumer", "a"), ("b", "")], None);
        assert_ne!(
            counter_key("llm", &a, 60).unwrap(),
            counter_key("llm", &b, 60).unwrap()
        );
        assert_ne!(
            counter_key("llm", &a, 60).unwrap(),
            counter_key("llm", &a, 3600).unwrap(),
            "windows of different length count apart"
        );
        assert_ne!(
            counter_key("llm", &a, 60).unwrap(),
            counter_key("other", &a, 60).unwrap()
        );
    }

    #[test]
    fn hits_default_to_one_and_a_descriptor_may_check_only() {
        let mut check = descriptor(&[("llm_limit", "tokens")], Some((100, Unit::Minute)));
        check.hits_addend = Some(UInt64Value { value: 0 });
        let count = descriptor(&[("llm_limit", "requests")], Some((10, Unit::Second)));
        let unlimited = descriptor(&[("llm_limit", "none")], None);
        let hits = hits_of(&request(vec![check, count, unlimited])).unwrap();
        assert_eq!(hits[0].as_ref().unwrap().hits, 0);
        assert_eq!(hits[0].as_ref().unwrap().unit_seconds, 60);
        assert_eq!(hits[1].as_ref().unwrap().hits, 1);
        assert_eq!(hits[1].as_ref().unwrap().unit_seconds, 1);
        assert!(hits[2].is_none());
        let mut many = request(vec![descriptor(&[("a", "b")], Some((1, Unit::Hour)))]);
        many.hits_addend = 7;
        assert_eq!(hits_of(&many).unwrap()[0].as_ref().unwrap().hits, 7);
    }

    #[test]
    fn bad_requests_are_refused_with_invalid_argument() {
        let limited = || descriptor(&[("a", "b")], Some((1, Unit::Minute)));
        let mut no_domain = request(vec![limited()]);
        no_domain.domain.clear();
        let no_unit = request(vec![descriptor(&[("a", "b")], Some((1, Unit::Unknown)))]);
        let long_value = "x".repeat(MAX_KEY_BYTES);
        let too_long = request(vec![descriptor(
            &[("a", long_value.as_str())],
            Some((1, Unit::Minute)),
        )]);
        let too_many = request((0..=MAX_DESCRIPTORS).map(|_| limited()).collect());
        let entries: Vec<(&str, &str)> = (0..=MAX_ENTRIES).map(|_| ("k", "v")).collect();
        let wide = request(vec![descriptor(&entries, Some((1, Unit::Minute)))]);
        for bad in [
            no_domain,
            request(vec![]),
            no_unit,
            too_long,
            too_many,
            wide,
        ] {
            let status = hits_of(&bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn over_only_when_the_count_exceeds_the_limit() {
        let hits = hits_of(&request(vec![
            descriptor(&[("a", "1")], Some((10, Unit::Minute))),
            descriptor(&[("a", "2")], None),
            descriptor(&[("a", "3")], Some((10, Unit::Minute))),
        ]))
        .unwrap();
        let at_limit = response(
            &hits,
            &[
                Count {
                    count: 10,
                    reset_seconds: 42,
                },
                Count {
                    count: 3,
                    reset_seconds: 42,
                },
            ],
        );
        assert_eq!(at_limit.overall_code, Code::Ok as i32);
        assert_eq!(at_limit.statuses.len(), 3);
        assert_eq!(at_limit.statuses[0].limit_remaining, 0);
        assert_eq!(at_limit.statuses[1].code, Code::Ok as i32);
        assert!(at_limit.statuses[1].current_limit.is_none());
        assert_eq!(at_limit.statuses[2].limit_remaining, 7);
        assert_eq!(
            at_limit.statuses[2].duration_until_reset.unwrap().seconds,
            42
        );
        let over = response(
            &hits,
            &[
                Count {
                    count: 11,
                    reset_seconds: 1,
                },
                Count {
                    count: 0,
                    reset_seconds: 60,
                },
            ],
        );
        assert_eq!(over.overall_code, Code::OverLimit as i32);
        assert_eq!(over.statuses[0].code, Code::OverLimit as i32);
        assert_eq!(over.statuses[2].code, Code::Ok as i32);
    }
}
