//! `libllm_gateway.so`: the filters as one Envoy dynamic module (Envoy 1.40's native extension ABI).
//! Envoy's `dynamic_modules` HTTP filter picks one by `filter_name`: `llm_gateway` (auth, router, guard,
//! cache, pii and usage in one chain), any single filter (`llm_auth`, ...), and `llm_provider`, which goes in a
//! cluster's upstream `http_filters`. The filters are the same code as in the Wasm modules; this
//! crate is their host (`llm_host::host::Host`) over the ABI's callbacks.
//!
//! Differences from proxy-wasm that this backend absorbs:
//! - Envoy runs one filter config on every worker thread; the filters are single-threaded (`Rc`), so
//!   each worker builds its own instance from the config bytes on its first stream, as each Wasm VM
//!   does. Shared data (rate-limit buckets, budgets) is process-wide state behind a lock.
//! - Metrics must be declared while the config loads: every family of `llm_core::metrics::FAMILIES`
//!   is declared then with its labels; label values come per increment.
//! - No gRPC callouts: gRPC calls are HTTP/2 callouts with gRPC framing. No timers: calls that must
//!   outlive their request (usage reports) go to the main thread through the config's scheduler,
//!   and llm_provider's timer work (Vertex AI tokens) runs on the main thread when a thread of
//!   ours commits that scheduler every tick period.
//! - A local reply is sent after the filter's callback returns (Envoy runs the reply through the
//!   filters synchronously, re-entering this module).
//! - A panic never crosses the FFI boundary: it is caught, logged once, and answered with a 500.
#![allow(unsafe_code)]
// The FFI boundary: every unsafe block reads or passes Envoy's pointers.
// The hooks are `extern "C"` entry points Envoy calls with its own pointers; they cannot be `unsafe`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

mod abi;

use abi::*;
use llm_host::host::{
    self, Action, Body, HeaderMap, Host, HostResult, HttpFilter, MetricKind, SharedWriteError,
};
use llm_host::{configure, Filter, Loaded};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Program init, logging, panics

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let _ = log::set_logger(&ENVOY_LOG);
    log::set_max_level(log::LevelFilter::Info);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Once per process: a bug that panics on every request must not flood the log.
        // Where, never the message: a panic's message may quote request data.
        if !PANIC_LOGGED.swap(true, Ordering::Relaxed) {
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            log::error!("llm_gateway: a filter panicked at {place}; the request got a 500");
        }
        let _ = &default_hook;
    }));
    ABI_VERSION.as_ptr().cast()
}

static PANIC_LOGGED: AtomicBool = AtomicBool::new(false);

struct EnvoyLog;

static ENVOY_LOG: EnvoyLog = EnvoyLog;

fn envoy_level(level: log::Level) -> i32 {
    match level {
        log::Level::Error => LOG_ERROR,
        log::Level::Warn => LOG_WARN,
        log::Level::Info => LOG_INFO,
        log::Level::Debug => LOG_DEBUG,
        log::Level::Trace => LOG_TRACE,
    }
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // SAFETY: a plain call with an integer.
        unsafe { envoy_dynamic_module_callback_log_enabled(envoy_level(metadata.level())) }
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let message = record.args().to_string();
        // SAFETY: the buffer is read during the call only.
        unsafe {
            envoy_dynamic_module_callback_log(
                envoy_level(record.level()),
                ModuleBuffer::of(message.as_bytes()),
            )
        }
    }

    fn flush(&self) {}
}

// ---------------------------------------------------------------------------------------------
// The filters this module offers

/// A configured filter, as one thread holds it.
trait Factory {
    fn new_stream(&self) -> Box<dyn HttpFilter>;
    fn has_tick(&self) -> bool;
    fn tick_period(&self) -> Option<Duration>;
    fn on_tick(&self);
    fn on_root_grpc_response(&self, token: u32, status: u32, body: Option<&[u8]>);
    fn on_root_http_response(&self, token: u32, answer: Option<&host::HttpAnswer>);
}

impl<F: Filter> Factory for Loaded<F> {
    fn new_stream(&self) -> Box<dyn HttpFilter> {
        Loaded::new_stream(self)
    }
    fn has_tick(&self) -> bool {
        self.filter.tick_period().is_some()
    }
    fn tick_period(&self) -> Option<Duration> {
        self.filter.tick_period()
    }
    fn on_tick(&self) {
        self.filter.on_tick();
    }
    fn on_root_grpc_response(&self, token: u32, status: u32, body: Option<&[u8]>) {
        self.filter.on_root_grpc_response(token, status, body);
    }
    fn on_root_http_response(&self, token: u32, answer: Option<&host::HttpAnswer>) {
        self.filter.on_root_http_response(token, answer);
    }
}

/// JWT identities come from `jwt_authn`'s payload in nested dynamic metadata, which Envoy 1.40's
/// dynamic-module ABI cannot read (one level: namespace and key): such requests get 401. Said once,
/// at load, naming the field.
fn warn_if_jwt(name: &str, bytes: &[u8]) {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let (jwt, field) = match name {
        "llm_gateway" => (config.get("auth").and_then(|a| a.get("jwt")), "auth.jwt"),
        "llm_auth" => (config.get("jwt"), "jwt"),
        _ => (None, ""),
    };
    if jwt.is_some_and(|j| !j.is_null()) {
        log::warn!(
            "{name}: field `{field}`: JWT identities need jwt_authn's payload from nested dynamic metadata, which Envoy's dynamic-module ABI cannot read yet; on the native module JWT requests get 401 (use the Wasm module for JWT)"
        );
    }
}

