"""Tokenize documents and pack them into rows of at most `max_seq_length` tokens.

Every document becomes `[CLS] ... [SEP]`; a longer one is cut into chunks, each wrapped the same
way. Chunks are packed best-fit into a small set of open rows, so rows come out nearly full with
no padding inside. Each row remembers its documents' lengths: the attention masks built from them
(modeling.common.attention) keep documents from seeing each other.
"""

from __future__ import annotations

import bisect
import copy
import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from modeling.common import run_files
from modeling.data.mixture import PhaseMixture, StreamStats


class Chunker:
    """Batched fast tokenization; documents -> `[CLS] tokens [SEP]` chunks of at most max_seq_length."""

    def __init__(self, tokenizer, max_seq_length: int, batch_size: int = 256):
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise ValueError("the tokenizer needs [CLS] and [SEP] tokens to wrap documents")
        self.max_seq_length, self.batch_size = max_seq_length, batch_size
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.backend = plain_backend(tokenizer)

    def chunks(self, documents: Iterable[tuple[int, str]]) -> Iterator[tuple[int, list[int]]]:
        """(source index, chunk ids) for each chunk of each document, in document order. A document's
        first chunk is a list; its continuations are a `Continuation` (a list too), so documents stay countable."""
        body = self.max_seq_length - 2
        documents = iter(documents)
        while batch := list(itertools.islice(documents, self.batch_size)):
            encoded = self.backend.encode_batch([text for _, text in batch], add_special_tokens=False)
            for (source, _), ids in zip(batch, (e.ids for e in encoded), strict=True):
                for start in range(0, max(len(ids), 1), body):
                    chunk = [self.cls, *ids[start : start + body], self.sep]
                    yield source, chunk if start == 0 else Continuation(chunk)


def plain_backend(tokenizer):
    """The Rust tokenizer directly: batched, and no truncation, padding or length warnings (callers cut
    documents themselves)."""
    backend = copy.deepcopy(tokenizer.backend_tokenizer)
    backend.no_truncation()
    backend.no_padding()
    return backend


class Continuation(list):
    """Token ids of a chunk that continues a document cut at the row length."""


@dataclass
class PackedRow:
    """One row of packed documents: what the packer emits, what collation and masking read."""

    input_ids: list[int]
    doc_lengths: list[int]  # tokens of each document (chunk) in the row, in order
    doc_sources: list[int] | None = None  # index of each document's source (None: all from source 0)
    doc_starts: list[bool] | None = None  # False where a chunk continues a document cut at the row length
    row_index: int = -1  # position in the phase's stream: masking is seeded by it


@dataclass
class _OpenRow:
    chunks: list = field(default_factory=list)  # (source, ids)
    used: int = 0


class BestFitPacker:
    """Online best-fit: each chunk goes to the open row it fills most tightly; when more than
    `open_rows` rows are open, the fullest is emitted. Deterministic for a given chunk order."""

    def __init__(self, max_seq_length: int, open_rows: int = 64, min_chunk: int = 3):
        self.capacity, self.open_rows, self.min_chunk = max_seq_length, open_rows, min_chunk
        self.rows: list[_OpenRow] = []
        self.free: list[int] = []  # sorted free space, parallel to self.rows

    def add(self, source: int, ids: list[int]) -> list[PackedRow]:
        n = len(ids)
        k = bisect.bisect_left(self.free, n)
        if k < len(self.free):
            row = self.rows.pop(k)
            self.free.pop(k)
        else:
            row = _OpenRow()
        row.chunks.append((source, ids))
        row.used += n
        done = []
        if self.capacity - row.used < self.min_chunk:
            done.append(_finish(row))
        else:
            self._insert(row)
        if len(self.rows) > self.open_rows:
            self.free.pop(0)
            done.append(_finish(self.rows.pop(0)))
        return done

    def flush(self) -> list[PackedRow]:
        done = [_finish(row) for row in self.rows]
        self.rows, self.free = [], []
        return done

    def _insert(self, row: _OpenRow):
        space = self.capacity - row.used
        k = bisect.bisect_left(self.free, space)
        self.free.insert(k, space)
        self.rows.insert(k, row)


