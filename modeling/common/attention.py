"""Attention that never crosses documents in a packed row, for every backend ModernBERT has.

ModernBERT (transformers >= 5.1) takes position_ids for RoPE only; document boundaries must come
in through the attention mask, in the form each backend understands:
  sdpa               dict of bool [B,1,T,T] masks (True = attend), per layer type
  eager              dict of additive float masks (0 / -inf); a bool mask is silently wrong there
  flex_attention     dict of BlockMasks
  flash_attention_2  no mask; cu_seq_lens/max_length kwargs over the flattened batch
  document_sdpa      (this module's) document spans: torch sdpa run per document, no mask at all
  varlen             (this module's) segments of the flattened batch: PyTorch's own varlen flash kernel
Sliding-window layers get the window (|i - j| <= config.sliding_window) on top of the document mask.
Padding positions attend to themselves only, so no mask row is empty (an empty row gives NaN).

Dense masks make every layer cost (row length)^2 however short the documents are, and the local
layers as much as the global ones. `document_sdpa` is the CPU counterpart of flash-attn's varlen path:
global layers cost the sum of (document length)^2, local layers (document length) x (block + window).
`register_document_sdpa()` registers it with transformers' AttentionInterface under that name; a stock
ModernBERT then uses it when built or loaded with attn_implementation="document_sdpa", and nothing of it
is saved with the model.

`varlen` is the GPU counterpart with nothing to build: torch.nn.attention.varlen.varlen_attn (PyTorch's
FlashAttention-2, torch >= 2.11 for its window_size) over the batch flattened to [tokens, heads, head_dim],
one segment per document. Where it cannot run, the same name falls back with one log line
(`resolve_attention`): document_sdpa on a CPU, flex_attention on a GPU whose torch or card lacks the kernel;
so a recipe that asks for it runs anywhere.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

log = logging.getLogger(__name__)

DOCUMENT_SDPA = "document_sdpa"
VARLEN = "varlen"
FLASH = "flash_attention_2"
# Backends whose cost follows the documents, not the row: a batch is best laid out as one row with no padding.
PER_DOCUMENT_BACKENDS = (DOCUMENT_SDPA, FLASH, VARLEN)
LOCAL_BLOCK = 512  # queries per sdpa call in local layers: a block attends to itself plus the window either side


BATCH_ONLY_KEYS = ("doc_ids", "source_tokens", "source_documents")  # collated for masks and counters, not for the model


def packed_model_inputs(batch: dict, config, dtype=torch.float32) -> dict:
    """A collated packed batch (modeling.data.packing.collate_rows) -> the model's forward kwargs."""
    inputs = {key: value for key, value in batch.items() if key not in BATCH_ONLY_KEYS}
    inputs.update(packed_attention_kwargs(batch["doc_ids"], config._attn_implementation, config.sliding_window, dtype))
    return inputs


def packed_attention_kwargs(
    doc_ids: torch.Tensor, implementation: str, sliding_window: int, dtype=torch.float32
) -> dict:
    """Forward kwargs that confine attention to each document. doc_ids: [B,T], -1 on padding."""
    if implementation == FLASH:
        return _flash_kwargs(doc_ids)
    if implementation == "flex_attention":
        return {"attention_mask": _flex_masks(doc_ids, sliding_window)}
    if implementation == DOCUMENT_SDPA:
        spans = DocumentSpans.from_doc_ids(doc_ids, sliding_window)
        return {"attention_mask": {"full_attention": spans, "sliding_attention": spans}}
    if implementation == VARLEN:
        segments = DocumentSegments.from_doc_ids(doc_ids, sliding_window)
        return {"attention_mask": {"full_attention": segments, "sliding_attention": segments}}
    full, sliding = _dense_masks(doc_ids, sliding_window)
    if implementation == "eager":
        full, sliding = _additive(full, dtype), _additive(sliding, dtype)
    elif implementation != "sdpa":
        raise ValueError(
            f"attention implementation '{implementation}': packed rows support sdpa, eager, flex_attention, "
            f"{FLASH}, {DOCUMENT_SDPA}, {VARLEN}"
        )
    return {"attention_mask": {"full_attention": full, "sliding_attention": sliding}}


