//! `llm_gateway`: llm_auth, llm_router, llm_pii and llm_usage in one Wasm module. Each filter's own
//! glue runs unchanged inside one HTTP context ([`llm_host::Chain`]), in that order, so the request
//! pays for one VM context and shares header and body reads instead of four. The price: one VM and
//! one `failure_policy` for the four. See README.md.

use llm_auth::AuthFilter;
use llm_core::config::ConfigError;
use llm_core::filters::{compile_section, GatewayConfig};
use llm_core::metrics::labeled_name;
use llm_host::{Chain, Counter, Filter};
use llm_pii::PiiFilter;
use llm_router::RouterFilter;
use llm_usage::UsageFilter;
use proxy_wasm::traits::HttpContext;
use std::rc::Rc;
use std::time::Duration;

proxy_wasm::main! {{
    llm_host::register::<Gateway>();
}}

pub struct Gateway {
    auth: Option<Rc<AuthFilter>>,
    router: Option<Rc<RouterFilter>>,
    pii: Option<Rc<PiiFilter>>,
    usage: Option<Rc<UsageFilter>>,
    /// `llm_filter_requests_total{filter=...}` of each configured filter, as the filters alone count.
    requests: Vec<Counter>,
}

impl Filter for Gateway {
    const NAME: &'static str = "llm_gateway";
    type Config = GatewayConfig;

    fn from_config(config: GatewayConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let gateway = Gateway {
            auth: compile_section("auth", config.auth, AuthFilter::from_config)?.map(Rc::new),
            router: compile_section("router", config.router, RouterFilter::from_config)?
                .map(Rc::new),
            pii: compile_section("pii", config.pii, PiiFilter::from_config)?.map(Rc::new),
            usage: compile_section("usage", config.usage, UsageFilter::from_config)?.map(Rc::new),
            requests: Vec::new(),
        };
        let configured = [
            ("auth", gateway.auth.is_some()),
            ("router", gateway.router.is_some()),
            ("pii", gateway.pii.is_some()),
            ("usage", gateway.usage.is_some()),
        ];
        let requests = configured
            .iter()
            .filter(|(_, present)| *present)
            .filter_map(|(name, _)| {
                Counter::define(&labeled_name(
                    "llm_filter_requests_total",
                    &[("filter", name)],
                ))
            })
            .collect();
        Ok(Gateway {
            requests,
            ..gateway
        })
    }

    fn http_context(self: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext> {
        for counter in &self.requests {
            counter.increment(1);
        }
        let mut filters = Vec::with_capacity(4);
        if let Some(auth) = &self.auth {
            filters.push(auth.http_context(context_id));
        }
        if let Some(router) = &self.router {
            filters.push(router.http_context(context_id));
        }
        if let Some(pii) = &self.pii {
            filters.push(pii.http_context(context_id));
        }
        if let Some(usage) = &self.usage {
            filters.push(usage.http_context(context_id));
        }
        Box::new(Chain::new(filters))
    }

    fn tick_period(&self) -> Option<Duration> {
        self.usage.as_ref().and_then(|usage| usage.tick_period())
    }

    fn on_tick(&self) {
        if let Some(usage) = &self.usage {
            usage.on_tick();
        }
    }

    fn on_root_grpc_response(&self, token: u32, status: u32, body: Option<Vec<u8>>) {
        // Only llm_usage calls from the root context (its usage reports).
        if let Some(usage) = &self.usage {
            usage.on_root_grpc_response(token, status, body);
        }
    }
}
