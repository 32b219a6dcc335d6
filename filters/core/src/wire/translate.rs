//! How an attempt's answer goes back to the client when the provider speaks another API: which
//! translation, and the translators for JSON answers, errors and streams.

use crate::anthropic::{error_to_openai, messages_response_to_chat, StreamTranslator};
use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind};
use crate::bedrock::{converse_response_to_chat, error_as_openai_shape, ConverseToChatStream};
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
    /// A provider API answering in Chat Completions' terms (a Chat client on Gemini or Bedrock);
    /// `model` as asked.
    SourceToChat {
        source: ChatSource,
        stream: bool,
        include_usage: bool,
        model: String,
    },
    /// The provider's answer → Chat Completions → Anthropic Messages (a Messages client).
    SourceToAnthropic {
        source: ChatSource,
        stream: bool,
        request_bytes: usize,
        model: String,
    },
    /// The provider's answer → Chat Completions → Responses (a Responses client).
    SourceToResponses {
        source: ChatSource,
        context: ResponsesContext,
        model: String,
    },
}

/// A provider API every client API reaches through Chat Completions.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatSource {
    Gemini,
    /// Bedrock's Converse API. Its answers carry their id and error type in headers
    /// (`x-amzn-requestid`, `x-amzn-errortype`), read when the answer's headers arrive.
    Bedrock {
        request_id: Option<String>,
        error_type: Option<String>,
    },
}

impl ChatSource {
    fn to_chat(&self, body: &[u8], model: &str, created: u64) -> Result<Vec<u8>, String> {
        match self {
            ChatSource::Gemini => gemini_response_to_chat(body, model, created),
            ChatSource::Bedrock { request_id, .. } => {
                converse_response_to_chat(body, model, request_id.as_deref(), created)
            }
        }
    }

    /// An error answer in the `{"error": {"type", "message"}}` shape the translations read.
    fn error_body(&self, body: &[u8]) -> Vec<u8> {
        match self {
            ChatSource::Gemini => body.to_vec(),
            ChatSource::Bedrock { error_type, .. } => {
                error_as_openai_shape(body, error_type.as_deref())
            }
        }
    }

    fn streamer(&self, model: &str, include_usage: bool, created: u64) -> SourceStream {
        match self {
            ChatSource::Gemini => {
                SourceStream::Gemini(GeminiToChatStream::new(model, include_usage, created))
            }
            ChatSource::Bedrock { request_id, .. } => SourceStream::Bedrock(
                ConverseToChatStream::new(model, request_id.as_deref(), include_usage, created),
            ),
        }
    }
}

/// A provider's stream becoming Chat chunks.
#[derive(Debug)]
pub enum SourceStream {
    Gemini(GeminiToChatStream),
    Bedrock(ConverseToChatStream),
}

impl SourceStream {
    fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            SourceStream::Gemini(t) => t.push(chunk),
            SourceStream::Bedrock(t) => t.push(chunk),
        }
    }

    fn finish(&mut self) -> Vec<u8> {
        match self {
            SourceStream::Gemini(t) => t.finish(),
            SourceStream::Bedrock(t) => t.finish(),
        }
    }
}

