"""A phase's rows, built on demand from the token store by their index: what the Trainer's data loader reads.

`PhaseIndex` holds the row indexes of a phase (one per epoch in natural proportion, one for a weighted
phase), built from document lengths (modeling.data.index) and kept with the store (or, where it is read-only,
in the phase folder), named by what they were built from, so another run on the store or a resume finds
them at once. `PhaseRows` is a map-style dataset: row i is read from memory-mapped shards by whichever
process and data loader worker asks for it, so each rank reads only its own rows and a resume skips rows
by index arithmetic, reading nothing before the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from modeling.common import run_files
from modeling.common.errors import ConfigError, DataError
from modeling.data.index import PhaseDocuments, RowIndex, epoch_index, pack_documents, seeded, weighted_index
from modeling.data.packing import PackedRow, Packing
from modeling.data.store import Store

log = logging.getLogger(__name__)


class PhaseIndex:
    """The row indexes of one phase, built when first needed and cached in `cache_dir` (any process may
    write a cache file; they are written atomically and all writers write the same bytes)."""

    def __init__(
        self,
        store: Store,
        sources: list[str],
        weights: list[float] | None,
        seed: int,
        phase: str,
        packing: Packing,
        cache_dir: Path | None = None,
    ):
        self.documents = PhaseDocuments(store, sources)
        self.weights, self.seed, self.phase = weights, seed, phase
        self.packing, self.cache_dir = packing, cache_dir
        # A cached index is used only by the same settings over the same documents: the store's training shards
        # by their checksums, so a store prepared again (even with as many documents) never meets an old index.
        shards = [
            sorted(part.shards["train"].sha256 for part in store.manifest.sources[name].parts) for name in sources
        ]
        settings = [
            sources,
            weights,
            seed,
            phase,
            packing.row_length,
            packing.open_rows,
            store.manifest.tokenizer_sha256,
            [len(lengths) for lengths in self.documents.lengths],
            shards,
        ]
        self.key = hashlib.blake2b(json.dumps(settings).encode(), digest_size=6).hexdigest()
        self.indexes: list[RowIndex] = []  # natural proportion: one per epoch; weighted: one
        self.firsts: list[int] = [0]  # first row of each index, and one past the last

    def rows_in_epochs(self, epochs: float) -> int:
        """Rows of the phase's first `epochs` epochs (natural proportion): whole epochs, then a share of the next."""
        whole = int(epochs)
        self._build_until_index(whole + (epochs > whole))
        rows = self.firsts[whole]
        if epochs > whole:
            rows += int((epochs - whole) * len(self.indexes[whole]))
        return rows

    def ensure_rows(self, rows: int) -> None:
        """Build indexes until the phase holds at least `rows` rows."""
        if self.weights is not None:
            if not self.indexes:
                # named by its rows: a longer phase over the same settings needs a longer index
                self._add(self._cached(f"weighted-{rows}", lambda: self._weighted(rows)))
            if self.firsts[-1] < rows:
                raise ValueError(f"phase {self.phase}: the weighted index holds {self.firsts[-1]} of {rows} rows")
            return
        while self.firsts[-1] < rows:
            self._build_until_index(len(self.indexes) + 1)

    def locate(self, row: int) -> tuple[RowIndex, int]:
        if row >= self.firsts[-1]:
            self.ensure_rows(row + 1)
        which = int(np.searchsorted(self.firsts, row, side="right")) - 1
        return self.indexes[which], row - self.firsts[which]

    def passes_started(self, source: int, rows: int) -> int:
        """Passes over a source that the first `rows` rows began: the epochs they reach (natural proportion),
        or how many times the source's documents were drawn through (weighted)."""
        self.ensure_rows(rows)
        if self.weights is None:
            return max(1, int(np.searchsorted(self.firsts, rows, side="left")))
        index = self.indexes[0]
        last_piece = index.row_start[min(rows, len(index))]
        begun = (index.source[:last_piece] == source) & (index.start[:last_piece] == 0)
        return max(1, -(-int(begun.sum()) // max(1, int(self.documents.counts()[source]))))

    # -- internals

    def _build_until_index(self, count: int):
        while len(self.indexes) < count:
            epoch = len(self.indexes)
            index = self._cached(f"epoch-{epoch:05d}", lambda e=epoch: self._epoch(e))
            if not len(index):
                raise ValueError(f"phase {self.phase}: no training documents to build rows from")
            self._add(index)

    def _add(self, index: RowIndex):
        self.indexes.append(index)
        self.firsts.append(self.firsts[-1] + len(index))

    def _epoch(self, epoch: int) -> RowIndex:
        started = time.monotonic()
        index = epoch_index(self.documents, self.seed, self.phase, epoch, self.packing)
        log.info(
            "phase %s: epoch %d index, %d rows, built in %.1f s",
            self.phase,
            epoch,
            len(index),
            time.monotonic() - started,
        )
        return index

    def _weighted(self, rows: int) -> RowIndex:
        return weighted_index(self.documents, self.weights, self.seed, self.phase, rows, self.packing)

    def _cached(self, name: str, build) -> RowIndex:
        if self.cache_dir is None:
            return build()
        path = self.cache_dir / f"{name}-{self.key}.npz"
        if path.exists():
            try:
                return RowIndex.load(path)
            except (OSError, ValueError, KeyError):
                log.warning("%s: unreadable, building the index again", path)
        index = build()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with run_files.atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                index.save(handle)
        return index


@dataclass
class PhaseData:
    """What a phase trains and is measured on, before any plan: its sources, its row index (the epochs' rows
    built as needed), its held-out rows, and the packing they share."""

    sources: list[str]
    index: PhaseIndex
    held_out: list[PackedRow]
    packing: Packing

    def epoch_rows(self, epochs: float | None) -> int | None:
        """Rows of the phase's first `epochs` epochs (None: the phase is not measured in epochs)."""
        return self.index.rows_in_epochs(float(epochs)) if epochs else None

    def training_rows(self, store_dir: Path | str, rows: int) -> PhaseRows:
        return PhaseRows(store_dir, self.index, rows)


def build_phase_data(
    store: Store,
    phase: str,
    sources: list[str] | dict[str, float],
    seed: int,
    packing: Packing,
    held_out_documents: int,
    cache_dir: Path | None = None,
) -> PhaseData:
    """A phase's data from the store: every source checked to hold training documents, the row index (cached in
    `cache_dir`), and the held-out slice. `sources`: names (natural proportion) or {name: weight}."""
    names = list(sources)
    for name in names:
        recorded = store.manifest.sources[name]
        if not recorded.documents["train"]:
            skipped = f" (skipped: {recorded.skipped})" if recorded.skipped else ""
            raise DataError(f"phase '{phase}': source '{name}' yielded no training documents{skipped}")
    weights = None if isinstance(sources, list) else [float(sources[n]) for n in names]
    index = PhaseIndex(store, names, weights, seed, phase, packing, cache_dir=cache_dir)
    held_out = held_out_rows(store, names, seed, phase, held_out_documents, packing)
    if not held_out:
        raise ConfigError(f"holdout: phase '{phase}' has no held-out documents; raise holdout.fraction")
    return PhaseData(names, index, held_out, packing)


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
    store: Store, sources: list[str], seed: int, phase: str, max_documents: int, packing: Packing
) -> list[PackedRow]:
    """The phase's held-out slice: `max_documents` documents drawn uniformly from the held-out documents of
    all its sources (fixed by the seed and the phase), packed as training packs."""
    documents = PhaseDocuments(store, sources, split="held_out")
    counts = documents.counts()
    total = int(counts.sum())
    if total == 0:
        return []
    chosen = np.sort(seeded(seed, phase, "held-out").choice(total, size=min(max_documents, total), replace=False))
    bounds = np.cumsum(counts)
    source = np.searchsorted(bounds, chosen, side="right")
    document = chosen - (bounds - counts)[source]
    lengths = np.array([documents.lengths[s][d] for s, d in zip(source, document, strict=True)], dtype=np.int64)
    index = pack_documents(source.astype(np.int16), document, lengths, packing)
    splits = [store.split(name, "held_out") for name in sources]
    return [build_row(index, r, splits, packing, r) for r in range(len(index))]


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
