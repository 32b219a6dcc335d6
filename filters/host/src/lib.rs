//! Glue shared by every filter crate: the root context that loads and validates configuration, and the
//! metrics every filter reports. Filter crates implement [`Filter`] and call [`register`].

use llm_core::config::{self, ConfigError};
use llm_core::metrics::labeled_name;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{ContextType, LogLevel, MapType, MetricType};
use serde::de::DeserializeOwned;
use std::rc::Rc;
use std::time::Duration;

mod chain;
#[cfg(feature = "fault-injection")]
mod fault;
mod view;

pub use chain::Chain;
pub use view::{
    read_request_body, read_response_body, replace_request_body, replace_response_body,
    resume_request, set_request_header, set_response_header,
};

/// One HTTP filter: its name, its configuration, and how it handles a request.
pub trait Filter: Sized + 'static {
    /// The filter's name, as in logs and the `filter` metric label (`llm_auth`, ...).
    const NAME: &'static str;
    /// The configuration as written in Envoy's `configuration` field (JSON).
    type Config: DeserializeOwned;

    /// The compile step after parsing: build regexes, tables, ...; an error names the field at fault.
    fn from_config(config: Self::Config) -> Result<Self, ConfigError>;

    /// The per-request (per-attempt, for upstream filters) context.
    fn http_context(self: &Rc<Self>, context_id: u32) -> Box<dyn HttpContext>;

    /// How often [`Filter::on_tick`] runs in the root context; `None`: never.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// Periodic work in the root context, which outlives requests: calls made here survive the
    /// request that asked for them (a request's own callouts are cancelled when it ends).
    fn on_tick(&self) {}

    /// The answer to a gRPC call made from [`Filter::on_tick`]: gRPC `status` (0 = OK) and body.
    fn on_root_grpc_response(&self, _token: u32, _status: u32, _body: Option<Vec<u8>>) {}
}

/// Installs `F` as this module's root context. Call from `proxy_wasm::main!`.
pub fn register<F: Filter>() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(FilterRoot::<F>::new()) });
}

/// A counter metric; failures to count are ignored because metrics must never fail a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    id: u32,
}

impl Counter {
    pub fn define(name: &str) -> Option<Self> {
        match hostcalls::define_metric(MetricType::Counter, name) {
            Ok(id) => Some(Counter { id }),
            Err(status) => {
                log::error!("cannot define metric {name}: {status:?}");
                None
            }
        }
    }

    pub fn increment(&self, by: i64) {
        let _ = hostcalls::increment_metric(self.id, by);
    }
}

struct FilterRoot<F: Filter> {
    filter: Option<Rc<F>>,
    /// `llm_filter_requests_total{filter=...}`: one per HTTP context, i.e. per request (per attempt for
    /// the upstream filter). It shows at a glance that the filter is on the request path.
    requests: Option<Counter>,
}

impl<F: Filter> FilterRoot<F> {
    fn new() -> Self {
        FilterRoot {
            filter: None,
            requests: None,
        }
    }
}

impl<F: Filter> Context for FilterRoot<F> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(filter) = &self.filter {
            filter.on_root_grpc_response(token_id, status_code, grpc_response_body(response_size));
        }
    }
}

impl<F: Filter> RootContext for FilterRoot<F> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        // One line naming the filter and the field; never the configuration itself (it may hold secrets).
        let filter = match config::parse::<F::Config>(&bytes).and_then(F::from_config) {
            Ok(filter) => filter,
            Err(err) => {
                log::error!("{}: invalid configuration: {err}", F::NAME);
                return false;
            }
        };
        if let Some(period) = filter.tick_period() {
            self.set_tick_period(period);
        }
        self.filter = Some(Rc::new(filter));
        let short_name = F::NAME.strip_prefix("llm_").unwrap_or(F::NAME);
        self.requests = Counter::define(&labeled_name(
            "llm_filter_requests_total",
            &[("filter", short_name)],
        ));
        true
    }

    fn on_tick(&mut self) {
        if let Some(filter) = &self.filter {
            filter.on_tick();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let filter = self.filter.as_ref()?;
        if let Some(requests) = self.requests {
            requests.increment(1);
        }
        let context = filter.http_context(context_id);
        #[cfg(feature = "fault-injection")]
        let context: Box<dyn HttpContext> = Box::new(fault::PanicOnRequest {
            filter: F::NAME,
            inner: context,
        });
        Some(context)
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
        view::read_map(MapType::HttpRequestHeaders)
    }

    pub fn response() -> Self {
        view::read_map(MapType::HttpResponseHeaders)
    }

    fn from_host(map: MapType) -> Self {
        let pairs = hostcalls::get_map_bytes(map).unwrap_or_default();
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
    view::read_header(MapType::HttpRequestHeaders, name)
}

/// One response header, read as bytes and decoded lossily (see [`Headers`]).
pub fn response_header(name: &str) -> Option<String> {
    view::read_header(MapType::HttpResponseHeaders, name)
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
    if let Err(status) = hostcalls::send_http_response(
        u32::from(reply.status),
        headers,
        Some(reply.body.as_bytes()),
    ) {
        log::warn!("cannot send local reply {}: {status:?}", reply.status);
    }
}

/// Sets filter state `wasm.<key>` (readable in access logs as `%FILTER_STATE(wasm.<key>:PLAIN)%`).
pub fn set_filter_state(key: &str, value: &str) {
    if let Err(status) = hostcalls::set_property(vec![key], Some(value.as_bytes())) {
        log::debug!("cannot set filter state {key}: {status:?}");
    }
}

/// Unix time in nanoseconds from the host clock.
pub fn now_unix_nanos() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
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
    use proxy_wasm::types::Status;
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match hostcalls::get_shared_data(key) {
            Ok(found) => found,
            Err(status) => {
                log::warn!("shared data read failed: {status:?}");
                return None;
            }
        };
        let state = bytes.as_deref().and_then(BucketState::decode);
        let (outcome, next) = limit.take(state, now_ns, cost);
        if !outcome.allowed && state.is_some() {
            return Some(outcome); // nothing to write
        }
        match hostcalls::set_shared_data(key, Some(&next.encode()), cas) {
            Ok(()) => return Some(outcome),
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log::warn!("shared data write failed: {status:?}");
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
    if let Ok((None, _)) = hostcalls::get_shared_data(key) {
        if let Err(status) = hostcalls::set_shared_data(key, Some(bytes), None) {
            log::warn!("cannot create shared data: {status:?}");
        }
    }
}

/// Reads `key`, lets `update` compute the new value from the current one, and writes it with
/// compare-and-swap, retrying on conflicts. Returns whether the write happened.
pub fn update_shared(key: &str, update: impl Fn(Option<&[u8]>) -> Vec<u8>) -> bool {
    use proxy_wasm::types::Status;
    for _ in 0..CAS_ATTEMPTS {
        let (bytes, cas) = match hostcalls::get_shared_data(key) {
            Ok(found) => found,
            Err(status) => {
                log::warn!("shared data read failed: {status:?}");
                return false;
            }
        };
        let next = update(bytes.as_deref());
        match hostcalls::set_shared_data(key, Some(&next), cas) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(status) => {
                log::warn!("shared data write failed: {status:?}");
                return false;
            }
        }
    }
    log::warn!("shared data stayed contended after {CAS_ATTEMPTS} attempts");
    false
}