def _dense_masks(doc_ids: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = doc_ids.shape[1]
    same_doc = (doc_ids[:, :, None] == doc_ids[:, None, :]) & (doc_ids[:, :, None] >= 0)
    same_doc |= torch.eye(length, dtype=torch.bool, device=doc_ids.device)
    positions = torch.arange(length, device=doc_ids.device)
    in_window = (positions[:, None] - positions[None, :]).abs() <= window
    return same_doc[:, None], (same_doc & in_window)[:, None]


def _additive(mask: torch.Tensor, dtype) -> torch.Tensor:
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)


def _segments(doc_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Segments of the flattened batch: one per document, and one per padded tail of a row (its positions attend
    among themselves; their outputs are never used). Returns the int32 offsets [segments + 1] on doc_ids' device
    and the longest segment (one copy to the host: the kernels size their grid by it)."""
    flat = doc_ids.reshape(-1)
    starts = torch.zeros_like(flat, dtype=torch.bool)
    starts[:: doc_ids.shape[1]] = True  # every row starts a segment, even where its first document continues
    starts[1:] |= flat[1:] != flat[:-1]
    boundaries = torch.nonzero(starts).flatten()
    cu_seq_lens = torch.cat([boundaries, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    return cu_seq_lens, int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())


def _flash_kwargs(doc_ids: torch.Tensor) -> dict:
    cu_seq_lens, max_length = _segments(doc_ids)
    return {
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": max_length,
        "max_length_k": max_length,
    }


def _flex_masks(doc_ids: torch.Tensor, window: int) -> dict:
    from torch.nn.attention.flex_attention import create_block_mask

    batch, length = doc_ids.shape

    def same_document(b, h, q, kv):
        return ((doc_ids[b, q] == doc_ids[b, kv]) & (doc_ids[b, q] >= 0)) | (q == kv)

    def same_document_in_window(b, h, q, kv):
        return same_document(b, h, q, kv) & ((q - kv).abs() <= window)

    return {
        name: create_block_mask(fn, batch, None, length, length, device=doc_ids.device)
        for name, fn in (("full_attention", same_document), ("sliding_attention", same_document_in_window))
    }


@dataclass
class DocumentSpans:
    """Per row, the (start, end) of each document and of the padded tail; what document_sdpa takes as its mask."""

    rows: list[list[tuple[int, int, bool]]]  # (start, end, is_document)
    window: int

    @classmethod
    def from_doc_ids(cls, doc_ids: torch.Tensor, window: int) -> DocumentSpans:
        ids = doc_ids.cpu()
        length = ids.shape[1]
        change = torch.ones_like(ids, dtype=torch.bool)
        change[:, 1:] = ids[:, 1:] != ids[:, :-1]
        rows = []
        for b in range(ids.shape[0]):
            starts = change[b].nonzero().flatten().tolist()
            rows.append(
                [
                    (start, end, document >= 0)
                    for start, end, document in zip(starts, starts[1:] + [length], ids[b, starts].tolist(), strict=True)
                ]
            )
        return cls(rows, window)


def document_sdpa_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """query/key/value [B, heads, T, head_dim] -> [B, T, heads, head_dim], attending within each document
    (and, in local layers, within the window). Any other mask (a plain padded batch) goes to stock sdpa.

    The rows are laid end to end and split into documents in one op: its backward is one concatenation, where
    slicing each document out would allocate a full-size gradient per document. Each document goes to sdpa as a
    4-d [1, heads, n, head_dim] tensor, which torch's fused CPU kernel takes (3-d inputs fall back to the
    slower math path)."""
    if not isinstance(attention_mask, DocumentSpans):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    local = getattr(module, "sliding_window", None) is not None
    batch, heads, length, _ = query.shape
    spans = [span for row in attention_mask.rows for span in row]
    sizes = [end - start for start, end, _ in spans]

    def documents(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return x.transpose(0, 1).reshape(1, heads, batch * length, x.shape[-1]).split(sizes, dim=2)

    pieces = []
    for (start, end, is_document), q, k, v in zip(
        spans, documents(query), documents(key), documents(value), strict=True
    ):
        if not is_document:  # padding: its output is never used
            pieces.append(q.new_zeros(1, heads, end - start, value.shape[-1]))
        elif local and end - start > attention_mask.window + 1:
            pieces.append(_local_attention(q, k, v, attention_mask.window, dropout, scaling))
        else:
            pieces.append(F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=scaling))
    out = torch.cat(pieces, dim=2).reshape(heads, batch, length, value.shape[-1])
    return out.permute(1, 2, 0, 3).contiguous(), None


def _local_attention(q, k, v, window: int, dropout: float, scaling) -> torch.Tensor:
    """|i - j| <= window inside one document ([1, heads, n, head_dim]), LOCAL_BLOCK queries at a time against
    the keys they can reach."""
    length, out = q.shape[2], []
    for start in range(0, length, LOCAL_BLOCK):
        end = min(start + LOCAL_BLOCK, length)
        k_start, k_end = max(0, start - window), min(length, end + window)
        rows = torch.arange(start, end, device=q.device)[:, None]
        cols = torch.arange(k_start, k_end, device=q.device)[None, :]
        band = (rows - cols).abs() <= window
        out.append(
            F.scaled_dot_product_attention(
                q[:, :, start:end],
                k[:, :, k_start:k_end],
                v[:, :, k_start:k_end],
                attn_mask=band,
                dropout_p=dropout,
                scale=scaling,
            )
        )
    return torch.cat(out, dim=2)


# --------------------------------------------------------------------------- varlen: PyTorch's own flash kernel


@dataclass
class DocumentSegments:
    """The batch flattened to [B*T] positions and cut into segments (documents, and each row's padded tail):
    what the varlen backend takes as its mask, in flash-attn's varlen layout."""

    cu_seq_lens: torch.Tensor  # [segments + 1] int32 offsets, on the batch's device
    max_length: int  # the longest segment
    window: int  # config.sliding_window: a local layer's query i sees keys j with |i - j| <= window

    @classmethod
    def from_doc_ids(cls, doc_ids: torch.Tensor, window: int) -> DocumentSegments:
        return cls(*_segments(doc_ids), window)


VarlenKernel = Callable[..., torch.Tensor]  # torch.nn.attention.varlen.varlen_attn's signature


def reference_varlen_attn(
    query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, scale=None, window_size=(-1, -1), **unused
) -> torch.Tensor:
    """What varlen_attn computes, written plainly on any device: each segment of [total, heads, head_dim] attends
    to itself; with window_size (left, right), query i sees keys i - left .. i + right (flash-attn's convention,
    -1 = unbounded). The CPU stand-in for the CUDA kernel in tests and in the GPU check's --cpu mode."""
    left, right = window_size
    out = []
    for start, end in zip(cu_seq_q[:-1].tolist(), cu_seq_q[1:].tolist(), strict=True):
        q, k, v = (x[start:end].transpose(0, 1) for x in (query, key, value))  # [heads, n, head_dim]
        offset = torch.arange(end - start, device=query.device)
        offset = offset[None, :] - offset[:, None]  # key minus query
        allowed = torch.ones_like(offset, dtype=torch.bool)
        if left >= 0:
            allowed &= offset >= -left
        if right >= 0:
            allowed &= offset <= right
        out.append(F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, scale=scale).transpose(0, 1))
    return torch.cat(out)


