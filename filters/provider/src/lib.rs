//! `llm_provider`: the upstream filter adapting each attempt to its provider's wire format and
//! credentials. Thin glue: the decisions live in `llm_core::provider` and `llm_core::anthropic`.

use llm_core::config::ConfigError;
use llm_core::metrics::labeled_name;
use llm_core::provider::{
    AnswerTranslation, Attempt, AttemptOrigins, Origin, ProviderConfig, Providers,
    StreamTranslation, TokenSource,
};
use llm_core::vertex::{retry_after, token_answer, AccessToken};
use llm_host::host::{HttpAnswer, HttpCall, SharedWriteError};
use llm_host::{
    now_unix_nanos, read_shared, request_body, request_trailers, send_local_reply, Action,
    BodyBuffer, Counter, Filter, Headers, HoldsRequestBody, HttpFilter,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

llm_host::wasm_module!(ProviderFilter);

pub struct ProviderFilter {
    providers: Providers,
    /// `llm_provider_attempts_total{provider=...}`: one per attempt, so failovers show per provider.
    attempts: HashMap<String, Counter>,
    /// `llm_provider_translated_total{provider=...}`: attempts translated to another API.
    translated: HashMap<String, Counter>,
    /// The client's path and authority by request id, for the retries of a request.
    origins: RefCell<AttemptOrigins>,
    /// Vertex AI providers' access tokens, refreshed in the background (root context).
    tokens: Vec<TokenRefresh>,
    /// This root context's token requests in flight: call token → index in `tokens`. (Call
    /// tokens are numbered per Wasm VM, so they are never matched through shared data.)
    token_calls: RefCell<HashMap<u32, usize>>,
    /// `llm_provider_token_unavailable_total{provider=...}`: attempts answered 503 for want of one.
    token_unavailable: HashMap<String, Counter>,
}

/// One provider's token refresh. Its state is in shared data, for every worker's root context
/// (each Wasm VM ticks): under the token's key, `{key}` the token, `{key}.claim` the time before
/// which no refresh starts (one in flight, or a pause after a failure), `{key}.failures` failures
/// in a row, `{key}.error` why the last one failed. A call's answer comes back to the root context
/// that made it (on the native module, the main thread's instance, which ticks on a timer).
struct TokenRefresh {
    source: TokenSource,
    refreshed: Option<Counter>,
    failed: Option<Counter>,
}

/// How long a token request may take.
const TOKEN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker that starts a refresh holds it this long; the others leave it to that one.
const REFRESH_CLAIM_SECS: u64 = 15;

fn now_secs() -> u64 {
    now_unix_nanos() / 1_000_000_000
}

/// The current token of `key`, from shared data.
fn shared_token(key: &str) -> Option<AccessToken> {
    read_shared(key).and_then(|bytes| AccessToken::from_shared(&bytes))
}

/// Why there is no token, as the last failed refresh recorded it.
fn shared_token_error(key: &str) -> Option<String> {
    read_shared(&format!("{key}.error"))
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|why| !why.is_empty())
}

/// A number kept as text in shared data (0 when absent).
fn shared_number(key: &str) -> u64 {
    read_shared(key)
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

fn set_shared_number(key: &str, value: u64) {
    llm_host::update_shared(key, |_| value.to_string().into_bytes());
}

/// Claims the next refresh of `key` for this worker, unless a refresh is in flight or pausing.
fn claim_refresh(key: &str, now: u64) -> bool {
    let claim = format!("{key}.claim");
    let Ok((held, cas)) = llm_host::current().shared_get(&claim) else {
        return false;
    };
    let until = held
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse::<u64>().ok())
        .unwrap_or(0);
    if until > now {
        return false;
    }
    let next = (now + REFRESH_CLAIM_SECS).to_string();
    // (The key exists from configuration on, so the write is a compare-and-swap.)
    match llm_host::current().shared_set(&claim, next.as_bytes(), cas) {
        Ok(()) => true,
        Err(SharedWriteError::CasMismatch | SharedWriteError::Failed(_)) => false,
    }
}

impl ProviderFilter {
    fn token_failed(&self, refresh: &TokenRefresh, why: &str) {
        let key = &refresh.source.shared_key;
        let failures = u32::try_from(shared_number(&format!("{key}.failures")))
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        set_shared_number(&format!("{key}.failures"), u64::from(failures));
        let wait = retry_after(failures);
        set_shared_number(&format!("{key}.claim"), now_secs() + wait);
        if let Some(counter) = &refresh.failed {
            counter.increment(1);
        }
        llm_host::update_shared(&format!("{key}.error"), |_| why.as_bytes().to_vec());
        // One line per failure; the reason names the endpoint's status and OAuth error only.
        log::warn!(
            "llm_provider: provider `{}`: access token refresh failed ({why}); next try in {wait} s",
            refresh.source.provider
        );
    }
}

impl Filter for ProviderFilter {
    const NAME: &'static str = "llm_provider";
    type Config = ProviderConfig;

    fn from_config(config: ProviderConfig) -> Result<Self, ConfigError> {
        let names: Vec<String> = config.providers.keys().cloned().collect();
        // Credentials come from vm_config.environment_variables (WASI environment).
        let providers = Providers::compile(config, &|name| std::env::var(name).ok())?;
        let mut attempts = HashMap::new();
        let mut translated = HashMap::new();
        for name in names {
            let labels = [("provider", name.as_str())];
            if let Some(c) = Counter::define(&labeled_name("llm_provider_attempts_total", &labels))
            {
                attempts.insert(name.clone(), c);
            }
            if let Some(c) =
                Counter::define(&labeled_name("llm_provider_translated_total", &labels))
            {
                translated.insert(name, c);
            }
        }
        let mut token_unavailable = HashMap::new();
        let tokens = providers
            .token_sources()
            .into_iter()
            .map(|source| {
                llm_host::ensure_shared(&format!("{}.claim", source.shared_key), b"0");
                let counter = |result: &str| {
                    Counter::define(&labeled_name(
                        "llm_provider_token_refreshes_total",
                        &[("provider", source.provider.as_str()), ("result", result)],
                    ))
                };
                if let Some(c) = Counter::define(&labeled_name(
                    "llm_provider_token_unavailable_total",
                    &[("provider", source.provider.as_str())],
                )) {
                    token_unavailable.insert(source.provider.clone(), c);
                }
                TokenRefresh {
                    refreshed: counter("ok"),
                    failed: counter("error"),
                    source,
                }
            })
            .collect();
        Ok(ProviderFilter {
            providers,
            attempts,
            translated,
            origins: RefCell::new(AttemptOrigins::default()),
            tokens,
            token_calls: RefCell::new(HashMap::new()),
            token_unavailable,
        })
    }

