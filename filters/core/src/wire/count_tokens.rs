//! `/v1/messages/count_tokens` for providers without the endpoint: the gateway counts the request's
//! tokens itself, with the model family's tokenizer where it has one (OpenAI's), otherwise estimated
//! from its length. Either way the answer says how it was counted in [`COUNT_HEADER`].

use crate::anthropic::json_object;
use crate::api::{error_reply, ApiFlavor, ErrorDetail, ErrorKind, LocalReply};
use crate::messages_via_chat::messages_object_to_chat;
use crate::usage::estimate_tokens;
use serde_json::{json, Value};

/// How a locally answered count was made: `estimate; tokenizer=o200k_base` (OpenAI's tokenizer on
/// the text; the provider's own framing may differ by a few tokens) or `estimate; tokenizer=none`
/// (a model family whose tokenizer the gateway does not ship, GPT-4 and GPT-3.5's cl100k_base
/// included: about four characters per token).
pub const COUNT_HEADER: &str = "x-llm-token-count";

/// The tokenizer of a model family, when the gateway ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokenizer {
    /// GPT-4o, GPT-4.1, GPT-4.5, GPT-5, gpt-oss and the o-series.
    O200k,
    /// Any other family (GPT-4 and GPT-3.5 too: their tokenizer would add 1.7 MB to the module for
    /// models being retired): estimated from the length.
    Estimate,
}

impl Tokenizer {
    pub fn for_model(model: &str) -> Tokenizer {
        let model = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let o200k = [
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "chatgpt-4o",
            "o1",
            "o3",
            "o4",
            "gpt-oss",
        ];
        if o200k.iter().any(|p| model.starts_with(p)) {
            Tokenizer::O200k
        } else {
            Tokenizer::Estimate
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::O200k => "o200k_base",
            Tokenizer::Estimate => "none",
        }
    }

    /// Tokens of `text`, and whether the tokenizer counted them (false: estimated).
    fn count(self, text: &str) -> (u64, bool) {
        #[cfg(feature = "tokenizers")]
        if self == Tokenizer::O200k {
            if let Some(tokens) = crate::tokenizers::o200k(text) {
                return (tokens, true);
            }
        }
        (estimate_tokens(text.chars().count()), false)
    }
}

/// Text a request may have tokenized; the rest is estimated by its length. The tokenizer costs about
/// 0.6 µs a byte in V8 on unbroken text: this bounds a count at a fraction of a second, whatever
/// the body.
const TOKENIZED_BYTES: usize = 256 * 1024;

/// Counts texts with one tokenizer, remembering whether any had to be estimated.
struct Counter {
    tokenizer: Tokenizer,
    tokenized: bool,
    budget: usize,
    beyond_budget: bool,
}

impl Counter {
    fn count(&mut self, text: &str) -> u64 {
        if self.tokenizer == Tokenizer::Estimate {
            return estimate_tokens(text.chars().count());
        }
        let mut take = self.budget.min(text.len());
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        let (head, tail) = text.split_at(take);
        let (mut tokens, tokenized) = self.tokenizer.count(head);
        self.tokenized &= tokenized;
        self.budget -= head.len();
        if !tail.is_empty() {
            self.beyond_budget = true;
            tokens += estimate_tokens(tail.chars().count());
        }
        tokens
    }
}

/// Tokens of a Chat request, framed as OpenAI frames chat messages: a few tokens per message for
/// its role and separators, the tools' definitions as the model reads them (their JSON), and the
/// reply's priming.
fn chat_tokens(chat: &Value, tokenizer: &mut Counter) -> u64 {
    const PER_MESSAGE: u64 = 3;
    const REPLY_PRIMING: u64 = 3;
    let mut total = REPLY_PRIMING;
    for message in chat
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        total += PER_MESSAGE;
        if let Some(role) = message.get("role").and_then(Value::as_str) {
            total += tokenizer.count(role);
        }
        match message.get("content") {
            Some(Value::String(text)) => total += tokenizer.count(text),
            Some(Value::Array(parts)) => {
                for part in parts {
                    match part.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            total += tokenizer
                                .count(part.get("text").and_then(Value::as_str).unwrap_or(""))
                        }
                        // An image's cost depends on its size, which only the provider decodes:
                        // OpenAI's low-detail charge.
                        Some("image_url") => total += 85,
                        // A file (a base64 PDF): its size, estimated, never through the tokenizer.
                        Some("file") => total += estimate_tokens(part.to_string().len()),
                        _ => total += tokenizer.count(&part.to_string()),
                    }
                }
            }
            _ => {}
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for pointer in ["/function/name", "/function/arguments"] {
                if let Some(text) = call.pointer(pointer).and_then(Value::as_str) {
                    total += tokenizer.count(text);
                }
            }
        }
    }
    if let Some(tools) = chat.get("tools") {
        total += tokenizer.count(&tools.to_string());
    }
    total
}

