//! What every filter crate builds on: the host interface ([`host`]) and its free functions (headers,
//! bodies, replies, metrics, shared data, callouts), configuration loading, and [`Chain`] (several
//! filters in one module). Filter crates implement [`Filter`] and [`HttpFilter`], and never call a
//! host ABI directly; `wasm_module!` makes one a proxy-wasm module.

use llm_core::config::{self, ConfigError};
use llm_core::metrics::labeled_name;
use serde::de::DeserializeOwned;
use std::rc::Rc;
use std::time::Duration;

mod chain;
#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
#[cfg(feature = "fault-injection")]
mod fault;
pub mod host;
mod view;
#[cfg(target_arch = "wasm32")]
pub mod wasm;

pub use chain::Chain;
pub use host::{current, Action, HttpFilter};
use host::{HeaderMap, MetricKind, SharedWriteError};
pub use view::{
    read_request_body, read_response_body, replace_request_body, replace_response_body,
    resume_request, resume_response, set_request_header, set_response_header,
};

/// Makes `$filter` this module's filter: `llm_host::wasm_module!(AuthFilter);`. Compiled only for
/// Wasm; a native build of the crate has no entry point.
#[macro_export]
macro_rules! wasm_module {
    ($filter:ty) => {
        #[cfg(target_arch = "wasm32")]
        $crate::wasm::proxy_wasm::main! {{
            $crate::wasm::register::<$filter>();
        }}
    };
}

/// One HTTP filter: its name, its configuration, and how it handles a request.
pub trait Filter: Sized + 'static {
    /// The filter's name, as in logs and the `filter` metric label (`llm_auth`, ...).
    const NAME: &'static str;
    /// The configuration as written in Envoy's `configuration` field (JSON).
    type Config: DeserializeOwned;

    /// The compile step after parsing: build regexes, tables, ...; an error names the field at fault.
    fn from_config(config: Self::Config) -> Result<Self, ConfigError>;

    /// The per-request (per-attempt, for upstream filters) handler.
    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter>;

    /// How often [`Filter::on_tick`] runs in the root context; `None`: never.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// Periodic work in the root context, which outlives requests: calls made here survive the
    /// request that asked for them (a request's own callouts are cancelled when it ends).
    fn on_tick(&self) {}

    /// The answer to a gRPC call made from [`Filter::on_tick`]: gRPC `status` (0 = OK) and body.
    fn on_root_grpc_response(&self, _token: u32, _status: u32, _body: Option<&[u8]>) {}

    /// The answer to an HTTP call made from [`Filter::on_tick`] (`None`: the call failed).
    fn on_root_http_response(&self, _token: u32, _answer: Option<&host::HttpAnswer>) {}
}

/// Runs `f` (another stream's callback) apart from the [`Chain`] callback this thread may be in.
/// Envoy can run a filter of another stream inside one of ours: the upstream filters of a callout
/// that a chain's filter just made, on the native module where every filter shares the thread's
/// state. Without this, that filter would read the outer chain's copy of its request headers.
pub fn isolated<R>(f: impl FnOnce() -> R) -> R {
    let outer = view::leave();
    let result = f();
    if let Some(outer) = outer {
        view::enter(outer);
    }
    result
}

/// Forgets the state of a [`Chain`] callback that a panic interrupted, so the next filter on this
/// thread (the native module catches panics and goes on) never sees another request's data.
pub fn reset_after_panic() {
    let _ = view::leave();
}

/// A filter's configuration, checked and compiled: what every backend does at configure time. The
/// error is the one line the host logs (naming the filter and the field, never the configuration
/// itself, which may hold secrets).
pub fn configure<F: Filter>(bytes: &[u8]) -> Result<Loaded<F>, String> {
    let filter = config::parse::<F::Config>(bytes)
        .and_then(F::from_config)
        .map_err(|err: ConfigError| format!("{}: invalid configuration: {err}", F::NAME))?;
    let short_name = F::NAME.strip_prefix("llm_").unwrap_or(F::NAME);
    let requests = Counter::define(&labeled_name(
        "llm_filter_requests_total",
        &[("filter", short_name)],
    ));
    Ok(Loaded {
        filter: Rc::new(filter),
        requests,
    })
}

/// A configured filter as a backend holds it.
pub struct Loaded<F: Filter> {
    pub filter: Rc<F>,
    /// `llm_filter_requests_total{filter=...}`: one per stream (per attempt for the upstream filter).
    /// It shows at a glance that the filter is on the request path.
    requests: Option<Counter>,
}

impl<F: Filter> Loaded<F> {
    /// The handler of a new stream.
    pub fn new_stream(&self) -> Box<dyn HttpFilter> {
        if let Some(requests) = self.requests {
            requests.increment(1);
        }
        let handler = self.filter.http_filter();
        #[cfg(feature = "fault-injection")]
        let handler: Box<dyn HttpFilter> = Box::new(fault::PanicOnRequest {
            filter: F::NAME,
            inner: handler,
        });
        handler
    }
}

/// A counter metric; failures to count are ignored because metrics must never fail a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    id: u32,
}

