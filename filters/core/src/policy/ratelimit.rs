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

/// What a limit counts, as OpenAI names it in its `x-ratelimit-*-<unit>` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitUnit {
    Requests,
    Tokens,
}

impl LimitUnit {
    fn as_str(self) -> &'static str {
        match self {
            LimitUnit::Requests => "requests",
            LimitUnit::Tokens => "tokens",
        }
    }
}

/// OpenAI's rate-limit headers: `x-ratelimit-limit-<unit>`, `-remaining-<unit>`, `-reset-<unit>`.
pub fn limit_headers(unit: LimitUnit, outcome: &Outcome) -> [(String, String); 3] {
    let unit = unit.as_str();
    [
        (
            format!("x-ratelimit-limit-{unit}"),
            outcome.limit.to_string(),
        ),
        (
            format!("x-ratelimit-remaining-{unit}"),
            outcome.remaining.to_string(),
        ),
        (
            format!("x-ratelimit-reset-{unit}"),
            format_reset(outcome.reset),
        ),
    ]
}

/// The 429 for a spent limit: `message` in the caller's shape, `retry-after` and the limit headers.
pub fn limited_reply(
    flavor: crate::api::ApiFlavor,
    unit: LimitUnit,
    message: &str,
    outcome: &Outcome,
) -> crate::api::LocalReply {
    let mut reply = crate::api::error_reply(
        flavor,
        crate::api::ErrorKind::RateLimited,
        message,
        crate::api::ErrorDetail {
            code: Some("rate_limit_exceeded"),
            param: None,
        },
    );
    reply.headers.push((
        "retry-after".to_string(),
        retry_after_seconds(outcome.retry_after).to_string(),
    ));
    reply.headers.extend(limit_headers(unit, outcome));
    reply
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

/// A token budget that can go into debt: admission needs at least one token left, and the real cost is
/// charged afterwards (an LLM request's size is only known when its response ends). A request admitted
/// with budget left may therefore end above the limit; the debt delays the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub limit: RateLimit,
}

/// Stored state of a [`TokenBucket`]: a signed level in the same units as [`BucketState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DebtState {
    pub level: i128,
    pub last_ns: u64,
}

impl DebtState {
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        BucketState {
            level: self.level as u128,
            last_ns: self.last_ns,
        }
        .encode()
    }

    pub fn decode(bytes: &[u8]) -> Option<DebtState> {
        BucketState::decode(bytes).map(|s| DebtState {
            level: s.level as i128,
            last_ns: s.last_ns,
        })
    }
}

impl TokenBucket {
    fn capacity(&self) -> i128 {
        i128::try_from(self.limit.capacity()).unwrap_or(i128::MAX)
    }

    fn unit(&self) -> i128 {
        i128::from(self.limit.window_ns.max(1))
    }

    pub fn full(&self) -> DebtState {
        DebtState {
            level: self.capacity(),
            last_ns: 0,
        }
    }

    #[cfg(test)]
    fn full_at(&self, now_ns: u64) -> DebtState {
        DebtState {
            level: self.capacity(),
            last_ns: now_ns,
        }
    }

    fn refilled(&self, state: Option<DebtState>, now_ns: u64) -> DebtState {
        match state {
            None => DebtState {
                level: self.capacity(),
                last_ns: now_ns,
            },
            Some(s) => {
                let elapsed = i128::from(now_ns.saturating_sub(s.last_ns));
                let level = s
                    .level
                    .saturating_add(elapsed.saturating_mul(i128::from(self.limit.limit)))
                    .min(self.capacity());
                DebtState {
                    level,
                    last_ns: now_ns.max(s.last_ns),
                }
            }
        }
    }

