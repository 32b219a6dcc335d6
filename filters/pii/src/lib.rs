//! `llm_pii`: masks PII in prompts before they leave and restores it in responses, streaming included.
//!
//! Thin glue: detection, masking and restoring live in `llm_core::{pii, pii_detect}`. See README.md.

use llm_core::api::{classify, ApiFlavor, Endpoint};
use llm_core::config::ConfigError;
use llm_core::contract;
use llm_core::contract::state;
use llm_core::genai::{self, StreamCapture};
use llm_core::metrics::labeled_name;
use llm_core::pii::{
    AnswerAction, AnswerFindings, Masked, Pii, PiiConfig, StreamFormat, StreamRestorer, Vault,
};
use llm_host::{
    request_body, request_trailers, response_header, send_local_reply, set_filter_state, Action,
    BodyBuffer, Counter, Filter, Headers, HoldsRequestBody, HttpFilter,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

// Without `module` (as in llm_gateway, which links this filter with the others) no entry point.
#[cfg(feature = "module")]
llm_host::wasm_module!(PiiFilter);

pub struct PiiFilter {
    pii: Pii,
    /// `llm_pii_detections_total{entity,action}`; entity types come from the config, so the label set
    /// is bounded.
    detections: RefCell<HashMap<String, Option<Counter>>>,
}

impl Filter for PiiFilter {
    const NAME: &'static str = "llm_pii";
    type Config = PiiConfig;

    fn from_config(config: PiiConfig) -> Result<Self, ConfigError> {
        Ok(PiiFilter {
            pii: Pii::compile(config)?,
            detections: RefCell::new(HashMap::new()),
        })
    }

    fn http_filter(self: &Rc<Self>) -> Box<dyn HttpFilter> {
        Box::new(PiiRequest {
            filter: Rc::clone(self),
            flavor: ApiFlavor::OpenAi,
            path: String::new(),
            body: BodyBuffer::default(),
            vault: Vault::default(),
            answers: AnswerAction::Off,
            response: Response::Untouched,
            capturing: false,
        })
    }
}

impl PiiFilter {
    /// Publishes captured content for traces with every value the detectors find in it replaced by
    /// `[TYPE]` (placeholders stay): values the model wrote itself, or types the config lets pass to
    /// the provider, reach no trace either. A capture that would not stay valid JSON is dropped.
    fn publish_capture(&self, key: &str, messages: &str) {
        let mut found = AnswerFindings::default();
        let redacted = self.pii.scan_answer_text(
            messages,
            &Vault::default(),
            AnswerAction::Redact,
            &mut found,
        );
        let text = redacted.as_deref().unwrap_or(messages);
        if genai::is_json(text) {
            set_filter_state(key, text);
        }
    }

    fn count(&self, entity: &str, action: &str, by: u32) {
        self.count_series(
            labeled_name(
                "llm_pii_detections_total",
                &[("entity", entity), ("action", action)],
            ),
            by,
        );
    }

    /// Counts a request that reached a cap of `limits` (`reason`: bytes or findings; `action`: block
    /// or pass), so an operator sees requests refused, or passed partly unscanned.
    fn count_limited(&self, limit: &str, action: &str) {
        self.count_series(
            labeled_name(
                "llm_pii_scan_limited_total",
                &[("reason", limit), ("action", action)],
            ),
            1,
        );
    }

    /// `llm_pii_answer_detections_total{entity,action}`: values in answers the prompt did not
    /// contain (`action`: count or redact).
    fn count_answer(&self, found: &AnswerFindings, action: AnswerAction) {
        for (entity, n) in &found.counts {
            self.count_series(
                labeled_name(
                    "llm_pii_answer_detections_total",
                    &[("entity", entity), ("action", action.as_str())],
                ),
                *n,
            );
        }
    }

    fn count_series(&self, name: String, by: u32) {
        let known = self.detections.borrow().get(&name).copied();
        let counter = match known {
            Some(counter) => counter,
            None => {
                let counter = Counter::define(&name);
                self.detections.borrow_mut().insert(name, counter);
                counter
            }
        };
        if let Some(counter) = counter {
            counter.increment(u64::from(by));
        }
    }
}

enum Response {
    Untouched,
    /// Buffered to the end, then restored (JSON).
    Buffered,
    Stream(Box<StreamRestorer>, Option<Box<StreamCapture>>),
    /// Nothing to restore, only the text to capture for traces.
    Observed(Box<StreamCapture>),
}

struct PiiRequest {
    filter: Rc<PiiFilter>,
    flavor: ApiFlavor,
    path: String,
    /// An inference request's body, held until it is scanned.
    body: BodyBuffer,
    vault: Vault,
    /// What is done with PII in this consumer's answers.
    answers: AnswerAction,
    response: Response,
    /// The prompt was captured for traces: the answer is too.
    capturing: bool,
}

impl PiiRequest {
    fn mask(&mut self, body_size: usize) -> Action {
        let flavor = self.flavor;
        let body = llm_host::read_request_body(body_size);
        let filter = Rc::clone(&self.filter);
        let (masked, findings) =
            filter
                .pii
                .mask_request(flavor, &self.path, &body, &mut self.vault);
        for ((entity, action), n) in &findings.counts {
            filter.count(entity, action.as_str(), *n);
        }
        if let Some(limit) = findings.limited {
            let action = match masked {
                Masked::Refused(_) => "block",
                _ => "pass",
            };
            filter.count_limited(limit.as_str(), action);
        }
        if !findings.counts.is_empty() {
            set_filter_state(state::PII, &findings.summary());
        }
        // Only prompts scanned whole, of the APIs that generate text (an embeddings answer is
        // vectors, a count is a number).
        let generates = matches!(
            genai::operation_name(&self.path),
            Some("chat" | "text_completion")
        );
        let scanned_whole = findings.limited.is_none() && !matches!(masked, Masked::Refused(_));
        if let (Some(capture), true, true) = (filter.pii.capture(), generates, scanned_whole) {
            let leaving = match &masked {
                Masked::Rewritten(new_body) => new_body.as_slice(),
                _ => body.as_slice(),
            };
            if let Some(messages) = genai::input_messages(&self.path, leaving, capture.max_bytes) {
                filter.publish_capture(state::INPUT_MESSAGES, &messages);
            }
            self.capturing = true;
            // The answer is read: it must arrive uncompressed.
            llm_host::set_request_header("accept-encoding", None);
        }
        match masked {
            Masked::Unchanged => {
                if self.answers != AnswerAction::Off {
                    // The answer is read: it must arrive uncompressed.
                    llm_host::set_request_header("accept-encoding", None);
                }
                Action::Continue
            }
            Masked::Rewritten(new_body) => {
                llm_host::replace_request_body(body_size, &new_body);
                llm_host::set_request_header("content-length", Some(&new_body.len().to_string()));
                if !self.vault.is_empty() || self.answers != AnswerAction::Off {
                    // The response is rewritten or read: it must arrive uncompressed.
                    llm_host::set_request_header("accept-encoding", None);
                }
                Action::Continue
            }
            Masked::Refused(reply) => {
                send_local_reply(&reply);
                Action::Pause
            }
        }
    }
}

impl HttpFilter for PiiRequest {
    fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let headers = Headers::request();
        let method = headers.get(":method").unwrap_or_default();
        self.path = headers.get(":path").unwrap_or_default().to_string();
        match classify(method, &self.path) {
            Endpoint::Inference(flavor) if !end_of_stream => {
                // Nothing leaves before it is scanned (needs allow_on_headers_stop_iteration).
                self.flavor = flavor;
                let consumer = headers.get(contract::CONSUMER).unwrap_or_default();
                self.answers = self.filter.pii.answer_action(consumer);
                self.body.start();
                Action::Pause
            }
            _ => Action::Continue,
        }
    }

    fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        request_body(self, body_size, end_of_stream)
    }

    fn on_request_trailers(&mut self) -> Action {
        request_trailers(self)
    }

    fn on_response_headers(&mut self, _end_of_stream: bool) -> Action {
        let capture = self
            .filter
            .pii
            .capture()
            .filter(|_| self.capturing)
            .map(|c| Box::new(StreamCapture::new(c.max_bytes)));
        let content_type = response_header("content-type").unwrap_or_default();
        let stream = content_type.starts_with("text/event-stream");
        if self.vault.is_empty() && self.answers == AnswerAction::Off {
            self.response = match capture {
                // Watched as it passes, never held or rewritten.
                Some(capture) if stream => Response::Observed(capture),
                Some(_) => Response::Buffered,
                None => Response::Untouched,
            };
            return Action::Continue;
        }
        llm_host::set_response_header("content-length", None);
        self.response = if stream {
            let path = self.path.split('?').next().unwrap_or("");
            let format = if path.starts_with("/v1/messages") {
                StreamFormat::Anthropic
            } else if path == "/v1/responses" {
                StreamFormat::Responses
            } else {
                StreamFormat::OpenAi
            };
            let window = self.filter.pii.answer_stream_window();
            Response::Stream(
                Box::new(StreamRestorer::new(format).scanning_answers(self.answers, window)),
                capture,
            )
        } else {
            Response::Buffered
        };
        Action::Continue
    }

    fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match &self.response {
            Response::Untouched => Action::Continue,
            Response::Buffered if !end_of_stream => Action::Pause,
            Response::Buffered => {
                let body = llm_host::read_response_body(body_size);
                let mut found = AnswerFindings::default();
                let filter = Rc::clone(&self.filter);
                if let (Some(capture), true) = (filter.pii.capture(), self.capturing) {
                    // As it came: placeholders, not the values they stand for.
                    if let Some(messages) =
                        genai::output_messages(&self.path, &body, capture.max_bytes)
                    {
                        filter.publish_capture(state::OUTPUT_MESSAGES, &messages);
                    }
                }
                let rewritten =
                    filter
                        .pii
                        .answer_json(&body, &self.vault, self.answers, &mut found);
                if let Some(rewritten) = rewritten {
                    llm_host::replace_response_body(body_size, &rewritten);
                }
                filter.count_answer(&found, self.answers);
                Action::Continue
            }
            Response::Observed(_) => {
                let chunk = llm_host::read_response_body(body_size);
                if let Response::Observed(capture) = &mut self.response {
                    capture.push(&chunk);
                }
                if end_of_stream {
                    self.publish_captured_stream();
                }
                Action::Continue
            }
            Response::Stream(..) => {
                let chunk = llm_host::read_response_body(body_size);
                let filter = Rc::clone(&self.filter);
                if let Response::Stream(restorer, capture) = &mut self.response {
                    if let Some(capture) = capture {
                        capture.push(&chunk);
                    }
                    let mut out = restorer.push_scanned(&chunk, &self.vault, &filter.pii);
                    if end_of_stream {
                        out.extend(restorer.finish_scanned(&self.vault, &filter.pii));
                    }
                    llm_host::replace_response_body(body_size, &out);
                    filter.count_answer(&restorer.take_answer_findings(), self.answers);
                }
                if end_of_stream {
                    self.publish_captured_stream();
                }
                Action::Continue
            }
        }
    }
}

