"""Attention that never crosses documents in a packed row, for every backend ModernBERT has.

ModernBERT (transformers >= 5.1) takes position_ids for RoPE only; document boundaries must come
in through the attention mask, in the form each backend understands:
  sdpa               dict of bool [B,1,T,T] masks (True = attend), per layer type
  eager              dict of additive float masks (0 / -inf); a bool mask is silently wrong there
  flex_attention     dict of BlockMasks
  flash_attention_2  no mask; cu_seq_lens/max_length kwargs over the flattened batch
Sliding-window layers get the window (|i - j| <= config.sliding_window) on top of the document mask.
Padding positions attend to themselves only, so no mask row is empty (an empty row gives NaN).
"""
from __future__ import annotations

import torch


def packed_attention_kwargs(doc_ids: torch.Tensor, implementation: str, sliding_window: int, dtype=torch.float32) -> dict:
    """Forward kwargs that confine attention to each document. doc_ids: [B,T], -1 on padding."""
    if implementation == "flash_attention_2":
        return _flash_kwargs(doc_ids)
    if implementation == "flex_attention":
        return {"attention_mask": _flex_masks(doc_ids, sliding_window)}
    full, sliding = _dense_masks(doc_ids, sliding_window)
    if implementation == "eager":
        full, sliding = _additive(full, dtype), _additive(sliding, dtype)
    elif implementation != "sdpa":
        raise ValueError(f"attention implementation '{implementation}': packed rows support sdpa, eager, flex_attention, flash_attention_2")
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


def _flash_kwargs(doc_ids: torch.Tensor) -> dict:
    """Segments of the flattened batch: one per document, and one per padded tail of a row."""
    flat = doc_ids.reshape(-1)
    row_start = torch.zeros_like(flat, dtype=torch.bool)
    row_start[:: doc_ids.shape[1]] = True
    starts = row_start.clone()
    starts[1:] |= flat[1:] != flat[:-1]
    boundaries = torch.nonzero(starts).flatten()
    cu_seq_lens = torch.cat([boundaries, torch.tensor([flat.numel()], device=flat.device)]).to(torch.int32)
    max_length = int((cu_seq_lens[1:] - cu_seq_lens[:-1]).max())
    return {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens, "max_length_q": max_length, "max_length_k": max_length}


def _flex_masks(doc_ids: torch.Tensor, window: int) -> dict:
    from torch.nn.attention.flex_attention import create_block_mask

    batch, length = doc_ids.shape

    def same_document(b, h, q, kv):
        return ((doc_ids[b, q] == doc_ids[b, kv]) & (doc_ids[b, q] >= 0)) | (q == kv)

    def same_document_in_window(b, h, q, kv):
        return same_document(b, h, q, kv) & ((q - kv).abs() <= window)

    return {name: create_block_mask(fn, batch, None, length, length, device=doc_ids.device)
            for name, fn in (("full_attention", same_document), ("sliding_attention", same_document_in_window))}
