//! `llm_guard`: prompt-injection and content guardrails. Local checks (patterns, the injection
//! detector, structural limits) and remote checks (moderation services, Llama Guard classifiers,
//! called concurrently) on requests; local patterns on answers, JSON and streamed.
//!
//! Thin glue: the rules, policies and stream windows live in `llm_core::guarding`. See README.md.

use llm_core::api::{classify, error_reply, ApiFlavor, Endpoint, ErrorDetail, ErrorKind};
use llm_core::config::ConfigError;
use llm_core::contract::{self, state};
use llm_core::guarding::guard::{
    self, answer_block_message, block_reply, extract, filtered_answer, Extracted, Finding, Guard,
    GuardAction, GuardConfig, Policy, Role, FINDINGS_HEADER, GUARD_HEADER,
};
use llm_core::guarding::remote::{Check, OnError, Outcome};
use llm_core::guarding::stream::{Format, StreamGuard};
use llm_core::metrics::labeled_name;
use llm_host::host::{HttpAnswer, HttpCall};
use llm_host::{
    request_body, request_trailers, send_local_reply, set_filter_state, Action, BodyBuffer,
    Counter, Filter, Headers, Histogram, HoldsRequestBody, HttpFilter,
};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
llm_host::wasm_module!(GuardFilter);

/// Metrics of one remote check.
struct CheckMetrics {
    passed: Option<Counter>,
    flagged: Option<Counter>,
    errors: Option<Counter>,
    duration: Option<Histogram>,
    /// Whether the service failed last time (this worker): one log line per outage.
    down: Cell<bool>,
}

pub struct GuardFilter {
    guard: Guard,
    checks: HashMap<String, CheckMetrics>,
    /// `llm_guard_requests_total{direction,result}`.
    outcomes: HashMap<(&'static str, &'static str), Option<Counter>>,
    /// `llm_guard_findings_total{guard,category,action}`, defined on first use (categories come
    /// from the rule set, the config and the services' fixed category lists: a bounded set).
    findings: RefCell<HashMap<String, Option<Counter>>>,
}

const DIRECTIONS: [&str; 2] = ["request", "response"];
/// `unchecked`: an answer the provider compressed although asked not to (not readable).
const RESULTS: [&str; 4] = ["pass", "flagged", "blocked", "unchecked"];

impl Filter for GuardFilter {
    const NAME: &'static str = "llm_guard";
    type Config = GuardConfig;

    fn from_config(config: GuardConfig) -> Result<Self, ConfigError> {
        let guard = Guard::compile(config, &|name| std::env::var(name).ok())?;
        let checks = guard
            .checks()
            .map(|check| {
                let counter = |result: &str| {
                    Counter::define(&labeled_name(
                        "llm_guard_checks_total",
                        &[("guard", &check.name), ("result", result)],
                    ))
                };
                let metrics = CheckMetrics {
                    passed: counter("pass"),
                    flagged: counter("flagged"),
                    errors: counter("error"),
                    duration: Histogram::define(&labeled_name(
                        "llm_guard_callout_duration_ms",
                        &[("guard", &check.name)],
                    )),
                    down: Cell::new(false),
                };
                (check.name.clone(), metrics)
            })
            .collect();
        let mut outcomes = HashMap::new();
        for direction in DIRECTIONS {
            for result in RESULTS {
                outcomes.insert(
                    (direction, result),
                    Counter::define(&labeled_name(
                        "llm_guard_requests_total",
                        &[("direction", direction), ("result", result)],
                    )),
                );
            }
        }
        Ok(GuardFilter {
            guard,
            checks,
            outcomes,
            findings: RefCell::new(HashMap::new()),
        })
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(GuardStream {
            filter: Rc::clone(self),
            flavor: ApiFlavor::OpenAi,
            consumer: String::new(),
            model: String::new(),
            body: BodyBuffer::default(),
            inference: false,
            responses_api: false,
            response_size: 0,
            answer_flagged: false,
            pending: Vec::new(),
            noted: Vec::new(),
            done: false,
            response: Response::Pass,
            last_user_text: String::new(),
            answer_pending: Vec::new(),
            ready: Vec::new(),
            held_end: None,
        })
    }
}

impl GuardFilter {
    fn count_outcome(&self, direction: &'static str, result: &'static str) {
        if let Some(Some(counter)) = self.outcomes.get(&(direction, result)) {
            counter.increment(1);
        }
    }

