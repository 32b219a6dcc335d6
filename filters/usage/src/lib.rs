//! `llm_usage`: token and cost accounting, metrics, access-log fields, token limits and budgets.
//!
//! Thin glue: extraction, prices and limit arithmetic live in `llm_core::{usage, accounting,
//! ratelimit}`. See README.md for the configuration reference.

use llm_core::accounting::{
    budget_exhausted, format_usd, tokens_exhausted, Accounting, Limit, LimitKind, UsageConfig,
};
use llm_core::api::{classify, ApiFlavor, Endpoint};
use llm_core::config::ConfigError;
use llm_core::contract::{self, state};
use llm_core::genai::AnswerFacts;
use llm_core::global::{self, Descriptor};
use llm_core::metrics::labeled_name;
use llm_core::ratelimit::{limit_headers, DebtState, LimitUnit, Outcome, Spend};
use llm_core::usage::{
    estimate_tokens, from_json_with_facts, inject_include_usage, output_text_len, ResponseFormat,
    StreamUsage, Usage,
};
use llm_host::{
    call_rate_limit_service, ensure_shared, now_unix_nanos, read_shared, request_body,
    request_trailers, send_local_reply, set_filter_state, update_shared, Action, BodyBuffer,
    Counter, Filter, Headers, Histogram, HoldsRequestBody, HttpFilter,
};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::Duration;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
llm_host::wasm_module!(UsageFilter);

/// Non-streaming responses are copied (not held) to read their usage at the end; past this size the
/// copy stops and usage is estimated.
const MAX_JSON_COPY: usize = 16 * 1024 * 1024;

/// Usage reports for global limits wait here for the root context, which sends them: a call made by
/// the request itself would be cancelled when the request ends.
const REPORT_INTERVAL: Duration = Duration::from_millis(50);
/// Reports beyond this many (the service unreachable for long) are dropped and counted.
const MAX_PENDING_REPORTS: usize = 10_000;

pub struct UsageFilter {
    accounting: Accounting,
    metrics: RefCell<Metrics>,
    reports: RefCell<VecDeque<Vec<Descriptor>>>,
    /// False after a report failed, until one succeeds: the log says so once per outage.
    reporting_ok: Cell<bool>,
}

/// Metric ids by full (labeled) name, defined on first use; label sets are capped.
struct Metrics {
    counters: HashMap<String, Option<Counter>>,
    label_sets: HashSet<(String, String, String)>,
    max_label_sets: usize,
    /// The per-request series of each label set: one lookup a request instead of formatting and
    /// hashing eight metric names (~30k instructions a request, measured with callgrind).
    series: HashMap<(String, String, String), Series>,
}

/// The ids of one label set's (consumer, model, provider) series. The four counters and the duration
/// are defined with the set; the others when first needed, so no series exists that never counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Series {
    input: Option<Counter>,
    output: Option<Counter>,
    cached_input: Option<Counter>,
    cost: Option<Counter>,
    duration: Option<Histogram>,
    /// `llm_requests_total` by status class (the index is the status / 100).
    requests: [Option<Option<Counter>>; 10],
    estimated: Option<Option<Counter>>,
    ttft: Option<Option<Histogram>>,
}

impl Series {
    fn define(consumer: &str, model: &str, provider: &str) -> Self {
        let labels = [
            ("consumer", consumer),
            ("model", model),
            ("provider", provider),
        ];
        let short = [("model", model), ("provider", provider)];
        Series {
            input: Counter::define(&labeled_name("llm_input_tokens_total", &labels)),
            output: Counter::define(&labeled_name("llm_output_tokens_total", &labels)),
            cached_input: Counter::define(&labeled_name("llm_cached_input_tokens_total", &labels)),
            cost: Counter::define(&labeled_name("llm_cost_nanousd_total", &labels)),
            duration: Histogram::define(&labeled_name("llm_request_duration_ms", &short)),
            ..Series::default()
        }
    }
}

impl Metrics {
    /// The labels to use: these, or `other` once too many distinct sets were seen.
    fn bounded(&mut self, consumer: &str, model: &str, provider: &str) -> (String, String, String) {
        let set = (
            consumer.to_string(),
            model.to_string(),
            provider.to_string(),
        );
        if self.label_sets.contains(&set) {
            return set;
        }
        if self.label_sets.len() < self.max_label_sets {
            self.label_sets.insert(set.clone());
            return set;
        }
        ("other".into(), "other".into(), provider.to_string())
    }
}

/// Adds `by` to a counter, defining it on first use even when `by` is 0, so that every series a
/// dashboard queries exists from the first request on.
fn count(metrics: &RefCell<Metrics>, name: String, by: u64) {
    let known = metrics.borrow().counters.get(&name).copied();
    let counter = match known {
        Some(counter) => counter,
        None => {
            let counter = Counter::define(&name);
            metrics.borrow_mut().counters.insert(name, counter);
            counter
        }
    };
    if let (Some(counter), true) = (counter, by > 0) {
        counter.increment(by);
    }
}

/// Adds `by` (when positive) to a counter that may have failed to define.
fn increment(counter: Option<Counter>, by: u64) {
    if let (Some(counter), true) = (counter, by > 0) {
        counter.increment(by);
    }
}

impl Filter for UsageFilter {
    const NAME: &'static str = "llm_usage";
    type Config = UsageConfig;

    fn from_config(config: UsageConfig) -> Result<Self, ConfigError> {
        let accounting = Accounting::compile(config)?;
        // Named consumers' counters exist before any request, so the first charge is exact too.
        for (key, initial) in accounting.named_limits() {
            ensure_shared(&key, &initial);
        }
        let max_label_sets = accounting.max_label_sets;
        Ok(UsageFilter {
            accounting,
            metrics: RefCell::new(Metrics {
                counters: HashMap::new(),
                label_sets: HashSet::new(),
                max_label_sets,
                series: HashMap::new(),
            }),
            reports: RefCell::new(VecDeque::new()),
            reporting_ok: Cell::new(true),
        })
    }

    fn tick_period(&self) -> Option<Duration> {
        self.accounting.service.as_ref().map(|_| REPORT_INTERVAL)
    }

