//! llm_guard's parsers never panic, whatever the bytes: normalisation and the injection detector
//! (any text, with the payload decoder), request extraction and the local checks, stream windows
//! (all three formats, both modes, any chunking, checks approving or blocking), answers' text and
//! the filtered answer, and the moderation and classifier answers. A blocked stream releases
//! nothing after its block.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::guarding::guard::{
    answer_text, extract, filtered_answer, Guard, GuardConfig, StreamMode,
};
use llm_core::guarding::injection::Detector;
use llm_core::guarding::remote::{Check, CheckConfig};
use llm_core::guarding::stream::{Format, StreamGuard};
use std::sync::OnceLock;

fn detector() -> &'static Detector {
    static DETECTOR: OnceLock<Detector> = OnceLock::new();
    DETECTOR.get_or_init(|| Detector::new().expect("rules compile"))
}

fn guard() -> &'static Guard {
    static GUARD: OnceLock<Guard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let config: GuardConfig = serde_json::from_str(
            r#"{"defaults": {"deny": [{"name": "x", "pattern": "(?i)secret", "roles": ["user", "tool", "system"]}],
                "allow": [{"name": "a", "pattern": "a"}],
                "limits": {"max_messages": 50, "max_message_chars": 5000, "allowed_roles": ["user", "system"]}}}"#,
        )
        .expect("config");
        Guard::compile(config, &|_| None).expect("compiles")
    })
}

fn checks() -> &'static [Check; 2] {
    static CHECKS: OnceLock<[Check; 2]> = OnceLock::new();
    CHECKS.get_or_init(|| {
        let check = |json: &str| {
            let config: CheckConfig = serde_json::from_str(json).expect("config");
            Check::compile("c", config, &|_| None).expect("compiles")
        };
        [
            check(
                r#"{"type": "openai_moderation", "cluster": "x", "thresholds": {"violence": 0.3}}"#,
            ),
            check(r#"{"type": "llama_guard", "cluster": "x", "model": "m", "format": "prompt"}"#),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, bytes)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let verdict = detector().scan(&text);
    assert!(verdict.score >= 0.0);
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let request = extract(&json);
        let policy = guard().policy("m", "c");
        let _ = guard().check_request(&policy, &request);
        let _ = answer_text(&json);
        let _ = filtered_answer(&json);
        for check in checks() {
            let _ = check.request_body(&request.segments);
        }
    }
    for check in checks() {
        let _ = check.outcome(Some(200), bytes);
        let _ = check.answer_body(Some(&text), &text);
    }
    let format = [Format::OpenAi, Format::Anthropic, Format::Responses][usize::from(control % 3)];
    let mode = if control & 4 == 0 {
        StreamMode::Window
    } else {
        StreamMode::End
    };
    let mut stream = StreamGuard::new(format, mode, 16 + usize::from(control >> 3), 4096);
    let step = usize::from(control % 13) + 1;
    let mut blocked = false;
    for (i, chunk) in bytes.chunks(step).enumerate() {
        let out = stream.push(chunk);
        assert!(!blocked || out.is_empty(), "nothing after a block");
        while stream.take_window().is_some() {
            if (i + usize::from(control)) % 7 == 0 {
                let _ = stream.block("stopped");
                blocked = true;
            } else {
                let out = stream.approve();
                assert!(!blocked || out.is_empty());
            }
        }
    }
    let _ = stream.end();
    while stream.take_window().is_some() {
        let _ = stream.approve();
    }
});
