//! `llm_router`: reads the model from the request body and routes it to a provider cluster.
//!
//! Thin glue: the decisions live in `llm_core::router`. See README.md for the configuration reference.

use llm_core::api::{ApiFlavor, LocalReply};
use llm_core::config::ConfigError;
use llm_core::contract::{self, state};
use llm_core::genai;
use llm_core::metrics::labeled_name;
use llm_core::router::{HeadersDecision, RequestHead, Router, RouterConfig};
use llm_host::{
    request_body, request_trailers, send_local_reply, set_filter_state, Action, BodyBuffer,
    Counter, Filter, Headers, HoldsRequestBody, HttpFilter,
};
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
llm_host::wasm_module!(RouterFilter);

pub struct RouterFilter {
    router: Router,
    /// `llm_router_requests_total{model=<table entry>,route=...}`, defined up front: labels come from
    /// the config, never from client input, so cardinality is bounded.
    routed: HashMap<(String, String), Counter>,
    /// `llm_router_rejected_total{reason=...}`.
    rejected: HashMap<u16, Counter>,
}

fn rejection_reason(status: u16) -> &'static str {
    match status {
        404 => "unknown_model",
        413 => "too_large",
        _ => "invalid_request",
    }
}

impl Filter for RouterFilter {
    const NAME: &'static str = "llm_router";
    type Config = RouterConfig;

    fn from_config(config: RouterConfig) -> Result<Self, ConfigError> {
        let router = Router::compile(config)?;
        let mut routed = HashMap::new();
        for (entry, route) in router.decision_labels() {
            let name = labeled_name(
                "llm_router_requests_total",
                &[("model", &entry), ("route", &route)],
            );
            if let Some(counter) = Counter::define(&name) {
                routed.insert((entry, route), counter);
            }
        }
        let mut rejected = HashMap::new();
        for status in [400, 404, 413] {
            let name = labeled_name(
                "llm_router_rejected_total",
                &[("reason", rejection_reason(status))],
            );
            if let Some(counter) = Counter::define(&name) {
                rejected.insert(status, counter);
            }
        }
        Ok(RouterFilter {
            router,
            routed,
            rejected,
        })
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(RouterRequest {
            filter: Rc::clone(self),
            flavor: ApiFlavor::OpenAi,
            body: BodyBuffer::default(),
            headers: Headers::default(),
        })
    }
}

struct RouterRequest {
    filter: Rc<RouterFilter>,
    flavor: ApiFlavor,
    /// The body of an inference request, held until it names the model.
    body: BodyBuffer,
    /// The request headers as this filter saw them (read once: sticky routing needs them later).
    headers: Headers,
}

impl RouterRequest {
    fn reply(&self, reply: &LocalReply) -> Action {
        if reply.status >= 400 {
            if let Some(counter) = self.filter.rejected.get(&reply.status) {
                counter.increment(1);
            }
        }
        send_local_reply(reply);
        Action::Pause
    }

    /// Routes the complete body: publishes the decision, rewrites the model if needed.
    fn route_body(&mut self, body_size: usize) -> Action {
        let flavor = self.flavor;
        let body = llm_host::read_request_body(body_size);
        let request_id = self.headers.get("x-request-id").unwrap_or_default();
        let filter = Rc::clone(&self.filter);
        let sticky = |header: &str| self.headers.get(header).map(str::to_string);
        let routed = match filter.router.on_body(flavor, &body, &sticky, request_id) {
            Ok(routed) => routed,
            Err(reply) => return self.reply(&reply),
        };
        let resolution = &routed.resolution;
        // Changing a header clears Envoy's route cache, so the route is chosen again with these.
        llm_host::set_request_header(contract::MODEL, Some(&routed.model));
        llm_host::set_request_header(contract::ROUTE, Some(&resolution.route));
        // Lets llm_usage skip holding the bodies of requests that do not stream.
        llm_host::set_request_header(
            contract::STREAM,
            Some(if routed.stream { "true" } else { "false" }),
        );
        // Lets llm_usage reserve the request's most expensive outcome against token limits and budgets.
        if let Some(max) = routed.max_output_tokens {
            llm_host::set_request_header(contract::MAX_TOKENS, Some(&max.to_string()));
        }
        if let Some(new_body) = &routed.new_body {
            llm_host::replace_request_body(body_size, new_body);
            llm_host::set_request_header("content-length", Some(&new_body.len().to_string()));
        }
        set_filter_state(state::MODEL, &routed.model);
        set_filter_state(state::ROUTE, &resolution.route);
        set_filter_state(state::UPSTREAM_MODEL, &resolution.upstream_model);
        set_filter_state(state::STREAM, if routed.stream { "true" } else { "false" });
        if let Some(operation) = self.headers.get(":path").and_then(genai::operation_name) {
            set_filter_state(
                state::SPAN_NAME,
                &genai::span_name(operation, &routed.model),
            );
        }
        if let Some(max) = routed.max_output_tokens {
            set_filter_state(state::REQUEST_MAX_TOKENS, &max.to_string());
        }
        if let Some(temperature) = &routed.temperature {
            set_filter_state(state::REQUEST_TEMPERATURE, temperature);
        }
        if let Some(top_p) = &routed.top_p {
            set_filter_state(state::REQUEST_TOP_P, top_p);
        }
        if let Some(counter) = filter
            .routed
            .get(&(resolution.entry.clone(), resolution.route.clone()))
        {
            counter.increment(1);
        }
        Action::Continue
    }
}

