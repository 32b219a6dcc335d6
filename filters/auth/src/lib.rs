//! `llm_auth`: caller authentication, per-model access and request rate limits.
//!
//! Thin glue: the decisions live in `llm_core::auth`. See README.md for the configuration reference.

use llm_core::api::{
    classify, error_reply, ApiFlavor, Endpoint, ErrorDetail, ErrorKind, LocalReply,
};
use llm_core::auth::{
    bucket_key, filter_model_list, model_not_allowed, model_not_visible, rate_limited, Auth,
    AuthConfig, AuthMethod, Credentials, CREDENTIAL_HEADERS,
};
use llm_core::config::ConfigError;
use llm_core::contract::{self, state};
use llm_core::global::{self, GlobalLimit, OnServiceError};
use llm_core::metrics::labeled_name;
use llm_core::ratelimit::{limit_headers, LimitUnit, Outcome};
use llm_core::request::{body_error_reply, missing_model_reply, read_fields};
use llm_host::{
    call_rate_limit_service, ensure_bucket, now_unix_nanos, request_body, request_trailers,
    response_header, send_local_reply, set_filter_state, take_from_bucket, Action, BodyBuffer,
    Counter, Filter, Headers, HoldsRequestBody, HttpFilter,
};
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
llm_host::wasm_module!(AuthFilter);

pub struct AuthFilter {
    auth: Auth,
    /// `llm_auth_rejected_total{reason=...}`.
    rejected: HashMap<&'static str, Counter>,
    /// `llm_auth_requests_total{method=...}`: authenticated requests.
    accepted: HashMap<&'static str, Counter>,
    /// `llm_global_limit_errors_total{filter="auth",action=allow|deny}`: the service could not answer.
    service_errors: HashMap<OnServiceError, Counter>,
}

impl Filter for AuthFilter {
    const NAME: &'static str = "llm_auth";
    type Config = AuthConfig;

    fn from_config(config: AuthConfig) -> Result<Self, ConfigError> {
        let auth = Auth::compile(config)?;
        for (consumer, limit) in auth.api_key_limits() {
            ensure_bucket(&bucket_key(AuthMethod::ApiKey, consumer), &limit);
        }
        let mut rejected = HashMap::new();
        for reason in [
            "unauthenticated",
            "model_not_allowed",
            "rate_limited",
            "invalid_request",
            "unavailable",
        ] {
            let name = labeled_name("llm_auth_rejected_total", &[("reason", reason)]);
            if let Some(counter) = Counter::define(&name) {
                rejected.insert(reason, counter);
            }
        }
        let mut accepted = HashMap::new();
        for method in [AuthMethod::ApiKey, AuthMethod::Jwt] {
            let name = labeled_name("llm_auth_requests_total", &[("kind", method.as_str())]);
            if let Some(counter) = Counter::define(&name) {
                accepted.insert(method.as_str(), counter);
            }
        }
        let mut service_errors = HashMap::new();
        for (action, label) in [
            (OnServiceError::Allow, "allow"),
            (OnServiceError::Deny, "deny"),
        ] {
            let name = labeled_name(
                "llm_global_limit_errors_total",
                &[("filter", "auth"), ("action", label)],
            );
            if let Some(counter) = Counter::define(&name) {
                service_errors.insert(action, counter);
            }
        }
        Ok(AuthFilter {
            auth,
            rejected,
            accepted,
            service_errors,
        })
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(AuthRequest {
            filter: Rc::clone(self),
            flavor: ApiFlavor::OpenAi,
            caller: None,
            body: BodyBuffer::default(),
            outcome: None,
            filter_model_list: false,
            pending_check: None,
        })
    }
}

/// Who is calling, kept for the body phase and the response.
struct Caller {
    name: String,
    method: AuthMethod,
    grant_id: usize,
}

struct AuthRequest {
    filter: Rc<AuthFilter>,
    flavor: ApiFlavor,
    caller: Option<Caller>,
    /// Held to check the model against a restricted allow-list.
    body: BodyBuffer,
    /// The rate-limit decision, echoed in the response headers.
    outcome: Option<Outcome>,
    /// `GET /v1/models` by a consumer with an allow-list: the list is trimmed to what it may use.
    filter_model_list: bool,
    /// The global limit being checked by the rate-limit service, and the call's token.
    pending_check: Option<(u32, GlobalLimit)>,
}

