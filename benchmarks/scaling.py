"""How the cost of a pretraining step grows: with the row length (512 to 8,192 tokens, the same
8,192 positions per step) and with the number of documents packed into a row.

Each step is the project's: document masks from doc_ids (modeling.common.attention), forward with sparse
prediction, backward, AdamW. Rows are random token ids (speed does not depend on what they say);
the points of one sweep are interleaved and their medians reported.

    python -m benchmarks.scaling
"""

from __future__ import annotations

import torch

from benchmarks.common import (
    arguments,
    bench_model,
    demo_tokenizer,
    interleaved,
    machine,
    markdown_table,
    median,
    write_json,
)
from benchmarks.pretraining import mlm_batches, training_step
from modeling.common.attention import DOCUMENT_SDPA
from modeling.data.packing import PackedRow


def synthetic_rows(
    tokenizer, vocab: int, row_length: int, rows: int, documents_per_row: int, seed: int
) -> list[PackedRow]:
    generator = torch.Generator().manual_seed(seed)
    base, extra = divmod(row_length, documents_per_row)
    lengths = [base + (1 if d < extra else 0) for d in range(documents_per_row)]
    out = []
    for _ in range(rows):
        ids = []
        for n in lengths:
            ids += [
                tokenizer.cls_token_id,
                *torch.randint(10, vocab, (n - 2,), generator=generator).tolist(),
                tokenizer.sep_token_id,
            ]
        out.append(PackedRow(ids, lengths, doc_sources=[0] * len(lengths), doc_starts=[True] * len(lengths)))
    return out


def sweep(
    model,
    optimizer,
    tokenizer,
    points: dict[str, tuple[int, int, int]],
    attentions: list[str],
    steps: int,
    warmup: int,
    label: str,
) -> dict:
    """points: name -> (row length, rows per step, documents per row); every point under every attention."""
    vocab = len(tokenizer)
    sides = {}
    for name, (row_length, rows, documents) in points.items():
        batches = mlm_batches(
            tokenizer,
            synthetic_rows(tokenizer, vocab, row_length, rows * (steps + warmup), documents, seed=row_length),
            row_length,
            rows,
        )
        for attention in attentions:
            sides[f"{name} {attention}"] = lambda i, b=batches, a=attention: training_step(
                model, optimizer, b[i], True, True, a
            )
    results, _ = interleaved(sides, steps, warmup, label)
    return {
        name: {
            "step_seconds": median(r["seconds"] for r in done),
            "tokens_per_second": median(r["real_tokens"] / r["seconds"] for r in done),
        }
        for name, done in results.items()
    }


def table(first_header: str, points: dict, figures: dict, attentions: list[str], extra) -> str:
    """One row per point: extra columns, then per attention the median step and its growth over the first point."""
    first = next(iter(points))
    headers = [first_header, *extra[0]]
    for attention in attentions:
        headers += [f"{attention}: step (s)", f"{attention}: x first"]
    rows = []
    for name in points:
        row = [name, *extra[1](name)]
        for attention in attentions:
            step = figures[f"{name} {attention}"]["step_seconds"]
            row += [f"{step:.2f}", f"{step / figures[f'{first} {attention}']['step_seconds']:.2f}"]
        rows.append(row)
    return markdown_table(headers, rows)


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument("--shape", default="small", choices=("small", "base"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--step_tokens", type=int, default=8192)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument(
        "--documents", type=int, nargs="+", default=[1, 4, 16, 64], help="documents per row of the longest length"
    )
    parser.add_argument("--attentions", nargs="+", default=["sdpa", DOCUMENT_SDPA])
    args = parser.parse_args(argv)
    tokenizer = demo_tokenizer()
    model = bench_model(tokenizer, args.shape, max_positions=max(args.lengths))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    print(f"machine: {machine()}; model: {args.shape}; {args.step_tokens} tokens per step")
    lengths = {str(n): (n, max(1, args.step_tokens // n), 1) for n in args.lengths}
    by_length = sweep(model, optimizer, tokenizer, lengths, args.attentions, args.steps, args.warmup, "row length ")
    print(
        table(
            "row length (one document per row)",
            lengths,
            by_length,
            args.attentions,
            (["rows per step"], lambda name: [lengths[name][1]]),
        )
    )
    row = max(args.lengths)
    documents = {str(d): (row, max(1, args.step_tokens // row), d) for d in args.documents}
    by_documents = sweep(
        model, optimizer, tokenizer, documents, args.attentions, args.steps, args.warmup, "documents per row "
    )
    print(
        table(
            f"documents per {row}-token row",
            documents,
            by_documents,
            args.attentions,
            (["tokens per document"], lambda name: [row // int(name)]),
        )
    )
    write_json(
        args.json, {"benchmark": "scaling", "args": vars(args), "by_length": by_length, "by_documents": by_documents}
    )


if __name__ == "__main__":
    main()