    /// Vertex AI tokens are refreshed in the background: checked every second, fetched only
    /// when the shared one nears its expiry.
    fn tick_period(&self) -> Option<Duration> {
        (!self.tokens.is_empty()).then_some(Duration::from_secs(1))
    }

    fn on_tick(&self) {
        let now = now_secs();
        for (index, refresh) in self.tokens.iter().enumerate() {
            let source = &refresh.source;
            if shared_token(&source.shared_key).is_some_and(|t| !t.refresh_due(now)) {
                continue;
            }
            if !claim_refresh(&source.shared_key, now) {
                continue;
            }
            let body = match source.account.token_request_body(now) {
                Ok(body) => body,
                Err(why) => {
                    self.token_failed(refresh, &why);
                    continue;
                }
            };
            let call = HttpCall {
                cluster: &source.cluster,
                authority: &source.endpoint.authority,
                method: "POST",
                path: &source.endpoint.path,
                headers: &[("content-type", "application/x-www-form-urlencoded")],
                body: body.as_bytes(),
                timeout: TOKEN_CALL_TIMEOUT,
            };
            match llm_host::current().http_call(&call) {
                Ok(token) => {
                    self.token_calls.borrow_mut().insert(token, index);
                }
                Err(why) => self.token_failed(refresh, &format!("the token request failed: {why}")),
            }
        }
    }

    fn on_root_http_response(&self, token: u32, answer: Option<&HttpAnswer>) {
        let index = self.token_calls.borrow_mut().remove(&token);
        let Some(refresh) = index.and_then(|i| self.tokens.get(i)) else {
            return;
        };
        let key = &refresh.source.shared_key;
        let now = now_secs();
        let result = match answer {
            Some(answer) => token_answer(answer.status, &answer.body, now),
            None => Err("the token endpoint did not answer".to_string()),
        };
        match result {
            Ok(access) => {
                llm_host::update_shared(key, |_| access.to_shared());
                if shared_number(&format!("{key}.failures")) > 0 {
                    set_shared_number(&format!("{key}.failures"), 0);
                    log::info!(
                        "llm_provider: provider `{}`: access token refreshed again",
                        refresh.source.provider
                    );
                }
                set_shared_number(&format!("{key}.claim"), 0);
                llm_host::update_shared(&format!("{key}.error"), |_| Vec::new());
                if let Some(counter) = &refresh.refreshed {
                    counter.increment(1);
                }
            }
            Err(why) => self.token_failed(refresh, &why),
        }
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(ProviderAttempt {
            filter: Rc::clone(self),
            attempt: None,
            body: BodyBuffer::default(),
            response: ResponseMode::Passthrough,
            translate: None,
            headers: Headers::default(),
            origin: None,
        })
    }
}

enum ResponseMode {
    Passthrough,
    /// Buffer the whole (JSON) response and translate it at the end; `status` is the provider's.
    Buffered {
        status: u16,
    },
    Stream(Box<StreamTranslation>),
}

struct ProviderAttempt {
    filter: Rc<ProviderFilter>,
    attempt: Option<Attempt>,
    /// The body, held until it says which model (and format) this attempt sends.
    body: BodyBuffer,
    response: ResponseMode,
    translate: Option<AnswerTranslation>,
    /// The attempt's request headers as they arrived (read once; the body phase needs them too).
    headers: Headers,
    /// The request id and the client's request line, recorded if this attempt rewrites it.
    origin: Option<(String, Origin)>,
}

impl ProviderAttempt {
    /// Envoy gives every attempt of a request the same headers but the client's body: a retry finds
    /// the path, authority and body length the previous attempt's provider needed, and starts again
    /// from the client's.
    fn start_from_the_clients_request_line(&mut self) {
        let Some(request_id) = self.headers.get("x-request-id").map(str::to_string) else {
            return;
        };
        let current = Origin {
            path: self.headers.get(":path").unwrap_or_default().to_string(),
            authority: self.headers.get(":authority").map(str::to_string),
            content_length: self.headers.get("content-length").map(str::to_string),
            accept: self.headers.get("accept").map(str::to_string),
        };
        let previous = self.filter.origins.borrow().previous(&request_id).cloned();
        self.origin = Some((request_id, previous.clone().unwrap_or(current.clone())));
        let Some(origin) = previous.filter(|origin| *origin != current) else {
            return;
        };
        llm_host::set_request_header(":path", Some(&origin.path));
        if let Some(authority) = &origin.authority {
            llm_host::set_request_header(":authority", Some(authority));
        }
        llm_host::set_request_header("content-length", origin.content_length.as_deref());
        llm_host::set_request_header("accept", origin.accept.as_deref());
        self.headers = Headers::request();
    }

    /// Remembers the client's request line before this attempt rewrites it, for the next attempt.
    /// Only a rewrite is recorded: an attempt that changes nothing leaves nothing to undo (and the
    /// downstream filters may still change the request before the one attempt that is sent).
    fn record_origin(&self) {
        if let Some((request_id, origin)) = &self.origin {
            self.filter
                .origins
                .borrow_mut()
                .record(request_id, origin.clone());
        }
    }