    fn wait_until(&self, level: i128, target: i128) -> Duration {
        if level >= target || self.limit.limit == 0 {
            return Duration::ZERO;
        }
        let ns = (target - level).div_euclid(i128::from(self.limit.limit)) + 1;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Whether a request may start now: at least one token left.
    pub fn check(&self, state: Option<DebtState>, now_ns: u64) -> Outcome {
        let s = self.refilled(state, now_ns);
        let remaining = s.level.div_euclid(self.unit()).max(0);
        Outcome {
            allowed: s.level >= self.unit(),
            limit: self.limit.limit,
            remaining: u64::try_from(remaining).unwrap_or(u64::MAX),
            retry_after: self.wait_until(s.level, self.unit()),
            reset: self.wait_until(s.level, self.capacity()),
        }
    }

    /// Charges the tokens a finished request used.
    pub fn charge(&self, state: Option<DebtState>, now_ns: u64, tokens: u64) -> DebtState {
        let mut s = self.refilled(state, now_ns);
        s.level = s
            .level
            .saturating_sub(i128::from(tokens).saturating_mul(self.unit()));
        s
    }

    /// Admission with a reservation: a request may start when at least one token is left, and then
    /// takes `tokens` (its estimate) at once, so requests running beside it see them spent. The
    /// outcome describes the state before the reservation; a refused request takes nothing.
    pub fn reserve(
        &self,
        state: Option<DebtState>,
        now_ns: u64,
        tokens: u64,
    ) -> (Outcome, DebtState) {
        let outcome = self.check(state, now_ns);
        let refilled = self.refilled(state, now_ns);
        if !outcome.allowed {
            return (outcome, refilled);
        }
        (outcome, self.charge(Some(refilled), now_ns, tokens))
    }

    /// Settles a reservation when the request ends: gives back what was reserved beyond what it
    /// used, or takes what it used beyond the reservation.
    pub fn settle(
        &self,
        state: Option<DebtState>,
        now_ns: u64,
        reserved: u64,
        used: u64,
    ) -> DebtState {
        let mut s = self.refilled(state, now_ns);
        let delta = i128::from(reserved) - i128::from(used);
        s.level = s
            .level
            .saturating_add(delta.saturating_mul(self.unit()))
            .min(self.capacity());
        s
    }
}

/// Calendar windows for budgets, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of (year, month, day).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Period {
    /// The window `now` falls in (UTC day or month number) and how long until the next one starts.
    pub fn window(self, now_secs: u64) -> (u32, Duration) {
        let days = i64::try_from(now_secs / 86_400).unwrap_or(0);
        let into_day = now_secs % 86_400;
        match self {
            Period::Day => (
                u32::try_from(days).unwrap_or(u32::MAX),
                Duration::from_secs(86_400 - into_day),
            ),
            Period::Month => {
                let (year, month, _) = civil_from_days(days);
                let id = u32::try_from(year * 12 + i64::from(month) - 1).unwrap_or(u32::MAX);
                let (next_year, next_month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                let next = days_from_civil(next_year, next_month, 1) * 86_400;
                let left = u64::try_from(next).unwrap_or(0).saturating_sub(now_secs);
                (id, Duration::from_secs(left))
            }
        }
    }
}

/// Spending in the current window, stored as (window id, nano-USD spent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    pub window: u32,
    pub spent: u64,
}