impl HttpFilter for RouterRequest {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        for header in contract::ROUTER_HEADERS {
            if headers.contains(header) {
                llm_host::set_request_header(header, None);
            }
        }
        let head = RequestHead {
            method: headers.get(":method").unwrap_or_default(),
            path: headers.get(":path").unwrap_or_default(),
            content_type: headers.get("content-type"),
            content_length: headers.get("content-length"),
            end_of_stream,
        };
        let decision = self.filter.router.on_headers(&head);
        self.headers = headers;
        match decision {
            HeadersDecision::PassThrough => Action::Continue,
            HeadersDecision::Reply(reply) => self.reply(&reply),
            HeadersDecision::ReadBody(flavor) => {
                // Published now so that a request refused for its body is named in traces too.
                if let Some(operation) = self.headers.get(":path").and_then(genai::operation_name) {
                    set_filter_state(state::OPERATION, operation);
                    set_filter_state(state::SPAN_NAME, operation);
                }
                // Hold the headers until the body names the model (needs
                // allow_on_headers_stop_iteration in the plugin config).
                self.flavor = flavor;
                self.body.start();
                Action::Pause
            }
        }
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        request_body(self, body_size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        request_trailers(self)
    }
}

impl HoldsRequestBody for RouterRequest {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_partial_body(&mut self, size: usize) -> Action {
        // Refuse an oversized chunked body as soon as it crosses the limit, not at its end.
        if size as u64 > self.filter.router.max_body_bytes() {
            self.body = BodyBuffer::default(); // answered: later chunks pass untouched
            return self.reply(&self.filter.router.too_large(self.flavor));
        }
        Action::Pause
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        if size as u64 > self.filter.router.max_body_bytes() {
            return self.reply(&self.filter.router.too_large(self.flavor));
        }
        self.route_body(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_host::fake::{self, Stream};

    /// The model table of envoy/demo.yaml.
    const DEMO: &str = r#"{
      "models": [
        {"name": "gpt-4o-mini", "route": "openai", "owned_by": "openai"},
        {"name": "fast", "alias_of": "gpt-4o-mini"},
        {"name": "claude-sonnet-4-5", "route": "anthropic", "owned_by": "anthropic"},
        {"name": "gpt-4o", "route": "gpt-4o-pool", "owned_by": "openai"},
        {"name": "text-embedding-3-small", "route": "openai", "owned_by": "openai"}
      ],
      "max_body_bytes": 4194304
    }"#;

    const CHAT: [(&str, &str); 3] = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
    ];

    fn stream(config: &str) -> Stream {
        fake::reset();
        let loaded = llm_host::configure::<RouterFilter>(config.as_bytes()).expect("config");
        Stream::new(loaded.new_stream())
    }

    fn state(key: &str) -> Option<String> {
        fake::with(|s| s.filter_state.get(key).cloned())
    }

