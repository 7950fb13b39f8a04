"""Data pipeline: how fast one core prepares text into the token store and reads it back as masked
training batches, whether memory stays flat as the corpus grows, and how that compares with what a GPU
consumes.

Both halves are the training ones, run in a child process pinned to one thread, over a corpus of PubMed
abstracts and over one 10x larger: prepare (modeling.data.store.prepare_part: read jsonl, split off
held-out documents, tokenize, write Arrow), then read one epoch (modeling.data.rows: index, rows from the
memory-mapped shards, then modeling.pretrain.masking.MLMCollator). Tokens per core-second = tokens / CPU
seconds (user + system) of each half; peak memory is the child's whole peak resident set.

The GPU side is computed, not measured: model FLOPs per token of ModernBERT-base pretraining
(forward + backward = 3 x forward; matmuls, attention, and the decoder on masked positions only)
against the H100 SXM's dense bf16 peak (989 TFLOP/s), at that peak and at 40% utilisation.

    python -m benchmarks.data_pipeline
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, arguments, machine, markdown_table, pubmed_abstracts, write_json

H100_BF16_DENSE_PEAK = 989e12
ASSUMED_MFU = 0.40
MODERNBERT_BASE = dict(hidden=768, intermediate=1152, layers=22, global_every=3, window=128, vocab=50368)


def flops_per_token(
    row_length: int,
    masking: float = 0.3,
    context: float | None = None,
    hidden=768,
    intermediate=1152,
    layers=22,
    global_every=3,
    window=128,
    vocab=50368,
) -> float:
    """Training FLOPs per token (fwd + bwd = 3 x fwd, 2 FLOPs per multiply-add). `context`: keys each
    query attends to in global layers (default: the whole row, as dense or block masks without skipping)."""
    matmuls = layers * (4 * hidden * hidden + 3 * hidden * intermediate)  # Wqkv + Wo, GLU Wi (2x) + Wo
    decoder = masking * (hidden * hidden + hidden * vocab)  # head + decoder, masked positions only
    global_layers = len(range(0, layers, global_every))
    context = row_length if context is None else context
    attention = 2 * hidden * (global_layers * context + (layers - global_layers) * min(window, row_length))
    return 3 * 2 * (matmuls + decoder + attention)


def child(corpus: str, tokenizer_dir: str, row_length: int) -> dict:
    """Prepare `corpus` into a store, then read one epoch of masked batches from it, on one thread."""
    import shutil

    from transformers import AutoTokenizer

    from modeling.data.index import PhaseIndex
    from modeling.data.packing import Packing
    from modeling.data.rows import PhaseRows
    from modeling.data.sources import SourceSpec
    from modeling.data.store import Part, Store, StoreFolder, write_manifest
    from modeling.data.store import prepare_part as prepare
    from modeling.pretrain.masking import MLMCollator
    from modeling.pretrain.schedules import MaskingSchedule

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    folder = StoreFolder(Path(corpus).with_suffix(".store"))
    shutil.copytree(tokenizer_dir, folder.tokenizer_dir)
    spec, part = SourceSpec("corpus", corpus, "jsonl"), Part(0, "corpus", 0, (corpus,))
    cpu_start = time.process_time()
    prepare(folder, spec, part, holdout_fraction=0.0)
    prepare_cpu = time.process_time() - cpu_start
    write_manifest(folder, [spec], [part], 0.0, {})
    store = Store(folder.folder)
    cpu_start, start = time.process_time(), time.perf_counter()  # reading only: index, rows, collate, mask
    packing = Packing.of(tokenizer, row_length)
    index = PhaseIndex(store, ["corpus"], None, seed=0, phase="benchmark", packing=packing)
    rows = PhaseRows(folder.folder, index, index.rows_in_epochs(1))
    collator = MLMCollator(tokenizer, packing, MaskingSchedule(0.3, 0.3, 1), 0, "benchmark")
    tokens = documents = batches = 0
    for first in range(0, len(rows), 8):
        batch_rows = [rows[i] for i in range(first, min(first + 8, len(rows)))]
        tokens += sum(len(r.input_ids) for r in batch_rows)
        documents += sum(sum(r.doc_starts) for r in batch_rows)
        collator(batch_rows)
        batches += 1
    wall, read_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "tokens": tokens,
        "documents": documents,
        "batches": batches,
        "wall_seconds": wall,
        "prepare_cpu_seconds": prepare_cpu,
        "read_cpu_seconds": read_cpu,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def run_child(corpus: Path, row_length: int, tokenizer_dir: str) -> dict:
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "RAYON_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.data_pipeline",
            "--child",
            str(corpus),
            tokenizer_dir,
            "--row_length",
            str(row_length),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def write_corpus(path: Path, abstracts: list[str], documents: int):
    with open(path, "w") as f:
        for text in itertools.islice(itertools.cycle(abstracts), documents):
            f.write(json.dumps({"text": text}) + "\n")


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument(
        "--documents", type=int, default=3000, help="documents in the smaller corpus (the larger has 10x)"
    )
    parser.add_argument("--row_length", type=int, default=1024)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # internal: CORPUS TOKENIZER_DIR, one measurement
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.row_length)))
        return
    from benchmarks.common import demo_tokenizer

    tokenizer = demo_tokenizer()
    abstracts = pubmed_abstracts()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        runs = {}
        for name, documents in (("1x", args.documents), ("10x", 10 * args.documents)):
            corpus = Path(tmp) / f"corpus_{name}.jsonl"
            write_corpus(corpus, abstracts, documents)
            runs[name] = run_child(corpus, args.row_length, tmp) | {"corpus_mb": corpus.stat().st_size / 1e6}
            print(f"  {name}: {runs[name]['tokens']:,} tokens", flush=True)
    rows = [
        [
            name,
            f"{r['corpus_mb']:.0f}",
            f"{r['documents']:,}",
            f"{r['tokens']:,}",
            f"{r['tokens'] / r['prepare_cpu_seconds']:,.0f}",
            f"{r['tokens'] / r['read_cpu_seconds']:,.0f}",
            f"{r['peak_rss_mb']:,.0f}",
        ]
        for name, r in runs.items()
    ]
    print(
        markdown_table(
            [
                "corpus",
                "MB",
                "documents",
                "tokens",
                "prepare: tokens per core-second",
                "read + collate + mask: tokens per core-second",
                "peak RSS MB",
            ],
            rows,
        )
    )
    per_core = runs["10x"]["tokens"] / runs["10x"]["read_cpu_seconds"]
    memory_ratio = runs["10x"]["peak_rss_mb"] / runs["1x"]["peak_rss_mb"]
    print(f"peak memory 10x / 1x corpus: {memory_ratio:.3f}")
    gpu_rows = []
    for row_length in (1024, 8192):
        flops = flops_per_token(row_length)
        for label, mfu in (("peak (upper bound)", 1.0), (f"{ASSUMED_MFU:.0%} MFU", ASSUMED_MFU)):
            consumed = H100_BF16_DENSE_PEAK * mfu / flops
            gpu_rows.append([row_length, f"{flops / 1e9:.2f}", label, f"{consumed:,.0f}", f"{consumed / per_core:.1f}"])
    print("\nModernBERT-base pretraining on one H100 (computed from FLOPs, not measured):")
    print(
        markdown_table(
            ["row length", "GFLOP per token", "H100 at", "tokens/s consumed", "cores reading the store needed"],
            gpu_rows,
        )
    )
    write_json(
        args.json,
        {
            "benchmark": "data_pipeline",
            "args": vars(args),
            "runs": runs,
            "memory_ratio": memory_ratio,
            "tokens_per_core_second": per_core,
            "gpu": gpu_rows,
        },
    )


if __name__ == "__main__":
    main()