    fn on_tick(&self) {
        let Some(service) = &self.accounting.service else {
            return;
        };
        let pending: Vec<Vec<Descriptor>> = self.reports.borrow_mut().drain(..).collect();
        for descriptors in pending {
            if let Err(status) = call_rate_limit_service(service, descriptors) {
                self.report_failed(&format!("{status:?}"));
            }
        }
    }

    fn on_root_grpc_response(&self, _token: u32, status: u32, _body: Option<&[u8]>) {
        if status == 0 {
            if !self.reporting_ok.replace(true) {
                log::info!("llm_usage: usage reports reach the rate-limit service again");
            }
        } else {
            self.report_failed(&format!("gRPC status {status}"));
        }
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(UsageRequest {
            pending_check: None,
            body_done: None,
            held_size: 0,
            filter: Rc::clone(self),
            inference: false,
            format: ResponseFormat::OpenAi,
            flavor: ApiFlavor::OpenAi,
            consumer: String::new(),
            model: String::new(),
            started_ns: 0,
            body: BodyBuffer::default(),
            request_bytes: 0,
            observed_bytes: 0,
            request_paused: false,
            hide_usage: false,
            stream: None,
            json: Vec::new(),
            json_overflow: false,
            first_byte_ns: None,
            token_outcome: None,
            status: 0,
            settled: false,
            reservations: Vec::new(),
            global_reserved: Vec::new(),
        })
    }
}

impl UsageFilter {
    /// A usage report did not reach the service: that usage is missing from the global counts.
    fn report_failed(&self, why: &str) {
        count(
            &self.metrics,
            labeled_name(
                "llm_global_limit_errors_total",
                &[("filter", "usage"), ("action", "report_lost")],
            ),
            1,
        );
        if self.reporting_ok.replace(false) {
            log::warn!("llm_usage: usage report to the rate-limit service failed ({why}); usage is not counted globally until it recovers");
        }
    }

    fn queue_report(&self, descriptors: Vec<Descriptor>) {
        let mut reports = self.reports.borrow_mut();
        if reports.len() >= MAX_PENDING_REPORTS {
            drop(reports);
            self.report_failed("too many reports waiting");
            return;
        }
        reports.push_back(descriptors);
    }
}

struct UsageRequest {
    /// The global limits being checked by the rate-limit service, and the call's token.
    pending_check: Option<(u32, Vec<Limit>)>,
    /// The held body completed while the check was pending: its size.
    body_done: Option<usize>,
    /// The body held so far while the check is pending.
    held_size: usize,
    filter: Rc<UsageFilter>,
    inference: bool,
    format: ResponseFormat,
    flavor: ApiFlavor,
    consumer: String,
    model: String,
    started_ns: u64,
    /// A streaming completion's body, held to ask the provider for usage.
    body: BodyBuffer,
    request_bytes: usize,
    /// Request body bytes this filter saw (a chunked upload has no content-length).
    observed_bytes: usize,
    /// The last request body callback returned Pause: Envoy buffers, and the next callback's size
    /// counts every byte so far rather than one chunk.
    request_paused: bool,
    /// The gateway asked for stream usage on the client's behalf: remove it from what the client gets.
    hide_usage: bool,
    stream: Option<StreamUsage>,
    json: Vec<u8>,
    json_overflow: bool,
    first_byte_ns: Option<u64>,
    /// The tightest token limit's state at admission, for the `x-ratelimit-*-tokens` headers.
    token_outcome: Option<Outcome>,
    status: u16,
    /// The answer was counted (at its end, so that traces see the facts; on_log counts the rest).
    settled: bool,
    /// What admission reserved against local limits, settled when the request ends.
    reservations: Vec<Reserved>,
    /// What admission reserved against global limits, when the service takes refunds: settled, or
    /// given back, by a report to the service.
    global_reserved: Vec<GlobalReserved>,
}

/// A reservation counted by the rate-limit service: `hits` for limit `index`, in the window that
/// ends at `window_end_ns` (from the check's `duration_until_reset`; None when the service sent none).
struct GlobalReserved {
    index: usize,
    hits: u64,
    window_end_ns: Option<u64>,
}

impl GlobalReserved {
    /// Whether its window has ended: a refund would come off the next window's count, which never
    /// held this reservation.
    fn expired(&self, now_ns: u64) -> bool {
        self.window_end_ns.is_some_and(|end| now_ns >= end)
    }
}

/// A reservation against one local limit: tokens, or nano-USD for a budget (made in `window`).
struct Reserved {
    kind: LimitKind,
    key: String,
    amount: u64,
    window: u32,
}

impl Reserved {
    /// Replaces the reservation by what the request used (`used`: tokens, or nano-USD).
    fn settle(&self, now_ns: u64, used: u64) {
        match self.kind {
            LimitKind::Tokens { bucket, .. } => {
                update_shared(&self.key, |current| {
                    bucket
                        .settle(
                            current.and_then(DebtState::decode),
                            now_ns,
                            self.amount,
                            used,
                        )
                        .encode()
                        .to_vec()
                });
            }
            LimitKind::Budget { period, .. } => {
                let (window, _) = period.window(now_ns / 1_000_000_000);
                update_shared(&self.key, |current| {
                    Spend::settle(
                        current.and_then(Spend::decode),
                        self.window,
                        window,
                        self.amount,
                        used,
                    )
                    .encode()
                    .to_vec()
                });
            }
        }
    }
}

