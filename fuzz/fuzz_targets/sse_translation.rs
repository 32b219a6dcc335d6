//! Anthropic SSE → OpenAI chunks and usage tracking never panic, whatever the bytes and chunking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::anthropic::StreamTranslator;
use llm_core::usage::{ResponseFormat, StreamUsage};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(stream.len());
    let (a, b) = stream.split_at(at);
    let mut translator = StreamTranslator::new(true, 0);
    translator.push(a);
    translator.push(b);
    translator.finish();
    for format in [ResponseFormat::OpenAi, ResponseFormat::Anthropic, ResponseFormat::Responses] {
        let mut usage = StreamUsage::new(format, true);
        usage.push(a);
        usage.push(b);
        usage.finish();
    }
});
