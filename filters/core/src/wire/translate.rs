//! How an attempt's answer goes back to the client when the provider speaks another API: which
//! translation, and the translators for JSON answers, errors and streams.

use crate::anthropic::{error_to_openai, messages_response_to_chat, StreamTranslator};
use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind};
use crate::gemini::{gemini_response_to_chat, GeminiToChatStream};
use crate::messages_via_chat::{
    chat_response_to_messages, error_to_anthropic, ChatToMessagesStream,
};
use crate::responses::{
    chat_response_to_responses, error_to_responses, ChatToResponsesStream, ResponsesContext,
};

/// The answer's translation: provider format → client API.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerTranslation {
    /// Anthropic Messages → Chat Completions (a Chat client on an Anthropic-format provider).
    AnthropicToChat { stream: bool, include_usage: bool },
    /// Chat Completions → Anthropic Messages (a Messages client on an OpenAI-format provider).
    ChatToAnthropic { stream: bool, request_bytes: usize },
    /// Chat Completions → Responses (a Responses client on an OpenAI-format provider).
    ChatToResponses(ResponsesContext),
    /// Anthropic Messages → Chat Completions → Responses (a Responses client on Anthropic).
    AnthropicToResponses(ResponsesContext),
    /// Gemini → Chat Completions (a Chat client on a Gemini provider); `model` as asked.
    GeminiToChat {
        stream: bool,
        include_usage: bool,
        model: String,
    },
    /// Gemini → Chat Completions → Anthropic Messages (a Messages client on Gemini).
    GeminiToAnthropic {
        stream: bool,
        request_bytes: usize,
        model: String,
    },
    /// Gemini → Chat Completions → Responses (a Responses client on Gemini).
    GeminiToResponses {
        context: ResponsesContext,
        model: String,
    },
}

impl AnswerTranslation {
    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        match self {
            AnswerTranslation::AnthropicToChat { stream, .. }
            | AnswerTranslation::ChatToAnthropic { stream, .. }
            | AnswerTranslation::GeminiToChat { stream, .. }
            | AnswerTranslation::GeminiToAnthropic { stream, .. } => *stream,
            AnswerTranslation::ChatToResponses(context)
            | AnswerTranslation::AnthropicToResponses(context)
            | AnswerTranslation::GeminiToResponses { context, .. } => context.stream,
        }
    }

    fn client(&self) -> ApiFlavor {
        match self {
            AnswerTranslation::ChatToAnthropic { .. }
            | AnswerTranslation::GeminiToAnthropic { .. } => ApiFlavor::Anthropic,
            _ => ApiFlavor::OpenAi,
        }
    }

    /// The status the client sees: Anthropic's 529 (overloaded) is a 503 to OpenAI clients.
    pub fn status(&self, status: u16) -> u16 {
        match (self.client(), status) {
            (ApiFlavor::OpenAi, 529) => 503,
            _ => status,
        }
    }

    /// A complete (non-streamed) answer or error, translated; `created` is now, in Unix seconds.
    pub fn answer(&self, status: u16, body: &[u8], created: u64) -> Vec<u8> {
        let translated = if status == 200 {
            match self {
                AnswerTranslation::AnthropicToChat { .. } => {
                    messages_response_to_chat(body, created)
                }
                AnswerTranslation::ChatToAnthropic { request_bytes, .. } => {
                    chat_response_to_messages(body, *request_bytes)
                }
                AnswerTranslation::ChatToResponses(context) => {
                    chat_response_to_responses(body, context, created)
                }
                AnswerTranslation::AnthropicToResponses(context) => {
                    messages_response_to_chat(body, created)
                        .and_then(|chat| chat_response_to_responses(&chat, context, created))
                }
                AnswerTranslation::GeminiToChat { model, .. } => {
                    gemini_response_to_chat(body, model, created)
                }
                AnswerTranslation::GeminiToAnthropic {
                    model,
                    request_bytes,
                    ..
                } => gemini_response_to_chat(body, model, created)
                    .and_then(|chat| chat_response_to_messages(&chat, *request_bytes)),
                AnswerTranslation::GeminiToResponses { context, model } => {
                    gemini_response_to_chat(body, model, created)
                        .and_then(|chat| chat_response_to_responses(&chat, context, created))
                }
            }
        } else {
            return match self {
                AnswerTranslation::AnthropicToChat { .. }
                | AnswerTranslation::GeminiToChat { .. } => error_to_openai(status, body).1,
                AnswerTranslation::ChatToAnthropic { .. }
                | AnswerTranslation::GeminiToAnthropic { .. } => error_to_anthropic(status, body).1,
                AnswerTranslation::ChatToResponses(_)
                | AnswerTranslation::AnthropicToResponses(_)
                | AnswerTranslation::GeminiToResponses { .. } => error_to_responses(status, body).1,
            };
        };
        translated.unwrap_or_else(|message| {
            error_reply(
                self.client(),
                ErrorKind::BadGateway,
                &format!("The provider's answer could not be translated: {message}."),
                ErrorDetail::default(),
            )
            .body
            .into_bytes()
        })
    }

    /// The translator for a streamed answer.
    pub fn streamer(&self, created: u64) -> StreamTranslation {
        match self {
            AnswerTranslation::AnthropicToChat { include_usage, .. } => {
                StreamTranslation::AnthropicToChat(StreamTranslator::new(*include_usage, created))
            }
            AnswerTranslation::ChatToAnthropic { request_bytes, .. } => {
                StreamTranslation::ChatToAnthropic(ChatToMessagesStream::new(*request_bytes))
            }
            AnswerTranslation::ChatToResponses(context) => StreamTranslation::ChatToResponses(
                ChatToResponsesStream::new(context.clone(), created),
            ),
            AnswerTranslation::AnthropicToResponses(context) => {
                StreamTranslation::AnthropicToResponses(
                    StreamTranslator::new(true, created),
                    ChatToResponsesStream::new(context.clone(), created),
                )
            }
            AnswerTranslation::GeminiToChat {
                include_usage,
                model,
                ..
            } => StreamTranslation::GeminiToChat(GeminiToChatStream::new(
                model,
                *include_usage,
                created,
            )),
            AnswerTranslation::GeminiToAnthropic {
                request_bytes,
                model,
                ..
            } => StreamTranslation::GeminiToAnthropic(
                GeminiToChatStream::new(model, true, created),
                ChatToMessagesStream::new(*request_bytes),
            ),
            AnswerTranslation::GeminiToResponses { context, model } => {
                StreamTranslation::GeminiToResponses(
                    GeminiToChatStream::new(model, true, created),
                    ChatToResponsesStream::new(context.clone(), created),
                )
            }
        }
    }
}