fn load(name: &str, bytes: &[u8]) -> Result<Rc<dyn Factory>, String> {
    fn rc<F: Filter>(loaded: Loaded<F>) -> Rc<dyn Factory> {
        Rc::new(loaded)
    }
    match name {
        "llm_gateway" => configure::<llm_gateway::Gateway>(bytes).map(rc),
        "llm_auth" => configure::<llm_auth::AuthFilter>(bytes).map(rc),
        "llm_router" => configure::<llm_router::RouterFilter>(bytes).map(rc),
        "llm_guard" => configure::<llm_guard::GuardFilter>(bytes).map(rc),
        "llm_cache" => configure::<llm_cache::CacheFilter>(bytes).map(rc),
        "llm_pii" => configure::<llm_pii::PiiFilter>(bytes).map(rc),
        "llm_usage" => configure::<llm_usage::UsageFilter>(bytes).map(rc),
        "llm_provider" => configure::<llm_provider::ProviderFilter>(bytes).map(rc),
        other => Err(format!(
            "llm_gateway: unknown filter_name {other:?} (llm_gateway, llm_auth, llm_router, llm_guard, llm_cache, llm_pii, llm_usage or llm_provider)"
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Filter configs

/// One `dynamic_modules` filter config; shared by every worker (hence only `Send + Sync` state).
struct Config {
    id: u64,
    name: String,
    bytes: Vec<u8>,
    /// An upstream filter (llm_provider): it runs after routing, so it never clears the route.
    upstream: bool,
    /// Envoy's config object (`envoy_dynamic_module_type_http_filter_config_envoy_ptr`).
    envoy: usize,
    /// The config's scheduler, which brings work to the main thread (`commit` works from any).
    /// Made on first use, from whichever thread needs it.
    scheduler: OnceLock<usize>,
    metrics: Metrics,
    /// Calls that must outlive their request, sent from the main thread.
    outbox: Mutex<Vec<OutgoingCall>>,
    /// Envoy destroyed the config: its ticker stops.
    destroyed: AtomicBool,
}

/// The scheduler event that runs the main thread's instance's timer work.
const EVENT_TICK: u64 = 1;

/// Timer work for llm_provider (Vertex AI token refreshes), which must not wait for traffic: the
/// ABI has no timers, so a thread asks the main thread, through the config's scheduler, to run
/// the main thread's instance's `on_tick` every `period`, until Envoy destroys the config.
fn start_ticker(config: &Arc<Config>, period: Duration) {
    if config.scheduler().is_null() {
        return;
    }
    let weak = Arc::downgrade(config);
    let spawned = std::thread::Builder::new()
        .name("llm-ticker".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            // Held while committing: the scheduler is deleted only when the config is dropped.
            let Some(config) = weak.upgrade() else {
                break;
            };
            if config.destroyed.load(Ordering::Acquire) {
                break;
            }
            if let Some(&scheduler) = config.scheduler.get() {
                if scheduler != 0 {
                    // SAFETY: the config's scheduler, alive while `config` is; callable from any thread.
                    unsafe {
                        envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                            scheduler as SchedulerPtr,
                            EVENT_TICK,
                        )
                    };
                }
            }
        });
    if let Err(why) = spawned {
        log::warn!(
            "{}: no timer thread ({why}); its background work does not run",
            config.name
        );
    }
}

/// A root-context call: gRPC (`headers` and `body` already framed as gRPC) or plain HTTP.
struct OutgoingCall {
    cluster: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
    token: u32,
    kind: CallKind,
}

static NEXT_CONFIG_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's instance of each config (the main thread's is built at load time), with the
    /// config, so instances of configs gone are dropped.
    static INSTANCES: RefCell<HashMap<u64, Instance>> = RefCell::new(HashMap::new());
    /// Root-context calls in flight from the main thread: (config id, callout id) → token and kind.
    static ROOT_CALLS: RefCell<HashMap<(u64, u64), (u32, CallKind)>> = RefCell::new(HashMap::new());
}

struct Instance {
    config: std::sync::Weak<Config>,
    factory: Rc<dyn Factory>,
}

/// This thread's instance of config `id`.
fn thread_instance(id: u64) -> Option<Rc<dyn Factory>> {
    INSTANCES.with(|i| i.borrow().get(&id).map(|found| Rc::clone(&found.factory)))
}

/// Keeps `factory` as this thread's instance of `config`, dropping those of configs Envoy is done
/// with (xDS updates replace configs; each worker holds an instance of each).
fn keep_instance(config: &Arc<Config>, factory: Rc<dyn Factory>) {
    INSTANCES.with(|i| {
        let mut instances = i.borrow_mut();
        instances.retain(|_, instance| instance.config.strong_count() > 0);
        instances.insert(
            config.id,
            Instance {
                config: Arc::downgrade(config),
                factory,
            },
        );
    });
}

/// Metric families declared at load, and the series (family + label values) made from them.
#[derive(Default)]
struct Metrics {
    /// By `(name, label names sorted)`.
    families: HashMap<(String, Vec<String>), Family>,
    series: RwLock<Vec<Series>>,
    by_name: RwLock<HashMap<String, u32>>,
}

struct Family {
    /// Envoy's id.
    id: usize,
    kind: MetricKind,
    /// Label names in declared order.
    labels: Vec<String>,
}

struct Series {
    family: usize,
    kind: MetricKind,
    values: Vec<String>,
}

impl Metrics {
    fn declare(envoy: ConfigEnvoyPtr) -> Metrics {
        let mut metrics = Metrics::default();
        use llm_core::metrics::Kind;
        for (name, family_kind, labels) in llm_core::metrics::FAMILIES {
            let mut label_names: Vec<ModuleBuffer> = labels
                .iter()
                .map(|l| ModuleBuffer::of(l.as_bytes()))
                .collect();
            let mut id = 0usize;
            // Envoy prefixes the config's `metrics_namespace` (`llm` in the shipped configs), so
            // `llm_filter_requests_total` is declared as `filter_requests_total`.
            let short = name.strip_prefix("llm_").unwrap_or(name);
            // SAFETY: `envoy` is the config being created (main thread); buffers live across the call.
            let define = match family_kind {
                Kind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter,
                Kind::Histogram => {
                    envoy_dynamic_module_callback_http_filter_config_define_histogram
                }
                Kind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge,
            };
            let result = unsafe {
                define(
                    envoy,
                    ModuleBuffer::of(short.as_bytes()),
                    label_names.as_mut_ptr(),
                    label_names.len(),
                    &mut id,
                )
            };
            if result == METRICS_SUCCESS {
                let kind = match family_kind {
                    Kind::Counter => MetricKind::Counter,
                    Kind::Histogram => MetricKind::Histogram,
                    Kind::Gauge => MetricKind::Gauge,
                };
                let declared: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
                let mut sorted = declared.clone();
                sorted.sort();
                metrics.families.insert(
                    (name.to_string(), sorted),
                    Family {
                        id,
                        kind,
                        labels: declared,
                    },
                );
            } else {
                log::error!("llm_gateway: cannot declare metric {name} (status {result})");
            }
        }
        metrics
    }

    fn define(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        if let Some(id) = self.by_name.read().ok().and_then(|m| m.get(name).copied()) {
            return Ok(id);
        }
        let (base, labels) = llm_core::metrics::parse_labeled_name(name)
            .ok_or_else(|| format!("unparsable metric name {name}"))?;
        let mut names: Vec<String> = labels.iter().map(|(l, _)| l.to_string()).collect();
        names.sort();
        let key = (base.to_string(), names);
        let declared = self
            .families
            .get(&key)
            .ok_or_else(|| format!("metric family {base} {:?} is not declared", key.1))?;
        if declared.kind != kind {
            return Err(format!("metric {base} has another kind"));
        }
        // Label values in the order the family was declared with, whatever the call site's.
        let values: Vec<String> = declared
            .labels
            .iter()
            .map(|label| {
                labels
                    .iter()
                    .find(|(l, _)| l == label)
                    .map_or_else(String::new, |(_, v)| v.to_string())
            })
            .collect();
        let mut by_name = self.by_name.write().map_err(|_| "metrics lock")?;
        if let Some(id) = by_name.get(name) {
            return Ok(*id);
        }
        let mut series = self.series.write().map_err(|_| "metrics lock")?;
        let id = u32::try_from(series.len()).map_err(|_| "too many series")?;
        series.push(Series {
            family: declared.id,
            kind,
            values,
        });
        by_name.insert(name.to_string(), id);
        drop(series);
        drop(by_name);
        if kind == MetricKind::Counter {
            // A counter shows (at 0) from its definition on, as a Wasm module's does: dashboards and
            // alerts on `rate()` need the series before its first event.
            if let Some(target) = metric_target() {
                self.add(id, 0, kind, target);
            }
        }
        Ok(id)
    }

