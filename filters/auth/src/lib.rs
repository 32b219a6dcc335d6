//! `llm_auth`: caller authentication, per-model access and request rate limits.
//!
//! Thin glue: the logic lives in `llm-core`. See README.md for the configuration reference.

use llm_core::config::ConfigError;
use llm_core::filters::AuthConfig;
use llm_host::Filter;
use proxy_wasm::traits::{Context, HttpContext};
use std::rc::Rc;

proxy_wasm::main! {{
    llm_host::register::<Auth>();
}}

pub struct Auth {
    #[allow(dead_code)]
    config: AuthConfig,
}

impl Filter for Auth {
    const NAME: &'static str = "llm_auth";
    type Config = AuthConfig;

    fn from_config(config: AuthConfig) -> Result<Self, ConfigError> {
        Ok(Auth { config })
    }

    fn http_context(self: &Rc<Self>, _context_id: u32) -> Box<dyn HttpContext> {
        Box::new(AuthRequest {
            _filter: Rc::clone(self),
        })
    }
}

struct AuthRequest {
    _filter: Rc<Auth>,
}

impl Context for AuthRequest {}

impl HttpContext for AuthRequest {}