/// A streamed answer's translator: chunks in, the client's events out, never holding more than an
/// unfinished event.
#[derive(Debug)]
pub enum StreamTranslation {
    AnthropicToChat(StreamTranslator),
    ChatToAnthropic(ChatToMessagesStream),
    ChatToResponses(ChatToResponsesStream),
    /// Two steps: Anthropic events become Chat chunks, which become Responses events.
    AnthropicToResponses(StreamTranslator, ChatToResponsesStream),
    GeminiToChat(GeminiToChatStream),
    /// Two steps through Chat chunks, as above.
    GeminiToAnthropic(GeminiToChatStream, ChatToMessagesStream),
    GeminiToResponses(GeminiToChatStream, ChatToResponsesStream),
}

impl StreamTranslation {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            StreamTranslation::AnthropicToChat(t) => t.push(chunk),
            StreamTranslation::ChatToAnthropic(t) => t.push(chunk),
            StreamTranslation::ChatToResponses(t) => t.push(chunk),
            StreamTranslation::AnthropicToResponses(first, second) => {
                let chat = first.push(chunk);
                second.push(&chat)
            }
            StreamTranslation::GeminiToChat(t) => t.push(chunk),
            StreamTranslation::GeminiToAnthropic(first, second) => {
                let chat = first.push(chunk);
                second.push(&chat)
            }
            StreamTranslation::GeminiToResponses(first, second) => {
                let chat = first.push(chunk);
                second.push(&chat)
            }
        }
    }

    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            StreamTranslation::AnthropicToChat(t) => t.finish(),
            StreamTranslation::ChatToAnthropic(t) => t.finish(),
            StreamTranslation::ChatToResponses(t) => t.finish(),
            StreamTranslation::AnthropicToResponses(first, second) => {
                let chat = first.finish();
                let mut out = second.push(&chat);
                out.extend(second.finish());
                out
            }
            StreamTranslation::GeminiToChat(t) => t.finish(),
            StreamTranslation::GeminiToAnthropic(first, second) => {
                let chat = first.finish();
                let mut out = second.push(&chat);
                out.extend(second.finish());
                out
            }
            StreamTranslation::GeminiToResponses(first, second) => {
                let chat = first.finish();
                let mut out = second.push(&chat);
                out.extend(second.finish());
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::responses_request_to_chat;
    use crate::sse::SseParser;
    use serde_json::{json, Value};

    fn anthropic_stream() -> String {
        let mut s = String::new();
        for (name, data) in [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 11, "output_tokens": 1}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi there"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 6}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ] {
            s.push_str(&format!("event: {name}\ndata: {data}\n\n"));
        }
        s
    }

    #[test]
    fn anthropic_stream_becomes_responses_events_through_chat() {
        let request = responses_request_to_chat(
            br#"{"model":"claude-sonnet-4-5","input":"hi","stream":true}"#,
            None,
            None,
        )
        .unwrap();
        let translation = AnswerTranslation::AnthropicToResponses(request.context);
        assert!(translation.stream());
        let mut streamer = translation.streamer(3);
        let source = anthropic_stream();
        let mut out = Vec::new();
        for piece in source.as_bytes().chunks(7) {
            out.extend(streamer.push(piece));
        }
        out.extend(streamer.finish());
        let mut parser = SseParser::new();
        let events = parser.push(&out);
        let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
        assert_eq!(last["type"], "response.completed");
        let response = &last["response"];
        assert_eq!(response["id"], "resp_msg_1");
        assert_eq!(response["output"][0]["content"][0]["text"], "Hi there");
        assert_eq!(response["output"][1]["call_id"], "toolu_1");
        assert_eq!(response["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(response["usage"]["input_tokens"], 11);
        assert_eq!(response["usage"]["output_tokens"], 6);
    }

    #[test]
    fn errors_and_json_answers_in_the_clients_shape() {
        let request =
            responses_request_to_chat(br#"{"model":"claude-sonnet-4-5","input":"hi"}"#, None, None)
                .unwrap();
        let translation = AnswerTranslation::AnthropicToResponses(request.context);
        assert_eq!(translation.status(529), 503);
        let body = translation.answer(
            200,
            br#"{"id":"msg_2","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#,
            1,
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["object"], "response");
        assert_eq!(body["output"][0]["content"][0]["text"], "Hello");
        let body = translation.answer(200, b"not json", 1);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "server_error");

        let to_anthropic = AnswerTranslation::ChatToAnthropic {
            stream: false,
            request_bytes: 10,
        };
        assert_eq!(to_anthropic.status(529), 529);
        let body = to_anthropic.answer(401, br#"{"error":{"message":"Incorrect API key"}}"#, 1);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
    }
}
