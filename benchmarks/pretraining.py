"""Pretraining throughput: this project's pipeline against the usual Hugging Face ways, on one model.

Real tokens per second of a whole training step (masks built from doc_ids, forward, backward, AdamW
step), where real tokens are document tokens (padding excluded), for:

  project       documents cut at the row length and packed best-fit into rows (modeling.data.packing),
                masked per row (modeling.pretrain.masking.MLMCollator), attention kept inside each document
                (modeling.common.attention; document_sdpa by default, --attention sdpa for dense masks),
                decoder run on masked positions only (sparse prediction)
  run_mlm       run_mlm.py --line_by_line: one document per row, cut at the row length, padded to the
                batch's longest, stock DataCollatorForLanguageModeling, dense decoder
  group_texts   run_mlm.py default: all documents concatenated and cut into full rows (attention
                crosses documents), stock collator, dense decoder
  group_texts+sparse  the same rows with the project's sparse decoder: what document masks cost
  ideal         the project's path on rows that are each exactly one document (nothing to pack, no padding)

    python -m benchmarks.pretraining --mix pubmed --mix clinical
"""

from __future__ import annotations

import itertools

import torch
from transformers import DataCollatorForLanguageModeling

from benchmarks.common import (
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
from modeling.common.attention import DOCUMENT_SDPA, packed_model_inputs
from modeling.data.packing import PackedRow, Packing, plain_backend
from modeling.data.rows import pack_token_lists
from modeling.pretrain.masking import MLMCollator
from modeling.pretrain.model import set_sparse_prediction
from modeling.pretrain.schedules import MaskingSchedule

MASKING = 0.3
ROW_LENGTH = {"pubmed": 1024, "clinical": 8192}  # the demo recipe's rows; the reproduction recipes' rows


def project_batches(tokenizer, texts, row_length: int, rows_per_batch: int, batches: int, seed: int = 0) -> list[dict]:
    """The trainer's rows: documents cut and packed best-fit from their lengths (modeling.data.index), in
    the order given, read as the store's rows are read."""
    ids = [e.ids for e in plain_backend(tokenizer).encode_batch(list(texts), add_special_tokens=False)]
    rows = pack_token_lists(ids, Packing.of(tokenizer, row_length))[: rows_per_batch * batches]
    return mlm_batches(tokenizer, rows, row_length, rows_per_batch, seed)


def exact_rows(tokenizer, texts, row_length: int, count: int) -> list[PackedRow]:
    """Rows that are each one document of exactly row_length tokens (the ideal the packer aims at)."""
    stream = list(itertools.chain.from_iterable(tokenizer(texts, verbose=False)["input_ids"]))
    blocks = [stream[s : s + row_length] for s in range(0, len(stream) - row_length + 1, row_length)][:count]
    return [PackedRow(b, doc_lengths=[row_length], doc_sources=[0], doc_starts=[True]) for b in blocks]


def mlm_batches(tokenizer, rows, row_length, rows_per_batch, seed=0) -> list[dict]:
    for index, row in enumerate(rows):
        row.row_index = index
    collator = MLMCollator(
        tokenizer, Packing.of(tokenizer, row_length), MaskingSchedule(MASKING, MASKING, len(rows)), seed, "benchmark"
    )
    return [collator(rows[s : s + rows_per_batch]) for s in range(0, len(rows) - rows_per_batch + 1, rows_per_batch)]


def line_by_line_batches(tokenizer, texts, row_length: int, docs_per_batch: int, batches: int) -> list[dict]:
    encoded = tokenizer(
        texts[: docs_per_batch * batches],
        truncation=True,
        max_length=row_length,
        return_special_tokens_mask=True,
        verbose=False,
    )
    examples = [dict(zip(encoded, values, strict=True)) for values in zip(*encoded.values(), strict=True)]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASKING)
    return [
        collator(examples[s : s + docs_per_batch]) for s in range(0, len(examples) - docs_per_batch + 1, docs_per_batch)
    ]


