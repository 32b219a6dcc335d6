//! The host interface: everything a filter needs from the proxy it runs in. Three implementations:
//! proxy-wasm ([`crate::wasm`], in the `.wasm` modules), Envoy's dynamic modules (the `llm-native`
//! crate, in `libllm_gateway.so`) and an in-memory fake ([`crate::fake`], for unit tests).
//!
//! The host is ambient, as in both of Envoy's ABIs: each backend installs itself for the thread that
//! runs a callback (and knows which stream the callback is for), and the filters call the free
//! functions of this crate, which go through [`current`].

use std::cell::Cell;
use std::time::Duration;

/// What a callback tells the host: go on with the next filter, or hold the request (or response)
/// here until the filter resumes it or more of the body arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

/// One header map of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderMap {
    Request,
    Response,
}

/// One body of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    Request,
    Response,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    Counter,
    Histogram,
    Gauge,
}

/// Why a shared-data write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedWriteError {
    /// Another writer changed the value since it was read: read again and retry.
    CasMismatch,
    Failed(String),
}

/// A host operation that failed; the text is for logs (it never holds request data).
pub type HostResult<T> = Result<T, String>;

/// What the filters need from a host. Stream operations act on the stream whose callback is running.
pub trait Host {
    /// Every value of the header map, names lowercase; values as bytes (HTTP allows obs-text).
    fn headers(&self, map: HeaderMap) -> Vec<(String, Vec<u8>)>;
    /// The first value of `name`.
    fn header(&self, map: HeaderMap, name: &str) -> Option<Vec<u8>>;
    /// Sets `name` (replacing every value), or removes it with `None`.
    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()>;
    /// `size` bytes from `offset` of the body as the host holds it now (buffered and just received).
    fn body(&self, body: Body, offset: usize, size: usize) -> Vec<u8>;
    /// Replaces `size` bytes from `offset` of that body with `new`.
    fn replace_body(&self, body: Body, offset: usize, size: usize, new: &[u8]) -> HostResult<()>;
    /// Answers the client instead of forwarding the request (or replacing the response).
    fn send_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()>;
    /// Resumes a request this filter paused for its own asynchronous call.
    fn resume_request(&self) -> HostResult<()>;
    /// Resumes a response this filter paused (headers or buffered body) for its own call.
    fn resume_response(&self) -> HostResult<()>;
    /// A property of the stream (`["upstream", "address"]`, metadata paths, ...).
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    /// Filter state readable in access logs (`%FILTER_STATE(<namespace>.<key>:PLAIN)%`).
    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()>;
    fn now_unix_nanos(&self) -> u64;
    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32>;
    fn increment_counter(&self, id: u32, by: u64);
    fn record_histogram(&self, id: u32, value: u64);
    fn set_gauge(&self, id: u32, value: u64);
    /// A value shared by every worker, with its version for compare-and-swap (`None`: no such key).
    fn shared_get(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)>;
    /// Writes `value` if the key's version is still `cas` (`None`: unconditionally).
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>)
        -> Result<(), SharedWriteError>;
    /// A unary gRPC call; the answer arrives in the calling context's `on_grpc_response` (or the
    /// root's) with the returned token.
    fn grpc_call(&self, call: &GrpcCall<'_>) -> HostResult<u32>;
    /// An HTTP call from a stream; the answer arrives in that stream's `on_http_response` with the
    /// returned token (a stream's calls end with it).
    fn http_call(&self, call: &HttpCall<'_>) -> HostResult<u32>;
}

/// One HTTP call to a cluster Envoy knows (an embeddings service, a vector database, ...).
#[derive(Debug, Clone, Copy)]
pub struct HttpCall<'a> {
    pub cluster: &'a str,
    /// The request's `:authority` (the service's host name).
    pub authority: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// Headers besides the pseudo-headers.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub timeout: Duration,
}

