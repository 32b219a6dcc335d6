//! llm_pii's detectors against Presidio's pattern recognizers, on a corpus neither of us wrote
//! (`scripts/pii-eval.sh` builds it from presidio-evaluator's generator; see `bench/pii-eval.md`).
//!
//! Scoring, per type, the same for both: a labelled value counts as found only when findings of its
//! type cover it whole (a value masked in part still leaks); a finding counts as right when it
//! overlaps a labelled value of its type. Everything else a detector reports (on names, addresses,
//! dates, order numbers, ...) is a false positive.
//!
//! usage: pii-eval CORPUS.jsonl [REPORT.md]

use llm_core::privacy::pii::{Pii, PiiConfig};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

const TYPES: [&str; 6] = [
    "credit_card",
    "email",
    "iban",
    "ip_address",
    "phone",
    "us_ssn",
];

type Span = (usize, usize, String);

#[derive(Default, Clone, Copy)]
struct Score {
    labelled: u32,
    found_whole: u32,
    found_in_part: u32,
    reported: u32,
    reported_right: u32,
}

impl Score {
    fn precision(&self) -> f64 {
        ratio(self.reported_right, self.reported)
    }
    fn recall(&self) -> f64 {
        ratio(self.found_whole, self.labelled)
    }
}

fn ratio(a: u32, b: u32) -> f64 {
    if b == 0 {
        1.0
    } else {
        f64::from(a) / f64::from(b)
    }
}

fn spans(value: &Value) -> Vec<Span> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                usize::try_from(s.get(0)?.as_u64()?).ok()?,
                usize::try_from(s.get(1)?.as_u64()?).ok()?,
                s.get(2)?.as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Adds one text's findings to `scores`. `text` decides what counts as a gap between findings: a
/// value covered by two adjacent findings with only spaces between them is still whole.
fn score(text: &str, gold: &[Span], found: &[Span], scores: &mut BTreeMap<String, Score>) {
    let overlaps = |a: &Span, b: &Span| a.0 < b.1 && b.0 < a.1 && a.2 == b.2;
    for g in gold {
        let s = scores.entry(g.2.clone()).or_default();
        s.labelled += 1;
        let covering: Vec<&Span> = found.iter().filter(|f| overlaps(f, g)).collect();
        let covered = (g.0..g.1).all(|i| {
            covering.iter().any(|f| f.0 <= i && i < f.1)
                || text.as_bytes().get(i).is_some_and(u8::is_ascii_whitespace)
        });
        if covered {
            s.found_whole += 1;
        } else if !covering.is_empty() {
            s.found_in_part += 1;
        }
    }
    for f in found {
        let s = scores.entry(f.2.clone()).or_default();
        s.reported += 1;
        if gold.iter().any(|g| overlaps(f, g)) {
            s.reported_right += 1;
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let corpus_path = args
        .next()
        .expect("usage: pii-eval CORPUS.jsonl [REPORT.md]");
    let report_path = args.next();
    let corpus = std::fs::read_to_string(&corpus_path).expect("read the corpus");
    let config: PiiConfig = serde_json::from_value(serde_json::json!({
        "entities": TYPES.iter().map(|t| (t.to_string(), "mask")).collect::<BTreeMap<_, _>>()
    }))
    .expect("config");
    let pii = Pii::compile(config).expect("compile");

    let mut ours: BTreeMap<String, Score> = BTreeMap::new();
    let mut presidio: BTreeMap<String, Score> = BTreeMap::new();
    let mut texts = 0u32;
    let mut bytes = 0usize;
    let mut misses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let started = std::time::Instant::now();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line).expect("a JSON line");
        let text = record["text"].as_str().expect("text");
        texts += 1;
        bytes += text.len();
        let gold = spans(&record["gold"]);
        let found: Vec<Span> = pii
            .detect(text)
            .into_iter()
            .map(|d| (d.start, d.end, d.key))
            .collect();
        score(text, &gold, &found, &mut ours);
        score(text, &gold, &spans(&record["presidio"]), &mut presidio);
        for g in &gold {
            let whole = found.iter().any(|f| f.0 <= g.0 && g.1 <= f.1 && f.2 == g.2);
            let list = misses.entry(g.2.clone()).or_default();
            if !whole && list.len() < 12 {
                list.push(text.get(g.0..g.1).unwrap_or("").to_string());
            }
        }
        for f in &found {
            if !gold.iter().any(|g| g.0 < f.1 && f.0 < g.1 && g.2 == f.2) {
                let list = misses
                    .entry(format!("{} (false positive)", f.2))
                    .or_default();
                if list.len() < 12 {
                    list.push(text.get(f.0..f.1).unwrap_or("").to_string());
                }
            }
        }
    }
    let elapsed = started.elapsed();

    let mut report = String::new();
    let _ = writeln!(
        report,
        "{texts} sentences ({bytes} bytes), scored in {:.0} ms with both scorings (our scan included).\n",
        elapsed.as_secs_f64() * 1000.0
    );
    let _ = writeln!(
        report,
        "| type | labelled | llm_pii precision | llm_pii recall | llm_pii partly found | Presidio precision | Presidio recall | Presidio partly found |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for t in TYPES {
        let o = ours.get(t).copied().unwrap_or_default();
        let p = presidio.get(t).copied().unwrap_or_default();
        let _ = writeln!(
            report,
            "| {t} | {} | {:.3} | {:.3} | {} | {:.3} | {:.3} | {} |",
            o.labelled,
            o.precision(),
            o.recall(),
            o.found_in_part,
            p.precision(),
            p.recall(),
            p.found_in_part
        );
    }
    print!("{report}");
    for (kind, values) in &misses {
        if !values.is_empty() {
            eprintln!("missed or wrong, {kind}: {values:?}");
        }
    }
    if let Some(path) = report_path {
        std::fs::write(&path, report).expect("write the report");
    }
}
