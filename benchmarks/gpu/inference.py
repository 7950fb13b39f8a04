"""Inference on the ModernBERT paper's synthetic length sets: the project's packed NoteEncoder against padded
batches, next to the paper's RTX 4090 figures for ModernBERT-base.

Sets (benchmarks.inference.paper_sets, random ids): fixed 512, variable ~N(256, 64) <= 512, fixed 8,192 and
variable ~N(4096, 1024) <= 8,192; a share of each is run (every document would take minutes). Both sides embed the
same documents end to end (encoder + mean pooling) in bf16 weights:
  packed   modeling.inference.encoder.NoteEncoder: longest first, documents packed into rows (one row per batch on
           the per-document backends), attention within each document (varlen, or its fallback)
  padded   documents in order, batches padded to their longest, stock sdpa with the padding mask
Batches hold up to BATCH_TOKENS positions. The paper's 4090 figures: 148.1 / ~147 / 123.7 / ~134 thousand
tokens per second (fixed 512 / variable ~256 / fixed 8,192 / variable ~4,096).
"""

from __future__ import annotations

import time

import torch

from benchmarks.gpu.setting import PartContext, model_config, random_documents, synchronize, synthetic_tokenizer
from benchmarks.inference import paper_sets
from modeling.common.attention import VARLEN, known_attention
from modeling.inference.encoder import NoteEncoder, TokenizedNotes

PAPER_4090_KTOKENS = {"fixed 512": 148.1, "variable ~256": 147.0, "fixed 8192": 123.7, "variable ~4096": 134.0}
BATCH_TOKENS = {"gpu": 65536, "cpu": 2048}


def encoder(ctx: PartContext) -> NoteEncoder:
    from transformers import ModernBertModel

    setting = ctx.setting
    torch.manual_seed(0)
    with torch.device(setting.device):
        model = ModernBertModel._from_config(
            model_config(setting), attn_implementation=known_attention(VARLEN, setting.device)
        )
    dtype = torch.bfloat16 if setting.on_gpu else torch.float32
    return NoteEncoder(model.to(dtype), synthetic_tokenizer(setting), setting.row_length, pooling="mean")


def run(ctx: PartContext) -> None:
    setting = ctx.setting
    notes = encoder(ctx)
    packed_attention = notes.encoder.config._attn_implementation
    batch_tokens = BATCH_TOKENS[setting.mode]
    if not setting.on_gpu:
        ctx.note(f"cpu mode: the sets' lengths scaled by {setting.row_length}/8192, a few documents of each")
    for name, lengths in paper_sets().items():
        lengths = [setting.scaled(n) for n in lengths[: max(2, int(len(lengths) * setting.inference_scale))]]
        ids = random_documents(setting, lengths, seed=1)
        tokenized = TokenizedNotes(ids, [False] * len(ids))
        outputs = {}
        for batching in ("packed", "padded"):
            if not ctx.enough_time(f"{name}, {batching}", 8 if setting.on_gpu else 1):
                continue
            attention = packed_attention if batching == "packed" else "sdpa"
            notes.encoder.set_attn_implementation(attention)
            per_batch = max(1, batch_tokens // max(lengths))
            warm = TokenizedNotes(ids[:4], [False] * 4)
            try:
                notes.encode_tokenized(warm, batching, batch_tokens, per_batch)  # kernels chosen, memory reserved
                synchronize(setting)
                started = time.perf_counter()
                outputs[batching] = notes.encode_tokenized(tokenized, batching, batch_tokens, per_batch)
                synchronize(setting)
            except Exception as error:  # this set and batching only
                ctx.fail(f"{name}, {batching}", error)
                continue
            seconds = time.perf_counter() - started
            rate = sum(lengths) / seconds
            paper = PAPER_4090_KTOKENS[name]
            ctx.add(
                {
                    "set": name,
                    "batching": batching,
                    "attention": attention,
                    "documents": len(lengths),
                    "tokens": sum(lengths),
                    "seconds": seconds,
                    "ktokens_per_second": rate / 1000,
                    "paper_4090_ktokens_per_second": paper,
                    "vs_paper": rate / 1000 / paper if setting.on_gpu else None,
                    "max_abs_diff_vs_padded": None,
                }
            )
        if len(outputs) == 2:  # the same embeddings either way (bf16 on the GPU)
            ctx.rows[-2]["max_abs_diff_vs_padded"] = float((outputs["packed"] - outputs["padded"]).abs().max())
            ctx.save()


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["set", "batching", "attention", "documents", "tokens", "kTok/s", "RTX 4090 (paper)", "x paper"]
    headers += ["max abs diff vs padded"]
    return headers, [
        [
            r["set"],
            r["batching"],
            r["attention"],
            f"{r['documents']:,}",
            f"{r['tokens']:,}",
            f"{r['ktokens_per_second']:,.1f}",
            f"{r['paper_4090_ktokens_per_second']}",
            f"{r['vs_paper']:.2f}" if r["vs_paper"] else "-",
            f"{r['max_abs_diff_vs_padded']:.1e}" if r["max_abs_diff_vs_padded"] is not None else "-",
        ]
        for r in rows
    ]
