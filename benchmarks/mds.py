"""Reading MosaicML Streaming (MDS) shards against reading JSONL: the same documents, in one process.

    python -m benchmarks.mds [--copies 2] [--repeats 3] [--json FILE]

The demo's PubMed abstracts (`--copies` times) are written as JSONL and as MDS shards of ~2,000 documents
(tests/mds_shards.py writes them byte by byte from the format's specification): text uncompressed, text with
zstd (ModernBERT's `text` MDS), and token ids with zstd as ModernBERT's tokenized MDS holds them (an int64
`ndarray` column, [CLS] and [SEP] included), the ids made by the demo tokenizer. Two measurements, each the
median of `--repeats` runs, the sides interleaved:
- **read**: every document through the project's reader (`iter_records`), nothing else; documents per second
  and megabytes of input files per second;
- **store**: `prepare_store` into a new store with one process: read, tokenize (text) or check and decode
  (ids, which the store keeps without tokenizing again), split, write; tokens stored per second.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT, arguments, demo_tokenizer, markdown_table, pubmed_abstracts, write_json
from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, iter_records
from modeling.data.store import Store, prepare_store

sys.path.insert(0, str(ROOT / "tests"))  # the MDS writer the tests use

SHARD_DOCUMENTS = 2000


def corpora(tmp: Path, documents: list[str], tokenizer) -> dict[str, SourceSpec]:
    from mds_shards import write_mds

    (tmp / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    text = [{"id": str(i), "text": d} for i, d in enumerate(documents)]
    write_mds(tmp / "mds_text", text, {"id": "str", "text": "str"}, samples_per_shard=SHARD_DOCUMENTS)
    write_mds(tmp / "mds_text_zstd", text, {"id": "str", "text": "str"}, "zstd", SHARD_DOCUMENTS)
    ids = []
    for start in range(0, len(documents), 1000):
        for i, encoded in enumerate(tokenizer(documents[start : start + 1000])["input_ids"]):
            ids.append({"id": str(start + i), "input_ids": np.asarray(encoded, np.int64)})
    write_mds(tmp / "mds_ids_zstd", ids, {"id": "str", "input_ids": "ndarray"}, "zstd", SHARD_DOCUMENTS)
    return {
        "JSONL (text)": SourceSpec("docs", str(tmp / "docs.jsonl"), "jsonl"),
        "MDS text": SourceSpec("docs", str(tmp / "mds_text"), "mds"),
        "MDS text, zstd": SourceSpec("docs", str(tmp / "mds_text_zstd"), "mds"),
        "MDS token ids (int64 ndarray), zstd": SourceSpec("docs", str(tmp / "mds_ids_zstd"), "mds"),
    }


def input_bytes(spec: SourceSpec) -> int:
    path = Path(spec.path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.iterdir())


def read_once(spec: SourceSpec) -> tuple[float, int]:
    started = time.perf_counter()
    count = sum(1 for _ in iter_records(spec, SkipLog(quiet=True), token_ids=True))
    return time.perf_counter() - started, count


def store_once(spec: SourceSpec, tmp: Path, tokenizer) -> tuple[float, int]:
    folder = tmp / "store"
    shutil.rmtree(folder, ignore_errors=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    started = time.perf_counter()
    prepare_store(folder, [spec], 0.002, num_proc=1, part_bytes=1 << 40)
    wall = time.perf_counter() - started
    return wall, Store(folder).manifest.tokens()


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--copies", type=int, default=2, help="times the demo's abstracts are repeated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="only the first N documents (a quick check)")
    args = parser.parse_args(argv)
    tokenizer = demo_tokenizer()
    documents = (pubmed_abstracts() * args.copies)[: args.limit]
    with tempfile.TemporaryDirectory(prefix="mds-bench-") as tmp:
        specs = corpora(Path(tmp), documents, tokenizer)
        reads = {name: [] for name in specs}
        stores = {name: [] for name in specs}
        tokens = {}
        for _ in range(args.repeats):  # interleaved: every side once before any side again
            for name, spec in specs.items():
                wall, count = read_once(spec)
                assert count == len(documents), (name, count)
                reads[name].append(wall)
            for name, spec in specs.items():
                wall, tokens[name] = store_once(spec, Path(tmp), tokenizer)
                stores[name].append(wall)
            assert len(set(tokens.values())) == 1, tokens  # every input gives the same store
        sizes = {name: input_bytes(spec) for name, spec in specs.items()}
    rows, figures = [], {}
    base_read, base_store = statistics.median(reads["JSONL (text)"]), statistics.median(stores["JSONL (text)"])
    for name in specs:
        read, store = statistics.median(reads[name]), statistics.median(stores[name])
        figures[name] = {
            "input_bytes": sizes[name],
            "read_s": read,
            "store_s": store,
            "documents": len(documents),
            "tokens_stored": tokens[name],
        }
        rows.append(
            [
                name,
                f"{sizes[name] / 1e6:.1f}",
                f"{len(documents) / read:,.0f}",
                f"{sizes[name] / 1e6 / read:.0f}",
                f"{base_read / read:.2f}x",
                f"{tokens[name] / store:,.0f}",
                f"{base_store / store:.2f}x",
            ]
        )
    headers = ["input", "MB", "read: docs/s", "read: MB/s", "vs JSONL", "into a store: tokens/s", "vs JSONL"]
    print(f"\n{len(documents):,} documents, medians of {args.repeats} runs, one process:\n")
    print(markdown_table(headers, rows))
    write_json(args.json, {"documents": len(documents), "figures": figures})


if __name__ == "__main__":
    main()
