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
use llm_core::global::{self, GlobalLimit, OnServiceError};
use llm_core::metrics::labeled_name;
use llm_core::ratelimit::{limit_headers, LimitUnit, Outcome};
use llm_core::request::{body_error_reply, missing_model_reply, read_fields};
use llm_host::{
    call_rate_limit_service, ensure_bucket, grpc_response_body, now_unix_nanos, request_body,
    request_trailers, response_header, send_local_reply, set_filter_state, take_from_bucket,
    BodyBuffer, Counter, Filter, Headers, HoldsRequestBody,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
proxy_wasm::main! {{
    llm_host::register::<AuthFilter>();
}}

/// The header this filter publishes; every client-sent `x-llm-*` header is deleted first.
const CONSUMER_HEADER: &str = "x-llm-consumer";

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

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
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
        let bytes = proxy_wasm::hostcalls::get_property(path.to_vec()).ok()??;
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

impl Context for AuthRequest {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let Some((token, limit)) = self.pending_check.take() else {
            return;
        };
        if token != token_id {
            self.pending_check = Some((token, limit));
            return;
        }
        let verdict = match status_code {
            0 => grpc_response_body(response_size)
                .ok_or("empty response")
                .and_then(|body| global::read_response(&body, 1))
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

impl HttpContext for AuthRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        // Facts travel between filters as x-llm-* headers: none may come from the client.
        for name in headers.names().filter(|name| name.starts_with("x-llm-")) {
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
        llm_host::set_request_header(CONSUMER_HEADER, Some(&principal.name));
        set_filter_state("llm_consumer", &principal.name);
        set_filter_state("llm_auth_method", principal.method.as_str());
        if let Some(metadata) = principal.metadata.filter(|m| !m.is_empty()) {
            if let Ok(json) = serde_json::to_string(metadata) {
                set_filter_state("llm_consumer_metadata", &json);
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

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // Nothing passes while the global limit is being checked (the check only starts once a
        // held body is complete, so there is nothing to finish when the answer comes).
        if self.pending_check.is_some() {
            return Action::Pause;
        }
        request_body(self, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.pending_check.is_some() {
            return Action::Pause;
        }
        request_trailers(self)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
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

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
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
