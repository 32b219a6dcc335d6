//! Several filters in one Wasm module and one HTTP context: [`Chain`] runs their contexts in order,
//! as Envoy would run them as separate filters, so each filter's glue works unchanged.
//!
//! What Envoy's filter chain guarantees, and this keeps: a filter sees the request headers only after
//! every filter before it passed them; a filter that pauses its headers gets the body as it arrives
//! (the whole buffer so far) and passes headers and body together when it continues; a filter that
//! passed some body bytes sees only the bytes after them; responses run in reverse order; a local
//! reply stops the filters after the one that sent it; a filter that paused for its own asynchronous
//! call continues the chain with the filter after it when it resumes.

use crate::view::{self, BodyWindow, Shared};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// Where one filter is in one direction (request or response).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Headers {
    #[default]
    NotSeen,
    /// The filter returned `Pause` from its headers callback and has not continued yet.
    Paused,
    Passed,
}

#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    headers: Headers,
    /// Body bytes (from the start of Envoy's buffer) this filter has passed.
    passed: usize,
    /// The filter was given the end of the body.
    body_ended: bool,
    trailers_seen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// What Envoy delivered so far in one direction.
#[derive(Debug, Default)]
struct Flow {
    progress: Vec<Progress>,
    headers_end_stream: bool,
    body_seen: bool,
    end_of_stream: bool,
    trailers: bool,
    /// Bytes in Envoy's buffer for this direction now.
    size: usize,
}

/// The HTTP context of a module that holds several filters.
pub struct Chain {
    filters: Vec<Box<dyn HttpContext>>,
    request: Flow,
    response: Flow,
    /// A filter sent a local reply: the request goes no further.
    replied: bool,
}

impl Chain {
    /// `filters` in request order (responses run them in reverse).
    pub fn new(filters: Vec<Box<dyn HttpContext>>) -> Self {
        let progress = vec![Progress::default(); filters.len()];
        Chain {
            filters,
            request: Flow {
                progress: progress.clone(),
                ..Flow::default()
            },
            response: Flow {
                progress,
                ..Flow::default()
            },
            replied: false,
        }
    }

    fn flow(&mut self, direction: Direction) -> &mut Flow {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// The filter at `position` in `direction`'s order.
    fn index(&self, direction: Direction, position: usize) -> usize {
        match direction {
            Direction::Request => position,
            Direction::Response => self.filters.len() - 1 - position,
        }
    }

    /// Runs `f` with this chain's view installed for the filters (see [`view`]).
    fn in_view<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let mut shared = Shared::default();
        shared.request_body.reset(self.request.size);
        shared.response_body.reset(self.response.size);
        view::enter(shared);
        let result = f(self);
        if let Some(shared) = view::leave() {
            self.request.size = shared.request_body.size;
            self.response.size = shared.response_body.size;
        }
        result
    }

    /// Runs the filters from `from` (a position in `direction`'s order) over what Envoy delivered so
    /// far. `Continue` means every filter passed everything.
    fn run(&mut self, direction: Direction, from: usize) -> Action {
        for position in from..self.filters.len() {
            let index = self.index(direction, position);
            if self.deliver(direction, position, index) == Action::Pause {
                return Action::Pause;
            }
        }
        // Envoy forwards its buffer now: the next body callback brings only new bytes.
        for progress in &mut self.flow(direction).progress {
            progress.passed = 0;
        }
        Action::Continue
    }

    /// Gives one filter what it has not seen yet; `Pause` if it holds the request (or response).
    fn deliver(&mut self, direction: Direction, position: usize, index: usize) -> Action {
        let flow = self.flow(direction);
        let mut progress = flow.progress.get(position).copied().unwrap_or_default();
        let (headers_end_stream, body_seen, end_of_stream, trailers) = (
            flow.headers_end_stream,
            flow.body_seen,
            flow.end_of_stream,
            flow.trailers,
        );
        let Some(filter) = self.filters.get_mut(index) else {
            return Action::Continue;
        };
        let mut action = Action::Continue;
        if progress.headers == Headers::NotSeen {
            // Envoy's own count of headers is not what this filter sees after earlier rewrites;
            // no filter uses it.
            let result = match direction {
                Direction::Request => filter.on_http_request_headers(0, headers_end_stream),
                Direction::Response => filter.on_http_response_headers(0, headers_end_stream),
            };
            progress.headers = match result {
                Action::Continue => Headers::Passed,
                _ => Headers::Paused,
            };
        }
        let replied = || view::shared_mut(|s| s.replied).unwrap_or(false);
        if replied() {
            self.replied = true;
            action = Action::Pause;
        } else {
            // Envoy's buffer as the filters before this one left it.
            let new_bytes = current_size(direction).saturating_sub(progress.passed);
            let body_end = end_of_stream && !trailers;
            if body_seen && (new_bytes > 0 || (body_end && !progress.body_ended)) {
                set_offset(direction, progress.passed);
                let result = match direction {
                    Direction::Request => filter.on_http_request_body(new_bytes, body_end),
                    Direction::Response => filter.on_http_response_body(new_bytes, body_end),
                };
                if replied() {
                    self.replied = true;
                    action = Action::Pause;
                } else if result == Action::Continue {
                    progress.headers = Headers::Passed;
                    progress.passed = current_size(direction);
                    progress.body_ended = body_end;
                } else {
                    action = Action::Pause;
                }
            }
            if action == Action::Continue && progress.headers == Headers::Paused {
                action = Action::Pause; // waits for the body
            }
            if action == Action::Continue && trailers && !progress.trailers_seen {
                let result = match direction {
                    Direction::Request => filter.on_http_request_trailers(0),
                    Direction::Response => filter.on_http_response_trailers(0),
                };
                if replied() {
                    self.replied = true;
                    action = Action::Pause;
                } else if result == Action::Continue {
                    progress.trailers_seen = true;
                } else {
                    action = Action::Pause;
                }
            }
        }
        if let Some(slot) = self.flow(direction).progress.get_mut(position) {
            *slot = progress;
        }
        action
    }

