//! `llm_gateway`: llm_auth, llm_router, llm_guard, llm_cache, llm_pii and llm_usage in one module. Each filter's own glue
//! runs unchanged inside one stream ([`llm_host::Chain`]), in that order, so the request pays for one
//! VM context and shares header and body reads instead of four. The price: one VM and one
//! `failure_policy` for the four. See README.md.

use llm_auth::AuthFilter;
use llm_cache::CacheFilter;
use llm_core::config::ConfigError;
use llm_core::filters::{compile_section, GatewayConfig};
use llm_core::metrics::labeled_name;
use llm_guard::GuardFilter;
use llm_host::host::HttpAnswer;
use llm_host::{Chain, Counter, Filter, HttpFilter};
use llm_pii::PiiFilter;
use llm_router::RouterFilter;
use llm_usage::UsageFilter;
use std::rc::Rc;
use std::time::Duration;

llm_host::wasm_module!(Gateway);

/// One configured filter of the chain.
trait Member {
    fn http_filter(&self) -> Box<dyn HttpFilter>;
    fn tick_period(&self) -> Option<Duration>;
    fn on_tick(&self);
    fn on_root_grpc_response(&self, token: u32, status: u32, body: Option<&[u8]>);
    fn on_root_http_response(&self, token: u32, answer: Option<&HttpAnswer>);
}

impl<F: Filter> Member for Rc<F> {
    fn http_filter(&self) -> Box<dyn HttpFilter> {
        Filter::http_filter(self)
    }
    fn tick_period(&self) -> Option<Duration> {
        Filter::tick_period(self.as_ref())
    }
    fn on_tick(&self) {
        Filter::on_tick(self.as_ref());
    }
    fn on_root_grpc_response(&self, token: u32, status: u32, body: Option<&[u8]>) {
        Filter::on_root_grpc_response(self.as_ref(), token, status, body);
    }
    fn on_root_http_response(&self, token: u32, answer: Option<&HttpAnswer>) {
        Filter::on_root_http_response(self.as_ref(), token, answer);
    }
}

struct Section {
    filter: Box<dyn Member>,
    /// `llm_filter_requests_total{filter=<section>}`, as the filter alone counts.
    requests: Option<Counter>,
}

/// Compiles one section (absent: `None`), its errors naming the section.
fn section<F: Filter>(
    name: &str,
    config: Option<F::Config>,
) -> Result<Option<Section>, ConfigError> {
    let Some(filter) = compile_section(name, config, F::from_config)? else {
        return Ok(None);
    };
    Ok(Some(Section {
        filter: Box::new(Rc::new(filter)),
        requests: Counter::define(&labeled_name(
            "llm_filter_requests_total",
            &[("filter", name)],
        )),
    }))
}

pub struct Gateway {
    /// The configured filters in request order (responses run them in reverse).
    sections: Vec<Section>,
}

impl Filter for Gateway {
    const NAME: &'static str = "llm_gateway";
    type Config = GatewayConfig;

    fn from_config(config: GatewayConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let GatewayConfig {
            auth,
            router,
            guard,
            cache,
            pii,
            usage,
        } = config;
        // The module's chain: the one place that lists its filters and their order.
        let sections = [
            section::<AuthFilter>("auth", auth)?,
            section::<RouterFilter>("router", router)?,
            section::<GuardFilter>("guard", guard)?,
            section::<CacheFilter>("cache", cache)?,
            section::<PiiFilter>("pii", pii)?,
            section::<UsageFilter>("usage", usage)?,
        ];
        Ok(Gateway {
            sections: sections.into_iter().flatten().collect(),
        })
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        let filters = self
            .sections
            .iter()
            .map(|section| {
                if let Some(requests) = section.requests {
                    requests.increment(1);
                }
                section.filter.http_filter()
            })
            .collect();
        Box::new(Chain::new(filters))
    }

    fn tick_period(&self) -> Option<Duration> {
        self.sections
            .iter()
            .filter_map(|s| s.filter.tick_period())
            .min()
    }

    fn on_tick(&self) {
        for section in &self.sections {
            section.filter.on_tick();
        }
    }

    fn on_root_grpc_response(&self, token: u32, status: u32, body: Option<&[u8]>) {
        // Each filter knows its own calls' tokens (only llm_usage calls from the root context).
        for section in &self.sections {
            section.filter.on_root_grpc_response(token, status, body);
        }
    }