    fn count_finding(&self, finding: &Finding) {
        // An injection names every rule it matched; the metric names the first one found.
        let category = finding.category.split('+').next().unwrap_or_default();
        let name = labeled_name(
            "llm_guard_findings_total",
            &[
                ("guard", &finding.guard),
                ("category", category),
                ("action", finding.action.as_str()),
            ],
        );
        let known = self.findings.borrow().get(&name).copied();
        let counter = match known {
            Some(counter) => counter,
            None => {
                let counter = Counter::define(&name);
                self.findings.borrow_mut().insert(name, counter);
                counter
            }
        };
        if let Some(counter) = counter {
            counter.increment(1);
        }
    }

    fn check_metrics(&self, check: &Check) -> Option<&CheckMetrics> {
        self.checks.get(&check.name)
    }
}

/// A remote check in flight.
struct Pending {
    token: u32,
    check: String,
    action: GuardAction,
    started_ns: u64,
}

enum Response {
    Pass,
    /// Held to the end, then checked.
    Json,
    /// Complete and held in Envoy's buffer (`size` bytes) while remote checks look at it.
    JsonChecking {
        json: Value,
        size: usize,
    },
    Stream(Box<StreamGuard>),
}

struct GuardStream {
    filter: Rc<GuardFilter>,
    flavor: ApiFlavor,
    consumer: String,
    model: String,
    body: BodyBuffer,
    /// An inference request whose body this filter checked.
    inference: bool,
    /// `/v1/responses`: its streams have their own events.
    responses_api: bool,
    /// The response body bytes held for this filter at its last body callback.
    response_size: usize,
    /// A monitor finding on the answer.
    answer_flagged: bool,
    pending: Vec<Pending>,
    /// Findings of `monitor` guards, reported on the response.
    noted: Vec<Finding>,
    /// The request was blocked (or answered): nothing more to do.
    done: bool,
    response: Response,
    /// The last user text of the request: a classifier judges an answer in its context.
    last_user_text: String,
    /// Remote checks of the answer in flight.
    answer_pending: Vec<Pending>,
    /// Stream bytes a check released between chunks: they go out with the next chunk.
    ready: Vec<u8>,
    /// The stream ended while checks were out: what Envoy holds of its end.
    held_end: Option<Vec<u8>>,
}