_kernel_override: VarlenKernel | None = None


@contextlib.contextmanager
def varlen_kernel(kernel: VarlenKernel):
    """Run the varlen backend on `kernel` (e.g. reference_varlen_attn, on a CPU) while the block lasts; models
    built meanwhile keep the name varlen wherever the kernel can run."""
    global _kernel_override
    before, _kernel_override = _kernel_override, kernel
    try:
        yield
    finally:
        _kernel_override = before


def varlen_unavailable(device: torch.device | str | None = None) -> str | None:
    """Why PyTorch's varlen kernel cannot run on `device` (default: the GPU if there is one), or None."""
    if _kernel_override is not None:
        return None
    device = _target(device)
    if device.type != "cuda":
        return f"varlen_attn runs on CUDA GPUs, not on {device.type}"
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen (it needs torch >= 2.10)"
    if "window_size" not in inspect.signature(varlen_attn).parameters:
        return f"torch {torch.__version__}'s varlen_attn has no window_size for the local layers (torch >= 2.11)"
    if not torch.backends.cuda.is_flash_attention_available():
        return f"torch {torch.__version__} was built without its FlashAttention kernels"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"the GPU is sm_{major}{minor}; varlen_attn needs sm_80 or newer"
    return None


def _target(device: torch.device | str | None) -> torch.device:
    """The device a model will run on: as given, else the GPU where there is one (where Trainer puts it)."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def resolve_attention(implementation: str, device: torch.device | str | None = None) -> str:
    """The backend that will run `implementation` on `device`: varlen falls back, with one log line, to
    document_sdpa on a CPU and to flex_attention on a GPU without the kernel; every other name is itself."""
    if implementation != VARLEN:
        return implementation
    reason = varlen_unavailable(device)
    if reason is None:
        return VARLEN
    fallback = DOCUMENT_SDPA if _target(device).type == "cpu" else "flex_attention"
    log.info("attn_implementation varlen: %s; running %s instead", reason, fallback)
    return fallback


def _kernel_dtype(query: torch.Tensor) -> torch.dtype:
    """The flash kernel takes fp16/bf16 only. fp32 inputs (RoPE upcasts under autocast) go in at the autocast
    dtype, as transformers' flash path does; without autocast (an fp32 model) at bf16: the attention then rounds
    as bf16 training would, and the rest of the model stays fp32."""
    if query.dtype in (torch.float16, torch.bfloat16):
        return query.dtype
    if torch.is_autocast_enabled(query.device.type):
        return torch.get_autocast_dtype(query.device.type)
    return torch.bfloat16


def varlen_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """query/key/value [B, heads, T, head_dim] -> [B, T, heads, head_dim] through varlen_attn over the flattened
    batch, one segment per document; local layers get window_size (w, w), w = config.sliding_window, so query i
    sees |i - j| <= w as in ModernBERT's own masks (its flash path passes the same numbers). Any other mask (a
    plain padded batch) goes to stock sdpa."""
    if not isinstance(attention_mask, DocumentSegments):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout:
        raise ValueError(
            f"attn_implementation varlen: PyTorch's varlen kernel has no attention dropout (got {dropout}); "
            "set attention_dropout 0 (ModernBERT's default) or choose another backend"
        )
    batch, heads, length, head_dim = query.shape
    kernel = _kernel_override or _cuda_varlen_attn()
    dtype = query.dtype if _kernel_override else _kernel_dtype(query)  # a stand-in computes at any precision

    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(batch * length, heads, head_dim).to(dtype)

    window = attention_mask.window if getattr(module, "sliding_window", None) is not None else -1
    out = kernel(
        flat(query),
        flat(key),
        flat(value),
        attention_mask.cu_seq_lens,
        attention_mask.cu_seq_lens,
        attention_mask.max_length,
        attention_mask.max_length,
        scale=scaling,
        window_size=(window, window),
    )
    return out.view(batch, length, heads, head_dim).to(query.dtype), None


def _cuda_varlen_attn() -> VarlenKernel:
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn


def register_varlen():
    """Make `attn_implementation="varlen"` known to transformers (as register_document_sdpa does)."""
    AttentionInterface.register(VARLEN, varlen_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN, sdpa_mask)


def known_attention(implementation: str, device: torch.device | str | None = None) -> str:
    """The backend that runs `implementation` on `device` (resolve_attention), made known to transformers first
    when it is one of this module's (transformers knows the others): what every place that builds or loads a
    model passes as attn_implementation."""
    implementation = resolve_attention(implementation, device)
    if implementation == DOCUMENT_SDPA:
        register_document_sdpa()
    elif implementation == VARLEN:
        register_varlen()
    return implementation


def register_document_sdpa():
    """Make `attn_implementation="document_sdpa"` known to transformers. Called where models are built
    (pretraining, inference), not at import: nothing changes in transformers unless a model asks for it.
    Padded batches (pipelines, evaluation of a plain batch) get sdpa's mask through the same name."""
    AttentionInterface.register(DOCUMENT_SDPA, document_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(DOCUMENT_SDPA, sdpa_mask)