impl UsageRequest {
    /// Checks every limit that applies and reserves the request's estimate against the local ones
    /// (so requests running beside it see it spent); answers 429 when one is spent.
    fn admit(&mut self, estimate: &Usage) -> Option<Action> {
        let filter = Rc::clone(&self.filter);
        // Most requests fall under no limit: no price lookup, no copies.
        filter
            .accounting
            .limits_for(&self.consumer, &self.model)
            .next()?;
        let now_ns = now_unix_nanos();
        let estimate_cost = filter
            .accounting
            .cost_nano_usd(&[self.model.as_str()], estimate);
        let mut global_limits = Vec::new();
        let consumer = self.consumer.clone();
        let model = self.model.clone();
        for limit in filter.accounting.limits_for(&consumer, &model) {
            if limit.global.is_some() {
                global_limits.push(limit.clone());
                continue;
            }
            let key = limit.key(&consumer);
            match limit.kind {
                LimitKind::Tokens { bucket, .. } => {
                    let amount = limit.tokens(estimate);
                    let seen = Cell::new(None);
                    let written = update_shared(&key, |current| {
                        let (outcome, next) =
                            bucket.reserve(current.and_then(DebtState::decode), now_ns, amount);
                        seen.set(Some(outcome));
                        next.encode().to_vec()
                    });
                    let outcome = seen.get().unwrap_or_else(|| {
                        bucket.check(
                            read_shared(&key).as_deref().and_then(DebtState::decode),
                            now_ns,
                        )
                    });
                    if !outcome.allowed {
                        return Some(self.limited(
                            "tokens",
                            &tokens_exhausted(self.flavor, &self.consumer, &outcome),
                        ));
                    }
                    if written {
                        self.reservations.push(Reserved {
                            kind: limit.kind,
                            key,
                            amount,
                            window: 0,
                        });
                    }
                    if self
                        .token_outcome
                        .is_none_or(|o| outcome.remaining < o.remaining)
                    {
                        self.token_outcome = Some(outcome);
                    }
                }
                LimitKind::Budget { period, nano_usd } => {
                    let (window, resets_in) = period.window(now_ns / 1_000_000_000);
                    let amount = estimate_cost.unwrap_or(0);
                    let admitted = Cell::new(true);
                    let written = update_shared(&key, |current| {
                        let (ok, next) = Spend::reserve(
                            current.and_then(Spend::decode),
                            window,
                            nano_usd,
                            amount,
                        );
                        admitted.set(ok);
                        next.encode().to_vec()
                    });
                    if !admitted.get() {
                        let reply = budget_exhausted(
                            self.flavor,
                            &self.consumer,
                            period,
                            nano_usd,
                            resets_in,
                        );
                        return Some(self.limited("budget", &reply));
                    }
                    if written {
                        self.reservations.push(Reserved {
                            kind: limit.kind,
                            key,
                            amount,
                            window,
                        });
                    }
                }
            }
        }
        let service = filter.accounting.service.as_ref()?;
        if global_limits.is_empty() {
            return None;
        }
        // A service that takes refunds counts each request's estimate at once (so concurrent
        // requests see it) and gets back the unused part; otherwise the check counts nothing.
        let mut reserved = Vec::new();
        let descriptors = global_limits
            .iter()
            .filter_map(|limit| {
                let global = limit.global.as_ref()?;
                // At most the limit itself: a bigger estimate would never fit in any window.
                let hits = if service.refunds {
                    limit
                        .hits(estimate, estimate_cost)
                        .min(u64::from(global.amount))
                } else {
                    0
                };
                if hits > 0 {
                    reserved.push(GlobalReserved {
                        index: limit.index,
                        hits,
                        window_end_ns: None,
                    });
                }
                Some(global.descriptor(&consumer, hits))
            })
            .collect();
        match call_rate_limit_service(service, descriptors) {
            Ok(token) => {
                self.pending_check = Some((token, global_limits));
                self.global_reserved = reserved;
                None
            }
            Err(status) => self.service_error(&global_limits, &format!("{status:?}")),
        }
    }

    /// Gives back every reservation of a request that will not reach a provider.
    fn release_reservations(&mut self, now_ns: u64) {
        for reserved in self.reservations.drain(..) {
            reserved.settle(now_ns, 0);
        }
        let global_reserved = std::mem::take(&mut self.global_reserved);
        if global_reserved.is_empty() || self.pending_check.is_some() {
            // With the check still out, a refund could overtake it: whether the reservation is
            // counted is unknown, as when the service errs.
            return;
        }
        let filter = Rc::clone(&self.filter);
        let refunds: Vec<Descriptor> = filter
            .accounting
            .limits_for(&self.consumer, &self.model)
            .filter_map(|limit| {
                let reserved = global_reserved
                    .iter()
                    .find(|r| r.index == limit.index && !r.expired(now_ns))?;
                Some(limit.global.as_ref()?.refund(&self.consumer, reserved.hits))
            })
            .collect();
        if !refunds.is_empty() {
            filter.queue_report(refunds);
        }
    }

    /// The rate-limit service could not answer: the limits' `on_service_error` decides (deny wins).
    fn service_error(&mut self, limits: &[Limit], why: &str) -> Option<Action> {
        let allow = global::allow_on_error(limits.iter().filter_map(|l| l.global.as_ref()));
        let action = if allow { "allow" } else { "deny" };
        count(
            &self.filter.metrics,
            labeled_name(
                "llm_global_limit_errors_total",
                &[("filter", "usage"), ("action", action)],
            ),
            1,
        );
        log::warn!("llm_usage: rate-limit service unavailable ({why}); on_service_error={action}");
        // Whether the service counted the reservation is unknown: the request is charged in full at
        // its end instead (at worst the reservation is counted too, never nothing).
        self.global_reserved.clear();
        if allow {
            return None;
        }
        self.release_reservations(now_unix_nanos());
        let reply = llm_core::api::error_reply(
            self.flavor,
            llm_core::api::ErrorKind::Unavailable,
            "The gateway could not check your token limits. Retry shortly.",
            llm_core::api::ErrorDetail::default(),
        );
        send_local_reply(&reply);
        Some(Action::Pause)
    }

    /// The service's answer to the limits check: 429 for the first spent limit.
    fn on_check(&mut self, limits: &[Limit], verdicts: &[global::Verdict]) -> Option<Action> {
        let now_ns = now_unix_nanos();
        for (limit, verdict) in limits.iter().zip(verdicts) {
            if let Some(reserved) = self
                .global_reserved
                .iter_mut()
                .find(|r| r.index == limit.index)
            {
                reserved.window_end_ns = (!verdict.reset.is_zero()).then(|| {
                    now_ns
                        .saturating_add(u64::try_from(verdict.reset.as_nanos()).unwrap_or(u64::MAX))
                });
            }
        }
        for (limit, verdict) in limits.iter().zip(verdicts) {
            let Some(global) = &limit.global else {
                continue;
            };
            let outcome = global::outcome(global, verdict);
            match limit.kind {
                LimitKind::Tokens { .. } => {
                    if verdict.over_limit {
                        let reply = tokens_exhausted(self.flavor, &self.consumer, &outcome);
                        return Some(self.limited("tokens", &reply));
                    }
                    if self
                        .token_outcome
                        .is_none_or(|o| outcome.remaining < o.remaining)
                    {
                        self.token_outcome = Some(outcome);
                    }
                }
                LimitKind::Budget { period, nano_usd } => {
                    if verdict.over_limit {
                        let reply = budget_exhausted(
                            self.flavor,
                            &self.consumer,
                            period,
                            nano_usd,
                            verdict.reset,
                        );
                        return Some(self.limited("budget", &reply));
                    }
                }
            }
        }
        None
    }

