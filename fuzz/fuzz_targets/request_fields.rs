//! The router's body reader and the model rewrite never panic, and a rewrite keeps the body parseable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::request::{read_fields, replace_model};
use llm_core::usage::inject_include_usage;

fuzz_target!(|body: &[u8]| {
    if let Ok(fields) = read_fields(body) {
        if let Some(span) = fields.model_span {
            let rewritten =
                replace_model(body, span, "gpt-4o-mini\"\\").expect("span is inside the body");
            let again = read_fields(&rewritten).expect("a rewritten body still parses");
            assert_eq!(again.model.as_deref(), Some("gpt-4o-mini\"\\"));
        }
    }
    if let Some(injected) = inject_include_usage(body) {
        // Splicing keeps whatever the body was: bodies that serde_json's full parser accepts (the
        // probe is laxer inside ignored strings, e.g. lone surrogate escapes) must stay accepted.
        if serde_json::from_slice::<serde_json::Value>(body).is_ok() {
            let value: serde_json::Value =
                serde_json::from_slice(&injected).expect("injection keeps JSON valid");
            assert_eq!(value["stream_options"]["include_usage"], true);
        }
    }
});
