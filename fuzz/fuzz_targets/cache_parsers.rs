//! llm_cache's parsers never panic, whatever the bytes: stream assembly (both APIs, any chunking)
//! and the replay of whatever it assembled, JSON answers, stored entries, request keys, embeddings
//! answers and Chroma's answers. An assembled answer always replays.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llm_core::cache::parse_body;
use llm_core::caching::chroma::{parse_collection_id, parse_query};
use llm_core::caching::key::{CacheApi, KeyParts};
use llm_core::caching::replay::{complete_json, replay_json, replay_stream, Assembler};
use llm_core::caching::semantic::parse_embedding;
use llm_core::caching::store::Entry;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(bytes.len());
    let (a, b) = bytes.split_at(at);
    for api in [CacheApi::ChatCompletions, CacheApi::Messages] {
        let mut assembler = Assembler::new(api, 1 << 20);
        assembler.push(a);
        assembler.push(b);
        if let Some(complete) = assembler.finish() {
            assert!(replay_json(api, &complete.answer, "id", 1).is_some());
            assert!(replay_stream(api, &complete.answer, "id", 1, true).is_some());
        }
        if let Some(complete) = complete_json(api, bytes) {
            let _ = replay_stream(api, &complete.answer, "id", 1, cut % 2 == 0);
        }
        let _ = replay_json(api, bytes, "id", 1);
        let _ = replay_stream(api, bytes, "id", 1, true);
        if let Some(body) = parse_body(bytes) {
            let parts = KeyParts { api, route: "r", model: body.model(), scope: "s" };
            let _ = body.request(&parts);
        }
    }
    let _ = Entry::decode(bytes, &[0; 32]);
    let _ = parse_embedding(bytes);
    let _ = parse_collection_id(bytes);
    let _ = parse_query(bytes, 0.5);
});
