"""Row indexes: which pieces of which documents make up each packed row of a phase, computed from document
lengths alone, before any token is read.

For one epoch of a phase: a seeded permutation of the phase's training documents (all its sources, in
natural proportion; or, with sampling weights, a source drawn per document by weight, each source taking
its documents in its own seeded order and starting a new order when it runs out), documents longer than
a row cut into pieces as training always cut them (`[CLS]` + at most `Packing.body` tokens +
`[SEP]`), then best-fit packing (`best_fit_rows`). The result, `RowIndex`, holds for each row its pieces as
(source, document, first token, tokens): everything a data loader needs to build any row on its own.

Everything is a function of (seed, phase, epoch) and the store, so every process and every machine builds
the same index without talking to the others, and a resumed run finds row N where it left it. `PhaseIndex`
holds a phase's indexes (one per epoch in natural proportion, one for a weighted phase), built as needed and
kept with the store (or, where it is read-only, in the phase folder), named by what they were built from, so
another run on the store or a resume finds them at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modeling.common import run_files
from modeling.data.packers import best_fit_rows
from modeling.data.packing import Packing
from modeling.data.store import Store

log = logging.getLogger(__name__)

MIN_PIECE = 3  # a row with less free space than the smallest piece ([CLS] x [SEP]) is closed


def seeded(*parts) -> np.random.Generator:
    """A generator seeded from any labels (seed, phase, epoch, ...), stable across runs and machines."""
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass
class RowIndex:
    """Packed rows as pieces, row r being pieces row_start[r]:row_start[r + 1] in order."""

    row_start: np.ndarray  # int64 [rows + 1]
    source: np.ndarray  # int16 [pieces]: index into the phase's sources
    document: np.ndarray  # int64 [pieces]: document within its source's split
    start: np.ndarray  # int64 [pieces]: first token of the piece within its document
    length: np.ndarray  # int32 [pieces]: tokens of the document in the piece ([CLS]/[SEP] not counted)

    def __len__(self) -> int:
        return len(self.row_start) - 1

    def tokens(self) -> int:
        """Positions the rows fill, [CLS]/[SEP] included."""
        return int(self.length.sum()) + 2 * len(self.length)

    def save(self, path) -> None:
        np.savez(path, **{name: getattr(self, name) for name in self.__dataclass_fields__})

    @classmethod
    def load(cls, path) -> RowIndex:
        with np.load(path) as data:
            return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def pieces(sources: np.ndarray, documents: np.ndarray, lengths: np.ndarray, body: int):
    """Documents (in order) -> their pieces: a document longer than `body` tokens becomes several, each read
    later as [CLS] + its tokens + [SEP]; an empty one is one piece of no tokens."""
    count = np.maximum(1, -(-lengths // body))
    first = np.repeat(np.cumsum(count) - count, count)
    within = np.arange(count.sum()) - first  # 0, 1, ... within each document
    start = within * body
    length = np.minimum(body, np.repeat(lengths, count) - start)
    return np.repeat(sources, count), np.repeat(documents, count), start, length.astype(np.int32)


def pack_documents(source, document, lengths, packing: Packing) -> RowIndex:
    """Documents (in order) cut into pieces of at most `packing.body` tokens and packed best-fit into rows."""
    return pack_pieces(*pieces(source, document, lengths, packing.body), packing)


def pack_pieces(source, document, start, length, packing: Packing) -> RowIndex:
    rows, count = best_fit_rows((length + 2).astype(np.int64), packing.row_length, packing.open_rows, MIN_PIECE)
    order = np.argsort(rows, kind="stable")  # rows in closing order, pieces in arrival order within a row
    row_start = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=count), out=row_start[1:])
    return RowIndex(row_start, source[order].astype(np.int16), document[order], start[order], length[order])


class PhaseDocuments:
    """The training documents a phase draws from: its sources' lengths, from the store."""

    def __init__(self, store: Store, sources: list[str], split: str = "train"):
        self.sources = sources
        self.lengths = [store.split(name, split).lengths() for name in sources]

    @classmethod
    def of_lengths(cls, lengths: dict[str, np.ndarray]) -> PhaseDocuments:
        """Documents known by their lengths only (benchmarks and tests of the index)."""
        documents = cls.__new__(cls)
        documents.sources, documents.lengths = list(lengths), [np.asarray(v, dtype=np.int64) for v in lengths.values()]
        return documents

    def counts(self) -> np.ndarray:
        return np.array([len(lengths) for lengths in self.lengths], dtype=np.int64)


def epoch_order(documents: PhaseDocuments, seed: int, phase: str, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Natural proportion: every document of every source once, in one seeded permutation."""
    counts = documents.counts()
    if counts.sum() == 0:
        return np.zeros(0, np.int16), np.zeros(0, np.int64)
    order = seeded(seed, phase, "epoch", epoch).permutation(int(counts.sum()))
    bounds = np.cumsum(counts)
    source = np.searchsorted(bounds, order, side="right")
    return source.astype(np.int16), order - (bounds - counts)[source]


def weighted_order(
    documents: PhaseDocuments, weights: list[float], seed: int, phase: str, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """`count` documents: a source drawn per document by weight; each source's documents in a seeded order,
    a new order each time the source runs out."""
    rng = seeded(seed, phase, "weighted")
    probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
    source = rng.choice(len(weights), size=count, p=probabilities).astype(np.int16)
    document = np.empty(count, dtype=np.int64)
    for s, total in enumerate(documents.counts()):
        where = np.flatnonzero(source == s)
        if not len(where):
            continue
        passes = -(-len(where) // total)
        order = np.concatenate([seeded(seed, phase, "source", s, p).permutation(total) for p in range(passes)])
        document[where] = order[: len(where)]
    return source, document


def epoch_index(documents: PhaseDocuments, seed: int, phase: str, epoch: int, packing: Packing) -> RowIndex:
    source, document = epoch_order(documents, seed, phase, epoch)
    return _index(documents, source, document, packing)


def weighted_index(
    documents: PhaseDocuments,
    weights: list[float],
    seed: int,
    phase: str,
    rows: int,
    packing: Packing,
) -> RowIndex:
    """At least `rows` rows of a weighted phase (documents drawn until they fill them)."""
    mean_length = sum(float(lengths.sum()) for lengths in documents.lengths) / max(1, documents.counts().sum())
    count = max(64, int(rows * packing.row_length / (mean_length + 2) * 1.1))
    while True:
        source, document = weighted_order(documents, weights, seed, phase, count)
        index = _index(documents, source, document, packing)
        if len(index) >= rows:
            return index
        count *= 2


def _index(documents: PhaseDocuments, source, document, packing: Packing) -> RowIndex:
    lengths = np.zeros(len(source), dtype=np.int64)
    for s, source_lengths in enumerate(documents.lengths):
        where = source == s
        lengths[where] = source_lengths[document[where]]
    return pack_documents(source, document, lengths, packing)


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
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # cut short, emptied, foreign
                log.warning("%s: unreadable, building the index again", path)
        index = build()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with run_files.atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                index.save(handle)
        return index
