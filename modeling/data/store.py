"""A token store: every source of a recipe read once, split into training and held-out documents, tokenized,
and kept on disk as Arrow, so training reads token ids instead of parsing and tokenizing again.

    stores/NAME/
      manifest.json              written last: a store without it is not complete
      tokenizer/                 the tokenizer the ids belong to (a store is self-sufficient)
      SOURCE/
        train-00003.arrow        Arrow IPC stream, one row per document: input_ids list<uint16> (uint32 for
        held_out-00003.arrow     vocabularies over 65,536), the document's tokens without [CLS]/[SEP]; text_key
                                 uint64, its text case and whitespace folded, hashed (`text_key`: what a
                                 contamination check finds evaluation documents by; stores of version 1 lack it)
        part-00003.json          what part 3 read: files, documents, tokens, skips, the shards' sha256 and
                                 a CRC32 of each record batch's offsets, ids and keys (version 3)
      logs/                      the executor's task logs and completion markers
      .lock, .readers/           who reads the store and who may change it (modeling.data.store_lock)
      row_indexes/               row indexes built by training runs (modeling.data.rows), named by what they were
                                 built from, so every run on the store with the same settings shares them

Work is cut into parts: a part is a run of a source's files (about `part_bytes` of input; a larger file is
a part of its own), so parts, and therefore the store, do not depend on how many processes prepare it. The
parts run on datatrove's executors: LocalPipelineExecutor with `num_proc` workers on one machine (a killed
prepare skips the parts it completed), or its Slurm/Ray executors across machines (README). Each part's
shards and record are written under temporary names and renamed; the manifest is written last, from the
part records, after every part is complete.

A shard opens with `datasets.Dataset.from_file(path)`; training memory-maps them (`StoreSplit`). A reader
checks each shard's size when it opens it, and each record batch against its CRC32s the first time it reads
from it: the document offsets when it reads every document's length, the token ids when it reads a document.
So nothing damaged feeds a batch, and the check costs nothing at start-up however large the store: each byte
is checked once per process, when it is first read anyway (a record batch is read whole the first time, so the
first pass over a store reads more than later ones). `verify()` reads the whole store against the shards' sha256.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from modeling.common import run_files
from modeling.common.errors import DataError
from modeling.common.loading import load_tokenizer
from modeling.common.records import Record
from modeling.common.skips import SkipLog
from modeling.data.given_ids import GivenIds
from modeling.data.ngrams import Exclusion, text_key
from modeling.data.sources import SourceSpec, TokenIds, iter_file_records, iter_records, resolve_files
from modeling.data.store_lock import read_lock

log = logging.getLogger(__name__)

# 2: shards keep each document's text key (contamination checks); 3: parts keep a CRC32 per record batch. Older
# versions read the same, unchecked as they are read (Store warns; `verify()` still checks them whole).
STORE_VERSION = 3
SPLITS = ("train", "held_out")
TOKENIZE_BATCH = 512  # documents per call to the fast tokenizer
WRITE_BATCH = 4096  # documents per Arrow record batch
DEFAULT_PART_BYTES = 256 * 2**20
COMPRESSED = (".gz", ".zstd", ".bz2")  # count four times their size when parts are cut
# Below this much input the parts run in the preparing process: a worker process first imports the tokenizer stack,
# which takes longer than tokenizing a small corpus.
SMALL_INPUT_BYTES = 16 * 2**20


def is_held_out(text: str, fraction: float) -> bool:
    """Stable across runs, machines and source order: a document is held out by what it says."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


# ---------------------------------------------------------------- records


@dataclass
class ShardRecord(Record):
    file: str  # name inside the source's folder
    documents: int
    tokens: int
    bytes: int
    sha256: str
    batch_crc32: list[list[int]] | None = None  # per record batch: CRC32 of its offsets, token ids, text keys

    OMITTED_WHEN_NONE = ("batch_crc32",)


@dataclass
class PartRecord(Record):
    """part-NNNNN.json: one part of a source, prepared."""

    source: str
    part: int
    files: list[str]
    shards: dict[str, ShardRecord]  # train / held_out
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> documents
    exclusion: str | None = None  # fingerprint of what was left out for evaluation sets (Exclusion), if anything

    OMITTED_WHEN_NONE = ("exclusion",)