impl Counter {
    pub fn define(name: &str) -> Option<Self> {
        match current().define_metric(MetricKind::Counter, name) {
            Ok(id) => Some(Counter { id }),
            Err(why) => {
                log::error!("cannot define metric {name}: {why}");
                None
            }
        }
    }

    pub fn increment(&self, by: u64) {
        current().increment_counter(self.id, by);
    }
}

/// A header map read in one host call. Every host call that returns data makes Envoy call back into
/// the VM to allocate the result, so one map read is cheaper than more than two single reads (measured
/// with callgrind: ~22k instructions for the map, ~11k per single read). Values are read as bytes:
/// HTTP allows non-UTF-8 (obs-text) header values, which the SDK's string getters panic on; here
/// they are decoded lossily, so they match nothing and never take the VM down.
/// In a [`Chain`], the filters of one callback share one read.
#[derive(Debug, Default, Clone)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn request() -> Self {
        view::read_map(HeaderMap::Request)
    }

    pub fn response() -> Self {
        view::read_map(HeaderMap::Response)
    }

    fn from_host(map: HeaderMap) -> Self {
        let pairs = current().headers(map);
        Headers(
            pairs
                .into_iter()
                .map(|(name, value)| (name, lossy(value)))
                .collect(),
        )
    }

    /// The first value of `name` (lowercase, as Envoy stores names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(name, _)| name.as_str())
    }

    /// What a host `set` (or, with `None`, remove) of `name` does to the map.
    fn replace(&mut self, name: &str, value: Option<&str>) {
        self.0.retain(|(n, _)| n != name);
        if let Some(value) = value {
            self.0.push((name.to_string(), value.to_string()));
        }
    }
}

/// One request header, read as bytes and decoded lossily (see [`Headers`]).
pub fn request_header(name: &str) -> Option<String> {
    view::read_header(HeaderMap::Request, name)
}

/// One response header, read as bytes and decoded lossily (see [`Headers`]).
pub fn response_header(name: &str) -> Option<String> {
    view::read_header(HeaderMap::Response, name)
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// Sends `reply` to the client instead of forwarding the request. The caller returns `Action::Pause`.
pub fn send_local_reply(reply: &llm_core::api::LocalReply) {
    view::note_reply();
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    if let Err(why) = current().send_reply(reply.status, &headers, reply.body.as_bytes()) {
        log::warn!("cannot send local reply {}: {why}", reply.status);
    }
}

/// Sets filter state `<namespace>.<key>` (in Wasm `wasm.<key>`; readable in access logs as
/// `%FILTER_STATE(wasm.<key>:PLAIN)%`).
pub fn set_filter_state(key: &str, value: &str) {
    if let Err(why) = current().set_filter_state(key, value) {
        log::debug!("cannot set filter state {key}: {why}");
    }
}

/// Unix time in nanoseconds from the host clock.
pub fn now_unix_nanos() -> u64 {
    current().now_unix_nanos()
}

/// How often a compare-and-swap on shared data is retried before giving up. Contention is per key
/// and short-lived; this bound only guards against a livelock.
const CAS_ATTEMPTS: usize = 64;

/// Stores a full bucket under `key` unless one exists. Envoy does not compare-and-swap the first write
/// of a key, so buckets known from config are created at configure time, before any request.
pub fn ensure_bucket(key: &str, limit: &llm_core::ratelimit::RateLimit) {
    ensure_shared(key, &limit.full().encode());
}

/// Takes `cost` from the token bucket stored under `key` in shared data (shared by every worker of
/// this VM id), with compare-and-swap so concurrent workers never lose an update. `None` when the
/// shared data could not be updated; the caller decides whether that fails open or closed.
pub fn take_from_bucket(
    key: &str,
    limit: &llm_core::ratelimit::RateLimit,
    now_ns: u64,
    cost: u64,
) -> Option<llm_core::ratelimit::Outcome> {
    use llm_core::ratelimit::BucketState;
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match current().shared_get(key) {
            Ok(found) => found,
            Err(why) => {
                log::warn!("shared data read failed: {why}");
                return None;
            }
        };
        let state = bytes.as_deref().and_then(BucketState::decode);
        let (outcome, next) = limit.take(state, now_ns, cost);
        if !outcome.allowed && state.is_some() {
            return Some(outcome); // nothing to write
        }
        match current().shared_set(key, &next.encode(), cas) {
            Ok(()) => return Some(outcome),
            Err(SharedWriteError::CasMismatch) => continue,
            Err(SharedWriteError::Failed(why)) => {
                log::warn!("shared data write failed: {why}");
                return None;
            }
        }
    }
    log::warn!("shared data stayed contended after {CAS_ATTEMPTS} attempts");
    None
}

/// Stores `bytes` under `key` unless the key exists (for counters known from config, created before
/// traffic because Envoy does not compare-and-swap the first write of a key).
pub fn ensure_shared(key: &str, bytes: &[u8]) {
    if let Ok((None, _)) = current().shared_get(key) {
        if let Err(why) = current().shared_set(key, bytes, None) {
            log::warn!("cannot create shared data: {why:?}");
        }
    }
}

