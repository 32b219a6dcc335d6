//! An in-memory host for unit tests of filter glue: [`Stream`] drives a filter through the callback
//! orders Envoy produces (headers, body chunks with buffering while the filter pauses, trailers,
//! asynchronous answers, local replies), and [`with`] shows what the filter did to the host.
//!
//! State is per thread (tests run on many): call [`reset`] at the start of each test.

use crate::host::{
    self, install, Action, Body, HeaderMap, Host, HostResult, HttpFilter, MetricKind,
    SharedWriteError,
};
use std::cell::RefCell;
use std::collections::HashMap;

/// A local reply the filter sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A gRPC call the filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub token: u32,
    pub cluster: String,
    /// The serialized `GrpcService` (proxy-wasm's target).
    pub target: String,
    pub service: String,
    pub method: String,
    pub message: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Metric {
    name: String,
    kind: MetricKind,
    total: u64,
    records: Vec<u64>,
}

/// Everything the fake host holds.
#[derive(Debug, Default)]
pub struct State {
    pub request_headers: Vec<(String, String)>,
    pub response_headers: Vec<(String, String)>,
    /// The request body the host holds for the filter now (paused chunks accumulate here).
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    pub replies: Vec<Reply>,
    /// `resume_request` calls.
    pub resumes: u32,
    /// `resume_response` calls.
    pub response_resumes: u32,
    /// Properties by path joined with `.` (`upstream.address`, ...).
    pub properties: HashMap<String, Vec<u8>>,
    pub filter_state: HashMap<String, String>,
    pub now_unix_nanos: u64,
    metrics: Vec<Metric>,
    shared: HashMap<String, (Vec<u8>, u32)>,
    pub grpc_calls: Vec<GrpcCall>,
    /// Makes `grpc_call` fail, as with an unknown cluster.
    pub grpc_unavailable: bool,
    pub http_calls: Vec<HttpCall>,
    /// Makes `http_call` fail, as with an unknown cluster.
    pub http_unavailable: bool,
}

/// An HTTP call a filter made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    pub cluster: String,
    pub authority: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: std::time::Duration,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Installs the fake as this thread's host with empty state (time starts at 2026-01-01).
pub fn reset() {
    install(&FAKE);
    STATE.with(|state| {
        *state.borrow_mut() = State {
            now_unix_nanos: 1_767_225_600_000_000_000,
            ..State::default()
        }
    });
}

/// Runs `f` on the fake host's state.
pub fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|state| f(&mut state.borrow_mut()))
}

/// The total of the counter `name` (its full, labeled name), 0 if never defined.
pub fn counter(name: &str) -> u64 {
    with(|state| {
        state
            .metrics
            .iter()
            .filter(|m| m.name == name && m.kind == MetricKind::Counter)
            .map(|m| m.total)
            .sum()
    })
}

/// The values recorded in the histogram `name`.
pub fn histogram(name: &str) -> Vec<u64> {
    with(|state| {
        state
            .metrics
            .iter()
            .filter(|m| m.name == name && m.kind == MetricKind::Histogram)
            .flat_map(|m| m.records.clone())
            .collect()
    })
}

/// The value of the gauge `name` (its full, labeled name), 0 if never set.
pub fn gauge(name: &str) -> u64 {
    with(|state| {
        state
            .metrics
            .iter()
            .filter(|m| m.name == name && m.kind == MetricKind::Gauge)
            .map(|m| m.total)
            .sum()
    })
}

/// Every defined metric name, for tests that check what exists.
pub fn metric_names() -> Vec<String> {
    with(|state| state.metrics.iter().map(|m| m.name.clone()).collect())
}

/// A header of the request as the filter left it.
pub fn request_header(name: &str) -> Option<String> {
    with(|state| find(&state.request_headers, name))
}

/// A header of the response as the filter left it.
pub fn response_header(name: &str) -> Option<String> {
    with(|state| find(&state.response_headers, name))
}

