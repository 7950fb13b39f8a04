"""The contamination scan's speed: store tokens looked up per core-second, with 1 and 2 processes.

    python -m benchmarks.contamination [--documents 400000] [--eval_documents 6000] [--ngram 13] [--json FILE]

A synthetic store (random token ids written straight to Arrow, log-normal lengths of mean ~300 tokens, shards of
100,000 documents: `benchmarks.store.synthetic_store`) is scanned by `modeling.data.contamination.scan_store` for
the n-grams of an evaluation set of `--eval_documents` documents of 300 tokens, 1% of them copied from the store
so the scan also takes its hit path. A rate is store tokens / (wall seconds x processes), the whole scan counted:
the evaluation table, the processes' start, every shard, the merge. Goal: >= 10M store tokens per core-second.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import arguments, demo_tokenizer, machine, markdown_table, write_json
from benchmarks.store import synthetic_store
from modeling.data.contamination import EvalDocument, EvalNgrams, scan_store

GOAL = 10_000_000


def evaluation_set(store, documents: int, n: int, seed: int = 0) -> EvalNgrams:
    rng = np.random.default_rng(seed)
    split = store.split("synthetic", "train")
    tokens = [rng.integers(10, 8000, 300) for _ in range(documents)]
    for i in range(0, documents, 100):  # 1%: a run of 60 tokens from a store document
        source = split.tokens(int(rng.integers(len(split))))
        tokens[i][:60] = source[:60] if len(source) >= 60 else tokens[i][:60]
    eval_documents = [EvalDocument("synthetic", "test", str(i), f"document {i}") for i in range(documents)]
    return EvalNgrams(eval_documents, tokens, n)


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--documents", type=int, default=400_000, help="store documents (mean ~300 tokens)")
    parser.add_argument("--eval_documents", type=int, default=6000)
    parser.add_argument("--ngram", type=int, default=13)
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    rows, figures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(Path(tmp) / "store", demo_tokenizer(), args.documents, shard_documents=100_000)
        evaluation = evaluation_set(store, args.eval_documents, args.ngram)
        scan_store(store, evaluation, num_proc=1)  # numba compiles (or loads its cache) once, untimed
        for processes in (1, 2):
            report = scan_store(store, evaluation, num_proc=processes)
            rate = report.store_tokens / (report.seconds * report.processes)
            found = sum(1 for d in report.documents if d.ngrams_in_store)
            figures.append(
                {
                    "processes": report.processes,
                    "store_tokens": report.store_tokens,
                    "eval_ngrams": int(len(evaluation.keys)),
                    "seconds": report.seconds,
                    "tokens_per_core_second": rate,
                    "eval_documents_found": found,
                }
            )
            rows.append(
                [
                    report.processes,
                    f"{report.store_tokens:,}",
                    f"{len(evaluation.keys):,}",
                    f"{report.seconds:.2f}",
                    f"{rate:,.0f}",
                    f"{found:,} of {args.eval_documents:,}",
                    "yes" if rate >= GOAL else "no",
                ]
            )
    headers = ["processes", "store tokens", "eval n-grams", "wall (s)", "tokens per core-second", "found", ">= 10M"]
    print(markdown_table(headers, rows))
    write_json(args.json, {"ngram": args.ngram, "runs": figures})


if __name__ == "__main__":
    main()