    fn on_root_http_response(&self, token: u32, answer: Option<&HttpAnswer>) {
        for section in &self.sections {
            section.filter.on_root_http_response(token, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_host::fake::{self, Stream};
    use llm_host::Action;
    use serde_json::{json, Value};

    const PROVIDER: &str = "xds.upstream_host_metadata.filter_metadata.llm.provider";

    /// The configuration of envoy/demo-single-module.yaml (the keys: sk-demo-team-a, sk-demo-team-b);
    /// `auth` replaced when given.
    fn demo(auth: Option<Value>) -> String {
        let auth = auth.unwrap_or_else(|| {
            json!({"consumers": [
                {"name": "team-a", "metadata": {"team": "a"},
                 "keys": [{"sha256": "50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e"}],
                 "models": ["*"], "rate_limit": {"requests": 1000, "window_seconds": 60}},
                {"name": "team-b", "metadata": {"team": "b"},
                 "keys": [{"sha256": "69a1ea6aaaae03a4b28e72194a044ebc6b63cdc969d9c93e4e92af76fc2be76d"}],
                 "models": ["gpt-4o-mini", "fast"],
                 "rate_limit": {"requests": 300, "window_seconds": 60}}
            ]})
        });
        json!({
            "auth": auth,
            "router": {"models": [
                {"name": "gpt-4o-mini", "route": "openai", "owned_by": "openai"},
                {"name": "fast", "alias_of": "gpt-4o-mini"},
                {"name": "claude-sonnet-4-5", "route": "anthropic", "owned_by": "anthropic"},
                {"name": "gpt-4o", "route": "gpt-4o-pool", "owned_by": "openai"}
            ], "max_body_bytes": 4194304},
            "pii": {
                "entities": {"email": "mask", "phone": "mask", "credit_card": "mask",
                             "us_ssn": "mask", "iban": "mask", "ip_address": "mask",
                             "secret": "block"},
                "terms": [{"name": "project", "values": ["Project Falcon"], "action": "redact"}]
            },
            "usage": {
                "prices": [
                    {"model": "gpt-4o-mini*", "input": 0.15, "output": 0.60, "cached_input": 0.075},
                    {"model": "gpt-4o*", "input": 2.50, "output": 10.00, "cached_input": 1.25}
                ],
                "limits": [{"consumer": "team-b", "usd_per_day": 5}]
            }
        })
        .to_string()
    }

    fn gateway(config: &str) -> Stream {
        fake::reset();
        let loaded = llm_host::configure::<Gateway>(config.as_bytes()).expect("config");
        fake::with(|s| s.properties.insert(PROVIDER.into(), b"openai".to_vec()));
        Stream::new(loaded.new_stream())
    }

    fn chat(authorization: &str) -> Vec<(&str, &str)> {
        vec![
            (":method", "POST"),
            (":path", "/v1/chat/completions"),
            ("content-type", "application/json"),
            ("accept-encoding", "gzip"),
            ("x-llm-route", "anthropic"),
            ("authorization", authorization),
        ]
    }

    const PROMPT: &[u8] =
        br#"{"model":"fast","messages":[{"role":"user","content":"Mail jane.doe@example.com"}]}"#;

    fn state(key: &str) -> Option<String> {
        fake::with(|s| s.filter_state.get(key).cloned())
    }

    #[test]
    fn a_chat_request_passes_auth_router_pii_and_usage() {
        let mut stream = gateway(&demo(None));
        // team-b is restricted to some models: auth reads the body too.
        assert_eq!(
            stream.request_headers(&chat("Bearer sk-demo-team-b"), false),
            Action::Pause
        );
        assert_eq!(stream.request_body(&PROMPT[..25], false), Action::Pause);
        assert!(stream.upstream_body().is_empty());
        assert_eq!(stream.request_body(&PROMPT[25..], true), Action::Continue);

        // Router rewrote the alias, pii masked the address: both in the one body that leaves.
        let sent: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(sent["model"], "gpt-4o-mini");
        assert_eq!(sent["messages"][0]["content"], "Mail <EMAIL_1>");
        let header = |name: &str| fake::request_header(name);
        assert_eq!(
            header("content-length"),
            Some(stream.upstream_body().len().to_string())
        );
        assert_eq!(header("x-llm-consumer").as_deref(), Some("team-b"));
        assert_eq!(header("x-llm-model").as_deref(), Some("fast"));
        assert_eq!(header("x-llm-route").as_deref(), Some("openai"));
        assert_eq!(header("authorization"), None);
        assert_eq!(header("accept-encoding"), None);

        let answer = json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant",
                         "content": "I will mail <EMAIL_1>."}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
        })
        .to_string()
        .into_bytes();
        let headers = [(":status", "200"), ("content-type", "application/json")];
        assert_eq!(stream.response_headers(&headers, false), Action::Continue);
        assert_eq!(
            fake::response_header("x-ratelimit-remaining-requests").as_deref(),
            Some("299")
        );
        assert_eq!(stream.response_body(&answer[..60], false), Action::Pause);
        assert_eq!(stream.response_body(&answer[60..], true), Action::Continue);
        stream.log();

        let got: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(
            got["choices"][0]["message"]["content"],
            "I will mail jane.doe@example.com."
        );
        let labels = "_consumer=.=team-b;.;_model=.=fast;.;_provider=.=openai;.;";
        assert_eq!(
            fake::counter(&format!("llm_input_tokens_total{labels}")),
            20
        );
        assert_eq!(
            fake::counter(&format!("llm_output_tokens_total{labels}")),
            10
        );
        for (key, value) in [
            ("llm_consumer", "team-b"),
            ("llm_model", "fast"),
            ("llm_upstream_model", "gpt-4o-mini"),
            ("llm_route", "openai"),
            ("llm_pii", "email=1"),
            ("llm_input_tokens", "20"),
            ("llm_response_model", "gpt-4o-mini-2024-07-18"),
            // 20 × 150 + 10 × 600 nano-USD.
            ("llm_cost_usd", "0.000009000"),
        ] {
            assert_eq!(state(key).as_deref(), Some(value), "{key}");
        }
        for filter in ["gateway", "auth", "router", "pii", "usage"] {
            let name = format!("llm_filter_requests_total_filter=.={filter};.;");
            assert_eq!(fake::counter(&name), 1, "{filter}");
        }
    }

