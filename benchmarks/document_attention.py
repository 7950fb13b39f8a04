"""`document_sdpa` now against the kernel of an earlier revision: the project's pretraining step
(benchmarks.pretraining.training_step, packed rows, sparse decoder), the two kernels interleaved in one process
on the same model and rows, on the PubMed abstracts (rows of 1,024) and the clinical mix (rows of 8,192).

The earlier kernel is read from git (`git show REV:modeling/common/attention.py`), so this runs in a clone.

    python -m benchmarks.document_attention --rev 61e221e     # the kernel before the one-split, 4-d change
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AttentionInterface

from benchmarks.common import (
    ROOT,
    arguments,
    bench_model,
    clinical_lengths,
    clinical_notes,
    demo_tokenizer,
    interleaved,
    machine,
    markdown_table,
    median,
    pubmed_abstracts,
    write_json,
)
from benchmarks.pretraining import project_batches, training_step
from modeling.common import attention


def kernel_at(revision: str):
    """document_sdpa_forward as it was at `revision`, taking today's DocumentSpans."""
    source = subprocess.run(
        ["git", "show", f"{revision}:modeling/common/attention.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "attention_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("attention_then", path)
    then = importlib.util.module_from_spec(spec)
    sys.modules["attention_then"] = then  # dataclasses look their module up
    spec.loader.exec_module(then)

    def forward(module, query, key, value, mask, *args, **kwargs):
        if isinstance(mask, attention.DocumentSpans):
            mask = then.DocumentSpans(mask.rows, mask.window)
        return then.document_sdpa_forward(module, query, key, value, mask, *args, **kwargs)

    return forward


def compare(tokenizer, texts: list[str], row_length: int, then, steps: int, warmup: int, label: str = "") -> dict:
    batches = project_batches(tokenizer, texts, row_length, max(1, 8192 // row_length), steps + warmup)
    model = bench_model(tokenizer, "small", max_positions=8192)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def side(kernel):
        def step(i):
            AttentionInterface.register(attention.DOCUMENT_SDPA, kernel)
            return training_step(model, optimizer, batches[i], True, True, attention.DOCUMENT_SDPA)

        return step

    results, _ = interleaved({"then": side(then), "now": side(attention.document_sdpa_forward)}, steps, warmup, label)
    AttentionInterface.register(attention.DOCUMENT_SDPA, attention.document_sdpa_forward)
    return {name: median(r["real_tokens"] / r["seconds"] for r in rows) for name, rows in results.items()}


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--rev", default="61e221e", help="git revision of the earlier kernel")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args(argv)
    attention.register_document_sdpa()
    then = kernel_at(args.rev)
    tokenizer = demo_tokenizer()
    abstracts = pubmed_abstracts(6000)
    rows, figures = [], {}
    for corpus, row_length in (("pubmed", 1024), ("clinical", 8192)):
        texts = abstracts if corpus == "pubmed" else clinical_notes(tokenizer, abstracts, clinical_lengths(300))
        rates = compare(tokenizer, texts, row_length, then, args.steps, args.warmup, f"{corpus} ")
        figures[corpus] = rates
        rows.append([f"{corpus}, rows of {row_length}", f"{rates['then']:,.0f}", f"{rates['now']:,.0f}"])
        rows[-1].append(f"{rates['now'] / rates['then']:.2f}x")
    print(f"machine: {machine()}; earlier kernel: {args.rev}")
    print(markdown_table(["corpus", f"{args.rev} (tokens/s)", "now (tokens/s)", "speed-up"], rows))
    write_json(args.json, {"rev": args.rev, "tokens_per_second": figures})


if __name__ == "__main__":
    main()
