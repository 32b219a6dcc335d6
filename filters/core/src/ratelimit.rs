//! Token buckets in exact integer arithmetic, stored as a few bytes in Envoy shared data.
//!
//! A bucket for `limit` requests per `window` holds up to `limit * window_ns` units; a request costs
//! `window_ns` units and the bucket refills `limit` units per nanosecond. No floats, no rounding drift:
//! a full bucket admits exactly `limit` requests and then one more every `window / limit`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests (or tokens) per window: also the burst size.
    pub limit: u64,
    pub window_ns: u64,
}

/// What shared data holds for one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub level: u128,
    pub last_ns: u64,
}

const ENCODED_LEN: usize = 24;

impl BucketState {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut out = [0u8; ENCODED_LEN];
        let (level, last) = out.split_at_mut(16);
        level.copy_from_slice(&self.level.to_le_bytes());
        last.copy_from_slice(&self.last_ns.to_le_bytes());
        out
    }

    /// `None` for anything that is not a bucket (absent, or written by something else): a fresh bucket.
    pub fn decode(bytes: &[u8]) -> Option<BucketState> {
        let level: [u8; 16] = bytes.get(..16)?.try_into().ok()?;
        let last: [u8; 8] = bytes.get(16..ENCODED_LEN)?.try_into().ok()?;
        (bytes.len() == ENCODED_LEN).then(|| BucketState {
            level: u128::from_le_bytes(level),
            last_ns: u64::from_le_bytes(last),
        })
    }
}

/// The result of taking from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub allowed: bool,
    pub limit: u64,
    /// Whole requests left after this one.
    pub remaining: u64,
    /// When denied: how long until the request would be admitted.
    pub retry_after: Duration,
    /// How long until the bucket is full again (OpenAI's `x-ratelimit-reset-*`).
    pub reset: Duration,
}

impl RateLimit {
    pub fn new(limit: u64, window: Duration) -> Self {
        RateLimit {
            limit,
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// A full bucket, as stored before the first request.
    pub fn full(&self) -> BucketState {
        BucketState {
            level: self.capacity(),
            last_ns: 0,
        }
    }

    fn capacity(&self) -> u128 {
        u128::from(self.limit) * u128::from(self.window_ns)
    }

    fn refilled(&self, state: Option<BucketState>, now_ns: u64) -> u128 {
        match state {
            None => self.capacity(),
            Some(state) => {
                // A clock that went backwards (another worker's earlier reading) refills nothing.
                let elapsed = u128::from(now_ns.saturating_sub(state.last_ns));
                state
                    .level
                    .saturating_add(elapsed.saturating_mul(u128::from(self.limit)))
                    .min(self.capacity())
            }
        }
    }

    fn ns_until(&self, level: u128, target: u128) -> Duration {
        if level >= target || self.limit == 0 {
            return Duration::ZERO;
        }
        let ns = (target - level).div_ceil(u128::from(self.limit));
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Takes `cost` units (requests) at `now_ns`; returns the outcome and the state to store.
    pub fn take(
        &self,
        state: Option<BucketState>,
        now_ns: u64,
        cost: u64,
    ) -> (Outcome, BucketState) {
        let level = self.refilled(state, now_ns);
        let price = u128::from(cost) * u128::from(self.window_ns);
        let allowed = level >= price;
        let after = if allowed { level - price } else { level };
        let unit = u128::from(self.window_ns.max(1));
        let outcome = Outcome {
            allowed,
            limit: self.limit,
            remaining: u64::try_from(after / unit).unwrap_or(u64::MAX),
            retry_after: if allowed {
                Duration::ZERO
            } else {
                self.ns_until(level, price)
            },
            reset: self.ns_until(after, self.capacity()),
        };
        (
            outcome,
            BucketState {
                level: after,
                last_ns: now_ns.max(state.map_or(0, |s| s.last_ns)),
            },
        )
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `350ms`, `1s`, `6m0s`, `1h2m3s`
/// (rounded up to the millisecond below a second, to the second above).
pub fn format_reset(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        let ms = duration.as_nanos().div_ceil(1_000_000);
        return if ms >= 1000 {
            "1s".to_string()
        } else {
            format!("{ms}ms")
        };
    }
    let total = duration.as_nanos().div_ceil(1_000_000_000);
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// `retry-after` in whole seconds, at least 1.
pub fn retry_after_seconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_admits_exactly_the_limit() {
        let limit = RateLimit::new(5, Duration::from_secs(60));
        let mut state = None;
        for i in 0..5 {
            let (outcome, next) = limit.take(state, 1000, 1);
            assert!(outcome.allowed, "request {i}");
            assert_eq!(outcome.remaining, 4 - i);
            state = Some(next);
        }
        let (denied, next) = limit.take(state, 1000, 1);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Duration::from_secs(12));
        assert_eq!(denied.reset, Duration::from_secs(60));
        assert_eq!(next, state.unwrap(), "a denied request changes nothing");
    }

    #[test]
    fn refills_one_request_every_window_over_limit() {
        let limit = RateLimit::new(5, Duration::from_secs(60));
        let mut state = None;
        for _ in 0..5 {
            state = Some(limit.take(state, 0, 1).1);
        }
        // 11.999 s later: still nothing; 12 s later: exactly one.
        assert!(!limit.take(state, 12 * SECOND - 1, 1).0.allowed);
        let (outcome, next) = limit.take(state, 12 * SECOND, 1);
        assert!(outcome.allowed);
        assert!(!limit.take(Some(next), 12 * SECOND, 1).0.allowed);
        // A long pause refills to the limit, never above it.
        let (outcome, _) = limit.take(Some(next), 3600 * SECOND, 1);
        assert_eq!(outcome.remaining, 4);
    }

    #[test]
    fn a_stored_full_bucket_behaves_like_a_fresh_one() {
        let limit = RateLimit::new(3, Duration::from_secs(60));
        assert_eq!(
            limit.take(Some(limit.full()), 5 * SECOND, 1),
            limit.take(None, 5 * SECOND, 1)
        );
    }

    #[test]
    fn clock_going_backwards_refills_nothing() {
        let limit = RateLimit::new(2, Duration::from_secs(10));
        let (_, s1) = limit.take(None, 100 * SECOND, 1);
        let (_, s2) = limit.take(Some(s1), 100 * SECOND, 1);
        let (outcome, s3) = limit.take(Some(s2), 50 * SECOND, 1);
        assert!(!outcome.allowed);
        assert_eq!(s3.last_ns, 100 * SECOND);
    }

    #[test]
    fn encode_roundtrip_and_garbage() {
        let state = BucketState {
            level: u128::MAX - 7,
            last_ns: 42,
        };
        assert_eq!(BucketState::decode(&state.encode()), Some(state));
        assert_eq!(BucketState::decode(b"short"), None);
        assert_eq!(BucketState::decode(&[0u8; 25]), None);
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let limit = RateLimit::new(u64::MAX, Duration::from_secs(u64::from(u32::MAX)));
        let (outcome, _) = limit.take(None, u64::MAX, 1);
        assert!(outcome.allowed);
    }

    #[test]
    fn reset_formatting() {
        assert_eq!(format_reset(Duration::ZERO), "0ms");
        assert_eq!(format_reset(Duration::from_micros(1)), "1ms");
        assert_eq!(format_reset(Duration::from_millis(350)), "350ms");
        assert_eq!(format_reset(Duration::from_millis(999_999) / 1000), "1s");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(1500)), "2s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(12_001)), 13);
    }
}
