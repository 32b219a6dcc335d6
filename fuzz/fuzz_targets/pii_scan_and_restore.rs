//! PII masking never panics, and whatever it masks comes back exactly through restore.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::config::parse;
use llm_core::pii::{Pii, PiiConfig, Vault};
use std::sync::OnceLock;

fn pii() -> &'static Pii {
    static PII: OnceLock<Pii> = OnceLock::new();
    PII.get_or_init(|| {
        let config = parse::<PiiConfig>(br#"{"entities":{"secret":"mask"}}"#).expect("config");
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
});