    /// A filter asked to resume after its asynchronous call: it has passed everything delivered so
    /// far; the filters after it run, and the host resumes when they all pass.
    fn resume(&mut self, position: usize) {
        let size = current_size(Direction::Request);
        let flow = &mut self.request;
        let (end, trailers) = (flow.end_of_stream, flow.trailers);
        if let Some(progress) = flow.progress.get_mut(position) {
            progress.headers = Headers::Passed;
            progress.passed = size;
            progress.body_ended = end && !trailers;
            progress.trailers_seen = trailers;
        }
        if self.run(Direction::Request, position + 1) == Action::Continue {
            if let Err(status) = proxy_wasm::hostcalls::resume_http_request() {
                log::warn!("cannot resume the request: {status:?}");
            }
        }
    }

    /// Delivers an asynchronous answer to each filter (each knows its own call tokens).
    fn on_async(&mut self, mut deliver: impl FnMut(&mut dyn HttpContext)) {
        if self.replied {
            return;
        }
        for position in 0..self.filters.len() {
            let Some(filter) = self.filters.get_mut(position) else {
                continue;
            };
            deliver(filter.as_mut());
            let (resume, replied) =
                view::shared_mut(|s| (std::mem::take(&mut s.resume_requested), s.replied))
                    .unwrap_or_default();
            if replied {
                self.replied = true;
                return;
            }
            if resume {
                self.resume(position);
                return;
            }
        }
    }

    fn headers(&mut self, direction: Direction, end_of_stream: bool) -> Action {
        if direction == Direction::Request && self.replied {
            return Action::Pause;
        }
        let flow = self.flow(direction);
        flow.headers_end_stream = end_of_stream;
        flow.end_of_stream = end_of_stream;
        self.in_view(|chain| chain.run(direction, 0))
    }

    fn body(&mut self, direction: Direction, size: usize, end_of_stream: bool) -> Action {
        if direction == Direction::Request && self.replied {
            return Action::Pause;
        }
        let flow = self.flow(direction);
        flow.body_seen = true;
        flow.end_of_stream = end_of_stream;
        flow.size = size;
        self.in_view(|chain| chain.run(direction, 0))
    }

    fn trailers(&mut self, direction: Direction) -> Action {
        if direction == Direction::Request && self.replied {
            return Action::Pause;
        }
        let flow = self.flow(direction);
        flow.trailers = true;
        flow.end_of_stream = true;
        self.in_view(|chain| chain.run(direction, 0))
    }
}

fn set_offset(direction: Direction, offset: usize) {
    view::shared_mut(|shared| window(shared, direction).offset = offset);
}

fn current_size(direction: Direction) -> usize {
    view::shared_mut(|shared| window(shared, direction).size).unwrap_or(0)
}

fn window(shared: &mut Shared, direction: Direction) -> &mut BodyWindow {
    match direction {
        Direction::Request => &mut shared.request_body,
        Direction::Response => &mut shared.response_body,
    }
}

impl Context for Chain {
    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        self.in_view(|chain| {
            chain.on_async(|filter| {
                filter.on_grpc_call_response(token_id, status_code, response_size)
            })
        });
    }

    fn on_http_call_response(&mut self, token: u32, headers: usize, body: usize, trailers: usize) {
        self.in_view(|chain| {
            chain.on_async(|filter| filter.on_http_call_response(token, headers, body, trailers))
        });
    }

    fn on_done(&mut self) -> bool {
        for filter in &mut self.filters {
            filter.on_done();
        }
        true
    }
}

impl HttpContext for Chain {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.headers(Direction::Request, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body(Direction::Request, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.trailers(Direction::Request)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.headers(Direction::Response, end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.body(Direction::Response, body_size, end_of_stream)
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.trailers(Direction::Response)
    }

    fn on_log(&mut self) {
        self.in_view(|chain| {
            for filter in &mut chain.filters {
                filter.on_log();
            }
        });
    }
}