    fn add(&self, id: u32, value: u64, kind: MetricKind, target: Target) {
        let Ok(series) = self.series.read() else {
            return;
        };
        let Some(series) = series.get(id as usize).filter(|s| s.kind == kind) else {
            return;
        };
        let mut values: Vec<ModuleBuffer> = series
            .values
            .iter()
            .map(|v| ModuleBuffer::of(v.as_bytes()))
            .collect();
        // SAFETY: the pointer is the running hook's (stream or config); buffers live across the call.
        unsafe {
            match (target, kind) {
                (Target::Stream(filter), MetricKind::Counter) => {
                    envoy_dynamic_module_callback_http_filter_increment_counter(
                        filter,
                        series.family,
                        values.as_mut_ptr(),
                        values.len(),
                        value,
                    );
                }
                (Target::Stream(filter), MetricKind::Histogram) => {
                    envoy_dynamic_module_callback_http_filter_record_histogram_value(
                        filter,
                        series.family,
                        values.as_mut_ptr(),
                        values.len(),
                        value,
                    );
                }
                (Target::Config(config), MetricKind::Counter) => {
                    envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        config,
                        series.family,
                        values.as_mut_ptr(),
                        values.len(),
                        value,
                    );
                }
                (Target::Stream(filter), MetricKind::Gauge) => {
                    envoy_dynamic_module_callback_http_filter_set_gauge(
                        filter,
                        series.family,
                        values.as_mut_ptr(),
                        values.len(),
                        value,
                    );
                }
                (Target::Config(config), MetricKind::Gauge) => {
                    envoy_dynamic_module_callback_http_filter_config_set_gauge(
                        config,
                        series.family,
                        values.as_mut_ptr(),
                        values.len(),
                        value,
                    );
                }
                (Target::Config(_), MetricKind::Histogram) => {}
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Target {
    Stream(FilterEnvoyPtr),
    Config(ConfigEnvoyPtr),
}

fn bytes_of(buffer: EnvoyBuffer) -> Vec<u8> {
    if buffer.ptr.is_null() || buffer.length == 0 {
        return Vec::new();
    }
    // SAFETY: Envoy's buffer is valid for the running hook.
    unsafe { std::slice::from_raw_parts(buffer.ptr.cast::<u8>(), buffer.length).to_vec() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: ConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let name = String::from_utf8_lossy(&bytes_of(name)).into_owned();
        let bytes = bytes_of(config);
        let metrics = Metrics::declare(envoy);
        let config = Arc::new(Config {
            id: NEXT_CONFIG_ID.fetch_add(1, Ordering::Relaxed),
            upstream: name == "llm_provider",
            name,
            bytes,
            envoy: envoy as usize,
            scheduler: OnceLock::new(),
            metrics,
            outbox: Mutex::new(Vec::new()),
            destroyed: AtomicBool::new(false),
        });
        warn_if_jwt(&config.name, &config.bytes);
        // Built here once to validate (one log line naming the field, and Envoy refuses the
        // config), and kept as the main thread's instance for root-context work.
        let factory = with_context(Context::root(&config, envoy), || {
            load(&config.name, &config.bytes)
        });
        match factory {
            Ok(factory) => {
                let ticker = config.upstream.then(|| factory.tick_period()).flatten();
                keep_instance(&config, factory);
                if let Some(period) = ticker {
                    start_ticker(&config, period);
                }
                Arc::into_raw(config).cast::<c_void>()
            }
            Err(line) => {
                log::error!("{line}");
                std::ptr::null()
            }
        }
    }));
    result.unwrap_or(std::ptr::null())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if config.is_null() {
        return;
    }
    // SAFETY: the pointer came from Arc::into_raw in config_new and is released once, here.
    let config = unsafe { Arc::from_raw(config.cast::<Config>()) };
    config.destroyed.store(true, Ordering::Release);
    let _ = catch_unwind(AssertUnwindSafe(move || {
        INSTANCES.with(|i| i.borrow_mut().remove(&config.id));
        drop(config);
    }));
}

impl Config {
    fn scheduler(&self) -> SchedulerPtr {
        let scheduler = *self.scheduler.get_or_init(|| {
            // SAFETY: Envoy's config outlives this Config's use (streams keep both); the call only
            // builds a scheduler bound to the config's main-thread dispatcher.
            let made = unsafe {
                envoy_dynamic_module_callback_http_filter_config_scheduler_new(
                    self.envoy as ConfigEnvoyPtr,
                )
            };
            made as usize
        });
        scheduler as SchedulerPtr
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // The last stream (or the config itself) is gone: nothing commits any more.
        if let Some(&scheduler) = self.scheduler.get() {
            if scheduler != 0 {
                // SAFETY: ours, deleted once; posted events hold only a weak reference to Envoy's config.
                unsafe {
                    envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
                        scheduler as SchedulerPtr,
                    )
                };
            }
        }
    }
}

/// The config's instance on this thread, built on first use.
fn instance(config: &Arc<Config>) -> Option<Rc<dyn Factory>> {
    if let Some(found) = thread_instance(config.id) {
        return Some(found);
    }
    let built = with_context(Context::config(config), || {
        load(&config.name, &config.bytes)
    });
    match built {
        Ok(factory) => {
            keep_instance(config, Rc::clone(&factory));
            Some(factory)
        }
        Err(line) => {
            log::error!("{line}");
            None
        }
    }
}

/// The main thread: root-context calls queued by workers.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    envoy: ConfigEnvoyPtr,
    config: *const c_void,
    event_id: u64,
) {
    if config.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy passes the pointer config_new returned, alive until config_destroy.
        let config = unsafe { &*config.cast::<Config>() };
        if event_id == EVENT_TICK {
            if let Some(factory) = thread_instance(config.id) {
                // Calls it makes go to the outbox and come back here as event 0.
                with_context(Context::root(config, envoy), || factory.on_tick());
            }
            return;
        }
        let calls = config
            .outbox
            .lock()
            .map(|mut outbox| std::mem::take(&mut *outbox))
            .unwrap_or_default();
        for call in calls {
            let mut headers: Vec<ModuleHeader> = call
                .headers
                .iter()
                .map(|(k, v)| ModuleHeader::of(k.as_bytes(), v.as_bytes()))
                .collect();
            let mut id = 0u64;
            // SAFETY: main thread, Envoy's config pointer; the arguments' buffers live across the call.
            let result = unsafe {
                envoy_dynamic_module_callback_http_filter_config_http_callout(
                    envoy,
                    &mut id,
                    ModuleBuffer::of(call.cluster.as_bytes()),
                    headers.as_mut_ptr(),
                    headers.len(),
                    ModuleBuffer::of(&call.body),
                    duration_ms(call.timeout),
                )
            };
            if result == CALLOUT_INIT_SUCCESS {
                ROOT_CALLS.with(|c| {
                    c.borrow_mut()
                        .insert((config.id, id), (call.token, call.kind))
                });
            } else if let Some(factory) = thread_instance(config.id) {
                with_context(Context::root(config, envoy), || match call.kind {
                    CallKind::Grpc => {
                        factory.on_root_grpc_response(call.token, GRPC_UNAVAILABLE, None)
                    }
                    CallKind::Http => factory.on_root_http_response(call.token, None),
                });
            }
        }
    }));
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    envoy: ConfigEnvoyPtr,
    config: *const c_void,
    callout_id: u64,
    result: i32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    if config.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in config_scheduled.
        let config = unsafe { &*config.cast::<Config>() };
        let Some((token, kind)) =
            ROOT_CALLS.with(|c| c.borrow_mut().remove(&(config.id, callout_id)))
        else {
            return;
        };
        let Some(factory) = thread_instance(config.id) else {
            return;
        };
        match kind {
            CallKind::Grpc => {
                let (status, message) = grpc_answer(result, headers, headers_size, body, body_size);
                with_context(Context::root(config, envoy), || {
                    factory.on_root_grpc_response(token, status, message.as_deref())
                });
            }
            CallKind::Http => {
                let answer = http_answer(result, headers, headers_size, body, body_size);
                with_context(Context::root(config, envoy), || {
                    factory.on_root_http_response(token, answer.as_ref())
                });
            }
        }
    }));
}