    /// Applies the attempt's header changes; returns the path the attempt is sent to.
    fn apply_headers(&self, attempt: &Attempt, model: Option<&str>, stream: bool) -> String {
        let plan = self.filter.providers.headers(attempt, model, stream);
        // Only allow-listed client headers reach the provider (organization, project and beta
        // headers only when configured for it).
        for name in self.headers.names() {
            if !self.filter.providers.forwards(attempt, name) {
                llm_host::set_request_header(name, None);
            }
        }
        for name in &plan.remove {
            llm_host::set_request_header(name, None);
        }
        for (name, value) in &plan.set {
            llm_host::set_request_header(name, Some(value));
        }
        for (name, value) in &plan.set_if_absent {
            if !self.headers.contains(name) {
                llm_host::set_request_header(name, Some(value));
            }
        }
        if plan.path.is_some() || plan.authority.is_some() {
            self.record_origin();
        }
        if let Some(path) = &plan.path {
            // As Envoy does for its own rewrites: access logs keep showing the client's path.
            if !self.headers.contains("x-envoy-original-path") {
                if let Some(original) = self.headers.get(":path") {
                    llm_host::set_request_header("x-envoy-original-path", Some(original));
                }
            }
            llm_host::set_request_header(":path", Some(path));
        }
        if let Some(authority) = &plan.authority {
            llm_host::set_request_header(":authority", Some(authority));
        }
        plan.path
            .unwrap_or_else(|| self.headers.get(":path").unwrap_or_default().to_string())
    }

    fn finish_request(&mut self, body_size: usize) -> Action {
        let Some(attempt) = self.attempt.clone() else {
            return Action::Continue;
        };
        let body = llm_host::read_request_body(body_size);
        let plan = match self.filter.providers.body(&attempt, &body) {
            Ok(plan) => plan,
            Err(reply) => {
                send_local_reply(&reply);
                return Action::Pause;
            }
        };
        if let Some(answer) = &plan.answer {
            send_local_reply(answer);
            return Action::Pause;
        }
        let stream = plan.stream
            || plan
                .translate_response
                .as_ref()
                .is_some_and(AnswerTranslation::stream);
        // Vertex AI: the token the background refresh keeps in shared data.
        let mut bearer = None;
        if let Some(key) = self.filter.providers.token_key(&attempt) {
            let now = now_secs();
            let token = shared_token(&key);
            match token.as_ref().filter(|t| t.valid(now)) {
                Some(token) => bearer = Some(format!("Bearer {}", token.value.expose())),
                None => {
                    let why = shared_token_error(&key).unwrap_or_else(|| {
                        if token.is_some() {
                            "the last one expired and the next is being fetched".to_string()
                        } else {
                            "the first one is still being fetched".to_string()
                        }
                    });
                    if let Some(counter) = self
                        .filter
                        .token_unavailable
                        .get(self.filter.providers.name(&attempt))
                    {
                        counter.increment(1);
                    }
                    send_local_reply(&self.filter.providers.token_missing_reply(&attempt, &why));
                    return Action::Pause;
                }
            }
        }
        let path = self.apply_headers(&attempt, plan.model.as_deref(), stream);
        if let Some(bearer) = &bearer {
            llm_host::set_request_header("authorization", Some(bearer));
        }
        if let Some(new_body) = &plan.new_body {
            self.record_origin();
            llm_host::replace_request_body(body_size, new_body);
            llm_host::set_request_header("content-length", Some(&new_body.len().to_string()));
        }
        // Bedrock's SigV4 signs the request as it leaves: this attempt's path and body.
        let sent = plan.new_body.as_deref().unwrap_or(&body);
        let now = now_unix_nanos() / 1_000_000_000;
        match self.filter.providers.sign(&attempt, &path, sent, now) {
            Ok(headers) => {
                for (name, value) in headers {
                    llm_host::set_request_header(name, Some(&value));
                }
            }
            Err(reply) => {
                send_local_reply(&reply);
                return Action::Pause;
            }
        }
        if plan.translate_response.is_some() {
            if let Some(counter) = self
                .filter
                .translated
                .get(self.filter.providers.name(&attempt))
            {
                counter.increment(1);
            }
        }
        self.translate = plan.translate_response;
        Action::Continue
    }
}

impl HttpFilter for ProviderAttempt {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        // Internal facts never leave the gateway. Headers are shared across attempts, so every
        // change below replaces or removes; nothing is added twice.
        self.headers = Headers::request();
        self.start_from_the_clients_request_line();
        for name in self
            .headers
            .names()
            .filter(|name| name.starts_with(llm_core::contract::HEADER_PREFIX))
        {
            llm_host::set_request_header(name, None);
        }
        let provider = llm_host::endpoint_provider();
        let path = self.headers.get(":path").unwrap_or_default();
        let attempt = match self.filter.providers.attempt(provider.as_deref(), path) {
            Ok(attempt) => attempt,
            Err(reply) => {
                send_local_reply(&reply);
                return Action::Pause;
            }
        };
        if let Some(counter) = self
            .filter
            .attempts
            .get(self.filter.providers.name(&attempt))
        {
            counter.increment(1);
        }
        if end_of_stream {
            if let Some(reply) = self.filter.providers.body_missing(&attempt) {
                send_local_reply(&reply);
                return Action::Pause;
            }
        }
        let needs_body = self.filter.providers.needs_body(&attempt) && !end_of_stream;
        if !needs_body {
            self.apply_headers(&attempt, None, false);
            self.attempt = Some(attempt);
            return Action::Continue;
        }
        self.attempt = Some(attempt);
        self.body.start();
        // Hold the headers until the body says which model (and format) this attempt sends.
        Action::Pause
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        request_body(self, body_size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        request_trailers(self)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        let Some(translation) = &mut self.translate else {
            return Action::Continue;
        };
        let headers = Headers::response();
        translation.note_answer_headers(&|name| headers.get(name).map(str::to_string));
        let status: u16 = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(502);
        let content_type = headers.get("content-type").unwrap_or_default();
        // The body changes size: let Envoy frame it.
        llm_host::set_response_header("content-length", None);
        if status == 200 && translation.streams_as(content_type) {
            // Bedrock streams AWS's binary event stream; the client gets SSE.
            llm_host::set_response_header("content-type", Some("text/event-stream"));
            let created = now_unix_nanos() / 1_000_000_000;
            self.response = ResponseMode::Stream(Box::new(translation.streamer(created)));
        } else {
            let client_status = translation.status(status);
            if client_status != status {
                llm_host::set_response_header(":status", Some(&client_status.to_string()));
            }
            llm_host::set_response_header("content-type", Some("application/json"));
            self.response = ResponseMode::Buffered { status };
        }
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if matches!(self.response, ResponseMode::Passthrough) {
            return Action::Continue;
        }
        if matches!(self.response, ResponseMode::Buffered { .. }) && !end_of_stream {
            return Action::Pause;
        }
        let chunk = llm_host::read_response_body(body_size);
        match &mut self.response {
            ResponseMode::Passthrough => Action::Continue,
            ResponseMode::Stream(translator) => {
                // Translate chunk by chunk: never hold the stream, only an unfinished event.
                let mut out = translator.push(&chunk);
                if end_of_stream {
                    out.extend(translator.finish());
                }
                llm_host::replace_response_body(body_size, &out);
                Action::Continue
            }
            ResponseMode::Buffered { status } => {
                let Some(translation) = &self.translate else {
                    return Action::Continue;
                };
                let created = now_unix_nanos() / 1_000_000_000;
                let translated = translation.answer(*status, &chunk, created);
                llm_host::replace_response_body(body_size, &translated);
                Action::Continue
            }
        }
    }
}

