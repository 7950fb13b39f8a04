"""Contamination: which evaluation documents, or long runs of their tokens, a token store trains on.

Each evaluation document is tokenized with the store's tokenizer, as prepare tokenized the store. Its n-grams of
token ids (n = 13 by default, the length the GPT-3 and Llama 2 decontamination reports used) are hashed into one
small table, and the store's training shards are scanned once, every n-gram of every store document looked up in
it (a numba kernel; one process per core, a shard at a time). A document is also looked up whole, by the hash of
its normalised text (`text_key`), which prepare keeps beside each store document's ids.

Per evaluation document (`DocumentOverlap`): its n-grams, how many the store holds, the share of its tokens those
n-grams cover, whether the store holds it whole, and the store documents holding its n-grams. The keys and the
kernels are modeling.data.ngrams', which also answers prepare's question the other way round (`Exclusion`): does
this document share a run with an evaluation document.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from modeling.common.records import Record
from modeling.data.ngrams import Exclusion, build_table, find_keys, ngram_keys, scan_batch, text_key
from modeling.data.store import ShardRecord, Store, StoreSplit

DEFAULT_NGRAM = 13


@dataclass(frozen=True)
class EvalDocument:
    """One evaluation document: where it comes from and its text."""

    task: str
    split: str
    id: str
    text: str


class EvalNgrams:
    """The n-grams of a set of evaluation documents: the distinct keys (what the store is scanned for), each
    document's keys as positions into them, and each document's text key."""

    def __init__(self, documents: list[EvalDocument], tokens: list[np.ndarray], n: int = DEFAULT_NGRAM):
        if n < 1:
            raise ValueError(f"ngram={n}: must be >= 1")
        self.documents, self.tokens, self.n = documents, tokens, n
        per_document = [ngram_keys(ids, n) for ids in tokens]
        self.keys = np.unique(np.concatenate(per_document)) if per_document else np.zeros(0, np.uint64)
        self.positions = [np.searchsorted(self.keys, keys) for keys in per_document]
        self.text_keys = np.array([text_key(d.text) for d in documents], dtype=np.uint64)

    @classmethod
    def tokenized(cls, documents: list[EvalDocument], tokenizer, n: int = DEFAULT_NGRAM) -> EvalNgrams:
        """The documents tokenized as prepare tokenized the store (no special tokens, no truncation)."""
        from modeling.data.packing import plain_backend

        encoded = plain_backend(tokenizer).encode_batch([d.text for d in documents], add_special_tokens=False)
        return cls(documents, [np.asarray(e.ids, dtype=np.int64) for e in encoded] if documents else [], n)

    def table(self):
        return build_table(self.keys)

    def exclusion(self) -> Exclusion:
        """What a clean store leaves out: these documents and every document sharing an n-gram with them."""
        return Exclusion(self.n, self.keys, np.unique(self.text_keys), len(self.documents))


@dataclass
class DocumentOverlap(Record):
    """What the store holds of one evaluation document."""

    task: str
    split: str
    id: str
    tokens: int
    ngrams: int  # its n-grams (0 when it is shorter than n tokens)
    ngrams_in_store: int  # of those (each occurrence counted), how many some training document of the store holds
    covered: float  # share of its tokens inside an n-gram the store holds
    whole: bool  # the store trains on this document itself (same text, case and whitespace folded)
    store_documents: list[str] = field(default_factory=list)  # SOURCE/SHARD#ROW, the first holders, most first


@dataclass
class SplitOverlap(Record):
    """One task split, summed."""

    task: str
    split: str
    documents: int
    whole: int  # documents the store holds whole
    with_ngram: int  # documents sharing at least one n-gram with the store
    tokens: int
    covered_tokens: int  # tokens inside an n-gram the store holds

    @property
    def covered(self) -> float:
        return self.covered_tokens / self.tokens if self.tokens else 0.0


@dataclass
class ContaminationReport(Record):
    """contamination.json: the scan's settings and cost, each split, and the worst documents."""

    store: str
    ngram: int
    store_documents: int
    store_tokens: int
    processes: int
    seconds: float
    text_keys: bool  # the store kept text keys (whole-document matches need them)
    splits: list[SplitOverlap]
    documents: list[DocumentOverlap]  # every evaluation document with an n-gram or whole match, worst first


@dataclass
class _ShardScan:
    """One shard's answer, sparse (a worker sends back only what it found): the keys it holds and each one's first
    holder; per evaluation document, the first holder of its text (-1: none)."""

    keys: np.ndarray
    holders: np.ndarray
    whole: np.ndarray
    documents: int
    tokens: int
    has_text_keys: bool


_WORKER: dict = {}


def _init_worker(n, slots, table, bitmap, keys, text_keys):
    _WORKER.update(n=n, slots=slots, table=table, bitmap=bitmap, keys=keys, text_keys=text_keys)


