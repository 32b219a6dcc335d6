//! What a filter reads and writes of the request and the response: headers, bodies, local replies and
//! resuming. Alone in its module, a filter gets plain host calls. Inside a [`crate::chain::Chain`]
//! (several filters in one module), reads are served from what an earlier filter of the same callback
//! already read, writes keep that copy current, each filter sees only the body bytes it has not passed
//! yet, and a filter's resume or local reply goes to the chain instead of the host.
//!
//! Every host call that returns data makes Envoy call back into the VM to allocate the result; sharing
//! one read among the filters of a chain is most of what a single module saves.

use crate::Headers;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType};
use std::cell::RefCell;

/// The state of the chain callback being run; `None` outside a chain (a filter alone in its module).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub request_headers: Option<Headers>,
    pub response_headers: Option<Headers>,
    pub request_body: BodyWindow,
    pub response_body: BodyWindow,
    /// A filter asked to resume the request (after its own asynchronous call).
    pub resume_requested: bool,
    /// A filter answered the request itself.
    pub replied: bool,
}

/// A body buffer as the running filter sees it: it starts at `offset` in Envoy's buffer (the bytes
/// before it were passed by this filter in an earlier callback and are only still there because a
/// later filter holds them), and Envoy's buffer holds `size` bytes now.
#[derive(Debug, Default)]
pub(crate) struct BodyWindow {
    pub offset: usize,
    pub size: usize,
    /// Bytes read in this callback: `(start in Envoy's buffer, bytes)`.
    cache: Option<(usize, Vec<u8>)>,
}

impl BodyWindow {
    /// Envoy's buffer holds `size` bytes; what was read in an earlier callback is stale.
    pub fn reset(&mut self, size: usize) {
        self.size = size;
        self.offset = 0;
        self.cache = None;
    }
}

