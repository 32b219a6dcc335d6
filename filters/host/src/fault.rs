//! Fault injection for tests (feature `fault-injection`): wraps a filter's HTTP context so that a request
//! carrying `x-fault-inject: <this filter's name>` panics in the request-headers callback, as a bug would.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

pub struct PanicOnRequest {
    pub filter: &'static str,
    pub inner: Box<dyn HttpContext>,
}

impl Context for PanicOnRequest {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        self.inner
            .on_http_call_response(token, headers, body, trailers)
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.inner.on_grpc_call_response(token, status, size)
    }

    fn on_done(&mut self) -> bool {
        self.inner.on_done()
    }
}

impl HttpContext for PanicOnRequest {
    #[allow(clippy::panic)]
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        if crate::request_header("x-fault-inject").as_deref() == Some(self.filter) {
            panic!("fault injected by x-fault-inject");
        }
        self.inner
            .on_http_request_headers(num_headers, end_of_stream)
    }

    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.inner.on_http_request_body(size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, num_trailers: usize) -> Action {
        self.inner.on_http_request_trailers(num_trailers)
    }

    fn on_http_response_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.inner
            .on_http_response_headers(num_headers, end_of_stream)
    }

    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.inner.on_http_response_body(size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, num_trailers: usize) -> Action {
        self.inner.on_http_response_trailers(num_trailers)
    }

    fn on_log(&mut self) {
        self.inner.on_log()
    }
}
