//! `llm_usage`: token and cost accounting, metrics, token limits and budgets.
//!
//! Thin glue: the logic lives in `llm-core`. See README.md for the configuration reference.

use llm_core::config::ConfigError;
use llm_core::filters::UsageConfig;
use llm_host::Filter;
use proxy_wasm::traits::{Context, HttpContext};
use std::rc::Rc;

proxy_wasm::main! {{
    llm_host::register::<Usage>();
}}

pub struct Usage {
    #[allow(dead_code)]
    config: UsageConfig,
}

impl Filter for Usage {
    const NAME: &'static str = "llm_usage";
    type Config = UsageConfig;

    fn from_config(config: UsageConfig) -> Result<Self, ConfigError> {
        Ok(Usage { config })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(UsageRequest {
            _filter: Rc::clone(self),
        })
    }
}

struct UsageRequest {
    _filter: Rc<Usage>,
}

impl Context for UsageRequest {}

impl HttpContext for UsageRequest {}
