//! PII masking never panics, and whatever it masks comes back exactly through restore; scanning an
//! answer stream for PII (redact) never panics, however the text is cut into events and chunks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::config::parse;
use llm_core::pii::{Pii, PiiConfig, StreamFormat, StreamRestorer, Vault};
use std::sync::OnceLock;

fn pii() -> &'static Pii {
    static PII: OnceLock<Pii> = OnceLock::new();
    PII.get_or_init(|| {
        let config = parse::<PiiConfig>(
            br#"{"entities":{"secret":"mask"},"answers":{"action":"redact","stream_window":16}}"#,
        )
        .expect("config");
        Pii::compile(config).expect("compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut vault = Vault::default();
    let mut findings = Default::default();
    if let Some(masked) = pii().scan_text(text, &mut vault, &mut findings) {
        // Restoring the masked text gives back the original, unless the input itself contained
        // something that looks like one of the placeholders the vault just issued.
        if !text.contains('<') {
            assert_eq!(vault.restore(&masked).as_deref(), Some(text));
        }
    }
    // The same text as an answer: pieces of 1 to 16 bytes (from the first byte), in chunks of 7.
    let step = usize::from(data.first().copied().unwrap_or(0) % 16) + 1;
    let mut stream = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = step.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        let event = serde_json::json!({"choices": [{"index": 0, "delta": {"content": piece}}]});
        stream.push_str(&format!("data: {event}\n\n"));
        rest = tail;
    }
    let mut restorer = StreamRestorer::new(StreamFormat::OpenAi).scanning_answers(
        pii().answer_action(""),
        pii().answer_stream_window(),
    );
    for chunk in stream.as_bytes().chunks(7) {
        restorer.push_scanned(chunk, &vault, pii());
    }
    restorer.finish_scanned(&vault, pii());
});
