//! Fault injection for tests (feature `fault-injection`): wraps a filter's stream handler so that a
//! request carrying `x-fault-inject: <this filter's name>` panics in the request-headers callback, as
//! a bug would.

use crate::host::{Action, HttpFilter};

pub struct PanicOnRequest {
    pub filter: &'static str,
    pub inner: Box<dyn HttpFilter>,
}

impl HttpFilter for PanicOnRequest {
    #[allow(clippy::panic)]
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        if crate::request_header("x-fault-inject").as_deref() == Some(self.filter) {
            panic!("fault injected by x-fault-inject");
        }
        self.inner.on_request_headers(end_of_stream)
    }

    fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.inner.on_request_body(size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        self.inner.on_request_trailers()
    }

    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        self.inner.on_response_headers(end_of_stream)
    }

    fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.inner.on_response_body(size, end_of_stream)
    }

    fn on_response_trailers(&mut self) -> Action {
        self.inner.on_response_trailers()
    }

    fn on_grpc_response(&mut self, token: u32, status: u32, body: Option<&[u8]>) {
        self.inner.on_grpc_response(token, status, body)
    }

    fn on_log(&mut self) {
        self.inner.on_log()
    }
}