impl HoldsRequestBody for ProviderAttempt {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        self.finish_request(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_host::fake::{self, Stream};
    use serde_json::{json, Value};

    const PROVIDER: &str = "xds.upstream_host_metadata.filter_metadata.llm.provider";

    /// The configuration of envoy/demo.yaml, with keys in environment variables named after `test`
    /// (tests run in parallel and share the process environment).
    fn config(test: &str) -> String {
        json!({
            "default_provider": "openai",
            "providers": {
                "openai": {"format": "openai", "api_key_env": format!("LLM_PROVIDER_TEST_{test}_OPENAI"),
                           "forward_headers": ["x-mock-*"]},
                "anthropic": {"format": "anthropic",
                              "api_key_env": format!("LLM_PROVIDER_TEST_{test}_ANTHROPIC"),
                              "model_map": {"gpt-4o": "claude-sonnet-4-5"},
                              "forward_headers": ["x-mock-*"]},
                "gemini": {"format": "gemini", "api_key_env": format!("LLM_PROVIDER_TEST_{test}_ANTHROPIC"),
                           "host": "generativelanguage.googleapis.com",
                           "model_map": {"gpt-4o": "gemini-2.5-flash"}},
                "bedrock": {"format": "bedrock", "region": "us-east-1",
                            "aws_credentials_env": {"access_key_id": format!("LLM_PROVIDER_TEST_{test}_OPENAI"),
                                                    "secret_access_key": format!("LLM_PROVIDER_TEST_{test}_ANTHROPIC")},
                            "model_map": {"gpt-4o": "us.anthropic.claude-sonnet-4-5-20250929-v1:0"}}
            }
        })
        .to_string()
    }

    /// An attempt on an endpoint whose metadata names `provider` (None: no metadata).
    fn attempt(test: &str, provider: Option<&str>) -> Stream {
        fake::reset();
        std::env::set_var(
            format!("LLM_PROVIDER_TEST_{test}_OPENAI"),
            format!("sk-openai-{test}"),
        );
        std::env::set_var(
            format!("LLM_PROVIDER_TEST_{test}_ANTHROPIC"),
            format!("sk-ant-{test}"),
        );
        let loaded =
            llm_host::configure::<ProviderFilter>(config(test).as_bytes()).expect("config");
        if let Some(provider) = provider {
            fake::with(|s| {
                s.properties
                    .insert(PROVIDER.into(), provider.as_bytes().to_vec())
            });
        }
        Stream::new(loaded.new_stream())
    }

    /// A chat completion as it leaves the downstream filters (client headers included).
    const CHAT: [(&str, &str); 10] = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        (":authority", "gateway.local"),
        ("content-type", "application/json"),
        ("authorization", "Bearer sk-demo-team-a"),
        ("accept-encoding", "gzip"),
        ("openai-organization", "org-123"),
        ("x-mock-delay-ms", "5"),
        ("x-request-id", "req-1"),
        ("x-llm-consumer", "team-a"),
    ];