def _scan_shard(shard: tuple[str, ShardRecord]) -> _ShardScan:
    w = _WORKER
    path, record = shard
    split = StoreSplit([Path(path)], [record])  # every record batch checked as it is scanned
    counts = np.zeros(len(w["keys"]), np.int64)
    holders = np.full(len(w["keys"]), -1, np.int64)
    whole = np.full(len(w["text_keys"]), -1, np.int64)
    for batch in range(len(split.values)):
        values, offsets = split.batch_values(batch)
        scan_batch(
            values, offsets, int(split.first[batch]), w["n"], w["slots"], w["table"], w["bitmap"], counts, holders
        )
    stored = split.text_keys()
    if stored is not None:
        distinct, first = np.unique(stored, return_index=True)  # each text key's first document in the shard
        at, hit = find_keys(distinct, w["text_keys"])
        whole[hit] = first[at[hit]]
    found = np.flatnonzero(counts)
    tokens = int(sum(len(v) for v in split.values))
    return _ShardScan(found, holders[found], whole, len(split), tokens, stored is not None)


def training_shards(store: Store) -> list[tuple[str, str, ShardRecord]]:
    """(source, shard path, its record) of every training shard, in the manifest's order."""
    return [
        (name, str(store.folder.source_dir(name) / part.shards["train"].file), part.shards["train"])
        for name, source in store.manifest.sources.items()
        for part in source.parts
    ]


def scan_store(store: Store, evaluation: EvalNgrams, num_proc: int | None = None, progress=None) -> ContaminationReport:
    """Every training shard of the store scanned once for the evaluation n-grams and texts (`num_proc` processes,
    default every core)."""
    started = time.monotonic()
    shards = training_shards(store)
    slots, table, bitmap = evaluation.table()
    setup = (evaluation.n, slots, table, bitmap, evaluation.keys, evaluation.text_keys)
    processes = max(1, min(num_proc or len(os.sched_getaffinity(0)), len(shards)))
    if processes == 1:
        _init_worker(*setup)
        results = list(_counted((_scan_shard((path, record)) for _, path, record in shards), progress))
    else:
        with ProcessPoolExecutor(
            processes, mp_context=get_context("fork"), initializer=_init_worker, initargs=setup
        ) as pool:
            results = list(_counted(pool.map(_scan_shard, [(path, record) for _, path, record in shards]), progress))
    found, holder, whole = _merge(results, shards, len(evaluation.keys), len(evaluation.documents))
    overlaps = [_document_overlap(evaluation, i, found, holder, whole) for i in range(len(evaluation.documents))]
    splits: dict[tuple[str, str], SplitOverlap] = {}
    for overlap in overlaps:
        s = splits.setdefault((overlap.task, overlap.split), SplitOverlap(overlap.task, overlap.split, 0, 0, 0, 0, 0))
        s.documents += 1
        s.whole += overlap.whole
        s.with_ngram += overlap.ngrams_in_store > 0
        s.tokens += overlap.tokens
        s.covered_tokens += round(overlap.covered * overlap.tokens)
    worst = sorted(
        (o for o in overlaps if o.whole or o.ngrams_in_store),
        key=lambda o: (-o.whole, -o.covered, -o.ngrams_in_store, o.task, o.split, o.id),
    )
    return ContaminationReport(
        store=str(store.folder.folder),
        ngram=evaluation.n,
        store_documents=sum(r.documents for r in results),
        store_tokens=sum(r.tokens for r in results),
        processes=processes,
        seconds=time.monotonic() - started,
        text_keys=all(r.has_text_keys for r in results),  # an empty store has nothing to miss
        splits=list(splits.values()),
        documents=worst,
    )


def _counted(results, progress):
    """Each shard's result as it comes, `progress(1)` after each (a progress bar's update)."""
    for result in results:
        yield result
        if progress:
            progress(1)


def _merge(results: list[_ShardScan], shards, keys: int, documents: int):
    """Shard by shard in the manifest's order, so the first holder of each key and text does not depend on how many
    processes scanned."""
    found = np.zeros(keys, bool)
    holder = np.full(keys, "", dtype=object)
    whole = np.full(documents, "", dtype=object)
    for (source, path, _), result in zip(shards, results, strict=True):
        name = f"{source}/{Path(path).name}"
        new = ~found[result.keys]
        for k, row in zip(result.keys[new], result.holders[new], strict=True):
            holder[k] = f"{name}#{row}"
        found[result.keys] = True
        for d in np.nonzero((result.whole >= 0) & (whole == ""))[0]:
            whole[d] = f"{name}#{result.whole[d]}"
    return found, holder, whole


def _document_overlap(evaluation: EvalNgrams, i: int, found, holder, whole) -> DocumentOverlap:
    document, positions, n = evaluation.documents[i], evaluation.positions[i], evaluation.n
    tokens = len(evaluation.tokens[i])
    hits = found[positions] if len(positions) else np.zeros(0, bool)
    covered = np.zeros(tokens, bool)
    for start in np.nonzero(hits)[0]:
        covered[start : start + n] = True
    holders = Counter(holder[positions[hits]]) if hits.any() else Counter()
    store_documents = ([whole[i]] if whole[i] else []) + [d for d, _ in holders.most_common(3) if d != whole[i]]
    return DocumentOverlap(
        task=document.task,
        split=document.split,
        id=document.id,
        tokens=tokens,
        ngrams=len(positions),
        ngrams_in_store=int(hits.sum()),
        covered=float(covered.mean()) if tokens else 0.0,
        whole=bool(whole[i]),
        store_documents=store_documents[:3],
    )