def group_texts_batches(tokenizer, texts, row_length: int, rows_per_batch: int, batches: int) -> list[dict]:
    encoded = tokenizer(texts, return_special_tokens_mask=True, verbose=False)
    stream = {key: list(itertools.chain.from_iterable(values)) for key, values in encoded.items()}
    total = len(stream["input_ids"]) // row_length * row_length  # the remainder is dropped, as in run_mlm
    examples = [
        {key: values[s : s + row_length] for key, values in stream.items()} for s in range(0, total, row_length)
    ]
    examples = examples[: rows_per_batch * batches]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASKING)
    return [
        collator(examples[s : s + rows_per_batch]) for s in range(0, len(examples) - rows_per_batch + 1, rows_per_batch)
    ]


def training_step(model, optimizer, batch: dict, packed: bool, sparse: bool, attention: str = "sdpa") -> dict:
    plain = getattr(model, "_orig_mod", model)  # a torch.compile wrapper's model
    set_sparse_prediction(plain, sparse)
    plain.config._attn_implementation = attention  # read by every layer at call time
    if packed:
        real = int((batch["doc_ids"] >= 0).sum())
        inputs = packed_model_inputs(batch, plain.config, plain.dtype)  # masks built inside the step, as in training
    else:
        real = int(batch["attention_mask"].sum())
        inputs = batch
    loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return {"real_tokens": real, "positions": batch["input_ids"].numel()}