// ---------------------------------------------------------------------------------------------
// Streams

struct Stream {
    config: Arc<Config>,
    factory: Rc<dyn Factory>,
    filter: RefCell<Box<dyn HttpFilter>>,
    /// Callout id → token of this stream's calls, and whether the call is gRPC (framed) or HTTP.
    calls: RefCell<HashMap<u64, (u32, CallKind)>>,
    /// Whether the filter's last request (response) body callback held the body: only then is
    /// Envoy's buffered body its own (a later filter may be holding bytes this one passed).
    holding: [Cell<bool>; 2],
}

impl Stream {
    fn holding(&self, body: Body) -> &Cell<bool> {
        match body {
            Body::Request => &self.holding[0],
            Body::Response => &self.holding[1],
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    envoy: FilterEnvoyPtr,
) -> *const c_void {
    if config.is_null() {
        return std::ptr::null();
    }
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: Envoy passes the pointer config_new returned; we take a counted reference.
        let config = unsafe {
            Arc::increment_strong_count(config.cast::<Config>());
            Arc::from_raw(config.cast::<Config>())
        };
        let factory = instance(&config)?;
        let filter = with_context(Context::stream(&config, envoy, None), || {
            factory.new_stream()
        });
        let stream = Box::new(Stream {
            config,
            factory,
            filter: RefCell::new(filter),
            calls: RefCell::new(HashMap::new()),
            holding: Default::default(),
        });
        Some(Box::into_raw(stream).cast::<c_void>().cast_const())
    }));
    result.ok().flatten().unwrap_or(std::ptr::null())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: *const c_void) {
    if stream.is_null() {
        return;
    }
    // SAFETY: the pointer came from Box::into_raw in filter_new and is released once, here.
    let stream = unsafe { Box::from_raw(stream.cast_mut().cast::<Stream>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || drop(stream)));
}

/// Runs one callback of a stream's filter with this backend installed; then, with the filter no
/// longer borrowed, sends the reply it asked for (a panic becomes a 500), or resumes the request.
fn run_stream(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
    phase: Phase,
    callback: impl FnOnce(&mut dyn HttpFilter) -> Action,
) -> i32 {
    if stream.is_null() {
        return STATUS_CONTINUE;
    }
    // SAFETY: Envoy passes the pointer filter_new returned, alive until filter_destroy (which is
    // deferred, never inside another hook of the same filter).
    let stream = unsafe { &*stream.cast::<Stream>() };
    let body = match phase {
        Phase::RequestBody => Some(Body::Request),
        Phase::ResponseBody => Some(Body::Response),
        _ => None,
    };
    let mut context = Context::stream(&stream.config, envoy, body);
    context.stream = stream;
    context.request_phase = matches!(phase, Phase::Request | Phase::RequestBody | Phase::Async);
    // Envoy may run this hook inside another stream's (a callout's upstream filters, inline):
    // this stream must not see that one's chain state.
    let (outcome, context) = llm_host::isolated(|| {
        let (outcome, context) = with_context_returning(context, || {
            catch_unwind(AssertUnwindSafe(|| {
                // A filter is re-entered only if Envoy calls back inside one of our own calls; a
                // busy filter is skipped rather than aliased.
                let Ok(mut filter) = stream.filter.try_borrow_mut() else {
                    return Action::Continue;
                };
                callback(filter.as_mut())
            }))
        });
        if outcome.is_err() {
            // Before the outer stream's chain state comes back: only this stream's is forgotten.
            llm_host::reset_after_panic();
        }
        (outcome, context)
    });
    if let (Some(body), Ok(action)) = (body, &outcome) {
        stream.holding(body).set(*action == Action::Pause);
    }
    if phase == Phase::Complete {
        // The response is out: nothing more can be answered or resumed.
        return STATUS_CONTINUE;
    }
    let reply = match outcome {
        Ok(_) => context
            .reply
            .map(|reply| through_response_callbacks(envoy, stream, reply)),
        Err(_) => Some(internal_error()),
    };
    if let Some(reply) = reply {
        send_reply_now(envoy, &reply);
        return STATUS_STOP;
    }
    // SAFETY: the running hook's pointer. Nothing of the stream is touched after these calls:
    // continuing runs the rest of Envoy's chain, the upstream filters and maybe a reply inline.
    unsafe {
        if context.request_headers_changed && !stream.config.upstream {
            // As proxy-wasm does: routing facts set as headers choose the route again, before
            // Envoy goes on with the request.
            envoy_dynamic_module_callback_http_clear_route_cache(envoy);
        }
        if context.resume {
            envoy_dynamic_module_callback_http_filter_continue_decoding(envoy);
            return STATUS_STOP;
        }
        if context.resume_response {
            envoy_dynamic_module_callback_http_filter_continue_encoding(envoy);
            return STATUS_STOP;
        }
    }
    match outcome {
        Ok(Action::Continue) => STATUS_CONTINUE,
        _ => STATUS_STOP,
    }
}

/// Which callback of a stream runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    RequestBody,
    Response,
    ResponseBody,
    /// An asynchronous answer (a callout) while the request may be held.
    Async,
    /// The stream is complete (the access log is next).
    Complete,
}