impl AuthRequest {
    fn reject(&self, reason: &'static str, reply: &LocalReply) -> Action {
        if let Some(counter) = self.filter.rejected.get(reason) {
            counter.increment(1);
        }
        send_local_reply(reply);
        Action::Pause
    }

    /// A string claim of the JWT that `jwt_authn` verified, from its metadata. Non-string claims
    /// (lists, objects, numbers) read as absent; the SDK's `get_property` would panic on some of them.
    fn claim(&self, name: &str) -> Option<String> {
        let path = self.filter.auth.jwt_claim_path(name)?;
        let bytes = llm_host::property(&path)?;
        String::from_utf8(bytes).ok().filter(|v| !v.is_empty())
    }

    /// Charges the consumer's request bucket; continues, or answers 429.
    fn admit(&mut self) -> Action {
        let Some(caller) = &self.caller else {
            return Action::Continue;
        };
        let filter = Rc::clone(&self.filter);
        let grant = filter.auth.grant(caller.grant_id);
        if let (Some(global), Some(service)) = (
            grant.and_then(|g| g.global_limit.as_ref()),
            &filter.auth.service,
        ) {
            let descriptor = global.descriptor(&caller.name, 1);
            return match call_rate_limit_service(service, vec![descriptor]) {
                Ok(token) => {
                    self.pending_check = Some((token, global.clone()));
                    Action::Pause
                }
                Err(status) => self.service_error(global.on_error, &format!("{status:?}")),
            };
        }
        let Some(limit) = grant.and_then(|g| g.rate_limit) else {
            return Action::Continue;
        };
        let key = bucket_key(caller.method, &caller.name);
        match take_from_bucket(&key, &limit, now_unix_nanos(), 1) {
            Some(outcome) if outcome.allowed => {
                self.outcome = Some(outcome);
                Action::Continue
            }
            Some(outcome) => {
                let reply = rate_limited(self.flavor, &caller.name, &outcome);
                self.reject("rate_limited", &reply)
            }
            // Auth fails closed: without a working limiter the request does not go through.
            None => self.limiter_unavailable(),
        }
    }

    /// 503: the rate limit could not be checked.
    fn limiter_unavailable(&self) -> Action {
        let reply = error_reply(
            self.flavor,
            ErrorKind::Unavailable,
            "The gateway could not check your rate limit. Retry shortly.",
            ErrorDetail::default(),
        );
        self.reject("unavailable", &reply)
    }

    /// The rate-limit service could not answer: the limit's `on_service_error` decides.
    fn service_error(&mut self, on_error: OnServiceError, why: &str) -> Action {
        if let Some(counter) = self.filter.service_errors.get(&on_error) {
            counter.increment(1);
        }
        log::warn!(
            "llm_auth: rate-limit service unavailable ({why}); on_service_error={on_error:?}"
        );
        match on_error {
            OnServiceError::Allow => Action::Continue,
            OnServiceError::Deny => self.limiter_unavailable(),
        }
    }

    /// The body is complete: check the model against the allow-list, then the rate limit.
    fn check_model(&mut self, body_size: usize) -> Action {
        let body = llm_host::read_request_body(body_size);
        let fields = match read_fields(&body) {
            Ok(fields) => fields,
            Err(err) => {
                return self.reject("invalid_request", &body_error_reply(self.flavor, &err))
            }
        };
        let Some(model) = fields.model else {
            return self.reject("invalid_request", &missing_model_reply(self.flavor));
        };
        let filter = Rc::clone(&self.filter);
        if let Some(caller) = &self.caller {
            if let Some(grant) = filter.auth.grant(caller.grant_id) {
                if !grant.allows(&model) {
                    let reply = model_not_allowed(self.flavor, &caller.name, grant, &model);
                    return self.reject("model_not_allowed", &reply);
                }
            }
        }
        self.admit()
    }
}

