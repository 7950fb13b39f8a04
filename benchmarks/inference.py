"""Inference throughput: embedding many notes of very different lengths (modeling.inference).

  padded   the usual way: notes in file order, 16 per batch, padded to the batch's longest (stock sdpa)
  packed   the project's way: notes sorted longest first, packed into rows as long as each batch's
           longest note, attention kept inside each note (document_sdpa on CPUs)
  packed, sdpa masks   the same rows with dense document masks: what the attention backend adds

Both sides tokenize, run the encoder and pool (mean) the same notes end to end; the outputs are
compared (max abs difference). With --paper_sets, the ModernBERT paper's synthetic inputs (random
ids; fixed 512 / 8,192 tokens, variable ~N(256, 64) <= 512 and ~N(4096, 1024) <= 8,192) are timed
with packed batches and reported in thousands of tokens per second.

    python -m benchmarks.inference --mix clinical --mix pubmed
    python -m benchmarks.inference --shape base --device cuda --dtype bfloat16 \
        --attn_implementation flash_attention_2 --paper_sets
"""

from __future__ import annotations

import random
import time

import torch
from transformers import ModernBertModel

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
from modeling.common.attention import DOCUMENT_SDPA
from modeling.data.packers import packed_batches
from modeling.inference.encoder import NoteEncoder, TokenizedNotes, padded_batches

MAX_LENGTH = 8192


def positions(batches: list[list[list[int]]], lengths: list[int]) -> int:
    """Tensor positions the encoder computes: per batch, rows x the longest row."""
    return sum(len(rows) * max(sum(lengths[i] for i in row) for row in rows) for rows in batches)


def encoder_for(tokenizer, args) -> NoteEncoder:
    mlm = bench_model(tokenizer, args.shape, MAX_LENGTH, args.attn_implementation)
    encoder = ModernBertModel(mlm.config)
    encoder.load_state_dict(mlm.model.state_dict())
    encoder.to(device=args.device, dtype=getattr(torch, args.dtype))
    return NoteEncoder(encoder, tokenizer, MAX_LENGTH, pooling="mean")


def compare(
    encoder: NoteEncoder,
    texts: list[str],
    repeats: int,
    batch_tokens: int,
    notes_per_batch: int,
    label: str,
    attention: str = DOCUMENT_SDPA,
) -> dict:
    """padded (stock sdpa, 2-D padding masks), packed with `attention`, and packed with dense sdpa masks."""
    outputs = {}
    config = encoder.encoder.config

    def run(side, batching, implementation):
        def step(i):
            config._attn_implementation = implementation  # read by every layer at call time
            out, notes = encoder.encode(texts, batching, batch_tokens, notes_per_batch)
            outputs[side], outputs["lengths"] = out, notes.lengths()
            if encoder.device.type == "cuda":
                torch.cuda.synchronize()
            return {"tokens": sum(notes.lengths())}

        return step

    sides = {"padded": run("padded", "padded", "sdpa"), "packed": run("packed", "packed", attention)}
    if attention != "sdpa":
        sides["packed, sdpa masks"] = run("packed, sdpa masks", "packed", "sdpa")
    results, _ = interleaved(sides, repeats, warmup=1, label=label)
    lengths = outputs["lengths"]
    tokens = sum(lengths)
    figures = {
        "notes": len(texts),
        "tokens": tokens,
        "mean_tokens": tokens / len(texts),
        "max_tokens": max(lengths),
        "sides": {},
    }
    for side in sides:
        if side == "padded":
            batches = padded_batches(lengths, notes_per_batch)
        else:  # as the encoder lays each batch out for the side's backend
            config._attn_implementation = attention if side == "packed" else "sdpa"
            batches = [encoder.layout(rows) for rows in packed_batches(lengths, batch_tokens)]
        seconds = median(r["seconds"] for r in results[side])
        figures["sides"][side] = {
            "seconds": seconds,
            "padding": 1 - tokens / positions(batches, lengths),
            "tokens_per_second": tokens / seconds,
            "speedup": median(r["seconds"] for r in results["padded"]) / seconds,
            "max_abs_diff": float((outputs["padded"].float() - outputs[side].float()).abs().max()),
        }
    return figures