impl GuardStream {
    fn policy(&self) -> Policy<'_> {
        self.filter.guard.policy(&self.model, &self.consumer)
    }

    /// Records a finding; returns whether it blocks.
    fn note(&mut self, finding: Finding) -> bool {
        self.filter.count_finding(&finding);
        if finding.action == GuardAction::Block {
            return true;
        }
        log::info!(
            "llm_guard: flagged (monitor) a request of consumer {:?}: {}",
            self.consumer,
            finding.label()
        );
        if !self.noted.contains(&finding) {
            self.noted.push(finding);
        }
        false
    }

    fn block(&mut self, finding: &Finding) -> Action {
        log::info!(
            "llm_guard: blocked a request of consumer {:?}: {}",
            self.consumer,
            finding.label()
        );
        self.done = true;
        self.pending.clear();
        self.filter.count_outcome("request", "blocked");
        set_filter_state(state::GUARD, &format!("blocked {}", finding.label()));
        send_local_reply(&block_reply(self.flavor, finding));
        Action::Pause
    }

    /// A check that failed with `on_error: deny`: the request is refused as unavailable (503), not
    /// as a policy violation, since nothing was found.
    fn refuse_unchecked(&mut self, check: &str) {
        self.done = true;
        self.pending.clear();
        self.filter.count_outcome("request", "blocked");
        set_filter_state(state::GUARD, &format!("blocked {check}:unavailable"));
        let mut reply = error_reply(
            self.flavor,
            ErrorKind::Unavailable,
            &format!("The gateway's content check {check} is unavailable, and this request may not go out unchecked. Retry later."),
            ErrorDetail {
                code: Some("guard_unavailable"),
                param: None,
            },
        );
        reply
            .headers
            .push((GUARD_HEADER.to_string(), "blocked".to_string()));
        send_local_reply(&reply);
    }

    fn passed(&mut self) -> Action {
        let result = if self.noted.is_empty() {
            "pass"
        } else {
            "flagged"
        };
        self.filter.count_outcome("request", result);
        let value = if self.noted.is_empty() {
            "pass".to_string()
        } else {
            format!("flagged {}", self.labels())
        };
        set_filter_state(state::GUARD, &value);
        Action::Continue
    }

    fn labels(&self) -> String {
        self.noted
            .iter()
            .map(Finding::label)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn on_body(&mut self, size: usize) -> Action {
        let body = llm_host::read_request_body(size);
        let Ok(json) = serde_json::from_slice::<Value>(&body) else {
            // llm_router answers malformed bodies first; alone, a body it cannot read is refused.
            self.done = true;
            send_local_reply(&error_reply(
                self.flavor,
                ErrorKind::InvalidRequest,
                "The request body is not valid JSON.",
                ErrorDetail::default(),
            ));
            return Action::Pause;
        };
        // Policies name models as clients do (llm_router's header); alone, the body's.
        if self.model.is_empty() {
            if let Some(model) = json.get("model").and_then(Value::as_str) {
                self.model = model.to_string();
            }
        }
        let request = extract(&json);
        if let Some(last) = request.segments.iter().rev().find(|s| s.role == Role::User) {
            // Context for a classifier judging the answer: the question's end is enough.
            let skip = last.chars.saturating_sub(2_000);
            self.last_user_text = last.text.chars().skip(skip).collect();
        }
        let filter = Rc::clone(&self.filter);
        let policy = filter.guard.policy(&self.model, &self.consumer);
        self.inference = true;
        if policy.checks_responses() {
            // Answers are read: they must come back uncompressed.
            llm_host::set_request_header("accept-encoding", None);
        }
        if !policy.response_checks.is_empty() {
            // llm_cache stores an answer before this filter's remote checks see it (responses
            // pass the cache first), and a cached answer is replayed without them: such answers
            // are neither stored nor served from a cache.
            llm_host::set_request_header("cache-control", Some("no-store"));
        }
        for finding in filter.guard.check_request(&policy, &request) {
            if self.note(finding.clone()) {
                return self.block(&finding);
            }
        }
        self.call_checks(&policy, &request)
    }

    /// Sends every remote check of the request at once; held until all have answered.
    fn call_checks(&mut self, policy: &Policy<'_>, request: &Extracted) -> Action {
        for (check, action) in &policy.checks {
            let Some(body) = check.request_body(&request.segments) else {
                continue;
            };
            match send(check, *action, &body) {
                Ok(pending) => self.pending.push(pending),
                Err(why) => {
                    if self.check_failed(check, &why) {
                        self.refuse_unchecked(&check.name);
                        return Action::Pause;
                    }
                }
            }
        }
        if self.pending.is_empty() {
            return self.passed();
        }
        Action::Pause
    }

    /// Counts and logs a failed check (once per outage); true when its `on_error` refuses.
    fn check_failed(&self, check: &Check, why: &str) -> bool {
        if let Some(metrics) = self.filter.check_metrics(check) {
            bump(metrics.errors);
            if !metrics.down.replace(true) {
                log::warn!(
                    "llm_guard: check {} failing ({why}); on_error: {}",
                    check.name,
                    match check.on_error {
                        OnError::Allow => "allow (requests go on unchecked)",
                        OnError::Deny => "deny (requests are refused)",
                    }
                );
            }
        }
        check.on_error == OnError::Deny
    }

    /// Reads a check's answer (`pending`, taken from its list): timed, counted, and an outage or
    /// its end logged. `None`: a call this filter does not know.
    fn judge(&self, pending: &Pending, answer: Option<&HttpAnswer>) -> Option<Judged> {
        let filter = Rc::clone(&self.filter);
        let check = filter.guard.checks().find(|c| c.name == pending.check)?;
        let metrics = filter.check_metrics(check);
        if let Some(histogram) = metrics.and_then(|m| m.duration) {
            let elapsed = llm_host::now_unix_nanos().saturating_sub(pending.started_ns);
            histogram.record(elapsed / 1_000_000);
        }
        let status = answer.map(|a| a.status);
        let judged = match check.outcome(status, answer.map_or(&[][..], |a| &a.body)) {
            Outcome::Failed(why) => Judged::Failed {
                deny: self.check_failed(check, &why),
            },
            outcome => {
                if let Some(metrics) = metrics {
                    let flagged = matches!(outcome, Outcome::Flagged(_));
                    bump(if flagged {
                        metrics.flagged
                    } else {
                        metrics.passed
                    });
                    if metrics.down.replace(false) {
                        log::info!("llm_guard: check {} answers again", check.name);
                    }
                }
                match outcome {
                    Outcome::Flagged(category) => {
                        Judged::Flagged(Finding::new(&check.name, &category, pending.action))
                    }
                    _ => Judged::Pass,
                }
            }
        };
        Some(judged)
    }

    fn on_check_answer(&mut self, token: u32, answer: Option<&HttpAnswer>) {
        let Some(at) = self.pending.iter().position(|p| p.token == token) else {
            return;
        };
        let pending = self.pending.swap_remove(at);
        match self.judge(&pending, answer) {
            None | Some(Judged::Pass) => {}
            Some(Judged::Flagged(finding)) => {
                if self.note(finding.clone()) {
                    // The first block answers; the other calls end with the stream.
                    self.block(&finding);
                    return;
                }
            }
            Some(Judged::Failed { deny }) => {
                if deny {
                    self.refuse_unchecked(&pending.check);
                    return;
                }
            }
        }
        if self.pending.is_empty() && !self.done {
            self.passed();
            llm_host::resume_request();
        }
    }

    /// Checks an answer's text (a JSON answer, or a window of a stream): local patterns first,
    /// then the remote checks of answers, sent together.
    fn check_answer_text(&mut self, text: &str) -> AnswerVerdict {
        let filter = Rc::clone(&self.filter);
        let policy = filter.guard.policy(&self.model, &self.consumer);
        for finding in filter.guard.check_answer(&policy, text) {
            filter.count_finding(&finding);
            if finding.action == GuardAction::Block {
                return AnswerVerdict::Blocked(finding);
            }
            self.note_answer(finding);
        }
        for (check, action) in &policy.response_checks {
            let Some(body) = check.answer_body(Some(&self.last_user_text), text) else {
                continue;
            };
            match send(check, *action, &body) {
                Ok(pending) => self.answer_pending.push(pending),
                Err(why) => {
                    if self.check_failed(check, &why) {
                        self.answer_pending.clear();
                        let finding = Finding::new(&check.name, "unavailable", GuardAction::Block);
                        return AnswerVerdict::Blocked(finding);
                    }
                }
            }
        }
        if self.answer_pending.is_empty() {
            AnswerVerdict::Pass
        } else {
            AnswerVerdict::Waiting
        }
    }

    /// A finding on an answer in monitor mode: counted and logged (the headers are gone).
    fn note_answer(&mut self, finding: Finding) {
        self.answer_flagged = true;
        log::info!(
            "llm_guard: flagged (monitor) an answer to consumer {:?}: {}",
            self.consumer,
            finding.label()
        );
    }

    /// An answer went out whole: `flagged` if a monitor finding was made, else `pass`.
    fn count_answer_passed(&self) {
        let result = if self.answer_flagged {
            "flagged"
        } else {
            "pass"
        };
        self.filter.count_outcome("response", result);
    }

    fn answer_blocked(&self, finding: &Finding) {
        log::info!(
            "llm_guard: cut an answer to consumer {:?}: {}",
            self.consumer,
            finding.label()
        );
        self.filter.count_outcome("response", "blocked");
        let mut value = format!("blocked answer {}", finding.label());
        if !self.noted.is_empty() {
            value.push_str(&format!("; flagged {}", self.labels()));
        }
        set_filter_state(state::GUARD, &value);
    }

    /// The complete JSON answer is held (`size` bytes): check it.
    fn finish_json(&mut self, body: Vec<u8>, size: usize) -> Action {
        let Ok(json) = serde_json::from_slice::<Value>(&body) else {
            return Action::Continue;
        };
        match self.check_answer_text(&guard::answer_text(&json)) {
            AnswerVerdict::Pass => {
                self.count_answer_passed();
                Action::Continue
            }
            AnswerVerdict::Blocked(finding) => {
                self.answer_blocked(&finding);
                if let Some(filtered) = filtered_answer(&json) {
                    llm_host::replace_response_body(size, &filtered);
                }
                Action::Continue
            }
            AnswerVerdict::Waiting => {
                // Held in Envoy's buffer until the checks answer.
                self.response = Response::JsonChecking { json, size };
                Action::Pause
            }
        }
    }

    /// Runs the stream's due windows through the checks; returns the bytes to release now.
    fn check_windows(&mut self, stream: &mut StreamGuard) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(window) = stream.take_window() {
            match self.check_answer_text(&window) {
                AnswerVerdict::Pass => out.extend(stream.approve()),
                AnswerVerdict::Blocked(finding) => {
                    self.answer_blocked(&finding);
                    out.extend(stream.block(&answer_block_message(&finding)));
                }
                // The window stays held; its checks' answers release or cut it.
                AnswerVerdict::Waiting => break,
            }
        }
        out
    }

    fn stream_chunk(&mut self, size: usize, end_of_stream: bool) -> Action {
        let Response::Stream(mut stream) = std::mem::replace(&mut self.response, Response::Pass)
        else {
            return Action::Continue;
        };
        let chunk = llm_host::read_response_body(size);
        let mut out = std::mem::take(&mut self.ready);
        out.extend(stream.push(&chunk));
        if end_of_stream {
            out.extend(stream.end());
        }
        if !stream.checking() {
            out.extend(self.check_windows(&mut stream));
        }
        llm_host::replace_response_body(size, &out);
        let waiting = !self.answer_pending.is_empty();
        if end_of_stream && !stream.blocked() && !waiting {
            self.count_answer_passed();
        }
        self.response = Response::Stream(stream);
        if end_of_stream && waiting {
            // The end waits in Envoy's buffer (what was just written) for the last checks.
            self.held_end = Some(out);
            return Action::Pause;
        }
        Action::Continue
    }

    /// An answer of a check of the response.
    fn on_answer_check(&mut self, token: u32, answer: Option<&HttpAnswer>) {
        let Some(at) = self.answer_pending.iter().position(|p| p.token == token) else {
            return;
        };
        let pending = self.answer_pending.swap_remove(at);
        let blocking = match self.judge(&pending, answer) {
            None | Some(Judged::Pass) => None,
            Some(Judged::Flagged(finding)) => {
                self.filter.count_finding(&finding);
                if finding.action == GuardAction::Block {
                    Some(finding)
                } else {
                    self.note_answer(finding);
                    None
                }
            }
            Some(Judged::Failed { deny }) => {
                deny.then(|| Finding::new(&pending.check, "unavailable", GuardAction::Block))
            }
        };
        if let Some(finding) = &blocking {
            // The first block decides; the other calls' answers are ignored.
            self.answer_pending.clear();
            self.answer_blocked(finding);
        } else if !self.answer_pending.is_empty() {
            return;
        }
        match std::mem::replace(&mut self.response, Response::Pass) {
            Response::JsonChecking { json, size } => {
                match &blocking {
                    Some(_) => {
                        if let Some(filtered) = filtered_answer(&json) {
                            llm_host::replace_response_body(size, &filtered);
                        }
                    }
                    None => self.count_answer_passed(),
                }
                llm_host::resume_response();
            }
            Response::Stream(mut stream) => {
                let mut out = match &blocking {
                    Some(finding) => stream.block(&answer_block_message(finding)),
                    None => stream.approve(),
                };
                if blocking.is_none() {
                    out.extend(self.check_windows(&mut stream));
                }
                let waiting = !self.answer_pending.is_empty();
                match self.held_end.take() {
                    Some(mut held) if !waiting => {
                        // The stream had ended: complete what Envoy holds, and let it go.
                        let held_len = held.len();
                        held.extend(out);
                        llm_host::replace_response_body(held_len, &held);
                        if !stream.blocked() {
                            self.count_answer_passed();
                        }
                        llm_host::resume_response();
                    }
                    Some(mut held) => {
                        let held_len = held.len();
                        held.extend(out);
                        llm_host::replace_response_body(held_len, &held);
                        self.held_end = Some(held);
                    }
                    // Released with the next chunk.
                    None => self.ready.extend(out),
                }
                self.response = Response::Stream(stream);
            }
            other => self.response = other,
        }
    }
}