    fn request_body(stream: bool) -> Vec<u8> {
        let mut body = json!({
            "model": "gpt-4o",
            "messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hi"}],
            "max_tokens": 50
        });
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        body.to_string().into_bytes()
    }

    /// Sends a chat completion through an Anthropic-format attempt and checks the translation.
    fn anthropic_attempt(test: &str, stream_answer: bool) -> Stream {
        let mut stream = attempt(test, Some("anthropic"));
        let body = request_body(stream_answer);
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(stream.request_body(&body[..30], false), Action::Pause);
        assert!(stream.upstream_body().is_empty());
        assert_eq!(stream.request_body(&body[30..], true), Action::Continue);
        stream
    }

    /// The OpenAI chunks the client got, parsed (`[DONE]` as a string).
    fn events(sse: &str) -> Vec<Value> {
        sse.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
            .collect()
    }

    #[test]
    fn an_anthropic_attempt_is_translated_with_the_providers_credential() {
        let stream = anthropic_attempt("translate", false);
        let header = |name: &str| fake::request_header(name);
        assert_eq!(header(":path").as_deref(), Some("/v1/messages"));
        assert_eq!(
            header("x-envoy-original-path").as_deref(),
            Some("/v1/chat/completions")
        );
        assert_eq!(header("x-api-key").as_deref(), Some("sk-ant-translate"));
        assert_eq!(header("anthropic-version").as_deref(), Some("2023-06-01"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("x-mock-delay-ms").as_deref(), Some("5"));
        assert_eq!(header("x-request-id").as_deref(), Some("req-1"));
        for removed in [
            "authorization",
            "accept-encoding",
            "openai-organization",
            "x-llm-consumer",
        ] {
            assert_eq!(header(removed), None, "{removed}");
        }
        let sent: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(sent["model"], "claude-sonnet-4-5");
        assert_eq!(sent["system"], "Be brief.");
        assert_eq!(sent["max_tokens"], 50);
        assert_eq!(sent["messages"][0]["role"], "user");
        assert_eq!(sent["messages"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            header("content-length"),
            Some(stream.upstream_body().len().to_string())
        );
        assert_eq!(
            fake::counter("llm_provider_attempts_total_provider=.=anthropic;.;"),
            1
        );
        assert_eq!(
            fake::counter("llm_provider_translated_total_provider=.=anthropic;.;"),
            1
        );
        assert_eq!(
            fake::counter("llm_filter_requests_total_filter=.=provider;.;"),
            1
        );
    }

    #[test]
    fn a_gemini_attempt_is_translated_both_ways() {
        let mut stream = attempt("gemini", Some("gemini"));
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(
            stream.request_body(&request_body(false), true),
            Action::Continue
        );
        assert_eq!(
            fake::request_header(":path").as_deref(),
            Some("/v1beta/models/gemini-2.5-flash:generateContent")
        );
        assert_eq!(
            fake::request_header("x-goog-api-key").as_deref(),
            Some("sk-ant-gemini")
        );
        assert_eq!(
            fake::request_header("authorization"),
            None,
            "the client's key never leaves"
        );
        assert_eq!(
            fake::request_header(":authority").as_deref(),
            Some("generativelanguage.googleapis.com")
        );
        let sent: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "Hi");
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 50);

        let answer = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":6,"candidatesTokenCount":1,"totalTokenCount":7},"modelVersion":"gemini-2.5-flash","responseId":"r9"}"#;
        let headers = [(":status", "200"), ("content-type", "application/json")];
        assert_eq!(stream.response(&headers, &[answer]), Action::Continue);
        let chat: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(chat["choices"][0]["message"]["content"], "Hello");
        assert_eq!(chat["usage"]["completion_tokens"], 1);
        assert_eq!(chat["model"], "gemini-2.5-flash");

        // A stream asks for the SSE path.
        let mut stream = attempt("gemini_stream", Some("gemini"));
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(
            stream.request_body(&request_body(true), true),
            Action::Continue
        );
        assert_eq!(
            fake::request_header(":path").as_deref(),
            Some("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
        );
        let sse = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}]},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":2,\"candidatesTokenCount\":1}}\r\n\r\n";
        let headers = [(":status", "200"), ("content-type", "text/event-stream")];
        assert_eq!(
            stream.response(&headers, &[sse.as_bytes()]),
            Action::Continue
        );
        let got = events(&String::from_utf8_lossy(stream.client_body()));
        assert_eq!(got[0]["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(got.last().unwrap(), &json!("[DONE]"));

        // Embeddings are not Gemini's to serve here: 400 without reaching it.
        let mut stream = attempt("gemini_embeddings", Some("gemini"));
        let mut headers = CHAT.to_vec();
        headers[1] = (":path", "/v1/embeddings");
        stream.request_headers(&headers, false);
        let reply = stream.reply().expect("a local reply");
        assert_eq!(reply.status, 400);
    }

    fn event_frame(event: &str, payload: Value) -> Vec<u8> {
        use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
        let message = Message::new(payload.to_string().into_bytes())
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ))
            .add_header(Header::new(
                ":event-type",
                HeaderValue::String(event.to_string().into()),
            ));
        let mut out = Vec::new();
        aws_smithy_eventstream::frame::write_message_to(&message, &mut out).expect("a frame");
        out
    }

    #[test]
    fn a_bedrock_attempt_is_signed_and_translated_both_ways() {
        let mut stream = attempt("bedrock", Some("bedrock"));
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(
            stream.request_body(&request_body(true), true),
            Action::Continue
        );
        assert_eq!(
            fake::request_header(":path").as_deref(),
            Some("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream")
        );
        assert_eq!(
            fake::request_header(":authority").as_deref(),
            Some("bedrock-runtime.us-east-1.amazonaws.com")
        );
        let authorization = fake::request_header("authorization").expect("signed");
        assert!(
            authorization.starts_with("AWS4-HMAC-SHA256 Credential=sk-openai-bedrock/"),
            "{authorization}"
        );
        assert!(authorization.contains("/us-east-1/bedrock/aws4_request"));
        assert!(
            !authorization.contains("sk-ant-bedrock"),
            "the secret only signs"
        );
        assert!(fake::request_header("x-amz-date").is_some());
        let sent: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(sent["system"][0]["text"], "Be brief.");
        assert_eq!(sent["inferenceConfig"]["maxTokens"], 50);
        assert_eq!(
            fake::request_header("content-length"),
            Some(stream.upstream_body().len().to_string())
        );

        // The binary event stream reaches the client as SSE, split anywhere.
        let body = [
            event_frame("messageStart", json!({"role": "assistant"})),
            event_frame(
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": "Hello"}}),
            ),
            event_frame("messageStop", json!({"stopReason": "end_turn"})),
            event_frame(
                "metadata",
                json!({"usage": {"inputTokens": 6, "outputTokens": 1, "totalTokens": 7}}),
            ),
        ]
        .concat();
        let headers = [
            (":status", "200"),
            ("content-type", "application/vnd.amazon.eventstream"),
            ("x-amzn-requestid", "abc-123"),
        ];
        let pieces: Vec<&[u8]> = body.chunks(10).collect();
        assert_eq!(stream.response(&headers, &pieces), Action::Continue);
        assert_eq!(
            fake::response_header("content-type").as_deref(),
            Some("text/event-stream")
        );
        let got = events(&String::from_utf8_lossy(stream.client_body()));
        assert_eq!(got[0]["id"], "chatcmpl-abc-123");
        assert_eq!(got[0]["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(got[1]["choices"][0]["finish_reason"], "stop");
        assert_eq!(got[2]["usage"]["prompt_tokens"], 6);
        assert_eq!(got.last().unwrap(), &json!("[DONE]"));

        // Without a body there is nothing to translate or sign: 400, nothing sent.
        let mut stream = attempt("bedrock_no_body", Some("bedrock"));
        stream.request_headers(&CHAT, true);
        assert_eq!(stream.reply().expect("a local reply").status, 400);
        assert!(!stream.request_forwarded());

        // Bedrock's errors name their type in a header.
        let mut stream = attempt("bedrock_error", Some("bedrock"));
        stream.request_headers(&CHAT, false);
        stream.request_body(&request_body(false), true);
        assert_eq!(
            fake::request_header(":path").as_deref(),
            Some("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse")
        );
        let headers = [
            (":status", "429"),
            ("content-type", "application/json"),
            (
                "x-amzn-errortype",
                "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/",
            ),
        ];
        stream.response(
            &headers,
            &[br#"{"message":"Too many requests, please wait before trying again."}"#],
        );
        let error: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(error["error"]["code"], "ThrottlingException");
        assert_eq!(error["error"]["type"], "rate_limit_error");
        assert!(error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests"));
    }

    /// A service-account key file for the glue tests (a small key, made once).
    fn key_file() -> String {
        use rsa::pkcs8::{EncodePrivateKey, LineEnding};
        static FILE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        FILE.get_or_init(|| {
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 1024).unwrap();
            let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
            json!({"type": "service_account", "private_key": pem, "private_key_id": "k1",
                   "client_email": "gw@p.iam.gserviceaccount.com",
                   "token_uri": "https://oauth2.googleapis.com/token"})
            .to_string()
        })
        .clone()
    }

    #[test]
    fn vertex_tokens_are_refreshed_in_the_background_and_sent_per_attempt() {
        fake::reset();
        std::env::set_var("LLM_PROVIDER_TEST_VERTEX_SA", key_file());
        let config = json!({"providers": {"vertex": {
            "format": "vertex_ai", "project": "my-proj", "location": "us-central1",
            "service_account_env": "LLM_PROVIDER_TEST_VERTEX_SA", "token_cluster": "google_oauth2"}}})
        .to_string();
        let loaded = llm_host::configure::<ProviderFilter>(config.as_bytes()).expect("config");
        fake::with(|s| {
            s.properties.insert(PROVIDER.into(), b"vertex".to_vec());
            s.now_unix_nanos = 1_000 * 1_000_000_000;
        });
        let filter = Rc::clone(&loaded.filter);
        assert_eq!(filter.tick_period(), Some(Duration::from_secs(1)));

        // No token yet: 503 in the client's shape, nothing sent.
        fake::with(|s| {
            s.replies.clear();
            s.request_body.clear();
        });
        let mut stream = Stream::new(loaded.new_stream());
        stream.request_headers(&CHAT, false);
        let mut body = request_body(false);
        body = String::from_utf8(body)
            .unwrap()
            .replace("gpt-4o", "gemini-2.5-flash")
            .into_bytes();
        stream.request_body(&body, true);
        let reply = stream.reply().expect("503");
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("still being fetched"), "{}", reply.body);
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_provider_token_unavailable_total",
                &[("provider", "vertex")]
            )),
            1
        );

        // The tick asks the token endpoint, through its cluster, with a signed JWT.
        filter.on_tick();
        let call = fake::with(|s| s.http_calls.last().cloned()).expect("a token request");
        assert_eq!(call.cluster, "google_oauth2");
        assert_eq!(call.authority, "oauth2.googleapis.com");
        assert_eq!(call.path, "/token");
        let form = String::from_utf8(call.body.clone()).unwrap();
        assert!(form.starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
        ));
        // Nothing more while it is in flight.
        filter.on_tick();
        assert_eq!(fake::with(|s| s.http_calls.len()), 1);

        // A failure: logged, counted, retried after a pause, and the 503 says why.
        filter.on_root_http_response(
            call.token,
            Some(&HttpAnswer {
                status: 400,
                body: br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
                    .to_vec(),
            }),
        );
        assert_eq!(
            fake::counter(&labeled_name(
                "llm_provider_token_refreshes_total",
                &[("provider", "vertex"), ("result", "error")]
            )),
            1
        );
        fake::with(|s| {
            s.replies.clear();
            s.request_body.clear();
        });
        let mut stream = Stream::new(loaded.new_stream());
        stream.request_headers(&CHAT, false);
        stream.request_body(&body, true);
        let reply = stream.reply().expect("503");
        assert!(reply.body.contains("invalid_grant"), "{}", reply.body);
        filter.on_tick();
        assert_eq!(fake::with(|s| s.http_calls.len()), 1, "backing off");
        fake::with(|s| s.now_unix_nanos += 20 * 1_000_000_000);
        filter.on_tick();
        let call = fake::with(|s| s.http_calls.last().cloned()).unwrap();
        assert_eq!(fake::with(|s| s.http_calls.len()), 2);
        filter.on_root_http_response(
            call.token,
            Some(&HttpAnswer {
                status: 200,
                body:
                    br#"{"access_token":"ya29.test-token","expires_in":3599,"token_type":"Bearer"}"#
                        .to_vec(),
            }),
        );

        // Now every attempt carries it, at Vertex's path.
        fake::with(|s| {
            s.replies.clear();
            s.request_body.clear();
        });
        let mut stream = Stream::new(loaded.new_stream());
        stream.request_headers(&CHAT, false);
        stream.request_body(&body, true);
        assert!(stream.reply().is_none(), "{:?}", stream.reply());
        assert_eq!(
            fake::request_header("authorization").as_deref(),
            Some("Bearer ya29.test-token")
        );
        assert_eq!(
            fake::request_header(":path").as_deref(),
            Some("/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent")
        );
        // Fresh: no refresh until it nears expiry (300 s before).
        filter.on_tick();
        assert_eq!(fake::with(|s| s.http_calls.len()), 2);
        fake::with(|s| s.now_unix_nanos += 3_400 * 1_000_000_000);
        filter.on_tick();
        assert_eq!(
            fake::with(|s| s.http_calls.len()),
            3,
            "refreshed before expiry"
        );
    }

    #[test]
    fn an_anthropic_json_answer_is_translated_back() {
        let mut stream = anthropic_attempt("json_answer", false);
        let answer = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Hello"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 4, "output_tokens": 3}
        })
        .to_string()
        .into_bytes();
        let length = answer.len().to_string();
        let headers = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", length.as_str()),
        ];
        assert_eq!(stream.response_headers(&headers, false), Action::Continue);
        assert_eq!(fake::response_header("content-length"), None);
        assert_eq!(stream.response_body(&answer[..20], false), Action::Pause);
        assert!(stream.client_body().is_empty());
        assert_eq!(stream.response_body(&answer[20..], true), Action::Continue);

        let chat: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(chat["object"], "chat.completion");
        assert_eq!(chat["id"], "chatcmpl-msg_1");
        assert_eq!(chat["created"], 1_767_225_600);
        assert_eq!(chat["choices"][0]["message"]["content"], "Hello");
        assert_eq!(chat["choices"][0]["finish_reason"], "stop");
        assert_eq!(chat["usage"]["prompt_tokens"], 14);
        assert_eq!(chat["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(chat["usage"]["completion_tokens"], 3);
    }

    #[test]
    fn an_anthropic_error_becomes_an_openai_error() {
        let mut stream = anthropic_attempt("error_answer", false);
        let answer =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        stream.response(
            &[(":status", "529"), ("content-type", "application/json")],
            &[answer],
        );
        assert_eq!(fake::response_header(":status").as_deref(), Some("503"));
        let error: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(error["error"]["message"], "Overloaded");
        assert_eq!(error["error"]["code"], "overloaded_error");
    }

    #[test]
    fn an_anthropic_stream_is_translated_chunk_by_chunk() {
        let mut stream = anthropic_attempt("stream_answer", true);
        assert_eq!(
            stream.response_headers(
                &[(":status", "200"), ("content-type", "text/event-stream")],
                false
            ),
            Action::Continue
        );
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        let text = |t: &str| {
            event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": t}}),
            )
        };
        let provider = [
            event(
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1",
                       "model": "claude-sonnet-4-5", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
            ),
            event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ),
            event("ping", json!({"type": "ping"})),
            text("Hel"),
            text("lo"),
            event("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": 2}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ]
        .concat();
        // Cut in the middle of the first text delta.
        let cut = provider.find("Hel").unwrap();
        assert_eq!(
            stream.response_body(&provider.as_bytes()[..cut], false),
            Action::Continue
        );
        // The role chunk went out at once; the cut event waits for its end.
        let so_far = events(&stream.client_body_text());
        assert_eq!(so_far.len(), 1);
        assert_eq!(so_far[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(
            stream.response_body(&provider.as_bytes()[cut..], true),
            Action::Continue
        );

        let chunks = events(&stream.client_body_text());
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(content, "Hello");
        assert!(chunks
            .iter()
            .all(|c| !c.is_object() || c["object"] == "chat.completion.chunk"));
        let finish = chunks
            .iter()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str());
        assert_eq!(finish, Some("stop"));
        let usage = &chunks[chunks.len() - 2]["usage"];
        assert_eq!(usage["prompt_tokens"], 10);
        assert_eq!(usage["completion_tokens"], 2);
        assert_eq!(chunks.last(), Some(&json!("[DONE]")));
    }

    /// Claude Code's shape of request (`?beta=true`, beta headers, a streamed Messages body) on an
    /// OpenAI-format provider: Chat Completions goes up, Anthropic events come back.
    #[test]
    fn a_messages_client_on_an_openai_provider() {
        let mut stream = attempt("messages_on_openai", Some("openai"));
        let headers = [
            (":method", "POST"),
            (":path", "/v1/messages?beta=true"),
            (":authority", "gateway.local"),
            ("content-type", "application/json"),
            ("x-api-key", "sk-demo-team-a"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "claude-code-20250219"),
            ("x-request-id", "req-m"),
        ];
        let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": true,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]})
        .to_string();
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(stream.request_body(body.as_bytes(), true), Action::Continue);
        let header = |name: &str| fake::request_header(name);
        assert_eq!(header(":path").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(
            header("authorization").as_deref(),
            Some("Bearer sk-openai-messages_on_openai")
        );
        for removed in ["x-api-key", "anthropic-version", "anthropic-beta"] {
            assert_eq!(header(removed), None, "{removed}");
        }
        let sent: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(sent["messages"][0]["role"], "system");
        assert_eq!(sent["stream_options"]["include_usage"], true);
        assert_eq!(
            fake::counter("llm_provider_translated_total_provider=.=openai;.;"),
            1
        );

        stream.response_headers(
            &[(":status", "200"), ("content-type", "text/event-stream")],
            false,
        );
        let chunks = [
            json!({"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": {"content": "Hello"}}]}),
            json!({"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}),
        ]
        .iter()
        .map(|c| format!("data: {c}\n\n"))
        .collect::<String>()
            + "data: [DONE]\n\n";
        stream.response_body(chunks.as_bytes(), true);
        let text = stream.client_body_text();
        assert!(text.starts_with("event: message_start\n"), "{text}");
        assert!(text.contains(r#""text":"Hello""#));
        assert!(text.contains(r#""stop_reason":"end_turn""#));
        assert!(text.contains(r#""output_tokens":2"#));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        assert!(
            !text.contains("chatcmpl"),
            "no Chat chunk reaches the client"
        );
    }

    #[test]
    fn count_tokens_for_an_openai_model_is_answered_by_the_gateway() {
        let mut stream = attempt("count_tokens", Some("openai"));
        let headers = [
            (":method", "POST"),
            (":path", "/v1/messages/count_tokens"),
            ("content-type", "application/json"),
            ("x-request-id", "req-c"),
        ];
        let body =
            br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(stream.request_body(body, true), Action::Pause);
        let reply = stream.reply().expect("answered locally");
        assert_eq!(reply.status, 200);
        let counted: Value = serde_json::from_str(&reply.body).unwrap();
        assert!(counted["input_tokens"].as_u64().unwrap() > 0);
        assert!(!stream.request_forwarded());
    }

    #[test]
    fn an_openai_attempt_streams_through_with_the_providers_key() {
        let mut stream = attempt("openai", Some("openai"));
        let mut headers = CHAT.to_vec();
        headers.push(("anthropic-version", "2023-06-01"));
        // No translation and no model to map: the body is not held.
        assert_eq!(stream.request_headers(&headers, false), Action::Continue);
        assert_eq!(
            fake::request_header("authorization").as_deref(),
            Some("Bearer sk-openai-openai")
        );
        assert_eq!(
            fake::request_header(":path").as_deref(),
            Some("/v1/chat/completions")
        );
        for removed in ["anthropic-version", "x-llm-consumer", "openai-organization"] {
            assert_eq!(fake::request_header(removed), None, "{removed}");
        }
        let body = request_body(false);
        assert_eq!(stream.request_body(&body, true), Action::Continue);
        assert_eq!(stream.upstream_body(), body.as_slice());
        let answer = br#"{"object":"chat.completion"}"#;
        stream.response(&[(":status", "200")], &[answer]);
        assert_eq!(stream.client_body(), answer);
    }

    #[test]
    fn an_endpoint_without_metadata_uses_the_default_provider() {
        let mut stream = attempt("default", None);
        assert_eq!(stream.request_headers(&CHAT, false), Action::Continue);
        assert_eq!(
            fake::request_header("authorization").as_deref(),
            Some("Bearer sk-openai-default")
        );
        assert_eq!(
            fake::counter("llm_provider_attempts_total_provider=.=openai;.;"),
            1
        );
    }

    #[test]
    fn an_unknown_provider_gets_502_without_reaching_it() {
        let mut stream = attempt("unknown", Some("mistral"));
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        let reply = stream.reply().expect("502");
        assert_eq!(reply.status, 502);
        assert!(reply.body.contains("mistral"));
        assert!(!stream.request_forwarded());
    }

    #[test]
    fn a_missing_credential_fails_the_configuration() {
        fake::reset();
        let config = config("never_set");
        let err = llm_host::configure::<ProviderFilter>(config.as_bytes())
            .err()
            .expect("refused");
        assert!(
            err.starts_with("llm_provider: invalid configuration"),
            "{err}"
        );
        assert!(err.contains("LLM_PROVIDER_TEST_never_set_"), "{err}");
    }

    /// Envoy hands a retry the header map the previous attempt left (with its rewritten path,
    /// credential and body length) and the client's own body: the retry starts from the client's.
    #[test]
    fn a_retry_after_a_translated_attempt_starts_from_the_clients_request() {
        for (first, first_path, leftovers) in [
            (
                "anthropic",
                "/v1/messages",
                &["x-api-key", "anthropic-version"][..],
            ),
            (
                "bedrock",
                "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
                &["x-amz-date"][..],
            ),
        ] {
            let test = format!("retry_{first}");
            fake::reset();
            std::env::set_var(
                format!("LLM_PROVIDER_TEST_{test}_OPENAI"),
                "sk-openai-retry",
            );
            std::env::set_var(
                format!("LLM_PROVIDER_TEST_{test}_ANTHROPIC"),
                "sk-ant-retry",
            );
            let loaded =
                llm_host::configure::<ProviderFilter>(config(&test).as_bytes()).expect("config");
            let body = request_body(false);
            let length = body.len().to_string();
            let mut headers = CHAT.to_vec();
            headers.push(("content-length", &length));
            headers.push(("accept", "application/json"));

            let set_provider = |provider: &str| {
                fake::with(|s| {
                    s.properties
                        .insert(PROVIDER.into(), provider.as_bytes().to_vec())
                })
            };
            set_provider(first);
            let mut attempt = Stream::new(loaded.new_stream());
            attempt.request_headers(&headers, false);
            attempt.request_body(&body, true);
            assert_eq!(fake::request_header(":path").as_deref(), Some(first_path));
            let translated_length = fake::request_header("content-length").unwrap();
            assert_ne!(translated_length, length);

            // The retry: the same (rewritten) header map, the client's body, an OpenAI-format
            // endpoint.
            let left: Vec<(String, String)> = fake::with(|s| s.request_headers.clone());
            let left: Vec<(&str, &str)> =
                left.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            fake::with(|s| s.request_body.clear());
            set_provider("openai");
            let mut second = Stream::new(loaded.new_stream());
            second.request_headers(&left, false);
            second.request_body(&body, true);
            assert!(second.reply().is_none(), "{:?}", second.reply());
            assert_eq!(
                fake::request_header(":path").as_deref(),
                Some("/v1/chat/completions")
            );
            assert_eq!(
                fake::request_header(":authority").as_deref(),
                Some("gateway.local")
            );
            assert_eq!(fake::request_header("content-length"), Some(length));
            assert_eq!(
                fake::request_header("accept").as_deref(),
                Some("application/json"),
                "after {first}"
            );
            assert_eq!(
                fake::request_header("authorization").as_deref(),
                Some("Bearer sk-openai-retry")
            );
            for leftover in leftovers {
                assert_eq!(fake::request_header(leftover), None, "{leftover}");
            }
            assert_eq!(second.upstream_body(), body.as_slice());
        }
    }
}