def paper_sets(seed: int = 0) -> dict[str, list[int]]:
    """Lengths of the ModernBERT paper's inference sets (8,192 documents of up to 512 tokens, 2,048 of up to 8,192)."""
    rng = random.Random(seed)
    variable = lambda n, mean, std, high: [min(high, max(16, round(rng.gauss(mean, std)))) for _ in range(n)]  # noqa: E731
    return {
        "fixed 512": [512] * 8192,
        "variable ~256": variable(8192, 256, 64, 512),
        "fixed 8192": [8192] * 2048,
        "variable ~4096": variable(2048, 4096, 1024, 8192),
    }


def time_paper_sets(encoder: NoteEncoder, batch_tokens: int, scale: float) -> list[list]:
    rows, vocab = [], encoder.model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    for name, lengths in paper_sets().items():
        lengths = lengths[: max(1, int(len(lengths) * scale))]
        ids = [
            [
                encoder.tokenizer.cls_token_id,
                *torch.randint(10, vocab - 64, (n - 2,), generator=generator).tolist(),
                encoder.tokenizer.sep_token_id,
            ]
            for n in lengths
        ]
        encoder.encode_tokenized(TokenizedNotes(ids[:2], [False, False]), "packed", batch_tokens)  # warm-up
        start = time.perf_counter()
        encoder.encode_tokenized(TokenizedNotes(ids, [False] * len(ids)), "packed", batch_tokens)
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        rows.append([name, len(lengths), f"{sum(lengths):,}", f"{seconds:.2f}", f"{sum(lengths) / seconds / 1000:.1f}"])
    return rows


def main(argv=None):
    parser = arguments(__doc__)
    parser.add_argument(
        "--mix", action="append", choices=("clinical", "pubmed"), help="document-length mix (repeatable; default both)"
    )
    parser.add_argument("--notes", type=int, default=96, help="notes per mix")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes over the notes per side")
    parser.add_argument("--shape", default="small", choices=("small", "base"))
    parser.add_argument("--batch_tokens", type=int, default=16384, help="packed: positions per batch")
    parser.add_argument("--notes_per_batch", type=int, default=16, help="padded: notes per batch")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument(
        "--attn_implementation",
        default="sdpa" if torch.cuda.is_available() else DOCUMENT_SDPA,
        help="for packed batches (padded batches always use stock sdpa)",
    )
    parser.add_argument(
        "--paper_sets", action="store_true", help="also time the ModernBERT paper's synthetic sets (packed)"
    )
    parser.add_argument(
        "--paper_scale", type=float, default=1.0, help="share of each paper set to run (CPUs: e.g. 0.01)"
    )
    args = parser.parse_args(argv)
    tokenizer = demo_tokenizer()
    encoder = encoder_for(tokenizer, args)
    print(f"machine: {machine()}; encoder: {args.shape}, {args.dtype}, {args.attn_implementation}")
    abstracts = pubmed_abstracts()
    report, rows = {}, []
    for mix in args.mix or ["clinical", "pubmed"]:
        texts = (
            abstracts[: args.notes]
            if mix == "pubmed"
            else clinical_notes(tokenizer, abstracts, clinical_lengths(args.notes, seed=1))
        )
        f = compare(
            encoder, texts, args.repeats, args.batch_tokens, args.notes_per_batch, f"{mix} ", args.attn_implementation
        )
        report[mix] = f
        for side, g in f["sides"].items():
            rows.append(
                [
                    mix,
                    f"{f['notes']} notes, mean {f['mean_tokens']:,.0f} / max {f['max_tokens']:,} tokens",
                    side,
                    f"{g['padding']:.1%}",
                    f"{g['seconds']:.2f}",
                    f"{g['tokens_per_second']:,.0f}",
                    f"{g['speedup']:.2f}",
                    f"{g['max_abs_diff']:.1e}",
                ]
            )
    print(
        markdown_table(
            [
                "mix",
                "notes",
                "batching",
                "padding",
                "seconds (median)",
                "tokens/s",
                "x padded",
                "max abs diff vs padded",
            ],
            rows,
        )
    )
    if args.paper_sets:
        paper = time_paper_sets(encoder, args.batch_tokens, args.paper_scale)
        report["paper_sets"] = paper
        print(markdown_table(["set", "documents", "tokens", "seconds", "kTok/s"], paper))
    write_json(args.json, {"benchmark": "inference", "args": vars(args), "results": report})


if __name__ == "__main__":
    main()
