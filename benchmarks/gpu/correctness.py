"""Correctness of every attention backend present: a packed document gives what it gives alone.

  logits     ModernBERT-base's shape, random init; packed rows of 8,192 tokens with clinical-like document lengths
             (several documents per row, documents longer than the local window, padding at row ends). Every
             document's logits from the packed rows are compared with the same document run alone through stock
             transformers (sdpa, no mask), in fp32 and under bf16 autocast.
  gradients  a smaller shape (rows of 2,048): MLM loss and every gradient of a packed batch against sdpa with
             dense document masks in fp32.

Tolerances. fp32 paths must agree within FP32_TOLERANCE (reductions in another order only). bf16 is judged
against bf16's own error, measured in the same run: the largest difference between the documents alone under
bf16 autocast and alone in fp32 (the "bf16 noise"); packed must stay within twice it. varlen and flash-attn take
fp16/bf16 only, so their fp32 rows run the attention in bf16 and get the bf16 tolerance too.
"""

from __future__ import annotations

import contextlib
import gc

import torch

from benchmarks.gpu.setting import (
    PartContext,
    Setting,
    model_config,
    random_documents,
    synchronize,
    synthetic_tokenizer,
)
from modeling.common.attention import (
    FLASH,
    VARLEN,
    known_attention,
    packed_attention_kwargs,
    varlen_unavailable,
)
from modeling.data.packing import collate_rows
from modeling.data.rows import pack_token_lists
from modeling.pretrain.masking import MLMCollator
from modeling.pretrain.schedules import MaskingSchedule

FP32_TOLERANCE = 2e-4  # logits; gradients: relative to the largest gradient
BF16_TOLERANCE_FACTOR = 2.0
HALF_PRECISION_KERNELS = (VARLEN, FLASH)


def backends(ctx: PartContext) -> list[str]:
    """The backends to check here; those that cannot run are recorded as skipped, with why."""
    setting, present = ctx.setting, []
    for name in (VARLEN, "sdpa", "document_sdpa", FLASH, "flex_attention"):
        if name == VARLEN and setting.on_gpu and varlen_unavailable("cuda"):
            ctx.skip(name, varlen_unavailable("cuda"))
        elif name == FLASH and not _flash_attn_importable():
            ctx.skip(name, "flash-attn is not installed (it builds against CUDA; the project does not need it)")
        elif name == FLASH and not setting.on_gpu:
            ctx.skip(name, "flash-attn runs on GPUs only")
        else:
            present.append(name)
    return present


def _flash_attn_importable() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def autocast(setting: Setting, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(setting.device, dtype=torch.bfloat16)


def label(setting: Setting, backend: str) -> str:
    return f"{backend} (reference kernel)" if backend == VARLEN and not setting.on_gpu else backend


def packed_batch(setting: Setting, row_length: int, rows: int, seed: int = 0):
    """Documents packed into `rows` rows as training packs them, and their collated tensors on the device."""
    lengths, total, n = [], 0, 0
    for length in setting.document_lengths(4 * rows * 8, seed=seed):  # enough documents to fill the rows
        length = min(length, row_length)
        if total + length > rows * row_length * 0.97:
            break
        lengths.append(length)
        total += length
        n += 1
    documents = random_documents(setting, lengths, seed=seed, wrapped=False)
    ids = setting.special_ids
    packed = pack_token_lists(documents, row_length, ids["[CLS]"], ids["[SEP]"])
    batch = collate_rows(packed, ids["[PAD]"], row_length)
    return packed, {k: v.to(setting.device) for k, v in batch.items()}


def documents_alone(model, packed, setting: Setting, dtype: str) -> list[torch.Tensor]:
    """Each document of the packed rows through stock transformers (sdpa), alone, no mask."""
    model.set_attn_implementation("sdpa")
    out = []
    with torch.no_grad(), autocast(setting, dtype):
        for row in packed:
            offset = 0
            for length in row.doc_lengths:
                ids = torch.as_tensor(row.input_ids[offset : offset + length], device=setting.device)[None]
                out.append(model(input_ids=ids).logits[0].float())
                offset += length
    return out


def check_logits(ctx: PartContext, present: list[str]) -> None:
    setting = ctx.setting
    torch.manual_seed(0)
    with torch.device(setting.device):
        model = _model(setting, model_config(setting)).eval()
    packed, batch = packed_batch(setting, setting.row_length, setting.correctness_rows)
    documents = sum(len(row.doc_lengths) for row in packed)
    alone = {dtype: documents_alone(model, packed, setting, dtype) for dtype in ("fp32", "bf16")}
    noise = max((b - f).abs().max().item() for b, f in zip(alone["bf16"], alone["fp32"], strict=True))
    bf16_tolerance = BF16_TOLERANCE_FACTOR * noise
    scale = max(a.abs().max().item() for a in alone["fp32"])
    ctx.note(
        f"logits: {documents} documents in {len(packed)} rows of {setting.row_length}; largest |logit| {scale:.2f}; "
        f"bf16 noise (alone, bf16 autocast vs fp32) {noise:.2e}"
    )
    for backend in present:
        for dtype in ("fp32", "bf16"):
            what = f"logits {label(setting, backend)} {dtype}"
            if not ctx.enough_time(what, 10 if setting.on_gpu else 5):
                continue
            model.set_attn_implementation(known_attention(backend, setting.device))
            kwargs = packed_attention_kwargs(batch["doc_ids"], backend, model.config.sliding_window, model.dtype)
            with torch.no_grad(), autocast(setting, dtype):
                logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], **kwargs).logits
            synchronize(setting)
            worst, d = 0.0, 0
            for r, row in enumerate(packed):
                offset = 0
                for length in row.doc_lengths:
                    diff = (logits[r, offset : offset + length].float() - alone[dtype][d]).abs().max().item()
                    worst, d, offset = max(worst, diff), d + 1, offset + length
            half = dtype == "bf16" or (backend in HALF_PRECISION_KERNELS and setting.on_gpu)
            tolerance = bf16_tolerance if half else FP32_TOLERANCE
            ctx.add(
                {
                    "check": "logits",
                    "backend": label(setting, backend),
                    "dtype": dtype,
                    "documents": documents,
                    "max_abs_diff": worst,
                    "tolerance": tolerance,
                    "ok": bool(worst <= tolerance),
                }
            )
            del logits
    del model
    _free(setting)


