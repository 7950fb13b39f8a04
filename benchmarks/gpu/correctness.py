"""Correctness of every attention backend present: a packed document gives what it gives alone.

  logits     ModernBERT-base's shape, random init; packed rows of 8,192 tokens with clinical-like document lengths
             (several documents per row, documents longer than the local window, padding at row ends). Every
             document's logits from the packed rows are compared with the same document run alone through stock
             transformers (sdpa, no mask), in fp32 and under bf16 autocast.
  gradients  a smaller shape (rows of 2,048): MLM loss and every gradient of a packed batch against sdpa with
             dense document masks in fp32.

Backends in order of what the GPU must prove: varlen (the kernel the project adds), sdpa and document_sdpa,
flash_attention_2 where installed, flex_attention last (it compiles kernels first). Each check is its own row; one
that raises is a failed row with its error, and the others still run.

Tolerances. fp32 paths must agree within FP32_TOLERANCE (reductions in another order only). bf16 is judged
against bf16's own error, measured in the same run: the largest difference between the documents alone under
bf16 autocast and alone in fp32 (the "bf16 noise"); packed must stay within twice it. A loss is one number, so its
bf16 tolerance is also at least one bf16 rounding step of it (2^-8 relative). varlen and flash-attn take fp16/bf16
only, so their fp32 rows run the attention in bf16 and get the bf16 tolerances too.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from benchmarks.gpu.setting import (
    PartContext,
    Setting,
    attention_backends,
    describe,
    free_memory,
    model_config,
    random_documents,
    synchronize,
    synthetic_tokenizer,
)
from modeling.common.attention import FLASH, VARLEN, known_attention, packed_attention_kwargs
from modeling.data.packing import Packing, collate_rows
from modeling.data.rows import pack_token_lists
from modeling.pretrain.masking import MLMCollator
from modeling.pretrain.schedules import MaskingSchedule

FP32_TOLERANCE = 2e-4  # logits; gradients: relative to the largest gradient
BF16_TOLERANCE_FACTOR = 2.0
BF16_STEP = 2.0**-8  # relative rounding step of bf16 (8 bits of mantissa)
HALF_PRECISION_KERNELS = (VARLEN, FLASH)
DTYPES = ("fp32", "bf16")


def autocast(setting: Setting, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(setting.device, dtype=torch.bfloat16)


def label(setting: Setting, backend: str) -> str:
    return f"{backend} (reference kernel)" if backend == VARLEN and not setting.on_gpu else backend


def half_precision(setting: Setting, backend: str, dtype: str) -> bool:
    return dtype == "bf16" or (backend in HALF_PRECISION_KERNELS and setting.on_gpu)


def packed_batch(setting: Setting, row_length: int, rows: int, seed: int = 0):
    """Documents packed into `rows` rows as training packs them, and their collated tensors on the device."""
    lengths, total = [], 0
    for length in setting.document_lengths(4 * rows * 8, seed=seed):  # enough documents to fill the rows
        length = min(length, row_length)
        if total + length > rows * row_length * 0.97:
            break
        lengths.append(length)
        total += length
    documents = random_documents(setting, lengths, seed=seed, wrapped=False)
    ids = setting.special_ids
    packed = pack_token_lists(documents, Packing(row_length, ids["[CLS]"], ids["[SEP]"]))
    batch = collate_rows(packed, ids["[PAD]"], row_length)
    return packed, {k: v.to(setting.device) for k, v in batch.items()}


def _model(setting: Setting, config):
    from transformers import ModernBertForMaskedLM

    torch.manual_seed(0)
    with torch.device(setting.device):
        return ModernBertForMaskedLM._from_config(config, attn_implementation="sdpa")


@dataclass
class LogitsCheck:
    """ModernBERT-base's shape on packed 8,192-token rows, and each document's logits alone (the reference)."""

    setting: Setting
    model: object
    packed: list
    batch: dict
    alone: dict  # dtype -> per document [length, vocab] logits, stock sdpa without a mask
    bf16_tolerance: float

    @classmethod
    def prepare(cls, ctx: PartContext) -> LogitsCheck:
        setting = ctx.setting
        model = _model(setting, model_config(setting)).eval()
        packed, batch = packed_batch(setting, setting.row_length, setting.correctness_rows)
        model.set_attn_implementation("sdpa")
        alone = {dtype: [] for dtype in DTYPES}
        with torch.no_grad():
            for dtype in DTYPES:
                with autocast(setting, dtype):
                    for row in packed:
                        offset = 0
                        for length in row.doc_lengths:
                            ids = torch.as_tensor(row.input_ids[offset : offset + length], device=setting.device)
                            alone[dtype].append(model(input_ids=ids[None]).logits[0].float())
                            offset += length
        noise = max((b - f).abs().max().item() for b, f in zip(alone["bf16"], alone["fp32"], strict=True))
        scale = max(a.abs().max().item() for a in alone["fp32"])
        ctx.note(
            f"logits: {len(alone['fp32'])} documents in {len(packed)} rows of {setting.row_length}; largest |logit| "
            f"{scale:.2f}; bf16 noise (alone, bf16 autocast vs fp32) {noise:.2e}"
        )
        return cls(setting, model, packed, batch, alone, BF16_TOLERANCE_FACTOR * noise)

    def row(self, backend: str, dtype: str) -> dict:
        setting, model, batch = self.setting, self.model, self.batch
        model.set_attn_implementation(known_attention(backend, setting.device))
        kwargs = packed_attention_kwargs(batch["doc_ids"], backend, model.config.sliding_window, model.dtype)
        with torch.no_grad(), autocast(setting, dtype):
            logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kwargs).logits
        synchronize(setting)
        worst, d = 0.0, 0
        for r, row in enumerate(self.packed):
            offset = 0
            for length in row.doc_lengths:
                diff = (logits[r, offset : offset + length].float() - self.alone[dtype][d]).abs().max().item()
                worst, d, offset = max(worst, diff), d + 1, offset + length
        tolerance = self.bf16_tolerance if half_precision(setting, backend, dtype) else FP32_TOLERANCE
        return {"max_abs_diff": worst, "tolerance": tolerance, "ok": bool(worst <= tolerance)}


@dataclass
class GradientCheck:
    """Loss and gradients of a packed MLM batch on a smaller shape; the reference is sdpa with dense masks, fp32."""

    setting: Setting
    model: object
    batch: dict
    reference_loss: float
    reference: dict
    largest: float
    bf16_tolerance: float
    bf16_loss_tolerance: float

    @classmethod
    def prepare(cls, ctx: PartContext) -> GradientCheck:
        setting = ctx.setting
        config = model_config(setting, setting.small_model, max_positions=setting.small_row)
        packed, _ = packed_batch(setting, setting.small_row, 2, seed=1)
        for i, row in enumerate(packed):
            row.row_index = i
        schedule = MaskingSchedule(0.3, 0.3, len(packed))
        tokenizer = synthetic_tokenizer(setting)
        collator = MLMCollator(tokenizer, Packing.of(tokenizer, setting.small_row), schedule, 0, "check")
        batch = {k: v.to(setting.device) for k, v in collator(packed).items()}
        model = _model(setting, config)
        model.config.sparse_prediction = model.sparse_prediction = True
        check = cls(setting, model, batch, 0.0, {}, 1.0, 0.0, 0.0)
        check.reference_loss, check.reference = check.loss_and_gradients("sdpa", "fp32")
        check.largest = max(g.abs().max().item() for g in check.reference.values())
        loss, grads = check.loss_and_gradients("sdpa", "bf16")
        noise = max((grads[n] - check.reference[n]).abs().max().item() for n in grads) / check.largest
        loss_noise = abs(loss - check.reference_loss)
        check.bf16_tolerance = BF16_TOLERANCE_FACTOR * noise
        check.bf16_loss_tolerance = max(BF16_TOLERANCE_FACTOR * loss_noise, BF16_STEP * check.reference_loss)
        ctx.note(
            f"gradients: {config.num_hidden_layers} layers x {config.hidden_size}, rows of {setting.small_row}; "
            f"loss {check.reference_loss:.4f}; bf16 noise (sdpa, bf16 autocast vs fp32): loss {loss_noise:.2e}, "
            f"gradients {noise:.2e} of the largest; the fp32 sdpa run is the reference"
        )
        return check

    def loss_and_gradients(self, backend: str, dtype: str) -> tuple[float, dict]:
        setting, model, batch = self.setting, self.model, self.batch
        model.zero_grad(set_to_none=True)
        model.set_attn_implementation(known_attention(backend, setting.device))
        kwargs = packed_attention_kwargs(batch["doc_ids"], backend, model.config.sliding_window, model.dtype)
        with autocast(setting, dtype):
            loss = model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"], **kwargs
            ).loss
        loss.backward()
        grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.item(), grads

    def row(self, backend: str, dtype: str) -> dict:
        loss, grads = self.loss_and_gradients(backend, dtype)
        relative = max((grads[n] - self.reference[n]).abs().max().item() for n in self.reference) / self.largest
        half = half_precision(self.setting, backend, dtype)
        tolerance = self.bf16_tolerance if half else FP32_TOLERANCE
        loss_tolerance = self.bf16_loss_tolerance if half else FP32_TOLERANCE
        loss_diff = abs(loss - self.reference_loss)
        ok = relative <= tolerance and loss_diff <= loss_tolerance
        return {"loss_diff": loss_diff, "max_abs_diff": relative, "tolerance": tolerance, "ok": bool(ok)}


def run(ctx: PartContext) -> None:
    setting = ctx.setting
    present = attention_backends(ctx, training=False)  # flex's CPU backward gaps are skipped per row below
    checks = {}
    for name, kind in (("logits", LogitsCheck), ("gradients", GradientCheck)):
        try:
            checks[name] = kind.prepare(ctx)
        except Exception as error:  # the reference itself could not run: every row of this check fails with it
            ctx.fail(f"{name}: the reference", error)
    for backend in present:
        for name, check in checks.items():
            for dtype in DTYPES:
                row = {"check": name, "backend": label(setting, backend), "dtype": dtype}
                if name == "gradients" and backend == "flex_attention" and not setting.on_gpu:
                    ctx.skip(f"gradients {backend} {dtype}", "flex_attention has no backward on CPUs")
                    continue
                if name == "gradients" and backend == "sdpa" and dtype == "fp32":
                    continue  # the reference itself
                if not ctx.enough_time(f"{name} {row['backend']} {dtype}", 10 if setting.on_gpu else 3):
                    continue
                try:
                    row.update(check.row(backend, dtype))
                except Exception as error:  # a failed check is a row that says so, not a lost part
                    row.update(max_abs_diff=None, tolerance=None, ok=False, error=describe(error))
                    free_memory(setting)
                ctx.add(row)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["check", "backend", "dtype", "max abs diff", "tolerance", "ok"]
    return headers, [
        [
            r["check"] + (" (relative to the largest gradient)" if r["check"] == "gradients" else " (packed vs alone)"),
            r["backend"],
            r["dtype"],
            f"{r['max_abs_diff']:.2e}" if r.get("max_abs_diff") is not None else "-",
            f"{r['tolerance']:.2e}" if r.get("tolerance") is not None else "-",
            "yes" if r["ok"] else f"**no**{': ' + r['error'] if r.get('error') else ''}",
        ]
        for r in rows
    ]