    /// Answers 429 (giving back what admission reserved so far).
    fn limited(&mut self, kind: &str, reply: &llm_core::api::LocalReply) -> Action {
        self.release_reservations(now_unix_nanos());
        let consumer = {
            let mut metrics = self.filter.metrics.borrow_mut();
            metrics.bounded(&self.consumer, "", "").0
        };
        count(
            &self.filter.metrics,
            labeled_name(
                "llm_usage_limited_total",
                &[("consumer", &consumer), ("kind", kind)],
            ),
            1,
        );
        send_local_reply(reply);
        Action::Pause
    }

    /// Charges what the request used to every limit that applies: settles the reservations made
    /// at admission, charges limits without one, and reports to the rate-limit service.
    fn charge(&mut self, usage: &Usage, cost: Option<u64>) {
        let now_ns = now_unix_nanos();
        let mut reports = Vec::new();
        let reservations = std::mem::take(&mut self.reservations);
        let global_reserved = std::mem::take(&mut self.global_reserved);
        for limit in self
            .filter
            .accounting
            .limits_for(&self.consumer, &self.model)
        {
            if let Some(global) = &limit.global {
                let hits = limit.hits(usage, cost);
                let reserved = global_reserved.iter().find(|r| r.index == limit.index);
                match reserved {
                    // Same window: replace the reservation by what was used.
                    Some(reserved) if !reserved.expired(now_ns) => {
                        reports.extend(global.settlement(&self.consumer, reserved.hits, hits));
                    }
                    // No reservation, or its window is over: count what was used in this one.
                    _ if hits > 0 => reports.push(global.descriptor(&self.consumer, hits)),
                    _ => {}
                }
                continue;
            }
            let key = limit.key(&self.consumer);
            let used = match limit.kind {
                LimitKind::Tokens { .. } => limit.tokens(usage),
                LimitKind::Budget { .. } => cost.unwrap_or(0),
            };
            if let Some(reserved) = reservations.iter().find(|r| r.key == key) {
                reserved.settle(now_ns, used);
                continue;
            }
            if used == 0 {
                continue;
            }
            match limit.kind {
                LimitKind::Tokens { bucket, .. } => {
                    update_shared(&key, |current| {
                        bucket
                            .charge(current.and_then(DebtState::decode), now_ns, used)
                            .encode()
                            .to_vec()
                    });
                }
                LimitKind::Budget { period, .. } => {
                    let (window, _) = period.window(now_ns / 1_000_000_000);
                    update_shared(&key, |current| {
                        let spent = Spend::in_window(current.and_then(Spend::decode), window);
                        Spend {
                            window,
                            spent: spent.saturating_add(used),
                        }
                        .encode()
                        .to_vec()
                    });
                }
            }
        }
        if !reports.is_empty() {
            self.filter.queue_report(reports);
        }
    }

    fn provider(&self) -> String {
        llm_host::endpoint_provider().unwrap_or_else(|| "unknown".to_string())
    }

    fn request_body_action(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // While the global check is out, nothing may pass; a held body that completes meanwhile is
        // finished when the answer arrives.
        if self.pending_check.is_some() {
            self.held_size = body_size;
            if end_of_stream && self.body.is_reading() {
                self.body_done = Some(body_size);
            }
            return Action::Pause;
        }
        request_body(self, body_size, end_of_stream)
    }
}

impl UsageRequest {
    /// The rate-limit service's answer to this request's check.
    fn on_check_answer(&mut self, token_id: u32, status_code: u32, response: Option<&[u8]>) {
        let Some((token, limits)) = self.pending_check.take() else {
            return;
        };
        if token != token_id {
            self.pending_check = Some((token, limits));
            return;
        }
        let verdicts = match status_code {
            0 => response
                .ok_or("empty response")
                .and_then(|body| global::read_response(body, limits.len())),
            _ => Err("gRPC call failed"),
        };
        let stop = match verdicts {
            Ok(verdicts) => self.on_check(&limits, &verdicts),
            Err(why) => self.service_error(&limits, &format!("{why} (gRPC status {status_code})")),
        };
        if stop.is_some() {
            return; // answered locally
        }
        if self.body.is_reading() {
            let Some(size) = self.body_done.take() else {
                return; // the body's last callback continues the request
            };
            let _ = request_body(self, size, true);
        }
        llm_host::resume_request();
    }
}

impl HttpFilter for UsageRequest {
    fn on_grpc_response(&mut self, token: u32, status: u32, body: Option<&[u8]>) {
        self.on_check_answer(token, status, body);
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let Endpoint::Inference(flavor) = classify(method, path) else {
            return Action::Continue;
        };
        // Counting tokens generates none: not charged, not held to limits or budgets.
        if path.split('?').next() == Some("/v1/messages/count_tokens") {
            return Action::Continue;
        }
        self.inference = true;
        // Usage is read from the answer's bytes: ask for them uncompressed. Real providers gzip JSON
        // answers for clients that accept it (every official SDK does), and a compressed answer
        // would go uncounted. Envoy's compressor filter can compress again for the client.
        llm_host::set_request_header("accept-encoding", None);
        self.flavor = flavor;
        self.format = ResponseFormat::for_path(path);
        self.started_ns = now_unix_nanos();
        // Published by llm_auth and llm_router, which run before this filter.
        self.consumer = headers
            .get(contract::CONSUMER)
            .unwrap_or("anonymous")
            .to_string();
        self.model = headers
            .get(contract::MODEL)
            .unwrap_or("unknown")
            .to_string();
        self.request_bytes = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let path_only = path.split('?').next().unwrap_or("");
        // llm_router publishes the body's output limit (and deletes any client copy of the header).
        let max_output_tokens = headers
            .get(contract::MAX_TOKENS)
            .and_then(|v| v.parse().ok());
        let estimate = self.filter.accounting.reservation(
            self.request_bytes,
            max_output_tokens,
            path_only != "/v1/embeddings",
        );
        if let Some(action) = self.admit(&estimate) {
            return action;
        }
        // Only OpenAI completions can stream without usage; read those bodies to ask for it, unless
        // llm_router (which deletes any client copy of its headers) says the request does not stream.
        let not_streaming = headers.get(contract::STREAM) == Some("false");
        if !end_of_stream
            && !not_streaming
            && matches!(path_only, "/v1/chat/completions" | "/v1/completions")
        {
            self.body.start();
            return Action::Pause;
        }
        if self.pending_check.is_some() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.observed_bytes = if self.request_paused {
            self.observed_bytes.max(body_size)
        } else {
            self.observed_bytes.saturating_add(body_size)
        };
        let action = self.request_body_action(body_size, end_of_stream);
        self.request_paused = matches!(action, Action::Pause);
        action
    }