def check_gradients(ctx: PartContext, present: list[str]) -> None:
    """Loss and gradients of a packed MLM batch on a smaller shape, against sdpa with dense masks in fp32."""
    setting = ctx.setting
    config = model_config(setting, setting.small_model, max_positions=setting.small_row)
    packed, _ = packed_batch(setting, setting.small_row, 2, seed=1)
    for i, row in enumerate(packed):
        row.row_index = i
    schedule = MaskingSchedule(0.3, 0.3, len(packed))
    collator = MLMCollator(synthetic_tokenizer(setting), schedule, 0, "check", setting.small_row)
    batch = {k: v.to(setting.device) for k, v in collator(packed).items()}
    torch.manual_seed(0)
    with torch.device(setting.device):
        model = _model(setting, config)
    model.config.sparse_prediction = model.sparse_prediction = True

    def loss_and_grads(backend: str, dtype: str, model=model):
        model.zero_grad(set_to_none=True)
        model.set_attn_implementation(known_attention(backend, setting.device))
        kwargs = packed_attention_kwargs(batch["doc_ids"], backend, model.config.sliding_window, model.dtype)
        with autocast(setting, dtype):
            loss = model(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"], **kwargs
            ).loss
        loss.backward()
        return loss.item(), {
            n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None
        }

    reference_loss, reference = loss_and_grads("sdpa", "fp32")  # the reference: not a row of its own
    largest = max(g.abs().max().item() for g in reference.values())
    bf16_loss, bf16_grads = loss_and_grads("sdpa", "bf16")
    noise = max((bf16_grads[n] - reference[n]).abs().max().item() for n in reference) / largest
    loss_noise = abs(bf16_loss - reference_loss)
    ctx.note(
        f"gradients: {config.num_hidden_layers} layers x {config.hidden_size}, rows of {setting.small_row}; loss "
        f"{reference_loss:.4f}; bf16 noise (sdpa, bf16 autocast vs fp32): loss {loss_noise:.2e}, gradients "
        f"{noise:.2e} of the largest"
    )
    for backend in present:
        for dtype in ("fp32", "bf16"):
            what = f"gradients {label(setting, backend)} {dtype}"
            if backend == "flex_attention" and not setting.on_gpu:
                ctx.skip(what, "flex_attention has no backward on CPUs")
                continue
            if not ctx.enough_time(what, 10 if setting.on_gpu else 5):
                continue
            loss, grads = loss_and_grads(backend, dtype)
            relative = max((grads[n] - reference[n]).abs().max().item() for n in reference) / largest
            half = dtype == "bf16" or (backend in HALF_PRECISION_KERNELS and setting.on_gpu)
            tolerance = BF16_TOLERANCE_FACTOR * noise if half else FP32_TOLERANCE
            loss_tolerance = BF16_TOLERANCE_FACTOR * loss_noise if half else FP32_TOLERANCE
            ctx.add(
                {
                    "check": "gradients",
                    "backend": label(setting, backend),
                    "dtype": dtype,
                    "loss_diff": abs(loss - reference_loss),
                    "max_abs_diff": relative,
                    "tolerance": tolerance,
                    "ok": bool(relative <= tolerance and abs(loss - reference_loss) <= max(loss_tolerance, 1e-6)),
                }
            )
    del model
    _free(setting)


def _model(setting: Setting, config):
    from transformers import ModernBertForMaskedLM

    return ModernBertForMaskedLM._from_config(config, attn_implementation="sdpa")


def _free(setting: Setting) -> None:
    gc.collect()
    if setting.on_gpu:
        torch.cuda.empty_cache()


def run(ctx: PartContext) -> None:
    present = backends(ctx)
    check_logits(ctx, present)
    check_gradients(ctx, present)


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    headers = ["check", "backend", "dtype", "max abs diff", "tolerance", "ok"]
    return headers, [
        [
            r["check"] + (" (relative to the largest gradient)" if r["check"] == "gradients" else " (packed vs alone)"),
            r["backend"],
            r["dtype"],
            f"{r['max_abs_diff']:.2e}",
            f"{r['tolerance']:.2e}",
            "yes" if r["ok"] else "**no**",
        ]
        for r in rows
    ]