impl PiiRequest {
    /// The streamed answer's captured text, published when the stream ends.
    fn publish_captured_stream(&mut self) {
        let capture = match std::mem::replace(&mut self.response, Response::Untouched) {
            Response::Observed(capture) => Some(capture),
            Response::Stream(restorer, capture) => {
                self.response = Response::Stream(restorer, None);
                capture
            }
            other => {
                self.response = other;
                None
            }
        };
        if let Some(messages) = capture.and_then(|c| (*c).finish()) {
            self.filter
                .publish_capture(state::OUTPUT_MESSAGES, &messages);
        }
    }
}

impl HoldsRequestBody for PiiRequest {
    fn body_buffer(&mut self) -> &mut BodyBuffer {
        &mut self.body
    }

    fn on_complete_body(&mut self, size: usize) -> Action {
        self.mask(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_host::fake::{self, Stream};
    use serde_json::{json, Value};

    /// The configuration of envoy/demo.yaml.
    const DEMO: &str = r#"{
      "entities": {
        "email": "mask", "phone": "mask", "credit_card": "mask", "us_ssn": "mask",
        "iban": "mask", "ip_address": "mask", "secret": "block"
      },
      "terms": [{"name": "project", "values": ["Project Falcon"], "action": "redact"}]
    }"#;

    const CHAT: [(&str, &str); 4] = [
        (":method", "POST"),
        (":path", "/v1/chat/completions"),
        ("content-type", "application/json"),
        ("accept-encoding", "gzip"),
    ];

    fn stream() -> Stream {
        fake::reset();
        let loaded = llm_host::configure::<PiiFilter>(DEMO.as_bytes()).expect("config");
        Stream::new(loaded.new_stream())
    }

    fn prompt(text: &str) -> Vec<u8> {
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
            .to_string()
            .into_bytes()
    }

    /// A request whose prompt holds an e-mail address, sent in two chunks; returns the stream.
    fn masked_request() -> Stream {
        let mut stream = stream();
        let body = prompt("Mail jane.doe@example.com about Project Falcon");
        let (first, second) = body.split_at(30);
        assert_eq!(stream.request_headers(&CHAT, false), Action::Pause);
        assert_eq!(stream.request_body(first, false), Action::Pause);
        assert!(
            stream.upstream_body().is_empty(),
            "nothing leaves unscanned"
        );
        assert_eq!(stream.request_body(second, true), Action::Continue);
        stream
    }

    /// The `delta.content` of every OpenAI event the client got, joined.
    fn streamed_text(sse: &str) -> String {
        sse.split("\n\n")
            .filter_map(|event| event.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str::<Value>(data).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    #[test]
    fn an_email_in_a_prompt_is_masked_before_it_leaves() {
        let stream = masked_request();
        let upstream: Value = serde_json::from_slice(stream.upstream_body()).unwrap();
        assert_eq!(
            upstream["messages"][0]["content"],
            "Mail <EMAIL_1> about [PROJECT]"
        );
        assert_eq!(upstream["model"], "gpt-4o-mini");
        assert_eq!(
            fake::request_header("content-length"),
            Some(stream.upstream_body().len().to_string())
        );
        // The answer will be rewritten: it must come back uncompressed.
        assert_eq!(fake::request_header("accept-encoding"), None);
        assert_eq!(
            fake::with(|s| s.filter_state.get("llm_pii").cloned()).as_deref(),
            Some("email=1,project=1")
        );
        assert_eq!(
            fake::counter("llm_pii_detections_total_entity=.=email;.;_action=.=mask;.;"),
            1
        );
        assert_eq!(
            fake::counter("llm_pii_detections_total_entity=.=project;.;_action=.=redact;.;"),
            1
        );
    }

    #[test]
    fn captured_content_is_only_what_was_masked() {
        let config = DEMO.replace(
            r#""terms""#,
            r#""capture_content": {"max_bytes": 1024}, "terms""#,
        );
        let state = |key: &str| fake::with(|s| s.filter_state.get(key).cloned());
        fake::reset();
        let loaded = llm_host::configure::<PiiFilter>(config.as_bytes()).expect("config");
        let mut stream = Stream::new(loaded.new_stream());
        let body = prompt("Mail jane.doe@example.com about Project Falcon");
        assert_eq!(stream.request(&CHAT, &[&body]), Action::Continue);
        let input = state("llm_input_messages").expect("the prompt is captured");
        assert!(input.contains("Mail <EMAIL_1> about [PROJECT]"), "{input}");
        assert!(
            !input.contains("jane.doe") && !input.contains("Falcon"),
            "{input}"
        );

        let answer = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Mailed <EMAIL_1>."},"finish_reason":"stop"}]}"#;
        let headers = [(":status", "200"), ("content-type", "application/json")];
        assert_eq!(stream.response(&headers, &[answer]), Action::Continue);
        let output = state("llm_output_messages").expect("the answer is captured");
        assert!(output.contains("Mailed <EMAIL_1>."), "{output}");
        let got: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(
            got["choices"][0]["message"]["content"],
            "Mailed jane.doe@example.com."
        );

        // A clean prompt and a streamed answer: watched as they pass, the stream untouched.
        let mut stream = Stream::new(loaded.new_stream());
        assert_eq!(stream.request(&CHAT, &[&prompt("hello")]), Action::Continue);
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi there\"}}]}\n\ndata: [DONE]\n\n";
        let headers = [(":status", "200"), ("content-type", "text/event-stream")];
        assert_eq!(
            stream.response(&headers, &[sse.as_bytes()]),
            Action::Continue
        );
        assert_eq!(stream.client_body(), sse.as_bytes());
        let output = state("llm_output_messages").expect("the stream is captured");
        assert!(output.contains("Hi there"), "{output}");

        // A value the model wrote itself (not the prompt's) is redacted in the capture too; the
        // client, with answers off, still gets it.
        let mut stream = Stream::new(loaded.new_stream());
        assert_eq!(
            stream.request(&CHAT, &[&prompt("who to call?")]),
            Action::Continue
        );
        let answer = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Call bob@corp.example"}}]}"#;
        let headers = [(":status", "200"), ("content-type", "application/json")];
        assert_eq!(stream.response(&headers, &[answer]), Action::Continue);
        let output = state("llm_output_messages").expect("captured");
        assert!(!output.contains("bob@corp.example"), "{output}");
        assert!(output.contains("[EMAIL]"), "{output}");
        assert_eq!(stream.client_body(), answer);

        // A prompt past the scan cap, passed on with `on_limit: pass`, is not captured.
        let limited = config.replace(
            r#""terms""#,
            r#""limits": {"max_scan_bytes": 64, "on_limit": "pass"}, "terms""#,
        );
        fake::reset();
        let loaded = llm_host::configure::<PiiFilter>(limited.as_bytes()).expect("config");
        let mut stream = Stream::new(loaded.new_stream());
        let long = prompt(&format!("{} jane.doe@example.com", "words ".repeat(40)));
        assert_eq!(stream.request(&CHAT, &[&long]), Action::Continue);
        assert_eq!(state("llm_input_messages"), None);

        // Off by default.
        let mut stream = super::tests::stream();
        assert_eq!(stream.request(&CHAT, &[&prompt("hello")]), Action::Continue);
        assert_eq!(state("llm_input_messages"), None);
        // And refused when the cap makes no sense.
        let bad = DEMO.replace(
            r#""terms""#,
            r#""capture_content": {"max_bytes": 0}, "terms""#,
        );
        assert!(llm_host::configure::<PiiFilter>(bad.as_bytes()).is_err());
    }

    #[test]
    fn a_clean_prompt_is_forwarded_byte_for_byte() {
        let mut stream = stream();
        let body = br#"{"model":"gpt-4o-mini",  "messages":[{"role":"user","content":"hello"}]}"#;
        assert_eq!(stream.request(&CHAT, &[body]), Action::Continue);
        assert_eq!(stream.upstream_body(), body);
        assert_eq!(
            fake::request_header("accept-encoding").as_deref(),
            Some("gzip")
        );
        // Nothing to restore: the answer passes untouched.
        let answer = br#"{"choices":[{"message":{"content":"<EMAIL_1>"}}]}"#;
        let headers = [(":status", "200"), ("content-type", "application/json")];
        assert_eq!(stream.response(&headers, &[answer]), Action::Continue);
        assert_eq!(stream.client_body(), answer);
    }

    #[test]
    fn placeholders_are_restored_in_a_json_answer() {
        let mut stream = masked_request();
        let answer = json!({
            "id": "chatcmpl-1",
            "choices": [{"index": 0, "message": {"role": "assistant",
                         "content": "I will mail <EMAIL_1> today."}}]
        })
        .to_string()
        .into_bytes();
        let length = answer.len().to_string();
        let headers = [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", length.as_str()),
        ];
        assert_eq!(stream.response_headers(&headers, false), Action::Continue);
        assert_eq!(fake::response_header("content-length"), None);
        let (first, second) = answer.split_at(40);
        assert_eq!(stream.response_body(first, false), Action::Pause);
        assert!(stream.client_body().is_empty(), "held to its end");
        assert_eq!(stream.response_body(second, true), Action::Continue);
        let got: Value = serde_json::from_slice(stream.client_body()).unwrap();
        assert_eq!(
            got["choices"][0]["message"]["content"],
            "I will mail jane.doe@example.com today."
        );
    }

    #[test]
    fn answers_to_a_consumer_are_scanned_as_configured() {
        let config = r#"{"answers": {"action": "count", "consumers": {"team-b": "redact"}}}"#;
        for (consumer, action, content) in [
            (
                "team-a",
                "count",
                "Ask bob@corp.example or +1 415 555 2671.",
            ),
            ("team-b", "redact", "Ask [EMAIL] or [PHONE]."),
        ] {
            fake::reset();
            let loaded = llm_host::configure::<PiiFilter>(config.as_bytes()).expect("config");
            let mut stream = Stream::new(loaded.new_stream());
            let mut headers = CHAT.to_vec();
            headers.push(("x-llm-consumer", consumer));
            // A clean prompt: the answer is still read, so it must come uncompressed.
            assert_eq!(
                stream.request(&headers, &[&prompt("hello")]),
                Action::Continue
            );
            assert_eq!(fake::request_header("accept-encoding"), None, "{consumer}");
            let answer = json!({"choices": [{"index": 0, "message": {"role": "assistant",
                "content": "Ask bob@corp.example or +1 415 555 2671."}}]})
            .to_string()
            .into_bytes();
            let response = [(":status", "200"), ("content-type", "application/json")];
            assert_eq!(stream.response(&response, &[&answer]), Action::Continue);
            let got: Value = serde_json::from_slice(stream.client_body()).unwrap();
            assert_eq!(
                got["choices"][0]["message"]["content"], content,
                "{consumer}"
            );
            for entity in ["email", "phone"] {
                let name = format!(
                    "llm_pii_answer_detections_total_entity=.={entity};.;_action=.={action};.;"
                );
                assert_eq!(fake::counter(&name), 1, "{consumer} {entity}");
            }
        }
    }

    #[test]
    fn a_placeholder_split_across_chunks_is_restored_in_a_stream() {
        let mut stream = masked_request();
        let headers = [(":status", "200"), ("content-type", "text/event-stream")];
        assert_eq!(stream.response_headers(&headers, false), Action::Continue);
        let event = |text: &str| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            )
        };
        let finish = format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        );
        // The placeholder is cut between two events, and the second event between two chunks.
        let provider = [event("Sure, I will mail <EMA"), event("IL_1> now."), finish].concat();
        let cut = provider.find("IL_1>").unwrap() - 5;
        let first_event_end = provider.find("\n\n").unwrap() + 2;
        let chunks = [
            &provider[..first_event_end],
            &provider[first_event_end..cut],
            &provider[cut..],
        ];

        assert_eq!(
            stream.response_body(chunks[0].as_bytes(), false),
            Action::Continue
        );
        // Only the tail that may become a placeholder is held back.
        assert_eq!(
            streamed_text(&stream.client_body_text()),
            "Sure, I will mail "
        );
        assert_eq!(
            stream.response_body(chunks[1].as_bytes(), false),
            Action::Continue
        );
        assert_eq!(
            stream.response_body(chunks[2].as_bytes(), true),
            Action::Continue
        );

        let client = stream.client_body_text();
        assert_eq!(
            streamed_text(&client),
            "Sure, I will mail jane.doe@example.com now."
        );
        assert!(!client.contains("EMA"), "{client}");
        assert!(client.ends_with("data: [DONE]\n\n"), "{client}");
    }