    fn on_request_trailers(&mut self) -> Action {
        if self.pending_check.is_some() {
            if self.body.is_reading() {
                self.body_done = Some(self.held_size);
            }
            return Action::Pause;
        }
        request_trailers(self)
    }

    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        if !self.inference {
            return Action::Continue;
        }
        let headers = Headers::response();
        self.status = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let content_type = headers.get("content-type").unwrap_or_default();
        if content_type.starts_with("text/event-stream") {
            self.stream = Some(StreamUsage::new(self.format, self.hide_usage));
            if self.hide_usage {
                llm_host::set_response_header("content-length", None);
            }
        }
        if let Some(outcome) = &self.token_outcome {
            for (name, value) in limit_headers(LimitUnit::Tokens, outcome) {
                llm_host::set_response_header(&name, Some(&value));
            }
        }
        if end_of_stream {
            self.count_answer();
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.inference {
            return Action::Continue;
        }
        let chunk = if body_size > 0 {
            llm_host::read_response_body(body_size)
        } else {
            Vec::new()
        };
        if let Some(stream) = &mut self.stream {
            // Observed (and, when hiding usage, rewritten) chunk by chunk: the stream is never held.
            let (first_content, rewritten) = stream.push(&chunk);
            let mut rewritten = rewritten;
            if end_of_stream {
                if let Some(last) = stream.finish() {
                    rewritten.get_or_insert_with(Vec::new).extend(last);
                }
            }
            if first_content && self.first_byte_ns.is_none() {
                self.first_byte_ns = Some(now_unix_nanos());
            }
            if let Some(out) = rewritten {
                llm_host::replace_response_body(body_size, &out);
            }
            if end_of_stream {
                self.count_answer();
            }
            return Action::Continue;
        }
        if !chunk.is_empty() && self.first_byte_ns.is_none() {
            self.first_byte_ns = Some(now_unix_nanos());
        }
        if self.json.len() + chunk.len() <= MAX_JSON_COPY {
            self.json.extend_from_slice(&chunk);
        } else {
            self.json_overflow = true;
        }
        if end_of_stream {
            self.count_answer();
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.settled {
            return;
        }
        if !self.inference || self.status == 0 {
            if self.inference && llm_host::reached_upstream() {
                // Sent to a provider, no answer seen (the client left first): the provider may have
                // run and billed the whole request, so its reservations stay charged.
                self.reservations.clear();
                self.global_reserved.clear();
                return;
            }
            // Never reached a provider (rejected by a later filter): nothing used.
            self.release_reservations(now_unix_nanos());
            return;
        }
        self.count_answer();
    }
}

impl UsageRequest {
    /// Counts the answer: usage, cost, metrics and the facts for access logs and traces. Once, at
    /// the answer's end (Envoy finishes the request's span before on_log), or from on_log for an
    /// answer that never ended (the client left, the upstream reset).
    fn count_answer(&mut self) {
        if self.settled || !self.inference || self.status == 0 {
            return;
        }
        self.settled = true;
        let now_ns = now_unix_nanos();
        let (reported, model_reported, output_chars, facts) = match &self.stream {
            Some(stream) => (
                stream.charged(self.request_bytes.max(self.observed_bytes)),
                stream.model().map(str::to_string),
                stream.output_chars(),
                stream.facts().clone(),
            ),
            None if self.json_overflow => (None, None, 0, AnswerFacts::default()),
            None => {
                let (usage, model, facts) = from_json_with_facts(self.format, &self.json);
                // The answer's text is only needed to estimate usage the provider did not send.
                let chars = match usage {
                    Some(_) => 0,
                    None => output_text_len(self.format, &self.json),
                };
                (usage, model, chars, facts)
            }
        };
        let success = (200..300).contains(&self.status);
        let usage = match reported {
            Some(usage) => usage,
            None if success => Usage {
                // The bytes received, when larger than content-length says (a chunked upload).
                input: estimate_tokens(self.request_bytes.max(self.observed_bytes)),
                output: estimate_tokens(output_chars),
                estimated: true,
                ..Usage::default()
            },
            None => Usage::default(),
        };
        let filter = Rc::clone(&self.filter);
        let mut candidates: Vec<&str> = Vec::new();
        if let Some(model) = &model_reported {
            candidates.push(model);
        }
        candidates.push(&self.model);
        let cost = filter.accounting.cost_nano_usd(&candidates, &usage);
        self.charge(&usage, cost);

        let provider = self.provider();
        let (consumer, model, provider_label) =
            filter
                .metrics
                .borrow_mut()
                .bounded(&self.consumer, &self.model, &provider);
        let key = (consumer, model, provider_label);
        let known = filter.metrics.borrow().series.get(&key).copied();
        // Defined outside the borrow: a host call may call back into the VM.
        let mut series = known.unwrap_or_else(|| Series::define(&key.0, &key.1, &key.2));
        let before = series;
        let (consumer, model, provider_label) = (&key.0, &key.1, &key.2);
        let labels = [
            ("consumer", consumer.as_str()),
            ("model", model.as_str()),
            ("provider", provider_label.as_str()),
        ];
        let class = usize::from(self.status / 100).min(9);
        if let Some(slot) = series.requests.get_mut(class) {
            let counter = *slot.get_or_insert_with(|| {
                let status_class = format!("{class}xx");
                let mut with_status = labels.to_vec();
                with_status.push(("status_class", &status_class));
                Counter::define(&labeled_name("llm_requests_total", &with_status))
            });
            increment(counter, 1);
        }
        increment(series.input, usage.input);
        increment(series.output, usage.output);
        increment(series.cached_input, usage.cached_input);
        increment(series.cost, cost.unwrap_or(0));
        if usage.estimated {
            let counter = *series.estimated.get_or_insert_with(|| {
                Counter::define(&labeled_name("llm_estimated_usage_total", &labels))
            });
            increment(counter, 1);
        }
        let ttft_ms = self
            .first_byte_ns
            .map(|t| t.saturating_sub(self.started_ns) / 1_000_000);
        if let (Some(ttft), true) = (ttft_ms, success) {
            let histogram = *series.ttft.get_or_insert_with(|| {
                let short = [
                    ("model", model.as_str()),
                    ("provider", provider_label.as_str()),
                ];
                Histogram::define(&labeled_name("llm_time_to_first_token_ms", &short))
            });
            if let Some(histogram) = histogram {
                histogram.record(ttft);
            }
        }
        if let Some(duration) = series.duration {
            duration.record(now_ns.saturating_sub(self.started_ns) / 1_000_000);
        }
        // Written back only when a series was defined: most requests change nothing.
        if known.is_none() || series != before {
            filter.metrics.borrow_mut().series.insert(key, series);
        }

        set_filter_state(state::PROVIDER, &provider);
        set_filter_state(state::INPUT_TOKENS, &usage.input.to_string());
        set_filter_state(state::OUTPUT_TOKENS, &usage.output.to_string());
        set_filter_state(state::CACHED_TOKENS, &usage.cached_input.to_string());
        if let Some(cost) = cost {
            set_filter_state(state::COST_USD, &format_usd(cost));
        }
        if let Some(ttft) = ttft_ms {
            set_filter_state(state::TTFT_MS, &ttft.to_string());
        }
        if let Some(model) = &model_reported {
            set_filter_state(state::RESPONSE_MODEL, model);
        }
        set_filter_state(
            state::STREAMED,
            if self.stream.is_some() {
                "true"
            } else {
                "false"
            },
        );
        set_filter_state(
            state::USAGE_ESTIMATED,
            if usage.estimated { "true" } else { "false" },
        );
        if let Some(id) = &facts.id {
            set_filter_state(state::RESPONSE_ID, id);
        }
        if let Some(reasons) = facts.finish_reasons_text() {
            set_filter_state(state::FINISH_REASONS, &reasons);
        }
    }
}

impl HoldsRequestBody for UsageRequest {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, body_size: usize) -> Action {
        self.request_bytes = body_size;
        let body = llm_host::read_request_body(body_size);
        if let Some(injected) = inject_include_usage(&body) {
            llm_host::replace_request_body(body_size, &injected);
            llm_host::set_request_header("content-length", Some(&injected.len().to_string()));
            self.hide_usage = true;
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_host::fake::{self, Stream};
    use serde_json::{json, Value};

    /// The configuration of envoy/demo.yaml.
    const DEMO: &str = r#"{
      "prices": [
        {"model": "gpt-4o-mini*", "input": 0.15, "output": 0.60, "cached_input": 0.075},
        {"model": "gpt-4o*", "input": 2.50, "output": 10.00, "cached_input": 1.25},
        {"model": "claude-sonnet-4-5*", "input": 3.00, "output": 15.00,
         "cached_input": 0.30, "cache_write": 3.75},
        {"model": "text-embedding-3-small", "input": 0.02, "output": 0}
      ],
      "limits": [
        {"consumer": "tiny", "tokens_per_minute": 2000},
        {"consumer": "team-b", "usd_per_day": 5}
      ]
    }"#;