SAMPLED_BLOCKS, SAMPLED_BLOCK_BYTES = 16, 64 * 1024


@dataclass
class FileFingerprint(Record):
    """A source file as prepared: a file with the same name, size and modification time is the same file; one
    copied (a new modification time) is the same when its sampled contents are."""

    path: str
    bytes: int
    mtime_ns: int
    sampled_sha256: str | None = None  # of SAMPLED_BLOCKS blocks spread over the file (stores of version 3)

    OMITTED_WHEN_NONE = ("sampled_sha256",)

    @classmethod
    def of(cls, path: str, sample: bool = True) -> FileFingerprint:
        stat = os.stat(path)
        return cls(path, stat.st_size, stat.st_mtime_ns, sampled_sha256(path, stat.st_size) if sample else None)


def sampled_sha256(path: str, size: int) -> str:
    """A hash of a few blocks spread evenly over a file, the first and the last among them: it tells a copy from
    an edited file at a cost that does not grow with the file."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        last = max(0, size - SAMPLED_BLOCK_BYTES)
        for start in sorted({last * i // (SAMPLED_BLOCKS - 1) for i in range(SAMPLED_BLOCKS)}):
            handle.seek(start)
            digest.update(handle.read(SAMPLED_BLOCK_BYTES))
    return digest.hexdigest()


@dataclass
class SourceRecord(Record):
    spec: dict  # the SourceSpec the store was prepared from
    files: list[FileFingerprint]  # what was read (empty for a Hugging Face dataset)
    documents: dict[str, int]  # split -> documents
    tokens: dict[str, int]  # split -> tokens
    skipped: dict[str, int]  # reason -> documents
    parts: list[PartRecord]


@dataclass
class ExclusionRecord(Record):
    """What a clean store left out: documents of these evaluation sets, and documents sharing an n-gram with them."""

    tasks: list[str]  # the task configs, as the recipe names them
    data_dirs: list[str | None]  # the data each was read from (its data.path where None)
    ngram: int
    documents: int  # evaluation documents
    fingerprint: str  # of their n-gram and text keys (Exclusion.fingerprint)


@dataclass
class StoreManifest(Record):
    version: int
    tokenizer_sha256: str  # tokenizer_fingerprint of the tokenizer in tokenizer/
    vocab_size: int
    dtype: str  # of the token ids: uint16 or uint32
    holdout_fraction: float
    sources: dict[str, SourceRecord]
    tokenizer_settings: dict = field(default_factory=dict)  # how the recipe made the tokenizer
    exclusion: ExclusionRecord | None = None  # evaluation sets left out (store.exclude_tasks), if any

    OMITTED_WHEN_NONE = ("exclusion",)

    def tokens(self, split: str = "train") -> int:
        return sum(s.tokens[split] for s in self.sources.values())


# ---------------------------------------------------------------- layout


class StoreFolder:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)

    @property
    def manifest_json(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def tokenizer_dir(self) -> Path:
        return self.folder / "tokenizer"

    @property
    def logs_dir(self) -> Path:
        return self.folder / "logs"

    @property
    def row_indexes_dir(self) -> Path:
        return self.folder / "row_indexes"

    def source_dir(self, source: str) -> Path:
        return self.folder / source

    def shard(self, source: str, split: str, part: int) -> Path:
        return self.source_dir(source) / f"{split}-{part:05d}.arrow"

    def part_json(self, source: str, part: int) -> Path:
        return self.source_dir(source) / f"part-{part:05d}.json"

    def is_complete(self) -> bool:
        return self.manifest_json.exists()


def tokenizer_fingerprint(tokenizer) -> str:
    """What makes token ids mean what they mean: the vocabulary, merges, pre-tokenizer and special tokens.
    The same tokenizer saved twice (or loaded from the Hub and from a folder) has the same fingerprint."""
    state = {"backend": json.loads(tokenizer.backend_tokenizer.to_str()), "special": tokenizer.special_tokens_map}
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def batch_crc32(offsets: np.ndarray, values: np.ndarray, keys: np.ndarray) -> list[int]:
    """What a record batch is checked against: the CRC32 of its document offsets, its token ids, its text keys."""
    return [_crc32(array) for array in (offsets, values, keys)]


def _crc32(array: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- planning


@dataclass(frozen=True)
class Part:
    """One unit of work: some files of one source (or a whole Hugging Face dataset)."""

    index: int  # over the whole store: the executor's rank
    source: str
    number: int  # within the source
    files: tuple[str, ...]


def default_workers(parts: list[Part]) -> int:
    """Every core for a large input, one process for a small one (SMALL_INPUT_BYTES); a Hugging Face dataset's
    size is not known beforehand, so it counts as large."""
    if not any(part.files == () for part in parts):
        weight = sum(os.path.getsize(f) * (4 if f.endswith(COMPRESSED) else 1) for p in parts for f in p.files)
        if weight < SMALL_INPUT_BYTES:
            return 1
    return len(os.sched_getaffinity(0))


def plan_parts(specs: list[SourceSpec], part_bytes: int = DEFAULT_PART_BYTES) -> list[Part]:
    """Each source's files in the order it lists them, cut into runs of about `part_bytes` (compressed files
    count four times their size); the plan depends on the files only, never on how many processes run it."""
    parts: list[Part] = []
    for spec in specs:
        if spec.format == "hf":
            parts.append(Part(len(parts), spec.name, 0, ()))
            continue
        groups: list[list[str]] = [[]]
        size = 0
        for path in map(os.path.abspath, resolve_files(spec)):  # tasks may run in another working directory
            weight = os.path.getsize(path) * (4 if path.endswith(COMPRESSED) else 1)
            if groups[-1] and size + weight > part_bytes:
                groups.append([])
                size = 0
            groups[-1].append(path)
            size += weight
        for number, files in enumerate(groups):
            parts.append(Part(len(parts), spec.name, number, tuple(files)))
    return parts


# ---------------------------------------------------------------- one part


class PreparePart:
    """What each executor task runs: part `rank` of the plan, read, split, tokenized and written."""

    def __init__(
        self,
        store: Path,
        specs: list[SourceSpec],
        parts: list[Part],
        holdout_fraction: float,
        exclusion: Exclusion | None = None,
    ):
        self.store, self.parts, self.holdout_fraction = str(store), parts, holdout_fraction
        self.specs = {spec.name: spec for spec in specs}
        self.exclusion = exclusion

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        from modeling.common.cli import setup_logging

        setup_logging()  # a task may run in a fresh process
        part, store = self.parts[rank], StoreFolder(self.store)
        if not store.part_json(part.source, part.number).exists():  # written last: the part is complete
            started = time.monotonic()
            record = prepare_part(store, self.specs[part.source], part, self.holdout_fraction, self.exclusion)
            train = record.shards["train"]
            log.info(
                "part %d of %d (%s, %d files): %d documents, %d tokens in %.0f s",
                rank + 1,
                world_size,
                part.source,
                len(part.files),
                train.documents,
                train.tokens,
                time.monotonic() - started,
            )
        return data


def prepare_part(
    store: StoreFolder, spec: SourceSpec, part: Part, holdout_fraction: float, exclusion: Exclusion | None = None
) -> PartRecord:
    from modeling.data.packing import plain_backend

    tokenizer = load_tokenizer(store.tokenizer_dir)
    backend = plain_backend(tokenizer)
    dtype = pa.uint16() if len(tokenizer) <= 2**16 else pa.uint32()
    schema = pa.schema([("input_ids", pa.list_(dtype)), ("text_key", pa.uint64())])
    skips = SkipLog()
    given = GivenIds(tokenizer, spec.name)
    files = list(part.files)
    records = iter_file_records(spec, files, skips, token_ids=True) if files else iter_records(spec, skips, True)
    try:
        store.source_dir(spec.name).mkdir(parents=True, exist_ok=True)
        writers = {split: _ShardWriter(store.shard(spec.name, split, part.number), schema) for split in SPLITS}
        try:
            batch: list[tuple[str, str]] = []
            for where, text in records:
                batch.append((where, text))
                if len(batch) == TOKENIZE_BATCH:
                    _write_batch(batch, backend, given, writers, holdout_fraction, exclusion, skips, spec.name)
                    batch = []
            _write_batch(batch, backend, given, writers, holdout_fraction, exclusion, skips, spec.name, last=True)
            shards = {split: writer.close() for split, writer in writers.items()}
        finally:
            for writer in writers.values():
                writer.abort()
        record = PartRecord(
            source=spec.name,
            part=part.number,
            files=list(part.files),
            shards=shards,
            skipped=skips.as_dict().get(spec.name, {}),
            exclusion=exclusion.fingerprint() if exclusion else None,
        )
        run_files.write_json(store.part_json(spec.name, part.number), record.to_dict())
    except OSError as error:  # the disk filled up, the folder went away ...: reading errors are DataErrors
        raise DataError(
            f"{store.source_dir(spec.name)}: cannot write the store ({error.strerror or error}); the parts already "
            "finished are kept: fix this and run prepare again"
        ) from None
    return record


def _write_batch(
    batch: list[tuple[str, str | TokenIds]],
    backend,
    given: GivenIds,
    writers: dict,
    holdout_fraction: float,
    exclusion: Exclusion | None,
    skips: SkipLog,
    source: str,
    last: bool = False,
):
    """Texts are tokenized; samples that came as ids become documents by GivenIds, kept as they are, their text
    decoded (what the held-out split, the text key and the exclusion read). `last`: the part's final batch."""
    texts = [(where, text) for where, text in batch if not isinstance(text, TokenIds)]
    encoded = backend.encode_batch([text for _, text in texts], add_special_tokens=False) if texts else []
    documents = [(where, e.ids, text) for (where, text), e in zip(texts, encoded, strict=True)]
    samples = [(where, sample) for where, sample in batch if isinstance(sample, TokenIds)]
    documents += given.documents(samples, backend, skips, last)
    for where, ids, text in documents:
        reason = exclusion.reason(ids, text) if exclusion is not None else None
        if reason is not None:
            skips.add(source, reason, where, expected=True)  # asked for: counted in the manifest, not warned about
            continue
        writers["held_out" if is_held_out(text, holdout_fraction) else "train"].add(ids, text_key(text))