/// Envoy skips a dynamic module's response callbacks for the local reply the module itself sent,
/// where Wasm filters see their own replies pass (auth adds rate-limit headers to them, trims a
/// model list the router answered, usage counts them). So the reply runs through this filter's
/// response callbacks here, on an in-memory response, before it is sent.
fn through_response_callbacks(
    envoy: FilterEnvoyPtr,
    stream: &Stream,
    reply: PendingReply,
) -> PendingReply {
    let mut headers = vec![(":status".to_string(), reply.status.to_string())];
    headers.extend(reply.headers);
    let mut context = Context::stream(&stream.config, envoy, None);
    context.stream = stream;
    context.local_response = Some(LocalResponse {
        headers,
        body: reply.body,
    });
    let (result, context) = with_context_returning(context, || {
        catch_unwind(AssertUnwindSafe(|| {
            let Ok(mut filter) = stream.filter.try_borrow_mut() else {
                return;
            };
            let size =
                current(|c| c.local_response.as_ref().map_or(0, |r| r.body.len())).unwrap_or(0);
            // The reply is whole: a filter that would wait for more gets nothing more.
            let _ = filter.on_response_headers(size == 0);
            if size > 0 {
                let _ = filter.on_response_body(size, true);
            }
        }))
    });
    if result.is_err() {
        llm_host::reset_after_panic();
    }
    let Some(response) = context.local_response.filter(|_| result.is_ok()) else {
        return internal_error();
    };
    let status = response
        .headers
        .iter()
        .find(|(k, _)| k == ":status")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(reply.status);
    PendingReply {
        status,
        headers: response
            .headers
            .into_iter()
            .filter(|(k, _)| !k.starts_with(':') && k != "content-length")
            .collect(),
        body: response.body,
    }
}

fn internal_error() -> PendingReply {
    PendingReply {
        status: 500,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"error":{"message":"The gateway failed to handle this request.","type":"server_error","code":"internal_error"}}"#.to_vec(),
    }
}