    #[test]
    fn routes_a_chat_completion_and_publishes_the_decision() {
        let mut stream = stream(DEMO);
        let mut headers = CHAT.to_vec();
        // A client may not choose its route, model or reservation.
        headers.extend([
            ("x-llm-route", "anthropic"),
            ("x-llm-model", "claude-sonnet-4-5"),
            ("x-llm-max-tokens", "1"),
        ]);
        let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(fake::request_header("x-llm-route"), None);
        assert_eq!(stream.request_body(body, true), Action::Continue);

        assert_eq!(fake::request_header("x-llm-model").as_deref(), Some("fast"));
        assert_eq!(
            fake::request_header("x-llm-route").as_deref(),
            Some("openai")
        );
        assert_eq!(
            fake::request_header("x-llm-stream").as_deref(),
            Some("false")
        );
        assert_eq!(fake::request_header("x-llm-max-tokens"), None);
        // The alias is rewritten to the provider's name; nothing else changes.
        let expected = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(stream.upstream_body(), expected);
        assert_eq!(
            fake::request_header("content-length"),
            Some(expected.len().to_string())
        );
        assert_eq!(state("llm_model").as_deref(), Some("fast"));
        assert_eq!(state("llm_upstream_model").as_deref(), Some("gpt-4o-mini"));
        assert_eq!(state("llm_route").as_deref(), Some("openai"));
        assert_eq!(state("llm_stream").as_deref(), Some("false"));
        assert_eq!(
            fake::counter("llm_router_requests_total_model=.=gpt-4o-mini;.;_route=.=openai;.;"),
            1
        );
        assert_eq!(
            fake::counter("llm_filter_requests_total_filter=.=router;.;"),
            1
        );
        assert!(stream.reply().is_none());
    }

    #[test]
    fn publishes_the_request_facts_traces_report() {
        let mut stream = stream(DEMO);
        let body = br#"{"model":"fast","temperature":0.2,"top_p":1,"max_tokens":64,"messages":[]}"#;
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(stream.request_body(body, true), Action::Continue);
        assert_eq!(state("llm_operation").as_deref(), Some("chat"));
        assert_eq!(state("llm_span_name").as_deref(), Some("chat fast"));
        assert_eq!(state("llm_request_max_tokens").as_deref(), Some("64"));
        assert_eq!(state("llm_request_temperature").as_deref(), Some("0.2"));
        assert_eq!(state("llm_request_top_p").as_deref(), Some("1"));

        // Settings not sent, or not numbers, are not published.
        let mut stream = super::tests::stream(DEMO);
        let body = br#"{"model":"fast","temperature":"warm","messages":[]}"#;
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(stream.request_body(body, true), Action::Continue);
        assert_eq!(state("llm_operation").as_deref(), Some("chat"));
        assert_eq!(state("llm_request_temperature"), None);
        assert_eq!(state("llm_request_top_p"), None);
        assert_eq!(state("llm_request_max_tokens"), None);
    }

    #[test]
    fn a_body_in_chunks_is_held_until_its_end() {
        let mut stream = stream(DEMO);
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        let chunks: [&[u8]; 3] = [
            br#"{"model":"claude-so"#,
            br#"nnet-4-5","stream":true,"max_tokens":300,"#,
            br#""messages":[]}"#,
        ];
        assert_eq!(stream.request_body(chunks[0], false), Action::Pause);
        assert_eq!(stream.request_body(chunks[1], false), Action::Pause);
        assert!(stream.upstream_body().is_empty());
        assert_eq!(fake::request_header("x-llm-route"), None);
        assert_eq!(stream.request_body(chunks[2], true), Action::Continue);

        assert_eq!(stream.upstream_body(), chunks.concat().as_slice());
        assert_eq!(
            fake::request_header("x-llm-route").as_deref(),
            Some("anthropic")
        );
        assert_eq!(
            fake::request_header("x-llm-stream").as_deref(),
            Some("true")
        );
        assert_eq!(
            fake::request_header("x-llm-max-tokens").as_deref(),
            Some("300")
        );
        // Not rewritten: content-length untouched (none was sent).
        assert_eq!(fake::request_header("content-length"), None);
    }