def _finish(row: _OpenRow) -> PackedRow:
    return PackedRow(
        input_ids=[t for _, ids in row.chunks for t in ids],
        doc_lengths=[len(ids) for _, ids in row.chunks],
        doc_sources=[source for source, _ in row.chunks],
        doc_starts=[not isinstance(ids, Continuation) for _, ids in row.chunks],
    )


def pack(chunks: Iterable[tuple[int, list[int]]], max_seq_length: int, open_rows: int = 64) -> Iterator[PackedRow]:
    packer = BestFitPacker(max_seq_length, open_rows)
    for source, ids in chunks:
        yield from packer.add(source, ids)
    yield from packer.flush()


def packing_efficiency(rows: Iterable[PackedRow], max_seq_length: int) -> float:
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
        input_ids[b, : len(row.input_ids)] = torch.tensor(row.input_ids, dtype=torch.long)
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


class PackedRows(IterableDataset):
    """The training stream of a phase: mixed documents -> chunks -> best-fit rows, each tagged with
    its index in the stream (what masking is seeded by).

    With dataloader workers, every worker runs the same deterministic stream and keeps only its
    share of batches (batch b goes to worker b % workers, which is the order the DataLoader reads
    them back in), so the rows and their order do not depend on the number of workers."""

    def __init__(
        self,
        mixture: PhaseMixture,
        tokenizer,
        max_seq_length: int,
        batch_size: int,
        open_rows: int = 64,
        tokenize_batch: int = 256,
        epochs: int | None = None,
        stats_path: str | None = None,
    ):
        self.mixture, self.tokenizer, self.max_seq_length = mixture, tokenizer, max_seq_length
        self.batch_size, self.open_rows, self.tokenize_batch, self.epochs = (
            batch_size,
            open_rows,
            tokenize_batch,
            epochs,
        )
        self.stats_path = stats_path
        self.stats = StreamStats()

    def __iter__(self):
        worker = get_worker_info()
        worker_id, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        self.stats = StreamStats()
        last_dump = 0.0
        for index, row in enumerate(self._rows()):
            if (index // self.batch_size) % workers == worker_id:
                row.row_index = index
                yield row
            if worker_id == 0 and self.stats_path and time.monotonic() - last_dump > 2.0:
                self.dump_stats()
                last_dump = time.monotonic()
        if worker_id == 0:
            self.dump_stats()

    def _rows(self) -> Iterator[PackedRow]:
        chunker = Chunker(self.tokenizer, self.max_seq_length, self.tokenize_batch)
        for epoch in itertools.count() if self.epochs is None else range(self.epochs):
            yield from epoch_rows(self.mixture, self.stats, epoch, chunker, self.open_rows)

    def dump_stats(self):
        """Worker processes cannot hand objects back, so the reading statistics go through a file."""
        if not self.stats_path:
            return
        reports = {name: report.to_dict() for name, report in self.stats.reports().items()}
        run_files.write_json(self.stats_path, reports)


def epoch_rows(
    mixture: PhaseMixture, stats: StreamStats, epoch: int, chunker: Chunker, open_rows: int
) -> Iterator[PackedRow]:
    """The rows of one epoch; the packer is flushed at its end. Training and the counting pass both
    read epochs through here, so an epoch trained is exactly the epoch counted."""
    documents = mixture.epoch_documents(stats, epoch)
    yield from pack(chunker.chunks(documents), chunker.max_seq_length, open_rows)


def count_rows(
    mixture: PhaseMixture, tokenizer, max_seq_length: int, open_rows: int = 64, tokenize_batch: int = 256
) -> tuple[int, int]:
    """(rows, tokens) of one epoch of a natural-proportion phase: the counting pass epoch-length phases need."""
    chunker = Chunker(tokenizer, max_seq_length, tokenize_batch)
    rows = tokens = 0
    with tqdm(desc="counting one epoch", unit=" rows") as progress:
        for row in epoch_rows(mixture, StreamStats(), 0, chunker, open_rows):
            rows += 1
            tokens += len(row.input_ids)
            progress.update()
    return rows, tokens


def held_out_rows(
    mixture: PhaseMixture, tokenizer, max_seq_length: int, max_documents: int, open_rows: int = 64
) -> list[PackedRow]:
    documents = mixture.held_out_documents(max_documents)
    rows = list(pack(Chunker(tokenizer, max_seq_length).chunks(documents), max_seq_length, open_rows))
    for index, row in enumerate(rows):
        row.row_index = index
    return rows
