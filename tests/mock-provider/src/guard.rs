//! Guardrail rules: what the moderation endpoint flags and what a Llama Guard model answers. Both
//! read markers in the text, so a test decides the verdict by what it sends.

use crate::text;
use serde_json::{json, Map, Value};

/// The OpenAI moderation categories, in the order the real API lists them.
pub const CATEGORIES: [&str; 13] = [
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// The categories omni-moderation also scores on images (the others are text-only).
const IMAGE_CATEGORIES: [&str; 6] = [
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "violence",
    "violence/graphic",
];

const FLAG_SCORE: f64 = 0.97;
const BASE_SCORE: f64 = 0.0001;
/// A score at or above this flags its category, like a typical moderation threshold.
const FLAG_THRESHOLD: f64 = 0.5;
/// Longest marker body looked at; bounds the scan on texts with many unmatched `[`.
const MAX_MARKER: usize = 64;

/// Llama Guard 3 hazard codes for moderation categories, so one `[flag:...]` marker trips both
/// kinds of guard. `self-harm/*` maps like `self-harm`; unlisted categories have no code.
const FLAG_CODES: [(&str, u8); 7] = [
    ("violence", 1),
    ("illicit", 2),
    ("sexual/minors", 4),
    ("hate", 10),
    ("harassment", 10),
    ("self-harm", 11),
    ("sexual", 12),
];

/// Markers `[kind:value]` in text order, as (kind, value).
fn markers(text: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    for (open, _) in text.match_indices('[') {
        let rest = text.get(open + 1..).unwrap_or("");
        let Some(close) = rest.bytes().take(MAX_MARKER).position(|b| b == b']') else {
            continue;
        };
        // `]` is ASCII, so `close` is a char boundary. A body with `[` belongs to a later marker.
        let body = rest.get(..close).unwrap_or("");
        if let Some((kind, value)) = body.split_once(':').filter(|_| !body.contains('[')) {
            found.push((kind.trim(), value.trim()));
        }
    }
    found
}

fn category_index(name: &str) -> Option<usize> {
    CATEGORIES
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name.trim()))
}

/// (score, flagged) per category of [`CATEGORIES`]: `[flag:C]` gives 0.97 and flagged,
/// `[score:C=X]` gives X (0..=1) and flagged when X >= 0.5, anything else 0.0001 and not flagged.
/// The last marker for a category wins; unknown categories and bad scores are ignored.
pub fn classify(text: &str) -> [(f64, bool); CATEGORIES.len()] {
    let mut verdicts = [(BASE_SCORE, false); CATEGORIES.len()];
    for (kind, value) in markers(text) {
        let (name, verdict) = if kind.eq_ignore_ascii_case("flag") {
            (value, Some((FLAG_SCORE, true)))
        } else if kind.eq_ignore_ascii_case("score") {
            let Some((name, score)) = value.split_once('=') else {
                continue;
            };
            let score = score
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|s| (0.0..=1.0).contains(s));
            (name, score.map(|s| (s, s >= FLAG_THRESHOLD)))
        } else {
            continue;
        };
        if let (Some(slot), Some(verdict)) = (
            category_index(name).and_then(|i| verdicts.get_mut(i)),
            verdict,
        ) {
            *slot = verdict;
        }
    }
    verdicts
}

/// One entry of a moderation answer's `results`. `has_text` / `has_image` say which input types the
/// result covers, for `category_applied_input_types`.
pub fn moderation_result(text: &str, has_text: bool, has_image: bool) -> Value {
    let (mut categories, mut scores, mut applied) = (Map::new(), Map::new(), Map::new());
    let verdicts = classify(text);
    for (name, (score, flagged)) in CATEGORIES.iter().zip(verdicts) {
        let mut types = Vec::new();
        if has_text {
            types.push("text");
        }
        if has_image && IMAGE_CATEGORIES.contains(name) {
            types.push("image");
        }
        categories.insert(name.to_string(), json!(flagged));
        scores.insert(name.to_string(), json!(score));
        applied.insert(name.to_string(), json!(types));
    }
    json!({
        "flagged": verdicts.iter().any(|(_, flagged)| *flagged),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    })
}

/// Whether a chat model is a Llama Guard classifier: its name, or the part after its last `/`
/// (`meta-llama/llama-guard-3-8b`), starts with `llama-guard`, in any case.
pub fn is_llama_guard(model: &str) -> bool {
    let last = model.rsplit('/').next().unwrap_or(model);
    [model, last].iter().any(|name| {
        name.get(.."llama-guard".len())
            .is_some_and(|p| p.eq_ignore_ascii_case("llama-guard"))
    })
}

/// The hazard code a marker names: `[unsafe:S<n>]` (n in 1..=14) or a mapped `[flag:CATEGORY]`.
fn hazard_code(kind: &str, value: &str) -> Option<u8> {
    if kind.eq_ignore_ascii_case("unsafe") {
        let n: u8 = value
            .strip_prefix(['S', 's'])?
            .parse()
            .ok()
            .filter(|n| (1..=14).contains(n))?;
        return Some(n);
    }
    if !kind.eq_ignore_ascii_case("flag") {
        return None;
    }
    let category = CATEGORIES.get(category_index(value)?)?;
    let family = if category.starts_with("self-harm/") {
        "self-harm"
    } else {
        category
    };
    FLAG_CODES
        .iter()
        .find(|(name, _)| *name == family)
        .map(|(_, code)| *code)
}