thread_local! {
    static SHARED: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Runs `f` with the chain's state for this callback, or `None` outside a chain.
fn with_shared<R>(f: impl FnOnce(Option<&mut Shared>) -> R) -> R {
    SHARED.with(|shared| f(shared.borrow_mut().as_mut()))
}

/// Installs the chain's state for one callback; [`leave`] takes it back.
pub(crate) fn enter(shared: Shared) {
    SHARED.with(|slot| *slot.borrow_mut() = Some(shared));
}

pub(crate) fn leave() -> Option<Shared> {
    SHARED.with(|slot| slot.borrow_mut().take())
}

/// Runs `f` on the chain's state (the chain itself, between its filters).
pub(crate) fn shared_mut<R>(f: impl FnOnce(&mut Shared) -> R) -> Option<R> {
    with_shared(|shared| shared.map(f))
}

/// The chain's copy of `map`'s headers (request or response).
fn headers_of(shared: &mut Shared, map: MapType) -> &mut Option<Headers> {
    match map {
        MapType::HttpResponseHeaders => &mut shared.response_headers,
        _ => &mut shared.request_headers,
    }
}

pub(crate) fn read_map(map: MapType) -> Headers {
    if let Some(headers) = with_shared(|shared| headers_of(shared?, map).clone()) {
        return headers;
    }
    let headers = Headers::from_host(map);
    shared_mut(|shared| *headers_of(shared, map) = Some(headers.clone()));
    headers
}

/// One header, from the chain's copy when there is one, else by a single host read.
pub(crate) fn read_header(map: MapType, name: &str) -> Option<String> {
    let cached = with_shared(|shared| {
        let headers = headers_of(shared?, map).as_ref()?;
        Some(headers.get(name).map(str::to_string))
    });
    match cached {
        Some(value) => value,
        None => hostcalls::get_map_value_bytes(map, name)
            .ok()
            .flatten()
            .map(crate::lossy),
    }
}

fn write_header(map: MapType, name: &str, value: Option<&str>) {
    // The SDK's setter panics on a non-Ok status (e.g. headers already sent); a filter must not die
    // of that, so the status is logged.
    if let Err(status) = hostcalls::set_map_value(map, name, value) {
        log::warn!("cannot set header {name}: {status:?}");
        return;
    }
    shared_mut(|shared| {
        if let Some(headers) = headers_of(shared, map) {
            headers.replace(name, value);
        }
    });
}

/// Sets (or with `None` removes) a request header, replacing every value it had.
pub fn set_request_header(name: &str, value: Option<&str>) {
    write_header(MapType::HttpRequestHeaders, name, value);
}

/// Sets (or with `None` removes) a response header, replacing every value it had.
pub fn set_response_header(name: &str, value: Option<&str>) {
    write_header(MapType::HttpResponseHeaders, name, value);
}

fn window_of(shared: &mut Shared, buffer: BufferType) -> &mut BodyWindow {
    match buffer {
        BufferType::HttpResponseBody => &mut shared.response_body,
        _ => &mut shared.request_body,
    }
}

fn read_body(buffer: BufferType, size: usize) -> Vec<u8> {
    let offset = with_shared(|shared| shared.map_or(0, |s| window_of(s, buffer).offset));
    let cached = with_shared(|shared| {
        let (start, bytes) = window_of(shared?, buffer).cache.as_ref()?;
        let from = offset.checked_sub(*start)?;
        bytes.get(from..from.checked_add(size)?).map(<[u8]>::to_vec)
    });
    if let Some(bytes) = cached {
        return bytes;
    }
    let bytes = hostcalls::get_buffer(buffer, offset, size)
        .ok()
        .flatten()
        .unwrap_or_default();
    with_shared(|shared| {
        if let Some(shared) = shared {
            window_of(shared, buffer).cache = Some((offset, bytes.clone()));
        }
    });
    bytes
}

fn replace_body(buffer: BufferType, size: usize, new: &[u8]) {
    let offset = with_shared(|shared| shared.map_or(0, |s| window_of(s, buffer).offset));
    if let Err(status) = hostcalls::set_buffer(buffer, offset, size, new) {
        log::warn!("cannot replace the body: {status:?}");
        return;
    }
    with_shared(|shared| {
        if let Some(shared) = shared {
            let window = window_of(shared, buffer);
            window.size = window.size.saturating_sub(size).saturating_add(new.len());
            // Kept only when it is exactly the replaced range, the common case.
            window.cache = match window.cache.take() {
                Some((start, bytes)) if start == offset && bytes.len() == size => {
                    Some((start, new.to_vec()))
                }
                _ => None,
            };
        }
    });
}

/// The first `size` bytes of the request body this filter has not passed yet (all of it, alone).
pub fn read_request_body(size: usize) -> Vec<u8> {
    read_body(BufferType::HttpRequestBody, size)
}

/// Replaces the first `size` bytes of what [`read_request_body`] reads with `new`.
pub fn replace_request_body(size: usize, new: &[u8]) {
    replace_body(BufferType::HttpRequestBody, size, new);
}

/// The first `size` bytes of the response body this filter has not passed yet.
pub fn read_response_body(size: usize) -> Vec<u8> {
    read_body(BufferType::HttpResponseBody, size)
}

/// Replaces the first `size` bytes of what [`read_response_body`] reads with `new`.
pub fn replace_response_body(size: usize, new: &[u8]) {
    replace_body(BufferType::HttpResponseBody, size, new);
}

/// Resumes the request this filter paused (after its own asynchronous call): in a chain, the
/// filters after it run first.
pub fn resume_request() {
    let in_chain = shared_mut(|shared| shared.resume_requested = true).is_some();
    if !in_chain {
        resume_in_host();
    }
}

/// Resumes the request in Envoy.
pub(crate) fn resume_in_host() {
    if let Err(status) = hostcalls::resume_http_request() {
        log::warn!("cannot resume the request: {status:?}");
    }
}

/// Notes that the running filter answered the request itself.
pub(crate) fn note_reply() {
    shared_mut(|shared| shared.replied = true);
}