fn send_reply_now(envoy: FilterEnvoyPtr, reply: &PendingReply) {
    let mut headers: Vec<ModuleHeader> = reply
        .headers
        .iter()
        .map(|(k, v)| ModuleHeader::of(k.as_bytes(), v.as_bytes()))
        .collect();
    // SAFETY: the running hook's pointer; buffers live across the call.
    unsafe {
        envoy_dynamic_module_callback_http_send_response(
            envoy,
            u32::from(reply.status),
            headers.as_mut_ptr(),
            headers.len(),
            ModuleBuffer::of(&reply.body),
            ModuleBuffer::NULL,
        )
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> i32 {
    run_stream(envoy, stream, Phase::Request, |f| {
        f.on_request_headers(end_of_stream)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> i32 {
    run_stream(envoy, stream, Phase::RequestBody, |f| {
        let size = body_size(envoy, Body::Request, true);
        f.on_request_body(size, end_of_stream)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
) -> i32 {
    run_stream(envoy, stream, Phase::Request, |f| f.on_request_trailers())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> i32 {
    run_stream(envoy, stream, Phase::Response, |f| {
        f.on_response_headers(end_of_stream)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
    end_of_stream: bool,
) -> i32 {
    run_stream(envoy, stream, Phase::ResponseBody, |f| {
        let size = body_size(envoy, Body::Response, true);
        f.on_response_body(size, end_of_stream)
    })
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
) -> i32 {
    run_stream(envoy, stream, Phase::Response, |f| f.on_response_trailers())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
) {
    if stream.is_null() {
        return;
    }
    // SAFETY: as in run_stream. Taken before the callback: nothing of the stream is touched after.
    let (config, factory) = {
        let stream = unsafe { &*stream.cast::<Stream>() };
        (Arc::clone(&stream.config), Rc::clone(&stream.factory))
    };
    run_stream(envoy, stream, Phase::Complete, |f| {
        f.on_log();
        Action::Continue
    });
    // Work the Wasm root context does on its timer (usage reports): this worker has no timer, so
    // it runs after each stream; its calls go to the main thread.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if factory.has_tick() {
            with_context(Context::worker_root(&config), || factory.on_tick());
        }
    }));
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: FilterEnvoyPtr,
    stream: *const c_void,
    callout_id: u64,
    result: i32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    if stream.is_null() {
        return;
    }
    // SAFETY: as in run_stream.
    let stream_ref = unsafe { &*stream.cast::<Stream>() };
    let Some((token, kind)) = stream_ref
        .calls
        .try_borrow_mut()
        .ok()
        .and_then(|mut calls| calls.remove(&callout_id))
    else {
        return;
    };
    match kind {
        CallKind::Grpc => {
            let answer = catch_unwind(AssertUnwindSafe(|| {
                grpc_answer(result, headers, headers_size, body, body_size)
            }))
            .unwrap_or((GRPC_UNAVAILABLE, None));
            run_stream(envoy, stream, Phase::Async, |f| {
                f.on_grpc_response(token, answer.0, answer.1.as_deref());
                Action::Continue
            });
        }
        CallKind::Http => {
            let answer = catch_unwind(AssertUnwindSafe(|| {
                http_answer(result, headers, headers_size, body, body_size)
            }))
            .unwrap_or(None);
            run_stream(envoy, stream, Phase::Async, |f| {
                f.on_http_response(token, answer.as_ref());
                Action::Continue
            });
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
    _stream_id: u64,
    _reason: i32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: FilterEnvoyPtr,
    _stream: *const c_void,
) {
}

// ---------------------------------------------------------------------------------------------
// gRPC over HTTP/2 callouts

const GRPC_UNKNOWN: u32 = 2;
const GRPC_UNAVAILABLE: u32 = 14;

fn grpc_headers(cluster: &str, path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), "POST".into()),
        (":path".into(), path.into()),
        ("host".into(), cluster.into()),
        ("content-type".into(), "application/grpc".into()),
        ("te".into(), "trailers".into()),
    ]
}

/// A gRPC message with its length-prefixed framing (uncompressed).
fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(message);
    framed
}

/// Whether a stream's callout carries a gRPC call or a plain HTTP one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Grpc,
    Http,
}

/// Envoy's header array of a finished callout, as owned pairs.
fn callout_headers(headers: *const EnvoyHeader, headers_size: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    if headers.is_null() {
        return Vec::new();
    }
    // SAFETY: Envoy's array of `headers_size` entries, valid during the hook.
    unsafe { std::slice::from_raw_parts(headers, headers_size) }
        .iter()
        .map(|h| {
            (
                bytes_of(EnvoyBuffer {
                    ptr: h.key_ptr,
                    length: h.key_length,
                }),
                bytes_of(EnvoyBuffer {
                    ptr: h.value_ptr,
                    length: h.value_length,
                }),
            )
        })
        .collect()
}

/// Envoy's body slices of a finished callout, joined.
fn callout_body(body: *const EnvoyBuffer, body_size: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    if !body.is_null() {
        // SAFETY: Envoy's array of `body_size` slices, valid during the hook.
        for chunk in unsafe { std::slice::from_raw_parts(body, body_size) } {
            bytes.extend(bytes_of(*chunk));
        }
    }
    bytes
}

/// The status and body of a finished HTTP callout; `None` when it failed (reset, timeout, ...).
fn http_answer(
    result: i32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) -> Option<host::HttpAnswer> {
    if result != CALLOUT_SUCCESS {
        return None;
    }
    let status = callout_headers(headers, headers_size)
        .into_iter()
        .find(|(name, _)| name == b":status")
        .and_then(|(_, value)| String::from_utf8(value).ok())
        .and_then(|value| value.trim().parse().ok())?;
    Some(host::HttpAnswer {
        status,
        body: callout_body(body, body_size),
    })
}

/// The gRPC status and message of a finished callout. A trailers-only answer carries its status in
/// the headers; otherwise a 200 with one whole message is OK (callouts do not expose trailers).
fn grpc_answer(
    result: i32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) -> (u32, Option<Vec<u8>>) {
    if result != CALLOUT_SUCCESS {
        return (GRPC_UNAVAILABLE, None);
    }
    let headers = callout_headers(headers, headers_size);
    let header = |name: &[u8]| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    if let Some(status) = header(b"grpc-status") {
        let status = status.trim().parse().unwrap_or(GRPC_UNKNOWN);
        if status != 0 {
            return (status, None);
        }
    }
    if header(b":status").as_deref() != Some("200") {
        return (GRPC_UNAVAILABLE, None);
    }
    let bytes = callout_body(body, body_size);
    match bytes.split_first_chunk::<5>() {
        Some(([0, a, b, c, d], message))
            if u32::from_be_bytes([*a, *b, *c, *d]) as usize == message.len() =>
        {
            (0, Some(message.to_vec()))
        }
        _ => (GRPC_UNKNOWN, None),
    }
}

fn duration_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

// ---------------------------------------------------------------------------------------------
// The host

/// What the running callback acts on.
struct Context {
    config: *const Config,
    kind: ContextKind,
    /// Inside a body callback: the body whose received chunk is available.
    body: Option<Body>,
    reply: Option<PendingReply>,
    request_headers_changed: bool,
    stream: *const Stream,
    /// The local reply being run through the filter's response callbacks, in memory.
    local_response: Option<LocalResponse>,
    /// The filter resumed the request (done by `run_stream` once the callback returned).
    resume: bool,
    /// The same for the response.
    resume_response: bool,
    /// A request callback: request header changes choose the route again.
    request_phase: bool,
}

struct LocalResponse {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ContextKind {
    /// A stream's callback.
    Stream(FilterEnvoyPtr),
    /// Loading a config (metric definitions; no stream).
    Config,
    /// The main thread's root work (config callouts).
    Root(ConfigEnvoyPtr),
    /// A worker's root work: its calls go to the main thread.
    WorkerRoot,
}

struct PendingReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Context {
    fn new(config: &Config, kind: ContextKind) -> Self {
        Context {
            config,
            kind,
            body: None,
            reply: None,
            request_headers_changed: false,
            stream: std::ptr::null(),
            local_response: None,
            resume: false,
            resume_response: false,
            request_phase: false,
        }
    }
    fn config(config: &Config) -> Self {
        Context::new(config, ContextKind::Config)
    }
    fn root(config: &Config, envoy: ConfigEnvoyPtr) -> Self {
        Context::new(config, ContextKind::Root(envoy))
    }
    fn worker_root(config: &Config) -> Self {
        Context::new(config, ContextKind::WorkerRoot)
    }
    fn stream(config: &Config, envoy: FilterEnvoyPtr, body: Option<Body>) -> Self {
        Context {
            body,
            ..Context::new(config, ContextKind::Stream(envoy))
        }
    }
}

thread_local! {
    static CONTEXT: RefCell<Vec<Context>> = const { RefCell::new(Vec::new()) };
}

fn with_context<R>(context: Context, f: impl FnOnce() -> R) -> R {
    with_context_returning(context, f).0
}

/// Runs `f` with `context` current (contexts nest: Envoy may re-enter through a reply).
fn with_context_returning<R>(context: Context, f: impl FnOnce() -> R) -> (R, Context) {
    /// Pops the context if `f` unwinds (a panic caught further out must not leave it current).
    struct Unwinding;
    impl Drop for Unwinding {
        fn drop(&mut self) {
            if std::thread::panicking() {
                CONTEXT.with(|c| c.borrow_mut().pop());
            }
        }
    }
    host::install(&NATIVE);
    CONTEXT.with(|c| c.borrow_mut().push(context));
    let guard = Unwinding;
    let result = f();
    std::mem::forget(guard);
    let context = CONTEXT.with(|c| c.borrow_mut().pop());
    (result, context.unwrap_or_else(Context::new_detached))
}

impl Context {
    fn new_detached() -> Self {
        Context {
            config: std::ptr::null(),
            kind: ContextKind::Config,
            body: None,
            reply: None,
            request_headers_changed: false,
            stream: std::ptr::null(),
            local_response: None,
            resume: false,
            resume_response: false,
            request_phase: false,
        }
    }
}

/// Reads the current context.
fn current<R>(f: impl FnOnce(&mut Context) -> R) -> Option<R> {
    CONTEXT.with(|c| c.borrow_mut().last_mut().map(f))
}

fn current_config<R>(f: impl FnOnce(&Config) -> R) -> Option<R> {
    let config = current(|c| c.config)?;
    if config.is_null() {
        return None;
    }
    // SAFETY: the context's config outlives the callback it was installed for.
    Some(f(unsafe { &*config }))
}

fn stream_ptr() -> Option<FilterEnvoyPtr> {
    match current(|c| c.kind)? {
        ContextKind::Stream(envoy) => Some(envoy),
        _ => None,
    }
}

fn header_type(map: HeaderMap) -> i32 {
    match map {
        HeaderMap::Request => REQUEST_HEADER,
        HeaderMap::Response => RESPONSE_HEADER,
    }
}

fn received_type(body: Body) -> i32 {
    match body {
        Body::Request => RECEIVED_REQUEST_BODY,
        Body::Response => RECEIVED_RESPONSE_BODY,
    }
}

fn buffered_type(body: Body) -> i32 {
    match body {
        Body::Request => BUFFERED_REQUEST_BODY,
        Body::Response => BUFFERED_RESPONSE_BODY,
    }
}

/// Which of Envoy's two buffers make up the body a filter sees (what it held, then the new chunk):
/// `(buffered, received)`.
fn body_parts(envoy: FilterEnvoyPtr, body: Body) -> (bool, bool) {
    let in_hook = current(|c| c.body == Some(body)).unwrap_or(false);
    if !in_hook {
        return (true, false);
    }
    // SAFETY: the running hook's pointer.
    let same = unsafe {
        match body {
            Body::Request => {
                envoy_dynamic_module_callback_http_received_buffered_request_body(envoy)
            }
            Body::Response => {
                envoy_dynamic_module_callback_http_received_buffered_response_body(envoy)
            }
        }
    };
    // The buffered body is this filter's only when it held the previous chunks itself.
    let holding = current(|c| c.stream)
        .filter(|stream| !stream.is_null())
        // SAFETY: the context's stream, alive for the callback.
        .is_some_and(|stream| unsafe { &*stream }.holding(body).get());
    (!same && holding, true)
}

fn body_size(envoy: FilterEnvoyPtr, body: Body, _in_hook: bool) -> usize {
    let (buffered, received) = body_parts(envoy, body);
    let mut size = 0;
    // SAFETY: the running hook's pointer.
    unsafe {
        if buffered {
            size += envoy_dynamic_module_callback_http_get_body_size(envoy, buffered_type(body));
        }
        if received {
            size += envoy_dynamic_module_callback_http_get_body_size(envoy, received_type(body));
        }
    }
    size
}

fn read_buffer(envoy: FilterEnvoyPtr, body_type: i32, out: &mut Vec<u8>) {
    // SAFETY: the running hook's pointer; the array is sized by Envoy's own count.
    unsafe {
        let count = envoy_dynamic_module_callback_http_get_body_chunks_size(envoy, body_type);
        if count == 0 {
            return;
        }
        let mut chunks = vec![
            EnvoyBuffer {
                ptr: std::ptr::null(),
                length: 0
            };
            count
        ];
        if envoy_dynamic_module_callback_http_get_body_chunks(envoy, body_type, chunks.as_mut_ptr())
        {
            for chunk in chunks {
                if !chunk.ptr.is_null() {
                    out.extend_from_slice(std::slice::from_raw_parts(
                        chunk.ptr.cast::<u8>(),
                        chunk.length,
                    ));
                }
            }
        }
    }
}

fn whole_body(envoy: FilterEnvoyPtr, body: Body) -> Vec<u8> {
    let (buffered, received) = body_parts(envoy, body);
    let mut bytes = Vec::new();
    if buffered {
        read_buffer(envoy, buffered_type(body), &mut bytes);
    }
    if received {
        read_buffer(envoy, received_type(body), &mut bytes);
    }
    bytes
}

struct Native;

static NATIVE: Native = Native;

/// Shared data: value and version (for compare-and-swap) by key, process-wide.
type SharedData = Mutex<HashMap<String, (Vec<u8>, u32)>>;

static SHARED: OnceLock<SharedData> = OnceLock::new();

fn shared() -> &'static SharedData {
    SHARED.get_or_init(|| Mutex::new(HashMap::new()))
}

const NO_STREAM: &str = "no stream in this context";

/// Runs `f` on the in-memory local response, when one is being run through the callbacks.
fn local_response<R>(f: impl FnOnce(&mut LocalResponse) -> R) -> Option<R> {
    current(|c| c.local_response.as_mut().map(f)).flatten()
}

impl Host for Native {
    fn headers(&self, map: HeaderMap) -> Vec<(String, Vec<u8>)> {
        if map == HeaderMap::Response {
            if let Some(headers) = local_response(|r| {
                r.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                    .collect()
            }) {
                return headers;
            }
        }
        let Some(envoy) = stream_ptr() else {
            return Vec::new();
        };
        // SAFETY: the running hook's pointer; the array is sized by Envoy's own count.
        unsafe {
            let count =
                envoy_dynamic_module_callback_http_get_headers_size(envoy, header_type(map));
            let mut headers = vec![
                EnvoyHeader {
                    key_ptr: std::ptr::null(),
                    key_length: 0,
                    value_ptr: std::ptr::null(),
                    value_length: 0
                };
                count
            ];
            if count == 0
                || !envoy_dynamic_module_callback_http_get_headers(
                    envoy,
                    header_type(map),
                    headers.as_mut_ptr(),
                )
            {
                return Vec::new();
            }
            headers
                .iter()
                .map(|h| {
                    let key = bytes_of(EnvoyBuffer {
                        ptr: h.key_ptr,
                        length: h.key_length,
                    });
                    let value = bytes_of(EnvoyBuffer {
                        ptr: h.value_ptr,
                        length: h.value_length,
                    });
                    (String::from_utf8_lossy(&key).into_owned(), value)
                })
                .collect()
        }
    }

    fn header(&self, map: HeaderMap, name: &str) -> Option<Vec<u8>> {
        if map == HeaderMap::Response {
            if let Some(value) = local_response(|r| {
                r.headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone().into_bytes())
            }) {
                return value;
            }
        }
        let envoy = stream_ptr()?;
        let mut result = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: the running hook's pointer; `result` is written by Envoy.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                &mut result,
                0,
                std::ptr::null_mut(),
            )
        };
        (found && !result.ptr.is_null()).then(|| bytes_of(result))
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()> {
        if map == HeaderMap::Response
            && local_response(|r| {
                r.headers.retain(|(k, _)| k != name);
                if let Some(value) = value {
                    r.headers.push((name.to_string(), value.to_string()));
                }
            })
            .is_some()
        {
            return Ok(());
        }
        let envoy = stream_ptr().ok_or(NO_STREAM)?;
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: the running hook's pointer; buffers live across the call.
        let done = unsafe {
            envoy_dynamic_module_callback_http_set_header(
                envoy,
                header_type(map),
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        };
        if map == HeaderMap::Request && (done || value.ptr.is_null()) {
            current(|c| c.request_headers_changed |= c.request_phase);
        }
        if done || value.ptr.is_null() {
            Ok(())
        } else {
            Err("the header map is not available".into())
        }
    }

    fn body(&self, body: Body, offset: usize, size: usize) -> Vec<u8> {
        let local = match body {
            Body::Response => local_response(|r| r.body.clone()),
            Body::Request => None,
        };
        let bytes = match local {
            Some(bytes) => bytes,
            None => match stream_ptr() {
                Some(envoy) => whole_body(envoy, body),
                None => return Vec::new(),
            },
        };
        let end = offset.saturating_add(size).min(bytes.len());
        bytes.get(offset.min(end)..end).unwrap_or_default().to_vec()
    }

    fn replace_body(&self, body: Body, offset: usize, size: usize, new: &[u8]) -> HostResult<()> {
        if body == Body::Response {
            let replaced = local_response(|r| {
                let end = offset.saturating_add(size).min(r.body.len());
                if offset > end {
                    return Err("offset past the body".to_string());
                }
                r.body.splice(offset..end, new.iter().copied());
                Ok(())
            });
            if let Some(result) = replaced {
                return result;
            }
        }
        let envoy = stream_ptr().ok_or(NO_STREAM)?;
        let (buffered, received) = body_parts(envoy, body);
        let mut bytes = whole_body(envoy, body);
        if offset > bytes.len() {
            return Err("offset past the body".into());
        }
        let end = offset.saturating_add(size).min(bytes.len());
        bytes.splice(offset..end, new.iter().copied());
        // SAFETY: the running hook's pointer; `bytes` lives across the calls.
        unsafe {
            if buffered {
                let n =
                    envoy_dynamic_module_callback_http_get_body_size(envoy, buffered_type(body));
                envoy_dynamic_module_callback_http_drain_body(envoy, buffered_type(body), n);
            }
            let target = if received {
                let n =
                    envoy_dynamic_module_callback_http_get_body_size(envoy, received_type(body));
                envoy_dynamic_module_callback_http_drain_body(envoy, received_type(body), n);
                received_type(body)
            } else {
                buffered_type(body)
            };
            if !envoy_dynamic_module_callback_http_append_body(
                envoy,
                target,
                ModuleBuffer::of(&bytes),
            ) {
                return Err("the body is not available".into());
            }
        }
        Ok(())
    }

    fn send_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        let reply = PendingReply {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        };
        current(|c| c.reply = Some(reply)).ok_or_else(|| NO_STREAM.to_string())
    }

    fn resume_response(&self) -> HostResult<()> {
        stream_ptr().ok_or(NO_STREAM)?;
        current(|c| c.resume_response = true).ok_or_else(|| NO_STREAM.to_string())
    }

    fn resume_request(&self) -> HostResult<()> {
        stream_ptr().ok_or(NO_STREAM)?;
        // Done once the filter's callback returned (run_stream): Envoy continues inline, running
        // the rest of the chain and the upstream filters, which must not find this one busy.
        current(|c| c.resume = true).ok_or_else(|| NO_STREAM.to_string())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let envoy = stream_ptr()?;
        let mut result = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: the running hook's pointer; `result` is written by Envoy.
        let found = unsafe {
            match path {
                ["upstream", "address"] => {
                    envoy_dynamic_module_callback_http_filter_get_attribute_string(
                        envoy,
                        ATTRIBUTE_UPSTREAM_ADDRESS,
                        &mut result,
                    )
                }
                ["xds", "upstream_host_metadata", "filter_metadata", namespace, key] => {
                    envoy_dynamic_module_callback_http_get_metadata_string(
                        envoy,
                        METADATA_HOST,
                        ModuleBuffer::of(namespace.as_bytes()),
                        ModuleBuffer::of(key.as_bytes()),
                        &mut result,
                    )
                }
                // Nested dynamic metadata (JWT claims) has no getter in this ABI.
                _ => false,
            }
        };
        (found && !result.ptr.is_null()).then(|| bytes_of(result))
    }

    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()> {
        let envoy = stream_ptr().ok_or(NO_STREAM)?;
        // The same keys as the Wasm modules', so one access-log format serves both packagings.
        let key = format!("wasm.{key}");
        // SAFETY: the running hook's pointer; buffers live across the call.
        let done = unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                envoy,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        };
        done.then_some(())
            .ok_or_else(|| "filter state refused".to_string())
    }

    fn now_unix_nanos(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        current_config(|config| config.metrics.define(kind, name))
            .unwrap_or_else(|| Err(NO_STREAM.to_string()))
    }

    fn increment_counter(&self, id: u32, by: u64) {
        add_to_metric(id, by, MetricKind::Counter);
    }

    fn record_histogram(&self, id: u32, value: u64) {
        add_to_metric(id, value, MetricKind::Histogram);
    }

    fn set_gauge(&self, id: u32, value: u64) {
        add_to_metric(id, value, MetricKind::Gauge);
    }

    fn shared_get(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        let map = shared().lock().map_err(|_| "shared data lock poisoned")?;
        Ok(match map.get(key) {
            Some((bytes, version)) => (Some(bytes.clone()), Some(*version)),
            None => (None, None),
        })
    }

    fn shared_set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedWriteError> {
        let mut map = shared()
            .lock()
            .map_err(|_| SharedWriteError::Failed("shared data lock poisoned".into()))?;
        let version = map.get(key).map(|(_, v)| *v);
        if let (Some(expected), Some(version)) = (cas, version) {
            if expected != version {
                return Err(SharedWriteError::CasMismatch);
            }
        }
        let next = version.map_or(1, |v| v.wrapping_add(1));
        map.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }

    fn grpc_call(&self, call: &host::GrpcCall<'_>) -> HostResult<u32> {
        // The ABI has no gRPC callouts: a unary call is an HTTP/2 callout with gRPC framing.
        let path = format!("/{}/{}", call.service, call.method);
        callout(
            call.cluster,
            grpc_headers(call.cluster, &path),
            grpc_frame(call.message),
            call.timeout,
            CallKind::Grpc,
        )
    }

    fn http_call(&self, call: &host::HttpCall<'_>) -> HostResult<u32> {
        http_call(call)
    }
}