    const PROVIDER: &str = "xds.upstream_host_metadata.filter_metadata.llm.provider";
    const JSON_ANSWER: [(&str, &str); 2] =
        [(":status", "200"), ("content-type", "application/json")];
    const SSE_ANSWER: [(&str, &str); 2] =
        [(":status", "200"), ("content-type", "text/event-stream")];

    fn configure() -> llm_host::Loaded<UsageFilter> {
        fake::reset();
        let loaded = llm_host::configure::<UsageFilter>(DEMO.as_bytes()).expect("config");
        fake::with(|s| s.properties.insert(PROVIDER.into(), b"openai".to_vec()));
        loaded
    }

    /// A chat completion as llm_auth and llm_router leave it (consumer, model, stream published).
    fn chat<'a>(consumer: &'a str, model: &'a str, stream: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip, br"),
            ("x-llm-consumer", consumer),
            ("x-llm-model", model),
            ("x-llm-stream", stream),
        ]
    }

    fn state(key: &str) -> Option<String> {
        fake::with(|s| s.filter_state.get(key).cloned())
    }

    fn series(metric: &str, consumer: &str, model: &str) -> String {
        format!("{metric}_consumer=.={consumer};.;_model=.={model};.;_provider=.=openai;.;")
    }

    fn openai_answer(model: &str, input: u64, output: u64) -> Vec<u8> {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": input, "completion_tokens": output,
                      "total_tokens": input + output}
        })
        .to_string()
        .into_bytes()
    }

    /// One non-streaming request answered with `answer`, then the access log.
    fn complete(loaded: &llm_host::Loaded<UsageFilter>, headers: &[(&str, &str)], answer: &[u8]) {
        let mut stream = Stream::new(loaded.new_stream());
        assert_eq!(
            stream.request(headers, &[br#"{"model":"x","messages":[]}"#]),
            Action::Continue
        );
        assert_eq!(stream.response(&JSON_ANSWER, &[answer]), Action::Continue);
        stream.log();
    }

    #[test]
    fn tokens_and_cost_are_counted_from_a_json_answer() {
        let loaded = configure();
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("team-a", "gpt-4o-mini", "false");
        // Not streaming: nothing is held.
        assert_eq!(stream.request_headers(&headers, false), Action::Continue);
        assert_eq!(fake::request_header("accept-encoding"), None);
        assert_eq!(
            stream.request_body(br#"{"model":"gpt-4o-mini"}"#, true),
            Action::Continue
        );

        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                      "prompt_tokens_details": {"cached_tokens": 20}}
        })
        .to_string()
        .into_bytes();
        assert_eq!(
            stream.response_headers(&JSON_ANSWER, false),
            Action::Continue
        );
        fake::with(|s| s.now_unix_nanos += 250_000_000);
        let (first, second) = answer.split_at(50);
        // Observed as it passes, never held.
        assert_eq!(stream.response_body(first, false), Action::Continue);
        assert_eq!(stream.client_body(), first);
        assert_eq!(stream.response_body(second, true), Action::Continue);
        assert_eq!(stream.client_body(), answer.as_slice());
        stream.log();

        let metric = |name: &str| fake::counter(&series(name, "team-a", "gpt-4o-mini"));
        assert_eq!(metric("llm_input_tokens_total"), 100);
        assert_eq!(metric("llm_output_tokens_total"), 50);
        assert_eq!(metric("llm_cached_input_tokens_total"), 20);
        // 80 × 150 + 20 × 75 + 50 × 600 nano-USD.
        assert_eq!(metric("llm_cost_nanousd_total"), 43_500);
        let requests = series("llm_requests_total", "team-a", "gpt-4o-mini");
        assert_eq!(
            fake::counter(&format!("{requests}_status_class=.=2xx;.;")),
            1
        );
        assert_eq!(
            fake::histogram(
                "llm_time_to_first_token_ms_model=.=gpt-4o-mini;.;_provider=.=openai;.;"
            ),
            [250]
        );

        // The access-log fields.
        for (key, value) in [
            ("llm_provider", "openai"),
            ("llm_input_tokens", "100"),
            ("llm_output_tokens", "50"),
            ("llm_cached_tokens", "20"),
            ("llm_cost_usd", "0.000043500"),
            ("llm_ttft_ms", "250"),
            ("llm_response_model", "gpt-4o-mini-2024-07-18"),
            ("llm_streamed", "false"),
            ("llm_usage_estimated", "false"),
        ] {
            assert_eq!(state(key).as_deref(), Some(value), "{key}");
        }
    }

    #[test]
    fn an_answer_without_usage_is_estimated_from_the_bytes_seen() {
        let loaded = configure();
        let mut stream = Stream::new(loaded.new_stream());
        // A chunked upload: no content-length, 40 bytes seen in two chunks.
        let headers = chat("team-a", "gpt-4o-mini", "false");
        assert_eq!(
            stream.request(&headers, &[&[b' '; 20], &[b' '; 20]]),
            Action::Continue
        );
        let answer = br#"{"choices":[{"message":{"content":"12345678"}}]}"#;
        stream.response(&JSON_ANSWER, &[answer]);
        stream.log();
        let metric = |name: &str| fake::counter(&series(name, "team-a", "gpt-4o-mini"));
        assert_eq!(metric("llm_input_tokens_total"), 10);
        assert_eq!(metric("llm_output_tokens_total"), 2);
        assert_eq!(metric("llm_estimated_usage_total"), 1);
        assert_eq!(state("llm_usage_estimated").as_deref(), Some("true"));
    }

    #[test]
    fn a_stream_gets_usage_asked_for_and_hidden_from_the_client() {
        let loaded = configure();
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("team-a", "gpt-4o-mini", "true");
        let body = br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(stream.request_body(&body[..20], false), Action::Pause);
        assert!(stream.upstream_body().is_empty());
        assert_eq!(stream.request_body(&body[20..], true), Action::Continue);
        let injected =
            br#"{"stream_options":{"include_usage":true},"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
        assert_eq!(stream.upstream_body(), injected);
        assert_eq!(
            fake::request_header("content-length"),
            Some(injected.len().to_string())
        );

        let event = |value: Value| format!("data: {value}\n\n");
        let delta = |text: &str, finish: Value| {
            event(json!({"id": "c1", "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
                "usage": null}))
        };
        let usage = event(
            json!({"id": "c1", "model": "gpt-4o-mini-2024-07-18", "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}),
        );
        let provider = [
            delta("Hel", Value::Null),
            delta("lo", json!("stop")),
            usage,
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        // The usage event is cut between two chunks.
        let cut = provider.find("prompt_tokens").unwrap();
        let headers = [
            (":status", "200"),
            ("content-type", "text/event-stream"),
            ("content-length", "999"),
        ];
        assert_eq!(stream.response_headers(&headers, false), Action::Continue);
        assert_eq!(fake::response_header("content-length"), None);
        assert_eq!(
            stream.response_body(&provider.as_bytes()[..cut], false),
            Action::Continue
        );
        assert_eq!(
            stream.response_body(&provider.as_bytes()[cut..], true),
            Action::Continue
        );
        stream.log();

        let client = stream.client_body_text();
        assert!(!client.contains("usage"), "{client}");
        let expected = [
            delta("Hel", Value::Null),
            delta("lo", json!("stop")),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat()
        .replace(r#","usage":null"#, "");
        assert_eq!(client, expected);
        let metric = |name: &str| fake::counter(&series(name, "team-a", "gpt-4o-mini"));
        assert_eq!(metric("llm_input_tokens_total"), 12);
        assert_eq!(metric("llm_output_tokens_total"), 2);
        assert_eq!(state("llm_streamed").as_deref(), Some("true"));
        assert_eq!(state("llm_usage_estimated").as_deref(), Some("false"));
    }

    #[test]
    fn a_stream_that_asked_for_usage_keeps_it() {
        let loaded = configure();
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("team-a", "gpt-4o-mini", "true");
        let body =
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(stream.request(&headers, &[body]), Action::Continue);
        assert_eq!(stream.upstream_body(), body);
        let provider = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n";
        stream.response(&SSE_ANSWER, &[provider.as_bytes()]);
        stream.log();
        assert_eq!(stream.client_body_text(), provider);
        assert_eq!(
            fake::counter(&series("llm_output_tokens_total", "team-a", "gpt-4o-mini")),
            4
        );
    }

    #[test]
    fn the_answers_facts_are_published_when_it_ends_before_the_log() {
        // Envoy finishes the request's span before the access-log callbacks: the facts traces
        // read must be in place when the answer's last byte passes.
        let loaded = configure();
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("team-a", "gpt-4o-mini", "false");
        assert_eq!(
            stream.request(&headers, &[br#"{"model":"gpt-4o-mini"}"#]),
            Action::Continue
        );
        let answer = openai_answer("gpt-4o-mini-2024-07-18", 10, 5);
        assert_eq!(stream.response(&JSON_ANSWER, &[&answer]), Action::Continue);
        assert_eq!(state("llm_output_tokens").as_deref(), Some("5"));
        assert_eq!(state("llm_response_id").as_deref(), Some("chatcmpl-1"));
        assert_eq!(state("llm_finish_reasons").as_deref(), Some("stop"));
        assert_eq!(
            state("llm_response_model").as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
        // The log does not count the answer twice.
        stream.log();
        assert_eq!(
            fake::counter(&series("llm_output_tokens_total", "team-a", "gpt-4o-mini")),
            5
        );

        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("team-a", "gpt-4o-mini", "true");
        let body =
            br#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true}}"#;
        assert_eq!(stream.request(&headers, &[body]), Action::Continue);
        let provider = concat!(
            "data: {\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"id\":\"chatcmpl-9\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
            "data: [DONE]\n\n"
        );
        stream.response(&SSE_ANSWER, &[provider.as_bytes()]);
        assert_eq!(state("llm_response_id").as_deref(), Some("chatcmpl-9"));
        assert_eq!(state("llm_finish_reasons").as_deref(), Some("length"));
        assert_eq!(state("llm_output_tokens").as_deref(), Some("4"));
        stream.log();
        assert_eq!(
            fake::counter(&series("llm_output_tokens_total", "team-a", "gpt-4o-mini")),
            9
        );
    }

    #[test]
    fn a_spent_token_limit_refuses_the_next_request() {
        let loaded = configure();
        let mut headers = chat("tiny", "fast", "false");
        headers.extend([("content-length", "400"), ("x-llm-max-tokens", "100")]);

        let mut first = Stream::new(loaded.new_stream());
        assert_eq!(first.request_headers(&headers, false), Action::Continue);
        first.request_body(&[b' '; 400], true);
        first.response_headers(&JSON_ANSWER, false);
        assert_eq!(
            fake::response_header("x-ratelimit-limit-tokens").as_deref(),
            Some("2000")
        );
        assert_eq!(
            fake::response_header("x-ratelimit-remaining-tokens").as_deref(),
            Some("2000")
        );
        // 2,500 tokens used against 2,000 a minute: 500 tokens of debt.
        first.response_body(&openai_answer("gpt-4o-mini", 1500, 1000), true);
        first.log();

        let mut second = Stream::new(loaded.new_stream());
        assert_eq!(second.request_headers(&headers, false), Action::Pause);
        let reply = second.reply().expect("429");
        assert_eq!(reply.status, 429);
        assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
        // The debt and one token more refill at 2,000 a minute: 501 × 60 / 2000 = 15.03 s.
        assert!(reply
            .headers
            .contains(&("retry-after".to_string(), "16".to_string())));
        assert!(!second.request_forwarded());
        assert_eq!(
            fake::counter("llm_usage_limited_total_consumer=.=tiny;.;_kind=.=tokens;.;"),
            1
        );

        // Other consumers are not limited by it.
        let mut other = Stream::new(loaded.new_stream());
        let team_a = chat("team-a", "fast", "false");
        assert_eq!(other.request_headers(&team_a, false), Action::Continue);
    }

    #[test]
    fn a_spent_usd_budget_refuses_the_next_request_until_the_next_day() {
        let loaded = configure();
        let headers = chat("team-b", "gpt-4o", "false");
        // 1,000 × 2.5 + 600,000 × 10 USD per million tokens: 6.0025 USD of a 5 USD day.
        complete(
            &loaded,
            &headers,
            &openai_answer("gpt-4o-2024-08-06", 1000, 600_000),
        );
        assert_eq!(state("llm_cost_usd").as_deref(), Some("6.002500000"));

        let mut stream = Stream::new(loaded.new_stream());
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        let reply = stream.reply().expect("429");
        assert_eq!(reply.status, 429);
        assert_eq!(reply.json()["error"]["code"], "budget_exceeded");
        // The fake's clock is 2026-01-01T00:00:00Z: a whole day to go.
        assert!(reply
            .headers
            .contains(&("retry-after".to_string(), "86400".to_string())));
        assert_eq!(
            fake::counter("llm_usage_limited_total_consumer=.=team-b;.;_kind=.=budget;.;"),
            1
        );
    }

    #[test]
    fn a_request_that_never_reached_a_provider_gives_its_reservation_back() {
        let loaded = configure();
        let mut headers = chat("tiny", "fast", "false");
        headers.extend([("content-length", "4000"), ("x-llm-max-tokens", "1000")]);
        // Reserves 2,000 tokens (all of them), then a later filter refuses it: no answer, no upstream.
        let mut refused = Stream::new(loaded.new_stream());
        assert_eq!(refused.request_headers(&headers, false), Action::Continue);
        refused.log();

        let mut next = Stream::new(loaded.new_stream());
        assert_eq!(next.request_headers(&headers, false), Action::Continue);
        next.response_headers(&JSON_ANSWER, false);
        assert_eq!(
            fake::response_header("x-ratelimit-remaining-tokens").as_deref(),
            Some("2000")
        );
    }

    #[test]
    fn a_request_sent_upstream_without_an_answer_keeps_its_reservation() {
        let loaded = configure();
        let mut headers = chat("tiny", "fast", "false");
        headers.extend([("content-length", "4000"), ("x-llm-max-tokens", "1000")]);
        let mut abandoned = Stream::new(loaded.new_stream());
        assert_eq!(abandoned.request_headers(&headers, false), Action::Continue);
        fake::with(|s| {
            s.properties
                .insert("upstream.address".into(), b"10.0.0.1:443".to_vec())
        });
        abandoned.log();

        let mut next = Stream::new(loaded.new_stream());
        assert_eq!(next.request_headers(&headers, false), Action::Pause);
        assert_eq!(next.reply().map(|r| r.status), Some(429));
    }

    #[test]
    fn requests_that_are_not_inference_are_not_counted() {
        let loaded = configure();
        let mut stream = Stream::new(loaded.new_stream());
        let headers = [
            (":method", "GET"),
            (":path", "/v1/models"),
            ("accept-encoding", "gzip"),
        ];
        assert_eq!(stream.request_headers(&headers, true), Action::Continue);
        assert_eq!(
            fake::request_header("accept-encoding").as_deref(),
            Some("gzip")
        );
        stream.response(&JSON_ANSWER, &[br#"{"data":[]}"#]);
        stream.log();
        assert!(fake::with(|s| s.filter_state.is_empty()));
        assert!(!fake::metric_names()
            .iter()
            .any(|m| m.starts_with("llm_input_tokens_total")));
    }
}
