//! `llm_provider`: upstream filter adapting each attempt to its provider's wire format and credentials.
//!
//! Thin glue: the logic lives in `llm-core`. See README.md for the configuration reference.

use llm_core::config::ConfigError;
use llm_core::filters::ProviderConfig;
use llm_host::Filter;
use proxy_wasm::traits::{Context, HttpContext};
use std::rc::Rc;

proxy_wasm::main! {{
    llm_host::register::<Provider>();
}}

pub struct Provider {
    #[allow(dead_code)]
    config: ProviderConfig,
}

impl Filter for Provider {
    const NAME: &'static str = "llm_provider";
    type Config = ProviderConfig;

    fn from_config(config: ProviderConfig) -> Result<Self, ConfigError> {
        Ok(Provider { config })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(ProviderRequest {
            _filter: Rc::clone(self),
        })
    }
}

struct ProviderRequest {
    _filter: Rc<Provider>,
}

impl Context for ProviderRequest {}

impl HttpContext for ProviderRequest {}