/// The value of shared data `key`.
pub fn shared(key: &str) -> Option<Vec<u8>> {
    with(|state| state.shared.get(key).map(|(bytes, _)| bytes.clone()))
}

fn find(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

struct Fake;

static FAKE: Fake = Fake;

impl State {
    fn headers_mut(&mut self, map: HeaderMap) -> &mut Vec<(String, String)> {
        match map {
            HeaderMap::Request => &mut self.request_headers,
            HeaderMap::Response => &mut self.response_headers,
        }
    }

    fn body_mut(&mut self, body: Body) -> &mut Vec<u8> {
        match body {
            Body::Request => &mut self.request_body,
            Body::Response => &mut self.response_body,
        }
    }
}

impl Host for Fake {
    fn headers(&self, map: HeaderMap) -> Vec<(String, Vec<u8>)> {
        with(|state| {
            state
                .headers_mut(map)
                .iter()
                .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
                .collect()
        })
    }

    fn header(&self, map: HeaderMap, name: &str) -> Option<Vec<u8>> {
        with(|state| find(state.headers_mut(map), name).map(String::into_bytes))
    }

    fn set_header(&self, map: HeaderMap, name: &str, value: Option<&str>) -> HostResult<()> {
        with(|state| {
            let headers = state.headers_mut(map);
            headers.retain(|(n, _)| n != name);
            if let Some(value) = value {
                headers.push((name.to_string(), value.to_string()));
            }
        });
        Ok(())
    }

    fn body(&self, body: Body, offset: usize, size: usize) -> Vec<u8> {
        with(|state| {
            let bytes = state.body_mut(body);
            let end = offset.saturating_add(size).min(bytes.len());
            bytes.get(offset.min(end)..end).unwrap_or_default().to_vec()
        })
    }

    fn replace_body(&self, body: Body, offset: usize, size: usize, new: &[u8]) -> HostResult<()> {
        with(|state| {
            let bytes = state.body_mut(body);
            if offset > bytes.len() {
                return Err(format!(
                    "offset {offset} past the body's {} bytes",
                    bytes.len()
                ));
            }
            let end = offset.saturating_add(size).min(bytes.len());
            bytes.splice(offset..end, new.iter().copied());
            Ok(())
        })
    }

    fn send_reply(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> HostResult<()> {
        with(|state| {
            state.replies.push(Reply {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: String::from_utf8_lossy(body).into_owned(),
            })
        });
        Ok(())
    }

    fn resume_response(&self) -> HostResult<()> {
        with(|state| state.response_resumes += 1);
        Ok(())
    }

    fn resume_request(&self) -> HostResult<()> {
        with(|state| state.resumes += 1);
        Ok(())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        with(|state| state.properties.get(&path.join(".")).cloned())
    }

    fn set_filter_state(&self, key: &str, value: &str) -> HostResult<()> {
        with(|state| {
            state
                .filter_state
                .insert(key.to_string(), value.to_string())
        });
        Ok(())
    }

    fn now_unix_nanos(&self) -> u64 {
        with(|state| state.now_unix_nanos)
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> HostResult<u32> {
        with(|state| {
            let found = state
                .metrics
                .iter()
                .position(|m| m.name == name && m.kind == kind);
            let index = found.unwrap_or_else(|| {
                state.metrics.push(Metric {
                    name: name.to_string(),
                    kind,
                    total: 0,
                    records: Vec::new(),
                });
                state.metrics.len() - 1
            });
            u32::try_from(index).map_err(|_| "too many metrics".to_string())
        })
    }

    fn increment_counter(&self, id: u32, by: u64) {
        with(|state| {
            if let Some(metric) = state.metrics.get_mut(id as usize) {
                metric.total = metric.total.saturating_add(by);
            }
        });
    }

    fn record_histogram(&self, id: u32, value: u64) {
        with(|state| {
            if let Some(metric) = state.metrics.get_mut(id as usize) {
                metric.records.push(value);
            }
        });
    }

    fn set_gauge(&self, id: u32, value: u64) {
        with(|state| {
            if let Some(metric) = state.metrics.get_mut(id as usize) {
                metric.total = value;
            }
        });
    }

    fn shared_get(&self, key: &str) -> HostResult<(Option<Vec<u8>>, Option<u32>)> {
        Ok(with(|state| match state.shared.get(key) {
            Some((bytes, cas)) => (Some(bytes.clone()), Some(*cas)),
            None => (None, None),
        }))
    }

    fn shared_set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), SharedWriteError> {
        with(|state| {
            let version = state.shared.get(key).map(|(_, v)| *v);
            if let (Some(expected), Some(version)) = (cas, version) {
                if expected != version {
                    return Err(SharedWriteError::CasMismatch);
                }
            }
            let next = version.map_or(1, |v| v.wrapping_add(1));
            state.shared.insert(key.to_string(), (value.to_vec(), next));
            Ok(())
        })
    }

    fn grpc_call(&self, call: &host::GrpcCall<'_>) -> HostResult<u32> {
        with(|state| {
            if state.grpc_unavailable {
                return Err("BadArgument".to_string());
            }
            let token = u32::try_from(state.grpc_calls.len() + 1).unwrap_or(u32::MAX);
            state.grpc_calls.push(GrpcCall {
                token,
                cluster: call.cluster.to_string(),
                target: call.grpc_service.to_string(),
                service: call.service.to_string(),
                method: call.method.to_string(),
                message: call.message.to_vec(),
            });
            Ok(token)
        })
    }

    fn http_call(&self, call: &host::HttpCall<'_>) -> HostResult<u32> {
        with(|state| {
            if state.http_unavailable {
                return Err("BadArgument".to_string());
            }
            // Tokens shared with gRPC calls' numbering would collide; these start at 1000.
            let token = u32::try_from(state.http_calls.len() + 1000).unwrap_or(u32::MAX);
            state.http_calls.push(HttpCall {
                token,
                cluster: call.cluster.to_string(),
                authority: call.authority.to_string(),
                method: call.method.to_string(),
                path: call.path.to_string(),
                headers: call
                    .headers
                    .iter()
                    .map(|(n, v)| ((*n).to_string(), (*v).to_string()))
                    .collect(),
                body: call.body.to_vec(),
                timeout: call.timeout,
            });
            Ok(token)
        })
    }
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Where one direction of the stream is, as Envoy's filter manager tracks it for one filter.
#[derive(Debug, Default)]
struct Direction {
    /// The filter paused the headers (or the body) and has not continued yet.
    paused: bool,
    /// Bytes passed on (upstream for the request, to the client for the response).
    forwarded: Vec<u8>,
    headers_forwarded: bool,
}

/// One stream through one filter (or a [`crate::Chain`]), driven as Envoy drives it.
pub struct Stream {
    filter: Box<dyn HttpFilter>,
    request: Direction,
    response: Direction,
}

impl Stream {
    pub fn new(filter: Box<dyn HttpFilter>) -> Self {
        Stream {
            filter,
            request: Direction::default(),
            response: Direction::default(),
        }
    }

    /// The request arrives: its headers; `end_of_stream` when it has no body.
    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        with(|state| state.request_headers = owned(headers));
        let action = self.filter.on_request_headers(end_of_stream);
        self.after(Body::Request, action, true);
        action
    }

    /// A chunk of the request body; while the filter pauses, Envoy buffers and re-delivers it all.
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        if self.replied() {
            return Action::Pause;
        }
        let size = with(|state| {
            state.request_body.extend_from_slice(chunk);
            state.request_body.len()
        });
        let action = self.filter.on_request_body(size, end_of_stream);
        self.after(Body::Request, action, false);
        action
    }

    pub fn request_trailers(&mut self) -> Action {
        let action = self.filter.on_request_trailers();
        self.after(Body::Request, action, false);
        action
    }

    /// The whole request: headers, then the body in `chunks` (none: a request without body).
    pub fn request(&mut self, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Action {
        let mut action = self.request_headers(headers, chunks.is_empty());
        for (i, chunk) in chunks.iter().enumerate() {
            action = self.request_body(chunk, i + 1 == chunks.len());
        }
        action
    }

    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Action {
        with(|state| state.response_headers = owned(headers));
        let action = self.filter.on_response_headers(end_of_stream);
        self.after(Body::Response, action, true);
        action
    }

    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Action {
        let size = with(|state| {
            state.response_body.extend_from_slice(chunk);
            state.response_body.len()
        });
        let action = self.filter.on_response_body(size, end_of_stream);
        self.after(Body::Response, action, false);
        action
    }

    pub fn response_trailers(&mut self) -> Action {
        let action = self.filter.on_response_trailers();
        self.after(Body::Response, action, false);
        action
    }

    /// The whole response: headers, then the body in `chunks`.
    pub fn response(&mut self, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Action {
        let mut action = self.response_headers(headers, chunks.is_empty());
        for (i, chunk) in chunks.iter().enumerate() {
            action = self.response_body(chunk, i + 1 == chunks.len());
        }
        action
    }

    /// The answer to gRPC call `token`; a resume during it forwards what Envoy buffered.
    pub fn grpc_response(&mut self, token: u32, status: u32, body: Option<&[u8]>) {
        let before = with(|state| state.resumes);
        self.filter.on_grpc_response(token, status, body);
        if with(|state| state.resumes) > before {
            self.request.paused = false;
            self.request.headers_forwarded = true;
            let held = with(|state| std::mem::take(&mut state.request_body));
            self.request.forwarded.extend(held);
        }
    }

    /// The answer to HTTP call `token` (`None`: the call failed); a resume during it forwards what
    /// Envoy buffered, and a local reply answers the client.
    pub fn http_response(&mut self, token: u32, answer: Option<(u16, &[u8])>) {
        let before = with(|state| state.resumes);
        let response_before = with(|state| state.response_resumes);
        let answer = answer.map(|(status, body)| host::HttpAnswer {
            status,
            body: body.to_vec(),
        });
        self.filter.on_http_response(token, answer.as_ref());
        if with(|state| state.resumes) > before {
            self.request.paused = false;
            self.request.headers_forwarded = true;
            let held = with(|state| std::mem::take(&mut state.request_body));
            self.request.forwarded.extend(held);
        }
        if with(|state| state.response_resumes) > response_before {
            self.response.paused = false;
            self.response.headers_forwarded = true;
            let held = with(|state| std::mem::take(&mut state.response_body));
            self.response.forwarded.extend(held);
        }
    }

    pub fn log(&mut self) {
        self.filter.on_log();
    }

    /// What went upstream of the request body so far.
    pub fn upstream_body(&self) -> &[u8] {
        &self.request.forwarded
    }

    /// Whether the request headers went upstream.
    pub fn request_forwarded(&self) -> bool {
        self.request.headers_forwarded
    }

    /// What reached the client of the response body so far.
    pub fn client_body(&self) -> &[u8] {
        &self.response.forwarded
    }

    pub fn client_body_text(&self) -> String {
        String::from_utf8_lossy(&self.response.forwarded).into_owned()
    }

    /// Whether the request is still held by the filter.
    pub fn request_paused(&self) -> bool {
        self.request.paused
    }

    /// The local reply the filter sent, if any.
    pub fn reply(&self) -> Option<Reply> {
        with(|state| state.replies.last().cloned())
    }

    fn replied(&self) -> bool {
        with(|state| !state.replies.is_empty())
    }

    /// Envoy's filter manager after a callback: `Continue` passes what it holds on.
    fn after(&mut self, body: Body, action: Action, headers: bool) {
        let direction = match body {
            Body::Request => &mut self.request,
            Body::Response => &mut self.response,
        };
        match action {
            Action::Pause => direction.paused = true,
            Action::Continue => {
                direction.paused = false;
                direction.headers_forwarded = true;
                if !headers {
                    let held = with(|state| std::mem::take(state.body_mut(body)));
                    direction.forwarded.extend(held);
                }
            }
        }
    }
}
