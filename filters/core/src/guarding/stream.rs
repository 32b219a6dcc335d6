//! Checking a streamed answer as it passes (OpenAI and Anthropic SSE). The guard holds events back
//! and hands out windows of text to check; the caller checks each (locally, or with a remote call)
//! and approves or blocks it.
//!
//! - `window` mode: text-bearing events wait until `window_chars` of text are held (or the stream
//!   ends), then the window is checked, with the end of the previous window as context so a phrase
//!   split across windows is still seen. Nothing flagged reaches the client; the cost is the time
//!   to generate a window, and the check's own time per window.
//! - `end` mode: events pass at once; only the stream's end (`[DONE]`, `message_stop`) is held
//!   until the whole answer is checked. No added latency, but a flagged answer has been shown: it
//!   ends with an error event instead of its normal end.

use super::guard::StreamMode;
use crate::sse::{SseEvent, SseParser};
use serde_json::{json, Value};
use std::collections::VecDeque;

/// Which API's events the stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    Anthropic,
    /// OpenAI Responses (`/v1/responses`): typed events, `response.completed` last.
    Responses,
}

/// The checked text carried into the next window (at most half a window): a phrase up to this
/// long split across two windows is seen whole, and its first half is never released early.
const OVERLAP_CHARS: usize = 100;

struct Held {
    bytes: Vec<u8>,
    /// Waits for a check (window mode: carries text; end mode: the stream's end).
    has_text: bool,
    text_chars: usize,
}

pub struct StreamGuard {
    format: Format,
    mode: StreamMode,
    window_chars: usize,
    /// The most text collected for one check (end mode: the whole answer up to it).
    max_chars: usize,
    parser: SseParser,
    held: VecDeque<Held>,
    /// Text of held events not yet handed out for checking.
    /// Per choice (`n` > 1 streams interleave their choices: each is checked as its own text).
    unchecked: Vec<String>,
    unchecked_chars: usize,
    /// The choice the event being read belongs to.
    choice: usize,
    /// Held events covered by the window being checked.
    checking: Option<usize>,
    /// The tail of the text already checked.
    context: Vec<String>,
    ended: bool,
    blocked: bool,
    /// From the stream's first events: what a synthesised last event needs.
    id: String,
    model: String,
    created: u64,
    open_block: Option<u64>,
}

impl StreamGuard {
    pub fn new(format: Format, mode: StreamMode, window_chars: usize, max_chars: usize) -> Self {
        StreamGuard {
            format,
            mode,
            window_chars,
            max_chars,
            parser: SseParser::new(),
            held: VecDeque::new(),
            unchecked: Vec::new(),
            unchecked_chars: 0,
            choice: 0,
            checking: None,
            context: Vec::new(),
            ended: false,
            blocked: false,
            id: String::new(),
            model: String::new(),
            created: 0,
            open_block: None,
        }
    }