def compare(
    tokenizer,
    texts: list[str],
    row_length: int,
    step_tokens: int,
    steps: int,
    warmup: int,
    shape: str,
    attention: str = DOCUMENT_SDPA,
    ablations: bool = False,
    compile_side: bool = False,
    label: str = "",
) -> list[dict]:
    """Each side's median real tokens/s, padding, and ratio of the project to it."""
    batches_needed = steps + warmup
    rows_per_batch = max(1, step_tokens // row_length)
    mean_length = sum(len(ids) for ids in tokenizer(texts[:2000], verbose=False)["input_ids"]) / min(len(texts), 2000)
    docs_per_batch = max(
        1, round(step_tokens / min(mean_length, row_length))
    )  # the same real tokens per step, on average
    project = project_batches(tokenizer, texts, row_length, rows_per_batch, batches_needed)
    group_texts = group_texts_batches(tokenizer, texts, row_length, rows_per_batch, batches_needed)
    data = {  # name: (batches, packed, sparse decoder, attention)
        "project": (project, True, True, attention),
        "run_mlm": (
            line_by_line_batches(tokenizer, texts, row_length, docs_per_batch, batches_needed),
            False,
            False,
            "sdpa",
        ),
        "group_texts": (group_texts, False, False, "sdpa"),
        "group_texts+sparse": (group_texts, False, True, "sdpa"),
        "ideal": (
            mlm_batches(
                tokenizer,
                exact_rows(tokenizer, texts, row_length, rows_per_batch * batches_needed),
                row_length,
                rows_per_batch,
            ),
            True,
            True,
            attention,
        ),
    }
    if ablations:
        other = "sdpa" if attention == DOCUMENT_SDPA else DOCUMENT_SDPA
        data[f"project, {other}"] = (project, True, True, other)
        data["project, dense decoder"] = (project, True, False, attention)
        if row_length < 8192:
            data["project, 8192-token rows"] = (
                project_batches(tokenizer, texts, 8192, max(1, step_tokens // 8192), batches_needed),
                True,
                True,
                attention,
            )
    if compile_side:
        # torch.compile needs fixed shapes: dense masks over fixed rows (per-document loops recompile per layout).
        data["project, sdpa + torch.compile"] = (project, True, True, "sdpa")
    for name, (batches, *_) in data.items():
        if len(batches) < batches_needed:
            raise SystemExit(
                f"{label}{name}: only {len(batches)} batches from {len(texts)} documents; give more documents"
            )
    model = bench_model(tokenizer, shape, max_positions=max(8192, row_length))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-5)
    compiled = torch.compile(model)  # compiles on its first call (a warm-up step); shares the weights
    sides = {
        name: (
            lambda i, b=batches, p=packed, s=sparse, a=attn, m=compiled if "compile" in name else model: training_step(
                m, optimizer, b[i], p, s, a
            )
        )
        for name, (batches, packed, sparse, attn) in data.items()
    }
    results, first_steps = interleaved(sides, steps, warmup, label)
    project = median(r["real_tokens"] / r["seconds"] for r in results["project"])
    figures = []
    for name, steps_done in results.items():
        rate = median(r["real_tokens"] / r["seconds"] for r in steps_done)
        real, positions = sum(r["real_tokens"] for r in steps_done), sum(r["positions"] for r in steps_done)
        figures.append(
            {
                "side": name,
                "step_seconds": median(r["seconds"] for r in steps_done),
                "real_tokens_per_step": real / len(steps_done),
                "padding": 1 - real / positions,
                "tokens_per_second": rate,
                "project_speedup": project / rate,
                "first_step_seconds": first_steps.get(name),
                "documents_apart": "no" if name.startswith("group_texts") else "n/a" if name == "ideal" else "yes",
            }
        )
    return figures


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument(
        "--mix", action="append", choices=sorted(ROW_LENGTH), help="document-length mix (repeatable; default both)"
    )
    parser.add_argument(
        "--shape", default="small", choices=("small", "base"), help="model size (ModernBERT layer pattern)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--step_tokens", type=int, default=8192, help="positions per step (rows x row length)")
    parser.add_argument("--documents", type=int, default=4000, help="documents to draw batches from")
    parser.add_argument("--compile", action="store_true", help="also: the project with sdpa masks under torch.compile")
    parser.add_argument(
        "--attention", default=DOCUMENT_SDPA, help="the project's attention implementation (sdpa: dense document masks)"
    )
    parser.add_argument(
        "--ablations",
        action="store_true",
        help="also: the project with the other CPU attention, with the dense decoder, and PubMed in 8,192-token rows",
    )
    args = parser.parse_args(argv)
    tokenizer = demo_tokenizer()
    print(
        f"machine: {machine()}; model: {args.shape}, vocabulary {len(tokenizer):,}; {int(MASKING * 100)}% masking; "
        f"project attention: {args.attention}"
    )
    abstracts = pubmed_abstracts()
    report = {}
    for mix in args.mix or ["pubmed", "clinical"]:
        texts = (
            abstracts[: args.documents]
            if mix == "pubmed"
            else clinical_notes(tokenizer, abstracts, clinical_lengths(args.documents))
        )
        print(f"\n{mix}: rows of {ROW_LENGTH[mix]} tokens, {args.step_tokens} positions per step")
        figures = compare(
            tokenizer,
            texts,
            ROW_LENGTH[mix],
            args.step_tokens,
            args.steps,
            args.warmup,
            args.shape,
            args.attention,
            args.ablations,
            args.compile and mix == "pubmed",
            label=f"{mix} ",
        )
        report[mix] = figures
        print(
            markdown_table(
                [
                    "side",
                    "documents kept apart",
                    "padding",
                    "real tokens / step",
                    "step (s, median)",
                    "real tokens/s (median)",
                    "project is x faster",
                ],
                [
                    [
                        f["side"],
                        f["documents_apart"],
                        f"{f['padding']:.1%}",
                        f"{f['real_tokens_per_step']:,.0f}",
                        f"{f['step_seconds']:.2f}",
                        f"{f['tokens_per_second']:,.0f}",
                        f"{f['project_speedup']:.2f}",
                    ]
                    for f in figures
                ],
            )
        )
    write_json(args.json, {"benchmark": "pretraining", "args": vars(args), "mixes": report})


if __name__ == "__main__":
    main()