impl AuthRequest {
    /// The rate-limit service's answer to this request's check.
    fn on_check_answer(&mut self, token_id: u32, status_code: u32, response: Option<&[u8]>) {
        let Some((token, limit)) = self.pending_check.take() else {
            return;
        };
        if token != token_id {
            self.pending_check = Some((token, limit));
            return;
        }
        let verdict = match status_code {
            0 => response
                .ok_or("empty response")
                .and_then(|body| global::read_response(body, 1))
                .and_then(|verdicts| verdicts.into_iter().next().ok_or("no verdict")),
            _ => Err("gRPC call failed"),
        };
        let action = match verdict {
            Ok(verdict) => {
                let outcome = global::outcome(&limit, &verdict);
                if verdict.over_limit {
                    let name = self.caller.as_ref().map_or("", |c| c.name.as_str());
                    let reply = rate_limited(self.flavor, name, &outcome);
                    self.reject("rate_limited", &reply)
                } else {
                    self.outcome = Some(outcome);
                    Action::Continue
                }
            }
            Err(why) => {
                let why = if status_code == 0 {
                    why.to_string()
                } else {
                    format!("{why}: gRPC status {status_code}")
                };
                self.service_error(limit.on_error, &why)
            }
        };
        if action == Action::Continue {
            llm_host::resume_request();
        }
    }
}

