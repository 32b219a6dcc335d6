//! Every client-API translation (Messages → Chat, Responses → Chat and → Messages, local token
//! counting) and every answer translation (JSON, errors, streams cut anywhere) never panics, and what
//! it sends on is JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::count_tokens::count_tokens_reply;
use llm_core::messages_via_chat::messages_request_to_chat;
use llm_core::responses::responses_request_to_chat;
use llm_core::translate::AnswerTranslation;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    if let Ok(chat) = messages_request_to_chat(input, None, Some(100)) {
        serde_json::from_slice::<serde_json::Value>(&chat.body).expect("valid JSON");
    }
    let reply = count_tokens_reply(input, Some("gpt-4o-mini"));
    serde_json::from_str::<serde_json::Value>(&reply.body).expect("valid JSON");
    let context = match responses_request_to_chat(input, None, Some(100)) {
        Ok(request) => {
            serde_json::from_slice::<serde_json::Value>(&request.chat).expect("valid JSON");
            Some(request.context)
        }
        Err(_) => None,
    };
    let context = context.or_else(|| {
        responses_request_to_chat(br#"{"model":"m","input":"x","stream":true}"#, None, None)
            .ok()
            .map(|r| r.context)
    });
    let Some(context) = context else { return };
    let translations = [
        AnswerTranslation::AnthropicToChat { stream: true, include_usage: true },
        AnswerTranslation::ChatToAnthropic { stream: true, request_bytes: input.len() },
        AnswerTranslation::ChatToResponses(context.clone()),
        AnswerTranslation::AnthropicToResponses(context),
    ];
    let at = usize::from(cut).min(input.len());
    let (a, b) = input.split_at(at);
    for translation in translations {
        for status in [200, 429, 529] {
            let body = translation.answer(status, input, 0);
            serde_json::from_slice::<serde_json::Value>(&body).expect("valid JSON");
        }
        let mut streamer = translation.streamer(0);
        streamer.push(a);
        streamer.push(b);
        streamer.finish();
    }
});
