#!/usr/bin/env bash
# llm_pii's detectors vs Presidio's pattern recognizers on presidio-evaluator's generated corpus
# (scripts/pii-corpus.py; fixed seed, pinned packages): writes target/pii-eval/corpus.jsonl, then
# bench/pii-eval.md. The packages go into their own virtualenv, target/pii-eval/venv (about 1 GB:
# presidio-evaluator brings spaCy and transformers, though no model is downloaded or used).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/target/pii-eval
venv=$out/venv
mkdir -p "$out"
# The generator's output depends on these versions (templates, fake records, sampling).
pins=(presidio-evaluator==0.3.2 presidio-analyzer==2.2.366 Faker==40.63.0 numpy==2.4.6 pandas==3.1.1
      tldextract==5.4.0 phonenumbers==9.0.43)
if [[ ! -f $venv/.pins ]] || [[ $(cat "$venv/.pins") != "${pins[*]}" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "${pins[@]}"
  echo "${pins[*]}" > "$venv/.pins"
fi
PYTHONHASHSEED=0 "$venv/bin/python" "$root/scripts/pii-corpus.py" "$out/corpus.jsonl" "${PII_EVAL_SENTENCES:-10000}" \
  2> "$out/generator.log"
cargo run -q --release -p llm-bench --bin pii-eval -- "$out/corpus.jsonl" "$out/table.md" 2> "$out/misses.txt"
echo "misses and false positives: $out/misses.txt"
