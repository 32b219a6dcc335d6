//! `llm_provider`: the upstream filter adapting each attempt to its provider's wire format and
//! credentials. Thin glue: the decisions live in `llm_core::provider` and `llm_core::anthropic`.

use llm_core::anthropic::{error_to_openai, messages_response_to_chat, StreamTranslator};
use llm_core::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind};
use llm_core::config::ConfigError;
use llm_core::metrics::labeled_name;
use llm_core::provider::{Attempt, ProviderConfig, Providers, StreamFlags};
use llm_host::{
    now_unix_nanos, request_body, request_trailers, send_local_reply, BodyBuffer, Counter, Filter,
    Headers, HoldsRequestBody,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::collections::HashMap;
use std::rc::Rc;

proxy_wasm::main! {{
    llm_host::register::<ProviderFilter>();
}}

pub struct ProviderFilter {
    providers: Providers,
    /// `llm_provider_attempts_total{provider=...}`: one per attempt, so failovers show per provider.
    attempts: HashMap<String, Counter>,
    /// `llm_provider_translated_total{provider=...}`: attempts translated to the Anthropic format.
    translated: HashMap<String, Counter>,
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
        Ok(ProviderFilter {
            providers,
            attempts,
            translated,
        })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(ProviderAttempt {
            filter: Rc::clone(self),
            attempt: None,
            body: BodyBuffer::default(),
            response: ResponseMode::Passthrough,
            translate: None,
            headers: Headers::default(),
        })
    }
}

enum ResponseMode {
    Passthrough,
    /// Buffer the whole (JSON) response and translate it at the end; `status` is the provider's.
    Buffered {
        status: u16,
    },
    Stream(Box<StreamTranslator>),
}

struct ProviderAttempt {
    filter: Rc<ProviderFilter>,
    attempt: Option<Attempt>,
    /// The body, held until it says which model (and format) this attempt sends.
    body: BodyBuffer,
    response: ResponseMode,
    translate: Option<StreamFlags>,
    /// The attempt's request headers as they arrived (read once; the body phase needs them too).
    headers: Headers,
}

impl ProviderAttempt {
    fn apply_headers(&self, attempt: &Attempt, model: Option<&str>) {
        let plan = self.filter.providers.headers(attempt, model);
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
        self.apply_headers(&attempt, plan.model.as_deref());
        if let Some(new_body) = &plan.new_body {
            llm_host::replace_request_body(body_size, new_body);
            llm_host::set_request_header("content-length", Some(&new_body.len().to_string()));
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

impl Context for ProviderAttempt {}

impl HttpContext for ProviderAttempt {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // Internal facts never leave the gateway. Headers are shared across attempts, so every
        // change below replaces or removes; nothing is added twice.
        self.headers = Headers::request();
        for name in self
            .headers
            .names()
            .filter(|name| name.starts_with("x-llm-"))
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
        let needs_body = self.filter.providers.needs_body(&attempt) && !end_of_stream;
        if !needs_body {
            self.apply_headers(&attempt, None);
            self.attempt = Some(attempt);
            return Action::Continue;
        }
        self.attempt = Some(attempt);
        self.body.start();
        // Hold the headers until the body says which model (and format) this attempt sends.
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        request_body(self, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        request_trailers(self)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(flags) = self.translate else {
            return Action::Continue;
        };
        let headers = Headers::response();
        let status: u16 = headers
            .get(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(502);
        let content_type = headers.get("content-type").unwrap_or_default();
        // The body changes size: let Envoy frame it.
        llm_host::set_response_header("content-length", None);
        if status == 200 && flags.stream && content_type.starts_with("text/event-stream") {
            let created = now_unix_nanos() / 1_000_000_000;
            self.response = ResponseMode::Stream(Box::new(StreamTranslator::new(
                flags.include_usage,
                created,
            )));
        } else {
            if status == 529 {
                llm_host::set_response_header(":status", Some("503"));
            }
            llm_host::set_response_header("content-type", Some("application/json"));
            self.response = ResponseMode::Buffered { status };
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
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
                let status = *status;
                let body = chunk;
                let translated = if status == 200 {
                    let created = now_unix_nanos() / 1_000_000_000;
                    messages_response_to_chat(&body, created).unwrap_or_else(|message| {
                        error_reply(
                            ApiFlavor::OpenAi,
                            ErrorKind::BadGateway,
                            &format!("The provider's answer could not be translated: {message}."),
                            ErrorDetail::default(),
                        )
                        .body
                        .into_bytes()
                    })
                } else {
                    error_to_openai(status, &body).1
                };
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