/// An HTTP call as a callout.
fn http_call(call: &host::HttpCall<'_>) -> HostResult<u32> {
    let mut headers: Vec<(String, String)> = vec![
        (":method".into(), call.method.into()),
        (":path".into(), call.path.into()),
        ("host".into(), call.authority.into()),
    ];
    headers.extend(
        call.headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string())),
    );
    callout(
        call.cluster,
        headers,
        call.body.to_vec(),
        call.timeout,
        CallKind::Http,
    )
}

/// One callout: a stream's own (its answer comes to the stream), or a root context's, which must
/// outlive any request and so is sent by the main thread. Returns the call's token.
fn callout(
    cluster: &str,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
    kind: CallKind,
) -> HostResult<u32> {
    let token = next_token();
    let Some(ContextKind::Stream(envoy)) = current(|c| c.kind) else {
        let scheduler = current_config(|config| {
            if let Ok(mut outbox) = config.outbox.lock() {
                outbox.push(OutgoingCall {
                    cluster: cluster.to_string(),
                    headers,
                    body,
                    timeout,
                    token,
                    kind,
                });
            }
            config.scheduler()
        })
        .unwrap_or(std::ptr::null_mut());
        if scheduler.is_null() {
            return Err("no scheduler".into());
        }
        // SAFETY: the config's scheduler, alive while the config is; callable from any thread.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(scheduler, 0) };
        return Ok(token);
    };
    let mut module_headers: Vec<ModuleHeader> = headers
        .iter()
        .map(|(k, v)| ModuleHeader::of(k.as_bytes(), v.as_bytes()))
        .collect();
    let mut id = 0u64;
    // SAFETY: the running hook's pointer; the arguments' buffers live across the call.
    let result = unsafe {
        envoy_dynamic_module_callback_http_filter_http_callout(
            envoy,
            &mut id,
            ModuleBuffer::of(cluster.as_bytes()),
            module_headers.as_mut_ptr(),
            module_headers.len(),
            ModuleBuffer::of(&body),
            duration_ms(timeout),
        )
    };
    if result != CALLOUT_INIT_SUCCESS {
        return Err(format!("callout to {cluster} refused (status {result})"));
    }
    let stream = current(|c| c.stream).unwrap_or(std::ptr::null());
    register_stream_call(stream, id, token, kind);
    Ok(token)
}

