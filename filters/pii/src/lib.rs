//! `llm_pii`: masks PII in prompts before they leave and restores it in responses, streaming included.
//!
//! Thin glue: detection, masking and restoring live in `llm_core::{pii, pii_detect}`. See README.md.

use llm_core::api::{classify, ApiFlavor, Endpoint};
use llm_core::config::ConfigError;
use llm_core::metrics::labeled_name;
use llm_core::pii::{restore_json, Masked, Pii, PiiConfig, StreamFormat, StreamRestorer, Vault};
use llm_host::{
    request_body, request_trailers, response_header, send_local_reply, set_filter_state,
    BodyBuffer, Counter, Filter, Headers, HoldsRequestBody,
};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
proxy_wasm::main! {{
    llm_host::register::<PiiFilter>();
}}

pub struct PiiFilter {
    pii: Pii,
    /// `llm_pii_detections_total{entity,action}`; entity types come from the config, so the label set
    /// is bounded.
    detections: RefCell<HashMap<String, Option<Counter>>>,
}

impl Filter for PiiFilter {
    const NAME: &'static str = "llm_pii";
    type Config = PiiConfig;

    fn from_config(config: PiiConfig) -> Result<Self, ConfigError> {
        Ok(PiiFilter {
            pii: Pii::compile(config)?,
            detections: RefCell::new(HashMap::new()),
        })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(PiiRequest {
            filter: Rc::clone(self),
            flavor: ApiFlavor::OpenAi,
            path: String::new(),
            body: BodyBuffer::default(),
            vault: Vault::default(),
            response: Response::Untouched,
        })
    }
}

impl PiiFilter {
    fn count(&self, entity: &str, action: &str, by: u32) {
        self.count_series(
            labeled_name(
                "llm_pii_detections_total",
                &[("entity", entity), ("action", action)],
            ),
            by,
        );
    }

    /// Counts a request that reached a cap of `limits` (`reason`: bytes or findings; `action`: block
    /// or pass), so an operator sees requests refused, or passed partly unscanned.
    fn count_limited(&self, limit: &str, action: &str) {
        self.count_series(
            labeled_name(
                "llm_pii_scan_limited_total",
                &[("reason", limit), ("action", action)],
            ),
            1,
        );
    }

    fn count_series(&self, name: String, by: u32) {
        let known = self.detections.borrow().get(&name).copied();
        let counter = match known {
            Some(counter) => counter,
            None => {
                let counter = Counter::define(&name);
                self.detections.borrow_mut().insert(name, counter);
                counter
            }
        };
        if let Some(counter) = counter {
            counter.increment(i64::from(by));
        }
    }
}

enum Response {
    Untouched,
    /// Buffered to the end, then restored (JSON).
    Buffered,
    Stream(Box<StreamRestorer>),
}

struct PiiRequest {
    filter: Rc<PiiFilter>,
    flavor: ApiFlavor,
    path: String,
    /// An inference request's body, held until it is scanned.
    body: BodyBuffer,
    vault: Vault,
    response: Response,
}

impl PiiRequest {
    fn mask(&mut self, body_size: usize) -> Action {
        let flavor = self.flavor;
        let body = llm_host::read_request_body(body_size);
        let filter = Rc::clone(&self.filter);
        let (masked, findings) =
            filter
                .pii
                .mask_request(flavor, &self.path, &body, &mut self.vault);
        for ((entity, action), n) in &findings.counts {
            filter.count(entity, action.as_str(), *n);
        }
        if let Some(limit) = findings.limited {
            let action = match masked {
                Masked::Refused(_) => "block",
                _ => "pass",
            };
            filter.count_limited(limit.as_str(), action);
        }
        if !findings.counts.is_empty() {
            set_filter_state("llm_pii", &findings.summary());
        }
        match masked {
            Masked::Unchanged => Action::Continue,
            Masked::Rewritten(new_body) => {
                llm_host::replace_request_body(body_size, &new_body);
                llm_host::set_request_header("content-length", Some(&new_body.len().to_string()));
                if !self.vault.is_empty() {
                    // The response is rewritten: it must arrive uncompressed.
                    llm_host::set_request_header("accept-encoding", None);
                }
                Action::Continue
            }
            Masked::Refused(reply) => {
                send_local_reply(&reply);
                Action::Pause
            }
        }
    }
}

impl Context for PiiRequest {}

impl HttpContext for PiiRequest {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        let method = headers.get(":method").unwrap_or_default();
        self.path = headers.get(":path").unwrap_or_default().to_string();
        match classify(method, &self.path) {
            Endpoint::Inference(flavor) if !end_of_stream => {
                // Nothing leaves before it is scanned (needs allow_on_headers_stop_iteration).
                self.flavor = flavor;
                self.body.start();
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        request_body(self, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        request_trailers(self)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.vault.is_empty() {
            return Action::Continue;
        }
        let content_type = response_header("content-type").unwrap_or_default();
        llm_host::set_response_header("content-length", None);
        self.response = if content_type.starts_with("text/event-stream") {
            let format = if self.path.starts_with("/v1/messages") {
                StreamFormat::Anthropic
            } else {
                StreamFormat::OpenAi
            };
            Response::Stream(Box::new(StreamRestorer::new(format)))
        } else {
            Response::Buffered
        };
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.response {
            Response::Untouched => Action::Continue,
            Response::Buffered if !end_of_stream => Action::Pause,
            Response::Buffered => {
                let body = llm_host::read_response_body(body_size);
                if let Some(restored) = restore_json(&body, &self.vault) {
                    llm_host::replace_response_body(body_size, &restored);
                }
                Action::Continue
            }
            Response::Stream(_) => {
                let chunk = llm_host::read_response_body(body_size);
                if let Response::Stream(restorer) = &mut self.response {
                    let mut out = restorer.push(&chunk, &self.vault);
                    if end_of_stream {
                        out.extend(restorer.finish(&self.vault));
                    }
                    llm_host::replace_response_body(body_size, &out);
                }
                Action::Continue
            }
        }
    }
}

impl HoldsRequestBody for PiiRequest {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        self.mask(size)
    }
}
