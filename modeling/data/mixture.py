"""A phase's document stream: sources mixed by weight (or in natural proportion), a seeded shuffle
buffer, and a held-out slice chosen by a hash of each document's text.

Weighted mixing samples a source per document and restarts a source when it runs out (so the
weights hold however long the phase is). Natural proportion reads every source once per epoch,
interleaved at random in proportion to the sources' sizes on disk.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from modeling.common.errors import DataError
from modeling.common.records import Record
from modeling.data.sources import SkipLog, SourceSpec, iter_documents, resolve_files


def is_held_out(text: str, fraction: float) -> bool:
    """Stable across runs, machines and source order: a document is held out by what it says."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


@dataclass
class SourcePass:
    """What one pass over a source's files found. Passes over the same files find the same, so the
    first pass is what gets reported (with how many passes were started)."""

    documents: int = 0
    held_out: int = 0
    skips: SkipLog = field(default_factory=SkipLog)
    complete: bool = False
    passes_started: int = 0

    def report(self, name: str) -> SourceReport:
        return SourceReport(
            documents_per_pass=self.documents,
            held_out_per_pass=self.held_out,
            skipped_per_pass=self.skips.as_dict().get(name, {}),
            first_pass_complete=self.complete,
            passes_started=self.passes_started,
        )


@dataclass
class SourceReport(Record):
    """What reading a source found, per pass over its files (the first pass; later ones repeat it)."""

    documents_per_pass: int = 0
    held_out_per_pass: int = 0
    skipped_per_pass: dict[str, int] = field(default_factory=dict)  # reason -> documents
    first_pass_complete: bool = False
    passes_started: int = 0


@dataclass
class StreamStats:
    sources: dict[str, SourcePass] = field(default_factory=dict)

    def begin_pass(self, name: str) -> tuple[SourcePass | None, SkipLog]:
        """The record to fill (None after the first pass) and the skip log to use."""
        record = self.sources.get(name)
        if record is None:
            record = self.sources[name] = SourcePass()
            record.passes_started = 1
            return record, record.skips
        record.passes_started += 1
        return None, SkipLog(quiet=True)

    def reports(self) -> dict[str, SourceReport]:
        return {name: record.report(name) for name, record in self.sources.items()}


@dataclass
class PhaseMixture:
    sources: list[SourceSpec]
    weights: list[float] | None  # None = natural proportion
    holdout_fraction: float
    seed: int
    phase: str
    shuffle_buffer: int = 10_000

    def documents(self, stats: StreamStats, epochs: int | None = None) -> Iterator[tuple[int, str]]:
        """(source index, text) of the training documents; forever unless `epochs` is given."""
        for epoch in itertools.count() if epochs is None else range(epochs):
            yield from self.epoch_documents(stats, epoch)

    def epoch_documents(self, stats: StreamStats, epoch: int) -> Iterator[tuple[int, str]]:
        """One epoch in natural proportion; with weights, a stream without end."""
        rng = random.Random(f"{self.seed}/{self.phase}/epoch{epoch}")
        yield from self._shuffled(self._one_epoch(rng, stats), rng)

    def held_out_documents(self, max_documents: int) -> list[tuple[int, str]]:
        """The held-out slice: the first `max_documents` held-out documents, sources read round-robin."""
        stats = StreamStats()
        streams = [self._read(i, stats, held_out=True) for i in range(len(self.sources))]
        picked = []
        while streams and len(picked) < max_documents:
            for stream in list(streams):
                item = next(stream, None)
                if item is None:
                    streams.remove(stream)
                else:
                    picked.append(item)
        return picked[:max_documents]

    # -- internals

    def _read(self, index: int, stats: StreamStats, held_out: bool = False) -> Iterator[tuple[int, str]]:
        spec = self.sources[index]
        record, skips = stats.begin_pass(spec.name)
        for text in iter_documents(spec, skips):
            kept_out = is_held_out(text, self.holdout_fraction)
            if record:
                if kept_out:
                    record.held_out += 1
                else:
                    record.documents += 1
            if kept_out == held_out:
                yield index, text
        if record:
            record.complete = True

    def _one_epoch(self, rng: random.Random, stats: StreamStats) -> Iterator[tuple[int, str]]:
        weights = self.weights or [source_size(s) for s in self.sources]
        streams = {i: self._read(i, stats) for i in range(len(self.sources))}
        produced = {i: 0 for i in streams}
        while streams:
            live = list(streams)
            i = rng.choices(live, weights=[weights[j] for j in live])[0]
            item = next(streams[i], None)
            if item is not None:
                produced[i] += 1
                yield item
                continue
            if produced[i] == 0:
                name = self.sources[i].name
                skipped = stats.sources[name].skips.as_dict().get(name, {})
                raise DataError(
                    f"phase '{self.phase}': source '{name}' yielded no training documents"
                    + (f" (skipped: {skipped})" if skipped else "")
                )
            if self.weights is None:
                del streams[i]  # natural proportion: each source once per epoch
            else:
                streams[i] = self._read(i, stats)  # weighted: start the source again
                produced[i] = 0

    def _shuffled(self, items: Iterator, rng: random.Random) -> Iterator:
        """Seeded shuffle buffer: bounded memory, breaks up files ordered by patient, date or topic."""
        if self.shuffle_buffer <= 1:
            yield from items
            return
        buffer = []
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = rng.randrange(len(buffer))
            yield buffer[j]
            buffer[j] = item
        rng.shuffle(buffer)
        yield from buffer


def source_size(spec: SourceSpec) -> float:
    """Bytes on disk, the natural-proportion weight (compressed files count about 4x)."""
    if spec.format == "hf":
        raise DataError(
            f"source '{spec.name}': a Hugging Face dataset has no size on disk to weigh it by; "
            "give the phase's sources explicit weights, e.g. {name: 1.0}"
        )
    total = 0.0
    for path in resolve_files(spec):
        size = os.path.getsize(path)
        total += size * 4 if path.endswith(".gz") else size
    return max(total, 1.0)
