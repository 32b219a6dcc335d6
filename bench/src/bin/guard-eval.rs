//! The injection detector against corpora nobody on this project wrote (scripts/guard-corpus.sh
//! fetches them): its detection rate on attack prompts and its false-positive rate on benign chat
//! text, at the default threshold, overall and by source; with the rules that fire most.
//!
//! The rules were tuned looking only at the "tuning" half of each corpus (texts whose SHA-256
//! starts with an even byte); the "held-out" half was never looked at, and its rates are the
//! honest ones. `GUARD_EVAL_SHOW=1` prints misses and false positives of the tuning half only.
//!
//! usage: guard-eval [CORPUS_DIR] (default target/guard-corpus)

use llm_core::guarding::injection::Detector;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

const THRESHOLD: f32 = 1.0;

struct Tally {
    total: usize,
    flagged: usize,
}

fn read(path: &PathBuf) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/guard-corpus.sh)", path.display()));
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .map(|v| {
            let source = v["source"].as_str().unwrap_or_default();
            // The family: package and file (PyRIT templates: their folder), without the probe.
            let family = source.split_once('#').map_or(source, |(f, _)| f);
            let family = match family.split_once("jailbreak/templates/") {
                Some((head, tail)) => match tail.rsplit_once('/') {
                    Some((folder, _)) => format!("{head}jailbreak/templates/{folder}/"),
                    None => format!("{head}jailbreak/templates/"),
                },
                None => family.to_string(),
            };
            (family, v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn tuning_half(text: &str) -> bool {
    Sha256::digest(text.as_bytes())
        .first()
        .is_some_and(|b| b % 2 == 0)
}

type Evaluation = (
    Tally,
    [Tally; 2],
    BTreeMap<String, Tally>,
    BTreeMap<&'static str, usize>,
);

fn evaluate(detector: &Detector, items: &[(String, String)]) -> Evaluation {
    let mut overall = Tally {
        total: 0,
        flagged: 0,
    };
    let mut halves = [
        Tally {
            total: 0,
            flagged: 0,
        },
        Tally {
            total: 0,
            flagged: 0,
        },
    ];
    let mut by_source: BTreeMap<String, Tally> = BTreeMap::new();
    let mut rules: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (source, text) in items {
        let verdict = detector.scan(text);
        let flagged = verdict.score >= THRESHOLD;
        overall.total += 1;
        let half = &mut halves[usize::from(!tuning_half(text))];
        half.total += 1;
        half.flagged += usize::from(flagged);
        let entry = by_source.entry(source.clone()).or_insert(Tally {
            total: 0,
            flagged: 0,
        });
        entry.total += 1;
        if flagged {
            overall.flagged += 1;
            entry.flagged += 1;
            for rule in verdict.rules {
                *rules.entry(rule).or_default() += 1;
            }
        }
    }
    (overall, halves, by_source, rules)
}

fn pct(t: &Tally) -> f64 {
    if t.total == 0 {
        return 0.0;
    }
    100.0 * t.flagged as f64 / t.total as f64
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/guard-corpus".into()),
    );
    let detector = Detector::new().expect("the rule set compiles");
    // GUARD_EVAL_SHOW=<part of a source name> prints that family's misses (or false positives).
    let show = std::env::var("GUARD_EVAL_SHOW").ok();
    for (name, file) in [("attacks", "attacks.jsonl"), ("benign", "benign.jsonl")] {
        let items = read(&dir.join(file));
        let started = std::time::Instant::now();
        let (overall, halves, by_source, rules) = evaluate(&detector, &items);
        let elapsed = started.elapsed();
        println!(
            "{name}: {} of {} flagged ({:.2}%) at threshold {THRESHOLD}; {:.1} ms for {} texts",
            overall.flagged,
            overall.total,
            pct(&overall),
            elapsed.as_secs_f64() * 1e3,
            overall.total
        );
        println!(
            "  tuning half {:.2}% of {}; held-out half {:.2}% of {}",
            pct(&halves[0]),
            halves[0].total,
            pct(&halves[1]),
            halves[1].total
        );
        for (source, tally) in &by_source {
            println!(
                "  {:>6.2}%  {:>5} / {:<5} {source}",
                pct(tally),
                tally.flagged,
                tally.total
            );
        }
        let mut top: Vec<(&&str, &usize)> = rules.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        let top: Vec<String> = top
            .iter()
            .take(8)
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        println!("  rules in flagged texts: {}", top.join(", "));
        if let Some(family) = &show {
            let want_flagged = name == "benign";
            let shown = items
                .iter()
                .filter(|(source, t)| tuning_half(t) && source.contains(family.as_str()))
                .filter(|(_, t)| (detector.scan(t).score >= THRESHOLD) == want_flagged)
                .take(40);
            for (_, text) in shown {
                let skip = text.chars().count().saturating_sub(400);
                let short: String = text.chars().skip(skip).collect();
                println!(
                    "    --- {:?} {}",
                    detector.scan(text).rules,
                    short.replace('\n', " ")
                );
            }
        }
    }
}