/// What an HTTP call got back; a call that failed (timeout, reset, no healthy host) has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// One unary gRPC call.
#[derive(Debug, Clone, Copy)]
pub struct GrpcCall<'a> {
    /// The Envoy cluster of the service.
    pub cluster: &'a str,
    /// The same as a serialized `GrpcService` (what proxy-wasm takes).
    pub grpc_service: &'a str,
    pub service: &'a str,
    pub method: &'a str,
    pub message: &'a [u8],
    pub timeout: Duration,
}

thread_local! {
    static CURRENT: Cell<Option<&'static dyn Host>> = const { Cell::new(None) };
}

/// Makes `host` the host of this thread's callbacks (each backend calls it before running filters).
pub fn install(host: &'static dyn Host) {
    CURRENT.with(|current| current.set(Some(host)));
}

/// The host of the running callback; outside any (a unit test without the fake) every operation
/// fails softly, as a host that refuses everything would.
pub fn current() -> &'static dyn Host {
    CURRENT.with(Cell::get).unwrap_or(&Detached)
}

/// No host: reads find nothing, writes fail.
struct Detached;

const DETACHED: &str = "no host";

impl Host for Detached {
    fn headers(&self, _: HeaderMap) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    fn header(&self, _: HeaderMap, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn set_header(&self, _: HeaderMap, _: &str, _: Option<&str>) -> HostResult<()> {
        Err(DETACHED.into())
    }
    fn body(&self, _: Body, _: usize, _: usize) -> Vec<u8> {
        Vec::new()
    }
    fn replace_body(&self, _: Body, _: usize, _: usize, _: &[u8]) -> HostResult<()> {
        Err(DETACHED.into())
    }
    fn send_reply(&self, _: u16, _: &[(&str, &str)], _: &[u8]) -> HostResult<()> {
        Err(DETACHED.into())
    }
    fn resume_request(&self) -> HostResult<()> {
        Err(DETACHED.into())
    }
    fn resume_response(&self) -> HostResult<()> {
        Err(DETACHED.into())
    }
    fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
        None
    }
    fn set_filter_state(&self, _: &str, _: &str) -> HostResult<()> {
        Err(DETACHED.into())
    }
    fn now_unix_nanos(&self) -> u64 {
        0
    }
    fn define_metric(&self, _: MetricKind, _: &str) -> HostResult<u32> {
        Err(DETACHED.into())
    }
    fn increment_counter(&self, _: u32, _: u64) {}
    fn record_histogram(&self, _: u32, _: u64) {}
    fn set_gauge(&self, _: u32, _: u64) {}
    fn shared_get(&self, _: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        Err(DETACHED.into())
    }
    fn shared_set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), SharedWriteError> {
        Err(SharedWriteError::Failed(DETACHED.into()))
    }
    fn grpc_call(&self, _: &GrpcCall<'_>) -> HostResult<u32> {
        Err(DETACHED.into())
    }
    fn http_call(&self, _: &HttpCall<'_>) -> HostResult<u32> {
        Err(DETACHED.into())
    }
}

/// One filter's handling of one stream (one attempt, for upstream filters). The callbacks come in
/// the orders Envoy produces; `size` is how many body bytes the host holds for this filter now (the
/// new chunk, plus everything since the filter last continued).
pub trait HttpFilter {
    fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_request_trailers(&mut self) -> Action {
        Action::Continue
    }
    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_body(&mut self, _size: usize, _end_of_stream: bool) -> Action {
        Action::Continue
    }
    fn on_response_trailers(&mut self) -> Action {
        Action::Continue
    }
    /// The answer to this stream's gRPC call `token`: gRPC status (0 = OK) and the message.
    fn on_grpc_response(&mut self, _token: u32, _status: u32, _body: Option<&[u8]>) {}
    /// The answer to this stream's HTTP call `token` (`None`: the call failed).
    fn on_http_response(&mut self, _token: u32, _answer: Option<&HttpAnswer>) {}
    /// The stream is complete (after the response, or after a reset); the access log is written next.
    fn on_log(&mut self) {}
}
