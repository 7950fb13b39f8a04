"""Row indexes: which pieces of which documents make up each packed row of a phase, computed from document
lengths alone, before any token is read.

For one epoch of a phase: a seeded permutation of the phase's training documents (all its sources, in
natural proportion; or, with sampling weights, a source drawn per document by weight, each source taking
its documents in its own seeded order and starting a new order when it runs out), documents longer than
a row cut into pieces as training always cut them (`[CLS]` + at most `Packing.body` tokens +
`[SEP]`), then best-fit packing (`best_fit_rows`). The result, `RowIndex`, holds for each row its pieces as
(source, document, first token, tokens): everything a data loader needs to build any row on its own.

Everything is a function of (seed, phase, epoch) and the store, so every process and every machine builds
the same index without talking to the others, and a resumed run finds row N where it left it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from modeling.data.packers import best_fit_rows
from modeling.data.packing import Packing
from modeling.data.store import Store

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