impl HttpFilter for AuthRequest {
    fn on_grpc_response(&mut self, token: u32, status: u32, body: Option<&[u8]>) {
        self.on_check_answer(token, status, body);
    }

    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        // Facts travel between filters as x-llm-* headers: none may come from the client.
        for name in headers
            .names()
            .filter(|name| name.starts_with(contract::HEADER_PREFIX))
        {
            llm_host::set_request_header(name, None);
        }
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        self.flavor = ApiFlavor::from_path(path);
        let credentials = Credentials {
            authorization: headers.get("authorization"),
            x_api_key: headers.get("x-api-key"),
            api_key: headers.get("api-key"),
        };
        let filter = Rc::clone(&self.filter);
        let claim = |name: &str| self.claim(name);
        let now_secs = now_unix_nanos() / 1_000_000_000;
        let principal = match filter
            .auth
            .authenticate(self.flavor, &credentials, &claim, now_secs)
        {
            Ok(principal) => principal,
            Err(reply) => return self.reject("unauthenticated", &reply),
        };
        // The client's credential must never reach a provider (llm_provider injects the provider's).
        for header in CREDENTIAL_HEADERS {
            if headers.contains(header) {
                llm_host::set_request_header(header, None);
            }
        }
        llm_host::set_request_header(contract::CONSUMER, Some(&principal.name));
        set_filter_state(state::CONSUMER, &principal.name);
        set_filter_state(state::AUTH_METHOD, principal.method.as_str());
        if let Some(metadata) = principal.metadata.filter(|m| !m.is_empty()) {
            if let Ok(json) = serde_json::to_string(metadata) {
                set_filter_state(state::CONSUMER_METADATA, &json);
            }
        }
        if let Some(counter) = filter.accepted.get(principal.method.as_str()) {
            counter.increment(1);
        }
        let restricted = !principal.grant.unrestricted();
        self.caller = Some(Caller {
            name: principal.name.into_owned(),
            method: principal.method,
            grant_id: principal.grant_id,
        });
        let endpoint = classify(method, path);
        if restricted {
            match endpoint {
                Endpoint::GetModel(id) => {
                    let visible = filter
                        .auth
                        .grant(principal.grant_id)
                        .is_some_and(|g| g.allows(id));
                    if !visible {
                        let name = self.caller.as_ref().map_or("", |c| c.name.as_str());
                        let reply = model_not_visible(name, id);
                        return self.reject("model_not_allowed", &reply);
                    }
                }
                Endpoint::ListModels => self.filter_model_list = true,
                _ => {}
            }
        }
        let needs_model = restricted && matches!(endpoint, Endpoint::Inference(_));
        if !needs_model {
            return self.admit();
        }
        if end_of_stream {
            let reply = body_error_reply(self.flavor, &llm_core::request::BodyError::Empty);
            return self.reject("invalid_request", &reply);
        }
        self.body.start();
        Action::Pause
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Nothing passes while the global limit is being checked (the check only starts once a
        // held body is complete, so there is nothing to finish when the answer comes).
        if self.pending_check.is_some() {
            return Action::Pause;
        }
        request_body(self, body_size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        if self.pending_check.is_some() {
            return Action::Pause;
        }
        request_trailers(self)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        if self.filter_model_list {
            let ok = response_header(":status").as_deref() == Some("200");
            self.filter_model_list = ok;
            if ok {
                llm_host::set_response_header("content-length", None);
            }
        }
        if let Some(outcome) = &self.outcome {
            for (name, value) in limit_headers(LimitUnit::Requests, outcome) {
                llm_host::set_response_header(&name, Some(&value));
            }
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.filter_model_list {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = llm_host::read_response_body(body_size);
        let filter = Rc::clone(&self.filter);
        let grant = self
            .caller
            .as_ref()
            .and_then(|c| filter.auth.grant(c.grant_id));
        if let Some(trimmed) = grant.and_then(|g| filter_model_list(&body, g)) {
            llm_host::replace_response_body(body_size, &trimmed);
        }
        Action::Continue
    }
}

impl HoldsRequestBody for AuthRequest {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        self.check_model(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_core::global::{
        DescriptorStatus, ProtoDuration, RateLimitRequest, RateLimitResponse, CODE_OK,
        CODE_OVER_LIMIT,
    };
    use llm_host::fake::{self, Stream};
    use prost::Message;

    /// The consumers of envoy/demo.yaml; the keys are sk-demo-team-a, sk-demo-team-b, sk-demo-tiny.
    const DEMO: &str = r#"{
      "consumers": [
        {"name": "team-a", "metadata": {"team": "a"},
         "keys": [{"sha256": "50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e"}],
         "models": ["*"],
         "rate_limit": {"requests": 1000, "window_seconds": 60}},
        {"name": "team-b", "metadata": {"team": "b"},
         "keys": [{"sha256": "69a1ea6aaaae03a4b28e72194a044ebc6b63cdc969d9c93e4e92af76fc2be76d"}],
         "models": ["gpt-4o-mini", "fast"],
         "rate_limit": {"requests": 300, "window_seconds": 60}},
        {"name": "tiny",
         "keys": [{"sha256": "893f74a20440edb553081b44356004410d389628c6cece575472262a851b7b3d"}],
         "models": ["*"],
         "rate_limit": {"requests": 5, "window_seconds": 60}}
      ],
      "jwt": {
        "consumer_claim": "sub",
        "policies": [
          {"claims": {"team": "research"}, "models": ["*"]},
          {"models": ["gpt-4o-mini", "fast"], "rate_limit": {"requests": 60, "window_seconds": 60}}
        ]
      }
    }"#;

    /// Global request limits: team-a's key denies when the service cannot answer, team-b's allows.
    const GLOBAL: &str = r#"{
      "rate_limit_service": {"cluster": "rls"},
      "consumers": [
        {"name": "strict",
         "keys": [{"sha256": "50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e"}],
         "rate_limit": {"requests": 2, "window_seconds": 60, "scope": "global"}},
        {"name": "lenient",
         "keys": [{"sha256": "69a1ea6aaaae03a4b28e72194a044ebc6b63cdc969d9c93e4e92af76fc2be76d"}],
         "rate_limit": {"requests": 2, "window_seconds": 60, "scope": "global",
                        "on_service_error": "allow"}}
      ]
    }"#;

    fn configure(config: &str) -> llm_host::Loaded<AuthFilter> {
        fake::reset();
        llm_host::configure::<AuthFilter>(config.as_bytes()).expect("config")
    }

    /// A chat completion request with `authorization`.
    fn chat(authorization: &str) -> Vec<(&str, &str)> {
        vec![
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-type", "application/json"),
            ("authorization", authorization),
        ]
    }

    fn state(key: &str) -> Option<String> {
        fake::with(|s| s.filter_state.get(key).cloned())
    }

    fn answer(code: i32, remaining: u32, reset_seconds: i64) -> Vec<u8> {
        RateLimitResponse {
            overall_code: code,
            statuses: vec![DescriptorStatus {
                code,
                limit_remaining: remaining,
                duration_until_reset: Some(ProtoDuration {
                    seconds: reset_seconds,
                    nanos: 0,
                }),
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    #[test]
    fn a_request_without_a_key_gets_401() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = [(":method", "POST"), (":path", "/v1/chat/completions")];
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        let reply = stream.reply().expect("401");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["error"]["code"], "invalid_api_key");
        assert!(!stream.request_forwarded());
        assert_eq!(
            fake::counter("llm_auth_rejected_total_reason=.=unauthenticated;.;"),
            1
        );
    }

    #[test]
    fn a_wrong_key_gets_401_and_the_request_never_leaves() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-c");
        stream.request(&headers, &[br#"{"model":"fast"}"#]);
        let reply = stream.reply().expect("401");
        assert_eq!(reply.status, 401);
        // The message never echoes the key.
        assert!(!reply.body.contains("sk-demo-team-c"));
        assert!(!stream.request_forwarded());
        assert!(stream.upstream_body().is_empty());
        assert_eq!(fake::request_header("x-llm-consumer"), None);
    }

    #[test]
    fn a_valid_key_publishes_the_consumer_and_removes_every_credential() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let mut headers = chat("Bearer sk-demo-team-a");
        headers.extend([
            ("x-api-key", "sk-demo-team-b"),
            ("api-key", "whatever"),
            ("x-llm-consumer", "team-b"),
            ("x-llm-route", "anthropic"),
        ]);
        // An unrestricted consumer: decided at the headers, the body is not held.
        assert_eq!(stream.request_headers(&headers, false), Action::Continue);
        assert_eq!(
            stream.request_body(br#"{"model":"gpt-4o"}"#, true),
            Action::Continue
        );
        assert_eq!(stream.upstream_body(), br#"{"model":"gpt-4o"}"#);
        assert_eq!(
            fake::request_header("x-llm-consumer").as_deref(),
            Some("team-a")
        );
        for header in ["authorization", "x-api-key", "api-key", "x-llm-route"] {
            assert_eq!(fake::request_header(header), None, "{header}");
        }
        assert_eq!(state("llm_consumer").as_deref(), Some("team-a"));
        assert_eq!(state("llm_auth_method").as_deref(), Some("api_key"));
        assert_eq!(
            state("llm_consumer_metadata").as_deref(),
            Some(r#"{"team":"a"}"#)
        );
        assert_eq!(
            fake::counter("llm_auth_requests_total_kind=.=api_key;.;"),
            1
        );
    }

    #[test]
    fn a_verified_jwt_names_a_prefixed_consumer() {
        let loaded = configure(DEMO);
        let claim = |name: &str| {
            format!("metadata.filter_metadata.envoy.filters.http.jwt_authn.jwt_payload.{name}")
        };
        fake::with(|s| {
            s.properties.insert(claim("sub"), b"alice".to_vec());
            s.properties.insert(claim("team"), b"research".to_vec());
        });
        let mut stream = Stream::new(loaded.new_stream());
        let headers = [(":method", "POST"), (":path", "/v1/chat/completions")];
        assert_eq!(stream.request_headers(&headers, false), Action::Continue);
        assert_eq!(
            fake::request_header("x-llm-consumer").as_deref(),
            Some("jwt:alice")
        );
        assert_eq!(state("llm_auth_method").as_deref(), Some("jwt"));
    }

    #[test]
    fn a_model_outside_the_allow_list_is_held_then_refused_with_403() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-b");
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(
            stream.request_body(br#"{"model":"gpt-"#, false),
            Action::Pause
        );
        assert!(stream.reply().is_none());
        assert_eq!(stream.request_body(br#"4o"}"#, true), Action::Pause);
        let reply = stream.reply().expect("403");
        assert_eq!(reply.status, 403);
        assert_eq!(reply.json()["error"]["code"], "model_not_allowed");
        let message = reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains("gpt-4o-mini, fast"), "{message}");
        assert!(stream.upstream_body().is_empty());
        assert_eq!(
            fake::counter("llm_auth_rejected_total_reason=.=model_not_allowed;.;"),
            1
        );
    }

    #[test]
    fn a_model_in_the_allow_list_passes_once_the_body_is_in() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-b");
        let body = br#"{"model":"fast","messages":[]}"#;
        assert_eq!(
            stream.request(&headers, &[&body[..10], &body[10..]]),
            Action::Continue
        );
        assert!(stream.reply().is_none());
        assert_eq!(stream.upstream_body(), body);
        assert_eq!(
            fake::request_header("x-llm-consumer").as_deref(),
            Some("team-b")
        );
    }

    #[test]
    fn a_restricted_consumer_with_an_unreadable_body_gets_400() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-b");
        stream.request(&headers, &[b"{not json"]);
        assert_eq!(stream.reply().map(|r| r.status), Some(400));
        assert!(stream.upstream_body().is_empty());
    }

    #[test]
    fn the_local_rate_limit_answers_429_after_the_limit() {
        let loaded = configure(DEMO);
        let headers = chat("Bearer sk-demo-tiny");
        let response = [(":status", "200"), ("content-type", "application/json")];
        let resets = ["12s", "24s", "36s", "48s", "1m0s"];
        for (i, reset) in (0..5u64).zip(resets) {
            let mut stream = Stream::new(loaded.new_stream());
            assert_eq!(
                stream.request_headers(&headers, false),
                Action::Continue,
                "request {i}"
            );
            stream.response_headers(&response, false);
            let remaining = fake::response_header("x-ratelimit-remaining-requests");
            assert_eq!(remaining, Some((4 - i).to_string()), "request {i}");
            assert_eq!(
                fake::response_header("x-ratelimit-limit-requests").as_deref(),
                Some("5")
            );
            assert_eq!(
                fake::response_header("x-ratelimit-reset-requests").as_deref(),
                Some(reset),
                "request {i}"
            );
        }
        let mut stream = Stream::new(loaded.new_stream());
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        let reply = stream.reply().expect("429");
        assert_eq!(reply.status, 429);
        assert_eq!(reply.json()["error"]["code"], "rate_limit_exceeded");
        let header = |name: &str| {
            reply
                .headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("retry-after").as_deref(), Some("12"));
        assert_eq!(
            header("x-ratelimit-remaining-requests").as_deref(),
            Some("0")
        );
        assert!(!stream.request_forwarded());
        assert_eq!(
            fake::counter("llm_auth_rejected_total_reason=.=rate_limited;.;"),
            1
        );
        // Another consumer's bucket is its own.
        let mut other = Stream::new(loaded.new_stream());
        let team_a = chat("Bearer sk-demo-team-a");
        assert_eq!(other.request_headers(&team_a, false), Action::Continue);
    }

    #[test]
    fn a_global_limit_holds_the_request_until_the_service_answers() {
        let loaded = configure(GLOBAL);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-a");
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        let calls = fake::with(|s| s.grpc_calls.clone());
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.service, "envoy.service.ratelimit.v3.RateLimitService");
        assert_eq!(call.method, "ShouldRateLimit");
        // GrpcService { envoy_grpc { cluster_name: "rls" } }.
        assert_eq!(call.target.as_bytes(), b"\x0a\x05\x0a\x03rls");
        let request = RateLimitRequest::decode(call.message.as_slice()).unwrap();
        assert_eq!(request.domain, "llm");
        let descriptor = &request.descriptors[0];
        let entries: Vec<(&str, &str)> = descriptor
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(entries, [("llm_limit", "requests"), ("consumer", "strict")]);
        assert_eq!(descriptor.hits_addend.map(|h| h.value), Some(1));
        assert_eq!(descriptor.limit.map(|l| l.requests_per_unit), Some(2));

        // The body arrives while the check is out: nothing passes.
        assert_eq!(stream.request_body(body, true), Action::Pause);
        assert!(stream.upstream_body().is_empty());
        stream.grpc_response(call.token + 1, 0, Some(&answer(CODE_OK, 1, 60)));
        assert_eq!(fake::with(|s| s.resumes), 0, "not this request's call");

        stream.grpc_response(call.token, 0, Some(&answer(CODE_OK, 1, 60)));
        assert_eq!(fake::with(|s| s.resumes), 1);
        assert!(stream.reply().is_none());
        assert_eq!(stream.upstream_body(), body);
        assert_eq!(fake::request_header("authorization"), None);
        stream.response_headers(&[(":status", "200")], false);
        assert_eq!(
            fake::response_header("x-ratelimit-limit-requests").as_deref(),
            Some("2")
        );
        assert_eq!(
            fake::response_header("x-ratelimit-remaining-requests").as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_global_over_limit_answer_gets_429() {
        let loaded = configure(GLOBAL);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-a");
        stream.request(&headers, &[br#"{"model":"gpt-4o"}"#]);
        let token = fake::with(|s| s.grpc_calls[0].token);
        stream.grpc_response(token, 0, Some(&answer(CODE_OVER_LIMIT, 0, 30)));
        let reply = stream.reply().expect("429");
        assert_eq!(reply.status, 429);
        assert!(reply
            .headers
            .contains(&("retry-after".to_string(), "30".to_string())));
        assert_eq!(fake::with(|s| s.resumes), 0);
        assert!(stream.upstream_body().is_empty());
        assert_eq!(
            fake::counter("llm_auth_rejected_total_reason=.=rate_limited;.;"),
            1
        );
    }

    #[test]
    fn a_failed_global_check_denies_with_503_when_configured_to() {
        let loaded = configure(GLOBAL);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-a");
        stream.request(&headers, &[br#"{"model":"gpt-4o"}"#]);
        let token = fake::with(|s| s.grpc_calls[0].token);
        stream.grpc_response(token, 14, None); // UNAVAILABLE
        assert_eq!(stream.reply().map(|r| r.status), Some(503));
        assert_eq!(fake::with(|s| s.resumes), 0);
        assert!(stream.upstream_body().is_empty());
        assert_eq!(
            fake::counter("llm_global_limit_errors_total_filter=.=auth;.;_action=.=deny;.;"),
            1
        );
    }

    #[test]
    fn a_failed_global_check_lets_the_request_through_when_configured_to() {
        let loaded = configure(GLOBAL);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-b");
        let body = br#"{"model":"gpt-4o"}"#;
        stream.request(&headers, &[body]);
        let token = fake::with(|s| s.grpc_calls[0].token);
        // An answer that does not decode is a failure too.
        stream.grpc_response(token, 0, Some(b"\xff\xff"));
        assert!(stream.reply().is_none());
        assert_eq!(fake::with(|s| s.resumes), 1);
        assert_eq!(stream.upstream_body(), body);
        assert_eq!(
            fake::counter("llm_global_limit_errors_total_filter=.=auth;.;_action=.=allow;.;"),
            1
        );
    }

    #[test]
    fn a_global_limit_whose_service_cannot_be_called_fails_closed_at_once() {
        let loaded = configure(GLOBAL);
        fake::with(|s| s.grpc_unavailable = true);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = chat("Bearer sk-demo-team-a");
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(stream.reply().map(|r| r.status), Some(503));
    }

    #[test]
    fn a_restricted_consumer_sees_only_its_models() {
        let loaded = configure(DEMO);
        let mut stream = Stream::new(loaded.new_stream());
        let headers = [
            (":method", "GET"),
            (":path", "/v1/models"),
            ("authorization", "Bearer sk-demo-team-b"),
        ];
        assert_eq!(stream.request_headers(&headers, true), Action::Continue);
        let list = br#"{"object":"list","data":[{"id":"gpt-4o-mini"},{"id":"fast"},{"id":"gpt-4o"},{"id":"claude-sonnet-4-5"}]}"#;
        let length = list.len().to_string();
        let response = [(":status", "200"), ("content-length", length.as_str())];
        assert_eq!(stream.response_headers(&response, false), Action::Continue);
        assert_eq!(fake::response_header("content-length"), None);
        assert_eq!(stream.response_body(&list[..30], false), Action::Pause);
        assert_eq!(stream.response_body(&list[30..], true), Action::Continue);
        let got: serde_json::Value = serde_json::from_slice(stream.client_body()).unwrap();
        let ids: Vec<&str> = got["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["gpt-4o-mini", "fast"]);

        // Another model is not even visible.
        let mut stream = Stream::new(loaded.new_stream());
        let headers = [
            (":method", "GET"),
            (":path", "/v1/models/gpt-4o"),
            ("authorization", "Bearer sk-demo-team-b"),
        ];
        assert_eq!(stream.request_headers(&headers, true), Action::Pause);
        assert_eq!(stream.reply().map(|r| r.status), Some(404));
    }
}
