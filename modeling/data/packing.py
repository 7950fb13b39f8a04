"""Packed rows and their collation: the record every stage after the token store passes on.

A row holds several documents (or pieces of a long one), each `[CLS] ... [SEP]`, one after the other
with no padding between them. Each row remembers its documents' lengths: the attention masks built from
them (modeling.common.attention) keep documents from seeing each other. Which pieces make up which row
is decided from lengths alone (modeling.data.index); rows are read from the store (modeling.data.rows).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Packing:
    """How documents become rows: rows of `row_length` positions, each piece of a document `[CLS] tokens [SEP]`
    (so a piece holds at most `body` of its tokens), packed best-fit with `open_rows` rows open at a time. One
    record from the recipe to the index, the rows and the collator."""

    row_length: int
    cls_id: int
    sep_id: int
    open_rows: int = 64

    @property
    def body(self) -> int:
        """Tokens of a document one piece holds: the row less its [CLS] and [SEP]."""
        return self.row_length - 2

    @classmethod
    def of(cls, tokenizer, row_length: int, open_rows: int = 64) -> Packing:
        return cls(row_length, tokenizer.cls_token_id, tokenizer.sep_token_id, open_rows)


@dataclass
class PackedRow:
    """One row of packed documents: what the row builder emits, what collation and masking read."""

    input_ids: list[int] | np.ndarray
    doc_lengths: list[int]  # tokens of each document (piece) in the row, [CLS] and [SEP] included, in order
    doc_sources: list[int] | None = None  # index of each document's source (None: all from source 0)
    doc_starts: list[bool] | None = None  # False where a piece continues a document cut at the row length
    row_index: int = -1  # position in the phase: masking is seeded by it


def plain_backend(tokenizer):
    """The Rust tokenizer directly: batched, and no truncation, padding or length warnings (callers cut
    documents themselves)."""
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.no_truncation()
    backend.no_padding()
    return backend


def packing_efficiency(rows, max_seq_length: int) -> float:
    """Share of tensor positions holding real tokens when every row is padded to max_seq_length."""
    rows = list(rows)
    return sum(len(r.input_ids) for r in rows) / (len(rows) * max_seq_length) if rows else 0.0


def collate_rows(rows: list[PackedRow], pad_id: int, max_seq_length: int, num_sources: int | None = None) -> dict:
    """Rows -> tensors padded to max_seq_length (a fixed shape: batches from several loaders or
    processes concatenate, and compiled models see one shape).

    doc_ids numbers the documents of each row (-1 on padding); position_ids restart in every document."""
    batch_size = len(rows)
    input_ids = torch.full((batch_size, max_seq_length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((batch_size, max_seq_length), dtype=torch.long)
    doc_ids = torch.full((batch_size, max_seq_length), -1, dtype=torch.long)
    num_sources = num_sources or 1 + max((s for r in rows for s in r.doc_sources or [0]), default=0)
    source_tokens = torch.zeros((batch_size, num_sources), dtype=torch.long)
    source_documents = torch.zeros((batch_size, num_sources), dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, : len(row.input_ids)] = torch.as_tensor(np.asarray(row.input_ids, dtype=np.int64))
        offset = 0
        sources = row.doc_sources or [0] * len(row.doc_lengths)
        for d, (length, source) in enumerate(zip(row.doc_lengths, sources, strict=True)):
            position_ids[b, offset : offset + length] = torch.arange(length)
            doc_ids[b, offset : offset + length] = d
            source_tokens[b, source] += length
            offset += length
        if row.doc_sources is not None and row.doc_starts is not None:
            for source, start in zip(row.doc_sources, row.doc_starts, strict=True):
                source_documents[b, source] += start
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "doc_ids": doc_ids,
        "source_tokens": source_tokens,
        "source_documents": source_documents,
    }
