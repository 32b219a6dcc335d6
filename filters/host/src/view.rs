//! What a filter reads and writes of the request and the response: headers, bodies, local replies and
//! resuming. Alone in its module, a filter gets plain host calls. Inside a [`crate::chain::Chain`]
//! (several filters in one module), reads are served from what an earlier filter of the same callback
//! already read, writes keep that copy current, each filter sees only the body bytes it has not passed
//! yet, and a filter's resume or local reply goes to the chain instead of the host.
//!
//! In Wasm, every host call that returns data makes Envoy call back into the VM to allocate the result;
//! sharing one read among the filters of a chain is most of what a single module saves.

use crate::host::{current, Body, HeaderMap};
use crate::Headers;
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
    /// A filter asked to resume the response.
    pub resume_response_requested: bool,
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
fn headers_of(shared: &mut Shared, map: HeaderMap) -> &mut Option<Headers> {
    match map {
        HeaderMap::Response => &mut shared.response_headers,
        HeaderMap::Request => &mut shared.request_headers,
    }
}

pub(crate) fn read_map(map: HeaderMap) -> Headers {
    if let Some(headers) = with_shared(|shared| headers_of(shared?, map).clone()) {
        return headers;
    }
    let headers = Headers::from_host(map);
    shared_mut(|shared| *headers_of(shared, map) = Some(headers.clone()));
    headers
}

/// One header, from the chain's copy when there is one, else by a single host read.
pub(crate) fn read_header(map: HeaderMap, name: &str) -> Option<String> {
    let cached = with_shared(|shared| {
        let headers = headers_of(shared?, map).as_ref()?;
        Some(headers.get(name).map(str::to_string))
    });
    match cached {
        Some(value) => value,
        None => current().header(map, name).map(crate::lossy),
    }
}

fn write_header(map: HeaderMap, name: &str, value: Option<&str>) {
    // A refused write (e.g. headers already sent) must not fail the filter: it is logged.
    if let Err(why) = current().set_header(map, name, value) {
        log::warn!("cannot set header {name}: {why}");
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
    write_header(HeaderMap::Request, name, value);
}

/// Sets (or with `None` removes) a response header, replacing every value it had.
pub fn set_response_header(name: &str, value: Option<&str>) {
    write_header(HeaderMap::Response, name, value);
}

fn window_of(shared: &mut Shared, buffer: Body) -> &mut BodyWindow {
    match buffer {
        Body::Response => &mut shared.response_body,
        Body::Request => &mut shared.request_body,
    }
}

fn read_body(buffer: Body, size: usize) -> Vec<u8> {
    let offset = with_shared(|shared| shared.map_or(0, |s| window_of(s, buffer).offset));
    let cached = with_shared(|shared| {
        let (start, bytes) = window_of(shared?, buffer).cache.as_ref()?;
        let from = offset.checked_sub(*start)?;
        bytes.get(from..from.checked_add(size)?).map(<[u8]>::to_vec)
    });
    if let Some(bytes) = cached {
        return bytes;
    }
    let bytes = current().body(buffer, offset, size);
    with_shared(|shared| {
        if let Some(shared) = shared {
            window_of(shared, buffer).cache = Some((offset, bytes.clone()));
        }
    });
    bytes
}

fn replace_body(buffer: Body, size: usize, new: &[u8]) {
    let offset = with_shared(|shared| shared.map_or(0, |s| window_of(s, buffer).offset));
    if let Err(why) = current().replace_body(buffer, offset, size, new) {
        log::warn!("cannot replace the body: {why}");
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
    read_body(Body::Request, size)
}

/// Replaces the first `size` bytes of what [`read_request_body`] reads with `new`.
pub fn replace_request_body(size: usize, new: &[u8]) {
    replace_body(Body::Request, size, new);
}

/// The first `size` bytes of the response body this filter has not passed yet.
pub fn read_response_body(size: usize) -> Vec<u8> {
    read_body(Body::Response, size)
}

/// Replaces the first `size` bytes of what [`read_response_body`] reads with `new`.
pub fn replace_response_body(size: usize, new: &[u8]) {
    replace_body(Body::Response, size, new);
}

/// Resumes the request this filter paused (after its own asynchronous call): in a chain, the
/// filters after it run first.
pub fn resume_request() {
    let in_chain = shared_mut(|shared| shared.resume_requested = true).is_some();
    if !in_chain {
        resume_in_host();
    }
}

/// Resumes the response this filter paused (after its own asynchronous call): in a chain, the
/// filters after it (in response order) run first.
pub fn resume_response() {
    let in_chain = shared_mut(|shared| shared.resume_response_requested = true).is_some();
    if !in_chain {
        resume_response_in_host();
    }
}

/// Resumes the response in Envoy.
pub(crate) fn resume_response_in_host() {
    if let Err(why) = current().resume_response() {
        log::warn!("cannot resume the response: {why}");
    }
}

/// Resumes the request in Envoy.
pub(crate) fn resume_in_host() {
    if let Err(why) = current().resume_request() {
        log::warn!("cannot resume the request: {why}");
    }
}

/// Notes that the running filter answered the request itself.
pub(crate) fn note_reply() {
    shared_mut(|shared| shared.replied = true);
}
