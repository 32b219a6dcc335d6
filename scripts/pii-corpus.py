"""Builds the PII evaluation corpus from Presidio's own generator, and Presidio's answers on it.

Sentences come from presidio-evaluator's PresidioSentenceFaker (its templates and its fake-person
records, fixed seed): text that this project did not write, labelled by the generator. For every
sentence, Presidio's pattern recognizers for the same entity types (presidio-analyzer, no NLP model)
give their findings, so both detectors are scored on the same text by the same rules.

Output, one JSON object per line: {"text", "gold": [[start, end, type]], "presidio": [[start, end, type]]},
offsets in UTF-8 bytes (what Rust slices), types in llm_pii's names.
usage: pii-corpus.py OUT.jsonl [SENTENCES [SEED]]
"""

import json
import sys

import tldextract

# Presidio's e-mail check asks tldextract for the public-suffix list, which downloads it; the
# snapshot inside the package is used instead, so the corpus is the same offline and every day.
tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpRecognizer,
    PhoneRecognizer,
    UsSsnRecognizer,
)
from presidio_evaluator.data_generator import PresidioSentenceFaker

# Presidio's entity names for the types llm_pii detects with patterns.
TYPES = {
    "EMAIL_ADDRESS": "email",
    "PHONE_NUMBER": "phone",
    "CREDIT_CARD": "credit_card",
    "US_SSN": "us_ssn",
    "IBAN_CODE": "iban",
    "IP_ADDRESS": "ip_address",
}
RECOGNIZERS = [
    EmailRecognizer(),
    PhoneRecognizer(),
    CreditCardRecognizer(),
    UsSsnRecognizer(),
    IbanRecognizer(),
    IpRecognizer(),
]


def byte_offsets(text):
    """Code-point index -> UTF-8 byte offset, for every index 0..len(text)."""
    offsets, at = [], 0
    for ch in text:
        offsets.append(at)
        at += len(ch.encode("utf-8"))
    offsets.append(at)
    return offsets


def main():
    out_path = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 42
    faker = PresidioSentenceFaker(locale="en_US", lower_case_ratio=0.05, random_seed=seed)
    samples = faker.generate_new_fake_sentences(count)
    with open(out_path, "w", encoding="utf-8") as out:
        for sample in samples:
            text = sample.full_text
            at = byte_offsets(text)
            gold = [
                [at[s.start_position], at[s.end_position], TYPES[s.entity_type]]
                for s in sample.spans
                if s.entity_type in TYPES
            ]
            # Other labelled entities (names, addresses, dates, ...) stay in the text: a pattern
            # detector that fires on them is a false positive.
            presidio = []
            for recognizer in RECOGNIZERS:
                for r in recognizer.analyze(text, recognizer.supported_entities, None):
                    if r.entity_type in TYPES and r.score > 0:
                        presidio.append([at[r.start], at[r.end], TYPES[r.entity_type]])
            out.write(json.dumps({"text": text, "gold": gold, "presidio": presidio}) + "\n")


if __name__ == "__main__":
    main()
