//! `llm_router`: reads the model from the request body and routes it to a provider cluster.
//!
//! Thin glue: the decisions live in `llm_core::router`. See README.md for the configuration reference.

use llm_core::api::{ApiFlavor, LocalReply};
use llm_core::config::ConfigError;
use llm_core::metrics::labeled_name;
use llm_core::router::{HeadersDecision, RequestHead, Router, RouterConfig};
use llm_host::{
    request_body, request_trailers, send_local_reply, set_filter_state, BodyBuffer, Counter,
    Filter, Headers, HoldsRequestBody,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
proxy_wasm::main! {{
    llm_host::register::<RouterFilter>();
}}

/// Headers only this filter may set: a client-sent value is deleted before anything reads it.
const PUBLISHED_HEADERS: [&str; 4] = [
    "x-llm-model",
    "x-llm-route",
    "x-llm-stream",
    "x-llm-max-tokens",
];

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

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
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
        llm_host::set_request_header("x-llm-model", Some(&routed.model));
        llm_host::set_request_header("x-llm-route", Some(&resolution.route));
        // Lets llm_usage skip holding the bodies of requests that do not stream.
        llm_host::set_request_header(
            "x-llm-stream",
            Some(if routed.stream { "true" } else { "false" }),
        );
        // Lets llm_usage reserve the request's most expensive outcome against token limits and budgets.
        if let Some(max) = routed.max_output_tokens {
            llm_host::set_request_header("x-llm-max-tokens", Some(&max.to_string()));
        }
        if let Some(new_body) = &routed.new_body {
            llm_host::replace_request_body(body_size, new_body);
            llm_host::set_request_header("content-length", Some(&new_body.len().to_string()));
        }
        set_filter_state("llm_model", &routed.model);
        set_filter_state("llm_route", &resolution.route);
        set_filter_state("llm_upstream_model", &resolution.upstream_model);
        set_filter_state("llm_stream", if routed.stream { "true" } else { "false" });
        if let Some(counter) = filter
            .routed
            .get(&(resolution.entry.clone(), resolution.route.clone()))
        {
            counter.increment(1);
        }
        Action::Continue
    }
}

impl Context for RouterRequest {}

impl HttpContext for RouterRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        for header in PUBLISHED_HEADERS {
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
                // Hold the headers until the body names the model (needs
                // allow_on_headers_stop_iteration in the plugin config).
                self.flavor = flavor;
                self.body.start();
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        request_body(self, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
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