/// Reads `key`, lets `update` compute the new value from the current one, and writes it with
/// compare-and-swap, retrying on conflicts. Returns whether the write happened.
pub fn update_shared(key: &str, update: impl Fn(Option<&[u8]>) -> Vec<u8>) -> bool {
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match current().shared_get(key) {
            Ok(found) => found,
            Err(why) => {
                log::warn!("shared data read failed: {why}");
                return false;
            }
        };
        let next = update(bytes.as_deref());
        match current().shared_set(key, &next, cas) {
            Ok(()) => return true,
            Err(SharedWriteError::CasMismatch) => continue,
            Err(SharedWriteError::Failed(why)) => {
                log::warn!("shared data write failed: {why}");
                return false;
            }
        }
    }
    log::warn!("shared data stayed contended after {CAS_ATTEMPTS} attempts");
    false
}

/// Reads `key` from shared data.
pub fn read_shared(key: &str) -> Option<Vec<u8>> {
    current().shared_get(key).ok().and_then(|(bytes, _)| bytes)
}

/// A histogram metric (Envoy's default buckets; visible after the stats flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    id: u32,
}

impl Histogram {
    pub fn define(name: &str) -> Option<Self> {
        match current().define_metric(MetricKind::Histogram, name) {
            Ok(id) => Some(Histogram { id }),
            Err(why) => {
                log::error!("cannot define metric {name}: {why}");
                None
            }
        }
    }

    pub fn record(&self, value: u64) {
        current().record_histogram(self.id, value);
    }
}

/// A gauge metric: a value set, not accumulated (e.g. what a cache holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gauge {
    id: u32,
}

impl Gauge {
    pub fn define(name: &str) -> Option<Self> {
        match current().define_metric(MetricKind::Gauge, name) {
            Ok(id) => Some(Gauge { id }),
            Err(why) => {
                log::error!("cannot define metric {name}: {why}");
                None
            }
        }
    }

    pub fn set(&self, value: u64) {
        current().set_gauge(self.id, value);
    }
}

/// The request body a filter holds until it is complete (its headers having been paused).
#[derive(Debug, Default)]
pub struct BodyBuffer {
    reading: bool,
    size: usize,
}

impl BodyBuffer {
    /// Starts holding the body; the headers callback then returns `Action::Pause`.
    pub fn start(&mut self) {
        self.reading = true;
    }

    pub fn is_reading(&self) -> bool {
        self.reading
    }
}

/// A handler that holds request bodies with a [`BodyBuffer`].
pub trait HoldsRequestBody: HttpFilter {
    fn body_buffer(&mut self) -> &mut BodyBuffer;

    /// The body is complete (`size` bytes, read with [`read_request_body`]).
    fn on_complete_body(&mut self, size: usize) -> Action;

    /// A partial body of `size` bytes arrived; the default waits for the rest.
    fn on_partial_body(&mut self, _size: usize) -> Action {
        Action::Pause
    }
}

/// The body of `on_request_body` for a [`HoldsRequestBody`] context.
pub fn request_body<C: HoldsRequestBody>(
    context: &mut C,
    size: usize,
    end_of_stream: bool,
) -> Action {
    let buffer = context.body_buffer();
    if !buffer.reading {
        return Action::Continue;
    }
    buffer.size = size;
    if !end_of_stream {
        return context.on_partial_body(size);
    }
    buffer.reading = false;
    context.on_complete_body(size)
}

/// The body of `on_request_trailers`: a body followed by trailers never sees end_of_stream in
/// the body callback, so it is complete here.
pub fn request_trailers<C: HoldsRequestBody>(context: &mut C) -> Action {
    let buffer = context.body_buffer();
    if !buffer.reading {
        return Action::Continue;
    }
    buffer.reading = false;
    let size = buffer.size;
    context.on_complete_body(size)
}

/// Sends a `ShouldRateLimit` call for `descriptors` to the rate-limit service; the answer arrives in
/// the calling context's `on_grpc_response` with the returned token.
pub fn call_rate_limit_service(
    service: &llm_core::global::Service,
    descriptors: Vec<llm_core::global::Descriptor>,
) -> Result<u32, String> {
    let message = service.request(descriptors);
    current().grpc_call(&host::GrpcCall {
        cluster: &service.cluster,
        grpc_service: &service.target,
        service: llm_core::global::SERVICE,
        method: llm_core::global::METHOD,
        message: &message,
        timeout: service.timeout,
    })
}

/// A property of the stream (see [`host::Host::property`]).
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    current().property(path)
}

/// Whether the request was sent to an upstream endpoint (Envoy's `upstream.address` is set once a
/// connection to one was chosen), even if no response came back.
pub fn reached_upstream() -> bool {
    property(&["upstream", "address"]).is_some_and(|address| !address.is_empty())
}

/// The chosen upstream endpoint's `metadata.filter_metadata.llm.provider`, if set.
pub fn endpoint_provider() -> Option<String> {
    const PATH: [&str; 5] = [
        "xds",
        "upstream_host_metadata",
        "filter_metadata",
        "llm",
        "provider",
    ];
    property(&PATH).and_then(|bytes| String::from_utf8(bytes).ok())
}