class _ShardWriter:
    """Documents into one Arrow shard, under a temporary name until closed."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path, self.schema = path, schema
        self.tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_stream(self.sink, schema)
        self.pending: list[list[int]] = []
        self.keys: list[int] = []
        self.batch_crc32: list[list[int]] = []
        self.documents = self.tokens = 0

    def add(self, ids: list[int], key: int):
        self.pending.append(ids)
        self.keys.append(key)
        self.documents += 1
        self.tokens += len(ids)
        if len(self.pending) == WRITE_BATCH:
            self._flush()

    def _flush(self):
        if self.pending:
            ids = pa.array(self.pending, type=self.schema.field("input_ids").type)
            keys = pa.array(self.keys, type=pa.uint64())
            self.writer.write_batch(pa.record_batch([ids, keys], schema=self.schema))
            self.batch_crc32.append(batch_crc32(ids.offsets.to_numpy(), ids.values.to_numpy(), keys.to_numpy()))
            self.pending, self.keys = [], []

    def close(self) -> ShardRecord:
        self._flush()
        self.writer.close()
        self.sink.close()
        os.replace(self.tmp, self.path)
        size = self.path.stat().st_size
        return ShardRecord(self.path.name, self.documents, self.tokens, size, _sha256(self.path), self.batch_crc32)

    def abort(self):
        """After close, nothing to do; after a failure, the temporary file goes."""
        if not self.sink.closed:
            self.sink.close()
        self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- the whole store


def prepare_store(
    folder: Path | str,
    specs: list[SourceSpec],
    holdout_fraction: float,
    num_proc: int | None = 1,
    part_bytes: int = DEFAULT_PART_BYTES,
    tokenizer_settings: dict | None = None,
    exclusion: Exclusion | None = None,
    exclusion_tasks: list[tuple[str, str | None]] | None = None,
) -> StoreManifest:
    """Prepare every part not yet prepared (the tokenizer must already be in `folder`/tokenizer), then write
    the manifest. Safe to run again after a kill: completed parts are kept. With `exclusion`, documents of the
    evaluation sets (`exclusion_tasks`) and documents sharing an n-gram with them are left out and counted.
    `num_proc` None: default_workers."""
    # Imported here: reading a store (training, a GPU machine without datatrove) never needs the executor.
    from modeling.data.executor import QuietLocalExecutor, quiet_datatrove

    store = StoreFolder(Path(folder).absolute())  # tasks may run in another working directory
    parts = plan_parts(specs, part_bytes)
    executor = QuietLocalExecutor(
        pipeline=[PreparePart(store.folder, specs, parts, holdout_fraction, exclusion)],
        tasks=len(parts),
        workers=max(1, min(num_proc or default_workers(parts), len(parts))),
        logging_dir=str(store.logs_dir),
    )
    done = sum(store.part_json(p.source, p.number).exists() for p in parts)
    _check_parts_exclusion(store, parts, exclusion.fingerprint() if exclusion else None)  # before hours of work
    log.info(
        "store %s: %d parts of %d sources (%d already prepared), %d processes",
        store.folder,
        len(parts),
        len(specs),
        done,
        executor.workers,
    )
    run_files.remove_orphaned_temporaries(store.folder)  # left by a prepare that was killed
    with quiet_datatrove():
        try:
            executor.run()
        except Exception as error:  # a part's error arrives through the executor's process pool
            # the pool terminated the other tasks, mid-write perhaps: their temporary shards go too
            run_files.remove_orphaned_temporaries(store.folder)
            raise _task_error(error) from None
    record = None
    if exclusion is not None:
        configs, data_dirs = [c for c, _ in exclusion_tasks or []], [d for _, d in exclusion_tasks or []]
        record = ExclusionRecord(configs, data_dirs, exclusion.n, exclusion.documents, exclusion.fingerprint())
    try:
        return write_manifest(store, specs, parts, holdout_fraction, tokenizer_settings or {}, record)
    except OSError as error:
        raise DataError(
            f"{store.manifest_json}: cannot write it ({error.strerror or error}); run prepare again"
        ) from None


def _check_parts_exclusion(store: StoreFolder, parts: list[Part], fingerprint: str | None) -> None:
    """Parts a killed prepare finished must have left out what this prepare leaves out."""
    for part in parts:
        path = store.part_json(part.source, part.number)
        if path.exists() and PartRecord.load(path).exclusion != fingerprint:
            raise DataError(
                f"{path}: prepared leaving out other evaluation documents than this prepare does; prepare the store "
                "again with --rebuild"
            )


def _task_error(error: Exception) -> Exception:
    from modeling.common.errors import UserError

    cause = error
    while cause is not None and not isinstance(cause, UserError):
        cause = cause.__cause__ or cause.__context__
    return cause if cause is not None else error


def write_manifest(
    store: StoreFolder,
    specs: list[SourceSpec],
    parts: list[Part],
    holdout_fraction: float,
    tokenizer_settings: dict,
    exclusion: ExclusionRecord | None = None,
) -> StoreManifest:

    tokenizer = load_tokenizer(store.tokenizer_dir)
    sources = {}
    for spec in specs:
        records = [PartRecord.load(store.part_json(spec.name, p.number)) for p in parts if p.source == spec.name]
        skipped: dict[str, int] = {}
        for record in records:
            for reason, n in record.skipped.items():
                skipped[reason] = skipped.get(reason, 0) + n
        files = [FileFingerprint.of(path) for p in parts if p.source == spec.name for path in p.files]
        sources[spec.name] = SourceRecord(
            spec=spec_record(spec),
            files=files,
            documents={split: sum(r.shards[split].documents for r in records) for split in SPLITS},
            tokens={split: sum(r.shards[split].tokens for r in records) for split in SPLITS},
            skipped=skipped,
            parts=records,
        )
    manifest = StoreManifest(
        version=STORE_VERSION,
        tokenizer_sha256=tokenizer_fingerprint(tokenizer),
        vocab_size=len(tokenizer),
        dtype="uint16" if len(tokenizer) <= 2**16 else "uint32",
        holdout_fraction=holdout_fraction,
        sources=sources,
        tokenizer_settings=tokenizer_settings,
        exclusion=exclusion,
    )
    run_files.write_json(store.manifest_json, manifest.to_dict())
    return manifest


def spec_record(spec: SourceSpec) -> dict:
    """A source's options as the manifest keeps them."""
    return json.loads(json.dumps(dataclasses.asdict(spec)))