/// The answer to a `/v1/messages/count_tokens` request: `{"input_tokens": N}` with [`COUNT_HEADER`],
/// or an Anthropic-shaped 400 for a request that could not be sent either.
pub fn count_tokens_reply(body: &[u8], model: Option<&str>) -> LocalReply {
    let chat = match json_object(body)
        .and_then(|request| messages_object_to_chat(&request, model, None))
    {
        Ok((chat, _)) => Value::Object(chat),
        Err(message) => {
            return error_reply(
                ApiFlavor::Anthropic,
                ErrorKind::InvalidRequest,
                &message,
                ErrorDetail::default(),
            )
        }
    };
    let tokenizer = Tokenizer::for_model(chat.get("model").and_then(Value::as_str).unwrap_or(""));
    let mut counter = Counter {
        tokenizer,
        tokenized: tokenizer != Tokenizer::Estimate,
        budget: TOKENIZED_BYTES,
        beyond_budget: false,
    };
    let tokens = chat_tokens(&chat, &mut counter);
    let label = match (counter.tokenized, counter.beyond_budget) {
        (false, _) => Tokenizer::Estimate.name().to_string(),
        (true, false) => tokenizer.name().to_string(),
        (true, true) => format!(
            "{} (the first {} KiB; the rest by length)",
            tokenizer.name(),
            TOKENIZED_BYTES / 1024
        ),
    };
    LocalReply {
        status: 200,
        headers: vec![
            ("content-type".to_string(), "application/json".to_string()),
            (
                COUNT_HEADER.to_string(),
                format!("estimate; tokenizer={label}"),
            ),
        ],
        body: json!({ "input_tokens": tokens }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        for (model, tokenizer) in [
            ("gpt-4o-mini", Tokenizer::O200k),
            ("gpt-5", Tokenizer::O200k),
            ("o3-mini", Tokenizer::O200k),
            ("openai/gpt-4.1", Tokenizer::O200k),
            ("gpt-4-turbo", Tokenizer::Estimate),
            ("gpt-3.5-turbo", Tokenizer::Estimate),
            ("llama-3.1-8b", Tokenizer::Estimate),
            ("mistral-large", Tokenizer::Estimate),
        ] {
            assert_eq!(Tokenizer::for_model(model), tokenizer, "{model}");
        }
    }

    #[test]
    fn counts_system_messages_and_tools_and_grows_with_the_prompt() {
        let reply = |body: Value| {
            let r = count_tokens_reply(body.to_string().as_bytes(), None);
            assert_eq!(r.status, 200, "{}", r.body);
            let v: Value = serde_json::from_str(&r.body).unwrap();
            (v["input_tokens"].as_u64().unwrap(), r.headers)
        };
        let (small, headers) = reply(
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}]}),
        );
        assert!(headers
            .iter()
            .any(|(n, v)| n == COUNT_HEADER && v.starts_with("estimate; tokenizer=")));
        let (larger, _) = reply(json!({"model": "gpt-4o-mini", "system": "Be brief.",
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "hello world"}]}));
        assert!(larger > small + 5, "{small} {larger}");
        let (estimated, headers) = reply(
            json!({"model": "llama-3", "messages": [{"role": "user", "content": "x".repeat(400)}]}),
        );
        assert!(estimated >= 100);
        assert!(headers.iter().any(|(_, v)| v == "estimate; tokenizer=none"));
        #[cfg(feature = "tokenizers")]
        {
            // "hello world" is 2 o200k tokens; the frame adds 3 per message and 3 for the reply,
            // the role 1.
            let (tokens, headers) = reply(
                json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}]}),
            );
            assert_eq!(tokens, 2 + 3 + 3 + 1);
            assert!(headers
                .iter()
                .any(|(_, v)| v == "estimate; tokenizer=o200k_base"));
            // A million spaces: counted in pieces, without the tokenizer's regex giving up, and
            // only the first 256 KiB tokenized.
            let (spaces, headers) = reply(
                json!({"model": "gpt-4o", "messages": [{"role": "user", "content": " ".repeat(1_000_000)}]}),
            );
            assert!(spaces > 0);
            assert!(headers
                .iter()
                .any(|(_, v)| v.ends_with("(the first 256 KiB; the rest by length)")));
        }
        let bad = count_tokens_reply(b"{", None);
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("\"type\":\"error\""));
    }
}