/// Reads `key` from shared data.
pub fn read_shared(key: &str) -> Option<Vec<u8>> {
    hostcalls::get_shared_data(key)
        .ok()
        .and_then(|(bytes, _)| bytes)
}

/// A histogram metric (Envoy's default buckets; visible after the stats flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Histogram {
    id: u32,
}

impl Histogram {
    pub fn define(name: &str) -> Option<Self> {
        match hostcalls::define_metric(MetricType::Histogram, name) {
            Ok(id) => Some(Histogram { id }),
            Err(status) => {
                log::error!("cannot define metric {name}: {status:?}");
                None
            }
        }
    }

    pub fn record(&self, value: u64) {
        let _ = hostcalls::record_metric(self.id, value);
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

/// A context that holds request bodies with a [`BodyBuffer`].
pub trait HoldsRequestBody: HttpContext {
    fn body_buffer(&mut self) -> &mut BodyBuffer;

    /// The body is complete (`size` bytes, read with `get_http_request_body(0, size)`).
    fn on_complete_body(&mut self, size: usize) -> proxy_wasm::types::Action;

    /// A partial body of `size` bytes arrived; the default waits for the rest.
    fn on_partial_body(&mut self, _size: usize) -> proxy_wasm::types::Action {
        proxy_wasm::types::Action::Pause
    }
}

/// The body of `on_http_request_body` for a [`HoldsRequestBody`] context.
pub fn request_body<C: HoldsRequestBody>(
    context: &mut C,
    size: usize,
    end_of_stream: bool,
) -> proxy_wasm::types::Action {
    let buffer = context.body_buffer();
    if !buffer.reading {
        return proxy_wasm::types::Action::Continue;
    }
    buffer.size = size;
    if !end_of_stream {
        return context.on_partial_body(size);
    }
    buffer.reading = false;
    context.on_complete_body(size)
}

/// The body of `on_http_request_trailers`: a body followed by trailers never sees end_of_stream in
/// the body callback, so it is complete here.
pub fn request_trailers<C: HoldsRequestBody>(context: &mut C) -> proxy_wasm::types::Action {
    let buffer = context.body_buffer();
    if !buffer.reading {
        return proxy_wasm::types::Action::Continue;
    }
    buffer.reading = false;
    let size = buffer.size;
    context.on_complete_body(size)
}

/// Sends a `ShouldRateLimit` call for `descriptors` to the rate-limit service; the answer arrives in
/// the calling context's `on_grpc_call_response` with the returned token.
pub fn call_rate_limit_service(
    service: &llm_core::global::Service,
    descriptors: Vec<llm_core::global::Descriptor>,
) -> Result<u32, proxy_wasm::types::Status> {
    let message = service.request(descriptors);
    hostcalls::dispatch_grpc_call(
        &service.target,
        llm_core::global::SERVICE,
        llm_core::global::METHOD,
        Vec::new(),
        Some(&message),
        service.timeout,
    )
}

/// The body of the gRPC answer being delivered (empty on failures).
pub fn grpc_response_body(size: usize) -> Option<Vec<u8>> {
    if size == 0 {
        return None;
    }
    hostcalls::get_buffer(proxy_wasm::types::BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
}

/// Whether the request was sent to an upstream endpoint (Envoy's `upstream.address` is set once a
/// connection to one was chosen), even if no response came back.
pub fn reached_upstream() -> bool {
    hostcalls::get_property(vec!["upstream", "address"])
        .ok()
        .flatten()
        .is_some_and(|address| !address.is_empty())
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
    hostcalls::get_property(PATH.to_vec())
        .ok()
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes).ok())
}