    #[test]
    fn a_401_stops_the_chain_before_the_router() {
        let mut stream = gateway(&demo(None));
        assert_eq!(
            stream.request_headers(&chat("Bearer sk-wrong"), false),
            Action::Pause
        );
        assert_eq!(stream.request_body(PROMPT, true), Action::Pause);
        assert_eq!(stream.reply().map(|r| r.status), Some(401));
        assert!(!stream.request_forwarded());
        assert!(stream.upstream_body().is_empty());
        // No later filter ran: no route, nothing masked, and llm_usage left accept-encoding alone.
        assert_eq!(fake::request_header("x-llm-route"), None);
        assert_eq!(
            fake::request_header("accept-encoding").as_deref(),
            Some("gzip")
        );
        assert!(fake::with(|s| s.filter_state.is_empty()));
        assert_eq!(fake::with(|s| s.replies.len()), 1);
    }

    #[test]
    fn a_global_limit_in_auth_resumes_the_rest_of_the_chain() {
        let auth = json!({
            "rate_limit_service": {"cluster": "rls"},
            "consumers": [{"name": "team-a",
                "keys": [{"sha256": "50a734ef22b610c7ad5e602d7a1aa5e39a9a39a6f6cc38aa2415f9d58b52146e"}],
                "rate_limit": {"requests": 10, "window_seconds": 60, "scope": "global",
                               "on_service_error": "allow"}}]
        });
        let mut stream = gateway(&demo(Some(auth)));
        assert_eq!(
            stream.request_headers(&chat("Bearer sk-demo-team-a"), false),
            Action::Pause
        );
        assert_eq!(stream.request_body(PROMPT, true), Action::Pause);
        assert_eq!(
            fake::request_header("x-llm-route"),
            None,
            "router waits for auth"
        );
        let token = fake::with(|s| s.grpc_calls[0].token);
        // The service could not answer; this limit lets the request through.
        stream.grpc_response(token, 14, None);
        assert_eq!(fake::with(|s| s.resumes), 1);
        assert!(stream.reply().is_none());
        assert_eq!(
            fake::request_header("x-llm-route").as_deref(),
            Some("openai")
        );
        let sent: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(sent["messages"][0]["content"], "Mail <EMAIL_1>");
    }
}