    #[test]
    fn a_blocked_type_gets_a_local_reply_that_names_no_value() {
        let mut stream = stream();
        let key = "sk-proj-abcdefghijklmnopqrstuvwx1234";
        let body = prompt(&format!("my key is {key}, mail jane.doe@example.com"));
        assert_eq!(stream.request(&CHAT, &[&body]), Action::Pause);
        let reply = stream.reply().expect("refused");
        assert_eq!(reply.status, 400);
        assert_eq!(reply.json()["error"]["code"], "pii_blocked");
        assert!(reply.body.contains("secret"), "{}", reply.body);
        assert!(!reply.body.contains(key));
        assert!(!reply.body.contains("jane.doe"));
        assert!(stream.upstream_body().is_empty());
        assert!(!stream.request_forwarded());
        assert_eq!(
            fake::counter("llm_pii_detections_total_entity=.=secret;.;_action=.=block;.;"),
            1
        );
    }

    #[test]
    fn requests_that_are_not_inference_pass_without_being_held() {
        let mut stream = stream();
        let headers = [(":method", "POST"), (":path", "/v1/files")];
        assert_eq!(stream.request_headers(&headers, false), Action::Continue);
        let body = br#"{"note":"jane.doe@example.com"}"#;
        assert_eq!(stream.request_body(body, true), Action::Continue);
        assert_eq!(stream.upstream_body(), body);
    }
}
