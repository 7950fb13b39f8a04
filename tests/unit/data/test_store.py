"""The token store: prepared once from the readers, the same whatever the number of processes, checked
against its manifest, and read back as rows that do not depend on who reads them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import synthetic_documents
from torch.utils.data import DataLoader

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.index import PhaseIndex
from modeling.data.packing import Packing
from modeling.data.rows import PhaseRows, held_out_rows
from modeling.data.sources import SourceSpec, iter_documents
from modeling.data.store import (
    SMALL_INPUT_BYTES,
    Part,
    Store,
    default_workers,
    is_held_out,
    prepare_part,
    prepare_store,
)

FRACTION = 0.05


def _corpus(tmp_path, files: int = 3, per_file: int = 150):
    folder = tmp_path / "corpus"
    folder.mkdir(exist_ok=True)
    for f in range(files):
        docs = synthetic_documents(per_file, seed=10 + f)
        (folder / f"notes{f}.txt").write_text("\n".join(docs) + "\n\n")  # a blank line: an empty document
    lines = [json.dumps({"text": d}) for d in synthetic_documents(100, seed=99, max_words=40)] + ['{"text": broken']
    (folder / "abstracts.jsonl").write_text("\n".join(lines) + "\n")
    return [
        SourceSpec("notes", str(folder / "notes*.txt"), "text"),
        SourceSpec("abstracts", str(folder / "abstracts.jsonl"), "jsonl", on_bad_record="skip"),
    ]


def _store(tmp_path, tokenizer, specs, name="store", num_proc=1, part_bytes=4000):
    folder = tmp_path / name
    tokenizer.save_pretrained(folder / "tokenizer")
    prepare_store(folder, specs, FRACTION, num_proc=num_proc, part_bytes=part_bytes)
    return Store(folder)


def _checksums(store: Store) -> dict:
    return {
        (name, part.part, split): shard.sha256
        for name, source in store.manifest.sources.items()
        for part in source.parts
        for split, shard in part.shards.items()
    }


def test_every_document_is_tokenized_once_into_train_or_held_out(tmp_path, tiny_tokenizer):
    specs = _corpus(tmp_path)
    store = _store(tmp_path, tiny_tokenizer, specs)
    for spec in specs:
        texts = list(iter_documents(spec, SkipLog(quiet=True)))
        expected = {"train": [], "held_out": []}
        for text in texts:
            ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
            expected["held_out" if is_held_out(text, FRACTION) else "train"].append(ids)
        for split, documents in expected.items():
            stored = store.split(spec.name, split)
            assert [stored.tokens(d).tolist() for d in range(len(stored))] == documents
            assert store.manifest.sources[spec.name].documents[split] == len(documents)
        assert store.manifest.sources[spec.name].documents["held_out"] > 0
    assert store.manifest.sources["notes"].skipped == {"empty document": 3}
    assert store.manifest.sources["abstracts"].skipped == {"bad record": 1}
    assert len(store.manifest.sources["notes"].parts) == 3  # a part per file at this part size
    assert store.manifest.dtype == "uint16"
    assert store.split("notes").values[0].dtype == np.uint16


def test_the_store_does_not_depend_on_the_number_of_processes(tmp_path, tiny_tokenizer):
    specs = _corpus(tmp_path)
    one = _store(tmp_path, tiny_tokenizer, specs, "one", num_proc=1)
    two = _store(tmp_path, tiny_tokenizer, specs, "two", num_proc=2)
    assert _checksums(one) == _checksums(two)
    assert len(_checksums(one)) == 8


def test_a_small_input_prepares_in_this_process_and_a_large_one_on_every_core(tmp_path):
    small, large = tmp_path / "small.txt", tmp_path / "large.txt.gz"
    small.write_text("a note\n")
    with open(large, "wb") as handle:  # sparse: counts four times as compressed
        handle.truncate(SMALL_INPUT_BYTES // 4)
    cores = len(os.sched_getaffinity(0))
    assert default_workers([Part(0, "notes", 0, (str(small),)), Part(1, "notes", 1, (str(small),))]) == 1
    assert default_workers([Part(0, "notes", 0, (str(small),)), Part(1, "big", 0, (str(large),))]) == cores
    assert default_workers([Part(0, "notes", 0, (str(small),)), Part(1, "hub", 0, ())]) == cores  # size unknown


def test_a_second_prepare_keeps_completed_parts(tmp_path, tiny_tokenizer):
    """Parts whose record exists are not prepared again; a part cut off (no record) is, from scratch."""
    specs = _corpus(tmp_path)
    store = _store(tmp_path, tiny_tokenizer, specs)
    folder = store.folder
    kept = folder.shard("notes", "train", 0).stat().st_mtime_ns
    folder.part_json("notes", 1).unlink()  # as if killed before part 1's record was written
    folder.shard("notes", "train", 1).write_bytes(b"half a shard")
    folder.manifest_json.unlink()
    shutil.rmtree(folder.logs_dir)
    prepare_store(folder.folder, specs, FRACTION, part_bytes=4000)
    again = Store(folder.folder)
    assert folder.shard("notes", "train", 0).stat().st_mtime_ns == kept
    assert _checksums(again) == _checksums(store)


def test_a_bad_record_stops_prepare_with_one_line_naming_it(tmp_path, tiny_tokenizer):
    specs = _corpus(tmp_path)
    strict = SourceSpec("abstracts", specs[1].path, "jsonl")
    with pytest.raises(DataError, match=r"abstracts\.jsonl:101: malformed JSON"):
        _store(tmp_path, tiny_tokenizer, [specs[0], strict], num_proc=2)
    assert not (tmp_path / "store" / "manifest.json").exists(), "nothing half-done counts as a store"
    assert not list((tmp_path / "store").rglob("*.tmp")), "no temporary file is left behind"


def test_a_damaged_shard_is_named(tmp_path, tiny_tokenizer):
    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    shard = store.folder.shard("notes", "train", 1)
    data = bytearray(shard.read_bytes())
    shard.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    with pytest.raises(DataError, match=r"notes/train-00001\.arrow: \d+ bytes, the manifest says \d+ bytes"):
        Store(store.folder.folder).split("notes")
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"notes/train-00001\.arrow: does not match its checksum"):
        Store(store.folder.folder).verify()


def test_a_shard_rewritten_with_other_valid_ids_is_named_before_a_row_is_read(tmp_path, tiny_tokenizer):
    """The same size, valid token ids, a readable Arrow stream: only the record batch's checksum tells, when the
    first row is read from it (opening checks nothing that grows with the store)."""
    import pyarrow as pa

    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    shard = store.folder.shard("notes", "train", 1)
    table = pa.ipc.open_stream(shard.read_bytes()).read_all()
    ids = table.column("input_ids").combine_chunks()
    swapped = pa.ListArray.from_arrays(ids.offsets, pa.array(ids.values.to_numpy()[::-1].copy()))
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(pa.table([swapped, table.column("text_key")], schema=table.schema))
    assert shard.stat().st_size == store.manifest.sources["notes"].parts[1].shards["train"].bytes
    split = Store(store.folder.folder).split("notes")
    assert len(split.lengths()) == len(split)  # the offsets are untouched: lengths read
    first_of_part_1 = store.manifest.sources["notes"].parts[0].shards["train"].documents
    split.tokens(0)  # part 0 is intact
    with pytest.raises(DataError, match=r"train-00001\.arrow: the token ids of record batch 0 do not match their"):
        split.tokens(first_of_part_1)
    offsets = bytearray(shard.read_bytes())
    at = offsets.find(np.array([0], np.int32).tobytes() + np.asarray(ids.offsets)[1:2].astype(np.int32).tobytes())
    offsets[at + 4] ^= 0x01  # the second document's start
    shard.write_bytes(bytes(offsets))
    with pytest.raises(DataError, match=r"train-00001\.arrow: the document offsets of record batch 0 do not match"):
        Store(store.folder.folder).split("notes").lengths()


@pytest.mark.slow  # prepares corpora of up to 50,000 documents under tracemalloc
def test_prepare_memory_does_not_grow_with_the_corpus(tmp_path, tiny_tokenizer):
    import tracemalloc

    from modeling.data.store import Part, StoreFolder

    tiny_tokenizer.save_pretrained(tmp_path / "store" / "tokenizer")
    peaks = {}
    for n in (100, 5_000, 50_000):  # the first warms up (imports, caches); both others fill many write batches
        path = tmp_path / f"docs{n}.txt"
        path.write_text("\n".join(synthetic_documents(n, seed=n)) + "\n")
        spec = SourceSpec(f"docs{n}", str(path), "text")
        tracemalloc.start()
        record = prepare_part(StoreFolder(tmp_path / "store"), spec, Part(0, spec.name, 0, (str(path),)), FRACTION)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert record.shards["train"].documents + record.shards["held_out"].documents == n
    assert peaks[50_000] < 2 * peaks[5_000], peaks  # 10x the corpus; measured 1.5x (18.6 -> 28 MB)


def test_rows_do_not_depend_on_the_number_of_workers(tmp_path, tiny_tokenizer):
    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    packing = Packing.of(tiny_tokenizer, 64, open_rows=8)
    index = PhaseIndex(store, ["notes", "abstracts"], None, seed=1, phase="p", packing=packing)
    rows = PhaseRows(store.folder.folder, index, 40)
    keep = lambda batch: batch  # noqa: E731 - rows as they are
    alone = [r for batch in DataLoader(rows, batch_size=3, collate_fn=keep) for r in batch]
    workers = [r for batch in DataLoader(rows, batch_size=3, num_workers=2, collate_fn=keep) for r in batch]
    assert [r.row_index for r in alone] == list(range(40))
    assert [(r.row_index, r.input_ids.tolist()) for r in workers] == [
        (r.row_index, r.input_ids.tolist()) for r in alone
    ]


def test_epochs_reshuffle_and_the_held_out_slice_is_a_fixed_uniform_sample(tmp_path, tiny_tokenizer):
    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    index = PhaseIndex(
        store, ["notes", "abstracts"], None, seed=1, phase="p", packing=Packing.of(tiny_tokenizer, 64, 8)
    )
    one_epoch = index.rows_in_epochs(1)
    first, second = (index.locate(r)[0] for r in (0, one_epoch))
    assert first is not second
    assert first.document.tolist() != second.document.tolist()
    trained = sum(int((first.start == 0).sum()) for _ in [0])
    assert (
        trained
        == store.manifest.sources["notes"].documents["train"] + store.manifest.sources["abstracts"].documents["train"]
    )
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    held = held_out_rows(store, ["notes", "abstracts"], 1, "p", 10, Packing.of(tiny_tokenizer, 64, 8))
    assert sum(r.doc_starts.count(True) for r in held) == 10
    again = held_out_rows(store, ["notes", "abstracts"], 1, "p", 10, Packing.of(tiny_tokenizer, 64, 8))
    assert [r.input_ids.tolist() for r in held] == [r.input_ids.tolist() for r in again]
    assert all(r.input_ids[0] == cls and r.input_ids[-1] == sep for r in held)


def test_a_cached_weighted_index_serves_a_longer_phase_over_the_same_settings(tmp_path, tiny_tokenizer):
    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    packing, cache = Packing.of(tiny_tokenizer, 64, 8), tmp_path / "index"

    def weighted():
        return PhaseIndex(
            store, ["notes", "abstracts"], [0.5, 0.5], seed=1, phase="p", packing=packing, cache_dir=cache
        )

    short = weighted()
    short.ensure_rows(20)
    longer = weighted()  # a rerun whose phase is longer: the index cached for 20 rows is too short for it
    longer.ensure_rows(200)
    assert longer.firsts[-1] >= 200
    assert len(list(cache.glob("weighted-*.npz"))) == 2
    index, local = longer.locate(150)
    assert index.row_start[local + 1] > index.row_start[local]


@pytest.mark.parametrize("damage", ["emptied", "cut short"])
def test_a_damaged_cached_index_is_built_again(tmp_path, tiny_tokenizer, caplog, damage):
    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    packing, cache = Packing.of(tiny_tokenizer, 64, 8), tmp_path / "index"

    def rows_of_epoch():
        index = PhaseIndex(store, ["notes"], None, seed=1, phase="p", packing=packing, cache_dir=cache)
        index.ensure_rows(10)
        return index.indexes[0].row_start.tolist(), index.indexes[0].document.tolist()

    built = rows_of_epoch()
    [cached] = cache.glob("epoch-*.npz")
    cached.write_bytes(b"" if damage == "emptied" else cached.read_bytes()[:-64])
    with caplog.at_level("WARNING"):
        assert rows_of_epoch() == built
    assert f"{cached}: unreadable, building the index again" in caplog.text
    assert rows_of_epoch() == built  # and the cache holds a sound copy again


def test_a_store_prepared_again_with_other_documents_never_meets_an_old_index(tmp_path, tiny_tokenizer):
    packing, specs = Packing.of(tiny_tokenizer, 64, 8), _corpus(tmp_path)
    first = _store(tmp_path, tiny_tokenizer, specs)
    key = PhaseIndex(first, ["notes"], None, seed=1, phase="p", packing=packing).key
    for f in range(3):  # the same notes in another order: the same counts and held-out split, other shards
        note_file = tmp_path / "corpus" / f"notes{f}.txt"
        note_file.write_text("\n".join(reversed(note_file.read_text().splitlines())) + "\n")
    again = _store(tmp_path, tiny_tokenizer, specs, name="store_again")
    assert again.manifest.sources["notes"].documents == first.manifest.sources["notes"].documents
    assert PhaseIndex(again, ["notes"], None, seed=1, phase="p", packing=packing).key != key


def test_a_full_disk_is_one_line_and_leaves_nothing_that_counts(tmp_path, tiny_tokenizer):
    import subprocess

    disk = tmp_path / "small-disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        specs = _corpus(tmp_path, files=3, per_file=2000)
        tiny_tokenizer.save_pretrained(tmp_path / "tokenizer")
        shutil.copytree(tmp_path / "tokenizer", disk / "store" / "tokenizer")
        full = r"store/notes: cannot write the store \(.*No space left on device\)"
        with pytest.raises(DataError, match=full) as raised:
            prepare_store(disk / "store", specs, FRACTION, part_bytes=4000)
        assert "\n" not in str(raised.value)
        assert not (disk / "store" / "manifest.json").exists()
        assert not list(disk.rglob("*.tmp"))
        for record in (disk / "store").rglob("part-*.json"):  # a part that finished is whole
            for shard in json.loads(record.read_text())["shards"].values():
                assert (record.parent / shard["file"]).stat().st_size == shard["bytes"]
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_hugging_face_dataset_is_streamed_once_into_the_store(tmp_path, tiny_tokenizer):
    folder = tmp_path / "hub_dataset"  # load_dataset(folder) as load_dataset("org/name") would be read
    folder.mkdir()
    texts = synthetic_documents(200, seed=4)
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    store = _store(tmp_path, tiny_tokenizer, [SourceSpec("hub", str(folder), "hf")])
    record = store.manifest.sources["hub"]
    assert len(record.parts) == 1
    assert record.files == []
    assert record.documents["train"] + record.documents["held_out"] == 200
    assert record.tokens["train"] == sum(
        len(tiny_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts if not is_held_out(t, FRACTION)
    )


def test_row_indexes_are_kept_with_the_store_unless_it_is_read_only(tmp_path, tiny_tokenizer, monkeypatch):
    from modeling.pretrain.run_folder import PhaseFolder
    from modeling.pretrain.runner import index_cache

    store, phase = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path)), PhaseFolder(tmp_path / "out" / "p")
    assert index_cache(store, phase) == tmp_path / "store" / "row_indexes"
    # Permission bits do not stop root (these tests run as root in CI), so the store is made read-only to the
    # permission check itself.
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: False if Path(path) == store.folder.folder else real_access(path, mode)
    )
    assert index_cache(store, phase) == tmp_path / "out" / "p" / "index"


def test_a_swapped_tokenizer_or_a_forged_manifest_is_refused(tmp_path, tiny_tokenizer):
    from modeling.pretrain.tokenizer import train_bpe_tokenizer

    store = _store(tmp_path, tiny_tokenizer, _corpus(tmp_path))
    assert store.tokenizer().get_vocab() == tiny_tokenizer.get_vocab()
    other = train_bpe_tokenizer(iter(synthetic_documents(300, seed=77)), vocab_size=380, model_max_length=512)
    shutil.rmtree(store.folder.tokenizer_dir)
    other.save_pretrained(store.folder.tokenizer_dir)
    with pytest.raises(DataError, match=r"tokenizer: not the tokenizer the store's ids were made with"):
        Store(store.folder.folder).tokenizer()

    manifest = json.loads(store.folder.manifest_json.read_text())
    forged = json.loads(json.dumps(manifest))
    forged["sources"]["notes"]["parts"][0]["shards"]["train"]["file"] = "../abstracts/train-00000.arrow"
    store.folder.manifest_json.write_text(json.dumps(forged))
    with pytest.raises(DataError, match=r"source 'notes', part 0: shard '../abstracts/train-00000.arrow' is not"):
        Store(store.folder.folder)
    store.folder.manifest_json.write_text(json.dumps({**manifest, "version": 99}))
    with pytest.raises(DataError, match="store version 99, this code reads up to"):
        Store(store.folder.folder)
