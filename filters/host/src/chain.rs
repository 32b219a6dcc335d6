//! Several filters in one module and one stream: [`Chain`] runs their contexts in order,
//! as Envoy would run them as separate filters, so each filter's glue works unchanged.
//!
//! What Envoy's filter chain guarantees, and this keeps: a filter sees the request headers only after
//! every filter before it passed them; a filter that pauses its headers gets the body as it arrives
//! (the whole buffer so far) and passes headers and body together when it continues; a filter that
//! passed some body bytes sees only the bytes after them; responses run in reverse order; a local
//! reply stops the filters after the one that sent it; a filter that paused for its own asynchronous
//! call continues the chain with the filter after it when it resumes.

use crate::host::{Action, HttpFilter};
use crate::view::{self, BodyWindow, Shared};

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
    filters: Vec<Box<dyn HttpFilter>>,
    request: Flow,
    response: Flow,
    /// A filter sent a local reply: the request goes no further.
    replied: bool,
    /// How the request resumes in Envoy once every filter passed it (unit tests count instead).
    resume_host: fn(),
    /// The same for the response.
    resume_response_host: fn(),
}

impl Chain {
    /// `filters` in request order (responses run them in reverse).
    pub fn new(filters: Vec<Box<dyn HttpFilter>>) -> Self {
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
            resume_host: view::resume_in_host,
            resume_response_host: view::resume_response_in_host,
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
            let result = match direction {
                Direction::Request => filter.on_request_headers(headers_end_stream),
                Direction::Response => filter.on_response_headers(headers_end_stream),
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
                    Direction::Request => filter.on_request_body(new_bytes, body_end),
                    Direction::Response => filter.on_response_body(new_bytes, body_end),
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
                    Direction::Request => filter.on_request_trailers(),
                    Direction::Response => filter.on_response_trailers(),
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
    /// far; the filters after it run, and the host resumes when they all pass. `position` is in
    /// `direction`'s order.
    fn resume(&mut self, direction: Direction, position: usize) {
        let size = current_size(direction);
        let flow = self.flow(direction);
        let (end, trailers) = (flow.end_of_stream, flow.trailers);
        if let Some(progress) = flow.progress.get_mut(position) {
            progress.headers = Headers::Passed;
            progress.passed = size;
            progress.body_ended = end && !trailers;
            progress.trailers_seen = trailers;
        }
        if self.run(direction, position + 1) == Action::Continue {
            match direction {
                Direction::Request => (self.resume_host)(),
                Direction::Response => (self.resume_response_host)(),
            }
        }
    }

    /// Delivers an asynchronous answer to each filter (each knows its own call tokens).
    fn on_async(&mut self, mut deliver: impl FnMut(&mut dyn HttpFilter)) {
        if self.replied {
            return;
        }
        for position in 0..self.filters.len() {
            let Some(filter) = self.filters.get_mut(position) else {
                continue;
            };
            deliver(filter.as_mut());
            let (resume, resume_response, replied) = view::shared_mut(|s| {
                (
                    std::mem::take(&mut s.resume_requested),
                    std::mem::take(&mut s.resume_response_requested),
                    s.replied,
                )
            })
            .unwrap_or_default();
            if replied {
                self.replied = true;
                return;
            }
            if resume {
                self.resume(Direction::Request, position);
                return;
            }
            if resume_response {
                let in_response_order = self.filters.len() - 1 - position;
                self.resume(Direction::Response, in_response_order);
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

impl HttpFilter for Chain {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        self.headers(Direction::Request, end_of_stream)
    }

    fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.body(Direction::Request, size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        self.trailers(Direction::Request)
    }

    fn on_response_headers(&mut self, end_of_stream: bool) -> Action {
        self.headers(Direction::Response, end_of_stream)
    }

    fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        self.body(Direction::Response, size, end_of_stream)
    }

    fn on_response_trailers(&mut self) -> Action {
        self.trailers(Direction::Response)
    }

    fn on_grpc_response(&mut self, token: u32, status: u32, body: Option<&[u8]>) {
        self.in_view(|chain| chain.on_async(|filter| filter.on_grpc_response(token, status, body)));
    }

    fn on_http_response(&mut self, token: u32, answer: Option<&crate::host::HttpAnswer>) {
        self.in_view(|chain| chain.on_async(|filter| filter.on_http_response(token, answer)));
    }

    fn on_log(&mut self) {
        self.in_view(|chain| {
            for filter in &mut chain.filters {
                filter.on_log();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What the fake filters saw, in order: `"<name> <event>"`.
    type Log = Rc<RefCell<Vec<String>>>;

    /// A filter that passes everything, or holds what its fields say.
    struct Fake {
        name: &'static str,
        log: Log,
        /// Pause request headers and hold the body to its end (as llm_router does).
        holds_request: bool,
        /// Pause request headers for an asynchronous call that the test answers.
        waits_for_call: bool,
        /// Hold the response body to its end (as llm_pii restoring JSON does).
        holds_response: bool,
        /// Answer locally in the request headers (as llm_auth rejecting a key does).
        replies: bool,
    }

    fn fake(name: &'static str, log: &Log) -> Fake {
        Fake {
            name,
            log: Rc::clone(log),
            holds_request: false,
            waits_for_call: false,
            holds_response: false,
            replies: false,
        }
    }

    impl Fake {
        fn note(&self, event: String) {
            self.log.borrow_mut().push(format!("{} {event}", self.name));
        }
    }

    impl HttpFilter for Fake {
        fn on_grpc_response(&mut self, token: u32, _status: u32, _body: Option<&[u8]>) {
            if self.waits_for_call && token == 7 {
                self.waits_for_call = false;
                self.note("answer".into());
                crate::view::resume_request();
            }
        }

        fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
            self.note(format!("request headers end={end_of_stream}"));
            if self.replies {
                crate::view::note_reply();
                return Action::Pause;
            }
            if self.holds_request || self.waits_for_call {
                Action::Pause
            } else {
                Action::Continue
            }
        }

        fn on_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
            self.note(format!("request body {size} end={end_of_stream}"));
            if self.waits_for_call || (self.holds_request && !end_of_stream) {
                Action::Pause
            } else {
                Action::Continue
            }
        }

        fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
            self.note("response headers".into());
            Action::Continue
        }

        fn on_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
            self.note(format!("response body {size} end={end_of_stream}"));
            if self.holds_response && !end_of_stream {
                Action::Pause
            } else {
                Action::Continue
            }
        }

        fn on_log(&mut self) {
            self.note("log".into());
        }
    }

    thread_local! {
        static HOST_RESUMES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    fn chain(filters: Vec<Fake>) -> Chain {
        let mut chain = Chain::new(
            filters
                .into_iter()
                .map(|f| Box::new(f) as Box<dyn HttpFilter>)
                .collect(),
        );
        chain.resume_host = || HOST_RESUMES.with(|count| count.set(count.get() + 1));
        chain
    }

    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.borrow_mut())
    }

    #[test]
    fn a_filter_sees_headers_only_after_the_ones_before_it_passed_them() {
        let log = Log::default();
        let mut router = fake("router", &log);
        router.holds_request = true;
        let mut pii = fake("pii", &log);
        pii.holds_request = true;
        let mut chain = chain(vec![fake("auth", &log), router, pii, fake("usage", &log)]);

        assert_eq!(chain.on_request_headers(false), Action::Pause);
        assert_eq!(
            take(&log),
            [
                "auth request headers end=false",
                "router request headers end=false"
            ]
        );
        // A first part: auth passes it, router holds it; nobody after router sees anything.
        assert_eq!(chain.on_request_body(10, false), Action::Pause);
        assert_eq!(
            take(&log),
            [
                "auth request body 10 end=false",
                "router request body 10 end=false"
            ]
        );
        // The rest: auth sees only the new bytes, router the whole buffer; then pii gets headers and
        // the whole body, holds it no further (it ended), and usage follows.
        assert_eq!(chain.on_request_body(25, true), Action::Continue);
        assert_eq!(
            take(&log),
            [
                "auth request body 15 end=true",
                "router request body 25 end=true",
                "pii request headers end=false",
                "pii request body 25 end=true",
                "usage request headers end=false",
                "usage request body 25 end=true",
            ]
        );
    }

    #[test]
    fn responses_run_in_reverse_and_a_holding_filter_leaves_earlier_ones_the_new_bytes() {
        let log = Log::default();
        let mut pii = fake("pii", &log);
        pii.holds_response = true;
        let mut chain = chain(vec![fake("router", &log), pii, fake("usage", &log)]);
        assert_eq!(chain.on_request_headers(true), Action::Continue);
        take(&log);

        assert_eq!(chain.on_response_headers(false), Action::Continue);
        assert_eq!(
            take(&log),
            [
                "usage response headers",
                "pii response headers",
                "router response headers"
            ]
        );
        assert_eq!(chain.on_response_body(16, false), Action::Pause);
        assert_eq!(chain.on_response_body(32, false), Action::Pause);
        assert_eq!(chain.on_response_body(40, true), Action::Continue);
        assert_eq!(
            take(&log),
            [
                "usage response body 16 end=false",
                "pii response body 16 end=false",
                "usage response body 16 end=false",
                "pii response body 32 end=false",
                "usage response body 8 end=true",
                "pii response body 40 end=true",
                "router response body 40 end=true",
            ]
        );
        // Envoy forwarded the buffer: the next callback's bytes are all new to everyone.
        assert_eq!(chain.on_response_body(5, true), Action::Continue);
        assert_eq!(
            take(&log),
            [
                "usage response body 5 end=true",
                "pii response body 5 end=true",
                "router response body 5 end=true",
            ]
        );
    }

    #[test]
    fn a_local_reply_stops_the_filters_after_it_but_not_the_response() {
        let log = Log::default();
        let mut auth = fake("auth", &log);
        auth.replies = true;
        let mut chain = chain(vec![auth, fake("router", &log)]);
        assert_eq!(chain.on_request_headers(false), Action::Pause);
        assert_eq!(chain.on_request_body(10, true), Action::Pause);
        assert_eq!(take(&log), ["auth request headers end=false"]);
        // The reply itself passes every filter on its way out, as in Envoy.
        assert_eq!(chain.on_response_headers(false), Action::Continue);
        chain.on_log();
        assert_eq!(
            take(&log),
            [
                "router response headers",
                "auth response headers",
                "auth log",
                "router log",
            ]
        );
    }

    /// auth pauses for an asynchronous call (token 7) as with a global limit; router holds the body.
    fn auth_waiting_for_a_call_then_router() -> (Log, Chain) {
        let log = Log::default();
        let mut auth = fake("auth", &log);
        auth.waits_for_call = true;
        let mut router = fake("router", &log);
        router.holds_request = true;
        let chain = chain(vec![auth, router]);
        (log, chain)
    }

    #[test]
    fn a_filter_that_resumes_after_its_call_continues_the_chain_before_the_host() {
        let (log, mut chain) = auth_waiting_for_a_call_then_router();
        let resumes = || HOST_RESUMES.with(|count| count.get());
        let before = resumes();

        assert_eq!(chain.on_request_headers(false), Action::Pause);
        assert_eq!(chain.on_request_body(12, true), Action::Pause);
        take(&log);
        chain.on_grpc_response(3, 0, None); // not auth's call
        assert!(take(&log).is_empty());
        assert_eq!(resumes(), before);

        chain.on_grpc_response(7, 0, None);
        assert_eq!(
            take(&log),
            [
                "auth answer",
                "router request headers end=false",
                "router request body 12 end=true",
            ]
        );
        assert_eq!(
            resumes(),
            before + 1,
            "the host resumes once, after router passed"
        );
    }

    #[test]
    fn a_resume_before_the_body_arrived_waits_for_it() {
        let (log, mut chain) = auth_waiting_for_a_call_then_router();
        let resumes = || HOST_RESUMES.with(|count| count.get());
        let before = resumes();

        assert_eq!(chain.on_request_headers(false), Action::Pause);
        chain.on_grpc_response(7, 0, None);
        assert_eq!(resumes(), before, "router still holds the headers");
        assert_eq!(chain.on_request_body(12, true), Action::Continue);
        assert_eq!(
            take(&log),
            [
                "auth request headers end=false",
                "auth answer",
                "router request headers end=false",
                "auth request body 12 end=true",
                "router request body 12 end=true",
            ]
        );
    }

    /// The native module runs every filter on one thread: Envoy can run a callout's upstream
    /// filter inside a chain's callback. That filter must read its own stream, not the chain's copy.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn a_nested_callback_reads_its_own_stream_not_the_outer_chain() {
        use crate::fake::{self, Stream};
        use crate::Headers;
        struct Nesting;
        impl HttpFilter for Nesting {
            fn on_request_headers(&mut self, _end_of_stream: bool) -> Action {
                assert_eq!(Headers::request().get(":path"), Some("/outer"));
                // Another stream's filter runs inline, its headers on the host.
                fake::with(|s| s.request_headers = vec![(":path".into(), "/inner".into())]);
                let inner = crate::isolated(|| Headers::request().get(":path").map(String::from));
                assert_eq!(inner.as_deref(), Some("/inner"));
                // Without isolation the chain's copy answers (what the bug looked like).
                assert_eq!(Headers::request().get(":path"), Some("/outer"));
                Action::Continue
            }
        }
        fake::reset();
        let mut stream = Stream::new(Box::new(Chain::new(vec![Box::new(Nesting)])));
        assert_eq!(
            stream.request_headers(&[(":path", "/outer")], true),
            Action::Continue
        );
    }
}