impl Spend {
    pub fn encode(&self) -> [u8; 12] {
        let mut out = [0u8; 12];
        let (w, s) = out.split_at_mut(4);
        w.copy_from_slice(&self.window.to_le_bytes());
        s.copy_from_slice(&self.spent.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Spend> {
        let window: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        let spent: [u8; 8] = bytes.get(4..12)?.try_into().ok()?;
        (bytes.len() == 12).then(|| Spend {
            window: u32::from_le_bytes(window),
            spent: u64::from_le_bytes(spent),
        })
    }

    /// What was spent in `window` (a stored spend from an earlier window counts as nothing).
    pub fn in_window(stored: Option<Spend>, window: u32) -> u64 {
        stored.filter(|s| s.window == window).map_or(0, |s| s.spent)
    }

    /// Admission with a reservation: when less than `budget` is spent in `window`, `reserved` is
    /// added at once (requests running beside this one see it spent). Returns whether the request
    /// may start, and the spend to store.
    pub fn reserve(
        stored: Option<Spend>,
        window: u32,
        budget: u64,
        reserved: u64,
    ) -> (bool, Spend) {
        let spent = Spend::in_window(stored, window);
        if spent >= budget {
            return (false, Spend { window, spent });
        }
        (
            true,
            Spend {
                window,
                spent: spent.saturating_add(reserved),
            },
        )
    }

    /// Settles a reservation made in `reserved_in`: within the same window the reservation is
    /// replaced by what was used; in a later window (the old one's spend no longer counts) what was
    /// used is added to the new one.
    pub fn settle(
        stored: Option<Spend>,
        reserved_in: u32,
        window: u32,
        reserved: u64,
        used: u64,
    ) -> Spend {
        let spent = Spend::in_window(stored, window);
        let spent = if reserved_in == window {
            spent.saturating_sub(reserved).saturating_add(used)
        } else {
            spent.saturating_add(used)
        };
        Spend { window, spent }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    /// Reservations: concurrent requests see each other's estimates; settling gives back or takes
    /// the difference; the documented bound holds for any order of admissions and settlements.
    #[test]
    fn reservations_bound_concurrent_requests() {
        let bucket = TokenBucket {
            limit: RateLimit::new(2000, Duration::from_secs(60)),
        };
        let now = 1_000 * SECOND;
        // Four requests of ~1,100 tokens arrive together: two start, two are refused.
        let mut state = None;
        let mut admitted = 0;
        for _ in 0..4 {
            let (outcome, next) = bucket.reserve(state, now, 1100);
            state = Some(next);
            admitted += u32::from(outcome.allowed);
        }
        assert_eq!(admitted, 2, "without reservations all four passed");
        // Both used less than reserved: the rest comes back.
        let s = bucket.settle(state, now, 1100, 1000);
        let s = bucket.settle(Some(s), now, 1100, 1000);
        assert_eq!(bucket.check(Some(s), now).remaining, 0);
        assert_eq!(s.level, 0, "2,000 used of 2,000");
        // Settling never refills above capacity.
        let full = bucket.settle(None, now, 5000, 0);
        assert_eq!(full, bucket.full_at(now));

        // Bound: whatever the interleaving, what admitted requests use (when each uses at most its
        // reservation) stays below the limit plus one request's reservation.
        let mut rng = 0x9e37_79b9_u64;
        for _ in 0..200 {
            let mut state = None;
            let mut in_flight: Vec<(u64, u64)> = Vec::new();
            let mut used_total = 0u64;
            for _ in 0..30 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng % 3 == 0 && !in_flight.is_empty() {
                    let (reserved, used) = in_flight.remove((rng as usize / 3) % in_flight.len());
                    state = Some(bucket.settle(state, now, reserved, used));
                    used_total += used;
                } else {
                    let reserved = 100 + rng % 900;
                    let (outcome, next) = bucket.reserve(state, now, reserved);
                    state = Some(next);
                    if outcome.allowed {
                        in_flight.push((reserved, reserved - rng % 50));
                    }
                }
            }
            for (reserved, used) in in_flight.drain(..) {
                state = Some(bucket.settle(state, now, reserved, used));
                used_total += used;
            }
            assert!(used_total < 2000 + 1000, "used {used_total}");
        }
    }

    #[test]
    fn budget_reservations() {
        let budget = 1_000;
        let (ok, s) = Spend::reserve(None, 7, budget, 600);
        assert!(ok);
        let (ok, s) = Spend::reserve(Some(s), 7, budget, 600);
        assert!(ok, "600 < 1000 spent: admitted");
        let (ok, s) = Spend::reserve(Some(s), 7, budget, 600);
        assert!(!ok, "1200 reserved: refused");
        assert_eq!(s.spent, 1200);
        let s = Spend::settle(Some(s), 7, 7, 600, 100);
        assert_eq!(s.spent, 700);
        // A request reserved yesterday and settled today adds what it used to today.
        let s = Spend::settle(Some(s), 7, 8, 600, 100);
        assert_eq!((s.window, s.spent), (8, 100));
        assert_eq!(Spend::settle(None, 8, 8, 600, 0).spent, 0);
    }

    #[test]
    fn token_bucket_admits_then_carries_debt() {
        let bucket = TokenBucket {
            limit: RateLimit::new(2000, Duration::from_secs(60)),
        };
        let now = 1_000 * SECOND;
        assert!(bucket.check(None, now).allowed);
        // One big response: 2,500 tokens against 2,000 a minute.
        let state = bucket.charge(None, now, 2500);
        let denied = bucket.check(Some(state), now);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        // 500 tokens of debt + 1 token needed, at 2000/60 s a token: just over 15 s.
        assert_eq!(denied.retry_after.as_secs(), 15);
        assert!(!bucket.check(Some(state), now + 15 * SECOND).allowed);
        assert!(bucket.check(Some(state), now + 16 * SECOND).allowed);
        // A full minute and a quarter refills completely.
        let later = bucket.check(Some(state), now + 75 * SECOND);
        assert_eq!(later.remaining, 2000);
        assert_eq!(DebtState::decode(&state.encode()), Some(state));
    }

    #[test]
    fn day_and_month_windows() {
        // 2026-11-22T10:00:00Z
        let now = 1_795_341_600;
        let (day, left) = Period::Day.window(now);
        assert_eq!(day, 20_779);
        assert_eq!(left, Duration::from_secs(14 * 3600));
        let (month, left) = Period::Month.window(now);
        assert_eq!(month, 2026 * 12 + 10);
        // Until 2026-12-01T00:00:00Z: 8 days and 14 hours.
        assert_eq!(left, Duration::from_secs(8 * 86_400 + 14 * 3600));
        // 31 December rolls over to January of the next year.
        let (month, left) = Period::Month.window(1_798_761_599); // 2026-12-31T23:59:59Z
        assert_eq!(month, 2026 * 12 + 11);
        assert_eq!(left, Duration::from_secs(1));
        for days in [-1, 0, 59, 60, 365, 11_016, 20_779, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn spend_resets_with_the_window() {
        let stored = Some(Spend {
            window: 7,
            spent: 500,
        });
        assert_eq!(Spend::in_window(stored, 7), 500);
        assert_eq!(Spend::in_window(stored, 8), 0);
        assert_eq!(
            Spend::decode(
                &Spend {
                    window: 9,
                    spent: u64::MAX
                }
                .encode()
            ),
            Some(Spend {
                window: 9,
                spent: u64::MAX
            })
        );
        assert_eq!(Spend::decode(b"short"), None);
    }
}
