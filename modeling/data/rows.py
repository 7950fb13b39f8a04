"""A phase's rows, built on demand from the token store by their index: what the Trainer's data loader reads.

`build_phase_data` gives what a phase trains and is measured on in one call: its sources checked, its row
index (modeling.data.index.PhaseIndex), the rows its epochs hold and its held-out rows. `PhaseRows` is a
map-style dataset: row i is read from memory-mapped shards by whichever process and data loader worker asks
for it, so each rank reads only its own rows and a resume skips rows by index arithmetic, reading nothing
before the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from modeling.common.errors import ConfigError, DataError
from modeling.data.index import PhaseDocuments, PhaseIndex, RowIndex, pack_documents, seeded
from modeling.data.packing import PackedRow, Packing
from modeling.data.store import Store

log = logging.getLogger(__name__)


@dataclass
class PhaseData:
    """What a phase trains and is measured on, before any plan: its sources, its row index, the rows its first
    `epochs` epochs hold (None where the phase is not measured in epochs), its held-out rows, and the packing they
    share."""

    store_dir: Path
    sources: list[str]
    index: PhaseIndex
    epoch_rows: int | None
    held_out: list[PackedRow]
    packing: Packing

    def training_rows(self, rows: int) -> PhaseRows:
        """The phase's first `rows` rows, as the Trainer's dataset (the index grown to hold them)."""
        return PhaseRows(self.store_dir, self.index, rows)


def build_phase_data(
    store: Store,
    phase: str,
    sources: list[str] | dict[str, float],
    seed: int,
    packing: Packing,
    held_out_documents: int,
    epochs: float | None = None,
    cache_dir: Path | None = None,
) -> PhaseData:
    """A phase's data from the store: every source checked to hold training documents, the row index (cached in
    `cache_dir`) with the rows of its first `epochs` epochs counted, and the held-out slice. `sources`: names
    (natural proportion) or {name: weight}."""
    names = list(sources)
    for name in names:
        recorded = store.manifest.sources[name]
        if not recorded.documents["train"]:
            skipped = f" (skipped: {recorded.skipped})" if recorded.skipped else ""
            raise DataError(f"phase '{phase}': source '{name}' yielded no training documents{skipped}")
    weights = None if isinstance(sources, list) else [float(sources[n]) for n in names]
    index = PhaseIndex(store, names, weights, seed, phase, packing, cache_dir=cache_dir)
    epoch_rows = index.rows_in_epochs(float(epochs)) if epochs else None
    held_out = held_out_rows(store, names, seed, phase, held_out_documents, packing)
    if not held_out:
        raise ConfigError(f"holdout: phase '{phase}' has no held-out documents; raise holdout.fraction")
    return PhaseData(store.folder.folder, names, index, epoch_rows, held_out, packing)


class PhaseRows(Dataset):
    """Rows 0 .. `rows` - 1 of a phase. Row i: the pieces its index lists, each `[CLS] tokens [SEP]`."""

    def __init__(self, store_dir: Path | str, index: PhaseIndex, rows: int):
        self.store_dir, self.index, self.rows = str(store_dir), index, rows
        self.sources = index.documents.sources
        index.ensure_rows(rows)
        self._splits = None

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, row: int) -> PackedRow:
        if not 0 <= row < self.rows:
            raise IndexError(row)
        if self._splits is None:  # opened in the process that reads (each data loader worker maps the shards)
            store = Store(self.store_dir)
            self._splits = [store.split(name) for name in self.sources]
        index, local = self.index.locate(row)
        return build_row(index, local, self._splits, self.index.packing, row)

    def __getstate__(self):
        return {**self.__dict__, "_splits": None}


def build_row(index: RowIndex, local: int, splits, packing: Packing, row_index: int) -> PackedRow:
    first, last = index.row_start[local], index.row_start[local + 1]
    cls, sep = np.array([packing.cls_id], np.int64), np.array([packing.sep_id], np.int64)
    parts = []
    for piece in range(first, last):
        tokens = splits[index.source[piece]].tokens(
            int(index.document[piece]), int(index.start[piece]), int(index.length[piece])
        )
        parts += [cls, tokens.astype(np.int64), sep]
    return PackedRow(
        input_ids=np.concatenate(parts) if parts else np.zeros(0, np.int64),
        doc_lengths=(index.length[first:last] + 2).tolist(),
        doc_sources=index.source[first:last].tolist(),
        doc_starts=(index.start[first:last] == 0).tolist(),
        row_index=row_index,
    )


def held_out_rows(
    store: Store, sources: list[str], seed: int, stream: str, max_documents: int, packing: Packing
) -> list[PackedRow]:
    """A held-out slice: `max_documents` documents drawn uniformly from the held-out documents of all `sources`
    (fixed by the seed and `stream`: the phase's name for a phase's slice), packed as training packs."""
    documents = PhaseDocuments(store, sources, split="held_out")
    counts = documents.counts()
    total = int(counts.sum())
    if total == 0:
        return []
    chosen = np.sort(seeded(seed, stream, "held-out").choice(total, size=min(max_documents, total), replace=False))
    bounds = np.cumsum(counts)
    source = np.searchsorted(bounds, chosen, side="right")
    document = chosen - (bounds - counts)[source]
    lengths = np.array([documents.lengths[s][d] for s, d in zip(source, document, strict=True)], dtype=np.int64)
    index = pack_documents(source.astype(np.int16), document, lengths, packing)
    splits = [store.split(name, "held_out") for name in sources]
    return [build_row(index, r, splits, packing, r) for r in range(len(index))]


def source_held_out_rows(store: Store, source: str, seed: int, max_documents: int, packing: Packing) -> list[PackedRow]:
    """A source's own held-out slice: `max_documents` of its held-out documents, drawn by the seed and the source
    alone (not the phase), so every phase of a run measures the same text."""
    return held_out_rows(store, [source], seed, f"source/{source}", max_documents, packing)


def unigram_entropy(rows: list[PackedRow], special_ids) -> float:
    """Entropy (nats) of the token frequencies of `rows`, special tokens left out: the held-out MLM loss of a
    model that knows only which tokens are common and nothing of context. Measured on the rows themselves
    (not on training counts), it is the lowest loss such a model can get on them, so a trained model's loss
    is compared with the strictest frequency-only figure."""
    ids = np.concatenate([np.asarray(row.input_ids, dtype=np.int64) for row in rows])
    ids = ids[~np.isin(ids, np.asarray(list(special_ids), dtype=np.int64))]
    counts = np.bincount(ids)
    p = counts[counts > 0] / len(ids)
    return float(-(p * np.log(p)).sum())


class TokenLists:
    """Documents already tokenized, in memory, read like a store split (benchmarks and tests)."""

    def __init__(self, documents: list):
        self.documents = [np.asarray(ids, dtype=np.int64) for ids in documents]

    def __len__(self) -> int:
        return len(self.documents)

    def lengths(self) -> np.ndarray:
        return np.array([len(ids) for ids in self.documents], dtype=np.int64)

    def tokens(self, document: int, start: int = 0, length: int | None = None) -> np.ndarray:
        ids = self.documents[document]
        return ids[start:] if length is None else ids[start : start + length]


def pack_token_lists(documents: list, packing: Packing) -> list[PackedRow]:
    """Tokenized documents (in this order) packed as training packs them; rows numbered from 0."""
    split = TokenLists(documents)
    lengths = split.lengths()
    index = pack_documents(np.zeros(len(lengths), dtype=np.int16), np.arange(len(lengths)), lengths, packing)
    return [build_row(index, r, [split], packing, r) for r in range(len(index))]