fn next_token() -> u32 {
    u32::try_from(NEXT_TOKEN.fetch_add(1, Ordering::Relaxed) % u64::from(u32::MAX)).unwrap_or(1)
}

fn register_stream_call(stream: *const Stream, callout_id: u64, token: u32, kind: CallKind) {
    if stream.is_null() {
        return;
    }
    // SAFETY: the context's stream, alive for the callback that makes the call.
    if let Ok(mut calls) = unsafe { &*stream }.calls.try_borrow_mut() {
        calls.insert(callout_id, (token, kind));
    }
}

/// Where the running callback's metric updates go: its stream, or its config.
fn metric_target() -> Option<Target> {
    match current(|c| c.kind)? {
        ContextKind::Stream(envoy) => Some(Target::Stream(envoy)),
        ContextKind::Root(envoy) => Some(Target::Config(envoy)),
        // Envoy's counters are atomic: a worker may count through the config too.
        ContextKind::WorkerRoot | ContextKind::Config => {
            current_config(|config| Target::Config(config.envoy as ConfigEnvoyPtr))
        }
    }
}

fn add_to_metric(id: u32, value: u64, kind: MetricKind) {
    let Some(target) = metric_target() else {
        return;
    };
    current_config(|config| config.metrics.add(id, value, kind, target));
}