impl AnswerTranslation {
    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        match self {
            AnswerTranslation::AnthropicToChat { stream, .. }
            | AnswerTranslation::ChatToAnthropic { stream, .. }
            | AnswerTranslation::SourceToChat { stream, .. }
            | AnswerTranslation::SourceToAnthropic { stream, .. } => *stream,
            AnswerTranslation::ChatToResponses(context)
            | AnswerTranslation::AnthropicToResponses(context)
            | AnswerTranslation::SourceToResponses { context, .. } => context.stream,
        }
    }

    fn source(&self) -> Option<&ChatSource> {
        match self {
            AnswerTranslation::SourceToChat { source, .. }
            | AnswerTranslation::SourceToAnthropic { source, .. }
            | AnswerTranslation::SourceToResponses { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether a successful answer of `content_type` is the stream the client asked for (Bedrock
    /// streams AWS's binary event stream, the others SSE).
    pub fn streams_as(&self, content_type: &str) -> bool {
        let expected = match self.source() {
            Some(ChatSource::Bedrock { .. }) => "application/vnd.amazon.eventstream",
            _ => "text/event-stream",
        };
        self.stream() && content_type.starts_with(expected)
    }

    /// Reads what a provider says in its answer's headers rather than its body (`header` looks
    /// one up by its lowercase name).
    pub fn note_answer_headers(&mut self, header: &dyn Fn(&str) -> Option<String>) {
        if let AnswerTranslation::SourceToChat { source, .. }
        | AnswerTranslation::SourceToAnthropic { source, .. }
        | AnswerTranslation::SourceToResponses { source, .. } = self
        {
            if let ChatSource::Bedrock {
                request_id,
                error_type,
            } = source
            {
                *request_id = header("x-amzn-requestid");
                *error_type = header("x-amzn-errortype");
            }
        }
    }

    fn client(&self) -> ApiFlavor {
        match self {
            AnswerTranslation::ChatToAnthropic { .. }
            | AnswerTranslation::SourceToAnthropic { .. } => ApiFlavor::Anthropic,
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
                AnswerTranslation::SourceToChat { source, model, .. } => {
                    source.to_chat(body, model, created)
                }
                AnswerTranslation::SourceToAnthropic {
                    source,
                    model,
                    request_bytes,
                    ..
                } => source
                    .to_chat(body, model, created)
                    .and_then(|chat| chat_response_to_messages(&chat, *request_bytes)),
                AnswerTranslation::SourceToResponses {
                    source,
                    context,
                    model,
                } => source
                    .to_chat(body, model, created)
                    .and_then(|chat| chat_response_to_responses(&chat, context, created)),
            }
        } else {
            let error = self
                .source()
                .map_or_else(|| body.to_vec(), |source| source.error_body(body));
            return match self {
                AnswerTranslation::AnthropicToChat { .. }
                | AnswerTranslation::SourceToChat { .. } => error_to_openai(status, &error).1,
                AnswerTranslation::ChatToAnthropic { .. }
                | AnswerTranslation::SourceToAnthropic { .. } => {
                    error_to_anthropic(status, &error).1
                }
                AnswerTranslation::ChatToResponses(_)
                | AnswerTranslation::AnthropicToResponses(_)
                | AnswerTranslation::SourceToResponses { .. } => {
                    error_to_responses(status, &error).1
                }
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
            AnswerTranslation::SourceToChat {
                source,
                include_usage,
                model,
                ..
            } => StreamTranslation::SourceToChat(source.streamer(model, *include_usage, created)),
            AnswerTranslation::SourceToAnthropic {
                source,
                request_bytes,
                model,
                ..
            } => StreamTranslation::SourceToAnthropic(
                source.streamer(model, true, created),
                ChatToMessagesStream::new(*request_bytes),
            ),
            AnswerTranslation::SourceToResponses {
                source,
                context,
                model,
            } => StreamTranslation::SourceToResponses(
                source.streamer(model, true, created),
                ChatToResponsesStream::new(context.clone(), created),
            ),
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
    SourceToChat(SourceStream),
    /// Two steps through Chat chunks, as above.
    SourceToAnthropic(SourceStream, ChatToMessagesStream),
    SourceToResponses(SourceStream, ChatToResponsesStream),
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
            StreamTranslation::SourceToChat(t) => t.push(chunk),
            StreamTranslation::SourceToAnthropic(first, second) => {
                let chat = first.push(chunk);
                second.push(&chat)
            }
            StreamTranslation::SourceToResponses(first, second) => {
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
            StreamTranslation::SourceToChat(t) => t.finish(),
            StreamTranslation::SourceToAnthropic(first, second) => {
                let chat = first.finish();
                let mut out = second.push(&chat);
                out.extend(second.finish());
                out
            }
            StreamTranslation::SourceToResponses(first, second) => {
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
