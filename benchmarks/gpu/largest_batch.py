"""The largest per-device batch of 8,192-token rows that trains, measured, next to the computed one.

One optimizer step of the project's training (packed rows masked 30% by MLMCollator, the varlen backend or its
fallback, sparse decoder, bf16 autocast over fp32 weights, AdamW), at batch sizes doubling from 1 until one runs out
of GPU memory, then bisected. Not through the Trainer: the memory is the model's, the optimizer's and the
activations', which the Trainer does not change. The computed figure is benchmarks.memory's (DDP, this card's
memory, 10% kept back). ModernBERT-base first, -large if the part's time allows.
"""

from __future__ import annotations

import time

import torch

from benchmarks.gpu.correctness import packed_batch
from benchmarks.gpu.setting import (
    MODERNBERT_LARGE,
    PartContext,
    Setting,
    free_memory,
    model_config,
    synchronize,
    synthetic_tokenizer,
)
from modeling.common.attention import VARLEN, known_attention, packed_model_inputs
from modeling.data.packing import Packing
from modeling.pretrain.masking import MLMCollator
from modeling.pretrain.model import set_sparse_prediction
from modeling.pretrain.schedules import MaskingSchedule


def largest_that_fits(fits, cap: int) -> tuple[int, bool]:
    """The largest batch size n <= cap with fits(n) (assumed monotone): doubling, then bisection. Returns it and
    whether the cap, not the memory, ended the search."""
    good, bad, size = 0, None, 1
    while size <= cap:
        if fits(size):
            good, size = size, size * 2
        else:
            bad = size
            break
    if bad is None:
        if good < cap and fits(cap):
            good = cap
        return good, True
    while bad - good > 1:
        middle = (good + bad) // 2
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, False


def search(ctx: PartContext, name: str, shape: dict) -> dict:
    setting = ctx.setting
    tokenizer = synthetic_tokenizer(setting)
    torch.manual_seed(0)
    from transformers import ModernBertForMaskedLM

    with torch.device(setting.device):
        model = ModernBertForMaskedLM._from_config(
            model_config(setting, shape), attn_implementation=known_attention(VARLEN, setting.device)
        )
    set_sparse_prediction(model, True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=1e-5)
    packed, _ = packed_batch(setting, setting.row_length, 8)
    collator = MLMCollator(
        tokenizer, Packing.of(tokenizer, setting.row_length), MaskingSchedule(0.3, 0.3, 10**6), 0, "largest"
    )
    tried: dict[int, dict] = {}

    def fits(size: int) -> bool:
        if not ctx.enough_time(f"{name}, batch {size}", 5 if setting.on_gpu else 1):
            raise TimeoutError
        rows = [packed[i % len(packed)] for i in range(size)]
        for i, row in enumerate(rows):
            row.row_index = i
        try:
            batch = {k: v.to(setting.device) for k, v in collator(rows).items()}
            if setting.on_gpu:
                torch.cuda.reset_peak_memory_stats()
            started = time.perf_counter()
            with torch.autocast(setting.device, torch.bfloat16, enabled=setting.on_gpu):
                loss = model(**packed_model_inputs(batch, model.config, model.dtype)).loss
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(setting)
            real = int((batch["doc_ids"] >= 0).sum())
            tried[size] = {
                "seconds": time.perf_counter() - started,
                "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if setting.on_gpu else None,
                "tokens_per_second": real / (time.perf_counter() - started),
            }
            return True
        except RuntimeError as error:  # torch.cuda.OutOfMemoryError, or a CUDA error that says the same
            if "out of memory" not in str(error):
                raise
            tried[size] = None
            return False
        finally:
            loss = batch = None  # noqa: F841 (what the step held goes before the cache is emptied)
            optimizer.zero_grad(set_to_none=True)
            free_memory(setting)

    try:
        largest, capped = largest_that_fits(fits, setting.largest_batch_cap)
        cut_short = False
    except TimeoutError:
        fitted = [size for size, result in tried.items() if result]
        largest, capped, cut_short = max(fitted, default=0), False, True
    at_largest = tried.get(largest) or {}
    return {
        "model": name,
        "attention": known_attention(VARLEN, setting.device),
        "largest_batch": largest,
        "bound": "the search's cap" if capped else "time" if cut_short else "GPU memory",
        "tried": sorted(tried),
        "peak_gb": at_largest.get("peak_gb"),
        "tokens_per_second": at_largest.get("tokens_per_second"),
        "computed": computed_largest(setting, name),
    }


def computed_largest(setting: Setting, name: str) -> int | None:
    """benchmarks.memory's largest batch for DDP on this card's memory (10% kept back); GPU sizes only."""
    if not setting.on_gpu:
        return None
    from benchmarks import memory

    gpu_gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    figures = memory.figures(name, ranks=1, gpu_gb=gpu_gb, reserve=0.1, sequence_length=setting.row_length, masking=0.3)
    return figures["engines"]["DDP"]["largest_batch"]


def run(ctx: PartContext) -> None:
    setting = ctx.setting
    models = [("ModernBERT-base", setting.model)]
    if setting.on_gpu:
        models.append(("ModernBERT-large", MODERNBERT_LARGE))
    for name, shape in models:
        if ctx.enough_time(name, 15 if setting.on_gpu else 2):
            with ctx.guard(name):
                ctx.add(search(ctx, name if setting.on_gpu else f"{name} (tiny stand-in)", shape))
            free_memory(setting)  # the model and optimizer of the search go before the next one's


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["model", "attention", "largest batch (measured)", "bound by", "computed (benchmarks.memory)"]
    headers += ["peak GB at it", "tokens/s at it"]
    return headers, [
        [
            r["model"],
            r["attention"],
            str(r["largest_batch"]),
            r["bound"],
            str(r["computed"]) if r["computed"] is not None else "-",
            f"{r['peak_gb']:.1f}" if r["peak_gb"] else "-",
            f"{r['tokens_per_second']:,.0f}" if r["tokens_per_second"] else "-",
        ]
        for r in rows
    ]