    #[test]
    fn a_body_ending_with_trailers_is_routed_at_the_trailers() {
        let mut stream = stream(DEMO);
        let body = br#"{"model":"gpt-4o","messages":[]}"#;
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(stream.request_body(body, false), Action::Pause);
        assert_eq!(fake::request_header("x-llm-route"), None);
        assert_eq!(stream.request_trailers(), Action::Continue);
        assert_eq!(
            fake::request_header("x-llm-route").as_deref(),
            Some("gpt-4o-pool")
        );
        assert_eq!(stream.upstream_body(), body);
    }

    #[test]
    fn an_unknown_model_gets_404_in_openai_shape() {
        let mut stream = stream(DEMO);
        stream.request(&CHAT, &[br#"{"model":"llama-3","messages":[]}"#]);
        let reply = stream.reply().expect("a local reply");
        assert_eq!(reply.status, 404);
        let body = reply.json();
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("`llama-3`"), "{message}");
        assert!(message.contains("gpt-4o-mini, fast"), "{message}");
        assert!(stream.upstream_body().is_empty());
        assert_eq!(fake::request_header("x-llm-route"), None);
        assert_eq!(
            fake::counter("llm_router_rejected_total_reason=.=unknown_model;.;"),
            1
        );
    }

    #[test]
    fn invalid_json_gets_400() {
        let mut stream = stream(DEMO);
        stream.request(&CHAT, &[br#"{"model":"fast","messages":[}"#]);
        let reply = stream.reply().expect("a local reply");
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
        assert!(stream.upstream_body().is_empty());
        assert_eq!(
            fake::counter("llm_router_rejected_total_reason=.=invalid_request;.;"),
            1
        );
    }

    #[test]
    fn an_anthropic_request_gets_errors_in_anthropic_shape() {
        let mut stream = stream(DEMO);
        let headers = [(":method", "POST"), (":path", "/v1/messages")];
        stream.request(&headers, &[br#"{"model":"nope","messages":[]}"#]);
        let reply = stream.reply().expect("a local reply");
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json()["type"], "error");
        assert_eq!(reply.json()["error"]["type"], "not_found_error");
    }

    #[test]
    fn an_oversized_chunked_body_is_refused_as_it_crosses_the_limit() {
        let mut stream = stream(r#"{"models":[{"name":"m","route":"r"}],"max_body_bytes":100}"#);
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(stream.request_body(&[b' '; 60], false), Action::Pause);
        assert!(stream.reply().is_none());
        // 120 bytes held, more to come: refused now, not at the end of the body.
        assert_eq!(stream.request_body(&[b' '; 60], false), Action::Pause);
        let reply = stream.reply().expect("413 before the end of the body");
        assert_eq!(reply.status, 413);
        assert!(reply.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100 bytes"));
        assert!(stream.upstream_body().is_empty());
        assert_eq!(
            fake::counter("llm_router_rejected_total_reason=.=too_large;.;"),
            1
        );
    }

    #[test]
    fn a_declared_content_length_over_the_limit_is_refused_at_the_headers() {
        let mut stream = stream(r#"{"models":[{"name":"m","route":"r"}],"max_body_bytes":100}"#);
        let mut headers = CHAT.to_vec();
        headers.push(("content-length", "101"));
        assert_eq!(stream.request_headers(&headers, false), Action::Pause);
        assert_eq!(stream.reply().map(|r| r.status), Some(413));
    }

    #[test]
    fn a_get_that_is_not_the_routers_passes_through_untouched() {
        let mut stream = stream(DEMO);
        let headers = [(":method", "GET"), (":path", "/healthz"), ("accept", "*/*")];
        assert_eq!(stream.request_headers(&headers, true), Action::Continue);
        assert!(stream.request_forwarded());
        assert!(stream.reply().is_none());
        let seen = fake::with(|s| s.request_headers.clone());
        let sent: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(seen, sent);
        assert!(fake::with(|s| s.filter_state.is_empty()));
    }

    #[test]
    fn models_are_listed_from_the_table() {
        let mut stream = stream(DEMO);
        let headers = [(":method", "GET"), (":path", "/v1/models")];
        assert_eq!(stream.request_headers(&headers, true), Action::Pause);
        let reply = stream.reply().expect("answered by the router");
        assert_eq!(reply.status, 200);
        let ids: Vec<String> = reply.json()["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "gpt-4o-mini",
                "fast",
                "claude-sonnet-4-5",
                "gpt-4o",
                "text-embedding-3-small"
            ]
        );
    }
}