/// A remote check's answer, read.
enum Judged {
    Pass,
    Flagged(Finding),
    /// The service failed; `deny`: its `on_error` refuses.
    Failed {
        deny: bool,
    },
}

/// What the checks say of an answer's text.
enum AnswerVerdict {
    Pass,
    Blocked(Finding),
    /// Remote checks are out.
    Waiting,
}

fn bump(counter: Option<Counter>) {
    if let Some(counter) = counter {
        counter.increment(1);
    }
}

/// Calls `check` with `body`; the call in flight, timed from now.
fn send(check: &Check, action: GuardAction, body: &[u8]) -> Result<Pending, String> {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(authorization) = &check.authorization {
        headers.push(("authorization", authorization));
    }
    let call = HttpCall {
        cluster: &check.cluster,
        authority: &check.authority,
        method: "POST",
        path: &check.path,
        headers: &headers,
        body,
        timeout: check.timeout,
    };
    llm_host::current().http_call(&call).map(|token| Pending {
        token,
        check: check.name.clone(),
        action,
        started_ns: llm_host::now_unix_nanos(),
    })
}

impl HttpFilter for GuardStream {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let Endpoint::Inference(flavor) = classify(method, path) else {
            return Action::Continue;
        };
        if end_of_stream {
            return Action::Continue;
        }
        self.flavor = flavor;
        self.responses_api = path.split('?').next() == Some("/v1/responses");
        self.consumer = headers
            .get(contract::CONSUMER)
            .unwrap_or_default()
            .to_string();
        self.model = headers.get(contract::MODEL).unwrap_or_default().to_string();
        // Nothing leaves before it is checked (needs allow_on_headers_stop_iteration).
        self.body.start();
        Action::Pause
    }

    fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        request_body(self, size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        request_trailers(self)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        // Only answers to inference requests this filter let through.
        if self.done || !self.inference {
            return Action::Continue;
        }
        let headers = Headers::response();
        if !self.noted.is_empty() {
            llm_host::set_response_header(GUARD_HEADER, Some("flagged"));
            llm_host::set_response_header(FINDINGS_HEADER, Some(&self.labels()));
        }
        let policy = self.policy();
        if !policy.checks_responses() || headers.get(":status") != Some("200") {
            return Action::Continue;
        }
        if headers
            .get("content-encoding")
            .is_some_and(|e| !e.eq_ignore_ascii_case("identity"))
        {
            // Asked uncompressed; a provider that compresses anyway cannot be read: counted.
            self.filter.count_outcome("response", "unchecked");
            log::warn!(
                "llm_guard: an answer came compressed although asked not to; it was not checked"
            );
            return Action::Continue;
        }
        let content_type = headers.get("content-type").unwrap_or_default();
        let (stream, window, max) = (
            policy.stream,
            policy.window_chars,
            self.filter.guard.max_scan_chars(),
        );
        self.response = if content_type.starts_with("text/event-stream") {
            let format = match self.flavor {
                ApiFlavor::Anthropic => Format::Anthropic,
                ApiFlavor::OpenAi if self.responses_api => Format::Responses,
                ApiFlavor::OpenAi => Format::OpenAi,
            };
            Response::Stream(Box::new(StreamGuard::new(format, stream, window, max)))
        } else {
            Response::Json
        };
        // The answer may be rewritten.
        llm_host::set_response_header("content-length", None);
        Action::Continue
    }

    fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.response_size = size;
        match &self.response {
            Response::Pass | Response::JsonChecking { .. } => Action::Continue,
            Response::Json if !end_of_stream => Action::Pause,
            Response::Json => {
                let body = llm_host::read_response_body(size);
                self.response = Response::Pass;
                self.finish_json(body, size)
            }
            Response::Stream(_) => self.stream_chunk(size, end_of_stream),
        }
    }

    fn on_response_trailers(&mut self) -> Action {
        // A body followed by trailers never saw end_of_stream: a held JSON answer ends here.
        match &self.response {
            Response::Json => {
                let body = llm_host::read_response_body(self.response_size);
                self.response = Response::Pass;
                self.finish_json(body, self.response_size)
            }
            _ => Action::Continue,
        }
    }

    fn on_http_response(&mut self, token: u32, answer: Option<&HttpAnswer>) {
        if self.answer_pending.iter().any(|p| p.token == token) {
            self.on_answer_check(token, answer);
        } else {
            self.on_check_answer(token, answer);
        }
    }
}

impl HoldsRequestBody for GuardStream {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        self.on_body(size)
    }
}

#[cfg(test)]
mod tests;