    /// Feeds a chunk of the upstream stream; returns the bytes that may go to the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        if self.blocked {
            return Vec::new();
        }
        let events = self.parser.push(chunk);
        self.take_events(events)
    }

    /// The stream ended: what is still held waits for the last window's check.
    pub fn end(&mut self) -> Vec<u8> {
        if self.blocked {
            return Vec::new();
        }
        self.ended = true;
        let last: Vec<SseEvent> = self.parser.finish().into_iter().collect();
        self.take_events(last)
    }

    fn take_events(&mut self, events: Vec<SseEvent>) -> Vec<u8> {
        for event in events {
            let text = self.note(&event);
            let terminal = self.is_terminal(&event);
            let bytes = serialize(&event);
            match self.mode {
                StreamMode::Window => {
                    let has_text = !text.is_empty();
                    self.add_text(&text);
                    self.held.push_back(Held {
                        bytes,
                        has_text,
                        text_chars: text.chars().count(),
                    });
                }
                StreamMode::End => {
                    self.add_text(&text);
                    // Only the end waits; everything else flows.
                    self.held.push_back(Held {
                        bytes,
                        has_text: terminal,
                        text_chars: 0,
                    });
                }
            }
        }
        self.release_free()
    }

    fn add_text(&mut self, text: &str) {
        // Window mode checks every character it releases (text piles up only while a check is
        // out); end mode checks the first `max_chars` of the answer.
        if text.is_empty() {
            return;
        }
        let kept = match self.mode {
            StreamMode::Window => text,
            StreamMode::End => {
                let room = self.max_chars.saturating_sub(self.unchecked_chars);
                let end = text
                    .char_indices()
                    .nth(room)
                    .map_or(text.len(), |(at, _)| at);
                text.get(..end).unwrap_or_default()
            }
        };
        if kept.is_empty() {
            return;
        }
        self.unchecked_chars += kept.chars().count();
        if self.unchecked.len() <= self.choice {
            self.unchecked.resize(self.choice + 1, String::new());
        }
        if let Some(buffer) = self.unchecked.get_mut(self.choice) {
            buffer.push_str(kept);
        }
    }

    /// Releases held events from the front that need no check.
    fn release_free(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.checking.is_some() {
            return out;
        }
        while self.held.front().is_some_and(|h| !h.has_text) {
            if let Some(held) = self.held.pop_front() {
                out.extend_from_slice(&held.bytes);
            }
        }
        out
    }

    /// A window of text to check now, if one is due; the caller answers with [`Self::approve`]
    /// or [`Self::block`].
    pub fn take_window(&mut self) -> Option<String> {
        if self.blocked || self.checking.is_some() {
            return None;
        }
        let due = match self.mode {
            StreamMode::Window => {
                self.unchecked_chars >= self.window_chars
                    || (self.ended && self.held.iter().any(|h| h.has_text))
            }
            // The end is checked at the end, whether or not the stream ended properly.
            StreamMode::End => {
                self.ended && (self.held.iter().any(|h| h.has_text) || self.unchecked_chars > 0)
            }
        };
        if !due {
            return None;
        }
        self.checking = Some(self.held.len());
        let overlap = self.overlap();
        let mut window = String::new();
        let choices = self.unchecked.len().max(self.context.len());
        self.context.resize(choices, String::new());
        for (i, context) in self.context.iter_mut().enumerate() {
            let new = self.unchecked.get(i).map_or("", String::as_str);
            let text = match self.mode {
                StreamMode::Window => format!("{context}{new}"),
                StreamMode::End => new.to_string(),
            };
            if text.is_empty() {
                continue;
            }
            if !window.is_empty() {
                window.push_str("\n\n");
            }
            window.push_str(&text);
            let chars = text.chars().count();
            *context = text.chars().skip(chars.saturating_sub(overlap)).collect();
        }
        self.unchecked.clear();
        self.unchecked_chars = 0;
        Some(window)
    }

    fn overlap(&self) -> usize {
        OVERLAP_CHARS.min(self.window_chars / 2)
    }

    /// Whether a window is out for checking.
    pub fn checking(&self) -> bool {
        self.checking.is_some()
    }

    /// The window passed: its events (and any that need no check) go out, but for the last
    /// overlap of text, held back until the next window is checked with them as context:
    /// a phrase split across two windows never has its first half released.
    pub fn approve(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let covered = self.checking.take().unwrap_or(0);
        let mut keep = 0;
        if !self.ended && self.mode == StreamMode::Window {
            let mut chars = 0;
            let overlap = self.overlap();
            for held in self.held.iter().take(covered).rev() {
                if chars >= overlap {
                    break;
                }
                keep += 1;
                chars += held.text_chars;
            }
        }
        for _ in 0..covered.saturating_sub(keep) {
            if let Some(held) = self.held.pop_front() {
                out.extend_from_slice(&held.bytes);
            }
        }
        out.extend(self.release_free());
        out
    }

    /// The window was flagged: nothing held goes out, and the stream ends here (window mode: with
    /// a last event saying the answer was filtered; end mode: with an error event).
    pub fn block(&mut self, message: &str) -> Vec<u8> {
        self.blocked = true;
        self.held.clear();
        self.checking = None;
        match (self.format, self.mode) {
            (Format::OpenAi, StreamMode::Window) => {
                let chunk = json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                    "model": self.model,
                    "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "content_filter"}]
                });
                format!("data: {chunk}\n\ndata: [DONE]\n\n").into_bytes()
            }
            (Format::OpenAi, StreamMode::End) => {
                let error = json!({"error": {"message": message, "type": "invalid_request_error",
                    "param": null, "code": super::guard::BLOCK_CODE}});
                format!("data: {error}\n\n").into_bytes()
            }
            (Format::Anthropic, StreamMode::Window) => {
                let mut out = String::new();
                if let Some(index) = self.open_block.take() {
                    let stop = json!({"type": "content_block_stop", "index": index});
                    out.push_str(&format!("event: content_block_stop\ndata: {stop}\n\n"));
                }
                let delta = json!({"type": "message_delta",
                    "delta": {"stop_reason": "refusal", "stop_sequence": null},
                    "usage": {"output_tokens": 0}});
                out.push_str(&format!("event: message_delta\ndata: {delta}\n\n"));
                out.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
                out.into_bytes()
            }
            (Format::Responses, StreamMode::Window) => {
                let response = json!({"id": self.id, "object": "response", "model": self.model,
                    "status": "incomplete", "incomplete_details": {"reason": "content_filter"},
                    "output": []});
                let event = json!({"type": "response.incomplete", "response": response});
                format!("event: response.incomplete\ndata: {event}\n\n").into_bytes()
            }
            (Format::Responses, StreamMode::End) => {
                let error = json!({"type": "error", "code": super::guard::BLOCK_CODE,
                    "message": message, "param": null});
                format!("event: error\ndata: {error}\n\n").into_bytes()
            }
            (Format::Anthropic, StreamMode::End) => {
                let error = json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}});
                format!("event: error\ndata: {error}\n\n").into_bytes()
            }
        }
    }

    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Learns what a synthesised last event needs; returns the event's answer text.
    fn note(&mut self, event: &SseEvent) -> String {
        self.choice = 0;
        let Ok(data) = serde_json::from_str::<Value>(&event.data) else {
            return String::new();
        };
        let mut text = String::new();
        match self.format {
            Format::OpenAi => {
                if self.id.is_empty() {
                    if let Some(id) = data.get("id").and_then(Value::as_str) {
                        self.id = id.to_string();
                    }
                    if let Some(model) = data.get("model").and_then(Value::as_str) {
                        self.model = model.to_string();
                    }
                    self.created = data.get("created").and_then(Value::as_u64).unwrap_or(0);
                }
                for choice in data
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    // OpenAI allows at most 128 choices; anything else is folded into the last.
                    self.choice = choice
                        .get("index")
                        .and_then(Value::as_u64)
                        .map_or(0, |i| usize::try_from(i.min(127)).unwrap_or(0));
                    for pointer in [
                        "/delta/content",
                        "/delta/refusal",
                        "/delta/reasoning_content",
                        "/delta/reasoning",
                        "/delta/audio/transcript",
                        "/delta/function_call/arguments",
                    ] {
                        if let Some(t) = choice.pointer(pointer).and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                    if let Some(t) = choice.get("text").and_then(Value::as_str) {
                        text.push_str(t);
                    }
                    for call in choice
                        .pointer("/delta/tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str)
                        {
                            text.push_str(a);
                        }
                    }
                }
            }
            Format::Responses => match data.get("type").and_then(Value::as_str) {
                Some("response.created") => {
                    let response = data.get("response");
                    let field = |name| {
                        response
                            .and_then(|r| r.get(name))
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    self.id = field("id");
                    self.model = field("model");
                }
                // Every delta a client can show: output text, refusals, reasoning, tool arguments.
                Some(kind) if kind.starts_with("response.") && kind.ends_with(".delta") => {
                    if let Some(delta) = data.get("delta").and_then(Value::as_str) {
                        text.push_str(delta);
                    }
                }
                _ => {}
            },
            Format::Anthropic => match data.get("type").and_then(Value::as_str) {
                Some("content_block_start") => {
                    self.open_block = data.get("index").and_then(Value::as_u64);
                }
                Some("content_block_stop") => self.open_block = None,
                Some("content_block_delta") => {
                    let delta = data.get("delta");
                    for field in ["text", "partial_json", "thinking"] {
                        if let Some(t) = delta.and_then(|d| d.get(field)).and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                }
                _ => {}
            },
        }
        text
    }

    fn is_terminal(&self, event: &SseEvent) -> bool {
        match self.format {
            Format::OpenAi => event.data.trim() == "[DONE]",
            Format::Anthropic => event.event.as_deref() == Some("message_stop"),
            Format::Responses => matches!(
                event.event.as_deref(),
                Some("response.completed" | "response.incomplete" | "response.failed")
            ),
        }
    }
}

fn serialize(event: &SseEvent) -> Vec<u8> {
    let mut out = String::new();
    if let Some(name) = &event.event {
        out.push_str(&format!("event: {name}\n"));
    }
    for line in event.data.split('\n') {
        out.push_str(&format!("data: {line}\n"));
    }
    out.push('\n');
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openai_stream(words: &[&str]) -> String {
        let mut out = String::from("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n");
        for word in words {
            let chunk = json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": word}}]});
            out.push_str(&format!("data: {chunk}\n\n"));
        }
        out.push_str("data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
        out
    }

    /// Runs a stream through the guard byte by byte, flagging windows that contain `bad`.
    fn run(mode: StreamMode, stream: &str, bad: &str) -> (String, Vec<String>) {
        let mut guard = StreamGuard::new(Format::OpenAi, mode, 10, 10_000);
        let mut out = Vec::new();
        let mut windows = Vec::new();
        let mut check = |guard: &mut StreamGuard, out: &mut Vec<u8>| {
            while let Some(window) = guard.take_window() {
                let flagged = window.contains(bad);
                windows.push(window);
                if flagged {
                    out.extend(guard.block("stopped"));
                } else {
                    out.extend(guard.approve());
                }
            }
        };
        for byte in stream.as_bytes().chunks(7) {
            out.extend(guard.push(byte));
            check(&mut guard, &mut out);
        }
        out.extend(guard.end());
        check(&mut guard, &mut out);
        (String::from_utf8(out).expect("utf8"), windows)
    }

    fn text_of(sse: &str) -> String {
        let mut parser = SseParser::new();
        parser
            .push(sse.as_bytes())
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
            .filter_map(|d| {
                d.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    #[test]
    fn a_clean_stream_passes_whole_in_both_modes() {
        let stream = openai_stream(&["Paris ", "is ", "the ", "capital ", "of ", "France."]);
        for mode in [StreamMode::Window, StreamMode::End] {
            let (out, _) = run(mode, &stream, "FORBIDDEN");
            assert_eq!(text_of(&out), "Paris is the capital of France.");
            assert!(out.ends_with("data: [DONE]\n\n"));
        }
    }

    #[test]
    fn window_mode_never_releases_flagged_text() {
        let stream = openai_stream(&[
            "Sure, ", "here ", "it ", "is: ", "FORB", "IDDEN ", "secret ", "stuff ", "follows.",
        ]);
        let (out, windows) = run(StreamMode::Window, &stream, "FORBIDDEN");
        assert!(!out.contains("FORB"), "{out}");
        assert!(out.contains("\"finish_reason\":\"content_filter\""));
        assert!(out.ends_with("data: [DONE]\n\n"));
        // A word split across windows is still seen whole (the overlap).
        assert!(windows.iter().any(|w| w.contains("FORBIDDEN")));
    }

    #[test]
    fn end_mode_streams_then_ends_with_an_error_event() {
        let stream = openai_stream(&["one ", "FORBIDDEN ", "two"]);
        let (out, windows) = run(StreamMode::End, &stream, "FORBIDDEN");
        assert_eq!(windows.len(), 1);
        assert!(out.contains("FORBIDDEN"));
        assert!(out.contains("content_policy_violation"));
        assert!(!out.contains("[DONE]"));
    }

    #[test]
    fn anthropic_blocks_close_the_open_block() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\"}}\n\nevent: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"this is FORBIDDEN text\"}}\n\n";
        let mut guard = StreamGuard::new(Format::Anthropic, StreamMode::Window, 10, 10_000);
        let mut out = guard.push(stream.as_bytes());
        let window = guard.take_window().expect("a window");
        assert!(window.contains("FORBIDDEN"));
        out.extend(guard.block("stopped"));
        let out = String::from_utf8(out).expect("utf8");
        assert!(!out.contains("FORBIDDEN"));
        assert!(out.contains("content_block_stop"));
        assert!(out.contains("\"stop_reason\":\"refusal\""));
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
}

#[cfg(test)]
mod responses_tests {
    use super::*;

    #[test]
    fn responses_streams_are_cut_with_an_incomplete_response() {
        let stream = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"model\":\"m\"}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"this is FORBIDDEN text\"}\n\n";
        let mut guard = StreamGuard::new(Format::Responses, StreamMode::Window, 10, 10_000);
        let mut out = guard.push(stream.as_bytes());
        let window = guard.take_window().expect("a window");
        assert!(window.contains("FORBIDDEN"));
        out.extend(guard.block("stopped"));
        let out = String::from_utf8(out).expect("utf8");
        assert!(!out.contains("FORBIDDEN"));
        assert!(out.contains("event: response.incomplete"));
        assert!(out.contains("\"reason\":\"content_filter\""));
        assert!(out.contains("resp_1"));
    }
}

#[cfg(test)]
mod choice_tests {
    use super::*;

    #[test]
    fn interleaved_choices_are_checked_each_as_its_own_text() {
        let mut stream = String::new();
        for (i, piece) in ["sk-abc", "x", "defghij", "y", "klmnop", "z"]
            .iter()
            .enumerate()
        {
            let chunk = json!({"choices": [{"index": i % 2, "delta": {"content": piece}}]});
            stream.push_str(&format!("data: {chunk}\n\n"));
        }
        let mut guard = StreamGuard::new(Format::OpenAi, StreamMode::End, 10, 10_000);
        guard.push(stream.as_bytes());
        guard.end();
        let window = guard.take_window().expect("the end's window");
        assert!(window.contains("sk-abcdefghijklmnop"), "{window:?}");
        assert!(window.contains("xyz"), "{window:?}");
    }
}
