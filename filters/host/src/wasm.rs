//! The proxy-wasm backend: [`Host`] over proxy-wasm's host calls, and the root and HTTP contexts that
//! run a [`Filter`] in a Wasm VM. The only module of the workspace that calls the SDK.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use crate::host::{
    install, Action, Body, GrpcCall, HeaderMap, Host, HostResult, HttpAnswer, HttpCall, HttpFilter,
    MetricKind, SharedWriteError,
};
use crate::{configure, Filter, Loaded};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType, MetricType, Status};

pub use proxy_wasm;

/// The proxy-wasm host: stateless, as the ABI knows which context each call is for.
struct ProxyWasm;

static PROXY_WASM: ProxyWasm = ProxyWasm;

fn map_type(map: HeaderMap) -> MapType {
    match map {
        HeaderMap::Request => MapType::HttpRequestHeaders,
        HeaderMap::Response => MapType::HttpResponseHeaders,
    }
}

fn buffer_type(body: Body) -> BufferType {
    match body {
        Body::Request => BufferType::HttpRequestBody,
        Body::Response => BufferType::HttpResponseBody,
    }
}

fn status_text(status: Status) -> String {
    format!("{status:?}")
}

impl Host for ProxyWasm {
    fn headers(&self, map: HeaderMap) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(map_type(map)).unwrap_or_default()
    }

    fn header(&self, map: HeaderMap, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(map_type(map), name)
            .ok()
            .flatten()
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()> {
        hostcalls::set_map_value(map_type(map), name, value).map_err(status_text)
    }

    fn body(&self, body: Body, offset: usize, size: usize) -> Vec<u8> {
        hostcalls::get_buffer(buffer_type(body), offset, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn replace_body(&self, body: Body, offset: usize, size: usize, new: &[u8]) -> HostResult<()> {
        hostcalls::set_buffer(buffer_type(body), offset, size, new).map_err(status_text)
    }

    fn send_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body))
            .map_err(status_text)
    }

    fn resume_response(&self) -> HostResult<()> {
        hostcalls::resume_http_response().map_err(status_text)
    }

    fn resume_request(&self) -> HostResult<()> {
        hostcalls::resume_http_request().map_err(status_text)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()> {
        hostcalls::set_property(vec![key], Some(value.as_bytes())).map_err(status_text)
    }

    fn now_unix_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Histogram => MetricType::Histogram,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(kind, name).map_err(status_text)
    }

    fn increment_counter(&self, id: u32, by: u64) {
        let _ = hostcalls::increment_metric(id, i64::try_from(by).unwrap_or(i64::MAX));
    }

    fn record_histogram(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn set_gauge(&self, id: u32, value: u64) {
        // On a gauge, proxy-wasm's record sets the value.
        let _ = hostcalls::record_metric(id, value);
    }

    fn shared_get(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        hostcalls::get_shared_data(key).map_err(status_text)
    }

    fn shared_set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedWriteError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SharedWriteError::CasMismatch),
            Err(status) => Err(SharedWriteError::Failed(status_text(status))),
        }
    }

    fn grpc_call(&self, call: &GrpcCall<'_>) -> HostResult<u32> {
        hostcalls::dispatch_grpc_call(
            call.grpc_service,
            call.service,
            call.method,
            Vec::new(),
            Some(call.message),
            call.timeout,
        )
        .map_err(status_text)
    }

    fn http_call(&self, call: &HttpCall<'_>) -> HostResult<u32> {
        let mut headers = vec![
            (":method", call.method),
            (":path", call.path),
            (":authority", call.authority),
        ];
        headers.extend_from_slice(call.headers);
        hostcalls::dispatch_http_call(
            call.cluster,
            headers,
            Some(call.body),
            Vec::new(),
            call.timeout,
        )
        .map_err(status_text)
    }
}

/// The answer to the HTTP call being delivered: Envoy reports a failed call with no headers.
fn http_answer(body_size: usize) -> Option<HttpAnswer> {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()?;
    let status = std::str::from_utf8(&status).ok()?.parse().ok()?;
    let body = if body_size == 0 {
        Vec::new()
    } else {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    Some(HttpAnswer { status, body })
}

/// The body of the gRPC answer being delivered (none on failures).
fn grpc_response_body(size: usize) -> Option<Vec<u8>> {
    if size == 0 {
        return None;
    }
    hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
        .ok()
        .flatten()
}

/// Installs `F` as this module's root context. Called by [`wasm_module!`].
pub fn register<F: Filter>() {
    install(&PROXY_WASM);
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(FilterRoot::<F> { loaded: None })
    });
}

struct FilterRoot<F: Filter> {
    loaded: Option<Loaded<F>>,
}

impl<F: Filter> Context for FilterRoot<F> {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if let Some(loaded) = &self.loaded {
            let body = grpc_response_body(response_size);
            loaded
                .filter
                .on_root_grpc_response(token_id, status_code, body.as_deref());
        }
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(loaded) = &self.loaded {
            let answer = http_answer(body_size);
            loaded
                .filter
                .on_root_http_response(token_id, answer.as_ref());
        }
    }
}

impl<F: Filter> RootContext for FilterRoot<F> {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match configure::<F>(&bytes) {
            Ok(loaded) => {
                if let Some(period) = loaded.filter.tick_period() {
                    self.set_tick_period(period);
                }
                self.loaded = Some(loaded);
                true
            }
            Err(line) => {
                // Envoy's own prefix already names the plugin (`wasm log llm_router llm_router: `).
                let prefix = format!("{}: ", F::NAME);
                log::error!("{}", line.strip_prefix(&prefix).unwrap_or(&line));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(loaded) = &self.loaded {
            loaded.filter.on_tick();
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let loaded = self.loaded.as_ref()?;
        Some(Box::new(WasmStream {
            inner: loaded.new_stream(),
        }))
    }
}

/// One stream's [`HttpFilter`] behind proxy-wasm's callbacks.
struct WasmStream {
    inner: Box<dyn HttpFilter>,
}

fn action(action: Action) -> proxy_wasm::types::Action {
    match action {
        Action::Continue => proxy_wasm::types::Action::Continue,
        Action::Pause => proxy_wasm::types::Action::Pause,
    }
}

impl Context for WasmStream {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        let body = grpc_response_body(response_size);
        self.inner
            .on_grpc_response(token_id, status_code, body.as_deref());
    }

    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let answer = http_answer(body_size);
        self.inner.on_http_response(token_id, answer.as_ref());
    }
}

impl HttpContext for WasmStream {
    fn on_http_request_headers(
        &mut self,
        _: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.inner.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(
        &mut self,
        size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.inner.on_request_body(size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _: usize) -> proxy_wasm::types::Action {
        action(self.inner.on_request_trailers())
    }

    fn on_http_response_headers(
        &mut self,
        _: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.inner.on_response_headers(end_of_stream))
    }

    fn on_http_response_body(
        &mut self,
        size: usize,
        end_of_stream: bool,
    ) -> proxy_wasm::types::Action {
        action(self.inner.on_response_body(size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _: usize) -> proxy_wasm::types::Action {
        action(self.inner.on_response_trailers())
    }

    fn on_log(&mut self) {
        self.inner.on_log();
    }
}