/// Llama Guard 3's answer for a classifier request: `safe`, or `unsafe` and a line of the hazard
/// codes the markers in any message name, first seen first, without repeats (`unsafe\nS1,S10`).
/// Every message counts because the classifier prompt embeds the conversation to judge.
pub fn llama_guard_verdict(messages: &[Value]) -> String {
    let mut codes: Vec<u8> = Vec::new();
    for content in messages.iter().filter_map(|m| m.get("content")) {
        let text = text::content_text(content);
        for (kind, value) in markers(&text) {
            if let Some(code) = hazard_code(kind, value) {
                if !codes.contains(&code) {
                    codes.push(code);
                }
            }
        }
    }
    if codes.is_empty() {
        return "safe".to_string();
    }
    let codes: Vec<String> = codes.iter().map(|c| format!("S{c}")).collect();
    format!("unsafe\n{}", codes.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict_of(text: &str, category: &str) -> (f64, bool) {
        classify(text)[category_index(category).unwrap()]
    }

    #[test]
    fn markers_in_text_order() {
        assert_eq!(
            markers("a [flag:hate] b [[score: violence=0.3 ] [x] [unsafe:S2"),
            vec![("flag", "hate"), ("score", "violence=0.3")]
        );
        assert_eq!(markers("é[flag:sexual]é"), vec![("flag", "sexual")]);
        // A `]` too far away is not a marker.
        let long = format!("[flag:{}]", "x".repeat(MAX_MARKER));
        assert!(markers(&long).is_empty());
    }

    #[test]
    fn moderation_markers() {
        let text = "[flag:violence] [flag:self-harm/intent] [score:hate=0.42] [score:sexual=0.5] \
                    [flag:unknown] [score:illicit=2] [score:harassment=x]";
        assert_eq!(verdict_of(text, "violence"), (0.97, true));
        assert_eq!(verdict_of(text, "self-harm/intent"), (0.97, true));
        assert_eq!(verdict_of(text, "hate"), (0.42, false));
        assert_eq!(verdict_of(text, "sexual"), (0.5, true));
        assert_eq!(verdict_of(text, "illicit"), (0.0001, false));
        assert_eq!(verdict_of(text, "harassment"), (0.0001, false));
        assert_eq!(verdict_of(text, "self-harm"), (0.0001, false));
        // The last marker for a category wins; names are case-insensitive.
        assert_eq!(
            verdict_of("[FLAG:Hate] [score:hate=0.1]", "hate"),
            (0.1, false)
        );
        assert!(classify("nothing here")
            .iter()
            .all(|v| *v == (0.0001, false)));
    }

    #[test]
    fn moderation_result_shape() {
        let result = moderation_result("[score:violence=0.8]", true, true);
        assert_eq!(result["flagged"], true);
        for key in [
            "categories",
            "category_scores",
            "category_applied_input_types",
        ] {
            assert_eq!(result[key].as_object().unwrap().len(), 13, "{key}");
        }
        assert_eq!(result["categories"]["violence"], true);
        assert_eq!(result["categories"]["hate"], false);
        assert_eq!(result["category_scores"]["violence"], 0.8);
        assert_eq!(result["category_scores"]["hate"], 0.0001);
        let applied = &result["category_applied_input_types"];
        assert_eq!(applied["violence"], json!(["text", "image"]));
        assert_eq!(applied["hate"], json!(["text"]));
        let image_only = moderation_result("", false, true);
        assert_eq!(image_only["flagged"], false);
        assert_eq!(
            image_only["category_applied_input_types"]["hate"],
            json!([])
        );
    }

    #[test]
    fn llama_guard_verdicts() {
        let verdict = |texts: &[&str]| {
            let messages: Vec<Value> = texts
                .iter()
                .map(|t| json!({"role": "user", "content": t}))
                .collect();
            llama_guard_verdict(&messages)
        };
        assert_eq!(verdict(&["hello"]), "safe");
        assert_eq!(verdict(&["[unsafe:S1]"]), "unsafe\nS1");
        assert_eq!(
            verdict(&["[unsafe:s10] [unsafe:S1]", "[unsafe:S10] [unsafe:S14]"]),
            "unsafe\nS10,S1,S14"
        );
        assert_eq!(verdict(&["[unsafe:S0] [unsafe:S15] [unsafe:X]"]), "safe");
        assert_eq!(
            verdict(&[
                "[flag:violence] [flag:illicit] [flag:sexual/minors] [flag:hate]",
                "[flag:harassment] [flag:self-harm/instructions] [flag:sexual]"
            ]),
            "unsafe\nS1,S2,S4,S10,S11,S12"
        );
        assert_eq!(verdict(&["[flag:self-harm]"]), "unsafe\nS11");
        // Unmapped or unknown categories and score markers give no code.
        assert_eq!(
            verdict(&["[flag:violence/graphic] [flag:nope] [score:hate=0.9]"]),
            "safe"
        );
        // Every message counts, whatever its role or content form.
        let messages = vec![
            json!({"role": "system", "content": "[unsafe:S3]"}),
            json!({"role": "assistant", "content": [{"type": "text", "text": "[flag:hate]"}]}),
            json!({"role": "user", "content": "fine"}),
        ];
        assert_eq!(llama_guard_verdict(&messages), "unsafe\nS3,S10");
    }

    #[test]
    fn llama_guard_model_names() {
        assert!(is_llama_guard("llama-guard-3-8b"));
        assert!(is_llama_guard("Llama-Guard-4-12B"));
        assert!(is_llama_guard("meta-llama/llama-guard-3-8b"));
        assert!(!is_llama_guard("llama-3.1-8b"));
        assert!(!is_llama_guard("gpt-4o-mini"));
        assert!(!is_llama_guard("my-llama-guard"));
    }
}