# ---------------------------------------------------------------- reading


class StoreSplit:
    """The documents of one source and split, memory-mapped: lengths for planning, token ids for rows. With the
    shards' records, each record batch is checked against its CRC32s when first read (a store before version 3
    has none: Store warns)."""

    def __init__(self, paths: list[Path], records: list[ShardRecord] | None = None):
        self.values: list[np.ndarray] = []  # per record batch: every token id, documents one after another
        self.offsets: list[np.ndarray] = []  # per record batch: where each document starts (one more at the end)
        self._keys: list | None = []  # memory-mapped text_key columns; None where a shard (version 1) lacks them
        self._expected: list[list[int] | None] = []  # per record batch: its CRC32s (batch_crc32), None: unchecked
        self._where: list[tuple[Path, int]] = []  # per record batch: its shard and its number there
        for at, path in enumerate(paths):
            record = records[at] if records is not None else None
            try:
                table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
            except (pa.ArrowInvalid, OSError) as error:
                raise DataError(f"{path}: not a readable store shard ({error}); prepare the store again") from None
            chunks = table.column("input_ids").chunks
            crcs = record.batch_crc32 if record is not None and record.batch_crc32 is not None else None
            if crcs is not None and len(crcs) != len(chunks):
                raise DataError(
                    f"{path}: {len(chunks)} record batches, the manifest checks {len(crcs)}; prepare the store again"
                )
            for number, chunk in enumerate(chunks):
                self.values.append(chunk.values.to_numpy(zero_copy_only=True))
                self.offsets.append(chunk.offsets.to_numpy(zero_copy_only=True))
                self._expected.append(crcs[number] if crcs is not None else None)
                self._where.append((path, number))
            if self._keys is not None and "text_key" in table.column_names:
                self._keys.append(table.column("text_key"))
            else:
                self._keys = None
        counts = [len(offsets) - 1 for offsets in self.offsets]
        self.first = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])  # first document of each batch
        self._checked = [[expected is None] * 3 for expected in self._expected]  # offsets, ids, keys

    def _check(self, batch: int, what: int, array: np.ndarray) -> None:
        """Record batch `batch`'s offsets (0), token ids (1) or text keys (2) against its CRC32, once."""
        if self._checked[batch][what]:
            return
        if _crc32(array) != self._expected[batch][what]:
            path, number = self._where[batch]
            name = ("document offsets", "token ids", "text keys")[what]
            raise DataError(
                f"{path}: the {name} of record batch {number} do not match their checksum in the manifest (the "
                "shard changed after it was prepared); prepare the store again"
            )
        self._checked[batch][what] = True

    def __len__(self) -> int:
        return int(self.first[-1])

    def text_keys(self) -> np.ndarray | None:
        """Every document's text key (modeling.data.ngrams.text_key), in order; None where a shard lacks them.
        Read when asked: training never needs them."""
        if self._keys is None:
            return None
        columns = [chunk.to_numpy() for column in self._keys for chunk in column.chunks]
        for batch, keys in enumerate(columns):
            self._check(batch, 2, keys)
        return np.concatenate([np.zeros(0, np.uint64), *columns])

    def lengths(self) -> np.ndarray:
        """Tokens of every document, in order."""
        if not self.offsets:
            return np.zeros(0, dtype=np.int64)
        for batch, offsets in enumerate(self.offsets):
            self._check(batch, 0, offsets)
        return np.concatenate([np.diff(offsets).astype(np.int64) for offsets in self.offsets])

    def batch_values(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """A record batch's token ids and document offsets, checked (a scan over every document)."""
        self._check(batch, 0, self.offsets[batch])
        self._check(batch, 1, self.values[batch])
        return self.values[batch], self.offsets[batch]

    def tokens(self, document: int, start: int = 0, length: int | None = None) -> np.ndarray:
        batch = int(np.searchsorted(self.first, document, side="right")) - 1
        values, offsets = self.batch_values(batch)
        begin, end = offsets[document - self.first[batch]], offsets[document - self.first[batch] + 1]
        stop = end if length is None else min(end, begin + start + length)
        return values[begin + start : stop]


_warned_unchecked: set[str] = set()


class Store:
    """An opened, checked store, read under its lock (modeling.data.store_lock) while this process runs."""

    def __init__(self, folder: Path | str):
        self.folder = StoreFolder(folder)
        if self.folder.folder.is_dir():
            read_lock(self.folder.folder)  # before the manifest: a store being rebuilt is named as such
        if not self.folder.is_complete():
            raise DataError(f"{self.folder.folder}: no store there (no manifest.json); prepare it first")
        self.manifest = StoreManifest.load(self.folder.manifest_json)
        self._splits: dict[tuple[str, str], StoreSplit] = {}
        self._check_manifest()
        if self.manifest.version < 3 and str(self.folder.folder) not in _warned_unchecked:
            _warned_unchecked.add(str(self.folder.folder))
            log.warning(
                "%s: a store of version %d keeps no checksum per record batch, so its shards are not checked as "
                "they are read; prepare it again (--rebuild) to have them checked",
                self.folder.folder,
                self.manifest.version,
            )

    def _check_manifest(self) -> None:
        """A manifest of a later format, or one naming a shard outside its source's folder, is refused."""
        where = self.folder.manifest_json
        if not isinstance(self.manifest.version, int) or self.manifest.version > STORE_VERSION:
            raise DataError(
                f"{where}: store version {self.manifest.version!r}, this code reads up to {STORE_VERSION}; update "
                "the project or prepare the store again"
            )
        for name, source in self.manifest.sources.items():
            for part in source.parts:
                if part.source != name:
                    raise DataError(f"{where}: source '{name}' lists a part of source '{part.source}'")
                for split, shard in part.shards.items():
                    expected = self.folder.shard(name, split, part.part).name
                    if shard.file != expected:
                        raise DataError(
                            f"{where}: source '{name}', part {part.part}: shard '{shard.file}' is not its {split} "
                            f"shard ({expected})"
                        )

    def tokenizer(self):
        """The store's tokenizer, checked against the fingerprint in the manifest: ids trained with another
        tokenizer would ship a model whose tokenizer does not match what it learned."""
        tokenizer = load_tokenizer(self.folder.tokenizer_dir)
        if tokenizer_fingerprint(tokenizer) != self.manifest.tokenizer_sha256:
            raise DataError(
                f"{self.folder.tokenizer_dir}: not the tokenizer the store's ids were made with (its fingerprint "
                f"differs from {self.folder.manifest_json.name}'s); restore it, or prepare the store again"
            )
        return tokenizer

    def split(self, source: str, split: str = "train") -> StoreSplit:
        if source not in self.manifest.sources:
            raise DataError(
                f"{self.folder.folder}: holds no source '{source}' (it holds {', '.join(self.manifest.sources)}); "
                "prepare the store again for this recipe"
            )
        key = (source, split)
        if key not in self._splits:
            shards = [
                self.folder.source_dir(source) / p.shards[split].file for p in self.manifest.sources[source].parts
            ]
            for shard, part in zip(shards, self.manifest.sources[source].parts, strict=True):
                expected = part.shards[split].bytes
                if not shard.exists() or shard.stat().st_size != expected:
                    found = f"{shard.stat().st_size} bytes" if shard.exists() else "missing"
                    raise DataError(f"{shard}: {found}, the manifest says {expected} bytes; prepare the store again")
            self._splits[key] = StoreSplit(shards, [part.shards[split] for part in self.manifest.sources[source].parts])
        return self._splits[key]

    def verify(self) -> None:
        """Every shard's checksum against the manifest (reads the whole store)."""
        for name, source in self.manifest.sources.items():
            for part in source.parts:
                for shard in part.shards.values():
                    path = self.folder.source_dir(name) / shard.file
                    if not path.exists() or _sha256(path) != shard.sha256:
                        raise DataError(f"{path}: does not match its checksum in the manifest; prepare the store again")
