//! OpenAI → Anthropic request translation never panics and always produces JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::anthropic::{chat_request_to_messages, messages_response_to_chat, RequestOptions};

fuzz_target!(|body: &[u8]| {
    let options = RequestOptions {
        model: None,
        default_max_tokens: 16,
    };
    if let Ok(translated) = chat_request_to_messages(body, options) {
        serde_json::from_slice::<serde_json::Value>(&translated.body).expect("valid JSON");
    }
    let _ = messages_response_to_chat(body, 0);
});
