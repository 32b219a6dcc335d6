//! `llm_router`: reads the model from the request body and routes it to a provider cluster.
//!
//! Thin glue: the logic lives in `llm-core`. See README.md for the configuration reference.

use llm_core::config::ConfigError;
use llm_core::filters::RouterConfig;
use llm_host::Filter;
use proxy_wasm::traits::{Context, HttpContext};
use std::rc::Rc;

proxy_wasm::main! {{
    llm_host::register::<Router>();
}}

pub struct Router {
    #[allow(dead_code)]
    config: RouterConfig,
}

impl Filter for Router {
    const NAME: &'static str = "llm_router";
    type Config = RouterConfig;

    fn from_config(config: RouterConfig) -> Result<Self, ConfigError> {
        Ok(Router { config })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(RouterRequest {
            _filter: Rc::clone(self),
        })
    }
}

struct RouterRequest {
    _filter: Rc<Router>,
}

impl Context for RouterRequest {}

impl HttpContext for RouterRequest {}
